package xfrm

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// Packet builders for hand-made test packets. Checksums are left zero:
// nothing here reads them.

func ipv4Pkt(src, dst string, proto uint8, fragField uint16, opts, payload []byte) []byte {
	ihl := 20 + len(opts)
	b := make([]byte, ihl+len(payload))
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:], fragField)
	b[8] = 64
	b[9] = proto
	s, d := addr(src).As4(), addr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], opts)
	copy(b[ihl:], payload)
	return b
}

func ipv6Pkt(src, dst string, nh uint8, payload []byte) []byte {
	b := make([]byte, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = nh
	b[7] = 64
	s, d := addr(src).As16(), addr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	copy(b[40:], payload)
	return b
}

// extHdr is a hop-by-hop, routing or destination options header of
// (units+1)*8 bytes.
func extHdr(nh uint8, units int) []byte {
	b := make([]byte, (units+1)*8)
	b[0], b[1] = nh, byte(units)
	b[2] = 1 // PadN, keeps the options well-formed for anyone who looks
	b[3] = byte(len(b) - 4)
	return b
}

func fragHdr(nh uint8, offset uint16, more bool, id uint32) []byte {
	b := make([]byte, 8)
	b[0] = nh
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

func l4Hdr(n int, sp, dp uint16) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b[0:], sp)
	binary.BigEndian.PutUint16(b[2:], dp)
	return b
}

