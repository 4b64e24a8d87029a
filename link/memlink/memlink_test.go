package memlink_test

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/internal/linktest"
	"github.com/ipsecstack/ipsecstack/link/memlink"
)

const (
	macA = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x0a")
	macB = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x0b")
)

var (
	a4 = netip.MustParsePrefix("192.0.2.1/24")
	b4 = netip.MustParsePrefix("192.0.2.2/24")
	a6 = netip.MustParsePrefix("2001:db8::1/64")
	b6 = netip.MustParsePrefix("2001:db8::2/64")
)

func pairStacks(t *testing.T, opts memlink.Options) (sa, sb *stack.Stack, ea, eb *memlink.Endpoint) {
	t.Helper()
	ea, eb = memlink.NewPairWithOptions(macA, macB, opts)
	sa = linktest.NewStack(t, ea, a4, a6)
	sb = linktest.NewStack(t, eb, b4, b6)
	return
}

func TestPing(t *testing.T) {
	sa, sb, ea, eb := pairStacks(t, memlink.Options{})
	for _, dst := range []netip.Addr{b4.Addr(), b6.Addr()} {
		if err := linktest.Ping(sa, dst, 5*time.Second); err != nil {
			t.Errorf("A→%v: %v", dst, err)
		}
	}
	for _, dst := range []netip.Addr{a4.Addr(), a6.Addr()} {
		if err := linktest.Ping(sb, dst, 5*time.Second); err != nil {
			t.Errorf("B→%v: %v", dst, err)
		}
	}
	sa2, sb2 := ea.Stats(), eb.Stats()
	// ARP request+reply, NS+NA, 4 echo requests and 4 replies at least.
	if sa2.Sent < 5 || sb2.Sent < 5 || sa2.Delivered != sb2.Sent || sb2.Delivered != sa2.Sent {
		t.Errorf("stats A=%+v B=%+v: want each side's Delivered == other's Sent, ≥5", sa2, sb2)
	}
	if sa2.Dropped+sb2.Dropped+sa2.Filtered+sb2.Filtered != 0 {
		t.Errorf("unexpected drops: A=%+v B=%+v", sa2, sb2)
	}
}

func TestTCP1MiB(t *testing.T) {
	for _, workers := range []int{1, 2} {
		sa, sb, _, eb := pairStacks(t, memlink.Options{Dispatchers: workers})
		linktest.TransferTCP(t, sa, sb, b4.Addr(), 5001, 1<<20)
		linktest.TransferTCP(t, sa, sb, b6.Addr(), 5002, 1<<20)
		if st := eb.Stats(); st.Dropped != 0 {
			// Not fatal: a real wire may drop. Logged for benchmark tuning.
			t.Logf("workers=%d: B dropped %d frames (queue full)", workers, st.Dropped)
		}
	}
}

// TestTap checks that the tap sees every frame in both directions, with the
// Ethernet header, and that it can be swapped while traffic flows.
func TestTap(t *testing.T) {
	sa, _, ea, eb := pairStacks(t, memlink.Options{})
	var mu sync.Mutex
	var out, in [][]byte
	ea.SetTap(func(dir memlink.Direction, frame []byte) {
		mu.Lock()
		defer mu.Unlock()
		c := append([]byte(nil), frame...)
		if dir == memlink.Out {
			out = append(out, c)
		} else {
			in = append(in, c)
		}
	})
	if err := linktest.Ping(sa, b4.Addr(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Swap taps concurrently with traffic (the race detector is the check).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				eb.SetTap(func(memlink.Direction, []byte) {})
			} else {
				eb.SetTap(nil)
			}
		}
	}()
	if err := linktest.Ping(sa, b6.Addr(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	ea.SetTap(nil)

	mu.Lock()
	defer mu.Unlock()
	st := ea.Stats()
	if uint64(len(out)) != st.Sent || uint64(len(in)) != st.Delivered {
		t.Fatalf("tap saw %d out, %d in; stats %+v", len(out), len(in), st)
	}
	var sawARP, sawEcho bool
	for _, f := range out {
		eth := header.Ethernet(f)
		if eth.SourceAddress() != macA {
			t.Errorf("out frame with source %v", eth.SourceAddress())
		}
		switch eth.Type() {
		case header.ARPProtocolNumber:
			sawARP = true
		case header.IPv4ProtocolNumber:
			ip := header.IPv4(f[header.EthernetMinimumSize:])
			if ip.Protocol() == uint8(header.ICMPv4ProtocolNumber) && header.ICMPv4(ip.Payload())[0] == byte(header.ICMPv4Echo) {
				sawEcho = true
			}
		}
	}
	if !sawARP || !sawEcho {
		t.Errorf("tap out: sawARP=%v sawEcho=%v", sawARP, sawEcho)
	}
	for _, f := range in {
		if d := header.Ethernet(f).DestinationAddress(); d != macA && d[0]&1 == 0 {
			t.Errorf("in frame for %v delivered", d)
		}
	}
}

// recorder is a NetworkDispatcher that counts and optionally blocks.
type recorder struct {
	n     atomic.Int32
	block chan struct{}
	last  atomic.Value // tcpip.PacketType
}

func (r *recorder) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if r.block != nil {
		<-r.block
	}
	r.last.Store(pkt.PktType)
	r.n.Add(1)
}
func (*recorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func writeFrame(t *testing.T, ep *memlink.Endpoint, dst tcpip.LinkAddress, size int) {
	t.Helper()
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(ep.MaxHeaderLength()),
		Payload:            buffer.MakeWithData(make([]byte, size)),
	})
	pkt.EgressRoute.LocalLinkAddress = ep.LinkAddress()
	pkt.EgressRoute.RemoteLinkAddress = dst
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	ep.AddHeader(pkt)
	var l stack.PacketBufferList
	l.PushBack(pkt)
	if n, err := ep.WritePackets(l); n != 1 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	l.Reset()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMACFilterAndPktType(t *testing.T) {
	ea, eb := memlink.NewPair(macA, macB, 1500)
	var r recorder
	eb.Attach(&r)
	defer func() { eb.Close(); eb.Wait() }()

	writeFrame(t, ea, "\x02\x00\x00\x00\x00\xcc", 100) // someone else's
	writeFrame(t, ea, macB, 100)
	waitFor(t, "unicast", func() bool { return r.n.Load() == 1 })
	if got := r.last.Load(); got != tcpip.PacketHost {
		t.Errorf("unicast PktType = %v", got)
	}
	writeFrame(t, ea, header.EthernetBroadcastAddress, 100)
	waitFor(t, "broadcast", func() bool { return r.n.Load() == 2 })
	if got := r.last.Load(); got != tcpip.PacketBroadcast {
		t.Errorf("broadcast PktType = %v", got)
	}
	writeFrame(t, ea, "\x33\x33\x00\x00\x00\x01", 100)
	waitFor(t, "multicast", func() bool { return r.n.Load() == 3 })
	if got := r.last.Load(); got != tcpip.PacketMulticast {
		t.Errorf("multicast PktType = %v", got)
	}
	if st := eb.Stats(); st.Filtered != 1 || st.Delivered != 3 {
		t.Errorf("B stats %+v, want Filtered 1 Delivered 3", st)
	}
}

