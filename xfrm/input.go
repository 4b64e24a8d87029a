package xfrm

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/ipsecstack/ipsecstack/xfrm/ah"
	"github.com/ipsecstack/ipsecstack/xfrm/esp"
	"github.com/ipsecstack/ipsecstack/xfrm/ipcomp"
)

// Next-header values the input loop handles.
const (
	innerIPv4 = 4
	innerIPv6 = 41
	innerNone = 59
)

// SecPath is the list of SAs an inbound packet was decapsulated with,
// outermost first (Linux's sec_path).
type SecPath struct {
	sas [maxBundle]*SA
	n   int
}

// InPlaceAllocator is an Allocator through which the caller of Input or
// InputEncap also offers the buffer the packet arrived in, so that the
// decapsulated packet is built there instead of being copied into a new
// buffer from Alloc.
type InPlaceAllocator interface {
	Allocator
	// InPlace returns the received packet, starting with the IP header
	// Input or InputEncap is given as hdr (the same memory), with the
	// IPsec payload further on in it, or nil. The engine may then
	// overwrite it: once the packet is authenticated, a transport-mode
	// packet's header stays where it is and its payload is moved up
	// behind it, and a tunnel's inner packet is moved to the start.
	// When it does, the packet Input returns is a prefix of this
	// buffer (it starts at its first byte), not a buffer from Alloc.
	InPlace() []byte
}

// inPlace returns the prefix of a's received buffer (InPlaceAllocator)
// that holds an n-byte header followed by inner, when hdr starts that
// buffer and inner lies in it at least n bytes after its start; the caller
// leaves or writes the header there and moves inner behind it (copy
// handles the overlap). Every byte of the prefix is then the header's or
// inner's: nothing of the received packet beyond them (ESP trailer, ICV)
// is in it. Otherwise inPlace returns nil and the caller allocates.
func inPlace(a Allocator, hdr []byte, n int, inner []byte) []byte {
	ipa, ok := a.(InPlaceAllocator)
	if !ok || len(hdr) == 0 || len(inner) == 0 {
		return nil
	}
	buf := ipa.InPlace()
	if len(buf) == 0 || &buf[0] != &hdr[0] {
		return nil
	}
	// inner shares buf's backing array when it is a slice of it; the
	// pointer comparison below proves it (a 3-index slice that lowered
	// inner's capacity just fails it).
	off := cap(buf) - cap(inner)
	if off < n || off+len(inner) > len(buf) || &buf[off] != &inner[0] {
		return nil
	}
	return buf[:n+len(inner)]
}

// SAs returns the SAs used, outermost first.
func (sp *SecPath) SAs() []*SA { return sp.sas[:sp.n] }

func (sp *SecPath) release() {
	for _, sa := range sp.sas[:sp.n] {
		sa.put()
	}
	sp.n = 0
}

// Input processes an inbound IPsec packet. hdr is its IP header as the IP
// layer saw it (the IPv4 header with options, or the fixed 40-byte IPv6
// header; extension headers already processed, fragments reassembled),
// proto the upper-layer protocol found after it and payload the bytes from
// the IPsec header on; payload is decrypted in place. Input returns the
// decapsulated IP packet, already checked against the inbound policy, for
// re-injection, or nil when the packet was dropped (and counted). The
// packet returned is the last buffer taken from a, or, when a is an
// InPlaceAllocator that offers the received buffer, possibly a prefix of
// that buffer.
func (e *Engine) Input(hdr []byte, proto Proto, payload []byte, a Allocator) []byte {
	return e.input(hdr, proto, payload, a, nil)
}

// TryInput is Input for a packet that may not be for the engine: when
// its outermost IPsec header is truncated or names no SA in the SAD, it
// returns handled false and counts nothing, leaving the packet to the
// caller (a link's fast path, whose IP layer then decides: forwarding,
// or its protocol handler counts XfrmInHdrError or XfrmInNoStates).
// Otherwise it is Input, with the SA it found: one SAD lookup per
// packet, where asking the SAD first and calling Input would cost two.
func (e *Engine) TryInput(hdr []byte, proto Proto, payload []byte, a Allocator) (out []byte, handled bool) {
	_, dst, ok := addrs(hdr)
	if !ok {
		return nil, false
	}
	spi, ok := PacketSPI(proto, payload)
	if !ok {
		return nil, false
	}
	sa := e.SAD.Lookup(dst, proto, spi)
	if sa == nil {
		return nil, false
	}
	var st inputState
	defer st.release()
	return e.inputLayers(hdr, proto, payload, a, nil, sa, &st), true
}

