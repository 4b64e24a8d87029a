package main

import (
	"context"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

const tcpChunk = 8 << 20

// BenchmarkTCP transfers tcpChunk bytes per iteration over a pair with ESP
// and over a plain pair (same harness, same link, no policies), alternating
// in the same run, and reports both rates and esp/plain.
func BenchmarkTCP(b *testing.B) {
	for _, name := range []string{"aes-gcm-128", "aes-gcm-256", "chacha20-poly1305", "aes-cbc-128+hmac-sha256"} {
		for _, mode := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
			if mode == xfrm.ModeTunnel && name != "aes-gcm-128" {
				continue
			}
			b.Run(name+"/"+mode.String(), func(b *testing.B) {
				suite, _ := testbed.SuiteByName(name)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				mk := func(plain bool) *testbed.Pair {
					p, err := testbed.New(testbed.Config{Suite: suite, Mode: mode, Inner: 4, Plain: plain})
					if err != nil {
						b.Fatal(err)
					}
					if err := p.StartServers(ctx); err != nil {
						b.Fatal(err)
					}
					// Warm up: ARP, TCP windows.
					if _, err := testbed.TCPTransfer(ctx, p.A, p.AddrB, 1<<20); err != nil {
						b.Fatal(err)
					}
					return p
				}
				esp, plain := mk(false), mk(true)
				defer esp.Close()
				defer plain.Close()
				b.SetBytes(tcpChunk)
				b.ResetTimer()
				var tEsp, tPlain time.Duration
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
					if _, err := testbed.TCPTransfer(ctx, esp.A, esp.AddrB, tcpChunk); err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					if _, err := testbed.TCPTransfer(ctx, plain.A, plain.AddrB, tcpChunk); err != nil {
						b.Fatal(err)
					}
					tEsp += t1.Sub(t0)
					tPlain += time.Since(t1)
				}
				mb := float64(b.N) * tcpChunk / 1e6
				b.ReportMetric(mb/tEsp.Seconds(), "esp-MB/s")
				b.ReportMetric(mb/tPlain.Seconds(), "plain-MB/s")
				b.ReportMetric(tPlain.Seconds()/tEsp.Seconds(), "esp/plain")
			})
		}
	}
}
