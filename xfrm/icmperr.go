package xfrm

import "encoding/binary"

// ICMP errors carry part of the packet that caused them, and the stack acts
// on that quote: gVisor hands it to the socket of the quoted flow (a Port
// Unreachable resets it, a Packet Too Big lowers its MSS). RFC 4301 §6.2.2
// therefore asks that the quoted packet be consistent with the SA the error
// arrived on, and that an error arriving in clear not reach a flow the SPD
// protects. CheckInboundICMPError does both, after the error itself has
// passed the ordinary inbound check on its own selectors.

// quoteMax bounds how much of a quoted packet is parsed: the IP header and
// its extension headers must fit.
const quoteMax = 512

// IsICMPError reports whether f is an ICMP or ICMPv6 error message (RFC 792,
// RFC 4443 §2.1: ICMPv6 types below 128). The type is in f.SrcPort.
func IsICMPError(f *Flow) bool {
	if f.Opaque {
		return false
	}
	switch f.Proto {
	case ProtoICMP:
		switch f.SrcPort {
		case 3, 4, 5, 11, 12: // unreachable, source quench, redirect, time exceeded, parameter problem
			return true
		}
	case ProtoICMPv6:
		return f.SrcPort < 128
	}
	return false
}

// QuotedFlow parses the packet quoted in the ICMP error message that starts
// at pkt[l4off:] and returns its flow. A quote is truncated by nature, so
// the quoted length fields are not trusted: the flow is parsed from what is
// there.
func QuotedFlow(pkt []byte, l4off int, q *Flow) bool {
	const icmpHeader = 8
	if len(pkt) < l4off+icmpHeader+1 {
		return false
	}
	quote := pkt[l4off+icmpHeader:]
	var buf [quoteMax]byte
	n := copy(buf[:], quote)
	b := buf[:n]
	switch b[0] >> 4 {
	case 4:
		if n < ipv4MinHeader {
			return false
		}
		binary.BigEndian.PutUint16(b[2:4], uint16(n))
	case 6:
		if n < ipv6Header {
			return false
		}
		binary.BigEndian.PutUint16(b[4:6], uint16(n-ipv6Header))
	default:
		return false
	}
	if _, err := ParseFlow(b, q); err != nil {
		// Fewer bytes than the quoted transport header needs: no host
		// sends that (RFC 792 quotes 8 bytes, RFC 4443 as much as fits),
		// and the stack would not act on it either.
		return false
	}
	return true
}

// CheckInboundICMPError applies the checks of RFC 4301 §6.2.2 to an ICMP
// error (IsICMPError) that already passed CheckInbound on its own flow. sp
// lists the SAs it arrived through, outermost first, empty in clear.
//
//   - Through SAs: the quoted packet is one we sent, so its reverse must be
//     a packet those SAs may carry to us: covered by the innermost SA's
//     selector and accepted by the inbound policy with this secpath.
//   - In clear: the quoted flow's reverse must not be one the inbound
//     policy requires protected, or anyone on the path could reset or
//     shrink a protected flow. Quotes of ESP, AH and IPComp packets are
//     exempt: they are about the SA's outer path (Packet Too Big for ESP,
//     Linux's esp4_err/esp6_err), not about a protected flow.
func (e *Engine) CheckInboundICMPError(pkt []byte, l4off int, sp []*SA) bool {
	var q Flow
	if !QuotedFlow(pkt, l4off, &q) {
		e.Stats.InHdrError.Add(1)
		return false
	}
	if len(sp) == 0 {
		switch Proto(q.Proto) {
		case ProtoESP, ProtoAH, ProtoIPComp:
			return true
		}
	}
	rev := q.reverse()
	if len(sp) > 0 && !sp[len(sp)-1].Config.Sel.Match(&rev) {
		e.Stats.InStateMismatch.Add(1)
		return false
	}
	return e.CheckInbound(&rev, sp)
}

// reverse returns the flow of a reply to f: addresses and ports swapped.
// ICMP type and code keep their places: a reply to a quoted ICMP message is
// classified by the quoted type, as the policy that let it out saw it.
func (f *Flow) reverse() Flow {
	r := *f
	r.Src, r.Dst = f.Dst, f.Src
	if f.Proto != ProtoICMP && f.Proto != ProtoICMPv6 {
		r.SrcPort, r.DstPort = f.DstPort, f.SrcPort
	}
	return r
}
