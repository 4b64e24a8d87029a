package stack

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Security gateway (RFC 4301 §5.2, §6, §8): with Config.Forwarding the
// stack forwards between its NICs, and gVisor does the routing, the TTL
// or hop limit decrement and most ICMP errors. Each NIC's Endpoint does the
// IPsec part. On the way in it tells packets for the stack from packets to
// forward by their destination (isLocal): the latter, cleartext or the
// inner packets of tunnels, are checked against the fwd policies
// (xfrm.DirFwd) instead of the in policies. On the way out gVisor hands
// every forwarded packet to the egress NIC's Endpoint, marked
// IsForwardedPacket, and the out policies protect it like a local one;
// only its MTU handling differs (forwardOut).
//
// Where gVisor (v0.0.0-20260905035102) does not do what a router must, the
// Endpoint does it:
//   - Its forwarding checks the MTU against the NIC's, which for our
//     Endpoint is WrapperMTU, so it never sends Fragmentation Needed or
//     Packet Too Big: forwardOut does, with the tunnel MTU.
//   - Its IPv4 forwarding answers Time Exceeded only for a TTL of 0 on
//     arrival and forwards a TTL of 1 as 0 (RFC 1812 §5.3.1 wants the
//     packet dropped): expired answers it. IPv6 is right (hop limit <= 1).
//   - It recomputes the TCP or UDP checksum of every forwarded packet when
//     the NIC has no TX checksum offload (ours masks it), parsing an IPv4
//     fragment as if it held the transport header: the first fragment's
//     checksum, or two bytes of a later fragment's data, are overwritten.
//     IPv4 fragments to forward are therefore reassembled first (and
//     checked whole, RFC 4301 §7.4) and fragmented again on the way out;
//     an IPv6 fragment's next header is 44, which that code leaves alone,
//     and IPv6 fragments are forwarded as they are (xfrm.ForwardsReassembled).
//   - Its IPv4 forwardPacketWithRoute reads the TTL through a slice of the
//     received packet's header taken before DeepCopyForForwarding, whose
//     copy-on-write PullUp frees the chunk that slice points into: a use
//     after free (the race detector sees another goroutine reuse the
//     chunk) that can forward a packet with a wrong TTL. IPv4 packets to
//     forward are therefore not handed to gVisor's forwarding: forward4
//     routes them and writes them out itself (IPv6 reads its hop limit
//     before the copy and is left to gVisor).

// forwarder is a gateway stack's forwarding state, shared by its NICs'
// Endpoints.
type forwarder struct {
	st       *Stack
	clampMSS bool

	// bcast holds the IPv4 directed broadcast addresses of the stack's
	// subnets (refreshed from gVisor's address table): they are local.
	bcast atomic.Pointer[[]netip.Addr]
	// addrs holds the addresses of the stack's NICs, refreshed with
	// bcast: isLocal asks it instead of gVisor's CheckLocalAddress,
	// which for an address not ours (every packet a gateway forwards,
	// asked up to three times) walks every address of every NIC under
	// their locks, matching subnets, and took a fifth of a gateway's CPU.
	addrs    atomic.Pointer[map[netip.Addr]struct{}]
	inFlight atomic.Int32  // ICMP errors being sent
	sent     atomic.Uint64 // ICMP errors sent (ICMPErrorsSent)

	mu     sync.Mutex // orders wg.Add with close's Wait
	closed bool
	wg     sync.WaitGroup
}

func newForwarder(st *Stack, clampMSS bool) *forwarder {
	f := &forwarder{st: st, clampMSS: clampMSS}
	f.bcast.Store(&[]netip.Addr{})
	f.addrs.Store(&map[netip.Addr]struct{}{})
	return f
}

// start is called once the NICs have their addresses.
func (f *forwarder) start() {
	f.refresh()
	f.st.Engine.SetLocal(f.isLocal)
}

// close waits for the ICMP errors being sent; no new one starts.
func (f *forwarder) close() {
	f.st.Engine.SetLocal(nil)
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.wg.Wait()
}

