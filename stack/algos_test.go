package stack_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// famCases are the address families every algorithm runs over.
var famCases = []struct {
	name         string
	inner, outer int
}{{"ipv6", 6, 6}, {"ipv4", 4, 4}}

func algoTCPBytes() int {
	if testing.Short() {
		return 256 << 10
	}
	return 1 << 20
}

// runPair builds a pair from cfg, runs the standard traffic (ping both
// ways, UDP 100 and 8000 bytes, TCP both ways, leak and counter checks)
// and returns the pair, still open, for further checks.
func runPair(t *testing.T, cfg testbed.Config) *testbed.Pair {
	t.Helper()
	p, err := testbed.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	runTraffic(t, p, algoTCPBytes())
	return p
}

// TestAlgoMatrix runs every ESP algorithm the algorithms issue adds in
// transport and tunnel mode, over IPv6 and IPv4, with and without ESN.
func TestAlgoMatrix(t *testing.T) {
	for _, s := range testbed.AlgoSuites {
		for _, m := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
			for _, f := range famCases {
				for _, esn := range []bool{false, true} {
					name := fmt.Sprintf("%s/%s/%s/esn=%v", s.Name, m, f.name, esn)
					t.Run(name, func(t *testing.T) {
						runPair(t, testbed.Config{Suite: s, Mode: m, Inner: f.inner, Outer: f.outer, ESN: esn})
					})
				}
			}
		}
	}
}

// TestAHMatrix runs AH alone with every integrity algorithm, transport and
// tunnel, IPv6 and IPv4, with and without ESN. NDP goes under integrity-
// only ESP with the same algorithm.
func TestAHMatrix(t *testing.T) {
	for _, s := range testbed.AHSuites {
		for _, m := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
			for _, f := range famCases {
				for _, esn := range []bool{false, true} {
					name := fmt.Sprintf("%s/%s/%s/esn=%v", s.Name, m, f.name, esn)
					t.Run(name, func(t *testing.T) {
						p := runPair(t, testbed.Config{Suite: s, Mode: m, Inner: f.inner, Outer: f.outer, ESN: esn,
							Bundle: []xfrm.Proto{xfrm.ProtoAH}})
						wantProto(t, p, xfrm.ProtoAH, testbed.SPIAtoB)
					})
				}
			}
		}
	}
}

// wantProto checks that A's SA of proto with spi carried traffic.
func wantProto(t *testing.T, p *testbed.Pair, proto xfrm.Proto, spi uint32) *xfrm.SA {
	t.Helper()
	dst := p.AddrB
	if p.Config.Mode == xfrm.ModeTunnel {
		dst = testbed.B6
		if p.Config.Outer == 4 {
			dst = testbed.B4
		}
	}
	sa := p.A.Engine.SAD.Lookup(dst, proto, spi)
	if sa == nil || sa.Counters.Packets.Load() == 0 {
		t.Fatalf("%s SA 0x%x to %v carried nothing", proto, spi, dst)
	}
	return sa
}

// TestBundles: ESP+AH, IPComp+ESP and IPComp+ESP+AH, in transport mode
// and (with the first transform as the tunnel, the others transport
// between the tunnel endpoints) in tunnel mode.
func TestBundles(t *testing.T) {
	gcm := testbed.Suites[0]
	cbc := testbed.Suites[3]
	bundles := []struct {
		name   string
		suite  testbed.Suite
		bundle []xfrm.Proto
	}{
		{"esp+ah", gcm, []xfrm.Proto{xfrm.ProtoESP, xfrm.ProtoAH}},
		{"esp-cbc+ah", cbc, []xfrm.Proto{xfrm.ProtoESP, xfrm.ProtoAH}},
		{"ipcomp+esp", gcm, []xfrm.Proto{xfrm.ProtoIPComp, xfrm.ProtoESP}},
		{"ipcomp+esp+ah", cbc, []xfrm.Proto{xfrm.ProtoIPComp, xfrm.ProtoESP, xfrm.ProtoAH}},
		{"ipcomp+ah", gcm, []xfrm.Proto{xfrm.ProtoIPComp, xfrm.ProtoAH}},
	}
	for _, b := range bundles {
		for _, m := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
			for _, f := range famCases {
				for _, esn := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/%s/%s/esn=%v", b.name, m, f.name, esn), func(t *testing.T) {
						cfg := testbed.Config{Suite: b.suite, Mode: m, Inner: f.inner, Outer: f.outer, ESN: esn,
							Bundle: b.bundle, AH: testbed.AHSuites[2]}
						p := runPair(t, cfg)
						for _, proto := range b.bundle {
							sa := wantProto(t, p, proto, testbed.SPIAtoB)
							if proto == xfrm.ProtoIPComp && sa.Counters.Uncompressed.Load() == 0 {
								t.Errorf("no packet went uncompressed (pings and ACKs are below the threshold)")
							}
						}
					})
				}
			}
		}
	}
}