// inputState is what the layers of one inbound packet hold until it is
// done: the SAs used (references) and the decompression scratch.
type inputState struct {
	sp   SecPath
	comp *[]byte // decompression scratch, if used
}

func (st *inputState) release() {
	st.sp.release()
	if st.comp != nil {
		compBufs.Put(st.comp)
		st.comp = nil
	}
}

// input is Input and InputEncap: enc is the UDP encapsulation the
// outermost ESP header came in, nil when none. The state is released in
// this small frame, whose one defer the compiler open-codes: in
// inputLayers, with its many returns, the defers cost a deferred-call
// record and, at every return, a walk of the runtime's defer machinery,
// on every packet.
func (e *Engine) input(hdr []byte, proto Proto, payload []byte, a Allocator, enc *encapIn) []byte {
	var st inputState
	defer st.release()
	return e.inputLayers(hdr, proto, payload, a, enc, nil, &st)
}

// inputLayers is input's loop over the IPsec headers of a packet. first,
// when not nil, is what the SAD holds for the outermost header, already
// looked up (TryInput).
func (e *Engine) inputLayers(hdr []byte, proto Proto, payload []byte, a Allocator, enc *encapIn, first *SA, st *inputState) []byte {
	sp := &st.sp
	src, dst, ok := addrs(hdr)
	if !ok {
		e.Stats.InHdrError.Add(1)
		return nil
	}
	for {
		if sp.n == maxBundle {
			e.Stats.InHdrError.Add(1)
			return nil
		}
		if proto != ProtoESP && proto != ProtoAH && proto != ProtoIPComp {
			e.Stats.InNoStates.Add(1)
			return nil
		}
		spi, ok := PacketSPI(proto, payload)
		if !ok {
			e.Stats.InHdrError.Add(1)
			return nil
		}
		sa := first
		if sa == nil {
			sa = e.SAD.Lookup(dst, proto, spi)
		}
		first = nil
		if sa == nil || !sa.tryGet() {
			e.Stats.InNoStates.Add(1)
			return nil
		}
		sp.sas[sp.n] = sa
		sp.n++
		if sp.n == 1 && !e.encapMatches(sa, enc) {
			return nil
		}
		var inner []byte
		var nh uint8
		switch proto {
		case ProtoESP:
			inner, nh, ok = e.inputESP(sa, payload)
		case ProtoAH:
			inner, nh, ok = e.inputAH(sa, hdr, payload)
		default:
			if st.comp == nil {
				st.comp = compBufs.Get().(*[]byte)
			}
			inner, nh, ok = e.inputIPComp(sa, hdr, payload, *st.comp)
			if ok && sp.n > 1 {
				// payload may live in the scratch buffer (IPComp after
				// IPComp is not a bundle anyone builds): refuse.
				if sp.sas[sp.n-2].Config.Proto == ProtoIPComp {
					e.Stats.InHdrError.Add(1)
					return nil
				}
			}
		}
		if !ok {
			return nil
		}
		if sp.n == 1 && enc != nil {
			e.checkMapping(sa, EncapPeer{src, enc.sport})
		}
		c := &sa.Config
		switch {
		case nh == innerNone:
			// A dummy packet for traffic flow confidentiality (RFC
			// 4303 §2.6), in either mode: authenticated, in the
			// replay window, and now silently discarded. It is no
			// error, so nothing counts it (Linux counts the
			// tunnel-mode one as XfrmInStateModeError).
			return nil
		case c.Mode == ModeTunnel && (nh == innerIPv4 || nh == innerIPv6):
			return e.decapTunnel(hdr, inner, nh, sp, a)
		case c.Mode == ModeTunnel:
			e.Stats.InStateModeError.Add(1)
			return nil
		case nh == uint8(ProtoESP) || nh == uint8(ProtoAH) || nh == uint8(ProtoIPComp):
			proto, payload = Proto(nh), inner
			continue
		case (nh == innerIPv4 || nh == innerIPv6) && e.ipcompTunnel(src, dst, sp):
			// IP-in-IP under a transport SA: an IPComp tunnel's packet
			// that was not worth compressing (RFC 3173 §2.2).
			return e.decapTunnel(hdr, inner, nh, sp, a)
		default:
			out := rebuildTransport(hdr, nh, inner, a)
			if out == nil {
				e.Stats.InHdrError.Add(1)
				return nil
			}
			if enc != nil {
				fixTransportChecksum(out)
			}
			return e.finishInput(out, sp, a)
		}
	}
}