// refresh recomputes the stack's addresses and their subnets' directed
// broadcast addresses. The stack's addresses are set when it is made
// (Config.Addrs, and IPv6 link-local ones), so the set changes only
// while a NIC comes up; watchRoutes refreshes it anyway.
func (f *forwarder) refresh() {
	var b []netip.Addr
	local := map[netip.Addr]struct{}{}
	for _, addrs := range f.st.AllAddresses() {
		for _, pa := range addrs {
			a, _ := netip.AddrFromSlice(pa.AddressWithPrefix.Address.AsSlice())
			local[a] = struct{}{}
			if pa.Protocol != header.IPv4ProtocolNumber || pa.AddressWithPrefix.PrefixLen >= 31 {
				continue
			}
			p := netip.PrefixFrom(a, pa.AddressWithPrefix.PrefixLen).Masked()
			last := p.Addr().As4()
			host := uint32(1)<<(32-p.Bits()) - 1
			v := uint32(last[0])<<24 | uint32(last[1])<<16 | uint32(last[2])<<8 | uint32(last[3]) | host
			b = append(b, netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}))
		}
	}
	f.bcast.Store(&b)
	if old := *f.addrs.Load(); !maps.Equal(old, local) {
		f.addrs.Store(&local)
	}
}

// isLocal reports whether a packet to a is for the stack rather than to
// be forwarded: one of its addresses on any NIC, multicast, or broadcast.
func (f *forwarder) isLocal(a netip.Addr) bool {
	if a.IsMulticast() || a.IsUnspecified() {
		return true
	}
	if a.Is4() {
		if a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return true
		}
		for _, b := range *f.bcast.Load() {
			if a == b {
				return true
			}
		}
	}
	_, ok := (*f.addrs.Load())[a]
	return ok
}

// local reports whether the endpoint's stack takes a packet to dst
// itself: always when it does not forward.
func (e *Endpoint) local(dst netip.Addr) bool {
	return e.fwd == nil || e.fwd.isLocal(dst)
}

// classifyForward is the inbound check of a cleartext packet the stack
// forwards (not to one of its addresses): the fwd policies decide it, an
// ICMP error also by the flow it quotes (RFC 4301 §6.2), and an IPv4
// packet whose TTL runs out here is answered with Time Exceeded (see
// expired). ESP, AH and IPComp to another host are forwarded like any
// packet, as Linux does: they are some other gateway's.
func (e *Endpoint) classifyForward(b []byte, pkt *stack.PacketBuffer, l4off int, f *xfrm.Flow, rx *rxBatch) inboundVerdict {
	if !e.engine.CheckForward(f, nil) {
		return inDrop
	}
	if xfrm.IsICMPError(f) && !e.engine.CheckForwardICMPError(b, l4off, nil) {
		return inDrop
	}
	if e.expired(b) {
		return inConsumed
	}
	e.Stats.InChecked.Add(1)
	e.Stats.InForwarded.Add(1)
	if b[0]>>4 == 4 {
		e.forward4(ownView(pkt, b), rx)
		return inConsumed
	}
	return inPass
}

// expired answers an IPv4 packet to forward whose TTL would reach 0 here
// with ICMP Time Exceeded and reports true: it must not be forwarded (RFC
// 1812 §5.3.1). gVisor's IPv4 forwarding sends Time Exceeded only for a
// TTL already 0 on arrival and forwards a TTL of 1 as 0; its IPv6
// forwarding checks the hop limit as RFC 8200 says, so IPv6 is left to it.
func (e *Endpoint) expired(ip []byte) bool {
	if len(ip) < header.IPv4MinimumSize || ip[0]>>4 != 4 || ip[8] > 1 {
		return false
	}
	e.Stats.InTTLExpired.Add(1)
	e.fwd.sendError(ip, icmpTimeExceeded, 0)
	return true
}

