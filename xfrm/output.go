package xfrm

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"

	"github.com/ipsecstack/ipsecstack/xfrm/esp"
)

// Allocator supplies buffers for packets the engine builds. The stack glue
// backs it with pooled buffers so the hot path does not allocate.
type Allocator interface {
	Alloc(n int) []byte
}

// Emitter is an Allocator that takes several output packets. When a
// tunnel must carry a packet in pieces (see protectPieces), Output hands
// each protected piece but the last to Emit as soon as it is built (it is
// then the last buffer taken from the Emitter) and returns the last.
// Without an Emitter such a packet is dropped.
type Emitter interface {
	Allocator
	Emit(pkt []byte)
}

// OutPlaceAllocator is an Allocator through which the caller of Output
// also offers the buffer the packet lies in, with room before and after
// it, so that an ESP SA seals the packet where it is instead of into a
// new buffer from Alloc: the output counterpart of InPlaceAllocator. The
// caller then gives up the packet's bytes: Output may overwrite all of
// the buffer.
type OutPlaceAllocator interface {
	Allocator
	// OutPlace returns buf and off such that the packet given to Output
	// is buf[off:off+len(pkt)] (the same memory).
	OutPlace() (buf []byte, off int)
}

// outPlace returns the part of a's buffer (OutPlaceAllocator) that holds
// the total bytes of a packet built around pkt with pkt head bytes from
// its start, when pkt lies in that buffer with room for it; otherwise nil
// and the caller allocates. The pointer check makes only the packet the
// caller gave Output qualify, not an earlier SA's output in a bundle.
func outPlace(a Allocator, pkt []byte, head, total int) []byte {
	opa, ok := a.(OutPlaceAllocator)
	if !ok || len(pkt) == 0 {
		return nil
	}
	buf, off := opa.OutPlace()
	if off < head || off >= len(buf) || &buf[off] != &pkt[0] || off-head+total > len(buf) {
		return nil
	}
	return buf[off-head : off-head+total]
}

// HeapAllocator allocates with make; for tests and tools.
type HeapAllocator struct{}

// Alloc returns a new n-byte slice.
func (HeapAllocator) Alloc(n int) []byte { return make([]byte, n) }

// Verdict is the result of the output path.
type Verdict uint8

// Output verdicts.
const (
	VerdictPass      Verdict = iota // send the packet unchanged
	VerdictDrop                     // drop it (already counted)
	VerdictProtected                // send the returned packet instead
)

// maxBundle bounds the templates of one policy.
const maxBundle = 4

// Output applies the outbound SPD to the IP packet pkt (starting at its IP
// header). On VerdictProtected it returns the protected packet, built in a
// buffer from a, or around pkt in the buffer a OutPlaceAllocator offers;
// pkt is not modified unless a is an OutPlaceAllocator.
//
// An ICMP error that its own selectors leave in clear is also decided by
// the reversed flow of the packet it quotes (RFC 4301 §6.2, see
// icmpErrorOut), and a fragment (OPAQUE ports) that a port-specific
// protect policy may cover is dropped: neither may carry a protected
// flow's bytes in clear.
func (e *Engine) Output(pkt []byte, a Allocator) (Verdict, []byte) {
	var f Flow
	l4off, err := ParseFlow(pkt, &f)
	if err != nil {
		// We cannot tell whether a policy covers it: never send it.
		e.Stats.OutError.Add(1)
		return VerdictDrop, nil
	}
	var o outLookup
	p := e.lookupOut(&f, &o)
	if f.Opaque && (p == nil || p.Action == ActionBypass) && e.portPolicyCovers(DirOut, &f, p) {
		// A fragment without ports (RFC 4301 §7) of a datagram that a
		// port-specific protect policy may cover: sending it in clear
		// could leak part of a protected datagram. Fail closed.
		e.Stats.OutPolError.Add(1)
		return VerdictDrop, nil
	}
	if (p == nil || p.Action == ActionBypass) && IsICMPError(&f) {
		if v, out, handled := e.icmpErrorOut(pkt, l4off, &f, a); handled {
			return v, out
		}
	}
	if p == nil {
		return VerdictPass, nil
	}
	switch p.Action {
	case ActionBypass:
		return VerdictPass, nil
	case ActionDiscard:
		e.Stats.OutPolBlock.Add(1)
		return VerdictDrop, nil
	}
	return e.protect(p, &f, pkt, a, &o)
}

