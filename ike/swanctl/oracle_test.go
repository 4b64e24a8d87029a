package swanctl

// The independent oracle: strongSwan 5.9.8's own loader. Each file is
// loaded into a running charon with `swanctl --load-conns --file F`, and
// what charon logs about the configuration it built (vici_config.c's
// log_peer_data/log_child_data at cfg level 2) is compared with what this
// package parsed. Nothing here uses the package's formatting helpers: the
// names and formats below are strongSwan's, written out again.
//
// Needs root, /usr/lib/ipsec/charon, swanctl and ip(8); skipped otherwise.
// SWANCTL_ORACLE_TREE=DIR additionally runs every */swanctl/swanctl.conf
// below DIR (e.g. strongSwan's testing/tests) that this package accepts,
// with testing's PH_IP_* placeholders replaced and updown lines removed.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	m "github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

type charon struct {
	dir, uri, log string
	ns            string
	cmd           *exec.Cmd
}

func startCharon(t *testing.T) *charon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("oracle: needs root (charon in a network namespace)")
	}
	for _, p := range []string{"/usr/lib/ipsec/charon", "/usr/sbin/swanctl"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("oracle: %s not installed (apt-get install strongswan-charon strongswan-swanctl)", p)
		}
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("oracle: ip(8) not installed")
	}
	dir := t.TempDir()
	c := &charon{dir: dir, uri: "unix://" + dir + "/charon.vici", log: dir + "/charon.log", ns: fmt.Sprintf("swctl%d", os.Getpid())}
	conf := fmt.Sprintf(`charon {
  load_modular = yes
  plugins {
    include /etc/strongswan.d/charon/*.conf
    vici { socket = %s }
  }
  filelog { main { path = %s
    default = 1
    cfg = 2
    flush_line = yes } }
  syslog { daemon { default = -1 } }
}
include /etc/strongswan.d/*.conf
`, c.uri, c.log)
	if err := os.WriteFile(dir+"/strongswan.conf", []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir+"/run", 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "add", c.ns).CombinedOutput(); err != nil {
		t.Skipf("oracle: ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", c.ns).Run() })
	// Its own mount namespace with /run bound to dir/run: charon's pid
	// file path is fixed, so this one must not see another's.
	c.cmd = exec.Command("ip", "netns", "exec", c.ns, "unshare", "-m", "--propagation", "private", "sh", "-c",
		"mount --bind "+dir+"/run /run && exec env STRONGSWAN_CONF="+dir+"/strongswan.conf /usr/lib/ipsec/charon")
	c.cmd.Stdout, c.cmd.Stderr = nil, nil
	if err := c.cmd.Start(); err != nil {
		t.Skipf("oracle: starting charon: %v", err)
	}
	t.Cleanup(func() {
		c.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.cmd.Process.Kill()
			<-done
		}
	})
	for i := 0; i < 100; i++ {
		if exec.Command("swanctl", "--stats", "--uri", c.uri).Run() == nil {
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("oracle: charon did not come up")
	return nil
}

// load has charon load file's connections and returns what it logged.
func (c *charon) load(t *testing.T, file string) (string, error) {
	before, _ := os.ReadFile(c.log)
	out, err := exec.Command("swanctl", "--load-conns", "--file", file, "--uri", c.uri).CombinedOutput()
	after, _ := os.ReadFile(c.log)
	var msgs []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "plugin '") && l != "" {
			msgs = append(msgs, l)
		}
	}
	if err != nil || strings.Contains(strings.Join(msgs, "\n"), "failed") {
		return "", fmt.Errorf("swanctl: %v: %s", err, strings.Join(msgs, "; "))
	}
	return string(after[len(before):]), nil
}

// logConn is one "conn NAME:" block of charon's log.
type logConn struct {
	kv       map[string]string
	children map[string]map[string]string
	auth     map[string][]string // "local"/"remote" -> "id = x", "class = y", ...
}