func TestOversizeAndQueueFull(t *testing.T) {
	ea, eb := memlink.NewPairWithOptions(macA, macB, memlink.Options{MTU: 1000, QueueLen: 2})
	r := recorder{block: make(chan struct{})}
	eb.Attach(&r)
	writeFrame(t, ea, macB, 1001) // 1001 > MTU: not sent
	if st := ea.Stats(); st.Oversize != 1 || st.Sent != 0 {
		t.Errorf("A stats %+v, want Oversize 1", st)
	}
	// One frame is held by the blocked dispatcher, two fill the queue, the
	// rest are dropped.
	writeFrame(t, ea, macB, 1000)
	waitFor(t, "first delivery to block", func() bool { return eb.Stats().Delivered == 1 })
	for i := 0; i < 5; i++ {
		writeFrame(t, ea, macB, 1000)
	}
	if st := eb.Stats(); st.Dropped != 3 {
		t.Errorf("B stats %+v, want Dropped 3", st)
	}
	close(r.block)
	waitFor(t, "queued frames", func() bool { return r.n.Load() == 3 })
	eb.Close()
	eb.Wait()
	if _, err := eb.WritePackets(stack.PacketBufferList{}); err == nil {
		t.Error("write after Close succeeded")
	}
}

// TestCloseStopsGoroutines checks that Stack.Destroy (Attach(nil), Wait,
// Close) leaves no delivery goroutine behind, and that detached endpoints
// drop instead of queueing.
func TestCloseStopsGoroutines(t *testing.T) {
	ea, eb := memlink.NewPairWithOptions(macA, macB, memlink.Options{Dispatchers: 2})
	var r recorder
	eb.Attach(&r)
	eb.Attach(nil)
	done := make(chan struct{})
	go func() { eb.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait after Attach(nil) did not return")
	}
	writeFrame(t, ea, macB, 100)
	if st := eb.Stats(); st.Dropped != 1 || r.n.Load() != 0 {
		t.Errorf("detached B: stats %+v, delivered %d", st, r.n.Load())
	}
	// Re-attach works (the NIC can be re-created on the same endpoint).
	eb.Attach(&r)
	writeFrame(t, ea, macB, 100)
	waitFor(t, "delivery after re-attach", func() bool { return r.n.Load() == 1 })
	eb.Close()
	eb.Wait()
	ea.Close()
	ea.Wait()
}

// BenchmarkTCP measures one-way TCP throughput between two stacks.
func BenchmarkTCP(b *testing.B) {
	for _, workers := range []int{1, 2} {
		b.Run(map[int]string{1: "dispatchers=1", 2: "dispatchers=2"}[workers], func(b *testing.B) {
			ea, eb := memlink.NewPairWithOptions(macA, macB, memlink.Options{Dispatchers: workers})
			sa := linktest.NewStack(b, ea, a4)
			sb := linktest.NewStack(b, eb, b4)
			const chunk = 1 << 20
			b.SetBytes(chunk)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				linktest.TransferTCP(b, sa, sb, b4.Addr(), uint16(6000+i%1000), chunk)
			}
		})
	}
}
