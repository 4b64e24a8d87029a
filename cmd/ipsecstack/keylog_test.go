package main

import (
	"net/netip"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestKeylogLineUDPEncap: a UDP-encapsulated SA (NAT-T) gets the same
// esp_sa line as the plain ESP SA it encapsulates, not a comment: the
// ESP dissector Wireshark's UDPENCAP calls matches on the outer IP
// addresses and the SPI only (packet-ipsec-udp.c, packet-ipsec.c).
func TestKeylogLineUDPEncap(t *testing.T) {
	key := make([]byte, 20)
	key[0] = 0xab
	for _, c := range []struct{ src, dst, fam string }{
		{"10.0.0.1", "192.0.2.1", "IPv4"},
		{"2001:db8::1", "2001:db8::2", "IPv6"},
	} {
		plain := xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: 0x1000, Mode: xfrm.ModeTunnel,
			Src: netip.MustParseAddr(c.src), Dst: netip.MustParseAddr(c.dst),
			AEAD: xfrm.Algorithm{Name: "aes-gcm-16", Key: key}}
		encap := plain
		encap.Encap = xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 61234, DPort: 4500, OA: netip.MustParseAddr("198.51.100.7")}
		want := `"` + c.fam + `","` + c.src + `","` + c.dst + `","0x00001000","AES-GCM with 16 octet ICV [RFC4106]","0xab00000000000000000000000000000000000000","NULL",""`
		if got := keylogLine(&encap); got != want || keylogLine(&plain) != want {
			t.Errorf("%s:\n got %s\nwant %s", c.fam, got, want)
		}
	}
}
