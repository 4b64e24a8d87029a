package stack_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestSocketPolicy: two UDP sockets to the same peer; one gets a policy
// that requires ESP (and has no SA), the other none. The SPD is empty, so
// without the socket policy both would go in clear.
func TestSocketPolicy(t *testing.T) {
	p, err := testbed.New(testbed.Config{Inner: 4, Plain: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s := p.A
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.B.ServeUDPEcho(ctx, 9)
	time.Sleep(50 * time.Millisecond)
	var acquires atomic.Int32
	s.Engine.Subscribe(func(ev xfrm.Event) {
		if ev.Type == xfrm.EventAcquire {
			acquires.Add(1)
		}
	})
	mk := func(port uint16) tcpip.Endpoint {
		var wq waiter.Queue
		ep, terr := s.Stack.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
		if terr != nil {
			t.Fatal(terr)
		}
		if terr := ep.Bind(s.FullAddress(p.AddrA, port)); terr != nil {
			t.Fatal(terr)
		}
		if terr := ep.Connect(s.FullAddress(p.AddrB, 9)); terr != nil {
			t.Fatal(terr)
		}
		return ep
	}
	protected, clear := mk(4001), mk(4002)
	defer protected.Close()
	defer clear.Close()
	detach, err := stack.AttachSocketPolicy(s.Engine, protected, &xfrm.Policy{Dir: xfrm.DirOut, Action: xfrm.ActionProtect,
		Templates: []xfrm.Template{{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTransport, Level: xfrm.LevelRequire}}})
	if err != nil {
		t.Fatal(err)
	}
	send := func(ep tcpip.Endpoint) {
		if _, terr := ep.Write(bytes.NewReader([]byte("hello")), tcpip.WriteOptions{}); terr != nil {
			t.Fatal(terr)
		}
	}
	// The first write may wait for ARP; send a few and let them drain.
	for i := 0; i < 3; i++ {
		send(clear)
		send(protected)
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	noStates := s.Engine.Stats.OutNoStates.Load()
	if noStates == 0 || acquires.Load() == 0 {
		t.Fatalf("protected socket's packets not held by its policy: OutNoStates %d, acquires %d", noStates, acquires.Load())
	}
	passed := s.Endpoint.Stats.OutPassed.Load()
	if passed < 3 {
		t.Fatalf("clear socket's packets: passed %d", passed)
	}
	// Detached: the socket follows the (empty) SPD again.
	detach()
	send(protected)
	time.Sleep(100 * time.Millisecond)
	if s.Engine.Stats.OutNoStates.Load() != noStates {
		t.Fatal("detached socket still dropped")
	}
}
