package stack

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// UDP-encapsulated ESP (RFC 3948) at the link wrapper: the demultiplexing
// that Linux does in xfrm4_udp_encap_rcv on the key manager's UDP socket,
// and the NAT keepalives.

// encapInput handles a whole UDP datagram b (an IP packet; the UDP
// header at l4off) sent to an (address, port) on which an encapsulated
// SA receives. handled is false for what the stack must get as the
// ordinary UDP datagram it is: IKE, after the non-ESP marker (RFC 3948
// §2.2), which a key manager's socket on the port receives, marker and
// all; it then takes the cleartext inbound check like any UDP. A NAT
// keepalive is dropped and counted (InNATKeepalive); ESP goes to the
// engine, past the cleartext check: it is IPsec, and its inner packet
// gets the inbound policy check against the SAs that carried it.
//
// As in Linux, where the UDP layer checks before handing a datagram to the
// encapsulation (udp_queue_rcv_one_skb), a datagram shorter than its
// header, one whose length field does not fit the packet and one with a
// wrong checksum are dropped: counted as XfrmInHdrError here (Linux counts
// them as UDP InErrors/InCsumErrors, which we do not keep). A zero UDP
// checksum means none over IPv4 and is refused over IPv6 (RFC 8200 §8.1).
// csumOK skips the checksum check: the link verified it (RX checksum
// offload; on a veth the frame carries only the partial pseudo-header
// sum, CHECKSUM_PARTIAL, which Linux's UDP layer trusts as it does
// CHECKSUM_UNNECESSARY). pkt is as for classify.
func (e *Endpoint) encapInput(b []byte, pkt *stack.PacketBuffer, l4off int, rx *rxBatch, csumOK bool) (v inboundVerdict, handled bool) {
	var hdr []byte
	var src, dst tcpip.Address
	switch b[0] >> 4 {
	case 4:
		h := header.IPv4(b)
		if tl := int(h.TotalLength()); tl >= l4off && tl <= len(b) {
			b = b[:tl] // trim link padding
		}
		hdr = b[:h.HeaderLength()]
		src, dst = tcpip.AddrFrom4Slice(b[12:16]), tcpip.AddrFrom4Slice(b[16:20])
	default:
		h := header.IPv6(b)
		if tl := header.IPv6MinimumSize + int(h.PayloadLength()); tl >= l4off && tl <= len(b) {
			b = b[:tl]
		}
		hdr = b[:header.IPv6MinimumSize]
		src, dst = tcpip.AddrFrom16Slice(b[8:24]), tcpip.AddrFrom16Slice(b[24:40])
	}
	u := header.UDP(b[l4off:])
	if len(u) < header.UDPMinimumSize || int(u.Length()) < header.UDPMinimumSize || int(u.Length()) > len(u) {
		e.engine.Stats.InHdrError.Add(1)
		return inDrop, true
	}
	u = u[:u.Length()]
	if !csumOK && (u.Checksum() != 0 || b[0]>>4 == 6) {
		if !u.IsChecksumValid(src, dst, checksum.Checksum(u.Payload(), 0)) {
			e.engine.Stats.InHdrError.Add(1)
			return inDrop, true
		}
	}
	switch xfrm.ClassifyEncap(u.Payload()) {
	case xfrm.EncapKindKeepalive:
		e.Stats.InNATKeepalive.Add(1)
		return inConsumed, true
	case xfrm.EncapKindIKE:
		e.Stats.InNATIKE.Add(1)
		return inPass, false
	}
	e.Stats.InIPsec.Add(1)
	a := allocPool.Get().(*viewAlloc)
	defer allocPool.Put(a)
	a.rx = e.inPlaceBuffer(b, pkt)
	out := e.engine.InputEncap(hdr, u, a)
	a.rx = nil
	if out == nil {
		a.release()
		return inConsumed, true
	}
	e.reinjectResult(out, b, pkt, a, rx)
	return inConsumed, true
}