var logLine = regexp.MustCompile(`^\d+\[CFG\] ( +)(.*)$`)

func parseLog(s string) map[string]*logConn {
	conns := map[string]*logConn{}
	var cur *logConn
	var child map[string]string
	side := ""
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		mm := logLine.FindStringSubmatch(sc.Text())
		if mm == nil {
			continue
		}
		ind, text := len(mm[1]), mm[2]
		switch {
		case ind == 1 && strings.HasPrefix(text, "conn ") && strings.HasSuffix(text, ":"):
			cur = &logConn{kv: map[string]string{}, children: map[string]map[string]string{}, auth: map[string][]string{}}
			conns[strings.TrimSuffix(text[5:], ":")] = cur
			child, side = nil, ""
		case cur == nil:
		case ind == 2 && strings.HasPrefix(text, "child ") && strings.HasSuffix(text, ":"):
			child = map[string]string{}
			cur.children[strings.TrimSuffix(text[6:], ":")] = child
		case ind == 2 && (text == "local:" || text == "remote:"):
			side = strings.TrimSuffix(text, ":")
			cur.auth[side] = append(cur.auth[side], "round")
		case ind == 3 && side != "":
			cur.auth[side] = append(cur.auth[side], text)
		case ind == 3 && child != nil:
			if k, v, ok := strings.Cut(text, " = "); ok {
				child[k] = v
			}
		case ind == 2:
			child = nil
			if k, v, ok := strings.Cut(text, " = "); ok {
				cur.kv[k] = v
			}
		}
	}
	return conns
}

// strongSwan's names of transforms (transform_get_enum_names), by IANA ID.
var ssNames = map[m.TransformType]map[uint16]string{
	m.TransformENCR: {3: "3DES_CBC", 11: "NULL", 12: "AES_CBC", 13: "AES_CTR", 14: "AES_CCM_8", 15: "AES_CCM_12",
		16: "AES_CCM_16", 18: "AES_GCM_8", 19: "AES_GCM_12", 20: "AES_GCM_16", 21: "NULL_AES_GMAC", 28: "CHACHA20_POLY1305"},
	m.TransformINTEG: {1: "HMAC_MD5_96", 2: "HMAC_SHA1_96", 5: "AES_XCBC_96", 8: "AES_CMAC_96",
		12: "HMAC_SHA2_256_128", 13: "HMAC_SHA2_384_192", 14: "HMAC_SHA2_512_256"},
	m.TransformPRF: {1: "PRF_HMAC_MD5", 2: "PRF_HMAC_SHA1", 4: "PRF_AES128_XCBC", 5: "PRF_HMAC_SHA2_256",
		6: "PRF_HMAC_SHA2_384", 7: "PRF_HMAC_SHA2_512", 8: "PRF_AES128_CMAC"},
	m.TransformKE:  {14: "MODP_2048", 19: "ECP_256", 20: "ECP_384", 31: "CURVE_25519"},
	m.TransformESN: {0: "NO_EXT_SEQ", 1: "EXT_SEQ"},
}

// ssType classifies one of strongSwan's printed transform names.
func ssType(n string) m.TransformType {
	switch {
	case strings.HasPrefix(n, "PRF_"):
		return m.TransformPRF
	case strings.HasPrefix(n, "HMAC_"), n == "AES_XCBC_96", n == "AES_CMAC_96":
		return m.TransformINTEG
	case n == "NO_EXT_SEQ", n == "EXT_SEQ":
		return m.TransformESN
	case strings.HasPrefix(n, "MODP_"), strings.HasPrefix(n, "ECP_"), strings.HasPrefix(n, "CURVE_"):
		return m.TransformKE
	}
	return m.TransformENCR
}

