package integration

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestClearFrames: the capture check of the Linux matrix passes IPsec and
// neighbour discovery/MLD in clear and nothing else (vectors laid out by
// hand from RFC 8200, RFC 4861, RFC 3810 and RFC 4303).
func TestClearFrames(t *testing.T) {
	ll := netip.MustParseAddr("fe80::1")
	g1, g2 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	frame := func(src, dst netip.Addr, nh uint8, payload []byte) []byte {
		f := make([]byte, 14+40, 14+40+len(payload))
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		f[14] = 0x60
		binary.BigEndian.PutUint16(f[18:], uint16(len(payload)))
		f[20], f[21] = nh, 255
		s, d := src.As16(), dst.As16()
		copy(f[22:], s[:])
		copy(f[38:], d[:])
		return append(f, payload...)
	}
	icmp := func(typ byte) []byte { return append([]byte{typ, 0, 0, 0}, make([]byte, 20)...) }
	// MLDv2 report: hop-by-hop header with Router Alert, then ICMPv6 143.
	mld := frame(ll, netip.MustParseAddr("ff02::16"), 0, append([]byte{58, 0, 5, 2, 0, 0, 1, 0}, icmp(143)...))
	nsGlobal := frame(g1, netip.MustParseAddr("ff02::1:ff00:2"), 58, icmp(135))
	nsLocal := frame(ll, netip.MustParseAddr("ff02::1:ff00:2"), 58, icmp(135))
	esp := frame(g1, g2, 50, append([]byte{0, 0, 0x10, 0x01, 0, 0, 0, 1}, make([]byte, 32)...))
	udp := frame(g1, g2, 17, []byte{0x9c, 0x40, 0, 7, 0, 8, 0, 0})
	arp := append([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x06}, make([]byte, 28)...)
	for _, c := range []struct {
		name   string
		strict bool
		frames [][]byte
		bad    int
	}{
		{"IPsec, MLD, NDP, ARP", false, [][]byte{esp, mld, nsGlobal, nsLocal, arp}, 0},
		{"UDP in clear", false, [][]byte{esp, udp}, 1},
		{"NS from a global address with NDP under ESP", true, [][]byte{mld, nsLocal, nsGlobal}, 1},
		{"cut frame", false, [][]byte{esp[:30]}, 1},
	} {
		if bad := clearFrames(c.frames, c.strict); len(bad) != c.bad {
			t.Errorf("%s: %d bad frames, want %d: %q", c.name, len(bad), c.bad, bad)
		}
	}
}
