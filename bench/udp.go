package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/stack"
)

// udpWindow is the number of 64-byte datagrams kept in flight.
const udpWindow = 32

// udpEchoes keeps udpWindow datagrams of 64 bytes in flight to B's echo
// server for d and returns echoes received per second (each echo is two
// protected packets).
func udpEchoes(p *testbed.Pair, d time.Duration) (float64, error) {
	raddr := p.A.FullAddress(p.AddrB, testbed.EchoPort)
	c, err := gonet.DialUDP(p.A.Stack, nil, &raddr, stack.Proto(p.AddrB))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	msg := make([]byte, 64)
	buf := make([]byte, 2048)
	fill := func() error {
		for i := 0; i < udpWindow; i++ {
			if _, err := c.Write(msg); err != nil {
				return err
			}
		}
		return nil
	}
	if err := fill(); err != nil {
		return 0, err
	}
	n := 0
	start := time.Now()
	end := start.Add(d)
	c.SetReadDeadline(end.Add(50 * time.Millisecond))
	for time.Now().Before(end) {
		if _, err := c.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
				// Lost packets drained the window: refill it.
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if err := fill(); err != nil {
					return 0, err
				}
				continue
			}
			return 0, err
		}
		n++
		if _, err := c.Write(msg); err != nil {
			return 0, err
		}
	}
	el := time.Since(start)
	// Let the stragglers arrive before the next measurement.
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	return float64(n) / el.Seconds(), nil
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func runUDP(o opts, r *Results) error {
	rounds, d := 7, 300*time.Millisecond
	if o.quick {
		rounds, d = 5, 150*time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	closers := map[*testbed.Pair]context.CancelFunc{}
	closePair := func(p *testbed.Pair) {
		closers[p]()
		p.Close()
	}
	// Each pair has its own context, cancelled before the pair closes:
	// stack.ServeUDPEcho spins on a closed stack until its context ends.
	mk := func(cfg testbed.Config) (*testbed.Pair, error) {
		ctx, cancel := context.WithCancel(ctx)
		p, err := newIPsecPair(ctx, cfg)
		if err != nil {
			cancel()
			return nil, err
		}
		if err := p.StartServers(ctx); err != nil {
			cancel()
			p.Close()
			return nil, err
		}
		if err := testbed.UDPEcho(ctx, p.A, p.AddrB, 64); err != nil {
			cancel()
			p.Close()
			return nil, err
		}
		closers[p] = cancel
		return p, nil
	}
	plain, err := mk(testbed.Config{Plain: true})
	if err != nil {
		return err
	}
	defer closePair(plain)
	for _, name := range udpSuites {
		suite, _ := testbed.SuiteByName(name)
		p, err := mk(testbed.Config{Suite: suite})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		var re, rp, ratios []float64
		for i := 0; i < rounds; i++ {
			a, err := udpEchoes(p, d)
			if err != nil {
				closePair(p)
				return fmt.Errorf("%s: %w", name, err)
			}
			b, err := udpEchoes(plain, d)
			if err != nil {
				closePair(p)
				return fmt.Errorf("plain: %w", err)
			}
			re, rp, ratios = append(re, a), append(rp, b), append(ratios, a/b)
		}
		closePair(p)
		r.rate("udp", "ESP "+name+" transport, 64 B", "echoes per second", "1/s", median(re), median(rp), median(ratios), "plain gVisor",
			fmt.Sprintf("%d in flight, 2 packets per echo, median of %d interleaved rounds", udpWindow, rounds))
	}
	return nil
}

var udpSuites = []string{"aes-gcm-128", "chacha20-poly1305", "aes-cbc-128+hmac-sha256"}
