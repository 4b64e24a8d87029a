// Package memlink provides an in-memory Ethernet "wire" between two gVisor
// link endpoints, for tests and benchmarks.
//
// Unlike gVisor's link/pipe, it frames with Ethernet (so ARP and NDP run and
// an IPsec wrapper endpoint sees the same frames it would see on AF_PACKET or
// TAP), copies every frame (the two stacks never share buffers), and delivers
// asynchronously from per-endpoint goroutines, like a real wire: a stack that
// writes never re-enters the other stack, so two stacks cannot deadlock on
// each other's locks.
package memlink

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/frame"
)

// Direction says whether a frame seen by a tap was sent or received by the
// endpoint the tap is set on.
type Direction int

const (
	// Out is a frame written by the endpoint (after its Ethernet header was
	// added), seen before it is queued to the peer.
	Out Direction = iota + 1
	// In is a frame delivered to the endpoint, seen just before the stack
	// gets it.
	In
)

// String returns "out" or "in".
func (d Direction) String() string {
	switch d {
	case Out:
		return "out"
	case In:
		return "in"
	}
	return "unknown"
}

// Defaults used when Options leaves a field zero.
const (
	DefaultMTU         = 1500
	DefaultQueueLen    = 1024
	DefaultDispatchers = 1
)

// Options configures both ends of a pair.
type Options struct {
	// MTU is the IP MTU (frames may be MTU+14 bytes), as fdbased counts it.
	// Zero means DefaultMTU.
	MTU uint32
	// QueueLen is the capacity, in frames, of each delivery goroutine's
	// queue. A frame arriving at a full queue is dropped and counted, as a
	// NIC ring would. Zero means DefaultQueueLen.
	QueueLen int
	// Dispatchers is the number of delivery goroutines per endpoint. Frames
	// are spread by a hash of the IP addresses and the 4 bytes after the IP
	// header (ports, or the ESP SPI), as fdbased does, so one flow stays in
	// order on one goroutine. Zero means DefaultDispatchers.
	Dispatchers int
}

// Stats is a snapshot of one endpoint's frame counters.
type Stats struct {
	// Sent counts frames this endpoint put on the wire.
	Sent uint64
	// Delivered counts frames handed to this endpoint's dispatcher.
	Delivered uint64
	// Dropped counts frames for this endpoint that were lost: its queue was
	// full, or it was not attached, or it was closed.
	Dropped uint64
	// Filtered counts frames for this endpoint whose destination MAC was
	// neither its own nor broadcast/multicast (not counted in Dropped).
	Filtered uint64
	// Oversize counts frames this endpoint refused to send because they
	// exceeded MTU plus the Ethernet header: a real wire would lose them,
	// and a silent pass would hide MTU bugs in layers above.
	Oversize uint64
}

type counters struct {
	sent, delivered, dropped, filtered, oversize atomic.Uint64
}

// run is one attached period: its queues and the channel that stops its
// goroutines. It is replaced, never reused, so a stopped run's queues are
// never written again.
type run struct {
	queues  []chan *buffer.View
	stop    chan struct{}
	stopped bool // set under Endpoint.wmu when stop is closed
}

// Endpoint is one end of an in-memory Ethernet pair. It implements
// stack.LinkEndpoint.
type Endpoint struct {
	peer     *Endpoint
	queueLen int
	nworkers int
	seed     uint32

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher
	linkAddr   tcpip.LinkAddress
	mtu        uint32
	cur        *run
	closed     bool
	onClose    func()

	tap   atomic.Pointer[func(Direction, []byte)]
	stats counters

	// Worker bookkeeping for Wait. busy counts workers that are alive and
	// not inside DeliverNetworkPacket. Wait waits for busy to reach zero
	// rather than for the goroutines to exit: Stack.Wait calls Wait while
	// holding the stack lock, and a delivery in progress may need that
	// lock (TCP's RST reply calls FindRoute), so waiting for it would
	// deadlock. A worker that finds its run stopped after a delivery exits
	// without starting another, so once Wait returns no new delivery starts.
	wmu   sync.Mutex
	wcond *sync.Cond
	busy  int
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)

// NewPair returns the two ends of a wire with the given MACs and IP MTU, one
// delivery goroutine each.
func NewPair(macA, macB tcpip.LinkAddress, mtu uint32) (*Endpoint, *Endpoint) {
	return NewPairWithOptions(macA, macB, Options{MTU: mtu})
}