// byType renders a proposal as "ENCR:a/b INTEG:c ..." in a fixed type
// order; strongSwan prints types in the order they were first written,
// which is not the wire order.
func byType(names []string) string {
	groups := map[m.TransformType][]string{}
	for _, n := range names {
		groups[ssType(n)] = append(groups[ssType(n)], n)
	}
	var out []string
	for _, t := range []m.TransformType{m.TransformENCR, m.TransformINTEG, m.TransformPRF, m.TransformKE, m.TransformESN} {
		if len(groups[t]) > 0 {
			out = append(out, fmt.Sprintf("%d:%s", t, strings.Join(groups[t], "/")))
		}
	}
	return strings.Join(out, " ")
}

func ourProposals(t *testing.T, ps []m.Proposal) []string {
	var out []string
	for _, p := range ps {
		var names []string
		for _, tr := range p.Transforms {
			n, ok := ssNames[tr.Type][tr.ID]
			if !ok {
				t.Fatalf("oracle has no name for transform %d/%d", tr.Type, tr.ID)
			}
			for _, a := range tr.Attributes {
				if a.Type == m.AttrKeyLength {
					n += "_" + strconv.Itoa(int(a.Value))
				}
			}
			names = append(names, n)
		}
		out = append(out, byType(names))
	}
	return out
}

func logProposals(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ", ") {
		_, body, _ := strings.Cut(p, ":")
		out = append(out, byType(strings.Split(body, "/")))
	}
	return out
}

// logTS parses strongSwan's %#R list ("10.0.0.0/24[tcp/http] a..b").
func logTS(t *testing.T, s string) []m.TrafficSelector {
	var out []m.TrafficSelector
	for _, f := range strings.Fields(s) {
		ts := m.TrafficSelector{StartPort: 0, EndPort: 0xffff}
		addr, pp, hasPP := strings.Cut(f, "[")
		if hasPP {
			pp = strings.TrimSuffix(pp, "]")
			proto, port, _ := strings.Cut(pp, "/")
			if n, err := strconv.Atoi(proto); err == nil {
				ts.IPProto = uint8(n)
			} else {
				ts.IPProto = map[string]uint8{"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "sctp": 132, "gre": 47}[proto]
				if ts.IPProto == 0 {
					t.Fatalf("oracle: protocol %q", proto)
				}
			}
			switch {
			case port == "":
			case port == "OPAQUE":
				ts.StartPort, ts.EndPort = 0xffff, 0
			default:
				lo, hi, isRange := strings.Cut(port, "-")
				a, err := strconv.Atoi(lo)
				if err != nil {
					p, err2 := net.LookupPort("tcp", lo)
					if err2 != nil {
						t.Fatalf("oracle: port %q", lo)
					}
					a = p
				}
				b := a
				if isRange {
					b, _ = strconv.Atoi(hi)
				}
				if ts.IPProto == 1 || ts.IPProto == 58 {
					a, b = a<<8, b<<8 // strongSwan prints an ICMP type
				}
				ts.StartPort, ts.EndPort = uint16(a), uint16(b)
			}
		}
		if addr == "dynamic" {
			out = append(out, ts)
			continue
		}
		if lo, hi, ok := strings.Cut(addr, ".."); ok {
			ts.Start, ts.End = netip.MustParseAddr(lo), netip.MustParseAddr(hi)
		} else {
			p := netip.MustParsePrefix(addr)
			ts.Start = p.Addr()
			b := p.Addr().AsSlice()
			for i := p.Bits(); i < len(b)*8; i++ {
				b[i/8] |= 0x80 >> (i % 8)
			}
			ts.End, _ = netip.AddrFromSlice(b)
		}
		ts.TSType = m.TS_IPV4_ADDR_RANGE
		if ts.Start.Is6() {
			ts.TSType = m.TS_IPV6_ADDR_RANGE
		}
		out = append(out, ts)
	}
	return out
}

func tsEqual(a, b []m.TrafficSelector) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.TSType != y.TSType || x.IPProto != y.IPProto || x.Start != y.Start || x.End != y.End {
			return false
		}
		if x.StartPort != y.StartPort || x.EndPort != y.EndPort {
			// strongSwan prints an ICMP selector's type only.
			if !((x.IPProto == 1 || x.IPProto == 58) && x.StartPort>>8 == y.StartPort>>8 && x.EndPort>>8 == y.EndPort>>8) {
				return false
			}
		}
	}
	return true
}