// forwardIn reports whether the decapsulated packet in v goes on to the
// stack: false when it is one to forward whose TTL runs out here
// (expired), or an IPv4 one forward4 took (with v; rx as for forward4).
func (e *Endpoint) forwardIn(v *buffer.View, rx *rxBatch) bool {
	if e.fwd == nil {
		return true
	}
	ip := v.AsSlice()
	_, dst, ok := ipAddrs(ip)
	if !ok || e.fwd.isLocal(dst) {
		return true
	}
	if e.expired(ip) {
		v.Release()
		return false
	}
	e.Stats.InForwarded.Add(1)
	if ip[0]>>4 == 4 {
		e.forward4(v, rx)
		return false
	}
	return true
}

// forward4 forwards the IPv4 packet in v (which it takes), one the fwd
// policies let through and whose TTL is above 1, in place of gVisor's IPv4
// forwarding (see the top of this file): it finds the route, decrements
// the TTL (RFC 1812 §5.3.1, the checksum updated as RFC 1624 says) and
// writes the packet out through gVisor's route, which resolves the next
// hop and hands it to the egress NIC's Endpoint marked as forwarded. What
// gVisor would refuse to forward (RFC 1812 §5.3.7: a source in 0.0.0.0/8,
// link-local addresses, RFC 3927 §7) and what has no route (answered with
// Destination Unreachable) are left to gVisor, which does not reach the
// faulty code for them (e.deliver hands them to it as received on this
// NIC). IP options are forwarded as they came (gVisor would fill in
// Record Route and Timestamp).
//
// Within a gateway's batch (rx.direct) the packet waits in rx.fwd for
// the end of the batch (flushForwards), so that the batch's packets
// reach the egress NIC's queue together, in order: its writer then gets
// them as one list, which a TUN writes as TSO frames and a packet
// socket with one sendmmsg, and consecutive packets to one destination
// share one route lookup.
func (e *Endpoint) forward4(v *buffer.View, rx *rxBatch) {
	if rx != nil && rx.direct {
		rx.fwd = append(rx.fwd, v)
		return
	}
	var rc routeCache
	e.forward4Now(v, &rc)
	rc.release()
}

// flushForwards forwards the IPv4 packets of a gateway's batch
// (forward4), in order.
func (e *Endpoint) flushForwards(rx *rxBatch) {
	if len(rx.fwd) == 0 {
		return
	}
	var rc routeCache
	for _, v := range rx.fwd {
		e.forward4Now(v, &rc)
	}
	rc.release()
	clear(rx.fwd)
	rx.fwd = rx.fwd[:0]
}

// routeCache is the route of the last destination forward4Now looked up,
// for the next packet of a batch to the same destination.
type routeCache struct {
	dst netip.Addr
	r   *stack.Route
}

func (rc *routeCache) release() {
	if rc.r != nil {
		rc.r.Release()
		rc.r = nil
	}
}

// forward4Now is forward4's work, with rc the route of the packet before.
func (e *Endpoint) forward4Now(v *buffer.View, rc *routeCache) {
	ip := v.AsSlice()
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	dst := netip.AddrFrom4([4]byte(ip[16:20]))
	if src.IsUnspecified() || ip[12] == 0 || src.IsLinkLocalUnicast() || dst.IsLinkLocalUnicast() {
		e.deliver(v, nil)
		return
	}
	if rc.r == nil || rc.dst != dst {
		rc.release()
		r, err := e.fwd.st.FindRoute(0, tcpip.Address{}, tcpAddr(dst), header.IPv4ProtocolNumber, false)
		if err != nil {
			e.deliver(v, nil)
			return
		}
		rc.dst, rc.r = dst, r
	}
	r := rc.r
	old := binary.BigEndian.Uint16(ip[8:10])
	ip[8]--
	sum := uint32(^binary.BigEndian.Uint16(ip[10:])) + uint32(^old) + uint32(binary.BigEndian.Uint16(ip[8:10]))
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	if r.RequiresTXTransportChecksum() {
		// What gVisor's forwarding does (forwardPacketWithRoute:
		// CalculateTransportChecksum): the host kernel hands a packet
		// socket on a veth its TCP and UDP segments with the checksum
		// left to offload (CHECKSUM_PARTIAL: only the pseudo-header sum
		// in the field), and the link below us does not complete it, so
		// a forwarded segment must get its checksum here or the far
		// host drops it.
		fillTransportChecksum4(ip)
	}
	p := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(r.MaxHeaderLength()),
		Payload:            buffer.MakeWithView(v),
		IsForwardedPacket:  true,
	})
	defer p.DecRef()
	_ = r.WriteHeaderIncludedPacket(p)
}