// NewPairWithOptions is NewPair with queue length and delivery goroutine
// count.
func NewPairWithOptions(macA, macB tcpip.LinkAddress, opts Options) (*Endpoint, *Endpoint) {
	if opts.MTU == 0 {
		opts.MTU = DefaultMTU
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = DefaultQueueLen
	}
	if opts.Dispatchers <= 0 {
		opts.Dispatchers = DefaultDispatchers
	}
	mk := func(mac tcpip.LinkAddress) *Endpoint {
		e := &Endpoint{
			queueLen: opts.QueueLen,
			nworkers: opts.Dispatchers,
			seed:     rand.Uint32(),
			linkAddr: mac,
			mtu:      opts.MTU,
		}
		e.wcond = sync.NewCond(&e.wmu)
		return e
	}
	a, b := mk(macA), mk(macB)
	a.peer, b.peer = b, a
	return a, b
}

// SetTap installs fn (nil removes it). fn is called synchronously with every
// frame this endpoint writes (Out) and every frame it delivers (In), from the
// writing goroutine or the delivery goroutine, so it must be safe for
// concurrent use and must neither keep nor modify frame. Safe to call while
// traffic flows.
func (e *Endpoint) SetTap(fn func(dir Direction, frame []byte)) {
	if fn == nil {
		e.tap.Store(nil)
		return
	}
	e.tap.Store(&fn)
}

// Stats returns a snapshot of the endpoint's counters.
func (e *Endpoint) Stats() Stats {
	return Stats{
		Sent:      e.stats.sent.Load(),
		Delivered: e.stats.delivered.Load(),
		Dropped:   e.stats.dropped.Load(),
		Filtered:  e.stats.filtered.Load(),
		Oversize:  e.stats.oversize.Load(),
	}
}

// Peer returns the other end of the wire.
func (e *Endpoint) Peer() *Endpoint { return e.peer }

// Attach implements stack.LinkEndpoint. A non-nil dispatcher starts the
// delivery goroutines; nil (the NIC being removed) stops them without
// waiting, because the NIC may hold stack locks that a delivery in progress
// needs.
func (e *Endpoint) Attach(dispatcher stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = dispatcher
	if dispatcher == nil || e.closed {
		e.stopLocked()
		return
	}
	if e.cur != nil {
		return
	}
	r := &run{queues: make([]chan *buffer.View, e.nworkers), stop: make(chan struct{})}
	e.wmu.Lock()
	e.busy += len(r.queues)
	e.wmu.Unlock()
	for i := range r.queues {
		r.queues[i] = make(chan *buffer.View, e.queueLen)
		go e.worker(r, r.queues[i])
	}
	e.cur = r
}

func (e *Endpoint) stopLocked() {
	if e.cur != nil {
		e.wmu.Lock()
		e.cur.stopped = true
		e.wmu.Unlock()
		close(e.cur.stop)
		e.cur = nil
	}
}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Close implements stack.LinkEndpoint: it stops the delivery goroutines,
// makes further writes fail and drops frames sent to it.
func (e *Endpoint) Close() {
	e.mu.Lock()
	e.closed = true
	e.stopLocked()
	fn := e.onClose
	e.onClose = nil
	e.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// Wait implements stack.LinkEndpoint. After Attach(nil) or Close it returns
// once no delivery goroutine can start another delivery: each has exited or
// is finishing its last one, after which it exits (see the busy field for
// why it does not wait for that last one). Before that it blocks.
func (e *Endpoint) Wait() {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	for e.busy > 0 {
		e.wcond.Wait()
	}
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *Endpoint) SetOnCloseAction(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onClose = fn
}

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.mtu
}

// SetMTU implements stack.LinkEndpoint.
func (e *Endpoint) SetMTU(mtu uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mtu = mtu
}

// MaxHeaderLength implements stack.LinkEndpoint.
func (*Endpoint) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) LinkAddress() tcpip.LinkAddress {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.linkAddr
}

// SetLinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) SetLinkAddress(addr tcpip.LinkAddress) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.linkAddr = addr
}

// Capabilities implements stack.LinkEndpoint. Only
// CapabilityResolutionRequired, as fdbased reports with EthernetHeader: ARP
// and NDP must run, and no checksum offload means every checksum on the wire
// is real (what an IPsec transform has to protect).
func (*Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityResolutionRequired
}

