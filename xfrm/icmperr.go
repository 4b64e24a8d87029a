package xfrm

import (
	"encoding/binary"
	"net/netip"
)

// ICMP errors carry the start of the packet that caused them, and the stack
// acts on that quote: gVisor hands it to the socket of the quoted flow (a
// Port Unreachable resets it, a Packet Too Big lowers its MSS), and an error
// we send about a packet that arrived decrypted carries its plaintext. So
// both directions look at the quoted flow (RFC 4301 §6.2): icmpErrorOut
// sends an error through the SAs of the flow it quotes, never in clear;
// CheckInboundICMPError lets an error in only if the flow it quotes could
// have carried it.

// IsICMPError reports whether f is an ICMP or ICMPv6 error message, the
// kind that quotes the packet that caused it (RFC 792, RFC 4443 §2.1:
// ICMPv6 types below 128).
func IsICMPError(f *Flow) bool {
	if f.Opaque {
		return false
	}
	switch f.Proto {
	case ProtoICMP:
		switch f.SrcPort { // the type
		case 3, 4, 5, 11, 12: // unreachable, source quench, redirect, time exceeded, parameter problem
			return true
		}
	case ProtoICMPv6:
		return f.SrcPort < 128
	}
	return false
}

// quotedReverseFlow reads the packet quoted by an ICMP error (the bytes
// after the 8-byte ICMP header, usually truncated) and returns its flow
// reversed, as Linux's xfrm_decode_session_reverse does: the flow of the
// traffic this host sends back to the quoted packet's sender. The quote is
// parsed leniently, since an ICMP error carries only the start of the
// packet: ports missing from the quote, or a quoted non-initial fragment,
// leave the flow OPAQUE. ok is false when not even the quoted IP header's
// addresses are there.
func quotedReverseFlow(quote []byte) (rf Flow, ok bool) {
	if len(quote) == 0 {
		return Flow{}, false
	}
	var q Flow
	var l4 []byte
	switch quote[0] >> 4 {
	case 4:
		if len(quote) < ipv4MinHeader {
			return Flow{}, false
		}
		ihl := int(quote[0]&0x0f) * 4
		q.Src = netip.AddrFrom4([4]byte(quote[12:16]))
		q.Dst = netip.AddrFrom4([4]byte(quote[16:20]))
		q.Proto = quote[9]
		if ihl < ipv4MinHeader || binary.BigEndian.Uint16(quote[6:8])&0x1fff != 0 || ihl > len(quote) {
			q.Opaque = true
		} else {
			l4 = quote[ihl:]
		}
	case 6:
		if len(quote) < ipv6Header {
			return Flow{}, false
		}
		q.Src = netip.AddrFrom16([16]byte(quote[8:24]))
		q.Dst = netip.AddrFrom16([16]byte(quote[24:40]))
		nh, off := quote[6], ipv6Header
	walk:
		for {
			next, end, isExt, err := skipExt6(quote, off, nh)
			if err != nil {
				q.Opaque = true
				break walk
			}
			if isExt {
				nh, off = next, end
				continue
			}
			switch nh {
			case nhFragment:
				if len(quote)-off < 8 {
					q.Opaque = true
					break walk
				}
				fo := binary.BigEndian.Uint16(quote[off+2 : off+4])
				nh, off = quote[off], off+8
				if fo>>3 != 0 {
					q.Opaque = true
					break walk
				}
			default:
				l4 = quote[off:]
				break walk
			}
		}
		q.Proto = nh
	default:
		return Flow{}, false
	}
	if !q.Opaque && parsePorts(l4, &q, true) != nil {
		q.Opaque = true
	}
	rf = Flow{Src: q.Dst, Dst: q.Src, Proto: q.Proto, Opaque: q.Opaque}
	switch q.Proto {
	case ProtoICMP, ProtoICMPv6:
		// Type and code are not endpoints: keep them.
		rf.SrcPort, rf.DstPort = q.SrcPort, q.DstPort
	default:
		rf.SrcPort, rf.DstPort = q.DstPort, q.SrcPort
	}
	return rf, true
}

