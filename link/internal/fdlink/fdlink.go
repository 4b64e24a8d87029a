// Package fdlink wraps a gVisor fdbased endpoint so that it owns its file
// descriptors (fdbased never closes them, and closing them while its
// readers still run would let a reused descriptor number be read or written
// by mistake) and so that removing the NIC cannot deadlock.
//
// The deadlock: the stack removes a NIC (RemoveNIC, Stack.Destroy) holding
// its own lock and calls Attach(nil), on which fdbased stops its readers
// and waits for them; a reader in the middle of delivering a packet that
// needs the stack lock (TCP answering with a RST calls FindRoute) never
// finishes. memlink hit exactly this. So the wrapper is fdbased's
// dispatcher: Attach(nil) only unhooks the stack (frames are then dropped)
// and the readers are stopped and waited for in Close, which the stack
// calls after releasing its lock.
package fdlink

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Endpoint is an fdbased endpoint that closes its descriptors on Close,
// after its readers have stopped, and refuses writes from then on.
type Endpoint struct {
	stack.LinkEndpoint

	// SetAddr, if set, runs before the link address changes (TAP uses it
	// to move the kernel's transmit filter to the new MAC).
	SetAddr func(tcpip.LinkAddress)

	disp atomic.Pointer[stack.NetworkDispatcher]

	mu       sync.RWMutex
	fds      []int
	attached bool // lower has us as its dispatcher
	closed   bool
	onClose  func()

	// readerOpts, when set (UseReaders), has the endpoint read with its
	// own readers (reader.go) rather than fdbased's.
	readerOpts *ReaderOptions
	readers    []*reader
	// writerOpts, when set (UseWriter), has the endpoint write with its
	// own writer (writer.go) rather than fdbased's.
	writerOpts *WriterOptions
	// gsoRefused is set once the kernel refused a UDP GSO frame.
	gsoRefused atomic.Bool
	gso        gsoStats
	readerWG   sync.WaitGroup
}

var _ stack.NetworkDispatcher = (*Endpoint)(nil)

// Attach implements stack.LinkEndpoint; see the package comment.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.disp.Store(nil)
		return
	}
	e.disp.Store(&d)
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.attached && !e.closed {
		e.attached = true
		if e.readerOpts == nil {
			e.LinkEndpoint.Attach(e)
		} else if err := e.startReaders(); err != nil && e.readerOpts.ClosedFunc != nil {
			// No reader: the link is as good as closed (eventfd or
			// mmap failed: out of descriptors or memory).
			e.readerOpts.ClosedFunc(&tcpip.ErrNoBufferSpace{})
		}
	}
}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool { return e.disp.Load() != nil }

// Wait implements stack.LinkEndpoint. The readers stop in Close, so there
// is nothing to wait for before it (and Close waits itself).
func (e *Endpoint) Wait() {}

// DeliverNetworkPacket implements stack.NetworkDispatcher for the lower
// endpoint, forwarding to the stack while one is attached.
func (e *Endpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if d := e.disp.Load(); d != nil {
		(*d).DeliverNetworkPacket(proto, pkt)
	}
}

// DeliverLinkPacket implements stack.NetworkDispatcher.
func (e *Endpoint) DeliverLinkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if d := e.disp.Load(); d != nil {
		(*d).DeliverLinkPacket(proto, pkt)
	}
}

// New wraps lower, which reads and writes fds.
func New(lower stack.LinkEndpoint, fds []int) *Endpoint {
	return &Endpoint{LinkEndpoint: lower, fds: fds}
}

// WritePackets implements stack.LinkWriter; it fails after Close.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return 0, &tcpip.ErrClosedForSend{}
	}
	if e.writerOpts != nil {
		return e.writePackets(pkts)
	}
	return e.LinkEndpoint.WritePackets(pkts)
}

// Control runs fn on the endpoint's descriptors, unless the endpoint is
// closed (a closed descriptor's number may already belong to another
// file), and reports whether it ran. Close waits for fn to return.
func (e *Endpoint) Control(fn func(fds []int)) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return false
	}
	fn(e.fds)
	return true
}

// SetLinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) SetLinkAddress(addr tcpip.LinkAddress) {
	if e.SetAddr != nil {
		e.SetAddr(addr)
	}
	e.LinkEndpoint.SetLinkAddress(addr)
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *Endpoint) SetOnCloseAction(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onClose = fn
}

// Close implements stack.LinkEndpoint. It stops fdbased's readers, waits
// for them, then closes the fds.
func (e *Endpoint) Close() {
	e.disp.Store(nil)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	// Writers check closed under e.mu, so from here none touches the fds.
	e.closed = true
	attached := e.attached
	fn := e.onClose
	e.onClose = nil
	e.mu.Unlock()
	// Not under e.mu: a reader finishing a delivery may write a reply
	// (which then fails with ErrClosedForSend instead of blocking).
	if attached {
		if e.readerOpts != nil {
			e.stopReaders()
		} else {
			e.LinkEndpoint.Attach(nil) // stops the readers and waits for them
		}
	}
	e.LinkEndpoint.Wait()
	for _, fd := range e.fds {
		unix.Close(fd)
	}
	e.LinkEndpoint.Close()
	if fn != nil {
		fn()
	}
}

// bufMu serializes the endpoints' use of fdbased.BufConfig, a package
// variable that fdbased reads when it creates its readers.
var bufMu sync.Mutex

// NewFDBased is fdbased.New with receive buffers shaped for frames of the
// link's MTU (RecvBufSizes), so that a received frame is one view.
func NewFDBased(opts *fdbased.Options) (stack.LinkEndpoint, error) {
	bufMu.Lock()
	defer bufMu.Unlock()
	saved := fdbased.BufConfig
	fdbased.BufConfig = RecvBufSizes(opts.MTU)
	defer func() { fdbased.BufConfig = saved }()
	return fdbased.New(opts)
}

// RecvBufSizes is the shape of fdbased's receive buffer for a link of
// this IP MTU: first one view that holds a whole Ethernet frame (with a
// VLAN tag), then fdbased's own doubling sizes, which cover the 64 KiB a
// GRO-merged frame may reach. fdbased's default starts with 128, 256,
// 256 and 512 bytes, which spread a 1514-byte frame over five views:
// the stack's first PullUp of the packet (the IPsec wrapper's, of the
// whole datagram) then allocated and copied every frame once more.
func RecvBufSizes(mtu uint32) []int {
	const tail = 18 // Ethernet header and a VLAN tag
	return []int{int(mtu) + tail, 128, 256, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768}
}
