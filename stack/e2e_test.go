package stack_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// runTraffic drives the traffic the data-plane issue asks for over a pair:
// ping both ways (IPv6 pings start with NDP), UDP echo of 100 and 8000
// bytes, a TCP transfer with its content verified, and then checks that the
// link capture saw no protected flow in clear and no IPsec counter moved.
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
	// The main SAs carried the traffic.
	for _, c := range []struct {
		e   *xfrm.Engine
		dst string
		spi uint32
	}{{p.A.Engine, "B", testbed.SPIAtoB}, {p.B.Engine, "A", testbed.SPIBtoA}} {
		n := 0
		c.e.SAD.Walk(func(sa *xfrm.SA) bool {
			if sa.SPI() == c.spi {
				n += int(sa.Counters.Packets.Load())
			}
			return true
		})
		if n < 100 {
			t.Errorf("SA 0x%x towards %s carried %d packets, want the bulk of the traffic", c.spi, c.dst, n)
		}
	}
}

// ndpUnderESP checks that neighbour solicitation went out through the
// solicited-node multicast SA.
func ndpUnderESP(t *testing.T, p *testbed.Pair) {
	t.Helper()
	sa := p.A.Engine.SAD.Lookup(testbed.SolicitedNode(testbed.B6), xfrm.ProtoESP, testbed.SPINDPMulticastA)
	if sa == nil || sa.Counters.Packets.Load() == 0 {
		t.Errorf("no neighbour solicitation was sent through the multicast ESP SA")
	}
	if p.A.Endpoint.Stats.OutPassed.Load() != 0 && p.Config.NDP == testbed.NDPProtect {
		// Nothing between A and B is sent in clear; link-local MLD/RS
		// would be, but DAD is off and the pair uses global addresses.
		t.Logf("A sent %d packets in clear (outside the protected selectors)", p.A.Endpoint.Stats.OutPassed.Load())
	}
}

// TestESPMatrix runs every ESP suite of the data-plane issue in transport
// and tunnel mode over IPv6, IPv4, 4-in-6 and 6-in-4, with "all traffic
// between A and B requires ESP" and NDP under ESP.
func TestESPMatrix(t *testing.T) {
	type fam struct{ inner, outer int }
	transport := []fam{{6, 6}, {4, 4}}
	tunnel := []fam{{6, 6}, {4, 4}, {4, 6}, {6, 4}}
	tcpBytes := 4 << 20
	if testing.Short() {
		tcpBytes = 1 << 20
	}
	for _, s := range testbed.Suites {
		for _, m := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
			fams := transport
			if m == xfrm.ModeTunnel {
				fams = tunnel
			}
			for _, f := range fams {
				name := fmt.Sprintf("%s/%s/ipv%d", s.Name, m, f.inner)
				if f.inner != f.outer {
					name = fmt.Sprintf("%s/%s/%d-in-%d", s.Name, m, f.inner, f.outer)
				}
				t.Run(name, func(t *testing.T) {
					p, err := testbed.New(testbed.Config{Suite: s, Mode: m, Inner: f.inner, Outer: f.outer})
					if err != nil {
						t.Fatal(err)
					}
					defer p.Close()
					runTraffic(t, p, tcpBytes)
					if f.inner == 6 {
						ndpUnderESP(t, p)
					}
				})
			}
		}
	}
}

// TestNDPBypass: a higher-priority bypass for ICMPv6 types 133-137 with ESP
// for everything else.
func TestNDPBypass(t *testing.T) {
	for _, m := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
		t.Run(m.String(), func(t *testing.T) {
			p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: m, Inner: 6, NDP: testbed.NDPBypass})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			runTraffic(t, p, 1<<20)
			if p.A.Endpoint.Stats.OutPassed.Load() == 0 {
				t.Errorf("no packet bypassed IPsec: NDP should have gone in clear")
			}
		})
	}
}
