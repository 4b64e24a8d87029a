// Package fdlink wraps a gVisor fdbased endpoint so that it owns its file
// descriptors: fdbased never closes them, and closing them while its
// dispatch goroutines still read would let a reused descriptor number be
// read or written by mistake.
package fdlink

import (
	"sync"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Endpoint is an fdbased endpoint that closes its descriptors on Close,
// after its readers have stopped, and refuses writes from then on.
type Endpoint struct {
	stack.LinkEndpoint

	// SetAddr, if set, runs before the link address changes (TAP uses it
	// to move the kernel's transmit filter to the new MAC).
	SetAddr func(tcpip.LinkAddress)

	mu      sync.RWMutex
	fds     []int
	closed  bool
	onClose func()
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
	return e.LinkEndpoint.WritePackets(pkts)
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

// Close implements stack.LinkEndpoint. It stops fdbased's readers (a no-op
// if the NIC already detached it), waits for them, then closes the fds.
func (e *Endpoint) Close() {
	e.LinkEndpoint.Attach(nil)
	e.LinkEndpoint.Wait()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	for _, fd := range e.fds {
		unix.Close(fd)
	}
	fn := e.onClose
	e.onClose = nil
	e.mu.Unlock()
	e.LinkEndpoint.Close()
	if fn != nil {
		fn()
	}
}
