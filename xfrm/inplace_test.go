package xfrm

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// inPlaceAlloc is the receiving side's InPlaceAllocator in these tests: it
// offers buf, the received packet, and counts the buffers it allocates.
type inPlaceAlloc struct {
	buf    []byte
	allocs int
}

func (a *inPlaceAlloc) Alloc(n int) []byte { a.allocs++; return make([]byte, n) }
func (a *inPlaceAlloc) InPlace() []byte    { return a.buf }

// inPlaceEngines builds a sender and two receivers (one decapsulates into
// fresh buffers, the other in place: a receiver's replay window takes each
// sequence number once) with the SAs sas and the templates tmpl (output
// order) for traffic sel.
func inPlaceEngines(t *testing.T, sel Selector, tmpl []Template, sas ...SAConfig) (out, heap, inplace *Engine) {
	t.Helper()
	es := [3]*Engine{}
	for i := range es {
		e := NewEngine()
		t.Cleanup(e.Close)
		for _, c := range sas {
			if _, err := e.AddSA(c); err != nil {
				t.Fatal(err)
			}
		}
		dir := DirIn
		if i == 0 {
			dir = DirOut
		}
		if _, err := e.AddPolicy(&Policy{Dir: dir, Sel: sel, Action: ActionProtect, Templates: tmpl}); err != nil {
			t.Fatal(err)
		}
		es[i] = e
	}
	return es[0], es[1], es[2]
}

// uncompressedCount sums the packets e's IPComp SAs sent uncompressed.
func uncompressedCount(e *Engine) (k uint64) {
	e.SAD.Walk(func(sa *SA) bool {
		k += sa.Counters.Uncompressed.Load()
		return true
	})
	return k
}

// tunnelTemplate is a required tunnel template of proto from src to dst.
func tunnelTemplate(proto Proto, src, dst netip.Addr) []Template {
	return []Template{{Proto: proto, Mode: ModeTunnel, Src: src, Dst: dst, Level: LevelRequire}}
}

// transportTemplates is a bundle of required transport templates, one
// per protocol in output order.
func transportTemplates(protos ...Proto) []Template {
	var ts []Template
	for _, p := range protos {
		ts = append(ts, Template{Proto: p, Mode: ModeTransport, Level: LevelRequire})
	}
	return ts
}

// ipHdrLen is the length of the IP header a receiving IP layer would hand
// Input for a packet without IPv6 extension headers.
func ipHdrLen(p []byte) int {
	if p[0]>>4 == 4 {
		return int(p[0]&0xf) * 4
	}
	return 40
}