// protect resolves the bundle of p's templates to SAs and applies them in
// order (IPComp, ESP, AH as the policy lists them). With o (an SPD policy
// for f's own packets) it takes the bundle the flow cache holds, or caches
// the one it resolves.
func (e *Engine) protect(p *Policy, f *Flow, pkt []byte, a Allocator, o *outLookup) (Verdict, []byte) {
	if len(p.Templates) > maxBundle {
		e.Stats.OutBundleGenError.Add(1)
		return VerdictDrop, nil
	}
	var bundle [maxBundle]*SA
	n := 0
	if o != nil && o.bundle != nil {
		n = cachedBundle(o.bundle, &bundle)
	}
	if n == 0 {
		var ok bool
		if n, _, _, ok = e.resolve(p, f, &bundle, false); !ok {
			return VerdictDrop, nil
		}
		if o != nil && o.spd && n > 0 && allMature(bundle[:n]) {
			e.SPD.cache.putBundle(o.h, f, o.gen, p, slices.Clone(bundle[:n]))
		}
	}
	defer func() {
		for _, s := range bundle[:n] {
			s.put()
		}
	}()
	if n == 0 {
		// Only optional templates and no SA: "use" sends in clear.
		return VerdictPass, nil
	}
	if !fitsIPLength(pkt, bundle[:n]) {
		// The protected packet's length field could not hold it. A
		// tunnel may carry the packet in fragments made before
		// encapsulation (RFC 4301 §7 leaves the tunnel's content to
		// the sender); transport mode cannot carry a fragment, and an
		// outer header with a wrapped length would be garbage: drop
		// rather than wrap.
		if em, ok := a.(Emitter); ok && bundle[0].Config.Mode == ModeTunnel {
			return e.protectPieces(bundle[:n], pkt, em)
		}
		e.Stats.OutError.Add(1)
		return VerdictDrop, nil
	}
	out := pkt
	for _, sa := range bundle[:n] {
		var ok bool
		out, ok = e.applyOut(sa, out, a)
		if !ok {
			return VerdictDrop, nil
		}
	}
	if len(out) == len(pkt) && &out[0] == &pkt[0] {
		// Only IPComp SAs that did not compress: the packet goes as it is.
		return VerdictPass, nil
	}
	return VerdictProtected, out
}

// resolve finds the SAs that satisfy p's templates for f and takes a
// reference on each (Linux's xfrm_tmpl_resolve); src and dst are the
// outermost addresses the bundle sends from and to. A required template
// without a usable SA drops the packet, counted, and asks the key
// managers for one (ACQUIRE); an optional one is skipped, and so is any
// with probe (OutMTU sizing what the SAs there are would add).
func (e *Engine) resolve(p *Policy, f *Flow, bundle *[maxBundle]*SA, probe bool) (n int, src, dst netip.Addr, ok bool) {
	src, dst = f.Src, f.Dst
	for i := range p.Templates {
		t := &p.Templates[i]
		tsrc, tdst := src, dst
		if t.Mode == ModeTunnel {
			tsrc, tdst = t.Src, t.Dst
		}
		sa := e.SAD.FindOutbound(t, tsrc, tdst, f)
		if sa == nil || !sa.tryGet() {
			if probe || t.Level == LevelUse {
				continue
			}
			e.Stats.OutNoStates.Add(1)
			e.acquire(p, i, f)
			for _, s := range bundle[:n] {
				s.put()
			}
			return 0, src, dst, false
		}
		bundle[n] = sa
		n++
		src, dst = tsrc, tdst
	}
	return n, src, dst, true
}

// cachedBundle takes a reference on each SA of a cached bundle and
// returns how many it holds, or 0 (holding none) when one is no longer
// mature: an SA past its soft lifetime may have a successor to prefer
// (SAD.FindOutbound), and one being deleted cannot be taken, so resolve
// decides again.
func cachedBundle(cached []*SA, bundle *[maxBundle]*SA) int {
	for i, sa := range cached {
		if sa.State() != StateMature || !sa.tryGet() {
			for _, s := range bundle[:i] {
				s.put()
			}
			return 0
		}
		bundle[i] = sa
	}
	return len(cached)
}

