package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/stack"
)

func forwardPair(t *testing.T) *testbed.Pair {
	t.Helper()
	p, err := testbed.New(testbed.Config{Plain: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// udpFlood sends one datagram from each of n distinct client sockets.
func udpFlood(t *testing.T, to net.Addr, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.WriteTo([]byte("x"), to)
		c.Close()
		if i%100 == 99 {
			time.Sleep(5 * time.Millisecond) // let the relay keep up
		}
	}
}

// TestForwardUDPBounded: 2,000 one-datagram clients (spoofed sources, in
// effect) leave at most --forward-max-sessions sessions; the rest are
// counted as refused (destination answering: every session replied) or
// evicted (destination silent: unanswered sessions make room); unanswered
// sessions end after their short timeout. Before, 2,000 clients left
// 1,935 sessions (a goroutine and 64 KiB each) for two minutes.
func TestForwardUDPBounded(t *testing.T) {
	const max, clients = 50, 2000
	for _, tc := range []struct {
		name  string
		echo  bool
		check func(t *testing.T, s *forwardStats)
	}{
		{"answered", true, func(t *testing.T, s *forwardStats) {
			// Refused once every session has its answer; a session
			// still waiting for it when the next source comes is
			// evicted instead (how many of each depends on timing).
			if s.UDPRefused.Load()+s.UDPEvicted.Load() == 0 {
				t.Error("nothing refused or evicted")
			}
		}},
		{"silent", false, func(t *testing.T, s *forwardStats) {
			if s.UDPEvicted.Load() == 0 {
				t.Errorf("nothing evicted (refused %d)", s.UDPRefused.Load())
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := forwardPair(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			const port = 9
			if tc.echo {
				if err := p.B.ServeUDPEcho(ctx, port); err != nil {
					t.Fatal(err)
				}
			} else {
				sink, err := gonet.DialUDP(p.B.Stack, ptr(p.B.FullAddress(p.AddrB, port)), nil, stack.Proto(p.AddrB))
				if err != nil {
					t.Fatal(err)
				}
				defer sink.Close()
				go io.Copy(io.Discard, sink)
			}
			base := runtime.NumGoroutine()
			var stats forwardStats
			f := forwardSpec{Proto: "udp", Listen: "127.0.0.1:0", To: netip.AddrPortFrom(p.AddrB, port)}
			lim := forwardLimits{MaxSessions: max, Idle: 3 * time.Second}
			stop, addr := startForwardTest(t, ctx, p.A, f, lim, &stats)
			defer stop()
			start := time.Now()
			udpFlood(t, addr, clients)
			// Goroutines: the relay's reader plus one per session (an
			// evicted session's goroutine takes a moment to end).
			var left int
			if !waitFor(time.Second, func() bool { left = runtime.NumGoroutine() - base; return left <= max+5 }) {
				t.Errorf("%d goroutines after %d clients, want at most ~%d sessions", left, clients, max)
			}
			if time.Since(start) > lim.Idle {
				t.Logf("flood took %v, longer than the idle timeout: the bound was not tested at its peak", time.Since(start))
			}
			peak := left
			tc.check(t, &stats)
			// Sessions end after their idle timeout (1 s here).
			if !waitFor(10*time.Second, func() bool { return runtime.NumGoroutine()-base <= 3 }) {
				t.Errorf("%d goroutines left after the idle timeout", runtime.NumGoroutine()-base)
			}
			if stats.UDPIdleClosed.Load() == 0 {
				t.Error("no session counted as idle-closed")
			}
			t.Logf("%d clients: peak %d goroutines; refused %d, evicted %d, idle-closed %d", clients, peak,
				stats.UDPRefused.Load(), stats.UDPEvicted.Load(), stats.UDPIdleClosed.Load())
		})
	}
}

// TestForwardTCPBounded: beyond --forward-max-sessions connections are
// closed at once and counted; idle connections are closed after
// --forward-idle-timeout; a connection with traffic outlives it. Before,
// there was no limit (600 idle connections held 1,362 goroutines) and
// no idle timeout.
func TestForwardTCPBounded(t *testing.T) {
	const max, clients = 10, 30
	p := forwardPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.B.ServeTCPEcho(ctx, 7); err != nil {
		t.Fatal(err)
	}
	var stats forwardStats
	f := forwardSpec{Proto: "tcp", Listen: "127.0.0.1:0", To: netip.AddrPortFrom(p.AddrB, 7)}
	stop, addr := startForwardTest(t, ctx, p.A, f, forwardLimits{MaxSessions: max, Idle: time.Second}, &stats)
	defer stop()

	// One busy connection first: it echoes a byte every 300 ms for 2.5 s.
	busy, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	echo1 := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("y")); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 1))
		return err
	}
	if err := echo1(busy); err != nil {
		t.Fatalf("busy connection: %v", err)
	}
	var idle []net.Conn
	for i := 0; i < clients; i++ {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	if !waitFor(5*time.Second, func() bool { return stats.TCPRefused.Load() == clients-(max-1) }) {
		t.Fatalf("refused %d of %d connections beyond the limit of %d", stats.TCPRefused.Load(), clients-(max-1), max)
	}
	done := make(chan error)
	go func() {
		for i := 0; i < 8; i++ {
			time.Sleep(300 * time.Millisecond)
			if err := echo1(busy); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	// Every idle connection, admitted or refused, ends with EOF.
	for i, c := range idle {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("idle connection %d: read %d, %v; want EOF", i, n, err)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("busy connection closed although it had traffic: %v", err)
	}
	if !waitFor(3*time.Second, func() bool { return stats.TCPIdleClosed.Load() == max-1 }) {
		t.Errorf("idle-closed %d, want %d", stats.TCPIdleClosed.Load(), max-1)
	}
}

// startForwardTest starts f with its listener on a free port and returns
// the stop function and the listener's address.
func startForwardTest(t *testing.T, ctx context.Context, st *stack.Stack, f forwardSpec, lim forwardLimits, stats *forwardStats) (func(), net.Addr) {
	t.Helper()
	// Find a free port, then listen on it (startForward takes an address).
	var addr net.Addr
	if f.Proto == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = c.LocalAddr()
		c.Close()
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr()
		l.Close()
	}
	f.Listen = addr.String()
	stop, err := startForward(ctx, st, f, lim, stats, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return stop, addr
}

func ptr[T any](v T) *T { return &v }