// ssID formats an identity as strongSwan's %Y does.
func ssID(id config.Identity) string {
	switch id.Type {
	case 0:
		return "%any"
	case m.ID_IPV4_ADDR, m.ID_IPV6_ADDR:
		a, _ := netip.AddrFromSlice(id.Data)
		return a.String()
	case m.ID_FQDN, m.ID_RFC822_ADDR:
		return string(id.Data)
	case m.ID_DER_ASN1_DN:
		var rdns pkix.RDNSequence
		if _, err := asn1.Unmarshal(id.Data, &rdns); err != nil {
			return "bad DN"
		}
		short := map[string]string{"2.5.4.6": "C", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.3": "CN",
			"2.5.4.8": "ST", "2.5.4.7": "L", "1.2.840.113549.1.9.1": "E", "0.9.2342.19200300.100.1.25": "DC",
			"2.5.4.5": "serialNumber", "2.5.4.4": "SN"}
		var parts []string
		for _, rdn := range rdns {
			for _, a := range rdn {
				parts = append(parts, short[a.Type.String()]+"="+fmt.Sprint(a.Value))
			}
		}
		return strings.Join(parts, ", ")
	case m.ID_KEY_ID:
		pr := true
		for _, c := range id.Data {
			if c < 0x20 || c > 0x7e {
				pr = false
			}
		}
		if pr {
			return string(id.Data)
		}
		h := make([]string, len(id.Data))
		for i, c := range id.Data {
			h[i] = fmt.Sprintf("%02x", c)
		}
		return strings.Join(h, ":")
	}
	return "?"
}

func ssAddrs(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "%any"
	}
	var s []string
	for _, p := range ps {
		switch {
		case p.Bits() == 0 && p.Addr().Is4():
			s = append(s, "%any4")
		case p.Bits() == 0:
			s = append(s, "%any6")
		case p.IsSingleIP():
			s = append(s, p.Addr().String())
		default:
			s = append(s, p.String())
		}
	}
	return strings.Join(s, ", ")
}

func secs(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }

