//go:build linux

package afpacket_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/afpacket"
	"github.com/ipsecstack/ipsecstack/link/internal/netnstest"
)

// batchCounter is a dispatcher that takes batches (fdlink.BatchDispatcher)
// and records the test frames (EtherType 0x88b5) of each.
type batchCounter struct {
	mu      sync.Mutex
	batches []int
	frames  [][]byte
	single  int // frames delivered one by one
	got     chan struct{}
}

func (c *batchCounter) DeliverNetworkPackets(pkts []*stack.PacketBuffer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, pkt := range pkts {
		if pkt.NetworkProtocolNumber != 0x88b5 {
			continue
		}
		n++
		c.frames = append(c.frames, pkt.Data().AsRange().ToSlice())
		select {
		case c.got <- struct{}{}:
		default:
		}
	}
	c.batches = append(c.batches, n)
}

func (c *batchCounter) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.mu.Lock()
	c.single++
	c.mu.Unlock()
}
func (*batchCounter) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestBatchReader: the endpoint's own readers (fdlink.UseReaders) deliver
// what one recvmmsg returns as one batch to a dispatcher that takes
// batches (the IPsec wrapper's GRO needs to know where a batch ends),
// every frame exactly once; and a frame larger than the endpoint's MTU
// (a host kernel's GRO or TSO super-frame) arrives whole, its bytes
// intact, through the slot's overflow buffer, instead of being cut at the
// first buffer.
func TestBatchReader(t *testing.T) {
	netnstest.Require(t)
	gvNS, peerNS, gvIf, peerIf := vethPair(t)
	// Room on the wire for a 9000-byte frame; the endpoint reads with
	// buffers for its own MTU of 1500.
	gvNS.Run(t, "ip", "link", "set", gvIf, "mtu", "9000")
	peerNS.Run(t, "ip", "link", "set", peerIf, "mtu", "9000")
	ep := open(t, gvNS, gvIf, afpacket.Options{MTU: 1500})
	c := &batchCounter{got: make(chan struct{}, 1)}
	ep.Attach(c)
	defer ep.Close()

	const n = 200
	if err := peerNS.Do(func() error { return sendFramesOfSize(peerIf, n, 60) }); err != nil {
		t.Fatal(err)
	}
	if err := peerNS.Do(func() error { return sendFramesOfSize(peerIf, 1, 9000) }); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.frames)
		c.mu.Unlock()
		if got >= n+1 {
			break
		}
		select {
		case <-c.got:
		case <-deadline:
			t.Fatalf("%d of %d frames received", got, n+1)
		case <-time.After(100 * time.Millisecond):
		}
	}
	time.Sleep(100 * time.Millisecond) // nothing more may come
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.frames) != n+1 || c.single != 0 {
		t.Fatalf("%d frames in batches, %d one by one; want %d in batches", len(c.frames), c.single, n+1)
	}
	big := c.frames[n]
	if len(big) != 9000-14 {
		t.Fatalf("the 9000-byte frame arrived with %d bytes after the Ethernet header, want %d", len(big), 9000-14)
	}
	if !bytes.Equal(big, make([]byte, 9000-14)) {
		t.Fatalf("the 9000-byte frame's payload changed on the way")
	}
	most := 0
	for _, b := range c.batches {
		most = max(most, b)
	}
	t.Logf("%d batches, largest %d frames", len(c.batches), most)
}

// TestCloseAfterReaderEnded: a reader that ended on its own (its
// interface deleted under it, as a test's cleanup or an operator does)
// must leave Close something to stop. It used to close its eventfd on the
// way out, and Close's stop then wrote to a closed descriptor: a panic
// ("write(EFD) = (-1, bad file descriptor)") in TestLinuxGateway's and
// TestRunFailures' clean-up, or a write into whatever file had reused the
// number.
func TestCloseAfterReaderEnded(t *testing.T) {
	netnstest.Require(t)
	gvNS, _, gvIf, _ := vethPair(t)
	ended := make(chan tcpip.Error, 1)
	ep := open(t, gvNS, gvIf, afpacket.Options{MTU: 1500, ClosedFunc: func(err tcpip.Error) { ended <- err }})
	ep.Attach(&batchCounter{got: make(chan struct{}, 1)})
	gvNS.Run(t, "ip", "link", "del", gvIf)
	select {
	case err := <-ended:
		t.Logf("reader ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the reader did not end when its interface was deleted")
	}
	ep.Close() // must not panic
}
