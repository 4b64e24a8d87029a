// Package stack glues the xfrm engine into a gVisor netstack: a link
// endpoint wrapper that is the output hook (the paper's "stackable
// destination") and the inbound cleartext check, ESP/AH/IPComp registered as
// upper-layer protocols whose handler decapsulates and re-injects, and
// fragmentation after IPsec.
package stack

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// WrapperMTU is the MTU the wrapper advertises to the stack: so large that
// the IP layer never fragments a locally generated packet before IPsec has
// seen it (RFC 4301 §7: transport mode protects whole datagrams, and the
// OPAQUE tail fragments would match no port-specific policy). gVisor's
// IPv6 endpoint MTU is this minus 40, clamped to 65535: every IPv6 payload
// fits. Its IPv4 endpoint clamps the MTU to 65535 before taking the header
// off, so every IPv4 packet fits too. TCP still sends wire-sized segments
// because the stack's routes carry the IPsec-adjusted MTU, and the wrapper
// fragments what exceeds the wire after IPsec.
const WrapperMTU = 0xffff + header.IPv6MinimumSize

// LinkStats counts what the wrapper did.
type LinkStats struct {
	OutPassed    atomic.Uint64 // sent unchanged (bypass or no policy)
	OutProtected atomic.Uint64 // sent after IPsec
	OutDropped   atomic.Uint64 // dropped by policy or error
	OutFragments atomic.Uint64 // fragments made after IPsec
	// OutDFCleared counts locally generated IPv4 packets with DF that
	// did not fit the path after IPsec and were fragmented with DF
	// cleared: the stack handed them to us to send (see sendWire).
	OutDFCleared atomic.Uint64
	// OutTooBig counts packets dropped for not fitting the path MTU
	// that could not be fragmented (forwarded with DF, or TCP told by
	// an injected Packet Too Big).
	OutTooBig atomic.Uint64
	// PTBInjected counts Packet Too Big / Fragmentation Needed messages
	// given to the local stack for its own too-big packets.
	PTBInjected atomic.Uint64
	// PMTUUpdates counts path MTUs learned from ICMP errors quoting our
	// ESP/AH packets.
	PMTUUpdates atomic.Uint64
	InChecked   atomic.Uint64 // cleartext packets that passed the inbound check
	InDropped   atomic.Uint64 // cleartext packets the inbound check dropped
	InIPsec     atomic.Uint64 // IPsec packets handed to the protocol handlers
	InFragments atomic.Uint64 // fragments from the link, reassembled before the check
	Reinjected  atomic.Uint64 // decapsulated packets given back to the stack
	// InNATKeepalive counts NAT keepalives (RFC 3948 §2.3) received on
	// a port of an encapsulated SA, and dropped; InNATIKE counts the
	// datagrams on such a port that go to the stack as plain UDP (IKE,
	// after the non-ESP marker).
	InNATKeepalive atomic.Uint64
	InNATIKE       atomic.Uint64
	// OutNATKeepalive counts NAT keepalives sent; OutNATKeepaliveErrors
	// those not sent (no route, next hop unresolved, link error).
	OutNATKeepalive       atomic.Uint64
	OutNATKeepaliveErrors atomic.Uint64
	// Gateway counters (Config.Forwarding, forward.go): InForwarded
	// counts packets from the link, cleartext or decapsulated, that
	// passed the fwd policy check on their way to be forwarded;
	// InTTLExpired those answered with Time Exceeded instead;
	// OutForwarded the forwarded packets sent out of this NIC (protected
	// or not); FwdInnerFragments the fragments made of forwarded IPv4
	// packets before IPsec; FwdMSSClamped the SYNs whose MSS was lowered.
	InForwarded       atomic.Uint64
	InTTLExpired      atomic.Uint64
	OutForwarded      atomic.Uint64
	FwdInnerFragments atomic.Uint64
	FwdMSSClamped     atomic.Uint64
	// OutLinkDropped counts frames the link below refused after IPsec
	// (a full socket send buffer: fdbased never blocks and drops what
	// does not fit; a link going down). gVisor's NIC counts only a full
	// qdisc (TxPacketsDroppedNoBufferSpace), and not what the wrapper
	// passes on, so without this they would be silent.
	OutLinkDropped atomic.Uint64
}