// allMature reports whether every SA of a bundle is mature, the only
// bundles the flow cache keeps.
func allMature(sas []*SA) bool {
	for _, sa := range sas {
		if sa.State() != StateMature {
			return false
		}
	}
	return true
}

// applyOut applies one SA to an IP packet and returns the new packet. The
// packet returned, when it differs from pkt, is the last buffer taken from
// a (the stack glue relies on it); an IPComp SA that does not compress
// returns pkt itself.
func (e *Engine) applyOut(sa *SA, pkt []byte, a Allocator) ([]byte, bool) {
	if !sa.Usable() {
		e.Stats.OutStateInvalid.Add(1)
		return nil, false
	}
	if sa.hardHit.Load() {
		e.Stats.OutStateExpired.Add(1)
		return nil, false
	}
	if sa.comp != nil {
		return e.compressOut(sa, pkt, a)
	}
	c := &sa.Config
	t, h := sa.esp, sa.ah
	if t == nil && h == nil {
		e.Stats.OutStateProtoError.Add(1)
		return nil, false
	}
	v4 := pkt[0]>>4 == 4
	switch c.Mode {
	case ModeTransport:
		hlen, nhOff, ok := e.splitTransport(sa, pkt)
		if !ok {
			return nil, false
		}
		seq, ok := e.nextSeqOut(sa)
		if !ok {
			return nil, false
		}
		payload := pkt[hlen:]
		nh := pkt[nhOff]
		if h != nil {
			n := h.Len(v4)
			out := a.Alloc(len(pkt) + n)
			copy(out, pkt[:hlen])
			copy(out[hlen+n:], payload)
			out[nhOff] = uint8(ProtoAH)
			if v4 && out[4] == 0 && out[5] == 0 {
				// The identification is immutable under AH, and a
				// fragmenter after us would set one: set it first.
				id := uint16(e.ipID.Add(1))
				if id == 0 {
					id = uint16(e.ipID.Add(1))
				}
				binary.BigEndian.PutUint16(out[4:], id)
			}
			if !e.setLength(out, v4) {
				return nil, false
			}
			if err := h.Seal(out, hlen, nh, c.SPI, seq, c.ESN); err != nil {
				e.Stats.OutStateProtoError.Add(1)
				return nil, false
			}
			return out, true
		}
		peer, u := sa.outPeer.Load(), 0
		if peer != nil {
			u = UDPHeaderLen
		}
		total := hlen + u + t.SealedLen(len(payload))
		// In place the header moves forward to make room for the ESP
		// (and UDP) header and the IV, which leaves the payload where
		// Seal wants it.
		out := outPlace(a, pkt, u+esp.HeaderLen+t.IVLen(), total)
		if out == nil {
			out = a.Alloc(total)
		}
		copy(out, pkt[:hlen])
		out[nhOff] = uint8(ProtoESP)
		t.Seal(out[hlen+u:], c.SPI, seq, c.ESN, payload, nh)
		if peer != nil {
			// ESP in UDP (RFC 3948 §2.1): the UDP header goes where
			// ESP would, and the packet goes to the peer where port
			// floating last saw it.
			out[nhOff] = ProtoUDP
			setDst(out, peer.Addr)
		}
		if !e.setLength(out, v4) {
			return nil, false
		}
		if peer != nil {
			encapOut(sa, out, hlen, peer)
		}
		return out, true
	default: // tunnel
		if !e.accountOut(sa, len(pkt)) {
			return nil, false
		}
		seq, ok := e.nextSeqOut(sa)
		if !ok {
			return nil, false
		}
		inner, tos, df := innerInfo(pkt)
		hlen := outerLen(c.Dst)
		if h != nil {
			n := h.Len(c.Dst.Is4())
			out := a.Alloc(hlen + n + len(pkt))
			e.outerHeader(out[:hlen], c.Src, c.Dst, tos, df, ProtoAH)
			copy(out[hlen+n:], pkt)
			if !e.setLength(out, c.Dst.Is4()) {
				return nil, false
			}
			if err := h.Seal(out, hlen, inner, c.SPI, seq, c.ESN); err != nil {
				e.Stats.OutStateProtoError.Add(1)
				return nil, false
			}
			return out, true
		}
		if peer := sa.outPeer.Load(); peer != nil {
			total := hlen + UDPHeaderLen + t.SealedLen(len(pkt))
			out := outPlace(a, pkt, hlen+UDPHeaderLen+esp.HeaderLen+t.IVLen(), total)
			if out == nil {
				out = a.Alloc(total)
			}
			e.outerHeader(out[:hlen], c.Src, peer.Addr, tos, df, Proto(ProtoUDP))
			t.Seal(out[hlen+UDPHeaderLen:], c.SPI, seq, c.ESN, pkt, inner)
			if !e.setLength(out, c.Dst.Is4()) {
				return nil, false
			}
			encapOut(sa, out, hlen, peer)
			return out, true
		}
		total := hlen + t.SealedLen(len(pkt))
		out := outPlace(a, pkt, hlen+esp.HeaderLen+t.IVLen(), total)
		if out == nil {
			out = a.Alloc(total)
		}
		e.outerHeader(out[:hlen], c.Src, c.Dst, tos, df, ProtoESP)
		t.Seal(out[hlen:], c.SPI, seq, c.ESN, pkt, inner)
		if !e.setLength(out, c.Dst.Is4()) {
			return nil, false
		}
		return out, true
	}
}

