package setkey

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/pfkey"
)

// nattConf is ipsec-tools' NAT-T form: "esp-udp" with the UDP ports after
// the addresses, optionally the peer's original address (NAT-OA) after
// esp-udp; IPv6, transport mode and the port as a separate word too.
const nattConf = `
add 10.0.0.1[4500] 192.0.2.1[4500] esp-udp 0x1000 -m tunnel -u 5
	-E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233 ;
add 192.0.2.1[61234] 10.0.0.1[4500] esp-udp 198.51.100.7 0x1001 -m transport
	-E aes-cbc 0x00112233445566778899aabbccddeeff -A hmac-sha256 0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff ;
add 2001:db8::1[4500] 2001:db8::2 [4501] esp-udp 0x1002 -m tunnel
	-E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233 ;
add 10.0.0.1[4500] 192.0.2.1[4500] esp-udp 0.0.0.0 0x1003
	-E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233 ;
`

func TestNATTParse(t *testing.T) {
	st, err := Parse("natt.conf", nattConf)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		spi   uint32
		mode  xfrm.Mode
		encap xfrm.Encap
	}{
		{0x1000, xfrm.ModeTunnel, xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4500}},
		{0x1001, xfrm.ModeTransport, xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 61234, DPort: 4500, OA: netip.MustParseAddr("198.51.100.7")}},
		{0x1002, xfrm.ModeTunnel, xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4501}},
		// An unspecified NAT-OA (Linux's `encap espinudp 4500 4500
		// 0.0.0.0`) is none.
		{0x1003, xfrm.ModeTransport, xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4500}},
	}
	if len(st) != len(want) {
		t.Fatalf("%d statements", len(st))
	}
	for i, w := range want {
		c := st[i].SA
		if c.Proto != xfrm.ProtoESP || c.SPI != w.spi || c.Mode != w.mode || c.Encap != w.encap {
			t.Errorf("statement %d: %v spi %#x mode %v encap %+v, want spi %#x mode %v encap %+v", i, c.Proto, c.SPI, c.Mode, c.Encap, w.spi, w.mode, w.encap)
		}
		// The PF_KEY message carries the NAT-T extensions.
		m, err := Messages(&st[i])
		if err != nil {
			t.Fatal(err)
		}
		d, err := pfkey.DecodeRequest(m.MustEncode())
		if err != nil {
			t.Fatal(err)
		}
		back, err := pfkey.ConfigFromMsg(d)
		if err != nil || back.Encap != w.encap {
			t.Errorf("statement %d over PF_KEY: %+v %v", i, back.Encap, err)
		}
	}
	// get and delete take esp-udp and the ports, and name the ESP SA.
	st, err = Parse("natt.conf", "get 10.0.0.1[4500] 192.0.2.1[4500] esp-udp 0x1000; delete 10.0.0.1 192.0.2.1 esp-udp 0x1000;")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Proto != xfrm.ProtoESP || s.SPI != 0x1000 || s.Dst != netip.MustParseAddr("192.0.2.1") {
			t.Errorf("%s: %+v", s.Cmd, s)
		}
	}
}

// TestNATTDump: `setkey -D` prints a UDP-encapsulated SA as ipsec-tools'
// pfkey_sadump does (ports after the addresses, "esp-udp", "NAT OA="), so
// that its first line is the endpoints to give add; a plain SA is
// unchanged. The SAs are applied all-or-nothing like any other.
func TestNATTDump(t *testing.T) {
	st, err := Parse("natt.conf", nattConf)
	if err != nil {
		t.Fatal(err)
	}
	e := xfrm.NewEngine()
	defer e.Close()
	// A failing statement after the NAT-T adds: none of them is applied.
	bad, err := Parse("natt.conf", nattConf+"add 10.0.0.1[4500] 192.0.2.1[4500] esp-udp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;")
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(e, bad); err == nil || e.SAD.Len() != 0 {
		t.Fatalf("duplicate applied: %v, %d SAs", err, e.SAD.Len())
	}
	if err := Apply(e, st); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	DumpSAD(&out, e, 0)
	got := out.String()
	for _, want := range []string{
		"10.0.0.1[4500] 192.0.2.1[4500] \n\tesp-udp mode=tunnel spi=4096(0x00001000) reqid=5(0x00000005)\n\tE: aes-gcm-16 ",
		"192.0.2.1[61234] 10.0.0.1[4500] \n\tesp-udp mode=transport spi=4097(0x00001001) reqid=0(0x00000000)\n\tNAT OA=198.51.100.7\n\tE: aes-cbc ",
		"2001:db8::1[4500] 2001:db8::2[4501] \n\tesp-udp mode=tunnel spi=4098(0x00001002)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("dump lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "NAT OA=") != 1 {
		t.Errorf("NAT OA printed for an SA without one:\n%s", got)
	}
	// A plain SA prints as before.
	e2 := xfrm.NewEngine()
	defer e2.Close()
	plain, _ := Parse("p.conf", "add 10.0.0.1 192.0.2.1 esp 0x1000 -E aes-gcm-16 0x00112233445566778899aabbccddeeff00112233;")
	if err := Apply(e2, plain); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	DumpSAD(&out, e2, 0)
	if !strings.HasPrefix(out.String(), "10.0.0.1 192.0.2.1 \n\tesp mode=transport ") {
		t.Errorf("plain SA:\n%s", out.String())
	}
}