// Endpoint wraps a link endpoint with Ethernet framing and runs every
// outbound IP packet through the xfrm engine. It must be the endpoint the
// NIC is created on.
type Endpoint struct {
	nested.Endpoint
	lower  stack.LinkEndpoint
	engine *xfrm.Engine

	// Stats counts packets by fate.
	Stats LinkStats

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher
	wireMTU    atomic.Uint32

	fragID atomic.Uint32

	pmtu        pmtuCache
	ptbInFlight atomic.Int32

	// configGen is the engine configuration generation the stack's
	// route MTUs were computed for; onConfig recomputes them.
	configGen  atomic.Uint64
	refreshing atomic.Bool
	onConfig   atomic.Pointer[func()]

	// fwd is the gateway state of a forwarding stack, nil otherwise
	// (set before the NIC is created).
	fwd *forwarder
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)
var _ stack.NetworkDispatcher = (*Endpoint)(nil)
var _ stack.GSOEndpoint = (*Endpoint)(nil)

// NewEndpoint wraps lower, an Ethernet link endpoint, with engine.
func NewEndpoint(lower stack.LinkEndpoint, engine *xfrm.Engine) *Endpoint {
	e := &Endpoint{lower: lower, engine: engine}
	e.Endpoint.Init(lower, e)
	e.wireMTU.Store(lower.MTU())
	return e
}

// Engine returns the xfrm engine the endpoint uses.
func (e *Endpoint) Engine() *xfrm.Engine { return e.engine }

// Lower returns the wrapped endpoint.
func (e *Endpoint) Lower() stack.LinkEndpoint { return e.lower }

// WireMTU is the MTU of the link below: the largest IP packet sent.
func (e *Endpoint) WireMTU() uint32 { return e.wireMTU.Load() }

// MTU implements stack.LinkEndpoint; see WrapperMTU.
func (e *Endpoint) MTU() uint32 { return WrapperMTU }

// SetMTU sets the wire MTU, and has the stack recompute its route MTUs.
func (e *Endpoint) SetMTU(mtu uint32) {
	e.lower.SetMTU(mtu)
	e.wireMTU.Store(mtu)
	if fn := e.onConfig.Load(); fn != nil {
		(*fn)()
	}
}

// watchConfig notices, with one atomic load per packet, that policies or
// SAs changed since the route MTUs were computed, and has them recomputed
// off the packet path (route updates take the stack's locks, which a
// writer may hold).
func (e *Endpoint) watchConfig() {
	fn := e.onConfig.Load()
	if fn == nil || e.engine.SPD.Generation() == e.configGen.Load() {
		return
	}
	if !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer e.refreshing.Store(false)
		(*fn)()
	}()
}

// Capabilities masks checksum offload on transmit: the stack must compute
// the TCP/UDP checksums we then encrypt.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return e.lower.Capabilities() &^ (stack.CapabilityTXChecksumOffload)
}

// GSOMaxSize reports no GSO: segments must be whole before IPsec.
func (e *Endpoint) GSOMaxSize() uint32 { return 0 }

// SupportedGSO reports no GSO.
func (e *Endpoint) SupportedGSO() stack.SupportedGSO { return stack.GSONotSupported }

// Attach keeps the NIC's dispatcher for re-injection.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	e.dispatcher = d
	e.mu.Unlock()
	e.Endpoint.Attach(d)
}

func (e *Endpoint) upper() stack.NetworkDispatcher {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher
}

// viewAlloc hands the engine pooled gVisor views and remembers the last.
// As an xfrm.Emitter it keeps the packets of a tunnel that carries one
// packet in pieces.
type viewAlloc struct {
	views   []*buffer.View
	emitted []*buffer.View
}

