package stack_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// runTraffic drives the traffic the data-plane issue asks for over a pair
// and checks the leak detector.
func runTraffic(t *testing.T, p *testbed.Pair, tcpBytes int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.StartServers(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := testbed.Ping(ctx, p.A, p.AddrB, 2, 56); err != nil {
		t.Fatalf("ping A->B: %v", err)
	}
	if _, err := testbed.Ping(ctx, p.B, p.AddrA, 2, 56); err != nil {
		t.Fatalf("ping B->A: %v", err)
	}
	for _, size := range []int{100, 8000} {
		if err := testbed.UDPEcho(ctx, p.A, p.AddrB, size); err != nil {
			t.Fatalf("udp A->B: %v", err)
		}
		if err := testbed.UDPEcho(ctx, p.B, p.AddrA, size); err != nil {
			t.Fatalf("udp B->A: %v", err)
		}
	}
	if _, err := testbed.TCPTransfer(ctx, p.A, p.AddrB, tcpBytes); err != nil {
		t.Fatalf("tcp A->B: %v", err)
	}
	if _, err := testbed.TCPTransfer(ctx, p.B, p.AddrA, tcpBytes/4); err != nil {
		t.Fatalf("tcp B->A: %v", err)
	}
	leaks, frames := p.Leaks()
	if len(leaks) > 0 {
		t.Fatalf("cleartext leaks (%d frames inspected):\n%v", frames, leaks)
	}
	for _, s := range []struct {
		name string
		e    *xfrm.Engine
	}{{"A", p.A.Engine}, {"B", p.B.Engine}} {
		for _, st := range s.e.Stats.Snapshot() {
			if st.Value != 0 {
				t.Errorf("%s: %s = %d, want 0", s.name, st.Name, st.Value)
			}
		}
	}
}

func TestPairSmoke(t *testing.T) {
	for _, c := range []testbed.Config{
		{Suite: testbed.Suites[0], Mode: xfrm.ModeTransport, Inner: 6},
		{Suite: testbed.Suites[0], Mode: xfrm.ModeTransport, Inner: 4},
		{Suite: testbed.Suites[0], Mode: xfrm.ModeTunnel, Inner: 6},
		{Suite: testbed.Suites[0], Mode: xfrm.ModeTunnel, Inner: 4, Outer: 6},
	} {
		t.Run(fmt.Sprintf("%s/%s/%d-in-%d", c.Suite.Name, c.Mode, c.Inner, c.Outer), func(t *testing.T) {
			p, err := testbed.New(c)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			runTraffic(t, p, 1<<20)
		})
	}
}