// wireBytes runs a compressible TCP transfer A->B over a pair and returns
// the IP bytes A sent.
func wireBytes(t *testing.T, cfg testbed.Config, n int) uint64 {
	t.Helper()
	p, err := testbed.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.StartServers(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := testbed.Ping(ctx, p.A, p.AddrB, 1, 56); err != nil {
		t.Fatal(err)
	}
	var total atomic.Uint64
	done := make(chan struct{})
	p.SetTap(func(from string, frame []byte) {
		select {
		case <-done:
			return
		default:
		}
		if from == "A" {
			total.Add(uint64(len(frame) - 14))
		}
	})
	if _, err := testbed.TCPTransferText(ctx, p.A, p.AddrB, n); err != nil {
		t.Fatal(err)
	}
	close(done)
	if leaks, _ := p.Leaks(); len(leaks) > 0 {
		t.Fatalf("leaks: %v", leaks)
	}
	return total.Load()
}

// TestIPCompShrinksWire: the same compressible TCP transfer costs fewer
// bytes on the wire with IPComp+ESP than with ESP alone.
func TestIPCompShrinksWire(t *testing.T) {
	for _, m := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
		for _, f := range famCases {
			t.Run(fmt.Sprintf("%s/%s", m, f.name), func(t *testing.T) {
				const n = 1 << 20
				base := testbed.Config{Suite: testbed.Suites[0], Mode: m, Inner: f.inner, Outer: f.outer}
				esp := wireBytes(t, base, n)
				base.Bundle = []xfrm.Proto{xfrm.ProtoIPComp, xfrm.ProtoESP}
				comp := wireBytes(t, base, n)
				t.Logf("1 MiB of text: ESP %d bytes on the wire, IPComp+ESP %d (%.1f%%)", esp, comp, 100*float64(comp)/float64(esp))
				if comp >= esp/2 {
					t.Errorf("IPComp+ESP sent %d bytes, ESP alone %d: want well under half", comp, esp)
				}
			})
		}
	}
}

// TestESNBoundary starts every main SA 60 packets before 2^32 with ESN:
// the traffic carries both directions across the boundary, the receivers
// infer the high half (RFC 4303 App. A) and the ICVs cover it.
func TestESNBoundary(t *testing.T) {
	cases := []struct {
		name   string
		suite  testbed.Suite
		bundle []xfrm.Proto
	}{
		{"esp-gcm", testbed.Suites[0], nil},
		{"esp-cbc-sha256", testbed.Suites[5], nil},
		{"esp-ccm", testbed.AlgoSuites[2], nil},
		{"esp-gmac", testbed.AlgoSuites[5], nil},
		{"esp-ctr-xcbc", testbed.AlgoSuites[9], nil},
		{"ah-sha1", testbed.AHSuites[1], []xfrm.Proto{xfrm.ProtoAH}},
		{"ah-cmac", testbed.AHSuites[6], []xfrm.Proto{xfrm.ProtoAH}},
		{"esp+ah", testbed.Suites[0], []xfrm.Proto{xfrm.ProtoESP, xfrm.ProtoAH}},
	}
	for _, c := range cases {
		for _, m := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
			t.Run(c.name+"/"+m.String(), func(t *testing.T) {
				p := runPair(t, testbed.Config{Suite: c.suite, Mode: m, Inner: 6, ESN: true, Bundle: c.bundle,
					Seq: 1<<32 - 60, AH: testbed.AHSuites[1]})
				for _, e := range []*xfrm.Engine{p.A.Engine, p.B.Engine} {
					e.SAD.Walk(func(sa *xfrm.SA) bool {
						if sa.SPI() != testbed.SPIAtoB && sa.SPI() != testbed.SPIBtoA {
							return true
						}
						if sa.LastSeq() > 0 && sa.LastSeq() <= 1<<32 {
							t.Errorf("%v: last sequence number sent %#x, want past 2^32", sa, sa.LastSeq())
						}
						if sa.LastSeq() == 0 && sa.ReplayTop() <= 1<<32 {
							t.Errorf("%v: highest sequence number received %#x, want past 2^32", sa, sa.ReplayTop())
						}
						return true
					})
				}
			})
		}
	}
}

// TestNoESNExhaustion: without ESN an SA whose counter reaches 2^32-1
// stops sending (RFC 4303 §3.3.3) and counts XfrmOutStateSeqError.
func TestNoESNExhaustion(t *testing.T) {
	p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: xfrm.ModeTransport, Inner: 4, Seq: 1<<32 - 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	testbed.Ping(ctx, p.A, p.AddrB, 3, 56)
	if v, _ := p.A.Engine.Stats.Get("XfrmOutStateSeqError"); v == 0 {
		t.Fatal("no XfrmOutStateSeqError after the counter ran out")
	}
}

// TestReplayWindows: anti-replay off (window 0) and a 4096-packet window,
// for ESP and AH.
func TestReplayWindows(t *testing.T) {
	for _, w := range []uint32{0, 4096} {
		for _, b := range [][]xfrm.Proto{{xfrm.ProtoESP}, {xfrm.ProtoAH}} {
			t.Run(fmt.Sprintf("window=%d/%s", w, b[0]), func(t *testing.T) {
				cfg := testbed.Config{Suite: testbed.Suites[3], Mode: xfrm.ModeTransport, Inner: 6, Bundle: b,
					ReplayWindow: w, ReplayOff: w == 0, ESN: true}
				p := runPair(t, cfg)
				sa := p.B.Engine.SAD.Lookup(testbed.B6, b[0], testbed.SPIAtoB)
				if sa == nil || sa.Config.ReplayWindow != w {
					t.Fatalf("SA window %v, want %d", sa, w)
				}
			})
		}
	}
}
