package linuxvm

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// strongSwan's charon as a kernel-backed IKE daemon in the guest: the
// host's Debian binaries (strongswan-charon 5.9.8 and its libraries and
// plugins) copied into the initramfs, run with the kernel-netlink backend,
// so that the guest kernel's XFRM carries the negotiated SAs (transport
// and tunnel mode, plain ESP unless a NAT is detected).

// Host paths of strongSwan.
const (
	CharonBinary  = "/usr/lib/ipsec/charon"
	SwanctlBinary = "/usr/sbin/swanctl"
	charonPlugDir = "/usr/lib/ipsec/plugins"
)

// CharonPackages are the Debian packages the charon image needs (the
// openssl plugin, with X25519, ECP, MODP, AES-GCM and ChaCha20-Poly1305,
// is in libstrongswan-standard-plugins, only a Recommends).
var CharonPackages = []string{"strongswan-charon", "strongswan-swanctl", "libstrongswan-standard-plugins"}

// CharonPlugins are the plugins copied into the guest and loaded by
// DefaultStrongswanConf: what strongSwan's default IKE and ESP proposals,
// PSK and X.509 authentication and the vici control socket need, with
// kernel-netlink (never kernel-libipsec) as the IPsec backend.
var CharonPlugins = []string{
	"random", "nonce", "openssl", "aes", "sha1", "sha2", "hmac", "gcm", "kdf", "mgf1", "drbg",
	"pem", "pkcs1", "pkcs8", "pubkey", "x509", "revocation", "constraints",
	"kernel-netlink", "socket-default", "vici",
}

func pluginPath(name string) string {
	return filepath.Join(charonPlugDir, "libstrongswan-"+name+".so")
}

// CheckCharon reports what is missing on the host to put charon into the
// guest (PrepareOptions.Charon).
func CheckCharon() error {
	var miss []string
	for _, p := range []string{CharonBinary, SwanctlBinary} {
		if _, err := os.Stat(p); err != nil {
			miss = append(miss, p)
		}
	}
	for _, p := range CharonPlugins {
		if _, err := os.Stat(pluginPath(p)); err != nil {
			miss = append(miss, pluginPath(p))
		}
	}
	if len(miss) > 0 {
		return fmt.Errorf("linuxvm: charon in the guest: missing %s; apt-get install %s",
			strings.Join(miss, ", "), strings.Join(CharonPackages, " "))
	}
	return nil
}

// addCharon puts charon, swanctl, the plugins and every shared library
// they load (ldd of each: the plugins are dlopen()ed, so the binaries'
// own lists miss libcrypto and the like) into the archive at their host
// paths, and /var/run (charon's pid file and vici socket) as /run.
func addCharon(a cpioArchive) error {
	if err := CheckCharon(); err != nil {
		return err
	}
	objs := []string{CharonBinary, SwanctlBinary}
	for _, p := range CharonPlugins {
		objs = append(objs, pluginPath(p))
	}
	seen := map[string]bool{}
	for _, o := range objs {
		libs, err := sharedLibs(o)
		if err != nil {
			return err
		}
		if len(libs) > 0 && o == CharonBinary {
			// glibc dlopen()s libgcc_s for pthread_cancel, which charon
			// and swanctl call on their way out ("libgcc_s.so.1 must be
			// installed for pthread_cancel to work", then abort): it is in
			// no ldd list. It sits next to libc.
			libs = append(libs, filepath.Join(filepath.Dir(libcOf(libs)), "libgcc_s.so.1"))
		}
		for _, f := range append([]string{o}, libs...) {
			if seen[f] {
				continue
			}
			seen[f] = true
			if err := addHostFile(a, f, f); err != nil {
				return fmt.Errorf("linuxvm: charon: %w", err)
			}
		}
	}
	a.symlink("var/run", "../run")
	a.dir("etc/swanctl")
	return nil
}

// libcOf returns the path of libc.so.6 among libs, or the usual one.
func libcOf(libs []string) string {
	for _, l := range libs {
		if filepath.Base(l) == "libc.so.6" {
			return l
		}
	}
	return "/lib/x86_64-linux-gnu/libc.so.6"
}

// Guest paths of the charon set-up.
const (
	charonConfPath = "/etc/strongswan.conf"
	swanctlPath    = "/etc/swanctl/swanctl.conf"
	// CharonLog is charon's log file in the guest (DefaultStrongswanConf).
	CharonLog  = "/tmp/charon.log"
	charonVici = "unix:///run/charon.vici"
)

