package xfrm

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// UDP encapsulation of ESP (RFC 3948), Linux's `encap espinudp`.
//
// The ports of an SA's Encap are those of its own endpoints, as in Linux
// (x->encap->encap_sport/encap_dport) and PF_KEY (SADB_X_EXT_NAT_T_SPORT
// and _DPORT): SPort is the UDP port at the SA's source, DPort the one at
// its destination. An outbound SA (source: us) sends from SPort to DPort;
// an inbound SA (destination: us) receives on DPort from a peer at SPort.

// UDPHeaderLen is the size of the UDP header that encapsulation adds.
const UDPHeaderLen = 8

// EncapPeer is the remote end of an encapsulated SA: an address and a
// UDP port.
type EncapPeer struct {
	Addr netip.Addr
	Port uint16
}

// String implements fmt.Stringer.
func (p EncapPeer) String() string { return netip.AddrPortFrom(p.Addr, p.Port).String() }

// encapsulated reports whether the SA puts ESP inside UDP.
func (sa *SA) encapsulated() bool { return sa.Config.Encap.Type == EncapESPInUDP }

// Encapsulated reports whether the SA puts ESP inside UDP (RFC 3948).
func (sa *SA) Encapsulated() bool { return sa.encapsulated() }

// validateEncap checks an SA's encapsulation settings.
func validateEncap(cfg *SAConfig) error {
	en := &cfg.Encap
	switch en.Type {
	case EncapNone:
		if en.SPort != 0 || en.DPort != 0 || en.Keepalive != 0 {
			return fmt.Errorf("%w: SA %s spi 0x%x: encapsulation ports or keepalive without an encapsulation type", ErrBadSA, cfg.Proto, cfg.SPI)
		}
		return nil
	case EncapESPInUDP:
	default:
		return fmt.Errorf("%w: SA %s spi 0x%x: encapsulation type %d is not supported (only espinudp, %d)", ErrBadSA, cfg.Proto, cfg.SPI, en.Type, EncapESPInUDP)
	}
	if cfg.Proto != ProtoESP {
		return fmt.Errorf("%w: SA %s spi 0x%x: only ESP can be UDP-encapsulated (RFC 3948)", ErrBadSA, cfg.Proto, cfg.SPI)
	}
	if en.SPort == 0 || en.DPort == 0 {
		return fmt.Errorf("%w: SA esp spi 0x%x: UDP encapsulation needs both ports (have %d, %d)", ErrBadSA, cfg.SPI, en.SPort, en.DPort)
	}
	if en.Keepalive < 0 {
		return fmt.Errorf("%w: SA esp spi 0x%x: negative keepalive interval %v", ErrBadSA, cfg.SPI, en.Keepalive)
	}
	if en.OA.IsValid() && en.OA.Is4() != cfg.Dst.Is4() {
		return fmt.Errorf("%w: SA esp spi 0x%x: NAT-OA %v is not of the SA's family", ErrBadSA, cfg.SPI, en.OA)
	}
	return nil
}

// initEncap sets the mutable peers of an encapsulated SA from its config.
func (sa *SA) initEncap() {
	if !sa.encapsulated() {
		return
	}
	c := &sa.Config
	sa.ports.Store(uint32(c.Encap.SPort)<<16 | uint32(c.Encap.DPort))
	sa.outPeer.Store(&EncapPeer{c.Dst, c.Encap.DPort})
	sa.inPeer.Store(&EncapPeer{c.Src, c.Encap.SPort})
}

// EncapPorts returns the UDP ports of an encapsulated SA's source and
// destination in force: Config's, or what an UPDATE set since
// (SAD.Update, as Linux's xfrm_state_update copies x->encap).
func (sa *SA) EncapPorts() (sport, dport uint16) {
	p := sa.ports.Load()
	return uint16(p >> 16), uint16(p)
}