// compareConn checks our connection against charon's log of it.
func compareConn(t *testing.T, file string, c *config.Connection, l *logConn) {
	t.Helper()
	errf := func(format string, args ...any) {
		t.Errorf("%s: conn %s: "+format, append([]any{file, c.Name}, args...)...)
	}
	want := map[string]string{
		"local_port": strconv.Itoa(int(c.LocalPort)), "remote_port": strconv.Itoa(int(c.RemotePort)),
		"send_certreq": b01(c.SendCertReq), "encap": b01(c.Encap), "dpd_delay": secs(c.DPDDelay),
		"keyingtries": strconv.Itoa(c.KeyingTries), "reauth_time": "0",
		"rekey_time": secs(c.RekeyTime), "over_time": secs(c.OverTime), "rand_time": secs(c.RandTime),
		"fragmentation": map[config.Fragmentation]string{config.FragmentationNo: "0", config.FragmentationAccept: "1",
			config.FragmentationYes: "2", config.FragmentationForce: "3"}[c.Fragmentation],
		"unique": map[config.Unique]string{config.UniqueNo: "UNIQUE_NO", config.UniqueNever: "UNIQUE_NEVER",
			config.UniqueKeep: "UNIQUE_KEEP", config.UniqueReplace: "UNIQUE_REPLACE"}[c.Unique],
		"send_cert": map[config.SendCert]string{config.SendCertIfAsked: "CERT_SEND_IF_ASKED",
			config.SendCertAlways: "CERT_ALWAYS_SEND", config.SendCertNever: "CERT_NEVER_SEND"}[c.SendCert],
		"local_addrs": ssAddrs(c.LocalAddrs), "remote_addrs": ssAddrs(c.RemoteAddrs),
	}
	for k, v := range want {
		if got := l.kv[k]; got != v {
			errf("%s: charon %q, ours %q", k, got, v)
		}
	}
	if v := l.kv["version"]; v != "0" && v != "2" {
		errf("version %s", v)
	}
	checkProposals(t, file+": conn "+c.Name, ourProposals(t, c.Proposals), l.kv["proposals"])
	for _, side := range []struct {
		name string
		a    []*config.Auth
	}{{"local", c.Local}, {"remote", c.Remote}} {
		lines := l.auth[side.name]
		if len(side.a) != 1 {
			errf("%s: %d rounds", side.name, len(side.a))
			continue
		}
		a := side.a[0]
		has := func(s string) bool {
			for _, x := range lines {
				if x == s {
					return true
				}
			}
			return false
		}
		class := map[config.AuthMethod]string{config.AuthPSK: "class = pre-shared key", config.AuthPubkey: "class = public key"}[a.Method]
		// charon logs no class when auth is not given; swanctl.conf(5)
		// documents pubkey as that default.
		if !has(class) && !(a.Method == config.AuthPubkey && !hasPrefix(lines, "class = ")) {
			errf("%s: charon %q, ours %q", side.name, lines, class)
		}
		if a.ID.Type != 0 || hasPrefix(lines, "id = ") {
			if id := "id = " + ssID(a.ID); !has(id) {
				errf("%s: charon %q, ours %q", side.name, lines, id)
			}
		}
		for _, cert := range a.Certs {
			if s := "cert = " + ssID(config.Identity{Type: m.ID_DER_ASN1_DN, Data: cert.RawSubject}); !has(s) {
				errf("%s: charon %q, ours %q", side.name, lines, s)
			}
		}
		for _, cert := range a.CACerts {
			if s := "cacert = " + ssID(config.Identity{Type: m.ID_DER_ASN1_DN, Data: cert.RawSubject}); !has(s) {
				errf("%s: charon %q, ours %q", side.name, lines, s)
			}
		}
	}
	if len(l.children) != len(c.Children) {
		errf("charon has %d children, ours %d", len(l.children), len(c.Children))
	}
	for _, ch := range c.Children {
		lc := l.children[ch.Name]
		if lc == nil {
			errf("child %s missing in charon's log", ch.Name)
			continue
		}
		action := map[config.Action]string{config.ActionClear: "none", config.ActionTrap: "trap", config.ActionRestart: "start"}
		want := map[string]string{
			"rekey_time": secs(ch.RekeyTime), "life_time": secs(ch.LifeTime), "rand_time": secs(ch.RandTime),
			"rekey_bytes": u(ch.RekeyBytes), "life_bytes": u(ch.LifeBytes), "rand_bytes": u(ch.RandBytes),
			"rekey_packets": u(ch.RekeyPackets), "life_packets": u(ch.LifePackets), "rand_packets": u(ch.RandPackets),
			"mode":         map[xfrm.Mode]string{xfrm.ModeTunnel: "TUNNEL", xfrm.ModeTransport: "TRANSPORT"}[ch.Mode],
			"dpd_action":   action[ch.DPDAction],
			"close_action": action[ch.CloseAction],
			"start_action": map[config.StartAction]string{config.StartNone: "none", config.StartTrap: "trap", config.StartStart: "start"}[ch.StartAction],
			"reqid":        strconv.Itoa(int(ch.ReqID)),
		}
		if rw, ok := lc["replay_window"]; ok {
			want["replay_window"] = strconv.Itoa(int(ch.ReplayWindow))
			_ = rw
		} else if ch.ReplayWindow != 32 {
			errf("child %s: replay_window %d, charon default", ch.Name, ch.ReplayWindow)
		}
		for k, v := range want {
			if got := lc[k]; got != v {
				errf("child %s: %s: charon %q, ours %q", ch.Name, k, got, v)
			}
		}
		checkProposals(t, file+": child "+ch.Name, ourProposals(t, ch.Proposals), lc["proposals"])
		for _, x := range []struct {
			k    string
			ours []m.TrafficSelector
		}{{"local_ts", ch.LocalTS}, {"remote_ts", ch.RemoteTS}} {
			theirs := logTS(t, lc[x.k])
			ours := make([]m.TrafficSelector, len(x.ours))
			for i, ts := range x.ours {
				ours[i] = ts
				if config.IsDynamic(ts) {
					ours[i] = m.TrafficSelector{IPProto: ts.IPProto, StartPort: ts.StartPort, EndPort: ts.EndPort}
				}
			}
			if !tsEqual(ours, theirs) {
				errf("child %s: %s: charon %q (%v), ours %v", ch.Name, x.k, lc[x.k], theirs, ours)
			}
		}
	}
}