// Emit implements xfrm.Emitter: the piece is the last view taken.
func (a *viewAlloc) Emit([]byte) { a.emitted = append(a.emitted, a.take()) }

func (a *viewAlloc) Alloc(n int) []byte {
	v := buffer.NewViewSize(n)
	a.views = append(a.views, v)
	return v.AsSlice()
}

// take returns the view backing the final packet and releases the others.
func (a *viewAlloc) take() *buffer.View {
	last := a.views[len(a.views)-1]
	for _, v := range a.views[:len(a.views)-1] {
		v.Release()
	}
	a.views = a.views[:0]
	return last
}

func (a *viewAlloc) release() {
	for _, v := range a.views {
		v.Release()
	}
	a.views = a.views[:0]
	for _, v := range a.emitted {
		v.Release()
	}
	clear(a.emitted)
	a.emitted = a.emitted[:0]
}

var allocPool = sync.Pool{New: func() any { return &viewAlloc{views: make([]*buffer.View, 0, 4)} }}

// WritePackets is the output hook: every packet leaving the NIC passes here
// with its Ethernet header already added.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	var out stack.PacketBufferList
	n := 0
	for _, pkt := range pkts.AsSlice() {
		n++
		switch pkt.NetworkProtocolNumber {
		case header.IPv4ProtocolNumber, header.IPv6ProtocolNumber:
		default:
			// ARP and other non-IP frames carry no IP flow.
			pkt.IncRef()
			out.PushBack(pkt)
			continue
		}
		e.output(pkt, &out)
	}
	defer out.DecRef()
	if out.Len() == 0 {
		return n, nil
	}
	if sent, err := e.lower.WritePackets(out); err != nil {
		e.Stats.OutLinkDropped.Add(uint64(out.Len() - sent))
		if _, ok := err.(*tcpip.ErrWouldBlock); ok {
			// fdbased's non-blocking write found the socket's send
			// buffer full. Nothing wakes a writer that waits on the
			// stack's endpoint for that (gonet's UDP Write would
			// block for ever): report a full device queue, as Linux
			// does (ENOBUFS).
			err = &tcpip.ErrNoBufferSpace{}
		}
		return n, err
	}
	return n, nil
}

func (e *Endpoint) output(pkt *stack.PacketBuffer, out *stack.PacketBufferList) {
	e.watchConfig()
	linkLen := len(pkt.LinkHeader().Slice())
	v := pkt.ToView()
	defer v.Release()
	ip := v.AsSlice()[linkLen:]
	if pkt.NetworkPacketInfo.IsForwardedPacket && e.fwd != nil {
		e.forwardOut(pkt, ip, out)
		return
	}
	if len(ip) > int(e.WireMTU()) && len(ip) >= header.IPv4MinimumSize && ip[0]>>4 == 4 &&
		ip[6]&0x40 != 0 && !pkt.NetworkPacketInfo.IsForwardedPacket {
		// A local packet with DF that will be fragmented whatever IPsec
		// does (sendWire): clear DF now, so that a tunnel that must
		// carry it in pieces (xfrm.Emitter) may fragment it too.
		h := header.IPv4(ip)
		h.SetFlagsFragmentOffset(h.Flags()&^header.IPv4FlagDontFragment, h.FragmentOffset())
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
		e.Stats.OutDFCleared.Add(1)
	}
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
		e.sendWire(pkt, ip, ip, nil, out)
		return
	}
	e.Stats.OutProtected.Add(1)
	for _, v := range a.emitted {
		e.sendWire(pkt, ip, v.AsSlice(), v, out)
	}
	clear(a.emitted)
	a.emitted = a.emitted[:0]
	pv := a.take()
	e.sendWire(pkt, ip, pv.AsSlice(), pv, out)
}