// TestInputInPlace: with an InPlaceAllocator, Input and InputEncap build
// the decapsulated packet at the start of the received buffer, without
// allocating, and it is byte for byte the packet the sender protected
// (the oracle is the sender's cleartext, not the engine's other path) and
// what a receiver decapsulating into fresh buffers returns: no byte of the
// received packet past the inner one (ESP padding, trailer, ICV, or what
// lay in the buffer beyond it) is in it. Each received buffer first held
// a larger packet's bytes and 0xA5 filler, so a packet built too long, or
// a byte not written, would show stale data. Where the inner packet is
// not in the received buffer (IPComp decompresses into scratch) or the
// header given is not the buffer's start, Input allocates as before.
func TestInputInPlace(t *testing.T) {
	v4sel := Selector{Src: exactPrefix(eA4), Dst: exactPrefix(eB4)}
	v6sel := Selector{Src: exactPrefix(bA), Dst: exactPrefix(bB)}
	esp := func(src, dst netip.Addr, mode Mode) SAConfig { return espSA(0x800, src, dst, mode) }
	tun, tr := tunnelTemplate, transportTemplates
	cases := []struct {
		name    string
		sel     Selector
		tmpl    []Template
		sas     []SAConfig
		pkt     func(n int) []byte
		encap   bool
		ce      bool // a router marked the outer header CE (RFC 6040)
		copyHdr bool // hdr given as a copy, not the buffer's start
		inPlace bool
	}{
		{name: "esp transport v4", sel: v4sel, tmpl: tr(ProtoESP), sas: []SAConfig{esp(eA4, eB4, ModeTransport)},
			pkt: func(n int) []byte { return udpPkt(eA4, eB4, n) }, inPlace: true},
		{name: "esp transport v6", sel: v6sel, tmpl: tr(ProtoESP), sas: []SAConfig{esp(bA, bB, ModeTransport)},
			pkt: func(n int) []byte { return udpPkt(bA, bB, n) }, inPlace: true},
		{name: "esp tunnel v4", sel: v4sel, tmpl: tun(ProtoESP, eA4, eB4), sas: []SAConfig{esp(eA4, eB4, ModeTunnel)},
			pkt: func(n int) []byte { return udpPkt(eA4, eB4, n) }, inPlace: true},
		{name: "esp tunnel v6 in v4", sel: v6sel, tmpl: tun(ProtoESP, eA4, eB4), sas: []SAConfig{esp(eA4, eB4, ModeTunnel)},
			pkt: func(n int) []byte { return udpPkt(bA, bB, n) }, inPlace: true},
		{name: "esp tunnel v4 outer CE", sel: v4sel, tmpl: tun(ProtoESP, eA4, eB4), sas: []SAConfig{esp(eA4, eB4, ModeTunnel)},
			pkt: func(n int) []byte {
				p := udpPkt(eA4, eB4, n)
				p[1] = tECT0
				binary.BigEndian.PutUint16(p[10:], 0)
				binary.BigEndian.PutUint16(p[10:], refFold(refSum(p[:20])))
				return p
			}, ce: true, inPlace: true},
		{name: "ah transport v6", sel: v6sel, tmpl: tr(ProtoAH), sas: []SAConfig{bundleSA(t, ProtoAH, 0x801, bA, bB, ModeTransport)},
			pkt: func(n int) []byte { return udpPkt(bA, bB, n) }, inPlace: true},
		{name: "esp+ah transport v6", sel: v6sel, tmpl: tr(ProtoESP, ProtoAH),
			sas: []SAConfig{bundleSA(t, ProtoESP, 0x802, bA, bB, ModeTransport), bundleSA(t, ProtoAH, 0x803, bA, bB, ModeTransport)},
			pkt: func(n int) []byte { return udpPkt(bA, bB, n) }, inPlace: true},
		{name: "ipcomp+esp transport v6", sel: v6sel, tmpl: tr(ProtoIPComp, ProtoESP),
			sas: []SAConfig{bundleSA(t, ProtoIPComp, 0x804, bA, bB, ModeTransport), bundleSA(t, ProtoESP, 0x805, bA, bB, ModeTransport)},
			pkt: udpPacket6, inPlace: false},
		{name: "esp-in-udp transport v4", sel: v4sel, tmpl: tr(ProtoESP), sas: []SAConfig{encSA(eA4, eB4, ModeTransport)},
			pkt: func(n int) []byte { return udpPkt(eA4, eB4, n) }, encap: true, inPlace: true},
		{name: "esp-in-udp tunnel v6", sel: v6sel, tmpl: tun(ProtoESP, bA, bB), sas: []SAConfig{encSA(bA, bB, ModeTunnel)},
			pkt: func(n int) []byte { return udpPkt(bA, bB, n) }, encap: true, inPlace: true},
		{name: "hdr not the buffer's start", sel: v4sel, tmpl: tr(ProtoESP), sas: []SAConfig{esp(eA4, eB4, ModeTransport)},
			pkt: func(n int) []byte { return udpPkt(eA4, eB4, n) }, copyHdr: true, inPlace: false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, heap, inplace := inPlaceEngines(t, c.sel, c.tmpl, c.sas...)
			var prev []byte // the previous, larger, wire packet
			for _, n := range []int{1400, 600, 20, 0} {
				want := c.pkt(n)
				u0 := uncompressedCount(out)
				v, wire := out.Output(want, HeapAllocator{})
				if v != VerdictProtected {
					t.Fatalf("n %d: output verdict %v", n, v)
				}
				// A payload IPComp did not shrink goes without an IPComp
				// header (RFC 3173 §2.2): nothing to decompress, so the
				// inner packet is in the received buffer after all.
				wantInPlace := c.inPlace || uncompressedCount(out) != u0
				if c.ce {
					wire[1] |= tCE
					want = bytes.Clone(want)
					want[1] |= tCE
					binary.BigEndian.PutUint16(want[10:], 0)
					binary.BigEndian.PutUint16(want[10:], refFold(refSum(want[:20])))
				}
				input := func(e *Engine, b []byte, a Allocator) []byte {
					hl := ipHdrLen(b)
					hdr := b[:hl]
					if c.copyHdr {
						hdr = bytes.Clone(hdr)
					}
					if c.encap {
						return e.InputEncap(hdr, b[hl:], a)
					}
					proto := Proto(b[9])
					if b[0]>>4 == 6 {
						proto = Proto(b[6])
					}
					return e.Input(hdr, proto, b[hl:], a)
				}
				fresh := input(heap, bytes.Clone(wire), HeapAllocator{})
				if !bytes.Equal(fresh, want) {
					t.Fatalf("n %d: fresh buffers: got %x\nwant %x (stats %v)", n, fresh, want, heap.Stats.Snapshot())
				}
				// The received buffer: stale bytes of a larger packet
				// and filler under and after the new one.
				space := bytes.Repeat([]byte{0xa5}, 2048)
				copy(space, prev)
				buf := space[:copy(space, wire)]
				a := &inPlaceAlloc{buf: buf}
				got := input(inplace, buf, a)
				if !bytes.Equal(got, want) {
					t.Fatalf("n %d: in place: got %x\nwant %x (stats %v)", n, got, want, inplace.Stats.Snapshot())
				}
				if in := &got[0] == &buf[0]; in != wantInPlace {
					t.Errorf("n %d: built in the received buffer: %v, want %v", n, in, wantInPlace)
				}
				if wantInPlace && a.allocs != 0 {
					t.Errorf("n %d: %d buffers allocated for an in-place decapsulation", n, a.allocs)
				}
				prev = wire
			}
		})
	}
}