// DefaultStrongswanConf is the guest's strongswan.conf unless
// CharonConfig.StrongswanConf replaces it: IKE on 500 and 4500, the
// plugins of CharonPlugins only (kernel-netlink installs the SAs and
// policies in the guest kernel), a log of IKE, CHILD SA, kernel and
// configuration events at level 2 in CharonLog, and retransmissions
// shortened to 1 s x 1.8, 3 tries, so that a failing test fails fast.
var DefaultStrongswanConf = `charon {
  port = 500
  port_nat_t = 4500
  load_modular = no
  load = ` + strings.Join(CharonPlugins, " ") + `
  retransmit_timeout = 1.0
  retransmit_tries = 3
  install_virtual_ip = no
  syslog { daemon { default = -1 } }
  filelog {
    main {
      path = ` + CharonLog + `
      time_format = %T
      time_add_ms = yes
      ike_name = yes
      append = yes
      flush_line = yes
      default = 1
      ike = 2
      chd = 2
      knl = 2
      cfg = 2
      net = 1
    }
  }
  plugins { vici { socket = ` + charonVici + ` } }
}
swanctl {
  load = pem pkcs1 pkcs8 x509 revocation constraints pubkey openssl random
  socket = ` + charonVici + `
}
`

// CharonConfig is the configuration StartCharon gives the guest's charon.
type CharonConfig struct {
	// StrongswanConf is strongswan.conf's text; empty takes
	// DefaultStrongswanConf.
	StrongswanConf string
	// SwanctlConf is swanctl.conf's text (connections, secrets), loaded
	// with swanctl --load-all.
	SwanctlConf string
	// Files are further files to write first, by guest path
	// (certificates and keys under /etc/swanctl/x509, private, ...).
	Files map[string]string
}

// Charon is strongSwan's charon running in the guest (StartCharon).
type Charon struct {
	vm *VM
}

// StartCharon writes cfg's files into the guest, starts charon there
// (in its own session, so that the agent's command deadline does not
// reach it), waits for its vici socket and loads the connections and
// secrets with swanctl --load-all. The image must have been prepared
// with PrepareOptions.Charon. A charon already running is stopped first,
// and its SAs and policies flushed.
func (vm *VM) StartCharon(ctx context.Context, cfg CharonConfig) (*Charon, error) {
	if !vm.Image.Charon {
		return nil, errors.New("linuxvm: the image has no charon (PrepareOptions.Charon)")
	}
	c := &Charon{vm: vm}
	if err := c.Stop(ctx); err != nil {
		return nil, err
	}
	conf := cfg.StrongswanConf
	if conf == "" {
		conf = DefaultStrongswanConf
	}
	files := map[string]string{charonConfPath: conf, swanctlPath: cfg.SwanctlConf}
	for p, s := range cfg.Files {
		files[p] = s
	}
	for p, s := range files {
		if err := vm.WriteFile(ctx, p, s); err != nil {
			return nil, err
		}
	}
	if _, err := vm.Sh(ctx, "rm -f "+CharonLog+" /run/charon.pid /run/charon.vici && "+
		"setsid "+CharonBinary+" </dev/null >/tmp/charon.out 2>&1 &"); err != nil {
		return nil, fmt.Errorf("linuxvm: starting charon: %w", err)
	}
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if _, err = c.Swanctl(ctx, "--stats"); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		out, _, _ := vm.Run(ctx, "cat /tmp/charon.out "+CharonLog)
		return nil, fmt.Errorf("linuxvm: charon's vici socket did not answer: %w\n%s", err, out)
	}
	if out, err := c.Swanctl(ctx, "--load-all", "--file", swanctlPath); err != nil {
		return nil, fmt.Errorf("linuxvm: swanctl --load-all: %w\n%s", err, out)
	}
	return c, nil
}

// Swanctl runs swanctl with args in the guest and returns its output
// without swanctl's plugin-loading noise; err carries the exit status.
func (c *Charon) Swanctl(ctx context.Context, args ...string) (string, error) {
	var q []string
	for _, a := range args {
		q = append(q, shellQuote(a))
	}
	r, err := c.vm.Exec(ctx, SwanctlBinary+" "+strings.Join(q, " ")+" 2>&1")
	out := dropPluginNoise(r.Stdout)
	if err != nil {
		return out, err
	}
	if r.Exit != 0 {
		return out, fmt.Errorf("guest: swanctl %s: exit %d: %s", strings.Join(args, " "), r.Exit, tail([]byte(out)))
	}
	return out, nil
}