// sendKeepalive sends a NAT keepalive (RFC 3948 §2.3): a UDP datagram
// holding the byte 0xFF. It goes to the lower endpoint directly, past the
// SPD: it is part of the encapsulation, and a policy protecting all
// traffic to the peer must not wrap it in ESP. Its link header comes from
// the stack's route to the peer; when the next hop must be resolved
// first, it goes out once resolution completes.
func (s *Stack) sendKeepalive(k xfrm.Keepalive) {
	e := s.Endpoint
	proto := Proto(k.Src)
	r, err := s.Stack.FindRoute(s.NIC, tcpip.AddrFromSlice(k.Src.AsSlice()), tcpip.AddrFromSlice(k.Dst.Addr.AsSlice()), proto, false)
	if err != nil {
		e.Stats.OutNATKeepaliveErrors.Add(1)
		return
	}
	defer r.Release()
	// The callback runs at once when the next hop's link address is
	// known, else once resolution completes (or fails).
	err = r.ResolvedFields(func(res stack.ResolvedFieldsResult) {
		if res.Err != nil {
			e.Stats.OutNATKeepaliveErrors.Add(1)
			return
		}
		e.writeKeepalive(res.RouteInfo, proto, k)
	})
	if err != nil {
		if _, pending := err.(*tcpip.ErrWouldBlock); !pending {
			e.Stats.OutNATKeepaliveErrors.Add(1)
		}
	}
}

// writeKeepalive builds the keepalive k and writes it to the lower
// endpoint with the link header of ri.
func (e *Endpoint) writeKeepalive(ri stack.RouteInfo, proto tcpip.NetworkProtocolNumber, k xfrm.Keepalive) {
	v := buffer.NewViewSize(keepaliveLen(k.Src))
	buildKeepalive(v.AsSlice(), k, uint16(e.fragID.Add(1)))
	p := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(e.lower.MaxHeaderLength()),
		Payload:            buffer.MakeWithView(v),
	})
	p.EgressRoute = ri
	p.NetworkProtocolNumber = proto
	e.lower.AddHeader(p)
	var l stack.PacketBufferList
	l.PushBack(p)
	defer l.DecRef()
	if _, err := e.lower.WritePackets(l); err != nil {
		e.Stats.OutNATKeepaliveErrors.Add(1)
		return
	}
	e.Stats.OutNATKeepalive.Add(1)
}

// keepaliveLen is the size of a keepalive's IP packet.
func keepaliveLen(src netip.Addr) int {
	if src.Is4() {
		return header.IPv4MinimumSize + header.UDPMinimumSize + 1
	}
	return header.IPv6MinimumSize + header.UDPMinimumSize + 1
}

// buildKeepalive writes the keepalive k into p (keepaliveLen bytes), with
// IPv4 identification id.
func buildKeepalive(p []byte, k xfrm.Keepalive, id uint16) {
	src, dst := tcpip.AddrFromSlice(k.Src.AsSlice()), tcpip.AddrFromSlice(k.Dst.Addr.AsSlice())
	var u header.UDP
	if k.Src.Is4() {
		header.IPv4(p).Encode(&header.IPv4Fields{
			TotalLength: uint16(len(p)), ID: id, TTL: 64,
			Protocol: uint8(header.UDPProtocolNumber), SrcAddr: src, DstAddr: dst,
		})
		h := header.IPv4(p)
		h.SetChecksum(^h.CalculateChecksum())
		u = header.UDP(p[header.IPv4MinimumSize:])
	} else {
		header.IPv6(p).Encode(&header.IPv6Fields{
			PayloadLength: uint16(len(p) - header.IPv6MinimumSize), HopLimit: 64,
			TransportProtocol: header.UDPProtocolNumber, SrcAddr: src, DstAddr: dst,
		})
		u = header.UDP(p[header.IPv6MinimumSize:])
	}
	u.Encode(&header.UDPFields{SrcPort: k.SPort, DstPort: k.Dst.Port, Length: uint16(len(u))})
	u[header.UDPMinimumSize] = 0xff
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(len(u)))
	xsum = checksum.Checksum(u.Payload(), xsum)
	if c := ^u.CalculateChecksum(xsum); c != 0 {
		u.SetChecksum(c)
	} else {
		u.SetChecksum(0xffff)
	}
}

// encapSPort is the UDP port an encapsulated SA sends from.
func encapSPort(sa *xfrm.SA) uint16 {
	sport, _ := sa.EncapPorts()
	return sport
}