// encapMatches checks that the outermost SA of a packet is encapsulated
// exactly when the packet was (enc != nil), and on the port it arrived
// on, as Linux's xfrm_input compares x->encap's type with the one the
// packet came with: plain ESP for an encapsulated SA and ESP-in-UDP for a
// plain one are dropped as XfrmInStateMismatch.
func (e *Engine) encapMatches(sa *SA, enc *encapIn) bool {
	if sa.encapsulated() != (enc != nil) || (enc != nil && enc.dport != uint16(sa.ports.Load())) {
		e.Stats.InStateMismatch.Add(1)
		return false
	}
	return true
}

// PacketSPI returns the SPI in the ESP, AH or IPComp header (IPComp's CPI,
// widened) at the start of b, or false when b is too short for that header
// or proto is none of them.
func PacketSPI(proto Proto, b []byte) (uint32, bool) {
	switch proto {
	case ProtoESP:
		if len(b) >= esp.HeaderLen {
			return binary.BigEndian.Uint32(b), true
		}
	case ProtoAH:
		if len(b) >= ah.HeaderLen {
			return binary.BigEndian.Uint32(b[4:]), true
		}
	case ProtoIPComp:
		if len(b) >= ipcomp.HeaderLen {
			return uint32(binary.BigEndian.Uint16(b[2:])), true
		}
	}
	return 0, false
}

// decapTunnel returns the inner packet of a tunnel, checked, with the
// outer header's ECN merged into it (RFC 6040). outer is the outer IP
// header the packet arrived with.
func (e *Engine) decapTunnel(outer, inner []byte, nh uint8, sp *SecPath, a Allocator) []byte {
	if len(inner) < 1 || (nh == innerIPv4) != (inner[0]>>4 == 4) {
		e.Stats.InStateModeError.Add(1)
		return nil
	}
	ecn := ecnOf(outer) // before an in-place move overwrites outer
	out := inPlace(a, outer, 0, inner)
	if out == nil {
		out = a.Alloc(len(inner))
	}
	copy(out, inner)
	if !decapECN(ecn, out) {
		// CE on the outer header over a Not-ECT inner packet: the
		// congestion mark cannot be passed on, and forwarding the
		// packet would hide it (RFC 6040 §4.2). Linux's xfrm counts a
		// failed tunnel decapsulation as XfrmInStateModeError.
		e.Stats.InStateModeError.Add(1)
		return nil
	}
	return e.finishInput(out, sp, a)
}

// ECN codepoints (RFC 3168 §5), the low two bits of the IPv4 TOS byte or
// the IPv6 Traffic Class.
const (
	ecnNotECT = 0
	ecnECT1   = 1
	ecnECT0   = 2
	ecnCE     = 3
)

// ecnOf returns the ECN field of the IP header h (at least 2 bytes).
func ecnOf(h []byte) uint8 {
	if len(h) < 2 {
		return ecnNotECT
	}
	if h[0]>>4 == 4 {
		return h[1] & 3
	}
	return h[1] >> 4 & 3
}