// innerInfo returns the next header that names pkt's family inside a
// tunnel (4 or 41), its DSCP/ECN byte, and whether an IPv4 outer header
// must say Don't Fragment: copied from an IPv4 inner header (RFC 4301
// §8.1, the default of its "copy/set/clear" choice), always for an IPv6
// inner packet, which routers must not fragment either (RFC 8200 §5; Linux
// sets IP_DF for IPv6 inside IPv4 too).
func innerInfo(pkt []byte) (nh, tos uint8, df bool) {
	if pkt[0]>>4 == 4 {
		return innerIPv4, pkt[1], pkt[6]&0x40 != 0
	}
	return innerIPv6, pkt[0]<<4 | pkt[1]>>4, true
}

// compBufs are scratch buffers for (de)compression: the result is copied
// into an Allocator buffer only once it is known to be used.
var compBufs = sync.Pool{New: func() any { b := make([]byte, 0xffff); return &b }}

// compressOut applies an IPComp SA (RFC 3173). No sequence number is
// used. A payload that is too small or does not shrink goes out as it is,
// with no IPComp header (§2.2): in transport mode pkt is returned
// unchanged; in tunnel mode it is still encapsulated, as IP-in-IP, which
// the peer's input path attributes to the IPComp SA (as Linux's IPComp
// tunnel does with its IPIP state).
func (e *Engine) compressOut(sa *SA, pkt []byte, a Allocator) ([]byte, bool) {
	c := &sa.Config
	bp := compBufs.Get().(*[]byte)
	defer compBufs.Put(bp)
	scratch := *bp
	if c.Mode == ModeTransport {
		hlen, nhOff, ok := e.splitTransport(sa, pkt)
		if !ok {
			return nil, false
		}
		payload := pkt[hlen:]
		n, ok := sa.comp.Compress(scratch, payload, pkt[nhOff], uint16(c.SPI))
		if !ok {
			sa.Counters.Uncompressed.Add(1)
			return pkt, true
		}
		out := a.Alloc(hlen + n)
		copy(out, pkt[:hlen])
		copy(out[hlen:], scratch[:n])
		out[nhOff] = uint8(ProtoIPComp)
		if !e.setLength(out, pkt[0]>>4 == 4) {
			return nil, false
		}
		return out, true
	}
	if !e.accountOut(sa, len(pkt)) {
		return nil, false
	}
	inner, tos, df := innerInfo(pkt)
	hlen := outerLen(c.Dst)
	n, ok := sa.comp.Compress(scratch, pkt, inner, uint16(c.SPI))
	var out []byte
	if ok {
		out = a.Alloc(hlen + n)
		e.outerHeader(out[:hlen], c.Src, c.Dst, tos, df, ProtoIPComp)
		copy(out[hlen:], scratch[:n])
	} else {
		sa.Counters.Uncompressed.Add(1)
		out = a.Alloc(hlen + len(pkt))
		e.outerHeader(out[:hlen], c.Src, c.Dst, tos, df, Proto(inner))
		copy(out[hlen:], pkt)
	}
	if !e.setLength(out, c.Dst.Is4()) {
		return nil, false
	}
	return out, true
}

