package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Ports of the traffic programs: the TCP sink and the UDP echo.
const (
	wireTCPPort = 5001
	wireUDPPort = 5002
)

// wireContender is one way of carrying traffic between two namespaces.
// setup creates its namespaces and processes and fills in the fields
// after it; the measurement loop only talks to client.
type wireContender struct {
	id    string // for --wire-only: kernel, afpacket-gcm, tap-none, wireguard-go, …
	name  string // row label
	group string // kernel, ipsecstack, wireguard-go, strongswan
	link  string // ipsecstack: afpacket or tap
	suite string // ipsecstack: none, or the ESP suite and mode
	// publish: daemon B hands the traffic to host programs in its
	// namespace (--publish) rather than sinking it inside the stack.
	publish bool
	setup   func(e *wireEnv, c *wireContender, idx int) error

	client        *wireProc
	tcpTo, udpTo  string // where the client sends
	src           string // the client's source address, "-" for the kernel's choice
	procs         []*wireProc
	ifaces        [][2]string // namespace, interface: drop counters
	controls      []string    // ipsecstack control sockets: retransmits and drop counters
	stackSends    bool        // the sending TCP is gVisor's (inside daemon A), not the kernel's
	skip          string      // why it was not run
	failed        string      // why it stopped
	errors        []string    // failed measurements
	rounds        []wireRound // one per TCP round
	rr            []wireRR
	droppedSeen   map[string]uint64 // daemon drop counters that moved, over all rounds
	retransSource string
	// pprofDir and pprofNS (--wire-pprof): where to write profiles, and
	// the namespaces of daemons A and B, whose --pprof listens on
	// wirePprofAddr.
	pprofDir string
	pprofNS  []string
}

// wireRound is one measured TCP transfer.
type wireRound struct {
	Round   int     `json:"round"`
	MBps    float64 `json:"mbps"`
	ProcCPU float64 `json:"proc_cpu_s"`
	Softirq float64 `json:"softirq_s"`
	Retrans uint64  `json:"retrans"`
	// RetransNA: the sending TCP's retransmits are not known (gVisor's,
	// when the daemon does not report them); LoopRetrans is then the
	// kernel's count on the loopback hop to daemon A.
	RetransNA   bool    `json:"retrans_not_available,omitempty"`
	LoopRetrans uint64  `json:"loopback_retrans,omitempty"`
	Drops       uint64  `json:"drops"`
	Seconds     float64 `json:"seconds"`
	ProcsGB     float64 `json:"proc_cpu_s_per_gb"`
	TotalGB     float64 `json:"cpu_s_per_gb"`
	Bytes       int64   `json:"bytes"`
}

// wireRR is one UDP request/response run.
type wireRR struct {
	Round int     `json:"round"`
	TPS   float64 `json:"transactions_per_s"`
	Us    float64 `json:"us_per_rt"`
	Lost  uint64  `json:"lost"`
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return "0x" + hex.EncodeToString(b)
}

// vethPair makes a veth pair between two new namespaces; kernelAddrs gives
// the kernel's sides addresses (else both are left bare for a stack to own
// over AF_PACKET: no address, no IPv6).
func (e *wireEnv) vethPair(c *wireContender, a4, b4 string) (nsA, nsB, vA, vB string, err error) {
	if nsA, err = e.newNS(); err != nil {
		return
	}
	if nsB, err = e.newNS(); err != nil {
		return
	}
	vA, vB = e.ifName("wva"), e.ifName("wvb")
	if err = e.sh("ip", "link", "add", vA, "netns", nsA, "type", "veth", "peer", "name", vB, "netns", nsB); err != nil {
		return
	}
	for _, x := range [][3]string{{nsA, vA, a4}, {nsB, vB, b4}} {
		if x[2] != "" {
			if err = e.sh("ip", "-n", x[0], "addr", "add", x[2], "dev", x[1]); err != nil {
				return
			}
		} else if err = e.nsh(x[0], "sysctl", "-qw", "net.ipv6.conf."+x[1]+".disable_ipv6=1"); err != nil {
			return
		}
		if err = e.sh("ip", "-n", x[0], "link", "set", x[1], "up"); err != nil {
			return
		}
	}
	c.ifaces = append(c.ifaces, [2]string{nsA, vA}, [2]string{nsB, vB})
	return
}