// ARPHardwareType implements stack.LinkEndpoint.
func (*Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint, the same way link/ethernet and
// fdbased do.
func (*Endpoint) AddHeader(pkt *stack.PacketBuffer) {
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: pkt.EgressRoute.LocalLinkAddress,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (*Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool {
	_, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	return ok
}

// WritePackets implements stack.LinkEndpoint. Each frame is copied into a
// fresh buffer that the peer's stack will own. Frames lost on the wire
// (oversize, peer queue full) still count as written, as on a real NIC.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	mtu, err := e.open()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, pkt := range pkts.AsSlice() {
		n++
		e.sendPacket(pkt, mtu)
	}
	return n, nil
}

// CanWriteFrames implements frame.Writer.
func (e *Endpoint) CanWriteFrames() bool {
	_, err := e.open()
	return err == nil
}

// WriteFrames implements frame.Writer. Like WritePackets it copies every
// frame into a view of its own for the peer.
func (e *Endpoint) WriteFrames(frames []frame.Frame) (int, tcpip.Error) {
	mtu, err := e.open()
	if err != nil {
		return 0, err
	}
	for i := range frames {
		f := &frames[i]
		if f.Bytes == nil {
			e.sendPacket(f.Packet, mtu)
			continue
		}
		if e.oversize(len(f.Bytes), mtu) {
			continue
		}
		e.send(buffer.NewViewWithData(f.Bytes))
	}
	return len(frames), nil
}

// open returns the link's MTU, or an error once it is closed.
func (e *Endpoint) open() (uint32, tcpip.Error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return 0, &tcpip.ErrClosedForSend{}
	}
	return e.mtu, nil
}

// oversize counts and reports a frame of size bytes too big for mtu.
func (e *Endpoint) oversize(size int, mtu uint32) bool {
	if mtu != 0 && size > int(mtu)+header.EthernetMinimumSize {
		e.stats.oversize.Add(1)
		return true
	}
	return false
}

// sendPacket copies pkt into a frame for the peer.
func (e *Endpoint) sendPacket(pkt *stack.PacketBuffer, mtu uint32) {
	size := pkt.Size()
	if e.oversize(size, mtu) {
		return
	}
	v := buffer.NewView(size)
	for _, s := range pkt.AsSlices() {
		v.Write(s)
	}
	e.send(v)
}

// send shows the frame in v to the tap and hands it to the peer.
func (e *Endpoint) send(v *buffer.View) {
	if fn := e.tap.Load(); fn != nil {
		(*fn)(Out, v.AsSlice())
	}
	e.stats.sent.Add(1)
	e.peer.receive(v)
}