// decapECN applies the decapsulation rules of RFC 6040 §4.2 (normal
// mode) to the inner packet pkt, given the outer header's ECN field: a CE
// mark on the outer header is copied to an ECN-capable inner packet, and
// ECT(1) outer over ECT(0) inner gives ECT(1); every other combination
// leaves the inner packet as it is. It returns false when the packet must
// be dropped: CE outer over a Not-ECT inner packet. Linux's xfrm
// (ipip_ecn_decapsulate) copies CE only, and forwards the Not-ECT packet
// unmarked, losing the congestion signal; this follows the RFC.
// An IPv4 inner header's checksum is updated incrementally (RFC 1624), so
// a malformed header is left for the checks that follow to reject.
func decapECN(outer uint8, pkt []byte) bool {
	if outer == ecnNotECT || outer == ecnECT0 {
		return true // neither changes the inner packet (Figure 4)
	}
	v4 := pkt[0]>>4 == 4
	if v4 && len(pkt) < 20 || !v4 && len(pkt) < 40 {
		return true // not a whole header: finishInput rejects it
	}
	in := ecnOf(pkt)
	var set uint8
	switch {
	case outer == ecnCE && in == ecnNotECT:
		return false
	case outer == ecnCE && in != ecnCE:
		set = ecnCE
	case outer == ecnECT1 && in == ecnECT0:
		set = ecnECT1
	default:
		return true
	}
	if !v4 {
		pkt[1] = pkt[1]&^0x30 | set<<4
		return true
	}
	old := binary.BigEndian.Uint16(pkt[0:])
	pkt[1] = pkt[1]&^3 | set
	// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
	sum := uint32(^binary.BigEndian.Uint16(pkt[10:])) + uint32(^old) + uint32(binary.BigEndian.Uint16(pkt[0:]))
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(pkt[10:], ^uint16(sum))
	return true
}

// ipcompTunnelTmpl asks the SAD's endpoint index for any IPComp tunnel SA.
var ipcompTunnelTmpl = Template{Proto: ProtoIPComp, Mode: ModeTunnel}

// ipcompTunnel finds the tunnel-mode IPComp SA from src to dst that sends
// uncompressed packets as IP-in-IP and adds it to the secpath, as Linux
// does with the IPIP state it pairs with an IPComp tunnel SA (found by a
// hashed xfrm_state_lookup). The SAD indexes SAs by (src, dst, protocol,
// mode), so this costs one hash lookup, not a walk of the SAD: a peer
// sending IP-in-IP cannot make each packet cost in proportion to the SAD.
func (e *Engine) ipcompTunnel(src, dst netip.Addr, sp *SecPath) bool {
	if sp.n == maxBundle {
		return false
	}
	// The selector is not checked here: finishInput checks the
	// innermost SA's, which is this one.
	sa := e.SAD.FindOutbound(&ipcompTunnelTmpl, src, dst, nil)
	if sa == nil || !sa.tryGet() {
		return false
	}
	sp.sas[sp.n] = sa
	sp.n++
	return true
}

// replayCheck infers the full sequence number of a packet and checks it
// against the window before the ICV is (expensively) verified.
func (e *Engine) replayCheck(sa *SA, seqLo uint32) (uint64, bool) {
	sa.replayMu.Lock()
	seq := sa.replay.Infer(seqLo)
	fresh := sa.replay.Check(seq)
	sa.replayMu.Unlock()
	if !fresh {
		sa.Counters.ReplayErrors.Add(1)
		e.Stats.InStateSeqError.Add(1)
	}
	return seq, fresh
}

// replayUpdate records an authenticated sequence number; false if a
// concurrent packet with it won the race.
func (e *Engine) replayUpdate(sa *SA, seq uint64) bool {
	sa.replayMu.Lock()
	fresh := sa.replay.Update(seq)
	sa.replayMu.Unlock()
	if !fresh {
		sa.Counters.ReplayErrors.Add(1)
		e.Stats.InStateSeqError.Add(1)
	}
	return fresh
}

func (e *Engine) saInputOK(sa *SA) bool {
	if !sa.Usable() {
		e.Stats.InStateInvalid.Add(1)
		return false
	}
	if sa.hardHit.Load() {
		e.Stats.InStateExpired.Add(1)
		return false
	}
	return true
}