// updateEncap applies the encapsulation of n, an UPDATE of the mature SA
// sa, in place: the ports, with the peers moved to them (their
// addresses, which port floating may have moved, stay). The caller holds
// the SAD's lock and re-indexes sa around it.
func (sa *SA) updateEncap(n *SA) {
	sport, dport := n.Config.Encap.SPort, n.Config.Encap.DPort
	sa.ports.Store(uint32(sport)<<16 | uint32(dport))
	if p := sa.outPeer.Load(); p != nil {
		sa.outPeer.Store(&EncapPeer{p.Addr, dport})
	}
	if p := sa.inPeer.Load(); p != nil {
		sa.inPeer.Store(&EncapPeer{p.Addr, sport})
	}
}

// OutPeer returns where an encapsulated SA sends: its destination and
// DPort, until port floating (RFC 3948 §4; EventNewMapping) moved them.
// ok is false for an SA that is not encapsulated.
func (sa *SA) OutPeer() (p EncapPeer, ok bool) {
	if q := sa.outPeer.Load(); q != nil {
		return *q, true
	}
	return EncapPeer{}, false
}

// InPeer returns where an encapsulated inbound SA's packets last came
// from: its source and SPort until a packet from elsewhere moved it.
func (sa *SA) InPeer() (p EncapPeer, ok bool) {
	if q := sa.inPeer.Load(); q != nil {
		return *q, true
	}
	return EncapPeer{}, false
}

// SetOutPeer moves where an encapsulated SA sends, as a key manager does
// after it learns of a new NAT mapping. The family must stay.
func (sa *SA) SetOutPeer(p EncapPeer) error {
	if !sa.encapsulated() {
		return fmt.Errorf("%w: SA %s spi 0x%x is not UDP-encapsulated", ErrBadSA, sa.Config.Proto, sa.Config.SPI)
	}
	if !p.Addr.IsValid() || p.Addr.Is4() != sa.Config.Dst.Is4() || p.Port == 0 {
		return fmt.Errorf("%w: SA esp spi 0x%x: peer %v is not a %s address and port", ErrBadSA, sa.Config.SPI, p, family(sa.Config.Dst))
	}
	sa.outPeer.Store(&p)
	return nil
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// encapOut writes the UDP header of an encapsulated ESP packet at off in
// pkt (an IP packet whose length fields are already final), addressed to
// the SA's current peer. The checksum is zero over IPv4 (RFC 3948 §2.1:
// SHOULD, as Linux sends) and computed over IPv6, which requires it (RFC
// 8200 §8.1; RFC 6935's zero-checksum exception is for tunnels that
// negotiate it, and ESP-in-UDP does not).
func encapOut(sa *SA, pkt []byte, off int, peer *EncapPeer) {
	u := pkt[off:]
	sport, _ := sa.EncapPorts()
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], peer.Port)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	u[6], u[7] = 0, 0
	if pkt[0]>>4 == 6 {
		binary.BigEndian.PutUint16(u[6:], l4Checksum(pkt[8:24], pkt[24:40], ProtoUDP, u, true))
	}
}

// setDst rewrites the destination address of the IP packet pkt (the
// IPv4 header checksum is fixed by the setLength that follows).
func setDst(pkt []byte, dst netip.Addr) {
	if pkt[0]>>4 == 4 {
		d := dst.As4()
		copy(pkt[16:20], d[:])
		return
	}
	d := dst.As16()
	copy(pkt[24:40], d[:])
}

