package main

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/setkey"
)

func TestParseRunFlags(t *testing.T) {
	c, err := parseRunFlags(strings.Fields("--link afpacket:eth1 --addr 192.0.2.1/24 --addr fd00::1/64 "+
		"--route 10.2.0.0/24=192.0.2.2,src=192.0.2.1 --route fd00:b::/64= --mtu 1400 --echo tcp:7 --echo udp:7 "+
		"--forward tcp:127.0.0.1:8080=[fd00::2]:80 --forward udp::53=192.0.2.2:53 --log-level debug"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.LinkKind != "afpacket" || c.LinkName != "eth1" || len(c.Addrs) != 2 || c.MTU != 1400 || len(c.Echo) != 2 {
		t.Errorf("parsed %+v", c)
	}
	if r := c.Routes[0]; r.Dst != netip.MustParsePrefix("10.2.0.0/24") || r.Gateway != netip.MustParseAddr("192.0.2.2") || r.Src != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("route 0: %+v", r)
	}
	if r := c.Routes[1]; r.Gateway.IsValid() {
		t.Errorf("on-link route has a gateway: %+v", r)
	}
	if f := c.Forward[0]; f.Proto != "tcp" || f.Listen != "127.0.0.1:8080" || f.To != netip.MustParseAddrPort("[fd00::2]:80") {
		t.Errorf("forward 0: %+v", f)
	}
	if f := c.Forward[1]; f.Proto != "udp" || f.Listen != ":53" {
		t.Errorf("forward 1: %+v", f)
	}
	if l := c.ForwardLimits; l.MaxSessions != defaultForwardMaxSessions || l.Idle != defaultForwardIdle {
		t.Errorf("forward limits %+v, want the defaults", l)
	}
	if c, err := parseRunFlags(strings.Fields("--link tap:x --addr 192.0.2.1/24 --forward-max-sessions 9 --forward-idle-timeout 5s"), io.Discard); err != nil ||
		c.ForwardLimits != (forwardLimits{MaxSessions: 9, Idle: 5 * time.Second}) {
		t.Errorf("forward limits: %v %+v", err, c)
	}

	// UDP segmentation offload: on by default, off with =false.
	for _, tc := range []struct {
		args string
		want bool
	}{
		{"--link afpacket:eth1", true},
		{"--link afpacket:eth1 --udp-gso=false", false},
		{"--link tap:x", true},
		{"--link tap:x --udp-gso=false", false},
	} {
		c, err := parseRunFlags(strings.Fields(tc.args+" --addr 192.0.2.1/24"), io.Discard)
		if err != nil || c.UDPGSO != tc.want {
			t.Errorf("%s: UDPGSO %v, %v; want %v", tc.args, c != nil && c.UDPGSO, err, tc.want)
		}
	}

	if c, err := parseRunFlags(strings.Fields("--link tap:x --addr 192.0.2.1/24 --pprof 127.0.0.1:6060"), io.Discard); err != nil || c.Pprof != "127.0.0.1:6060" {
		t.Errorf("--pprof: %v %+v", err, c)
	}

	for _, args := range []string{
		"", "--link afpacket:eth1", "--link eth1 --addr 192.0.2.1/24", "--link tap: --addr 192.0.2.1/24",
		"--link tap:x --addr 192.0.2.1", "--link tap:x --addr 192.0.2.1/24 --route 10.0.0.0/8",
		"--link tap:x --addr 192.0.2.1/24 --route 10.0.0.0/8=1.2.3.4,via=1.2.3.5",
		"--link tap:x --addr 192.0.2.1/24 --echo tcp:0", "--link tap:x --addr 192.0.2.1/24 --echo tcp:7 --echo tcp:7",
		"--link tap:x --addr 192.0.2.1/24 --forward tcp:80=1.2.3.4:80",
		"--link tap:x --addr 192.0.2.1/24 --forward tcp:example.com:80=1.2.3.4:80",
		"--link tap:x --addr 192.0.2.1/24 --forward tcp::80=0.0.0.0:80",
		"--link tap:x --addr 192.0.2.1/24 --metrics 9101", "--link tap:x --addr 192.0.2.1/24 --pprof 6060", "--link tap:x --addr 192.0.2.1/24 --log-level chatty",
		"--link tap:x --addr 192.0.2.1/24 --mtu 70000", "--link tap:x --addr 192.0.2.1/24 stray",
		"--link tap:x --addr 192.0.2.1/24 --pcap a --keylog a", "--link tap:x --addr 192.0.2.1/24 --nope",
		"--link tap:x --addr 192.0.2.1/24 --forward-max-sessions 0", "--link tap:x --addr 192.0.2.1/24 --forward-idle-timeout 0s",
		"--link tap:x --addr 192.0.2.1/24 --forward-idle-timeout soon",
		"--link tap:x --addr 192.0.2.1/24 --nat-keepalive 10ms", "--link tap:x --addr 192.0.2.1/24 --nat-keepalive 2h",
		"--link tap:x --addr 192.0.2.1/24 --ike-retransmit 1s", "--link tap:x --addr 192.0.2.1/24 --ike-retransmit 1ms,1.8,5",
		"--link tap:x --addr 192.0.2.1/24 --ike-retransmit 1s,0.5,5", "--link tap:x --addr 192.0.2.1/24 --ike-retransmit 1s,1.8,0",
	} {
		_, err := parseRunFlags(strings.Fields(args), io.Discard)
		if !errors.Is(err, errUsage) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want a one-line usage error", args, err)
		}
	}
	if _, err := parseRunFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func TestKeylogLine(t *testing.T) {
	k := func(n int) []byte { b := make([]byte, n); b[0] = 0xab; return b }
	a6, b6 := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	a4, b4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for _, c := range []struct {
		cfg  xfrm.SAConfig
		want string
	}{
		{xfrm.SAConfig{Src: a6, Dst: b6, SPI: 0x1001, AEAD: xfrm.Algorithm{Name: "aes-gcm-16", Key: k(20)}},
			`"IPv6","fd00::1","fd00::2","0x00001001","AES-GCM with 16 octet ICV [RFC4106]","0xab` + strings.Repeat("00", 19) + `","NULL",""`},
		{xfrm.SAConfig{Src: a4, Dst: b4, SPI: 0x1002, AEAD: xfrm.Algorithm{Name: "rfc4106(gcm(aes))", Key: k(20), ICVBits: 96}},
			`"IPv4","192.0.2.1","192.0.2.2","0x00001002","AES-GCM with 12 octet ICV [RFC4106]"`},
		{xfrm.SAConfig{Src: a4, Dst: b4, SPI: 0x1003, Enc: xfrm.Algorithm{Name: "aes-cbc", Key: k(16)}, Auth: xfrm.Algorithm{Name: "hmac-sha256", Key: k(32)}},
			`"AES-CBC [RFC3602]","0xab` + strings.Repeat("00", 15) + `","HMAC-SHA-256-128 [RFC4868]","0xab`},
		{xfrm.SAConfig{Src: a4, Dst: b4, SPI: 0x1004, Enc: xfrm.Algorithm{Name: "aes-ctr", Key: k(20)}, Auth: xfrm.Algorithm{Name: "hmac-sha1", Key: k(20)}},
			`"AES-CTR [RFC3686]","0xab` + strings.Repeat("00", 19) + `","HMAC-SHA-1-96 [RFC2404]"`},
		{xfrm.SAConfig{Src: a4, Dst: b4, SPI: 0x1005, Enc: xfrm.Algorithm{Name: "null"}, Auth: xfrm.Algorithm{Name: "hmac-md5", Key: k(16)}},
			`"NULL","","HMAC-MD5-96 [RFC2403]"`},
		{xfrm.SAConfig{Src: a4, Dst: b4, SPI: 0x1006, Enc: xfrm.Algorithm{Name: "3des-cbc", Key: k(24)}, Auth: xfrm.Algorithm{Name: "aes-xcbc-mac", Key: k(16)}},
			`"TripleDES-CBC [RFC2451]","0xab` + strings.Repeat("00", 23) + `","ANY 96 bit authentication [no checking]",""`},
		{xfrm.SAConfig{Src: a4, Dst: b4, SPI: 0x1007, AEAD: xfrm.Algorithm{Name: "chacha20-poly1305", Key: k(36)}},
			`# Wireshark 4.0 cannot decrypt rfc7539esp(chacha20,poly1305): "IPv4"`},
		{xfrm.SAConfig{Src: a4, Dst: b4, SPI: 0x1008, AEAD: xfrm.Algorithm{Name: "aes-gcm-16", Key: k(20)}, ESN: true},
			`# ESN`},
	} {
		c.cfg.Proto = xfrm.ProtoESP
		got := keylogLine(&c.cfg)
		if !strings.Contains(got, c.want) {
			t.Errorf("SPI %#x:\n got %s\nwant …%s…", c.cfg.SPI, got, c.want)
		}
		if strings.ContainsAny(got, "\n") || strings.Count(got, `","`) != 7 {
			t.Errorf("SPI %#x: not one 8-field line: %s", c.cfg.SPI, got)
		}
	}
}

// TestIKERetransmitFlag: --ike-retransmit TIMEOUT,BASE,TRIES is charon's
// retransmit_timeout/base/tries; absent, the daemon keeps strongSwan's
// schedule (the zero value).
func TestIKERetransmitFlag(t *testing.T) {
	c, err := parseRunFlags(strings.Fields("--link tap:x --addr 172.16.0.1/24 --ike-retransmit 500ms,1.5,2"), io.Discard)
	if want := (exchange.Retransmit{Timeout: 500 * time.Millisecond, Base: 1.5, Tries: 2}); err != nil || c.IKERetransmit != want {
		t.Fatalf("--ike-retransmit 500ms,1.5,2: %+v, %v", c.IKERetransmit, err)
	}
	if c, err := parseRunFlags(strings.Fields("--link tap:x --addr 172.16.0.1/24"), io.Discard); err != nil || c.IKERetransmit != (exchange.Retransmit{}) {
		t.Fatalf("default: %+v, %v", c.IKERetransmit, err)
	}
}

// TestNATKeepaliveFlag: --nat-keepalive (default 20 s, strongSwan's) gives
// the setkey file's esp-udp SAs that leave from one of the stack's
// addresses a keepalive interval; SAs toward us, plain ESP and SAs with an
// interval of their own are left alone; 0 turns it off.
func TestNATKeepaliveFlag(t *testing.T) {
	c, err := parseRunFlags(strings.Fields("--link tap:x --addr 172.16.0.1/24"), io.Discard)
	if err != nil || c.NATKeepalive != 20*time.Second {
		t.Fatalf("default --nat-keepalive: %v, %v", c, err)
	}
	if c, err := parseRunFlags(strings.Fields("--link tap:x --addr 172.16.0.1/24 --nat-keepalive 0"), io.Discard); err != nil || c.NATKeepalive != 0 {
		t.Fatalf("--nat-keepalive 0: %v, %v", c, err)
	}
	me, peer := netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("192.0.2.1")
	encap := xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4500}
	own := encap
	own.Keepalive = time.Minute
	stmts := []setkey.Statement{
		{Cmd: "add", SA: xfrm.SAConfig{Src: me, Dst: peer, Encap: encap}},
		{Cmd: "add", SA: xfrm.SAConfig{Src: peer, Dst: me, Encap: encap}},
		{Cmd: "add", SA: xfrm.SAConfig{Src: me, Dst: peer}},
		{Cmd: "add", SA: xfrm.SAConfig{Src: me, Dst: peer, Encap: own}},
	}
	setNATKeepalives(stmts, c.Addrs, c.NATKeepalive)
	for i, want := range []time.Duration{20 * time.Second, 0, 0, time.Minute} {
		if got := stmts[i].SA.Encap.Keepalive; got != want {
			t.Errorf("SA %d: keepalive %v, want %v", i, got, want)
		}
	}
}