// inputESP verifies and decrypts one ESP layer.
func (e *Engine) inputESP(sa *SA, b []byte) ([]byte, uint8, bool) {
	if !e.saInputOK(sa) {
		return nil, 0, false
	}
	if sa.esp == nil {
		e.Stats.InStateProtoError.Add(1)
		return nil, 0, false
	}
	c := &sa.Config
	seq, fresh := e.replayCheck(sa, binary.BigEndian.Uint32(b[4:]))
	if !fresh {
		return nil, 0, false
	}
	inner, nh, err := sa.esp.Open(b, seq, c.ESN)
	if err != nil {
		if errors.Is(err, esp.ErrICV) {
			sa.Counters.IntegrityErrors.Add(1)
		}
		e.Stats.InStateProtoError.Add(1)
		return nil, 0, false
	}
	if !e.replayUpdate(sa, seq) {
		return nil, 0, false
	}
	if !sa.account(len(inner)) {
		e.Stats.InStateExpired.Add(1)
		return nil, 0, false
	}
	return inner, nh, true
}

// inputAH verifies one AH layer. hdr is the IP header (with the IPv6
// extension headers before AH) the packet arrived with.
func (e *Engine) inputAH(sa *SA, hdr, b []byte) ([]byte, uint8, bool) {
	if !e.saInputOK(sa) {
		return nil, 0, false
	}
	if sa.ah == nil {
		e.Stats.InStateProtoError.Add(1)
		return nil, 0, false
	}
	c := &sa.Config
	seq, fresh := e.replayCheck(sa, binary.BigEndian.Uint32(b[8:]))
	if !fresh {
		return nil, 0, false
	}
	inner, nh, err := sa.ah.Open(hdr, b, seq, c.ESN)
	if err != nil {
		switch {
		case errors.Is(err, ah.ErrICV):
			sa.Counters.IntegrityErrors.Add(1)
			e.Stats.InStateProtoError.Add(1)
		case errors.Is(err, ah.ErrHeader):
			e.Stats.InHdrError.Add(1)
		default:
			e.Stats.InStateProtoError.Add(1)
		}
		return nil, 0, false
	}
	if !e.replayUpdate(sa, seq) {
		return nil, 0, false
	}
	if !sa.account(len(inner)) {
		e.Stats.InStateExpired.Add(1)
		return nil, 0, false
	}
	return inner, nh, true
}

// inputIPComp decompresses one IPComp layer into scratch, capped so that
// the decompressed packet still fits an IP packet: a payload that would
// exceed it is a decompression bomb (counted on the SA, and as
// XfrmInStateProtoError, as Linux counts a failed decompression).
func (e *Engine) inputIPComp(sa *SA, hdr, b, scratch []byte) ([]byte, uint8, bool) {
	if !e.saInputOK(sa) {
		return nil, 0, false
	}
	if sa.comp == nil {
		e.Stats.InStateProtoError.Add(1)
		return nil, 0, false
	}
	limit := 0xffff - len(hdr)
	if hdr[0]>>4 == 6 {
		limit = 0xffff - (len(hdr) - 40)
	}
	n, nh, err := sa.comp.Decompress(scratch[:min(limit, len(scratch))], b)
	if err != nil {
		if errors.Is(err, ipcomp.ErrTooBig) {
			sa.Counters.DecompressionBombs.Add(1)
		}
		e.Stats.InStateProtoError.Add(1)
		return nil, 0, false
	}
	if !sa.account(n) {
		e.Stats.InStateExpired.Add(1)
		return nil, 0, false
	}
	return scratch[:n], nh, true
}