// forwardOut is the output path of a packet gVisor forwards out of this
// NIC (RFC 4301 §5.2 step 3, §8): the out policies apply as to any
// packet, but the MTU is handled as a router must. A packet that does not
// fit the path after IPsec (the wire or learned path MTU less the bundle's
// overhead: the tunnel MTU) is, when it may not be fragmented (IPv4 with
// DF, and any IPv6 packet: RFC 8200 §5), dropped and answered with
// Fragmentation Needed or Packet Too Big giving the tunnel MTU, from the
// gateway to its source (RFC 4301 §8.2.1, §8.3). An IPv4 packet without
// DF is fragmented before it is tunnelled, each fragment protected on its
// own (RFC 4301 §8.1 lets a gateway choose; the peer gateway then
// forwards the fragments and need not reassemble outer ones). With
// ClampMSS a TCP SYN first has its MSS option lowered to fit.
func (e *Endpoint) forwardOut(pkt *stack.PacketBuffer, ip []byte, out *outQueue) {
	var f xfrm.Flow
	if _, err := xfrm.ParseFlow(ip, &f); err != nil {
		// Linux's __xfrm_route_forward: a forwarded packet whose
		// selectors cannot be read.
		e.engine.Stats.FwdHdrError.Add(1)
		e.Stats.OutDropped.Add(1)
		return
	}
	clamped := e.fwd.clampMSS && f.Proto == xfrm.ProtoTCP && !f.Opaque && e.clampMSS(ip)
	a := allocPool.Get().(*viewAlloc)
	defer allocPool.Put(a)
	verdict, _ := e.engine.Output(ip, a)
	switch verdict {
	case xfrm.VerdictDrop:
		a.release()
		e.Stats.OutDropped.Add(1)
		return
	case xfrm.VerdictPass:
		a.release()
		e.Stats.OutPassed.Add(1)
		e.Stats.OutForwarded.Add(1)
		if mtu := e.pathMTU(ip); len(ip) > mtu && !mayFragmentFwd(ip) {
			e.tooBig(ip, mtu)
			return
		}
		if clamped {
			// ip, our copy, differs from what gVisor handed us.
			v := buffer.NewViewSize(len(ip))
			copy(v.AsSlice(), ip)
			e.sendWire(pkt, ip, v.AsSlice(), v, out)
			return
		}
		e.sendWire(pkt, ip, ip, nil, out)
		return
	}
	e.Stats.OutProtected.Add(1)
	e.Stats.OutForwarded.Add(1)
	for _, v := range a.emitted {
		e.sendWire(pkt, ip, v.AsSlice(), v, out)
	}
	clear(a.emitted)
	a.emitted = a.emitted[:0]
	pv := a.take()
	wire := pv.AsSlice()
	mtu := e.pathMTU(wire)
	if len(wire) <= mtu || !isTunnel(ip, wire) {
		// Fits, or transport mode (not a gateway's; sendWire
		// fragments it after IPsec or drops it by DF as before).
		e.sendWire(pkt, ip, wire, pv, out)
		return
	}
	inner := e.engine.OutMTU(ip, e.pathMTUOf)
	switch {
	case ip[0]>>4 == 6 && inner < header.IPv6MinimumMTU && len(ip) <= header.IPv6MinimumMTU:
		// A tunnel whose MTU is below IPv6's minimum must still carry
		// 1280-byte packets: in fragments of the outer packet (RFC
		// 2473 §7.2), whatever DF an IPv4 outer header got.
		if wire[0]>>4 == 4 && wire[6]&0x40 != 0 {
			wire[6] &^= 0x40 // each fragment gets its checksum
			e.Stats.OutDFCleared.Add(1)
		}
		e.fragmentAndQueue(pkt, wire, pv, mtu, out)
	case mayFragmentFwd(ip) && inner >= header.IPv4MinimumSize+8:
		pv.Release()
		e.fragmentInner(pkt, ip, inner, out)
	default:
		pv.Release()
		if ip[0]>>4 == 6 {
			inner = max(inner, header.IPv6MinimumMTU)
		}
		e.tooBig(ip, inner)
	}
}