// ListSAs returns swanctl --list-sas: the IKE SAs with their state, SPIs,
// algorithms and CHILD SAs (mode, SPIs, traffic selectors, counters).
func (c *Charon) ListSAs(ctx context.Context) (string, error) {
	return c.Swanctl(ctx, "--list-sas")
}

// Initiate starts the CHILD SA child (and its IKE SA) from the guest's
// charon with swanctl --initiate, waiting up to timeout; it returns
// swanctl's log of the exchange.
func (c *Charon) Initiate(ctx context.Context, child string, timeout time.Duration) (string, error) {
	return c.Swanctl(ctx, "--initiate", "--child", child, "--timeout", fmt.Sprint(int(timeout.Seconds()+0.999)))
}

// Log returns charon's log (CharonLog) and what it wrote on its standard
// output and error.
func (c *Charon) Log(ctx context.Context) string {
	out, _, _ := c.vm.Run(ctx, "cat /tmp/charon.out "+CharonLog+" 2>/dev/null")
	return out
}

// XfrmState returns `ip -s xfrm state` and `ip xfrm policy` in the guest:
// what charon installed through kernel-netlink, with the SAs' counters.
func (c *Charon) XfrmState(ctx context.Context) (string, error) {
	return c.vm.Sh(ctx, "ip -s xfrm state; echo; ip xfrm policy")
}

// Stop ends a charon running in the guest (SIGTERM, then SIGKILL after
// 3 s) and flushes the SAs and policies it may have left in the kernel.
func (c *Charon) Stop(ctx context.Context) error {
	_, err := c.vm.Sh(ctx, `p=$(cat /run/charon.pid 2>/dev/null)
if [ -n "$p" ] && kill "$p" 2>/dev/null; then
	i=0
	while kill -0 "$p" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done
	kill -9 "$p" 2>/dev/null
fi
rm -f /run/charon.pid /run/charon.vici
ip xfrm state flush && ip xfrm policy flush`)
	return err
}