// finishInput checks the decapsulated packet against the SA selectors and
// the inbound policy.
func (e *Engine) finishInput(pkt []byte, sp *SecPath, a Allocator) []byte {
	// A fragment is checked only as part of its whole datagram, with the
	// SAs all its fragments came through (see reasm.go).
	fi, isFrag, err := ParseFragment(pkt)
	if err != nil {
		e.Stats.InStateModeError.Add(1)
		return nil
	}
	// A packet the stack forwards is checked against the fwd policies,
	// one for the stack against the in policies. An IPv6 fragment to
	// forward is checked and forwarded as it is (RFC 4301 §7.1: a tunnel
	// whose selectors have ANY ports carries non-initial fragments): a
	// router may not fragment IPv6 again (RFC 8200 §4.5), so it must not
	// reassemble it either. IPv4 fragments are reassembled and checked
	// whole (RFC 4301 §7.4's stateful fragment checking, as Linux does
	// with conntrack's defragmentation); the gateway fragments the
	// datagram again on its way out when it must (stack.Endpoint.forwardOut).
	dir := DirIn
	if _, dst, ok := addrs(pkt); ok {
		dir = e.inputDir(dst)
	}
	if isFrag && !(dir == DirFwd && !ForwardsReassembled(pkt)) {
		if pkt = e.Reasm.Add(pkt, &fi, sp.SAs(), a); pkt == nil {
			return nil
		}
		if _, again, _ := ParseFragment(pkt); again {
			// A fragment inside a fragment: nothing sends that.
			e.Reasm.Stats.ReasmFails.Add(1)
			return nil
		}
	}
	var f Flow
	l4off, err := ParseFlow(pkt, &f)
	if err != nil {
		e.Stats.InStateModeError.Add(1)
		return nil
	}
	if IsICMPError(&f) {
		// Judged by the flow it quotes (see CheckInboundICMPError): an
		// error about a protected flow comes through that flow's SAs,
		// whose selectors and policies name the flow, not ICMP.
		if !e.checkICMPError(dir, pkt, l4off, sp.SAs()) {
			return nil
		}
		return pkt
	}
	// The innermost SA's selector must cover the packet (Linux's
	// xfrm_selector_match in xfrm_input; a zero selector matches all).
	if last := sp.sas[sp.n-1]; !last.Config.Sel.Match(&f) {
		e.Stats.InStateMismatch.Add(1)
		return nil
	}
	if !e.checkPolicy(dir, &f, sp.SAs()) {
		return nil
	}
	return pkt
}

// CheckInbound applies the inbound SPD to a packet with flow f that was
// decapsulated with the SAs in sp (outermost first; empty for cleartext),
// counting the reason when it rejects. It follows Linux's
// __xfrm_policy_check: no policy accepts cleartext and what transport-mode
// SAs carried, but rejects what came out of a tunnel (XfrmInNoPols);
// discard rejects, bypass accepts unless a tunnel-mode SA was used, protect
// requires the templates to be matched by the SAs in order.
func (e *Engine) CheckInbound(f *Flow, sp []*SA) bool {
	return e.checkPolicy(DirIn, f, sp)
}

// CheckForward is CheckInbound for a packet the stack forwards rather
// than takes itself: the fwd policies decide it, as Linux's ip_forward and
// ip6_forward check XFRM_POLICY_FWD, with the same rules and counters
// (a tunnel's inner packet without a fwd policy is XfrmInNoPols; discard
// XfrmInPolBlock; SAs that do not satisfy the templates
// XfrmInTmplMismatch). Socket policies play no part.
func (e *Engine) CheckForward(f *Flow, sp []*SA) bool {
	return e.checkPolicy(DirFwd, f, sp)
}

// checkPolicy is CheckInbound and CheckForward; dir is DirIn or DirFwd.
func (e *Engine) checkPolicy(dir Dir, f *Flow, sp []*SA) bool {
	var p *Policy
	if dir == DirIn {
		p = e.socketPolicyIn(f)
	}
	if p == nil {
		p = e.SPD.Lookup(dir, f)
	}
	if dir == DirFwd && f.Opaque && (p == nil || p.Action == ActionBypass) && e.portPolicyCovers(dir, f, p) {
		// A fragment without ports (RFC 4301 §7) that a port-specific
		// protect policy may cover: only its ports, which it does not
		// carry, could tell whether it had to come protected. Fail
		// closed, as for an ICMP error quoting such a flow.
		e.Stats.InTmplMismatch.Add(1)
		return false
	}
	if p == nil {
		// A tunnel's inner packet is only as trustworthy as the policy
		// that says which inner addresses the peer may use: without
		// one, the peer could inject any source (RFC 4301 §5.2;
		// Linux: secpath_has_nontransport, LINUX_MIB_XFRMINNOPOLS).
		for _, sa := range sp {
			if sa.Config.Mode != ModeTransport {
				e.Stats.InNoPols.Add(1)
				return false
			}
		}
		return true
	}
	switch p.Action {
	case ActionDiscard:
		e.Stats.InPolBlock.Add(1)
		return false
	case ActionBypass:
		for _, sa := range sp {
			if sa.Config.Mode == ModeTunnel {
				e.Stats.InTmplMismatch.Add(1)
				return false
			}
		}
		return true
	}
	// Templates are listed in output order (innermost first); the secpath
	// is outermost first, so walk templates backwards (Linux's
	// __xfrm_policy_check).
	k := 0
	for i := len(p.Templates) - 1; i >= 0; i-- {
		k = policyOK(&p.Templates[i], sp, k)
		if k < 0 {
			e.Stats.InTmplMismatch.Add(1)
			return false
		}
	}
	// SAs left over may be transport mode only (secpath_has_nontransport).
	for _, sa := range sp[k:] {
		if sa.Config.Mode != ModeTransport {
			e.Stats.InTmplMismatch.Add(1)
			return false
		}
	}
	return true
}

