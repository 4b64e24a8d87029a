package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/stack"
)

// Defaults of --forward-max-sessions and --forward-idle-timeout.
const (
	defaultForwardMaxSessions = 256
	defaultForwardIdle        = 2 * time.Minute
)

// udpUnrepliedIdle ends a UDP session that never had an answer from the
// stack after this long (or the idle timeout, if shorter): like Linux
// conntrack's 30 s for unreplied UDP, it keeps one-packet (and spoofed)
// sources from holding a session for the full idle time.
const udpUnrepliedIdle = 30 * time.Second

// forwardLimits bound a --forward listener.
type forwardLimits struct {
	// MaxSessions is the most TCP connections, or UDP client sessions,
	// at once.
	MaxSessions int
	// Idle closes a connection or session without traffic in either
	// direction for this long.
	Idle time.Duration
}

// forwardStats count what the relays refused or ended, for `ipsecstack
// stats` and /metrics.
type forwardStats struct {
	TCPRefused    atomic.Uint64 // connections closed at once: MaxSessions reached
	TCPIdleClosed atomic.Uint64 // connections closed after Idle without traffic
	UDPRefused    atomic.Uint64 // datagrams from a new source dropped: MaxSessions replied sessions
	UDPEvicted    atomic.Uint64 // unreplied sessions ended early to make room for a new source
	UDPIdleClosed atomic.Uint64 // sessions ended after their idle timeout
}

// startForward starts a --forward listener on the host and returns the
// function that stops it (closing the listener and every connection).
// Each connection or UDP client session is dialled to f.To inside the
// stack (relay.go).
func startForward(ctx context.Context, st *stack.Stack, f forwardSpec, lim forwardLimits, stats *forwardStats, log *slog.Logger) (func(), error) {
	to, proto := st.FullAddress(f.To.Addr(), f.To.Port()), stack.Proto(f.To.Addr())
	if f.Proto == "udp" {
		pc, err := net.ListenPacket("udp", f.Listen)
		if err != nil {
			return nil, err
		}
		r := newSessionRelay(pc, func(context.Context) (net.Conn, error) { return gonet.DialUDP(st.Stack, nil, &to, proto) },
			f.String(), lim, stats, log)
		return r.start(ctx), nil
	}
	ln, err := net.Listen("tcp", f.Listen)
	if err != nil {
		return nil, err
	}
	return serveTCPRelay(ctx, ln, func(ctx context.Context) (net.Conn, error) { return gonet.DialContextTCP(ctx, st.Stack, to, proto) },
		f.String(), lim, stats, log), nil
}

// relayBuf is the buffer of each direction of a --forward tcp connection,
// allocated once per connection: at 128 KiB a read from the stack takes
// what some 90 segments brought, and a write to it fills a good part of
// the send window in one call, where 32 KiB cost four times the calls
// (and wake-ups of the stack's TCP goroutine) per byte.
const relayBuf = 128 << 10

// copyIdle copies src to dst until EOF or an error, or until neither
// direction (last is shared) has moved a byte for idle; then it sets
// timedOut and closes src so the other direction's read ends too.
func copyIdle(dst, src net.Conn, idle time.Duration, last *atomic.Int64, timedOut *atomic.Bool) int64 {
	buf := make([]byte, relayBuf)
	var n int64
	for {
		src.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
		r, err := src.Read(buf)
		if r > 0 {
			last.Store(time.Now().UnixNano())
			w, werr := dst.Write(buf[:r])
			n += int64(w)
			if werr != nil {
				return n
			}
			last.Store(time.Now().UnixNano())
		}
		if err != nil {
			if isTimeout(err) && !timedOut.Load() {
				if time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other direction moved: not idle
				}
				timedOut.Store(true)
				src.Close()
				dst.Close()
			}
			return n
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
