package stack_test

import (
	"encoding/binary"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
)

// fuzzBed is one long-lived stack B with the port-specific policy of
// portPolicyB, shared by every input of FuzzInboundTrains: reassembly state
// left by one input meets the next, as it would on a link.
var fuzzBed struct {
	once  sync.Once
	p     *testbed.Pair
	socks map[[2]int]*gonet.UDPConn
	err   error
}

// trainReader hands out the fuzz input a byte at a time, then zeros.
type trainReader struct{ b []byte }

func (r *trainReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// buildTrain turns fuzz input into a train of IP packets carrying one UDP
// datagram from A to B's protected port: IPv4 or IPv6, IPv6 extension
// headers (hop-by-hop, destination options, routing with no segments left,
// the 253 experiment header) before and after the Fragment header, cut at
// input-chosen 8-byte boundaries (tiny first fragments included), sent in
// input-chosen order with duplicates, overlapping rewrites and flipped
// bytes. Checksums are correct, so what the stack rejects, it rejects for
// its structure, not for a checksum.
func buildTrain(in []byte) [][]byte {
	r := &trainReader{b: in}
	flags := r.byte()
	v6 := flags&1 == 0
	payload := make([]byte, int(r.byte())*4)
	for i := range payload {
		payload[i] = byte(i)
	}
	var u []byte
	if v6 {
		a, b := testbed.A6.As16(), testbed.B6.As16()
		u = udpSeg(a[:], b[:], protectedPort, payload)
	} else {
		a, b := testbed.A4.As4(), testbed.B4.As4()
		u = udpSeg(a[:], b[:], protectedPort, payload)
	}
	// Extension headers: before the Fragment header (unfragmentable) and
	// after it (fragmentable, walked by the receiver after reassembly).
	type ext struct {
		nh   uint8
		body []byte
	}
	mkExt := func(kind byte) ext {
		switch kind % 4 {
		case 0:
			return ext{0, []byte{0, 0, 1, 4, 0, 0, 0, 0}}
		case 1:
			return ext{60, []byte{0, 0, 1, 4, 0, 0, 0, 0}}
		case 2:
			return ext{43, []byte{0, 0, 0, 0, 0, 0, 0, 0}} // type 0, segments left 0
		default:
			return ext{253, []byte{0, 0, 0, 0, 0, 0, 0, 0}}
		}
	}
	var before, after []ext
	if v6 {
		for i := 0; i < int(flags>>1&3); i++ {
			before = append(before, mkExt(r.byte()))
		}
		for i := 0; i < int(flags>>3&3); i++ {
			after = append(after, mkExt(r.byte()))
		}
	}
	chain := func(exts []ext, last uint8) (first uint8, b []byte) {
		first = last
		for i := len(exts) - 1; i >= 0; i-- {
			h := append([]byte(nil), exts[i].body...)
			h[0] = first
			b = append(h, b...)
			first = exts[i].nh
		}
		return first, b
	}
	fragNH, frag := chain(after, 17)
	frag = append(frag, u...)
	unfragNH, unfrag := chain(before, 44)
	// Cut points.
	var cuts []int
	for off := 0; ; {
		step := (int(r.byte())%6 + 1) * 8
		if off+step >= len(frag) || len(cuts) > 12 {
			break
		}
		off += step
		cuts = append(cuts, off)
	}
	bounds := append(append([]int{0}, cuts...), len(frag))
	id := uint32(r.byte())<<8 | uint32(r.byte())
	mk := func(lo, hi int, data []byte) []byte {
		more := hi < len(frag)
		if v6 {
			return frag6(unfragNH, unfrag, fragNH, lo, more, id, data)
		}
		f := udp4Frags(protectedPort, payload, uint16(id))[0][:20]
		f = append([]byte(nil), f...)
		binary.BigEndian.PutUint16(f[2:], uint16(20+len(data)))
		fo := uint16(lo / 8)
		if more {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(f[6:], fo)
		f[10], f[11] = 0, 0
		binary.BigEndian.PutUint16(f[10:], ipv4Sum(f))
		return append(f, data...)
	}
	var frags [][]byte
	for i := 0; i+1 < len(bounds); i++ {
		frags = append(frags, mk(bounds[i], bounds[i+1], frag[bounds[i]:bounds[i+1]]))
	}
	if len(frags) == 1 && flags&0x20 == 0 && !v6 {
		frags[0] = frags[0][:0:0]
		frags[0] = append(frags[0], udp4Frags(protectedPort, payload, uint16(id))[0]...)
	}
	// Reorder, duplicate, overlap, flip.
	var out [][]byte
	for len(frags) > 0 {
		op := r.byte()
		i := int(op>>3) % len(frags)
		f := frags[i]
		switch op & 7 {
		case 1:
			out = append(out, f) // duplicate, kept for later too
			continue
		case 2:
			g := append([]byte(nil), f...)
			if n := len(g); n > 0 {
				g[int(r.byte())%n] ^= r.byte() | 1
			}
			out = append(out, g)
		case 3:
			// An overlapping rewrite of the first fragment's start.
			if len(frag) >= 16 {
				out = append(out, mk(0, 16, frag[:16]))
			}
		}
		out = append(out, f)
		frags = append(frags[:i], frags[i+1:]...)
	}
	return out
}

// FuzzInboundTrains drives B's inbound path with fragment trains and
// extension-header chains aimed at a port-specific protect policy. The
// property: nothing arrives on the protected socket, because nothing came
// through an SA.
func FuzzInboundTrains(f *testing.F) {
	for _, seed := range [][]byte{
		{0x00, 10, 0, 0, 0},                    // IPv6, unfragmented-ish train
		{0x08, 20, 1, 0, 0, 1, 7, 0, 0},        // IPv6, dst opts after the Fragment header, tiny first fragment
		{0x18, 20, 3, 3, 0, 0, 1, 9},           // two 253 headers in the fragmentable part
		{0x06, 30, 0, 1, 2, 0, 1, 2, 3, 2, 1},  // three unfragmentable headers
		{0x01, 40, 0, 1, 0, 0, 9, 0x13, 0x0a},  // IPv4, reordered, overlap
		{0x21, 2, 0, 0, 0},                     // IPv4, one packet
		{0x0a, 16, 2, 3, 0, 0, 0, 0, 0x11, 1},  // routing + 253, duplicate
		{0x1e, 60, 1, 1, 3, 3, 5, 5, 5, 7, 7},  // long chains
		{0x00, 255, 0, 0, 0, 0, 0, 0, 0, 0x22}, // a big datagram, flipped bytes
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzBed.once.Do(func() {
			fuzzBed.p, fuzzBed.socks, fuzzBed.err = newPortPolicyBed()
		})
		if fuzzBed.err != nil {
			t.Fatal(fuzzBed.err)
		}
		p := fuzzBed.p
		for _, pkt := range buildTrain(in) {
			p.InjectB(pkt)
		}
		for _, fam := range []int{4, 6} {
			if got := received(fuzzBed.socks[[2]int{fam, protectedPort}]); len(got) != 0 {
				t.Fatalf("IPv%d protected socket received %d cleartext datagram(s)", fam, len(got))
			}
		}
	})
}