// startPrograms starts the sink/echo server in nsB (unless the sink is
// inside a daemon) and the client in nsA.
func (e *wireEnv) startPrograms(c *wireContender, nsA, nsB, serverListen string) error {
	if nsB != "" {
		srv, err := e.start(c.name+" server", nsB, false, nil, e.self, wireHelperArg, "server",
			fmt.Sprintf("%s:%d", serverListen, wireTCPPort), fmt.Sprintf("%s:%d", serverListen, wireUDPPort))
		if err != nil {
			return err
		}
		if err := srv.waitReady(10*time.Second, "ready"); err != nil {
			return err
		}
		c.procs = append(c.procs, srv)
	}
	cl, err := e.start(c.name+" client", nsA, true, nil, e.self, wireHelperArg, "client")
	if err != nil {
		return err
	}
	c.client = cl
	c.procs = append(c.procs, cl)
	return nil
}

// setupKernel: the Linux kernel, plain: TCP and UDP over the veth.
func setupKernel(e *wireEnv, c *wireContender, idx int) error {
	a, b := fmt.Sprintf("10.77.%d.1", idx), fmt.Sprintf("10.77.%d.2", idx)
	nsA, nsB, _, _, err := e.vethPair(c, a+"/24", b+"/24")
	if err != nil {
		return err
	}
	c.tcpTo, c.udpTo, c.src = fmt.Sprintf("%s:%d", b, wireTCPPort), fmt.Sprintf("%s:%d", b, wireUDPPort), "-"
	c.retransSource = "kernel TCP, /proc/net/snmp RetransSegs in the sender's namespace"
	return e.startPrograms(c, nsA, nsB, b)
}

// ipsecstack contenders: suite "none" (no SA: plain gVisor), or an ESP
// suite in transport or tunnel mode, over AF_PACKET or a TAP.
type espSuite struct {
	name   string // setkey -E name
	keyLen int    // key + salt bytes
}

var wireESP = map[string]espSuite{
	"aes-gcm-128":       {"aes-gcm-16", 20},
	"chacha20-poly1305": {"chacha20-poly1305", 36},
}

// ipsecstackSetkey is the setkey file of one side (me) of a pair.
func ipsecstackSetkey(alg espSuite, k1, k2, a, b, me, innerA, innerB string, tunnel, udp bool) string {
	var s strings.Builder
	s.WriteString("flush;\nspdflush;\n")
	mode := "transport"
	if tunnel {
		mode = "tunnel"
	}
	// udp: ESP in UDP, port 4500 at both ends (setkey's esp-udp).
	proto, pa, pb := "esp", a, b
	if udp {
		proto, pa, pb = "esp-udp", a+"[4500]", b+"[4500]"
	}
	fmt.Fprintf(&s, "add %s %s %s 0x1001 -m %s -r 128 -E %s %s;\n", pa, pb, proto, mode, alg.name, k1)
	fmt.Fprintf(&s, "add %s %s %s 0x1002 -m %s -r 128 -E %s %s;\n", pb, pa, proto, mode, alg.name, k2)
	self, peer, sIn, pIn := a, b, innerA, innerB
	if me == b {
		self, peer, sIn, pIn = b, a, innerB, innerA
	}
	if tunnel {
		fmt.Fprintf(&s, "spdadd %s/32 %s/32 any -P out ipsec esp/tunnel/%s-%s/require;\n", sIn, pIn, self, peer)
		fmt.Fprintf(&s, "spdadd %s/32 %s/32 any -P in ipsec esp/tunnel/%s-%s/require;\n", pIn, sIn, peer, self)
	} else {
		fmt.Fprintf(&s, "spdadd %s %s any -P out ipsec esp/transport//require;\n", self, peer)
		fmt.Fprintf(&s, "spdadd %s %s any -P in ipsec esp/transport//require;\n", peer, self)
	}
	return s.String()
}

