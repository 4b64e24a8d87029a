package stack_test

import (
	"context"
	"io"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// benchSinkPort is BenchmarkTCPBulk's discard sink.
const benchSinkPort = 9200

// BenchmarkTCPBulk sends 8 MiB per iteration over one TCP connection of
// a testbed pair, as bench's TCP suite does (no leak-detector tap, a sink
// that only counts, a sender that writes one fixed buffer), so that a CPU
// profile of one case shows the stack and the engine rather than the
// harness. Run a case alone for a profile, e.g.
// -bench 'TCPBulk/aes-gcm-128/transport' -cpuprofile; the ratio to plain
// is bench's business (it interleaves the contenders).
func BenchmarkTCPBulk(b *testing.B) {
	const chunk = 8 << 20
	cases := []struct {
		name  string
		suite string
		mode  xfrm.Mode
		plain bool
	}{
		{"plain", "aes-gcm-128", xfrm.ModeTransport, true},
		{"aes-gcm-128/transport", "aes-gcm-128", xfrm.ModeTransport, false},
		{"aes-gcm-128/tunnel", "aes-gcm-128", xfrm.ModeTunnel, false},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			suite, _ := testbed.SuiteByName(c.suite)
			p, err := testbed.New(testbed.Config{Suite: suite, Mode: c.mode, Inner: 4, Plain: c.plain})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			p.LinkA.SetTap(nil)
			p.LinkB.SetTap(nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			l, err := gonet.ListenTCP(p.B.Stack, p.B.FullAddress(netip.Addr{}, benchSinkPort), stack.Proto(p.AddrB))
			if err != nil {
				b.Fatal(err)
			}
			go func() { <-ctx.Done(); l.Close() }()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						io.Copy(io.Discard, c)
						c.Write([]byte{1})
					}()
				}
			}()
			buf := make([]byte, 64<<10)
			for i := range buf {
				buf[i] = byte(i*7 + i>>8)
			}
			send := func(n int) {
				c, err := gonet.DialContextTCP(ctx, p.A.Stack, p.A.FullAddress(p.AddrB, benchSinkPort), stack.Proto(p.AddrB))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				for left := n; left > 0; left -= len(buf) {
					if _, err := c.Write(buf[:min(left, len(buf))]); err != nil {
						b.Fatal(err)
					}
				}
				c.CloseWrite()
				var ack [1]byte
				if _, err := io.ReadFull(c, ack[:]); err != nil {
					b.Fatal(err)
				}
			}
			send(2 << 20) // warm up: neighbours, windows
			b.SetBytes(chunk)
			b.ReportAllocs()
			cpu0 := processCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				send(chunk)
			}
			b.StopTimer()
			// The process's CPU time per 8 MiB, both stacks and the
			// harness: unlike MB/s, it barely moves with what else
			// the machine runs, so it compares builds on a busy one.
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
		})
	}
}

// processCPU returns the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