// l4Checksum is the Internet checksum (RFC 1071) of a TCP or UDP segment
// seg with the pseudo-header of src and dst (4 or 16 bytes each; RFC 793,
// RFC 768, RFC 8200 §8.1). The checksum field in seg must be zero. A UDP
// sum of zero is sent as 0xffff when udpZero is set (RFC 768).
func l4Checksum(src, dst []byte, proto uint8, seg []byte, udpZero bool) uint16 {
	var sum uint64
	sum = sum16(sum, src)
	sum = sum16(sum, dst)
	sum += uint64(proto) + uint64(len(seg))
	sum = sum16(sum, seg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	c := ^uint16(sum)
	if c == 0 && udpZero {
		c = 0xffff
	}
	return c
}

// sum16 adds b, as big-endian 16-bit words, to sum.
func sum16(sum uint64, b []byte) uint64 {
	for len(b) >= 8 {
		sum += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		sum += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	return sum
}

// encapIn is what the input path knows of a packet's UDP encapsulation.
type encapIn struct {
	sport, dport uint16
}

// InputEncap processes an ESP packet that arrived inside UDP (RFC 3948
// §2.2; the caller has found a port of an encapsulated SA and told ESP
// from IKE and keepalives, see ClassifyEncap). hdr is the IP header as in
// Input; udp is the UDP header and its payload, cut to the UDP length.
// The SA must be encapsulated and expect the packet's destination port,
// else the packet is dropped as Linux's xfrm_input does (encap_type
// mismatch: XfrmInStateMismatch). An authenticated packet from a new
// source address or port moves the peer (see newMapping). A transport-mode
// TCP or UDP payload gets its checksum recomputed over the addresses it
// arrived with (RFC 3948 §3.1.2): a NAT changed them under the checksum
// the sender computed.
func (e *Engine) InputEncap(hdr, udp []byte, a Allocator) []byte {
	if len(udp) < UDPHeaderLen {
		e.Stats.InHdrError.Add(1)
		return nil
	}
	enc := encapIn{sport: binary.BigEndian.Uint16(udp), dport: binary.BigEndian.Uint16(udp[2:])}
	return e.input(hdr, ProtoESP, udp[UDPHeaderLen:], a, &enc)
}

// EncapKind is what a UDP datagram to an encapsulation port carries.
type EncapKind uint8

// Encapsulated datagram kinds (RFC 3948 §2.2).
const (
	EncapKindIKE       EncapKind = iota // non-ESP marker (or too short for ESP): a UDP datagram for the key manager
	EncapKindKeepalive                  // the single byte 0xFF (§2.3)
	EncapKindESP                        // an ESP packet
)

// ClassifyEncap tells what the UDP payload p (after the UDP header) to an
// encapsulation port carries, as Linux's xfrm4_udp_encap_rcv does: one
// byte 0xFF is a NAT keepalive; more than an ESP header's 8 bytes whose
// first four (the SPI's place) are not zero is ESP; everything else,
// notably the four zero bytes of the non-ESP marker, goes to the UDP
// socket as the ordinary datagram it is.
func ClassifyEncap(p []byte) EncapKind {
	switch {
	case len(p) == 1 && p[0] == 0xff:
		return EncapKindKeepalive
	case len(p) > 8 && binary.BigEndian.Uint32(p) != 0:
		return EncapKindESP
	}
	return EncapKindIKE
}

// checkMapping compares the outer source of an authenticated packet on
// the encapsulated inbound SA sa with the peer sa knows, and reports a
// move (newMapping). It costs a load and a compare per packet; nothing is
// allocated unless the peer moved.
func (e *Engine) checkMapping(sa *SA, from EncapPeer) {
	if old := sa.inPeer.Load(); old != nil && *old != from {
		e.newMapping(sa, old, from)
	}
}

// newMapping handles an authenticated packet on the encapsulated inbound
// SA sa that came from from rather than from old, the peer sa knew (RFC
// 3948 §4, "port floating"; Linux's km_new_mapping from esp_input_done2).
// The inbound SA remembers the new peer, so that the event is raised once
// per move; every encapsulated SA that sent to the old peer from our
// address sends to the new one from now on; and EventNewMapping tells the
// key managers (PF_KEY's SADB_X_NAT_T_NEW_MAPPING). Linux only reports the
// move and leaves the SAs to the key manager; moving them here keeps a
// flow alive across a NAT rebinding when the key manager is slow or
// absent (manual keys), and the key manager can still move them
// (SA.SetOutPeer, or an UPDATE with other ports).
func (e *Engine) newMapping(sa *SA, old *EncapPeer, from EncapPeer) {
	if !sa.inPeer.CompareAndSwap(old, &EncapPeer{from.Addr, from.Port}) {
		return // a concurrent packet reported this move
	}
	local := sa.Config.Dst
	e.SAD.Walk(func(o *SA) bool {
		if !o.encapsulated() || o.Config.Src != local {
			return true
		}
		if p := o.outPeer.Load(); p != nil && *p == *old {
			o.outPeer.CompareAndSwap(p, &EncapPeer{from.Addr, from.Port})
		}
		return true
	})
	e.emit(Event{Type: EventNewMapping, SA: sa, OldPeer: *old, NewPeer: from})
}

// fixTransportChecksum recomputes the TCP or UDP checksum of pkt, a
// whole IP packet (IPv6 with no extension headers, as rebuildTransport
// makes it) decapsulated from a transport-mode encapsulated SA: the sender
// computed it over addresses a NAT has since changed (RFC 3948 §3.1.2
// allows recomputation instead of the incremental fix with NAT-OA). A UDP
// checksum of zero over IPv4 means none and stays zero. Other protocols
// (ICMP has no pseudo-header) are left alone.
func fixTransportChecksum(pkt []byte) {
	var src, dst, seg []byte
	var proto uint8
	if pkt[0]>>4 == 4 {
		ihl := int(pkt[0]&0xf) * 4
		if len(pkt) < ihl {
			return
		}
		src, dst, proto, seg = pkt[12:16], pkt[16:20], pkt[9], pkt[ihl:]
	} else {
		if len(pkt) < 40 {
			return
		}
		src, dst, proto, seg = pkt[8:24], pkt[24:40], pkt[6], pkt[40:]
	}
	switch proto {
	case ProtoTCP:
		if len(seg) < 20 {
			return
		}
		seg[16], seg[17] = 0, 0
		binary.BigEndian.PutUint16(seg[16:], l4Checksum(src, dst, proto, seg, false))
	case ProtoUDP:
		if len(seg) < 8 || (len(src) == 4 && seg[6] == 0 && seg[7] == 0) {
			return
		}
		if int(binary.BigEndian.Uint16(seg[4:])) != len(seg) {
			return // the stack rejects it on its own
		}
		seg[6], seg[7] = 0, 0
		binary.BigEndian.PutUint16(seg[6:], l4Checksum(src, dst, proto, seg, true))
	}
}

// Keepalive is a NAT keepalive to send (RFC 3948 §2.3): one UDP datagram
// holding the byte 0xFF from Src:SPort to Dst:DPort.
type Keepalive struct {
	Src   netip.Addr
	SPort uint16
	Dst   EncapPeer
}

// SetKeepaliveSender registers fn to send the NAT keepalives of SAs with
// Encap.Keepalive set; the engine's timer calls it. The stack's link
// wrapper registers itself (it sends them in clear, past the SPD).
func (e *Engine) SetKeepaliveSender(fn func(Keepalive)) {
	if fn == nil {
		e.kaSend.Store(nil)
		return
	}
	e.kaSend.Store(&fn)
}

// keepaliveTick sends the keepalives that are due at now.
func (e *Engine) keepaliveTick(now time.Time) {
	fp := e.kaSend.Load()
	if fp == nil {
		return
	}
	e.SAD.Walk(func(sa *SA) bool {
		iv := sa.Config.Encap.Keepalive
		if iv <= 0 || !sa.encapsulated() || !sa.Usable() {
			return true
		}
		last := sa.lastKA.Load()
		if last != 0 && now.Sub(time.Unix(0, last)) < iv {
			return true
		}
		sa.lastKA.Store(now.UnixNano())
		peer := sa.outPeer.Load()
		sport, _ := sa.EncapPorts()
		(*fp)(Keepalive{Src: sa.Config.Src, SPort: sport, Dst: *peer})
		return true
	})
}