// tapBridge readies namespace ns for a daemon on a TAP: TAP tp and the
// veth end v on one bridge (no addresses, no IPv6).
func (e *wireEnv) tapBridge(c *wireContender, ns, v string) (string, error) {
	tp, br := e.ifName("wta"), e.ifName("wbr")
	for _, args := range [][]string{
		{"ip", "-n", ns, "link", "add", br, "type", "bridge", "stp_state", "0", "mcast_snooping", "0", "forward_delay", "0"},
		{"ip", "-n", ns, "tuntap", "add", "dev", tp, "mode", "tap"},
		{"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf." + br + ".disable_ipv6=1"},
		{"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf." + tp + ".disable_ipv6=1"},
		{"ip", "-n", ns, "link", "set", tp, "master", br},
		{"ip", "-n", ns, "link", "set", v, "master", br},
		{"ip", "-n", ns, "link", "set", br, "up"},
	} {
		if err := e.sh(args...); err != nil {
			return "", err
		}
	}
	c.ifaces = append(c.ifaces, [2]string{ns, tp})
	return tp, nil
}

// waitBridgePort waits until a bridge port forwards (the kernel's link
// watcher enables a TAP's port up to a second after its carrier comes up).
func waitBridgePort(ns, port string) error {
	re := regexp.MustCompile(`(?m)^\d+: ` + regexp.QuoteMeta(port) + `[:@].*state forwarding`)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("bridge", "-n", ns, "link", "show").CombinedOutput()
		if re.Match(out) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("bridge port %s in %s not forwarding after 5 s", port, ns)
}