// WriteFile writes content to path in the guest (parents created), as
// base64 through the shell, so that any text survives the quoting.
func (vm *VM) WriteFile(ctx context.Context, path, content string) error {
	b64 := base64.StdEncoding.EncodeToString([]byte(content))
	_, err := vm.Sh(ctx, fmt.Sprintf("mkdir -p %s && echo %s | base64 -d > %s",
		shellQuote(filepath.Dir(path)), b64, shellQuote(path)))
	return err
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func dropPluginNoise(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, "plugin '") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// IKESA is one IKE SA of swanctl --list-sas (ParseSAs).
type IKESA struct {
	Name     string // connection name
	UniqueID string // "#1"
	State    string // ESTABLISHED, CONNECTING, ...
	Version  string // "IKEv2"
	// SPIi and SPIr are the IKE SPIs; LocalInitiator says the guest's
	// charon initiated (swanctl marks the local SPI with '*').
	SPIi, SPIr     uint64
	LocalInitiator bool
	// LocalID and RemoteID are the identities; Local and Remote the IKE
	// endpoints (the port shows the float to 4500).
	LocalID, RemoteID string
	Local, Remote     netip.AddrPort
	// Proposal is the IKE SA's algorithms, e.g.
	// "AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519".
	Proposal string
	Children []ChildSA
}

// ChildSA is one CHILD SA of an IKESA.
type ChildSA struct {
	Name     string
	UniqueID string
	ReqID    uint32
	State    string // INSTALLED, REKEYED, ...
	Mode     string // TRANSPORT, TUNNEL, BEET
	// Encap says that ESP is in UDP (swanctl's "-in-UDP").
	Encap    bool
	Protocol string // ESP, AH
	Proposal string // e.g. "AES_GCM_16-128"
	// SPIIn and SPIOut are charon's inbound and outbound SPIs, with their
	// byte and packet counters (from the kernel's SAs).
	SPIIn, SPIOut                            uint32
	BytesIn, PacketsIn, BytesOut, PacketsOut uint64
	// LocalTS and RemoteTS are the traffic selectors as swanctl prints
	// them ("10.0.0.0/24", "192.0.2.1/32[tcp/80]").
	LocalTS, RemoteTS []string
}

var (
	ikeLineRE   = regexp.MustCompile(`^(\S+): (#\d+), (\S+), (IKEv\d), ([0-9a-f]{16})_i(\*?) ([0-9a-f]{16})_r(\*?)$`)
	peerLineRE  = regexp.MustCompile(`^  (local|remote) +'(.*)' @ (\S+)\[(\d+)\]`)
	childLineRE = regexp.MustCompile(`^  (\S+): (#\d+), reqid (\d+), (\S+), ([A-Z]+)(-in-UDP)?, ([A-Z]+):(\S+)$`)
	spiLineRE   = regexp.MustCompile(`^    (in|out) +([0-9a-f]{8})\S*, +(\d+) bytes, +(\d+) packets`)
	tsLineRE    = regexp.MustCompile(`^    (local|remote) +(.+)$`)
)

// ParseSAs reads the text of swanctl --list-sas (strongSwan 5.9) into
// its IKE SAs and their CHILD SAs. Lines it does not know (timers,
// virtual IPs) are skipped.
func ParseSAs(text string) ([]IKESA, error) {
	var sas []IKESA
	var ike *IKESA
	var child *ChildSA
	for n, l := range strings.Split(text, "\n") {
		l = strings.TrimRight(l, " \r")
		if l == "" {
			continue
		}
		bad := func(err error) ([]IKESA, error) {
			return nil, fmt.Errorf("linuxvm: swanctl --list-sas line %d %q: %w", n+1, l, err)
		}
		if m := ikeLineRE.FindStringSubmatch(l); m != nil {
			sas = append(sas, IKESA{Name: m[1], UniqueID: m[2], State: m[3], Version: m[4], LocalInitiator: m[6] == "*"})
			ike, child = &sas[len(sas)-1], nil
			ike.SPIi, _ = strconv.ParseUint(m[5], 16, 64)
			ike.SPIr, _ = strconv.ParseUint(m[7], 16, 64)
			continue
		}
		if ike == nil {
			return bad(errors.New("not inside an IKE SA"))
		}
		if m := childLineRE.FindStringSubmatch(l); m != nil {
			id, err := strconv.ParseUint(m[3], 10, 32)
			if err != nil {
				return bad(err)
			}
			ike.Children = append(ike.Children, ChildSA{Name: m[1], UniqueID: m[2], ReqID: uint32(id), State: m[4],
				Mode: m[5], Encap: m[6] != "", Protocol: m[7], Proposal: m[8]})
			child = &ike.Children[len(ike.Children)-1]
			continue
		}
		if child == nil {
			if m := peerLineRE.FindStringSubmatch(l); m != nil {
				a, err := netip.ParseAddr(m[3])
				if err != nil {
					return bad(err)
				}
				p, _ := strconv.ParseUint(m[4], 10, 16)
				if m[1] == "local" {
					ike.LocalID, ike.Local = m[2], netip.AddrPortFrom(a, uint16(p))
				} else {
					ike.RemoteID, ike.Remote = m[2], netip.AddrPortFrom(a, uint16(p))
				}
				continue
			}
			// The IKE SA's algorithms: one word with slashes
			// ("AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519").
			if w := strings.TrimPrefix(l, "  "); ike.Proposal == "" && !strings.ContainsRune(w, ' ') && strings.Contains(w, "/") {
				ike.Proposal = w
			}
			continue
		}
		if m := spiLineRE.FindStringSubmatch(l); m != nil {
			spi, _ := strconv.ParseUint(m[2], 16, 32)
			b, _ := strconv.ParseUint(m[3], 10, 64)
			p, _ := strconv.ParseUint(m[4], 10, 64)
			if m[1] == "in" {
				child.SPIIn, child.BytesIn, child.PacketsIn = uint32(spi), b, p
			} else {
				child.SPIOut, child.BytesOut, child.PacketsOut = uint32(spi), b, p
			}
			continue
		}
		if m := tsLineRE.FindStringSubmatch(l); m != nil {
			if m[1] == "local" {
				child.LocalTS = strings.Fields(m[2])
			} else {
				child.RemoteTS = strings.Fields(m[2])
			}
		}
	}
	return sas, nil
}

// SAs returns the guest charon's IKE and CHILD SAs (ListSAs, parsed).
func (c *Charon) SAs(ctx context.Context) ([]IKESA, error) {
	out, err := c.ListSAs(ctx)
	if err != nil {
		return nil, err
	}
	return ParseSAs(out)
}
