// Package stack glues the xfrm engine into a gVisor netstack: a link
// endpoint wrapper that is the output hook (the paper's "stackable
// destination") and the inbound cleartext check, ESP/AH/IPComp registered as
// upper-layer protocols whose handler decapsulates and re-injects, and
// fragmentation after IPsec.
package stack

import (
	"io"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"

	"github.com/ipsecstack/ipsecstack/link/frame"
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
	// OutGSOPackets counts the TCP packets of the stack's segmentation
	// offload that passed outputGSO (every packet of a TCP connection
	// since SupportedGSO); OutGSOSegments the segments cut out of those
	// that were larger than one segment.
	OutGSOPackets  atomic.Uint64
	OutGSOSegments atomic.Uint64
	// OutFrames counts the segments sent as frames built in the
	// wrapper's own buffers, to a link that takes them (outputRaw):
	// sealed in place, never a gVisor packet.
	OutFrames atomic.Uint64
}

// Endpoint wraps a link endpoint with Ethernet framing and runs every
// outbound IP packet through the xfrm engine. It must be the endpoint the
// NIC is created on.
type Endpoint struct {
	nested.Endpoint
	lower stack.LinkEndpoint
	// frames is lower as a frame.Writer, when it is one: outputGSO then
	// builds, seals and frames segments in buffers of its own.
	frames frame.Writer
	engine *xfrm.Engine
	// noGSO turns segmentation offload (SupportedGSO) off; set before
	// the NIC is created.
	noGSO bool

	// Stats counts packets by fate.
	Stats LinkStats

	// dispatcher is the NIC's, for re-injection: read per decapsulated
	// packet, so an atomic load rather than a read lock, whose shared
	// counter every core's packets would write.
	dispatcher atomic.Pointer[dispatcherRef]
	wireMTU    atomic.Uint32

	fragID atomic.Uint32

	// sealMu and sendMu keep every SA's packets on the wire in the order
	// of their sequence numbers (see WritePackets): a writer seals under
	// sealMu and takes sendMu before it lets sealMu go, so writers reach
	// the link in the order they sealed, while one writer's hand-off to
	// the link may overlap the next writer's sealing.
	sealMu sync.Mutex
	sendMu sync.Mutex

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
	e.frames, _ = lower.(frame.Writer)
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

// GSOMaxSize is the largest TCP packet the stack may hand the wrapper to
// be cut into segments (outputGSO): an IPv4 packet of at most 65535
// bytes, as gVisor's TCP sends GSOMaxSize minus its 61-byte allowance for
// a full TCP header as payload.
const GSOMaxSize = 0xffff - header.IPv4MinimumSize

// GSOMaxSize implements stack.GSOEndpoint; see SupportedGSO.
func (e *Endpoint) GSOMaxSize() uint32 { return GSOMaxSize }

// SupportedGSO reports segmentation offload of the host kind: the stack's
// TCP hands us packets of up to GSOMaxSize with the segment size
// (GSO.MSS) and leaves the TCP checksum to us, and outputGSO cuts them
// into segments, checksums and seals each. Linux's esp4_offload works
// the same way (segment, then encrypt each segment). TCP, IP and the
// queue then handle one packet where they handled dozens, which was most
// of the sender's CPU on a real link. gVisor's own GSO kind
// (GVisorGSOSupported) only saves TCP's bookkeeping: its TCP still cuts
// the segments itself and sends each through IP on its own.
//
// Every segment is whole and checksummed before the engine sees it, so
// the policy decision, the sealing and the fragmentation after IPsec are
// those of a segment TCP sent itself.
//
// It is on unless Config.NoGSO turns it off. It was off for a while
// because the strongSwan interop matrix reported whole GSO batches whose
// ICVs tshark did not verify; none was wrong on the wire (every packet of
// such a capture verifies with an independent AES-GCM, and
// TestGSOICVsUnderLoad checks it under load): tshark had left those
// frames unchecked, its TCP desegmentation of retransmissions cut at
// other boundaries having aborted the ESP dissector first.
func (e *Endpoint) SupportedGSO() stack.SupportedGSO {
	if !e.noGSO {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

// dispatcherRef boxes a stack.NetworkDispatcher for atomic.Pointer.
type dispatcherRef struct{ d stack.NetworkDispatcher }

// Attach keeps the NIC's dispatcher for re-injection.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	e.dispatcher.Store(&dispatcherRef{d})
	e.Endpoint.Attach(d)
}

func (e *Endpoint) upper() stack.NetworkDispatcher {
	if r := e.dispatcher.Load(); r != nil {
		return r.d
	}
	return nil
}

// viewAlloc hands the engine pooled gVisor views and remembers the last.
// As an xfrm.Emitter it keeps the packets of a tunnel that carries one
// packet in pieces. As an xfrm.InPlaceAllocator it offers the engine's
// input path the received packet, rx, when the glue set it (see
// inPlaceBuffer).
type viewAlloc struct {
	views   []*buffer.View
	emitted []*buffer.View
	rx      []byte
}

// InPlace implements xfrm.InPlaceAllocator.
func (a *viewAlloc) InPlace() []byte { return a.rx }

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
//
// ESP and AH sequence numbers are taken when a packet is sealed, and a
// receiver's replay window (32 packets by default on Linux and in
// strongSwan) drops what arrives more than a window behind the highest
// number it has seen (XfrmInStateSeqError). So the packets of one SA must
// reach the link in the order they were sealed. Without a transmit queue
// (Config.TxQueue) several goroutines write here at once, and a writer
// that sealed a batch and was then held up (preempted, a slow link write)
// let the others' later numbers pass it: tens of packets late. Writers
// therefore seal under sealMu and hand over to the link under sendMu,
// taken before sealMu is released, which orders the hand-offs as the
// sealing was ordered (Linux gets the same from xfrm_output taking the
// state lock to assign the number and the qdisc keeping its order). The
// cost is that writers without a queue seal one at a time; with a queue
// there is one writer anyway.
//
// To a link that takes frames (frame.Writer: fdlink's own writer, memlink)
// the packets go as one ordered list of frames, the TCP segments among
// them built, sealed and framed in the wrapper's buffers (outputRaw).
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	out := outQueuePool.Get().(*outQueue)
	defer func() {
		out.reset() // our references; the link took its own
		outQueuePool.Put(out)
	}()
	fw := e.frames
	out.raw = fw != nil && fw.CanWriteFrames()
	n := 0
	e.sealMu.Lock()
	for _, pkt := range pkts.AsSlice() {
		n++
		switch pkt.NetworkProtocolNumber {
		case header.IPv4ProtocolNumber, header.IPv6ProtocolNumber:
		default:
			// ARP and other non-IP frames carry no IP flow.
			pkt.IncRef()
			out.push(pkt)
			continue
		}
		e.output(pkt, out)
	}
	if out.len() == 0 {
		e.sealMu.Unlock()
		return n, nil
	}
	e.sendMu.Lock()
	e.sealMu.Unlock()
	var sent int
	var err tcpip.Error
	if out.raw {
		sent, err = fw.WriteFrames(out.frames)
	} else {
		sent, err = e.lower.WritePackets(out.pkts)
	}
	e.sendMu.Unlock()
	if err != nil {
		e.Stats.OutLinkDropped.Add(uint64(out.len() - sent))
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

func (e *Endpoint) output(pkt *stack.PacketBuffer, out *outQueue) {
	e.watchConfig()
	if t := pkt.GSOOptions.Type; (t == stack.GSOTCPv4 || t == stack.GSOTCPv6) && !pkt.NetworkPacketInfo.IsForwardedPacket {
		e.outputGSO(pkt, out)
		return
	}
	linkLen := len(pkt.LinkHeader().Slice())
	if pkt.NetworkPacketInfo.IsForwardedPacket && e.fwd != nil {
		// A forwarded packet's buffer is ours alone (forward4 built it
		// on the received one, gVisor's IPv6 forwarding on a copy): its
		// IP packet, when in one piece, is read and changed where it is.
		if ip := ipInPlace(pkt, linkLen); ip != nil {
			e.forwardOut(pkt, ip, out)
			return
		}
	}
	v := pkt.ToView()
	defer v.Release()
	ip := v.AsSlice()[linkLen:]
	if pkt.NetworkPacketInfo.IsForwardedPacket && e.fwd != nil {
		e.forwardOut(pkt, ip, out)
		return
	}
	e.outputIP(pkt, ip, nil, out)
}

// ipInPlace returns pkt's IP packet, past its link header of linkLen
// bytes, as a slice of its buffer when it lies in one view; else nil.
func ipInPlace(pkt *stack.PacketBuffer, linkLen int) []byte {
	n := pkt.Size() - linkLen
	v, off := viewAt(pkt, pkt.AvailableHeaderBytes()+linkLen, n)
	if v == nil || n <= 0 {
		return nil
	}
	return v.AsSlice()[off : off+n]
}

// viewAt returns the view of pkt's buffer that holds the n bytes at
// offset off of the buffer, and their offset in it; nil when they do not
// lie in one view.
func viewAt(pkt *stack.PacketBuffer, off, n int) (*buffer.View, int) {
	views, _ := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		if off >= v.Size() {
			off -= v.Size()
			continue
		}
		if v.Size()-off < n {
			return nil, 0
		}
		return v, off
	}
	return nil, 0
}

// outputIP runs the IP packet ip of pkt through the engine and queues
// what is to be sent. ip is a private copy: the caller's (seg nil), or
// owned by seg, which a packet sent in clear takes over (outputIP then
// reports true; otherwise seg stays the caller's).
func (e *Endpoint) outputIP(pkt *stack.PacketBuffer, ip []byte, seg *buffer.View, out *outQueue) (took bool) {
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
		return false
	case xfrm.VerdictPass:
		a.release()
		e.Stats.OutPassed.Add(1)
		e.sendWire(pkt, ip, ip, seg, out)
		return seg != nil
	}
	e.Stats.OutProtected.Add(1)
	for _, v := range a.emitted {
		e.sendWire(pkt, ip, v.AsSlice(), v, out)
	}
	clear(a.emitted)
	a.emitted = a.emitted[:0]
	pv := a.take()
	e.sendWire(pkt, ip, pv.AsSlice(), pv, out)
	return false
}

// outputGSO cuts a TCP packet of the stack's (see SupportedGSO) into
// segments of at most GSO.MSS payload bytes, as Linux's tcp_gso_segment
// does: every segment gets the headers with its own sequence number, IP
// length (and IPv4 ID and header checksum), and TCP checksum; CWR stays
// on the first segment only, FIN and PSH on the last only. Each segment
// then takes the path of a packet TCP sent itself (outputIP). The stack
// left the TCP checksum to us (GSO.NeedsCsum), also for packets that need
// no cutting, so every packet of a GSO connection comes here.
//
// The payload is copied once, from the stack's buffer into the segment.
// To a link that takes frames each segment is built in a frame buffer of
// its own, sealed there and handed to the link as a frame (outputRaw).
// Otherwise a segment that is sealed is built in one scratch view reused
// for the next, and a segment sent in clear is handed to the link.
func (e *Endpoint) outputGSO(pkt *stack.PacketBuffer, out *outQueue) {
	nh, th := pkt.NetworkHeader().Slice(), pkt.TransportHeader().Slice()
	v4 := pkt.GSOOptions.Type == stack.GSOTCPv4
	if len(th) < header.TCPMinimumSize || int(header.TCP(th).DataOffset()) != len(th) ||
		(v4 && len(nh) < header.IPv4MinimumSize) || (!v4 && len(nh) < header.IPv6MinimumSize) {
		// Not what gVisor's TCP builds; never guess.
		e.engine.Stats.OutError.Add(1)
		e.Stats.OutDropped.Add(1)
		return
	}
	payload := pkt.Data().ToBuffer()
	defer payload.Release()
	total := int(payload.Size())
	mss := int(pkt.GSOOptions.MSS)
	if mss <= 0 || mss > total {
		mss = total
	}
	hl := len(nh) + len(th)
	if hl+mss > 0xffff+header.IPv6MinimumSize {
		e.engine.Stats.OutError.Add(1)
		e.Stats.OutDropped.Add(1)
		return
	}
	c := gsoCut{nh: nh, th: th, payload: &payload, v4: v4, mss: mss, total: total, nseg: 1}
	if total > 0 {
		c.nseg = (total + mss - 1) / mss
	}
	e.Stats.OutGSOPackets.Add(1)
	c.seq0 = header.TCP(th).SequenceNumber()
	if v4 {
		h := header.IPv4(nh)
		c.id0, c.src, c.dst = h.ID(), h.SourceAddress(), h.DestinationAddress()
	} else {
		h := header.IPv6(nh)
		c.src, c.dst = h.SourceAddress(), h.DestinationAddress()
	}
	// Segments are built, sealed and framed in buffers of ours when the
	// link takes frames (outputRaw), unless a segment will be fragmented
	// whatever IPsec does (outputIP clears its DF first).
	raw := out.raw && hl+mss <= min(int(e.WireMTU()), maxRawSegment)
	if ll := len(pkt.LinkHeader().Slice()); ll != 0 && ll != header.EthernetMinimumSize {
		raw = false
	}
	var scratch *buffer.View
	defer func() {
		if scratch != nil {
			scratch.Release()
		}
	}()
	for i := 0; i < c.nseg; i++ {
		n := c.segLen(i)
		if c.nseg > 1 {
			e.Stats.OutGSOSegments.Add(1)
		}
		if raw {
			fb := getFrameBuf(frameHeadroom + hl + n + frameTailroom)
			b := fb.b[frameHeadroom : frameHeadroom+hl+n]
			if !c.segment(b, i) {
				fb.free()
				e.engine.Stats.OutError.Add(1)
				e.Stats.OutDropped.Add(1)
				return
			}
			e.outputRaw(pkt, fb, b, out, &c, i)
			continue
		}
		if scratch == nil {
			scratch = buffer.NewViewSize(hl + mss)
		}
		b := scratch.AsSlice()[:hl+n]
		if !c.segment(b, i) {
			e.engine.Stats.OutError.Add(1)
			e.Stats.OutDropped.Add(1)
			return
		}
		if i == c.nseg-1 || n < mss {
			scratch.CapLength(hl + n)
		}
		if e.outputIP(pkt, b, scratch, out) {
			scratch = nil // the link has it
		}
	}
}

// gsoCut cuts the segments of one GSO packet (see outputGSO).
type gsoCut struct {
	nh, th     []byte // the packet's IP and TCP headers
	payload    *buffer.Buffer
	v4         bool
	mss, total int // segment size, payload bytes
	nseg       int
	seq0       uint32
	id0        uint16
	src, dst   tcpip.Address
}

// segLen is the payload length of segment i.
func (c *gsoCut) segLen(i int) int { return min(c.mss, c.total-i*c.mss) }

// segment builds segment i into b, which is exactly its length: the
// headers with its sequence number, IP length (and IPv4 ID and header
// checksum), flags and TCP checksum, then its payload. It fails only if
// the payload cannot be read.
func (c *gsoCut) segment(b []byte, i int) bool {
	off, n := i*c.mss, c.segLen(i)
	hl := len(c.nh) + len(c.th)
	copy(b, c.nh)
	copy(b[len(c.nh):], c.th)
	if n > 0 {
		if _, err := c.payload.ReadAt(b[hl:], int64(off)); err != nil && err != io.EOF {
			return false
		}
	}
	if c.v4 {
		h := header.IPv4(b)
		h.SetTotalLength(uint16(hl + n))
		h.SetID(c.id0 + uint16(i))
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
	} else {
		header.IPv6(b).SetPayloadLength(uint16(hl + n - header.IPv6MinimumSize))
	}
	tcp := header.TCP(b[len(c.nh):])
	tcp.SetSequenceNumber(c.seq0 + uint32(off))
	flags := tcp.Flags()
	if i > 0 {
		flags &^= header.TCPFlagCwr
	}
	if i < c.nseg-1 {
		flags &^= header.TCPFlagFin | header.TCPFlagPsh
	}
	tcp.SetFlags(uint8(flags))
	tcp.SetChecksum(0)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, c.src, c.dst, uint16(len(c.th)+n))
	tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
	return true
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
func (e *Endpoint) sendWire(orig *stack.PacketBuffer, inner, wire []byte, view *buffer.View, out *outQueue) {
	mtu := e.pathMTU(wire)
	if len(wire) <= mtu {
		if view == nil {
			orig.IncRef()
			out.push(orig)
			return
		}
		out.push(e.newPacket(orig, view))
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
func (e *Endpoint) fragmentAndQueue(orig *stack.PacketBuffer, ip []byte, view *buffer.View, mtu int, out *outQueue) {
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
		out.push(e.newPacket(orig, f))
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
	if d := e.upper(); d != nil {
		e.deliverUp(d, proto, pkt, nil)
	}
}

// deliverUp is DeliverNetworkPacket to the stack's dispatcher d, within
// a gateway's batch rx (nil for none).
func (e *Endpoint) deliverUp(d stack.NetworkDispatcher, proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer, rx *rxBatch) {
	if proto == header.IPv4ProtocolNumber || proto == header.IPv6ProtocolNumber {
		switch e.inbound(pkt, rx) {
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
func (e *Endpoint) inbound(pkt *stack.PacketBuffer, rx *rxBatch) inboundVerdict {
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
				return e.classify(b, nil, rx, false)
			}
		}
		e.reassemble(b, &fi, rx)
		return inConsumed
	}
	return e.classify(b, pkt, rx, pkt.RXChecksumValidated)
}

// classify runs the inbound check on a whole datagram b. csumOK says the
// link verified its transport checksum (RX checksum offload). pkt is the
// received packet whose data b is, from its first byte, or nil when b is
// a buffer of our own (a reassembled datagram): see inPlaceBuffer.
func (e *Endpoint) classify(b []byte, pkt *stack.PacketBuffer, rx *rxBatch, csumOK bool) inboundVerdict {
	var f xfrm.Flow
	l4off, err := xfrm.ParseFlow(b, &f)
	if err != nil {
		e.engine.Stats.InHdrError.Add(1)
		return inDrop
	}
	if e.fwd != nil && !e.fwd.isLocal(f.Dst) {
		return e.classifyForward(b, pkt, l4off, &f, rx)
	}
	if f.Proto == xfrm.ProtoUDP && !f.Opaque && e.engine.SAD.IsEncapPort(f.Dst, f.DstPort) {
		// RFC 3948 §2.2: ESP, a keepalive or IKE (see encapInput).
		if v, handled := e.encapInput(b, pkt, l4off, rx, csumOK); handled {
			return v
		}
	}
	switch xfrm.Proto(f.Proto) {
	case xfrm.ProtoESP, xfrm.ProtoAH, xfrm.ProtoIPComp:
		e.Stats.InIPsec.Add(1)
		if e.fastInput(b, pkt, xfrm.Proto(f.Proto), rx) {
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
func (e *Endpoint) reassemble(b []byte, fi *xfrm.FragInfo, rx *rxBatch) {
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
	switch e.classify(whole, nil, rx, false) {
	case inPass:
		e.deliver(v, rx)
		return
	case inDrop:
		e.Stats.InDropped.Add(1)
	}
	v.Release()
}

// fastInput decapsulates a whole IPsec packet whose IPsec header directly
// follows a valid IP header (no IPv6 extension headers, no fragment) and
// whose SA we hold (pkt as for classify). It reports false to leave the
// packet to the IP layer.
func (e *Endpoint) fastInput(b []byte, pkt *stack.PacketBuffer, proto xfrm.Proto, rx *rxBatch) bool {
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
	var a *viewAlloc
	if rx != nil {
		a = &rx.alloc
	} else {
		a = allocPool.Get().(*viewAlloc)
		defer allocPool.Put(a)
	}
	a.rx = e.inPlaceBuffer(b, pkt)
	out, ours := e.engine.TryInput(b[:hlen], proto, b[hlen:], a)
	a.rx = nil
	if !ours {
		// Truncated or not ours: the IP layer decides (forwarding, or
		// the handler counts XfrmInHdrError or XfrmInNoStates).
		return false
	}
	if out == nil {
		a.release()
		return true
	}
	e.reinjectResult(out, b, pkt, a, rx)
	return true
}

// inPlaceBuffer returns b, the data of the received packet pkt from its
// first byte, for the engine to decapsulate in (xfrm.InPlaceAllocator),
// or nil: when pkt is nil, or on a gateway, whose forwarding path
// (forwardIn) takes the packet as a view of its own: decrypted into a
// new view, it is that view's alone, where a view of the received buffer
// would share it with pkt until the batch ends, and gVisor's first
// PullUp of the forwarded packet would copy it (copy-on-write). The
// engine writes into b only once the packet is authenticated, and b is
// ours alone:
// inbound's PullUp gave us the received buffer unshared (gVisor's PullUp
// copies a chunk another view shares), and the packet is consumed here
// whatever the engine decides. Decapsulating in place saves taking,
// zeroing and filling a new view per packet and a new PacketBuffer to
// carry it: a transport-mode packet's payload moves up by the ESP header
// and IV behind its header, which stays; a tunnel's inner packet moves to
// the start.
func (e *Endpoint) inPlaceBuffer(b []byte, pkt *stack.PacketBuffer) []byte {
	if pkt == nil || e.fwd != nil {
		return nil
	}
	return b
}

// reinjectResult re-injects out, the packet the engine returned for the
// received packet pkt whose data is b (a's InPlace buffer, or nil): pkt
// itself when out was built in b, else the last view taken from a.
func (e *Endpoint) reinjectResult(out, b []byte, pkt *stack.PacketBuffer, a *viewAlloc, rx *rxBatch) {
	if pkt != nil && len(b) > 0 && len(out) > 0 && &out[0] == &b[0] {
		a.release()
		e.reinjectPacket(pkt, out, rx)
		return
	}
	e.reinject(a.take(), rx)
}

// reinjectPacket is reinject for a packet the engine decapsulated in
// place: pkt's data now starts with the IP packet ip, which it is cut to
// (the ESP trailer and ICV, and any link padding, stay behind it, outside
// the packet), and what held for the packet received no longer does: its
// protocol may differ (a tunnel), and the link verified no checksum of
// the inner packet (the NIC sets RXChecksumValidated again from its
// capabilities, as for any packet delivered). Not for gateways
// (reinjectResult), so there is no forwarding to decide.
func (e *Endpoint) reinjectPacket(pkt *stack.PacketBuffer, ip []byte, rx *rxBatch) {
	pkt.Data().CapLength(len(ip))
	proto := header.IPv6ProtocolNumber
	if ip[0]>>4 == 4 {
		proto = header.IPv4ProtocolNumber
	}
	pkt.NetworkProtocolNumber = proto
	pkt.RXChecksumValidated = false
	e.Stats.Reinjected.Add(1)
	d := e.upper()
	if d == nil {
		return
	}
	if rx != nil {
		rx.enqueue(pkt)
		return
	}
	d.DeliverNetworkPacket(proto, pkt)
}

// reinject gives a decapsulated IP packet back to the stack above, past
// the inbound check (the engine has checked it against the SAs used).
func (e *Endpoint) reinject(ip *buffer.View, rx *rxBatch) {
	if !e.forwardIn(ip, rx) {
		return
	}
	e.Stats.Reinjected.Add(1)
	e.deliver(ip, rx)
}

// deliver hands a whole datagram that passed the inbound check to the
// stack, which takes ip; within a batch (rx not nil), through the batch's
// GRO.
func (e *Endpoint) deliver(ip *buffer.View, rx *rxBatch) {
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
	if rx != nil {
		p.NetworkProtocolNumber = proto
		rx.enqueue(p)
		return
	}
	d.DeliverNetworkPacket(proto, p)
}

// enqueue gives pkt, an IP packet that passed the inbound check, to the
// batch's GRO, trimmed to its IP length first: GRO takes everything past
// the TCP header as payload, so an Ethernet frame's padding (or a
// tunnel's TFC padding, RFC 4303 §2.7) would become data of a merged
// segment.
func (rx *rxBatch) enqueue(pkt *stack.PacketBuffer) {
	if rx.direct {
		rx.up.DeliverNetworkPacket(pkt.NetworkProtocolNumber, pkt)
		return
	}
	var n int
	switch pkt.NetworkProtocolNumber {
	case header.IPv4ProtocolNumber:
		// Only a header with a valid checksum goes in (see
		// rxBatch.DeliverNetworkPacket); the IP layer counts the others.
		if h, ok := pkt.Data().PullUp(header.IPv4MinimumSize); ok {
			if hl := int(header.IPv4(h).HeaderLength()); hl >= header.IPv4MinimumSize {
				if h, ok := pkt.Data().PullUp(hl); ok && header.IPv4(h).IsChecksumValid() {
					n = int(header.IPv4(h).TotalLength())
				}
			}
		}
	case header.IPv6ProtocolNumber:
		// Only TCP right after the fixed header (what
		// rxBatch.DeliverNetworkPacket knows to fix).
		if h, ok := pkt.Data().PullUp(header.IPv6MinimumSize); ok && header.IPv6(h).PayloadLength() != 0 &&
			header.IPv6(h).TransportProtocol() == header.TCPProtocolNumber {
			n = header.IPv6MinimumSize + int(header.IPv6(h).PayloadLength())
		}
	}
	if n == 0 || n > pkt.Data().Size() {
		// Not a packet GRO may touch: up as it is, and the IP layer
		// decides.
		rx.up.DeliverNetworkPacket(pkt.NetworkProtocolNumber, pkt)
		return
	}
	if n < pkt.Data().Size() {
		pkt.Data().CapLength(n)
	}
	if !pkt.RXChecksumValidated && dataOffset(pkt) != 0 {
		// gVisor's GRO checks a TCP checksum with
		// PacketData.ChecksumAtOffset, whose offset counts from the
		// start of the packet's buffer, giving it an offset into the
		// data: for a packet whose data does not start its buffer
		// (every frame from the link, its link header consumed, and a
		// packet decapsulated in place) it sums the wrong bytes, the
		// check fails and the packet goes up unmerged. So check here,
		// with the right offset, and tell GRO the result
		// (RXChecksumValidated); a segment that fails goes up past
		// GRO, for TCP to count and drop, so that no chance pass of
		// GRO's misplaced check can merge it.
		if tcp, ok := tcpChecksumOK(pkt); tcp && !ok {
			rx.up.DeliverNetworkPacket(pkt.NetworkProtocolNumber, pkt)
			return
		} else if tcp {
			pkt.RXChecksumValidated = true
		}
	}

	rx.gro.Enqueue(pkt)
}

// dataOffset is where pkt's data starts in its buffer, the origin of
// PacketData.ChecksumAtOffset: the headers reserved, pushed or consumed
// before it (a received frame's link header).
func dataOffset(pkt *stack.PacketBuffer) int {
	return pkt.AvailableHeaderBytes() + pkt.HeaderSize()
}

// dataView returns a view of the first n bytes of pkt's data that shares
// pkt's buffer (no copy), or nil when they do not lie in one of its
// views. Writing through it writes pkt's buffer: for a packet the
// endpoint consumes, whose buffer is then the view's alone.
func dataView(pkt *stack.PacketBuffer, n int) *buffer.View {
	v, off := viewAt(pkt, dataOffset(pkt), n)
	if v == nil {
		return nil
	}
	c := v.Clone()
	c.TrimFront(off)
	c.CapLength(n)
	return c
}

// ownView returns b, the first bytes of the data of pkt (which the caller
// consumes; pkt may be nil), as a view of its own: pkt's buffer itself
// when it can (dataView), else a copy. A packet whose data starts its
// buffer (no link header: a TUN's) then lets go of the buffer, which is
// the view's alone: shared, gVisor's first PullUp of the forwarded packet
// would copy it (copy-on-write), as it does for a frame whose link header
// pkt keeps.
func ownView(pkt *stack.PacketBuffer, b []byte) *buffer.View {
	if pkt != nil {
		if v := dataView(pkt, len(b)); v != nil && len(b) > 0 && &v.AsSlice()[0] == &b[0] {
			if dataOffset(pkt) == 0 {
				pkt.Data().CapLength(0)
			}
			return v
		} else if v != nil {
			v.Release()
		}
	}
	v := buffer.NewViewSize(len(b))
	copy(v.AsSlice(), b)
	return v
}

// tcpChecksumOK checks the TCP checksum of pkt, an IP packet in its data
// cut to its IP length, when it has the shape GRO coalesces: TCP right
// after an IPv4 header without options that is no fragment, or right
// after the fixed IPv6 header. tcp is false for any other packet (GRO
// passes those up as they are).
func tcpChecksumOK(pkt *stack.PacketBuffer) (tcp, ok bool) {
	var l4, l4len int
	var src, dst tcpip.Address
	switch pkt.NetworkProtocolNumber {
	case header.IPv4ProtocolNumber:
		b, ok := pkt.Data().PullUp(header.IPv4MinimumSize)
		if !ok {
			return false, false
		}
		h := header.IPv4(b)
		if h.HeaderLength() != header.IPv4MinimumSize || h.TransportProtocol() != header.TCPProtocolNumber || h.More() || h.FragmentOffset() != 0 {
			return false, false
		}
		l4, l4len = header.IPv4MinimumSize, int(h.TotalLength())-header.IPv4MinimumSize
		src, dst = h.SourceAddress(), h.DestinationAddress()
	case header.IPv6ProtocolNumber:
		b, ok := pkt.Data().PullUp(header.IPv6MinimumSize)
		if !ok {
			return false, false
		}
		h := header.IPv6(b)
		if h.TransportProtocol() != header.TCPProtocolNumber {
			return false, false
		}
		l4, l4len = header.IPv6MinimumSize, int(h.PayloadLength())
		src, dst = h.SourceAddress(), h.DestinationAddress()
	default:
		return false, false
	}
	if l4len < header.TCPMinimumSize || l4+l4len != pkt.Data().Size() {
		return false, false
	}
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(l4len))
	xsum = checksum.Combine(xsum, pkt.Data().ChecksumAtOffset(dataOffset(pkt)+l4))
	return true, xsum == 0xffff
}

// rxBatch is the state of one batch of received frames
// (DeliverNetworkPackets): the GRO that coalesces the TCP segments
// delivered from it, and the stack's dispatcher it delivers to, through
// rxBatch's own DeliverNetworkPacket.
type rxBatch struct {
	gro gro.GRO
	up  stack.NetworkDispatcher
	// fixTCP: the link below has no receive checksum offload, so the
	// NIC has TCP check every checksum (see DeliverNetworkPacket).
	fixTCP bool

	// direct: a gateway's batch, whose packets for the stack go up as
	// they are, without GRO; fwd holds the IPv4 packets it forwards,
	// written out at the end of the batch (flushForwards).
	direct bool
	fwd    []*buffer.View

	// alloc serves the engine while it decapsulates the batch's packets,
	// one at a time (fastInput), in place of a trip to allocPool per
	// packet; it is left empty after each.
	alloc viewAlloc
}

var rxBatchPool = sync.Pool{New: func() any {
	b := &rxBatch{alloc: viewAlloc{views: make([]*buffer.View, 0, 4)}}
	b.gro.Init(true)
	b.gro.Dispatcher = b
	return b
}}

// DeliverNetworkPacket implements stack.NetworkDispatcher for the GRO: it
// gives the stack what GRO lets through, with the checksums GRO left
// stale made right. GRO updates a merged packet's IP length but neither
// the IPv4 header checksum nor the TCP checksum: it marks the packet
// RXChecksumValidated instead, and the NIC overwrites that mark with the
// link's capability. So the IPv4 header checksum is recomputed (every
// IPv4 packet that entered GRO had a valid one: enqueue), and, on a link
// without receive checksum offload (whose packets TCP checks again), so
// is the TCP checksum of every segment GRO validated (RXChecksumValidated)
// and no other, so that a corrupt segment GRO let through untouched
// still fails TCP's check.
func (rx *rxBatch) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	var l4, l4len int
	var src, dst tcpip.Address
	switch proto {
	case header.IPv4ProtocolNumber:
		if b, ok := pkt.Data().PullUp(header.IPv4MinimumSize); ok {
			if hl := int(header.IPv4(b).HeaderLength()); hl >= header.IPv4MinimumSize {
				if b, ok := pkt.Data().PullUp(hl); ok {
					h := header.IPv4(b)
					h.SetChecksum(0)
					h.SetChecksum(^h.CalculateChecksum())
					if h.TransportProtocol() == header.TCPProtocolNumber && h.FragmentOffset() == 0 && !h.More() {
						l4, l4len = hl, int(h.TotalLength())-hl
						src, dst = h.SourceAddress(), h.DestinationAddress()
					}
				}
			}
		}
	case header.IPv6ProtocolNumber:
		if b, ok := pkt.Data().PullUp(header.IPv6MinimumSize); ok {
			if h := header.IPv6(b); h.TransportProtocol() == header.TCPProtocolNumber {
				l4, l4len = header.IPv6MinimumSize, int(h.PayloadLength())
				src, dst = h.SourceAddress(), h.DestinationAddress()
			}
		}
	}
	if rx.fixTCP && pkt.RXChecksumValidated && l4 > 0 && l4len >= header.TCPMinimumSize && l4+l4len <= pkt.Data().Size() {
		if b, ok := pkt.Data().PullUp(l4 + header.TCPMinimumSize); ok {
			tcp := header.TCP(b[l4:])
			tcp.SetChecksum(0)
			xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(l4len))
			xsum = checksum.Combine(xsum, pkt.Data().ChecksumAtOffset(dataOffset(pkt)+l4))
			tcp.SetChecksum(^xsum)
		}
	}

	rx.up.DeliverNetworkPacket(proto, pkt)
}

// DeliverLinkPacket implements stack.NetworkDispatcher.
func (rx *rxBatch) DeliverLinkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	rx.up.DeliverLinkPacket(proto, pkt)
}

// DeliverNetworkPackets implements fdlink.BatchDispatcher: the frames of
// one read from the link, each handled as DeliverNetworkPacket would, but
// with what goes up to the stack (decrypted packets and cleartext ones
// that passed the inbound check) coalesced by gVisor's GRO and flushed
// at the end of the batch. A bulk TCP flow's segments, decrypted one by
// one, then cross gVisor's IP and TCP as a few large segments (as Linux
// does with GRO, where the ESP packets themselves are coalesced before
// decryption and the inner segments after). GRO merges only in-order
// segments of one flow with the same flags, ACK and options, and checks
// each TCP checksum (a decrypted segment's is not yet checked) before it
// merges, so TCP sees exactly the bytes and order it would have seen.
func (e *Endpoint) DeliverNetworkPackets(pkts []*stack.PacketBuffer) {
	d := e.upper()
	if d == nil {
		return
	}
	if e.fwd != nil {
		// A gateway: what it forwards must leave as it came, never
		// merged with other packets (gVisor's own IPv6 forwarding
		// would find a merged packet too big for the next link), and
		// what it takes itself is the odd control packet: no GRO. The
		// IPv4 packets it forwards itself go out together at the end
		// of the batch (forward4).
		rx := rxBatchPool.Get().(*rxBatch)
		rx.up, rx.direct = d, true
		for _, pkt := range pkts {
			e.deliverUp(d, pkt.NetworkProtocolNumber, pkt, rx)
		}
		e.flushForwards(rx)
		rx.up, rx.direct = nil, false
		rxBatchPool.Put(rx)
		return
	}
	rx := rxBatchPool.Get().(*rxBatch)
	rx.up = d
	rx.fixTCP = e.lower.Capabilities()&stack.CapabilityRXChecksumOffload == 0
	for _, pkt := range pkts {
		proto := pkt.NetworkProtocolNumber
		if proto == header.IPv4ProtocolNumber || proto == header.IPv6ProtocolNumber {
			switch e.inbound(pkt, rx) {
			case inDrop:
				e.Stats.InDropped.Add(1)
				continue
			case inConsumed:
				continue
			}
			rx.enqueue(pkt)
			continue
		}
		d.DeliverNetworkPacket(proto, pkt)
	}
	rx.gro.Flush()
	rx.up = nil
	rxBatchPool.Put(rx)
}