// sendWire queues wire, the IP packet to send for orig (inner before
// IPsec; wire is inner itself when no IPsec applied, and then orig is
// queued as it is when it fits). wire is owned by view, or by the caller
// when view is nil.
//
// A packet that exceeds the path MTU (the link's, or a smaller one learned
// by notePMTU) is fragmented after IPsec, except that a forwarded packet
// that may not be fragmented (IPv4 DF; IPv6 is never fragmented on the
// path, RFC 8200 §4.5) is dropped (OutTooBig). For a locally generated TCP
// segment the stack is also told, by an injected Packet Too Big giving the
// MTU left for the inner packet (injectPTB), so that TCP lowers its
// segment size; the segment itself is still sent, fragmented, because
// gVisor's TCP, unlike Linux's tcp_simple_retransmit, does not resend at
// once on a Packet Too Big: dropping it cost a retransmission timeout
// (TestPMTUFromICMP: 1.5 s against 0.1 s). For IPv6 inside, the stack is
// told only when the MTU left is at least 1280 (gVisor takes a smaller
// one as 0); below that, fragmenting after IPsec is what RFC 8200 §5
// wants of a source.
//
// A locally generated IPv4 packet with DF (gVisor sets it on every TCP
// segment and UDP datagram) is fragmented with DF cleared and counted
// (OutDFCleared), never fragmented silently: the stack gave it to us to
// send whole or fragmented, as Linux's IP_PMTUDISC_WANT does for
// datagrams larger than the path MTU.
func (e *Endpoint) sendWire(orig *stack.PacketBuffer, inner, wire []byte, view *buffer.View, out *stack.PacketBufferList) {
	mtu := e.pathMTU(wire)
	if len(wire) <= mtu {
		if view == nil {
			orig.IncRef()
			out.PushBack(orig)
			return
		}
		out.PushBack(e.newPacket(orig, view))
		return
	}
	if !e.mayFragment(orig, inner, wire, mtu) {
		if view != nil {
			view.Release()
		}
		e.Stats.OutTooBig.Add(1)
		e.Stats.OutDropped.Add(1)
		return
	}
	if wire[0]>>4 == 4 && wire[6]&0x40 != 0 {
		// wire is ours to change: a view we own, or the caller's
		// private copy (PacketBuffer.ToView).
		wire[6] &^= 0x40
		e.Stats.OutDFCleared.Add(1)
	}
	e.fragmentAndQueue(orig, wire, view, mtu, out)
}

// mayFragment decides a packet too big for the path (see sendWire),
// telling the stack of the path MTU for local TCP.
func (e *Endpoint) mayFragment(orig *stack.PacketBuffer, inner, wire []byte, mtu int) bool {
	v4 := inner[0]>>4 == 4
	if orig.NetworkPacketInfo.IsForwardedPacket {
		return v4 && inner[6]&0x40 == 0
	}
	var f xfrm.Flow
	if _, err := xfrm.ParseFlow(inner, &f); err != nil || f.Proto != xfrm.ProtoTCP || f.Opaque {
		return true
	}
	room := mtu - (len(wire) - len(inner)) // what is left for inner
	if (v4 && room >= header.IPv4MinimumMTU) || (!v4 && room >= header.IPv6MinimumMTU) {
		e.injectPTB(inner, room)
	}
	return true
}

// fragmentAndQueue queues ip (owned by view, or copied when view is nil)
// as fragments of at most mtu bytes modelled on orig.
func (e *Endpoint) fragmentAndQueue(orig *stack.PacketBuffer, ip []byte, view *buffer.View, mtu int, out *stack.PacketBufferList) {
	frags, err := fragment(ip, mtu, e.fragID.Add(1))
	if view != nil {
		view.Release()
	}
	if err != nil {
		e.engine.Stats.OutError.Add(1)
		e.Stats.OutDropped.Add(1)
		return
	}
	for _, f := range frags {
		e.Stats.OutFragments.Add(1)
		out.PushBack(e.newPacket(orig, f))
	}
}

