package stack_test

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// stallingLink is a link whose every fourth write takes a millisecond
// before it passes the frames on, as a real link's does when the writing
// thread is preempted inside sendmmsg or the socket buffer is briefly
// full: other senders keep writing meanwhile.
type stallingLink struct {
	gstack.LinkEndpoint
	n atomic.Uint64
}

func (l *stallingLink) WritePackets(pkts gstack.PacketBufferList) (int, tcpip.Error) {
	if l.n.Add(1)%4 == 0 {
		time.Sleep(time.Millisecond)
	}
	return l.LinkEndpoint.WritePackets(pkts)
}

// espLate reads the ESP sequence numbers of the IPv4 frames in frames (in
// wire order) and counts those that arrive more than window numbers below
// the highest already seen on their SPI: a receiver with that replay
// window drops them (RFC 4303 §3.4.3). It shares no code with the stack.
func espLate(frames [][]byte, window uint32) (late int, worst uint32) {
	highest := map[uint32]uint32{}
	for _, f := range frames {
		if len(f) < 14+20+8 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[14+9] != 50 {
			continue
		}
		ihl := int(f[14]&0xf) * 4
		if len(f) < 14+ihl+8 {
			continue
		}
		esp := f[14+ihl:]
		spi, seq := binary.BigEndian.Uint32(esp), binary.BigEndian.Uint32(esp[4:])
		if h := highest[spi]; seq > h {
			highest[spi] = seq
		} else if h-seq >= window {
			late++
			worst = max(worst, h-seq)
		}
	}
	return late, worst
}

// TestConcurrentSendersKeepSequenceOrder: many goroutines sending at once
// on a stack without a transmit queue (each writes through the IPsec
// wrapper itself), on a link that sometimes stalls a write. The ESP
// packets of one SA must reach the link in the order of their sequence
// numbers, or near enough that a receiver's 32-packet replay window (the
// Linux and strongSwan default) keeps every one: none may be dropped as
// XfrmInStateSeqError. Before the wrapper kept sealing and hand-off in
// one order, a sender that sealed its packet and then stalled in the link
// let the others' later numbers pass: hundreds of packets arrived too late.
func TestConcurrentSendersKeepSequenceOrder(t *testing.T) {
	var stall *stallingLink
	p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: xfrm.ModeTransport, Inner: 4,
		NDP: testbed.NDPBypass, ReplayWindow: 32,
		WrapLinkA: func(l gstack.LinkEndpoint) gstack.LinkEndpoint {
			stall = &stallingLink{LinkEndpoint: l}
			return stall
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var mu sync.Mutex
	var frames [][]byte
	p.SetTap(func(from string, frame []byte) {
		if from == "A" {
			mu.Lock()
			frames = append(frames, append([]byte(nil), frame...))
			mu.Unlock()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const port = 9
	if err := p.B.ServeUDPDiscard(ctx, port); err != nil {
		t.Fatal(err)
	}
	// Resolve B's link address first: packets sent while ARP is pending
	// queue per neighbour (gVisor keeps at most 256) and the rest are
	// dropped, which under load left a third of the test's packets.
	warm, err := gonet.DialUDP(p.A.Stack, nil, &tcpip.FullAddress{Addr: tcpip.AddrFrom4(p.AddrB.As4()), Port: port}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	for p.B.Endpoint.Stats.Reinjected.Load() == 0 {
		if _, err := warm.Write([]byte("warm")); err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatal("B never received A's first datagram")
		}
		time.Sleep(20 * time.Millisecond)
	}
	warm.Close()
	mu.Lock()
	frames = frames[:0]
	mu.Unlock()
	base := p.B.Endpoint.Stats.Reinjected.Load()
	const senders, each = 8, 300
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := gonet.DialUDP(p.A.Stack, nil, &tcpip.FullAddress{Addr: tcpip.AddrFrom4(p.AddrB.As4()), Port: port}, ipv4.ProtocolNumber)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			b := make([]byte, 200)
			for range each {
				if _, err := c.Write(b); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Let B take what is queued on the link: until its count of
	// decapsulated and late packets stops moving.
	seen := func() uint64 { return p.B.Engine.Stats.InStateSeqError.Load() + p.B.Endpoint.Stats.Reinjected.Load() }
	for last, still := seen(), 0; still < 5; {
		time.Sleep(20 * time.Millisecond)
		if now := seen(); now != last {
			last, still = now, 0
		} else {
			still++
		}
	}
	mu.Lock()
	late, worst := espLate(frames, 32)
	n := len(frames)
	mu.Unlock()
	if late > 0 {
		t.Errorf("%d ESP packets of %d frames reached the link more than 32 sequence numbers late (worst %d)", late, n, worst)
	}
	if got := p.B.Engine.Stats.InStateSeqError.Load(); got != 0 {
		t.Errorf("B: XfrmInStateSeqError = %d, want 0", got)
	}
	if got := p.B.Endpoint.Stats.Reinjected.Load() - base; got < senders*each/2 {
		t.Errorf("B decapsulated %d packets of the %d sent: the test sent too little to mean anything", got, senders*each)
	}
	if s := stall.n.Load(); s < 16 {
		t.Errorf("the link saw %d writes: the senders did not write concurrently", s)
	}
	t.Logf("%d frames from A, %d decapsulated by B, %d link writes", n, p.B.Endpoint.Stats.Reinjected.Load(), stall.n.Load())
}