// isTunnel reports whether wire, the protected form of ip, went through a
// tunnel: its addresses are not ip's.
func isTunnel(ip, wire []byte) bool {
	s1, d1, _ := ipAddrs(ip)
	s2, d2, _ := ipAddrs(wire)
	return s1 != s2 || d1 != d2
}

// mayFragmentFwd reports whether a router may fragment the forwarded
// packet ip: IPv4 without DF.
func mayFragmentFwd(ip []byte) bool {
	return ip[0]>>4 == 4 && ip[6]&0x40 == 0
}

// tooBig drops a forwarded packet that does not fit mtu and tells its
// source.
func (e *Endpoint) tooBig(ip []byte, mtu int) {
	e.Stats.OutTooBig.Add(1)
	e.Stats.OutDropped.Add(1)
	e.fwd.sendError(ip, icmpTooBig, mtu)
}

// fragmentInner fragments the forwarded IPv4 packet ip to mtu before
// IPsec and sends each fragment through the out policies.
func (e *Endpoint) fragmentInner(pkt *stack.PacketBuffer, ip []byte, mtu int, out *outQueue) {
	frags, err := fragment(ip, mtu, e.fragID.Add(1))
	if err != nil {
		e.engine.Stats.OutError.Add(1)
		e.Stats.OutDropped.Add(1)
		return
	}
	for _, fv := range frags {
		e.Stats.FwdInnerFragments.Add(1)
		fr := fv.AsSlice()
		a := allocPool.Get().(*viewAlloc)
		switch v, _ := e.engine.Output(fr, a); v {
		case xfrm.VerdictDrop:
			a.release()
			e.Stats.OutDropped.Add(1)
			fv.Release()
		case xfrm.VerdictPass:
			// The fragment itself goes, in the view it owns (with a
			// nil view sendWire would send pkt, the whole packet).
			a.release()
			e.sendWire(pkt, fr, fr, fv, out)
		default:
			for _, v := range a.emitted {
				e.sendWire(pkt, fr, v.AsSlice(), v, out)
			}
			clear(a.emitted)
			a.emitted = a.emitted[:0]
			pv := a.take()
			e.sendWire(pkt, fr, pv.AsSlice(), pv, out)
			fv.Release()
		}
		allocPool.Put(a)
	}
}

// pathMTUOf is the MTU for IP packets from src to dst out of this NIC:
// the learned path MTU, else the wire MTU.
func (e *Endpoint) pathMTUOf(src, dst netip.Addr) int {
	mtu := int(e.WireMTU())
	if p := int(e.pmtu.get(pmtuKey{src, dst})); p != 0 && p < mtu {
		return p
	}
	return mtu
}

