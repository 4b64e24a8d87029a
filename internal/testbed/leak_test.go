package testbed

import (
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/internal/leakcheck"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// sendUDP sends one datagram of size bytes from A to B's port.
func sendUDP(t *testing.T, p *Pair, port uint16, size int) {
	t.Helper()
	raddr := p.A.FullAddress(p.AddrB, port)
	c, err := gonet.DialUDP(p.A.Stack, nil, &raddr, stack.Proto(p.AddrB))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
}

// waitFrames waits until A has sent at least n frames more than before.
func waitFrames(t *testing.T, p *Pair, before, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); p.leakA.Stats().Frames < before+n; {
		if time.Now().After(deadline) {
			t.Fatalf("A sent %d frames, want %d", p.leakA.Stats().Frames-before, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLeakDetectorIgnoresTheSPD: the detector judges frames by the flows
// the test bed configured, not by the SPD under test. A bypass slipped
// into A's SPD (a stand-in for any SPD fault) sends UDP in clear; the old
// detector, which looked the flow up in that same SPD, passed it. A
// datagram gVisor fragments is reassembled and reported once.
func TestLeakDetectorIgnoresTheSPD(t *testing.T) {
	for _, inner := range []int{4, 6} {
		t.Run(map[int]string{4: "ipv4", 6: "ipv6"}[inner], func(t *testing.T) {
			p, err := New(Config{Suite: Suites[0], Mode: xfrm.ModeTransport, Inner: inner})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if _, err := p.A.Engine.AddPolicy(&xfrm.Policy{Dir: xfrm.DirOut, Priority: 1, Action: xfrm.ActionBypass,
				Sel: xfrm.Selector{Src: host(p.AddrA), Dst: host(p.AddrB), Proto: xfrm.ProtoUDP, DstPorts: xfrm.PortRange{Lo: 9, Hi: 9}}}); err != nil {
				t.Fatal(err)
			}
			// Resolve B's link address first (under ESP), so the
			// datagrams below go out at once.
			if err := UDPEcho(t.Context(), p.A, p.AddrB, 10); err == nil {
				t.Log("echo answered") // no echo server: expected to fail
			}
			before := p.leakA.Stats().Frames
			sendUDP(t, p, 9, 100)
			sendUDP(t, p, 9, 4000) // three fragments at MTU 1500
			waitFrames(t, p, before, 4)
			leaks, frames := p.Leaks()
			if len(leaks) != 2 {
				t.Fatalf("%d frames, leaks %q, want the two datagrams", frames, leaks)
			}
			for _, l := range leaks {
				if !strings.HasPrefix(l, "A sent") || !strings.Contains(l, "ports") || !strings.Contains(l, "->9") || !strings.Contains(l, "all "+p.AddrA.String()) {
					t.Errorf("leak %q does not name the sender, the flow and the protected flow", l)
				}
			}
			if st := p.LeakStats(); st.Reassembled != 1 || st.Fragments != 3 {
				t.Errorf("stats %+v, want 3 fragments reassembled into 1 datagram", st)
			}

			// With the bypass declared to the detector, the same traffic
			// is fine.
			p.SetLeakFlows(append([]leakcheck.Flow{{Name: "udp 9 bypass", Proto: 17, DstPort: leakcheck.Exactly(9), Clear: true}}, p.LeakFlows()...))
			n := p.LeakStats().Leaks
			before = p.leakA.Stats().Frames
			sendUDP(t, p, 9, 4000)
			waitFrames(t, p, before, 3)
			if st := p.LeakStats(); st.Leaks != n {
				t.Errorf("a declared bypass counted as a leak: %+v", st)
			}
		})
	}
}