// newPacket builds an outbound packet holding the IP packet in v, with
// orig's route, and asks the lower endpoint for its link header.
func (e *Endpoint) newPacket(orig *stack.PacketBuffer, v *buffer.View) *stack.PacketBuffer {
	proto := header.IPv6ProtocolNumber
	if b := v.AsSlice(); len(b) > 0 && b[0]>>4 == 4 {
		proto = header.IPv4ProtocolNumber
	}
	p := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(e.lower.MaxHeaderLength()),
		Payload:            buffer.MakeWithView(v),
	})
	p.EgressRoute = orig.EgressRoute
	p.Hash = orig.Hash
	p.Owner = orig.Owner
	p.NetworkProtocolNumber = proto
	e.lower.AddHeader(p)
	return p
}

// DeliverNetworkPacket is the inbound path from the link below: IPsec
// packets go up to the protocol handlers; cleartext packets first pass the
// inbound policy check.
func (e *Endpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d := e.upper()
	if d == nil {
		return
	}
	if proto == header.IPv4ProtocolNumber || proto == header.IPv6ProtocolNumber {
		switch e.inbound(pkt) {
		case inDrop:
			e.Stats.InDropped.Add(1)
			return
		case inConsumed:
			return
		}
	}
	d.DeliverNetworkPacket(proto, pkt)
}

type inboundVerdict uint8

const (
	inPass     inboundVerdict = iota // hand the packet to the IP layer
	inDrop                           // dropped by the inbound check
	inConsumed                       // decapsulated here and re-injected
)

// inbound classifies a packet from the link. Fragments are reassembled
// here first (xfrm/reasm.go says why), so that what is classified is the
// datagram the transport layer will receive; the stack above only ever sees
// whole datagrams. Whole ESP/AH/IPComp packets addressed to one of our SAs
// are decapsulated right here, in the received buffer, so the outer packet
// does not cross the IP layer on its way to the protocol handler (that
// path remains for packets with extension headers). Everything else in
// clear gets the inbound policy check.
func (e *Endpoint) inbound(pkt *stack.PacketBuffer) inboundVerdict {
	// The received buffer is ours alone until we deliver it; PullUp is
	// free for the usual single-view packet.
	b, ok := pkt.Data().PullUp(pkt.Data().Size())
	if !ok {
		e.engine.Stats.InHdrError.Add(1)
		return inDrop
	}
	fi, isFrag, err := xfrm.ParseFragment(b)
	if err != nil {
		// Never let through what we cannot classify.
		e.engine.Stats.InHdrError.Add(1)
		return inDrop
	}
	if isFrag {
		if e.fwd != nil && !xfrm.ForwardsReassembled(b) {
			if _, dst, ok := ipAddrs(b); ok && !e.fwd.isLocal(dst) {
				// An IPv6 fragment to forward: checked and
				// forwarded as it is (classifyForward).
				return e.classify(b, false)
			}
		}
		e.reassemble(b, &fi)
		return inConsumed
	}
	return e.classify(b, pkt.RXChecksumValidated)
}

// classify runs the inbound check on a whole datagram b. csumOK says the
// link verified its transport checksum (RX checksum offload).
func (e *Endpoint) classify(b []byte, csumOK bool) inboundVerdict {
	var f xfrm.Flow
	l4off, err := xfrm.ParseFlow(b, &f)
	if err != nil {
		e.engine.Stats.InHdrError.Add(1)
		return inDrop
	}
	if e.fwd != nil && !e.fwd.isLocal(f.Dst) {
		return e.classifyForward(b, l4off, &f)
	}
	if f.Proto == xfrm.ProtoUDP && !f.Opaque && e.engine.SAD.IsEncapPort(f.Dst, f.DstPort) {
		// RFC 3948 §2.2: ESP, a keepalive or IKE (see encapInput).
		if v, handled := e.encapInput(b, l4off, csumOK); handled {
			return v
		}
	}
	switch xfrm.Proto(f.Proto) {
	case xfrm.ProtoESP, xfrm.ProtoAH, xfrm.ProtoIPComp:
		e.Stats.InIPsec.Add(1)
		if e.fastInput(b, xfrm.Proto(f.Proto), &f) {
			return inConsumed
		}
		return inPass
	}
	if !e.engine.CheckInbound(&f, nil) {
		return inDrop
	}
	if xfrm.IsICMPError(&f) && !e.engine.CheckInboundICMPError(b, l4off, nil) {
		return inDrop
	}
	e.notePMTU(b, &f)
	e.Stats.InChecked.Add(1)
	return inPass
}