// clampMSS lowers the MSS option of a forwarded TCP SYN in ip to what
// fits the path out of this NIC after IPsec (OutMTU less the IP and TCP
// headers), fixing the TCP checksum incrementally (RFC 1624), as Linux's
// TCPMSS --clamp-mss-to-pmtu does. It reports whether it changed ip.
func (e *Endpoint) clampMSS(ip []byte) bool {
	var l4 int
	if ip[0]>>4 == 4 {
		l4 = int(ip[0]&0xf) * 4
		if binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
			return false
		}
	} else {
		l4 = header.IPv6MinimumSize
		if ip[6] != uint8(header.TCPProtocolNumber) {
			return false // extension headers: left alone, as Linux's TCPMSS does not look past them either
		}
	}
	if len(ip) < l4+header.TCPMinimumSize {
		return false
	}
	tcp := ip[l4:]
	if tcp[13]&uint8(header.TCPFlagSyn) == 0 {
		return false
	}
	doff := int(tcp[12]>>4) * 4
	if doff < header.TCPMinimumSize || doff > len(tcp) {
		return false
	}
	opts := tcp[header.TCPMinimumSize:doff]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case header.TCPOptionEOL:
			return false
		case header.TCPOptionNOP:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return false
		}
		if opts[i] == header.TCPOptionMSS && opts[i+1] == header.TCPOptionMSSLength {
			mtu := e.engine.OutMTU(ip, e.pathMTUOf)
			mss := mtu - l4 - header.TCPMinimumSize
			old := binary.BigEndian.Uint16(opts[i+2:])
			if mtu == 0 || mss <= 0 || int(old) <= mss {
				return false
			}
			binary.BigEndian.PutUint16(opts[i+2:], uint16(mss))
			// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
			sum := uint32(^binary.BigEndian.Uint16(tcp[16:])) + uint32(^old) + uint32(uint16(mss))
			for sum > 0xffff {
				sum = sum&0xffff + sum>>16
			}
			binary.BigEndian.PutUint16(tcp[16:], ^uint16(sum))
			e.Stats.FwdMSSClamped.Add(1)
			return true
		}
		i += int(opts[i+1])
	}
	return false
}

// ICMP errors the gateway sends itself.
type icmpKind uint8

const (
	icmpTimeExceeded icmpKind = iota // TTL or hop limit exceeded in transit
	icmpTooBig                       // Fragmentation Needed (IPv4), Packet Too Big (IPv6)
)

// maxErrorsInFlight bounds the ICMP errors built but not yet sent.
const maxErrorsInFlight = 16

// sendError sends an ICMP error about the packet orig (a forwarded one)
// to its source, from the stack's address towards it, as a router does
// (RFC 1812 §4.3.2, RFC 4443 §2.2), quoting as much of orig as fits 576
// bytes (IPv4) or 1280 (IPv6). It goes out through the stack like any
// packet it sends, so the out policies (and icmpErrorOut's check of the
// quoted flow) apply to it. No error is sent about an ICMP error, a
// non-initial fragment, or a packet from an unspecified, multicast or
// broadcast source; the stack's ICMP rate limit applies. It builds and
// sends on its own goroutine: the caller may hold the locks of a NIC.
func (f *forwarder) sendError(orig []byte, kind icmpKind, mtu int) {
	src, _, ok := ipAddrs(orig)
	if !ok || src.IsUnspecified() || src.IsMulticast() || src == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return
	}
	var fl xfrm.Flow
	if _, err := xfrm.ParseFlow(orig, &fl); err != nil || xfrm.IsICMPError(&fl) {
		return
	}
	if src.Is4() && binary.BigEndian.Uint16(orig[6:8])&0x1fff != 0 {
		return
	}
	if f.inFlight.Add(1) > maxErrorsInFlight {
		f.inFlight.Add(-1)
		return
	}
	limit := 576 - header.IPv4MinimumSize - header.ICMPv4MinimumSize
	if src.Is6() {
		limit = header.IPv6MinimumMTU - header.IPv6MinimumSize - header.ICMPv6MinimumSize
	}
	quote := append([]byte(nil), orig[:min(len(orig), limit)]...)
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		f.inFlight.Add(-1)
		return
	}
	f.wg.Add(1)
	f.mu.Unlock()
	go func() {
		defer f.wg.Done()
		defer f.inFlight.Add(-1)
		f.writeError(src, quote, kind, mtu)
	}()
}