// icmpErrorOut decides an ICMP error that its own selectors let go in
// clear (no policy, or bypass), by the reversed flow of the packet it
// quotes (RFC 4301 §6.2; Linux's icmp_route_lookup and
// icmpv6_route_lookup): the error carries the start of that packet, which
// for traffic that arrived decrypted is plaintext of a protected flow.
// When that flow is protected the error goes through that policy's SAs,
// or is dropped when they cannot be had; it never goes in clear. handled
// is false when the quoted flow is not protected and the error may pass.
func (e *Engine) icmpErrorOut(pkt []byte, l4off int, f *Flow, a Allocator) (v Verdict, out []byte, handled bool) {
	rf, ok := quotedReverseFlow(pkt[min(l4off+8, len(pkt)):])
	if !ok {
		// Nothing to attribute the quote to: an error we generate
		// always quotes at least the IP header, so this is no loss.
		e.Stats.OutPolError.Add(1)
		return VerdictDrop, nil, true
	}
	p := e.lookupOut(&rf, nil)
	if rf.Opaque && (p == nil || p.Action == ActionBypass) && e.portPolicyCovers(DirOut, &rf, p) {
		e.Stats.OutPolError.Add(1)
		return VerdictDrop, nil, true
	}
	if p == nil || p.Action == ActionBypass {
		return VerdictPass, nil, false
	}
	if p.Action == ActionDiscard {
		e.Stats.OutPolBlock.Add(1)
		return VerdictDrop, nil, true
	}
	if rf.Src != f.Src || rf.Dst != f.Dst {
		// The error does not go between the quoted flow's endpoints
		// (we are a router on its path). A tunnel can still carry it
		// (transforms after the first apply between the tunnel
		// endpoints); a transport-mode SA of that flow cannot.
		if len(p.Templates) == 0 || p.Templates[0].Mode != ModeTunnel {
			e.Stats.OutPolError.Add(1)
			return VerdictDrop, nil, true
		}
	}
	// protect matches SAs with the reversed flow, as Linux's lookup
	// with XFRM_LOOKUP_ICMP does; the packet's own addresses are rf's or
	// only tunnel templates are used.
	v, out = e.protect(p, &rf, pkt, a, nil)
	return v, out, true
}

// CheckInboundICMPError decides an inbound ICMP error (IsICMPError) by the
// flow it quotes, reversed: the flow of the packets its sender may send us.
// sp lists the SAs it arrived through, outermost first, empty in clear.
//
//   - Through SAs the quote decides alone, as Linux's icmp_rcv falls back to
//     xfrm4_policy_check_reverse: the quoted packet is one we sent, so its
//     reverse must be covered by the innermost SA's selector and accepted
//     by the inbound policy with this secpath. An error quoting another
//     SA's flow is rejected.
//   - In clear the error has already passed the check on its own flow; the
//     quoted flow must not be one the inbound policy requires protected
//     (with ports unknown, not one a port-specific protect policy may
//     cover), or anyone on the path could reset or shrink a protected flow.
//     Quotes of ESP, AH and IPComp packets are exempt: they are about the
//     SA's outer path (Packet Too Big for ESP, Linux's esp4_err/esp6_err),
//     not about a protected flow; so are quotes of UDP datagrams from a
//     local (address, port) that receives ESP in UDP.
func (e *Engine) CheckInboundICMPError(pkt []byte, l4off int, sp []*SA) bool {
	return e.checkICMPError(DirIn, pkt, l4off, sp)
}

// CheckForwardICMPError is CheckInboundICMPError for an ICMP error the
// stack forwards: the quoted flow, reversed, is judged by the fwd
// policies (RFC 4301 §6.2), so that an error about a flow a fwd policy
// protects is not let through in clear, and one that came through a
// tunnel must quote that tunnel's traffic.
func (e *Engine) CheckForwardICMPError(pkt []byte, l4off int, sp []*SA) bool {
	return e.checkICMPError(DirFwd, pkt, l4off, sp)
}

// checkICMPError is CheckInboundICMPError and CheckForwardICMPError.
func (e *Engine) checkICMPError(dir Dir, pkt []byte, l4off int, sp []*SA) bool {
	rf, ok := quotedReverseFlow(pkt[min(l4off+8, len(pkt)):])
	if !ok {
		e.Stats.InHdrError.Add(1)
		return false
	}
	if len(sp) == 0 {
		switch Proto(rf.Proto) {
		case ProtoESP, ProtoAH, ProtoIPComp:
			return true
		}
		if rf.Proto == ProtoUDP && !rf.Opaque && e.SAD.IsEncapPort(rf.Dst, rf.DstPort) {
			// A quote of our ESP in UDP (RFC 3948): from the port an
			// encapsulated SA of ours uses, so about the SA's outer
			// path, as for ESP.
			return true
		}
		if rf.Opaque {
			var p *Policy
			if dir == DirIn {
				p = e.socketPolicyIn(&rf)
			}
			if p == nil {
				p = e.SPD.Lookup(dir, &rf)
			}
			if (p == nil || p.Action == ActionBypass) && e.portPolicyCovers(dir, &rf, p) {
				e.Stats.InTmplMismatch.Add(1)
				return false
			}
		}
	} else if !sp[len(sp)-1].Config.Sel.Match(&rf) {
		e.Stats.InStateMismatch.Add(1)
		return false
	}
	return e.checkPolicy(dir, &rf, sp)
}