func hasPrefix(lines []string, p string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

// checkProposals compares ours with charon's, where charon's default
// lists contain algorithms ipsecstack leaves out (and its log line may be
// cut off): then ours must be charon's in order with only those removed.
func checkProposals(t *testing.T, what string, ours []string, logged string) {
	t.Helper()
	theirs := logProposals(logged)
	if strings.Join(ours, " | ") == strings.Join(theirs, " | ") {
		return
	}
	if len(logged) > 800 { // the default lists; log line truncated
		for i, o := range ours {
			if i >= len(theirs) {
				break // cut off in the log
			}
			if !subsequence(strings.Fields(o), theirs[i]) {
				t.Errorf("%s: proposal %d: ours %q is not charon's %q without unsupported algorithms", what, i+1, o, theirs[i])
			}
		}
		return
	}
	t.Errorf("%s: proposals: charon %q, ours %q", what, theirs, ours)
}

// subsequence reports whether each "type:a/b" group of ours lists a
// subsequence of charon's group of that type.
func subsequence(ours []string, theirs string) bool {
	tg := map[string][]string{}
	for _, g := range strings.Fields(theirs) {
		k, v, _ := strings.Cut(g, ":")
		tg[k] = strings.Split(v, "/")
	}
	for _, g := range ours {
		k, v, _ := strings.Cut(g, ":")
		j := 0
		for _, n := range strings.Split(v, "/") {
			for j < len(tg[k]) && tg[k][j] != n {
				j++
			}
			if j == len(tg[k]) {
				// the truncated last group may end early
				return len(tg[k]) > 0 && strings.HasPrefix(n, tg[k][len(tg[k])-1])
			}
			j++
		}
	}
	return true
}

// writeCreds creates a CA and host certificates and keys the way
// strongSwan's testing names them: x509ca/strongswanCert.pem,
// x509/<host>Cert.pem, ecdsa/ or rsa/<host>Key.pem.
func writeCreds(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{"x509", "x509ca", "ecdsa", "rsa"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true,
		Subject:   pkix.Name{Country: []string{"CH"}, Organization: []string{"strongSwan Project"}, CommonName: "strongSwan Root CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	writePEM(t, filepath.Join(dir, "x509ca", "strongswanCert.pem"), "CERTIFICATE", caDER)
	for i, h := range []string{"moon", "sun", "carol", "dave", "alice", "bob", "venus", "mars"} {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)),
			Subject:      pkix.Name{Country: []string{"CH"}, Organization: []string{"strongSwan Project"}, CommonName: h + ".strongswan.org"},
			DNSNames:     []string{h + ".strongswan.org"},
			NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		}
		var pub any
		if h == "carol" {
			k, _ := rsa.GenerateKey(rand.Reader, 2048)
			pub = k.Public()
			writePEM(t, filepath.Join(dir, "rsa", h+"Key.pem"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k))
		} else {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			pub = k.Public()
			der, _ := x509.MarshalECPrivateKey(k)
			writePEM(t, filepath.Join(dir, "ecdsa", h+"Key.pem"), "EC PRIVATE KEY", der)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caKey)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, "x509", h+"Cert.pem"), "CERTIFICATE", der)
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// placeholders are strongSwan testing's address placeholders.
var placeholders = strings.NewReplacer(
	"PH_IP_MOON1", "10.1.0.1", "PH_IP_SUN1", "10.2.0.1", "PH_IP_CAROL1", "10.3.0.1", "PH_IP_DAVE1", "10.3.0.2",
	"PH_IP_MOON", "192.168.0.1", "PH_IP_SUN", "192.168.0.2", "PH_IP_CAROL", "192.168.0.100",
	"PH_IP_DAVE", "192.168.0.200", "PH_IP_ALICE", "10.1.0.10", "PH_IP_BOB", "10.2.0.10",
	"PH_IP_VENUS", "10.1.0.20", "PH_IP_WINNETOU", "192.168.0.150",
	"PH_IP6_MOON1", "fec1::1", "PH_IP6_SUN1", "fec2::1", "PH_IP6_MOON", "fec0::1", "PH_IP6_SUN", "fec0::2",
	"PH_IP6_CAROL", "fec0::10", "PH_IP6_DAVE", "fec0::20", "PH_IP6_ALICE", "fec1::10", "PH_IP6_BOB", "fec2::10")