// receive queues a frame for delivery, applying the MAC filter a NIC does in
// hardware. It takes ownership of v.
func (e *Endpoint) receive(v *buffer.View) {
	frame := v.AsSlice()
	if len(frame) < header.EthernetMinimumSize {
		e.stats.dropped.Add(1)
		v.Release()
		return
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	dst := header.Ethernet(frame).DestinationAddress()
	// Group bit set: broadcast or multicast, which Ethernet sends to all.
	if dst != e.linkAddr && dst[0]&1 == 0 {
		e.stats.filtered.Add(1)
		v.Release()
		return
	}
	r := e.cur
	if r == nil {
		e.stats.dropped.Add(1)
		v.Release()
		return
	}
	q := r.queues[0]
	if len(r.queues) > 1 {
		q = r.queues[flowHash(frame, e.seed)%uint32(len(r.queues))]
	}
	select {
	case q <- v:
	default:
		e.stats.dropped.Add(1)
		v.Release()
	}
}

// DispatcherOf returns the index of the delivery goroutine that frame
// would be queued to on e (0 with one dispatcher), so that a test can
// spread flows over the goroutines.
func (e *Endpoint) DispatcherOf(frame []byte) int {
	if e.nworkers <= 1 || len(frame) < header.EthernetMinimumSize {
		return 0
	}
	return int(flowHash(frame, e.seed) % uint32(e.nworkers))
}

func (e *Endpoint) worker(r *run, q chan *buffer.View) {
	// drain drops what is left: no sender can reach q any more (the run
	// was unpublished under e.mu before it was stopped).
	drain := func() {
		for {
			select {
			case v := <-q:
				e.stats.dropped.Add(1)
				v.Release()
			default:
				return
			}
		}
	}
	// idle marks this worker as not busy (delivering or exited).
	idle := func() {
		e.busy--
		e.wcond.Broadcast()
	}
	batch := make([]*stack.PacketBuffer, maxBatch)
	for {
		select {
		case v := <-q:
			e.wmu.Lock()
			idle()
			stopped := r.stopped
			e.wmu.Unlock()
			if stopped {
				e.stats.dropped.Add(1)
				v.Release()
				drain()
				return
			}

			e.deliverQueued(v, q, batch)

			e.wmu.Lock()
			stopped = r.stopped
			if !stopped {
				e.busy++
			}
			e.wmu.Unlock()
			if stopped {
				drain()
				return
			}
		case <-r.stop:
			e.wmu.Lock()
			idle()
			e.wmu.Unlock()
			drain()
			return
		}
	}
}

// batchDispatcher is a dispatcher that takes the frames of one read as
// one batch (the IPsec wrapper, which coalesces the TCP segments it
// decrypts from a batch: fdlink.BatchDispatcher).
type batchDispatcher interface {
	DeliverNetworkPackets(pkts []*stack.PacketBuffer)
}

// maxBatch is the most frames delivered as one batch: fdlink's readers
// read as many.
const maxBatch = 32

// deliverQueued delivers v and, to a batchDispatcher, up to maxBatch-1
// more frames already queued behind it, as one batch, as a real link's
// reader delivers what one recvmmsg returned. pkts is the worker's room
// for the batch (maxBatch long).
func (e *Endpoint) deliverQueued(v *buffer.View, q chan *buffer.View, pkts []*stack.PacketBuffer) {
	e.mu.RLock()
	d := e.dispatcher
	e.mu.RUnlock()
	bd, ok := d.(batchDispatcher)
	if !ok {
		e.deliver(v)
		return
	}
	n := 0
	for {
		if pkt := e.frame(v, d); pkt != nil {
			pkts[n] = pkt
			n++
		}
		if n == maxBatch {
			break
		}
		select {
		case v = <-q:
			continue
		default:
		}
		break
	}
	if n > 0 {
		bd.DeliverNetworkPackets(pkts[:n])
	}
	for i, pkt := range pkts[:n] {
		pkt.DecRef()
		pkts[i] = nil
	}
}

func (e *Endpoint) deliver(v *buffer.View) {
	e.mu.RLock()
	d := e.dispatcher
	e.mu.RUnlock()
	pkt := e.frame(v, d)
	if pkt == nil {
		return
	}
	defer pkt.DecRef()
	d.DeliverNetworkPacket(pkt.NetworkProtocolNumber, pkt)
}

// frame makes a received frame a packet for d, counted as delivered; nil
// (the frame counted as dropped) when d is nil: no stack attached.
func (e *Endpoint) frame(v *buffer.View, d stack.NetworkDispatcher) *stack.PacketBuffer {
	if d == nil {
		e.stats.dropped.Add(1)
		v.Release()
		return nil
	}
	e.mu.RLock()
	self := e.linkAddr
	e.mu.RUnlock()
	if fn := e.tap.Load(); fn != nil {
		(*fn)(In, v.AsSlice())
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
	hdr, _ := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	eth := header.Ethernet(hdr)
	switch dst := eth.DestinationAddress(); {
	case dst == header.EthernetBroadcastAddress:
		pkt.PktType = tcpip.PacketBroadcast
	case header.IsMulticastEthernetAddress(dst):
		pkt.PktType = tcpip.PacketMulticast
	case dst == self:
		pkt.PktType = tcpip.PacketHost
	default:
		pkt.PktType = tcpip.PacketOtherHost
	}
	pkt.NetworkProtocolNumber = eth.Type()
	e.stats.delivered.Add(1)
	return pkt
}

// flowHash hashes the IP addresses and, for unfragmented packets, the 4
// bytes after the IP header (TCP/UDP ports, the ESP SPI), as fdbased's
// processor selection does: all fragments of a datagram and all packets of a
// flow land on one goroutine, so the stack sees them in order.
func flowHash(frame []byte, seed uint32) uint32 {
	p := frame[header.EthernetMinimumSize:]
	h := fnvMix(2166136261, seed)
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case uint16(header.IPv4ProtocolNumber):
		if len(p) < header.IPv4MinimumSize {
			return 0
		}
		h = fnvBytes(h, p[12:20])
		ihl := int(p[0]&0xf) * 4
		fragmented := binary.BigEndian.Uint16(p[6:8])&0x3fff != 0
		if !fragmented && ihl >= header.IPv4MinimumSize && len(p) >= ihl+4 {
			h = fnvBytes(h, p[ihl:ihl+4])
		}
	case uint16(header.IPv6ProtocolNumber):
		if len(p) < header.IPv6MinimumSize {
			return 0
		}
		h = fnvBytes(h, p[8:40])
		nh := p[6]
		if !header.IsExtensionHeader(nh) && len(p) >= header.IPv6MinimumSize+4 {
			h = fnvBytes(h, p[40:44])
		}
	default:
		// ARP and the rest: one goroutine, so they stay ordered too.
		return 0
	}
	return h
}

func fnvMix(h, v uint32) uint32 {
	for i := 0; i < 4; i++ {
		h = (h ^ (v & 0xff)) * 16777619
		v >>= 8
	}
	return h
}

func fnvBytes(h uint32, b []byte) uint32 {
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}