// setupIpsecstack: two `ipsecstack run` daemons on the veth (AF_PACKET, or
// a TAP bridged to it in each namespace). The client in A sends to daemon
// A's --forward listeners; daemon B's --discard and --echo answer.
func setupIpsecstack(bin string) func(e *wireEnv, c *wireContender, idx int) error {
	return func(e *wireEnv, c *wireContender, idx int) error {
		a, b := fmt.Sprintf("10.77.%d.1", idx), fmt.Sprintf("10.77.%d.2", idx)
		nsA, nsB, vA, vB, err := e.vethPair(c, "", "")
		if err != nil {
			return err
		}
		linkA, linkB := "afpacket:"+vA, "afpacket:"+vB
		if c.link == "tap" {
			ta, err := e.tapBridge(c, nsA, vA)
			if err != nil {
				return err
			}
			tb, err := e.tapBridge(c, nsB, vB)
			if err != nil {
				return err
			}
			linkA, linkB = "tap:"+ta, "tap:"+tb
		}
		// c.suite: "none", or "SUITE MODE [udp|udp-gso]": ESP in UDP,
		// without or with (the default) UDP segmentation offload.
		fields := append(strings.Fields(c.suite), "", "")
		suite, mode, encap := fields[0], fields[1], fields[2]
		tunnel := mode == "tunnel"
		innerA, innerB := a, b
		if tunnel {
			innerA, innerB = fmt.Sprintf("10.78.%d.1", idx), fmt.Sprintf("10.79.%d.1", idx)
		}
		var setkeyA, setkeyB string
		if suite != "none" {
			alg, ok := wireESP[suite]
			if !ok {
				return fmt.Errorf("unknown suite %q", suite)
			}
			k1, k2 := randHex(alg.keyLen), randHex(alg.keyLen)
			if setkeyA, err = e.writeFile(fmt.Sprintf("c%d/A.conf", idx), ipsecstackSetkey(alg, k1, k2, a, b, a, innerA, innerB, tunnel, encap != ""), 0o600); err != nil {
				return err
			}
			if setkeyB, err = e.writeFile(fmt.Sprintf("c%d/B.conf", idx), ipsecstackSetkey(alg, k1, k2, a, b, b, innerA, innerB, tunnel, encap != ""), 0o600); err != nil {
				return err
			}
		}
		dir := filepath.Join(e.dir, fmt.Sprintf("c%d", idx))
		os.MkdirAll(dir, 0o700)
		common := func(link, addr, setkey, ctl string) []string {
			args := []string{bin, "run", "--link", link, "--addr", addr + "/24", "--control", ctl, "--log-level", "warn"}
			if setkey != "" {
				args = append(args, "--setkey", setkey)
			}
			if encap == "udp" {
				args = append(args, "--udp-gso=false")
			}
			if e.pprofDir != "" {
				args = append(args, "--pprof", wirePprofAddr)
			}
			if e.debug {
				args = append(args, "--pcap", strings.TrimSuffix(ctl, ".sock")+".pcap", "--log-level", "debug")
			}
			return args
		}
		ctlA, ctlB := filepath.Join(dir, "A.sock"), filepath.Join(dir, "B.sock")
		argsA := append(common(linkA, a, setkeyA, ctlA),
			"--forward", fmt.Sprintf("tcp:127.0.0.1:%d=%s:9", wireTCPPort, innerB),
			"--forward", fmt.Sprintf("udp:127.0.0.1:%d=%s:7", wireUDPPort, innerB))
		argsB := append(common(linkB, b, setkeyB, ctlB), "--discard", "tcp:9", "--echo", "udp:7")
		if c.publish {
			argsB = append(common(linkB, b, setkeyB, ctlB),
				"--publish", fmt.Sprintf("tcp:9=127.0.0.1:%d", wireTCPPort), "--publish", fmt.Sprintf("udp:7=127.0.0.1:%d", wireUDPPort))
		}
		if tunnel {
			argsA = append(argsA, "--addr", innerA+"/32", "--route", fmt.Sprintf("%s/32=%s,src=%s", innerB, b, innerA))
			argsB = append(argsB, "--addr", innerB+"/32", "--route", fmt.Sprintf("%s/32=%s,src=%s", innerA, a, innerB))
		}
		for _, d := range []struct {
			name, ns, ctl string
			args          []string
		}{{"A", nsA, ctlA, argsA}, {"B", nsB, ctlB, argsB}} {
			p, err := e.start(c.name+" daemon "+d.name, d.ns, false, nil, d.args...)
			if err != nil {
				return err
			}
			c.procs = append(c.procs, p)
			if err := waitControl(p, d.ctl); err != nil {
				return err
			}
		}
		c.controls = []string{ctlA, ctlB}
		if e.pprofDir != "" {
			c.pprofDir = e.pprofDir
			c.pprofNS = []string{nsA, nsB}
		}
		if c.link == "tap" {
			for _, x := range [][2]string{{nsA, strings.TrimPrefix(linkA, "tap:")}, {nsB, strings.TrimPrefix(linkB, "tap:")}} {
				if err := waitBridgePort(x[0], x[1]); err != nil {
					return err
				}
			}
		}
		c.tcpTo, c.udpTo, c.src = fmt.Sprintf("127.0.0.1:%d", wireTCPPort), fmt.Sprintf("127.0.0.1:%d", wireUDPPort), "-"
		c.stackSends = true
		if c.publish {
			return e.startPrograms(c, nsA, nsB, "127.0.0.1")
		}
		return e.startPrograms(c, nsA, "", "")
	}
}

