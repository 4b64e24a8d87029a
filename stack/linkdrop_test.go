package stack

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/memlink"
)

// refusingLink is an Ethernet link whose writes fail while refuse is set,
// as fdbased's do when a socket's send buffer is full (it never blocks).
type refusingLink struct {
	stack.LinkEndpoint
	refuse atomic.Bool
}

func (l *refusingLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if l.refuse.Load() {
		return 0, &tcpip.ErrWouldBlock{}
	}
	return l.LinkEndpoint.WritePackets(pkts)
}

// TestLinkRefusalCounted checks that a frame the link below refuses
// after the wrapper is counted (OutLinkDropped), not lost silently, and
// that the UDP writer is told at once instead of blocking.
func TestLinkRefusalCounted(t *testing.T) {
	ch := channel.New(16, 1500, "\x02\x00\x00\x00\x00\x01")
	defer ch.Close()
	l := &refusingLink{LinkEndpoint: ethernet.New(ch)}
	s, err := New(Config{Link: l, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	peer := tcpip.AddrFrom4([4]byte{192, 0, 2, 2})
	if err := s.AddStaticNeighbor(s.NIC, ipv4.ProtocolNumber, peer, "\x02\x00\x00\x00\x00\x02"); err != nil {
		t.Fatal(err)
	}
	c, err := gonet.DialUDP(s.Stack, nil, &tcpip.FullAddress{Addr: peer, Port: 9}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("sent")); err != nil {
		t.Fatal(err)
	}
	l.refuse.Store(true)
	// The write returns at once (the datagram dropped, as Linux drops
	// it at a full device queue): a would-block from the link is never
	// a wait, since nothing would end it.
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Write([]byte("refused"))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("write the link refused: %v, want it to return at once", err)
	}
	c.SetWriteDeadline(time.Time{})
	l.refuse.Store(false)
	if _, err := c.Write([]byte("sent")); err != nil {
		t.Fatal(err)
	}
	if got := s.Endpoint.Stats.OutLinkDropped.Load(); got != 1 {
		t.Errorf("OutLinkDropped = %d, want 1", got)
	}
	if got := ch.NumQueued(); got != 2 {
		t.Errorf("%d frames on the link, want 2", got)
	}
}

// TestTxQueue sends through a transmit queue (Config.TxQueue): datagrams
// get through, and those that find the queue full are counted by the
// NIC (TxPacketsDroppedNoBufferSpace), which `ipsecstack stats` shows.
func TestTxQueue(t *testing.T) {
	la, lb := memlink.NewPair("\x02\x00\x00\x00\x00\x01", "\x02\x00\x00\x00\x00\x02", 1500)
	a, err := New(Config{Link: la, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}, TxQueue: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Config{Link: lb, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	peer := tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{192, 0, 2, 2}), Port: 9}
	if err := a.AddStaticNeighbor(a.NIC, ipv4.ProtocolNumber, peer.Addr, "\x02\x00\x00\x00\x00\x02"); err != nil {
		t.Fatal(err)
	}
	rc, err := gonet.DialUDP(b.Stack, &tcpip.FullAddress{Port: 9}, nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	c, err := gonet.DialUDP(a.Stack, nil, &peer, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	if n, err := rc.Read(buf); err != nil || string(buf[:n]) != "first" {
		t.Fatalf("through the queue: %q, %v", buf[:n], err)
	}
	// A burst far larger than the queue: some must find it full.
	const burst = 5000
	for i := 0; i < burst; i++ {
		c.Write(buf[:64])
	}
	drops := a.NICInfo()[a.NIC].Stats.TxPacketsDroppedNoBufferSpace.Value()
	if drops == 0 || drops > burst {
		t.Errorf("%d of %d datagrams counted as dropped at a 4-packet queue", drops, burst)
	}
}
