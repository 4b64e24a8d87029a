package stack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/ipsecstack/ipsecstack/link/memlink"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// FuzzNotePMTU drives the Packet Too Big reader with arbitrary packets
// from the network: it must never panic, and may only ever lower the path
// MTU of the one outbound SA's outer addresses, never below the minimums.
func FuzzNotePMTU(f *testing.F) {
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	src6, dst6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	eng := xfrm.NewEngine()
	defer eng.Close()
	for _, c := range []xfrm.SAConfig{
		{Proto: xfrm.ProtoESP, SPI: 0x1001, Src: src, Dst: dst, Mode: xfrm.ModeTransport},
		{Proto: xfrm.ProtoESP, SPI: 0x1001, Src: src6, Dst: dst6, Mode: xfrm.ModeTransport},
	} {
		c.AEAD = xfrm.Algorithm{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{1}, 20)}
		if _, err := eng.AddSA(c); err != nil {
			f.Fatal(err)
		}
	}
	l, _ := memlink.NewPair("\x02\x00\x00\x00\x00\x01", "\x02\x00\x00\x00\x00\x02", 1500)
	e := NewEndpoint(l, eng)

	// Seeds: a valid Fragmentation Needed and Packet Too Big quoting the SA.
	q4 := make([]byte, 28)
	q4[0], q4[9] = 0x45, 50
	binary.BigEndian.PutUint16(q4[2:], 1500)
	s4, d4 := src.As4(), dst.As4()
	copy(q4[12:], s4[:])
	copy(q4[16:], d4[:])
	binary.BigEndian.PutUint32(q4[20:], 0x1001)
	p4 := make([]byte, 28+len(q4))
	p4[0], p4[9] = 0x45, 1
	binary.BigEndian.PutUint16(p4[2:], uint16(len(p4)))
	copy(p4[12:], d4[:])
	copy(p4[16:], s4[:])
	p4[20], p4[21] = 3, 4
	binary.BigEndian.PutUint16(p4[26:], 1400)
	copy(p4[28:], q4)
	f.Add(p4)
	q6 := make([]byte, 48)
	q6[0], q6[6] = 0x60, 50
	s16, d16 := src6.As16(), dst6.As16()
	copy(q6[8:], s16[:])
	copy(q6[24:], d16[:])
	binary.BigEndian.PutUint32(q6[40:], 0x1001)
	p6 := make([]byte, 48+len(q6))
	p6[0], p6[6] = 0x60, 58
	binary.BigEndian.PutUint16(p6[4:], uint16(8+len(q6)))
	copy(p6[8:], d16[:])
	copy(p6[24:], s16[:])
	p6[40] = 2
	binary.BigEndian.PutUint32(p6[44:], 1300)
	copy(p6[48:], q6)
	f.Add(p6)
	for _, c := range []struct {
		pkt      []byte
		src, dst netip.Addr
		want     uint32
	}{{p4, src, dst, 1400}, {p6, src6, dst6, 1300}} {
		var fl xfrm.Flow
		if _, err := xfrm.ParseFlow(c.pkt, &fl); err != nil {
			f.Fatal(err)
		}
		if e.notePMTU(c.pkt, &fl); e.PathMTU(c.src, c.dst) != c.want {
			f.Fatalf("seed: path MTU %d, want %d", e.PathMTU(c.src, c.dst), c.want)
		}
	}
	e.pmtu.m = nil
	e.pmtu.n.Store(0)

	f.Fuzz(func(t *testing.T, b []byte) {
		var fl xfrm.Flow
		if _, err := xfrm.ParseFlow(b, &fl); err != nil {
			return
		}
		e.notePMTU(b, &fl)
		if m := e.PathMTU(src, dst); m != 0 && (m < minPMTU4 || m >= 1500) {
			t.Fatalf("IPv4 path MTU %d", m)
		}
		if m := e.PathMTU(src6, dst6); m != 0 && (m < minPMTU6 || m >= 1500) {
			t.Fatalf("IPv6 path MTU %d", m)
		}
		e.pmtu.mu.Lock()
		for k := range e.pmtu.m {
			if !(k.src == src && k.dst == dst) && !(k.src == src6 && k.dst == dst6) {
				t.Fatalf("path MTU recorded for %v -> %v, not an SA of ours", k.src, k.dst)
			}
		}
		e.pmtu.mu.Unlock()
	})
}