// writeError builds the error to dst quoting quote and writes it.
func (f *forwarder) writeError(dst netip.Addr, quote []byte, kind icmpKind, mtu int) {
	if !f.st.AllowICMPMessage() {
		return
	}
	proto := Proto(dst)
	r, err := f.st.FindRoute(0, tcpip.Address{}, tcpAddr(dst), proto, false)
	if err != nil {
		return
	}
	defer r.Release()
	from := r.LocalAddress()
	var pkt []byte
	if dst.Is4() {
		pkt = make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(quote))
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(pkt)),
			TTL:         r.DefaultTTL(),
			Protocol:    uint8(header.ICMPv4ProtocolNumber),
			SrcAddr:     from,
			DstAddr:     tcpAddr(dst),
		})
		ic := header.ICMPv4(pkt[header.IPv4MinimumSize:])
		if kind == icmpTooBig {
			ic.SetType(header.ICMPv4DstUnreachable)
			ic.SetCode(header.ICMPv4FragmentationNeeded)
			ic.SetMTU(uint16(mtu))
		} else {
			ic.SetType(header.ICMPv4TimeExceeded)
			ic.SetCode(header.ICMPv4TTLExceeded)
		}
		copy(ic[header.ICMPv4MinimumSize:], quote)
		ic.SetChecksum(^checksum.Checksum(ic, 0))
	} else {
		pkt = make([]byte, header.IPv6MinimumSize+header.ICMPv6MinimumSize+len(quote))
		ip := header.IPv6(pkt)
		ip.Encode(&header.IPv6Fields{
			PayloadLength:     uint16(len(pkt) - header.IPv6MinimumSize),
			TransportProtocol: header.ICMPv6ProtocolNumber,
			HopLimit:          r.DefaultTTL(),
			SrcAddr:           from,
			DstAddr:           tcpAddr(dst),
		})
		ic := header.ICMPv6(pkt[header.IPv6MinimumSize:])
		if kind == icmpTooBig {
			ic.SetType(header.ICMPv6PacketTooBig)
			ic.SetMTU(uint32(mtu))
		} else {
			ic.SetType(header.ICMPv6TimeExceeded)
			ic.SetCode(header.ICMPv6HopLimitExceeded)
		}
		copy(ic[header.ICMPv6MinimumSize:], quote)
		ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header: ic, Src: from, Dst: tcpAddr(dst),
		}))
	}
	p := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(r.MaxHeaderLength()),
		Payload:            buffer.MakeWithData(pkt),
	})
	defer p.DecRef()
	if r.WriteHeaderIncludedPacket(p) == nil {
		f.sent.Add(1)
	}
}

// ICMPErrorsSent returns how many ICMP errors (Time Exceeded, Fragmentation
// Needed, Packet Too Big) the gateway built itself for forwarded packets
// and sent; gVisor's own (Network Unreachable, IPv6 Time Exceeded) are in
// its ICMP statistics.
func (s *Stack) ICMPErrorsSent() uint64 {
	if s.fwd == nil {
		return 0
	}
	return s.fwd.sent.Load()
}

// fillTransportChecksum4 computes the TCP or UDP checksum of the whole
// (unfragmented) IPv4 datagram ip in place. A UDP checksum of zero (none
// sent, RFC 768) stays zero; fragments are left alone, their checksum
// covers the datagram they belong to.
func fillTransportChecksum4(ip []byte) {
	h := header.IPv4(ip)
	ihl := int(h.HeaderLength())
	if h.FragmentOffset() != 0 || h.Flags()&header.IPv4FlagMoreFragments != 0 || int(h.TotalLength()) != len(ip) || ihl < header.IPv4MinimumSize || ihl > len(ip) {
		return
	}
	l4 := ip[ihl:]
	var off int
	switch tcpip.TransportProtocolNumber(h.Protocol()) {
	case header.TCPProtocolNumber:
		if len(l4) < header.TCPMinimumSize {
			return
		}
		off = 16
	case header.UDPProtocolNumber:
		if len(l4) < header.UDPMinimumSize || binary.BigEndian.Uint16(l4[6:]) == 0 {
			return
		}
		off = 6
	default:
		return
	}
	binary.BigEndian.PutUint16(l4[off:], 0)
	sum := header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(h.Protocol()), h.SourceAddress(), h.DestinationAddress(), uint16(len(l4)))
	v := ^checksum.Checksum(l4, sum)
	if v == 0 && off == 6 {
		v = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(l4[off:], v)
}