// reassemble adds a cleartext fragment to the engine's reassembler and,
// when it completes a datagram, classifies the datagram and hands it to the
// stack whole.
func (e *Endpoint) reassemble(b []byte, fi *xfrm.FragInfo) {
	e.Stats.InFragments.Add(1)
	a := allocPool.Get().(*viewAlloc)
	defer allocPool.Put(a)
	whole := e.engine.Reasm.Add(b, fi, nil, a)
	if whole == nil {
		a.release()
		return
	}
	v := a.take()
	if _, again, err := xfrm.ParseFragment(whole); again || err != nil {
		// A fragment inside a fragment: nothing sends that.
		e.engine.Reasm.Stats.ReasmFails.Add(1)
		v.Release()
		return
	}
	switch e.classify(whole, false) {
	case inPass:
		e.deliver(v)
		return
	case inDrop:
		e.Stats.InDropped.Add(1)
	}
	v.Release()
}

// fastInput decapsulates a whole IPsec packet whose IPsec header directly
// follows a valid IP header (no IPv6 extension headers, no fragment) and
// whose SA we hold. It reports false to leave the packet to the IP layer.
func (e *Endpoint) fastInput(b []byte, proto xfrm.Proto, f *xfrm.Flow) bool {
	var hlen int
	switch b[0] >> 4 {
	case 4:
		h := header.IPv4(b)
		hlen = int(h.HeaderLength())
		if !h.IsValid(len(b)) || h.More() || h.FragmentOffset() != 0 || h.CalculateChecksum() != 0xffff {
			return false
		}
		b = b[:h.TotalLength()] // trim link padding
	case 6:
		h := header.IPv6(b)
		hlen = header.IPv6MinimumSize
		if !h.IsValid(len(b)) || h.NextHeader() != uint8(proto) {
			return false
		}
		b = b[:hlen+int(h.PayloadLength())]
	default:
		return false
	}
	spi, ok := xfrm.PacketSPI(proto, b[hlen:])
	if !ok || e.engine.SAD.Lookup(f.Dst, proto, spi) == nil {
		// Truncated or not ours: the IP layer decides (forwarding, or
		// the handler counts XfrmInHdrError or XfrmInNoStates).
		return false
	}
	a := allocPool.Get().(*viewAlloc)
	defer allocPool.Put(a)
	if out := e.engine.Input(b[:hlen], proto, b[hlen:], a); out == nil {
		a.release()
		return true
	}
	e.reinject(a.take())
	return true
}

// reinject gives a decapsulated IP packet back to the stack above, past
// the inbound check (the engine has checked it against the SAs used).
func (e *Endpoint) reinject(ip *buffer.View) {
	if !e.forwardIn(ip) {
		return
	}
	e.Stats.Reinjected.Add(1)
	e.deliver(ip)
}

// deliver hands a whole datagram that passed the inbound check to the
// stack, which takes ip.
func (e *Endpoint) deliver(ip *buffer.View) {
	d := e.upper()
	if d == nil {
		ip.Release()
		return
	}
	proto := header.IPv6ProtocolNumber
	if ip.AsSlice()[0]>>4 == 4 {
		proto = header.IPv4ProtocolNumber
	}
	p := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(ip)})
	defer p.DecRef()
	d.DeliverNetworkPacket(proto, p)
}