// setupWireguard: wireguard-go (its TUN device) in each namespace over the
// veth, configured with wg; kernel TCP and UDP through the tunnel.
func setupWireguard(bin string) func(e *wireEnv, c *wireContender, idx int) error {
	return func(e *wireEnv, c *wireContender, idx int) error {
		a, b := fmt.Sprintf("10.77.%d.1", idx), fmt.Sprintf("10.77.%d.2", idx)
		nsA, nsB, _, _, err := e.vethPair(c, a+"/24", b+"/24")
		if err != nil {
			return err
		}
		var priv, pub [2][32]byte
		for i := range priv {
			if priv[i], pub[i], err = wgKeys(); err != nil {
				return err
			}
		}
		nss := []string{nsA, nsB}
		under := []string{a, b}
		inner := []string{fmt.Sprintf("10.90.%d.1", idx), fmt.Sprintf("10.90.%d.2", idx)}
		for i := 0; i < 2; i++ {
			ifn := e.ifName("wg")
			// wireguard-go creates the interface, then its UAPI socket in
			// /run/wireguard; once a run saw it fail to bind there (the
			// directory gone under it, likely another program's clean-up):
			// one more try.
			var up bool
			for try := 0; try < 2 && !up; try++ {
				if try > 0 {
					e.sh("ip", "-n", nss[i], "link", "del", ifn)
				}
				p, err := e.start(fmt.Sprintf("%s wireguard-go %c", c.name, 'A'+i), nss[i], false,
					[]string{"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "LOG_LEVEL=error"}, bin, "-f", ifn)
				if err != nil {
					return err
				}
				deadline := time.Now().Add(10 * time.Second)
				for !up {
					if e.sh("ip", "netns", "exec", nss[i], "wg", "show", ifn) == nil {
						up = true
						c.procs = append(c.procs, p)
						break
					}
					if p.exited() || time.Now().After(deadline) {
						err = fmt.Errorf("wireguard-go %s did not come up: %v: %s", ifn, p.err, p.out.last())
						fmt.Fprintf(e.log, "wire: %v\n", oneLineErr(err))
						if try == 1 {
							return err
						}
						p.stop()
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			key, err := e.writeFile(fmt.Sprintf("c%d/wg%d.key", idx, i), base64.StdEncoding.EncodeToString(priv[i][:])+"\n", 0o600)
			if err != nil {
				return err
			}
			if err := e.nsh(nss[i], "wg", "set", ifn, "private-key", key, "listen-port", "51820",
				"peer", base64.StdEncoding.EncodeToString(pub[1-i][:]),
				"endpoint", under[1-i]+":51820", "allowed-ips", inner[1-i]+"/32"); err != nil {
				return err
			}
			if err := e.sh("ip", "-n", nss[i], "addr", "add", inner[i]+"/24", "dev", ifn); err != nil {
				return err
			}
			if err := e.sh("ip", "-n", nss[i], "link", "set", ifn, "up"); err != nil {
				return err
			}
			c.ifaces = append(c.ifaces, [2]string{nss[i], ifn})
		}
		c.tcpTo, c.udpTo, c.src = fmt.Sprintf("%s:%d", inner[1], wireTCPPort), fmt.Sprintf("%s:%d", inner[1], wireUDPPort), inner[0]
		c.retransSource = "kernel TCP, /proc/net/snmp RetransSegs in the sender's namespace"
		return e.startPrograms(c, nsA, nsB, inner[1])
	}
}

// setupStrongswan: two charons with kernel-libipsec (userspace ESP,
// UDP-encapsulated tunnel: its only mode), AES-GCM-128, IKEv2 PSK, as in
// /work/shared/peers/strongswan/run-pair.sh: one per namespace, each in
// its own mount namespace (the pid file path is fixed). Inner addresses
// on lo, traffic selectors between the inner /24s.
func setupStrongswan(e *wireEnv, c *wireContender, idx int) error {
	a, b := fmt.Sprintf("10.77.%d.1", idx), fmt.Sprintf("10.77.%d.2", idx)
	nsA, nsB, _, _, err := e.vethPair(c, a+"/24", b+"/24")
	if err != nil {
		return err
	}
	nss := []string{nsA, nsB}
	under := []string{a, b}
	inner := []string{fmt.Sprintf("10.81.%d.1", idx), fmt.Sprintf("10.82.%d.1", idx)}
	nets := []string{fmt.Sprintf("10.81.%d.0/24", idx), fmt.Sprintf("10.82.%d.0/24", idx)}
	psk := randHex(24)
	var vici [2]string
	for i := 0; i < 2; i++ {
		if err := e.sh("ip", "-n", nss[i], "addr", "add", inner[i]+"/32", "dev", "lo"); err != nil {
			return err
		}
		dir := filepath.Join(e.dir, fmt.Sprintf("c%d/sw%d", idx, i))
		if err := os.MkdirAll(filepath.Join(dir, "run"), 0o700); err != nil {
			return err
		}
		vici[i] = filepath.Join(dir, "charon.vici")
		conf := fmt.Sprintf(`charon {
  port = 500
  port_nat_t = 4500
  install_virtual_ip = no
  retransmit_tries = 3
  retransmit_timeout = 1.0
  load_modular = no
  load = random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 pubkey x509 revocation constraints kernel-libipsec kernel-netlink socket-default vici updown
  syslog { daemon { default = -1 } }
  filelog {
    main {
      path = %s/charon.log
      default = 1
      append = no
    }
  }
  plugins {
    vici { socket = unix://%s }
    kernel-libipsec { allow_peer_ts = yes }
  }
}
`, dir, vici[i])
		me, peer := string(rune('A'+i)), string(rune('B'-i))
		swan := fmt.Sprintf(`connections {
  sw {
    version = 2
    local_addrs = %s
    remote_addrs = %s
    proposals = aes128-sha256-modp2048
    mobike = no
    local { auth = psk
            id = host-%s@bench }
    remote { auth = psk
             id = host-%s@bench }
    children {
      sw {
        local_ts = %s
        remote_ts = %s
        esp_proposals = aes128gcm16
        mode = tunnel
        start_action = none
      }
    }
  }
}
secrets {
  ike-sw { id-a = host-A@bench
           id-b = host-B@bench
           secret = "%s" }
}
`, under[i], under[1-i], me, peer, nets[i], nets[1-i], psk)
		if err := os.WriteFile(filepath.Join(dir, "strongswan.conf"), []byte(conf), 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "swanctl.conf"), []byte(swan), 0o600); err != nil {
			return err
		}
		p, err := e.start(fmt.Sprintf("%s charon %s", c.name, me), nss[i], false, []string{"STRONGSWAN_CONF=" + filepath.Join(dir, "strongswan.conf")},
			"unshare", "-m", "--propagation", "private", "sh", "-c",
			fmt.Sprintf("mount --bind %s/run /run && exec /usr/lib/ipsec/charon", dir))
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
		deadline := time.Now().Add(10 * time.Second)
		for e.sh("swanctl", "--stats", "--uri", "unix://"+vici[i]) != nil {
			if p.exited() || time.Now().After(deadline) {
				return fmt.Errorf("charon %s did not come up: %v: %s", me, p.err, p.out.last())
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := e.sh("swanctl", "--load-all", "--file", filepath.Join(dir, "swanctl.conf"), "--uri", "unix://"+vici[i]); err != nil {
			return err
		}
	}
	if err := e.sh("swanctl", "--initiate", "--child", "sw", "--timeout", "15", "--uri", "unix://"+vici[0]); err != nil {
		return err
	}
	// kernel-libipsec's ipsec0 TUN devices: drops on them count too.
	c.ifaces = append(c.ifaces, [2]string{nsA, "ipsec0"}, [2]string{nsB, "ipsec0"})
	c.tcpTo, c.udpTo, c.src = fmt.Sprintf("%s:%d", inner[1], wireTCPPort), fmt.Sprintf("%s:%d", inner[1], wireUDPPort), inner[0]
	c.retransSource = "kernel TCP, /proc/net/snmp RetransSegs in the sender's namespace"
	return e.startPrograms(c, nsA, nsB, inner[1])
}