// outerHeader writes a tunnel-mode outer header (RFC 4301 §5.1.2): DSCP and
// ECN copied from the inner header, DF as innerInfo decides (so path MTU
// discovery works through the tunnel: a router's Fragmentation Needed
// comes back to us, see the stack's PMTU handling), TTL/hop limit 64, next
// header proto.
func (e *Engine) outerHeader(h []byte, src, dst netip.Addr, tos uint8, df bool, proto Proto) {
	if src.Is4() {
		h[0] = 0x45
		h[1] = tos
		binary.BigEndian.PutUint16(h[4:], uint16(e.ipID.Add(1)))
		h[6], h[7] = 0, 0
		if df {
			h[6] = 0x40
		}
		h[8] = 64
		h[9] = uint8(proto)
		s, d := src.As4(), dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		return
	}
	h[0] = 0x60 | tos>>4
	h[1] = tos << 4
	h[2], h[3] = 0, 0
	h[6] = uint8(proto)
	h[7] = 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
}

// setLength is fixLength for the output path: it refuses, counting
// XfrmOutError, a packet whose length its IPv4 Total Length or IPv6 Payload
// Length cannot hold, instead of writing the length modulo 2^16.
func (e *Engine) setLength(p []byte, v4 bool) bool {
	if !lengthFits(len(p), v4) {
		e.Stats.OutError.Add(1)
		return false
	}
	fixLength(p, v4)
	return true
}

// lengthFits reports whether an IP packet of n bytes can be described by
// its header: an IPv4 Total Length or an IPv6 Payload Length is 16 bits
// (jumbograms, RFC 2675, are not built here).
func lengthFits(n int, v4 bool) bool {
	if v4 {
		return n <= maxIPv4Len
	}
	return n-40 <= maxIPv6Payload
}

// Largest IPv4 packet and IPv6 payload the 16-bit length fields describe.
const (
	maxIPv4Len     = 0xffff
	maxIPv6Payload = 0xffff
)

// fitsIPLength reports whether pkt still fits its length fields after the
// bundle is applied, from each SA's worst-case overhead, so that a bundle
// is refused before it consumes sequence numbers. setLength remains the
// exact check.
func fitsIPLength(pkt []byte, bundle []*SA) bool {
	n, v4 := len(pkt), pkt[0]>>4 == 4
	for _, sa := range bundle {
		n += sa.Overhead(n)
		if sa.Config.Mode == ModeTunnel {
			v4 = sa.Config.Dst.Is4()
		}
	}
	return lengthFits(n, v4)
}

// fixLength sets the length fields (and the IPv4 checksum) of a packet
// whose payload changed size.
func fixLength(p []byte, v4 bool) {
	if v4 {
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		ihl := int(p[0]&0xf) * 4
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ipv4Checksum(p[:ihl]))
		return
	}
	binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
}

// ipv4Checksum is the Internet checksum (RFC 1071) of an IPv4 header,
// summed by sum16 eight bytes a load: it runs on every packet
// decapsulated (rebuildTransport's fixLength) and encapsulated.
func ipv4Checksum(h []byte) uint16 {
	sum := sum16(0, h)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// splitTransport finds where a transport-mode header goes in pkt
// (ParseIPLayout's InsertOff) and the offset of the next-header byte that
// must then name it, and charges the payload after it to sa's lifetime.
// It refuses fragments and counts why it fails.
func (e *Engine) splitTransport(sa *SA, pkt []byte) (hlen, nhOff int, ok bool) {
	l, err := ParseIPLayout(pkt)
	if err != nil || l.Fragment {
		// Transport-mode SAs carry whole datagrams only (RFC 4301 §7):
		// ESP inserted before a Fragment header, or into one IPv4
		// fragment, protects a piece the peer cannot check until it
		// reassembles, and the other pieces would travel without it.
		e.Stats.OutStateModeError.Add(1)
		return 0, 0, false
	}
	if !e.accountOut(sa, len(pkt)-l.InsertOff) {
		return 0, 0, false
	}
	return l.InsertOff, l.NextHdrOff, true
}

// accountOut charges n bytes to sa's lifetime, counting a hard expiry.
func (e *Engine) accountOut(sa *SA, n int) bool {
	if !sa.account(n) {
		e.Stats.OutStateExpired.Add(1)
		return false
	}
	return true
}

// outerLen is the length of a tunnel's outer header to dst.
func outerLen(dst netip.Addr) int {
	if dst.Is4() {
		return 20
	}
	return 40
}