var updownLine = regexp.MustCompile(`(?m)^\s*updown\s*=.*$`)

func TestOracleCharon(t *testing.T) {
	files, _ := filepath.Glob("testdata/oracle/*.conf")
	if len(files) == 0 {
		t.Fatal("no testdata/oracle/*.conf")
	}
	c := startCharon(t)
	dir := t.TempDir()
	writeCreds(t, dir)
	checked := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if oracleFile(t, c, dir, f, data, true) {
			checked++
		}
	}
	t.Logf("%d files compared with charon", checked)
	if tree := os.Getenv("SWANCTL_ORACLE_TREE"); tree != "" {
		var all, ours, same int
		filepath.Walk(tree, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() || !strings.HasSuffix(p, "/swanctl/swanctl.conf") {
				return nil
			}
			data, _ := os.ReadFile(p)
			data = updownLine.ReplaceAll([]byte(placeholders.Replace(string(data))), nil)
			all++
			if _, err := Parse(filepath.Join(dir, "swanctl.conf"), data); err != nil {
				return nil
			}
			ours++
			failed := t.Failed()
			if oracleFile(t, c, dir, p, data, false) && t.Failed() == failed {
				same++
			}
			return nil
		})
		t.Logf("tree %s: %d files, %d accepted by ipsecstack, %d of those loaded by charon identically", tree, all, ours, same)
	}
}

// oracleFile loads data as dir/swanctl.conf into us and charon and
// compares; strict files must be accepted by both.
func oracleFile(t *testing.T, c *charon, dir, name string, data []byte, strict bool) bool {
	t.Helper()
	path := filepath.Join(dir, "swanctl.conf")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		if strict {
			t.Errorf("%s: ours: %v", name, err)
		}
		return false
	}
	logged, err := c.load(t, path)
	if err != nil {
		if strict || len(cfg.Connections) > 0 {
			t.Errorf("%s: we accept it, charon does not: %v", name, err)
		}
		return false
	}
	conns := parseLog(logged)
	for _, conn := range cfg.Connections {
		l := conns[conn.Name]
		if l == nil {
			t.Errorf("%s: conn %s not in charon's log", name, conn.Name)
			continue
		}
		compareConn(t, name, conn, l)
	}
	return true
}