// policyOK is Linux's xfrm_policy_ok: it finds the SA that satisfies t in
// sp from start on and returns the index after it, or -1. It may skip
// transport-mode SAs but not a tunnel. An optional template (level use)
// in transport mode is satisfied without consuming anything; an optional
// tunnel template consumes its SA when present. IPComp templates are
// optional on a protected packet: a sender leaves the IPComp header out
// when compression does not pay (RFC 3173 §2.2); Linux deployments mark
// IPComp templates optional for that reason (strongSwan always does). A
// packet that arrived in clear still fails a required IPComp template.
func policyOK(t *Template, sp []*SA, start int) int {
	idx := start
	optional := t.Level == LevelUse || (t.Proto == ProtoIPComp && len(sp) > 0)
	if optional {
		if t.Mode == ModeTransport {
			return start
		}
	} else {
		start = -1
	}
	for ; idx < len(sp); idx++ {
		if templateMatches(t, sp[idx]) {
			return idx + 1
		}
		if sp[idx].Config.Mode != ModeTransport {
			break
		}
	}
	return start
}

// templateMatches is Linux's xfrm_state_ok.
func templateMatches(t *Template, sa *SA) bool {
	c := &sa.Config
	if t.Proto != c.Proto || t.Mode != c.Mode {
		return false
	}
	if t.SPI != 0 && t.SPI != c.SPI {
		return false
	}
	if t.ReqID != 0 && t.ReqID != c.ReqID {
		return false
	}
	if t.Mode == ModeTunnel {
		if t.Dst.IsValid() && t.Dst != c.Dst {
			return false
		}
		if t.Src.IsValid() && t.Src != c.Src {
			return false
		}
	}
	return true
}

// addrs extracts source and destination from an IP header.
func addrs(h []byte) (src, dst netip.Addr, ok bool) {
	if len(h) >= 20 && h[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(h[12:16])), netip.AddrFrom4([4]byte(h[16:20])), true
	}
	if len(h) >= 40 && h[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(h[8:24])), netip.AddrFrom16([16]byte(h[24:40])), true
	}
	return netip.Addr{}, netip.Addr{}, false
}

// rebuildTransport makes the IP packet a transport-mode SA carried: the
// original header with the inner next header and new lengths. For IPv6 the
// fixed header alone is kept: the extension headers before ESP (and a
// Fragment header left by reassembly) were processed already.
func rebuildTransport(hdr []byte, nh uint8, payload []byte, a Allocator) []byte {
	if hdr[0]>>4 == 4 {
		ihl := int(hdr[0]&0xf) * 4
		if ihl < 20 || ihl > len(hdr) || ihl+len(payload) > 0xffff {
			return nil
		}
		// In place (see inPlace) the header is already where it goes
		// and the first copy moves nothing.
		out := inPlace(a, hdr, ihl, payload)
		if out == nil {
			out = a.Alloc(ihl + len(payload))
		}
		copy(out, hdr[:ihl])
		copy(out[ihl:], payload)
		out[9] = nh
		out[6] &= 0x40 // keep DF; the packet is whole
		out[7] = 0
		fixLength(out, true)
		return out
	}
	if len(payload) > 0xffff {
		return nil
	}
	out := inPlace(a, hdr, 40, payload)
	if out == nil {
		out = a.Alloc(40 + len(payload))
	}
	copy(out, hdr[:40])
	copy(out[40:], payload)
	out[6] = nh
	fixLength(out, false)
	return out
}