func tcpHdr(sp, dp uint16) []byte { return l4Hdr(20, sp, dp) }
func udpHdr(sp, dp uint16) []byte { return l4Hdr(8, sp, dp) }
func icmpHdr(typ, code uint8) []byte {
	return []byte{typ, code, 0, 0, 0, 0, 0, 0}
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

const (
	mfFlag = 0x2000
	dfFlag = 0x4000
)

func TestParseFlow(t *testing.T) {
	v4opts := []byte{0x94, 0x04, 0, 0, 1, 1, 1, 0} // router alert + NOPs + EOL
	tests := []struct {
		name  string
		pkt   []byte
		want  Flow
		l4off int
		err   error
	}{
		{"ipv4 tcp", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoTCP, dfFlag, nil, tcpHdr(40000, 443)),
			Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoTCP, SrcPort: 40000, DstPort: 443}, 20, nil},
		{"ipv4 options udp", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoUDP, 0, v4opts, udpHdr(500, 4500)),
			Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoUDP, SrcPort: 500, DstPort: 4500}, 28, nil},
		{"ipv4 padding ignored", append(ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoUDP, 0, nil, udpHdr(1, 2)), 0xff, 0xff),
			Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoUDP, SrcPort: 1, DstPort: 2}, 20, nil},
		{"ipv4 icmp echo", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoICMP, 0, nil, icmpHdr(8, 0)),
			Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoICMP, SrcPort: 8}, 20, nil},
		{"ipv4 esp", ipv4Pkt("10.0.0.1", "10.0.0.2", 50, 0, nil, make([]byte, 16)),
			Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: 50}, 20, nil},
		{"ipv4 initial fragment", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoUDP, mfFlag, nil, udpHdr(53, 5353)),
			Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoUDP, SrcPort: 53, DstPort: 5353}, 20, nil},
		{"ipv4 initial fragment without ports", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoUDP, mfFlag, nil, []byte{0, 53}),
			Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoUDP, Opaque: true}, 20, nil},
		{"ipv4 non-initial fragment", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoUDP, mfFlag|185, nil, udpHdr(53, 5353)),
			Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoUDP, Opaque: true}, 20, nil},
		{"ipv4 last fragment", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoTCP, 1, nil, []byte{1, 2, 3, 4, 5, 6, 7, 8}),
			Flow{Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: ProtoTCP, Opaque: true}, 20, nil},
		{"ipv4 truncated tcp", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoTCP, 0, nil, []byte{1, 2, 3}), Flow{}, 0, ErrTruncated},
		{"ipv4 short header", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoTCP, 0, nil, nil)[:19], Flow{}, 0, ErrTruncated},
		{"ipv4 ihl 4", func() []byte { b := ipv4Pkt("10.0.0.1", "10.0.0.2", 6, 0, nil, tcpHdr(1, 2)); b[0] = 0x44; return b }(),
			Flow{}, 0, ErrMalformed},
		{"ipv4 ihl past end", func() []byte { b := ipv4Pkt("10.0.0.1", "10.0.0.2", 6, 0, nil, nil); b[0] = 0x4f; return b }(),
			Flow{}, 0, ErrMalformed},
		{"ipv4 total length past end", func() []byte {
			b := ipv4Pkt("10.0.0.1", "10.0.0.2", 6, 0, nil, tcpHdr(1, 2))
			binary.BigEndian.PutUint16(b[2:], 100)
			return b
		}(), Flow{}, 0, ErrTruncated},
		{"ipv6 tcp", ipv6Pkt("2001:db8::1", "2001:db8::2", ProtoTCP, tcpHdr(1234, 22)),
			Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2"), Proto: ProtoTCP, SrcPort: 1234, DstPort: 22}, 40, nil},
		{"ipv6 mapped stays ipv6", ipv6Pkt("::ffff:10.0.0.1", "::ffff:10.0.0.2", ProtoUDP, udpHdr(1, 2)),
			Flow{Src: addr("::ffff:10.0.0.1"), Dst: addr("::ffff:10.0.0.2"), Proto: ProtoUDP, SrcPort: 1, DstPort: 2}, 40, nil},
		{"ipv6 icmpv6 NS", ipv6Pkt("fe80::1", "ff02::1:ff00:2", ProtoICMPv6, append(icmpHdr(135, 0), make([]byte, 16)...)),
			Flow{Src: addr("fe80::1"), Dst: addr("ff02::1:ff00:2"), Proto: ProtoICMPv6, SrcPort: 135}, 40, nil},
		{"ipv6 hbh dst rt dst udp", ipv6Pkt("2001:db8::1", "2001:db8::2", nhHopOpts,
			cat(extHdr(nhDstOpts, 0), extHdr(nhRouting, 1), extHdr(nhDstOpts, 2), extHdr(ProtoUDP, 0), udpHdr(7, 9))),
			Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2"), Proto: ProtoUDP, SrcPort: 7, DstPort: 9}, 40 + 8 + 16 + 24 + 8, nil},
		{"ipv6 hbh frag udp (initial)", ipv6Pkt("2001:db8::1", "2001:db8::2", nhHopOpts,
			cat(extHdr(nhFragment, 0), fragHdr(ProtoUDP, 0, true, 7), udpHdr(4500, 4500))),
			Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2"), Proto: ProtoUDP, SrcPort: 4500, DstPort: 4500}, 56, nil},
		{"ipv6 initial fragment without ports", ipv6Pkt("2001:db8::1", "2001:db8::2", nhFragment,
			cat(fragHdr(ProtoTCP, 0, true, 7), []byte{0, 1})),
			Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2"), Proto: ProtoTCP, Opaque: true}, 48, nil},
		{"ipv6 non-initial fragment", ipv6Pkt("2001:db8::1", "2001:db8::2", nhFragment,
			cat(fragHdr(nhDstOpts, 1, false, 7), extHdr(ProtoUDP, 0), udpHdr(4500, 4500))),
			Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2"), Proto: nhDstOpts, Opaque: true}, 48, nil},
		{"ipv6 atomic fragment truncated tcp", ipv6Pkt("2001:db8::1", "2001:db8::2", nhFragment,
			cat(fragHdr(ProtoTCP, 0, false, 7), []byte{0, 1})), Flow{}, 0, ErrTruncated},
		{"ipv6 esp stops walk", ipv6Pkt("2001:db8::1", "2001:db8::2", nhDstOpts,
			cat(extHdr(50, 0), make([]byte, 24))),
			Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2"), Proto: 50}, 48, nil},
		{"ipv6 ah stops walk", ipv6Pkt("2001:db8::1", "2001:db8::2", 51, cat([]byte{ProtoTCP, 4}, make([]byte, 22), tcpHdr(1, 2))),
			Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2"), Proto: 51}, 40, nil},
		{"ipv6 no next header", ipv6Pkt("2001:db8::1", "2001:db8::2", nhNoNext, nil),
			Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2"), Proto: nhNoNext}, 40, nil},
		{"ipv6 sctp", ipv6Pkt("2001:db8::1", "2001:db8::2", protoSCTP, l4Hdr(12, 3868, 3868)),
			Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2"), Proto: protoSCTP, SrcPort: 3868, DstPort: 3868}, 40, nil},
		{"ipv6 udplite", ipv6Pkt("2001:db8::1", "2001:db8::2", protoUDPLite, udpHdr(5, 6)),
			Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2"), Proto: protoUDPLite, SrcPort: 5, DstPort: 6}, 40, nil},
		{"ipv6 mobility header", ipv6Pkt("2001:db8::1", "2001:db8::2", protoMH, []byte{59, 0, 5, 0, 0, 0, 0, 0}),
			Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2"), Proto: protoMH, SrcPort: 5}, 40, nil},
		{"ipv6 hbh not first", ipv6Pkt("2001:db8::1", "2001:db8::2", nhDstOpts,
			cat(extHdr(nhHopOpts, 0), extHdr(ProtoUDP, 0), udpHdr(1, 2))), Flow{}, 0, ErrMalformed},
		{"ipv6 ext header past end", ipv6Pkt("2001:db8::1", "2001:db8::2", nhRouting,
			cat([]byte{ProtoUDP, 3}, make([]byte, 6), udpHdr(1, 2))), Flow{}, 0, ErrTruncated},
		{"ipv6 ext header 1 byte", ipv6Pkt("2001:db8::1", "2001:db8::2", nhDstOpts, []byte{ProtoUDP}), Flow{}, 0, ErrTruncated},
		{"ipv6 fragment header short", ipv6Pkt("2001:db8::1", "2001:db8::2", nhFragment, []byte{17, 0, 0, 1}), Flow{}, 0, ErrTruncated},
		{"ipv6 short header", make([]byte, 39), Flow{}, 0, ErrBadVersion},
		{"ipv6 short header v6", append([]byte{0x60}, make([]byte, 38)...), Flow{}, 0, ErrTruncated},
		{"ipv6 payload length past end", func() []byte {
			b := ipv6Pkt("2001:db8::1", "2001:db8::2", ProtoUDP, udpHdr(1, 2))
			binary.BigEndian.PutUint16(b[4:], 9)
			return b
		}(), Flow{}, 0, ErrTruncated},
		{"ipv6 truncated udp", ipv6Pkt("2001:db8::1", "2001:db8::2", ProtoUDP, []byte{1, 2, 3}), Flow{}, 0, ErrTruncated},
		{"ipv6 truncated icmpv6", ipv6Pkt("2001:db8::1", "2001:db8::2", ProtoICMPv6, []byte{135}), Flow{}, 0, ErrTruncated},
		{"empty", nil, Flow{}, 0, ErrTruncated},
		{"version 5", []byte{0x50, 0, 0, 0}, Flow{}, 0, ErrBadVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Flow{Src: addr("1.2.3.4"), SrcPort: 99} // must be reset
			l4off, err := ParseFlow(tt.pkt, &f)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParseFlow err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFlow: %v", err)
			}
			if f != tt.want || l4off != tt.l4off {
				t.Errorf("ParseFlow = %v, %d; want %v, %d", f, l4off, tt.want, tt.l4off)
			}
		})
	}
}

func TestParseFlowNoAlloc(t *testing.T) {
	pkt := ipv6Pkt("2001:db8::1", "2001:db8::2", nhHopOpts, cat(extHdr(nhFragment, 0), fragHdr(ProtoUDP, 0, true, 7), udpHdr(1, 2)))
	var f Flow
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseFlow(pkt, &f) }); n != 0 {
		t.Errorf("ParseFlow allocates %v times", n)
	}
}

func TestParseIPLayout(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
		want IPLayout
		err  error
	}{
		{"ipv4", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoTCP, 0, nil, tcpHdr(1, 2)),
			IPLayout{Version: 4, End: 40, InsertOff: 20, NextHdrOff: 9, FragOff: -1}, nil},
		{"ipv4 options padding", append(ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoTCP, 0, make([]byte, 8), tcpHdr(1, 2)), 0, 0),
			IPLayout{Version: 4, End: 48, InsertOff: 28, NextHdrOff: 9, FragOff: -1}, nil},
		{"ipv4 fragment", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoTCP, mfFlag, nil, tcpHdr(1, 2)),
			IPLayout{Version: 4, End: 40, InsertOff: 20, NextHdrOff: 9, FragOff: -1, Fragment: true}, nil},
		{"ipv4 DF is not a fragment", ipv4Pkt("10.0.0.1", "10.0.0.2", ProtoTCP, dfFlag, nil, tcpHdr(1, 2)),
			IPLayout{Version: 4, End: 40, InsertOff: 20, NextHdrOff: 9, FragOff: -1}, nil},
		{"ipv6 plain", ipv6Pkt("2001:db8::1", "2001:db8::2", ProtoTCP, tcpHdr(1, 2)),
			IPLayout{Version: 6, End: 60, InsertOff: 40, NextHdrOff: 6, FragOff: -1}, nil},
		{"ipv6 hbh", ipv6Pkt("2001:db8::1", "2001:db8::2", nhHopOpts, cat(extHdr(ProtoTCP, 0), tcpHdr(1, 2))),
			IPLayout{Version: 6, End: 68, InsertOff: 48, NextHdrOff: 40, FragOff: -1}, nil},
		{"ipv6 final dest opts stay after ESP", ipv6Pkt("2001:db8::1", "2001:db8::2", nhHopOpts,
			cat(extHdr(nhDstOpts, 0), extHdr(ProtoTCP, 1), tcpHdr(1, 2))),
			IPLayout{Version: 6, End: 84, InsertOff: 48, NextHdrOff: 40, FragOff: -1}, nil},
		{"ipv6 dest opts before routing are unfragmentable", ipv6Pkt("2001:db8::1", "2001:db8::2", nhHopOpts,
			cat(extHdr(nhDstOpts, 0), extHdr(nhRouting, 0), extHdr(nhDstOpts, 2), extHdr(ProtoTCP, 0), tcpHdr(1, 2))),
			// 40 hbh, 48 dst, 56 rt (24), 80 dst, 88 tcp
			IPLayout{Version: 6, End: 108, InsertOff: 80, NextHdrOff: 56, FragOff: -1}, nil},
		{"ipv6 fragment header", ipv6Pkt("2001:db8::1", "2001:db8::2", nhRouting,
			cat(extHdr(nhFragment, 0), fragHdr(ProtoUDP, 0, true, 1), udpHdr(1, 2))),
			IPLayout{Version: 6, End: 64, InsertOff: 48, NextHdrOff: 40, FragOff: 48, Fragment: true}, nil},
		{"ipv6 atomic fragment", ipv6Pkt("2001:db8::1", "2001:db8::2", nhFragment, cat(fragHdr(ProtoUDP, 0, false, 1), udpHdr(1, 2))),
			IPLayout{Version: 6, End: 56, InsertOff: 40, NextHdrOff: 6, FragOff: 40}, nil},
		{"ipv6 truncated routing", ipv6Pkt("2001:db8::1", "2001:db8::2", nhRouting, []byte{6, 1, 0, 0, 0, 0, 0, 0}), IPLayout{}, ErrTruncated},
		{"ipv6 hbh not first", ipv6Pkt("2001:db8::1", "2001:db8::2", nhRouting, cat(extHdr(nhHopOpts, 0), extHdr(6, 0))), IPLayout{}, ErrMalformed},
		{"garbage", []byte{0x12}, IPLayout{}, ErrBadVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseIPLayout(tt.pkt)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ParseIPLayout = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestParseFlowTruncations cuts valid packets at every length: errors are
// fine, panics and out-of-range offsets are not.
func TestParseFlowTruncations(t *testing.T) {
	for _, pkt := range fuzzSeeds() {
		for n := 0; n <= len(pkt); n++ {
			checkParse(t, pkt[:n])
			// Also with the length field agreeing, so the cut falls
			// inside the datagram rather than before its end.
			checkParse(t, fixLen(append([]byte(nil), pkt[:n]...)))
		}
	}
}

// checkParse runs both parsers on pkt and checks their invariants.
func checkParse(t *testing.T, pkt []byte) {
	t.Helper()
	var f Flow
	l4off, err := ParseFlow(pkt, &f)
	if err == nil {
		if l4off < 0 || l4off > len(pkt) {
			t.Fatalf("l4off %d out of [0,%d] for %x", l4off, len(pkt), pkt)
		}
		if (pkt[0]>>4 == 4) != f.Src.Is4() || (pkt[0]>>4 == 4) != f.Dst.Is4() {
			t.Fatalf("flow %v family does not follow version of %x", f, pkt)
		}
		// A flow always matches the exact selector built from it.
		sel := Selector{Src: exactPrefix(f.Src), Dst: exactPrefix(f.Dst), Proto: f.Proto}
		if !f.Opaque && f.SrcPort != 0 {
			sel.SrcPorts = PortRange{Lo: f.SrcPort, Hi: f.SrcPort}
		}
		if !sel.Match(&f) {
			t.Fatalf("flow %v does not match its own selector %v", f, sel)
		}
	}
	l, lerr := ParseIPLayout(pkt)
	if err == nil && lerr != nil {
		t.Fatalf("ParseFlow accepted %x but ParseIPLayout: %v", pkt, lerr)
	}
	if lerr == nil {
		if l.End > len(pkt) || l.InsertOff > l.End || l.NextHdrOff >= l.InsertOff || l.NextHdrOff < 0 ||
			l.FragOff >= l.End || (l.FragOff >= 0 && l.FragOff < l.InsertOff) {
			t.Fatalf("bad layout %+v for %d-byte %x", l, len(pkt), pkt)
		}
		if err == nil && l.InsertOff > l4off {
			t.Fatalf("InsertOff %d past l4off %d in %x", l.InsertOff, l4off, pkt)
		}
	}
}

func exactPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// fixLen sets the IP length field to the buffer's length.
func fixLen(b []byte) []byte {
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	case len(b) >= 40 && b[0]>>4 == 6:
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	}
	return b
}

// fuzzSeeds are the packets of the checked-in FuzzParseFlow corpus.
func fuzzSeeds() map[string][]byte {
	return map[string][]byte{
		"ipv4-tcp":      ipv4Pkt("192.0.2.1", "198.51.100.7", ProtoTCP, dfFlag, nil, tcpHdr(51515, 443)),
		"ipv4-fragment": ipv4Pkt("192.0.2.1", "198.51.100.7", ProtoUDP, mfFlag|64, nil, make([]byte, 24)),
		"ipv4-options-icmp": ipv4Pkt("192.0.2.1", "198.51.100.7", ProtoICMP, 0,
			[]byte{0x94, 0x04, 0, 0}, icmpHdr(8, 0)),
		"ipv6-hbh-frag-udp": ipv6Pkt("2001:db8::1", "2001:db8::2", nhHopOpts,
			cat(extHdr(nhFragment, 0), fragHdr(ProtoUDP, 0, true, 0x1234), udpHdr(4500, 4500), make([]byte, 16))),
		"ipv6-icmpv6-ns": ipv6Pkt("fe80::1", "ff02::1:ff00:2", ProtoICMPv6,
			cat(icmpHdr(135, 0), addrBytes("fe80::2"))),
		"ipv6-dst-rt-esp": ipv6Pkt("2001:db8::1", "2001:db8::2", nhDstOpts,
			cat(extHdr(nhRouting, 0), extHdr(50, 2), make([]byte, 32))),
		"ipv6-truncated": ipv6Pkt("2001:db8::1", "2001:db8::2", nhHopOpts,
			cat(extHdr(nhRouting, 0), []byte{ProtoTCP, 6, 0, 0}))[:52],
		"ipv4-truncated": ipv4Pkt("192.0.2.1", "198.51.100.7", ProtoTCP, 0, nil, tcpHdr(1, 2))[:22],
	}
}

func addrBytes(s string) []byte { b := addr(s).As16(); return b[:] }

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzParseFlow seeds")

// TestFuzzSeedCorpus keeps the checked-in corpus in step with fuzzSeeds;
// run with -update-fuzz-seeds to regenerate it.
func TestFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParseFlow")
	for name, pkt := range fuzzSeeds() {
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", pkt)
		path := filepath.Join(dir, name)
		if *updateFuzzSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("seed %s missing (run go test -run TestFuzzSeedCorpus -update-fuzz-seeds): %v", name, err)
		}
		if string(got) != want {
			t.Errorf("seed %s out of date (run go test -run TestFuzzSeedCorpus -update-fuzz-seeds)", name)
		}
	}
}

func FuzzParseFlow(f *testing.F) {
	f.Fuzz(func(t *testing.T, pkt []byte) {
		checkParse(t, pkt)
	})
}