// outPlaceAlloc is the sending side's OutPlaceAllocator in these tests: it
// offers buf with the packet at off, and counts the buffers it allocates.
type outPlaceAlloc struct {
	buf    []byte
	off    int
	allocs int
}

func (a *outPlaceAlloc) Alloc(n int) []byte              { a.allocs++; return make([]byte, n) }
func (a *outPlaceAlloc) OutPlace() (buf []byte, off int) { return a.buf, a.off }

// TestOutputInPlace: with an OutPlaceAllocator whose buffer has room
// around the packet, Output seals a single ESP SA's packet where it lies,
// without allocating and without writing a byte outside the protected
// packet it returns, and a receiver decapsulates that packet to the
// sender's cleartext (the oracle: the packet as it was before sealing,
// kept aside). Where the room is too small, or the SA is AH, or an
// earlier SA of the bundle (IPComp that compressed) already moved the
// packet, Output allocates as before.
func TestOutputInPlace(t *testing.T) {
	v4sel := Selector{Src: exactPrefix(eA4), Dst: exactPrefix(eB4)}
	v6sel := Selector{Src: exactPrefix(bA), Dst: exactPrefix(bB)}
	esp := func(src, dst netip.Addr, mode Mode) SAConfig { return espSA(0x800, src, dst, mode) }
	tun := func(src, dst netip.Addr) []Template { return tunnelTemplate(ProtoESP, src, dst) }
	tr := transportTemplates
	const roomy = 128
	cases := []struct {
		name    string
		sel     Selector
		tmpl    []Template
		sas     []SAConfig
		pkt     func(n int) []byte
		encap   bool
		head    int // room before the packet
		inPlace bool
	}{
		{name: "esp transport v4", sel: v4sel, tmpl: tr(ProtoESP), sas: []SAConfig{esp(eA4, eB4, ModeTransport)},
			pkt: func(n int) []byte { return udpPkt(eA4, eB4, n) }, head: roomy, inPlace: true},
		{name: "esp transport v6, exact room", sel: v6sel, tmpl: tr(ProtoESP), sas: []SAConfig{esp(bA, bB, ModeTransport)},
			pkt: func(n int) []byte { return udpPkt(bA, bB, n) }, head: 8 + 8, inPlace: true},
		{name: "esp transport v6, a byte short", sel: v6sel, tmpl: tr(ProtoESP), sas: []SAConfig{esp(bA, bB, ModeTransport)},
			pkt: func(n int) []byte { return udpPkt(bA, bB, n) }, head: 8 + 8 - 1, inPlace: false},
		{name: "esp tunnel v4", sel: v4sel, tmpl: tun(eA4, eB4), sas: []SAConfig{esp(eA4, eB4, ModeTunnel)},
			pkt: func(n int) []byte { return udpPkt(eA4, eB4, n) }, head: roomy, inPlace: true},
		{name: "esp tunnel v6 in v4, exact room", sel: v6sel, tmpl: tun(eA4, eB4), sas: []SAConfig{esp(eA4, eB4, ModeTunnel)},
			pkt: func(n int) []byte { return udpPkt(bA, bB, n) }, head: 20 + 8 + 8, inPlace: true},
		{name: "esp-in-udp transport v4", sel: v4sel, tmpl: tr(ProtoESP), sas: []SAConfig{encSA(eA4, eB4, ModeTransport)},
			pkt: func(n int) []byte { return udpPkt(eA4, eB4, n) }, encap: true, head: roomy, inPlace: true},
		{name: "esp-in-udp tunnel v6", sel: v6sel, tmpl: tun(bA, bB), sas: []SAConfig{encSA(bA, bB, ModeTunnel)},
			pkt: func(n int) []byte { return udpPkt(bA, bB, n) }, encap: true, head: roomy, inPlace: true},
		{name: "ah transport v6", sel: v6sel, tmpl: tr(ProtoAH), sas: []SAConfig{bundleSA(t, ProtoAH, 0x801, bA, bB, ModeTransport)},
			pkt: func(n int) []byte { return udpPkt(bA, bB, n) }, head: roomy, inPlace: false},
		{name: "ipcomp+esp transport v6", sel: v6sel, tmpl: tr(ProtoIPComp, ProtoESP),
			sas: []SAConfig{bundleSA(t, ProtoIPComp, 0x804, bA, bB, ModeTransport), bundleSA(t, ProtoESP, 0x805, bA, bB, ModeTransport)},
			pkt: udpPacket6, head: roomy, inPlace: false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, heap, _ := inPlaceEngines(t, c.sel, c.tmpl, c.sas...)
			for _, n := range []int{1400, 600, 20, 0} {
				want := c.pkt(n)
				space := bytes.Repeat([]byte{0xa5}, c.head+len(want)+64)
				copy(space[c.head:], want)
				a := &outPlaceAlloc{buf: space, off: c.head}
				u0 := uncompressedCount(out)
				v, wire := out.Output(space[c.head:c.head+len(want)], a)
				// A payload IPComp left uncompressed (RFC 3173 §2.2)
				// reaches ESP where it was: in place after all.
				wantInPlace := c.inPlace || uncompressedCount(out) != u0
				if v != VerdictProtected {
					t.Fatalf("n %d: output verdict %v (stats %v)", n, v, out.Stats.Snapshot())
				}
				start := cap(space) - cap(wire)
				in := start >= 0 && start < len(space) && &space[start] == &wire[0]
				if in != wantInPlace {
					t.Errorf("n %d: sealed in place: %v, want %v", n, in, wantInPlace)
				}
				if in {
					if a.allocs != 0 {
						t.Errorf("n %d: %d buffers allocated for an in-place seal", n, a.allocs)
					}
					for i, b := range space {
						if (i < start || i >= start+len(wire)) && b != 0xa5 {
							t.Fatalf("n %d: byte %d outside the packet [%d, %d) written", n, i, start, start+len(wire))
						}
					}
				}
				b := bytes.Clone(wire)
				hl := ipHdrLen(b)
				var got []byte
				if c.encap {
					got = heap.InputEncap(b[:hl], b[hl:], HeapAllocator{})
				} else {
					proto := Proto(b[9])
					if b[0]>>4 == 6 {
						proto = Proto(b[6])
					}
					got = heap.Input(b[:hl], proto, b[hl:], HeapAllocator{})
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("n %d: decapsulated %x\nwant %x (receiver stats %v)", n, got, want, heap.Stats.Snapshot())
				}
			}
		})
	}
}
