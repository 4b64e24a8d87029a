package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
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
func startForward(ctx context.Context, st *stack.Stack, f forwardSpec, lim forwardLimits, stats *forwardStats, log *slog.Logger) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if f.Proto == "udp" {
		pc, err := net.ListenPacket("udp", f.Listen)
		if err != nil {
			cancel()
			return nil, err
		}
		r := &udpRelay{st: st, pc: pc, f: f, lim: lim, stats: stats, log: log, sessions: map[string]*udpSession{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(ctx)
		}()
		return func() { cancel(); pc.Close(); wg.Wait() }, nil
	}
	ln, err := net.Listen("tcp", f.Listen)
	if err != nil {
		cancel()
		return nil, err
	}
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	active := 0 // client connections being relayed
	track := func(c net.Conn, add bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if add {
			if ctx.Err() != nil {
				return false
			}
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
					log.Error("forward accept", "listen", f.Listen, "err", err)
				}
				return
			}
			mu.Lock()
			full := active >= lim.MaxSessions
			if !full {
				active++
			}
			mu.Unlock()
			if full {
				// Refused after accept (a TCP listener cannot refuse a
				// handshake): closed at once, nothing allocated.
				stats.TCPRefused.Add(1)
				log.Debug("forward refused", "from", c.RemoteAddr().String(), "max", lim.MaxSessions)
				c.Close()
				continue
			}
			if !track(c, true) {
				c.Close()
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { mu.Lock(); active--; mu.Unlock() }()
				defer track(c, false)
				spliceTCP(ctx, st, c, f, lim.Idle, stats, log, track)
			}()
		}
	}()
	return func() {
		cancel()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}, nil
}

// spliceTCP dials f.To inside the stack and copies both ways, passing
// half-closes on, until both directions are done or neither has carried a
// byte for idle.
func spliceTCP(ctx context.Context, st *stack.Stack, c net.Conn, f forwardSpec, idle time.Duration, stats *forwardStats, log *slog.Logger, track func(net.Conn, bool) bool) {
	defer c.Close()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	sc, err := gonet.DialContextTCP(dctx, st.Stack, st.FullAddress(f.To.Addr(), f.To.Port()), stack.Proto(f.To.Addr()))
	cancel()
	if err != nil {
		log.Warn("forward dial", "from", c.RemoteAddr().String(), "to", f.To.String(), "err", err)
		return
	}
	if !track(sc, true) {
		sc.Close()
		return
	}
	defer track(sc, false)
	defer sc.Close()
	log.Debug("forward open", "from", c.RemoteAddr().String(), "to", f.To.String())
	var last atomic.Int64 // unix nanos of the last byte either way
	last.Store(time.Now().UnixNano())
	var timedOut atomic.Bool
	var up, down int64
	done := make(chan struct{})
	go func() {
		up = copyIdle(sc, c, idle, &last, &timedOut)
		sc.CloseWrite()
		close(done)
	}()
	down = copyIdle(c, sc, idle, &last, &timedOut)
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	if timedOut.Load() {
		// Idle both ways: end the other direction too.
		c.Close()
		sc.Close()
	}
	<-done
	if timedOut.Load() {
		stats.TCPIdleClosed.Add(1)
	}
	log.Debug("forward closed", "from", c.RemoteAddr().String(), "to", f.To.String(), "bytes_in", up, "bytes_out", down, "idle_timeout", timedOut.Load())
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

// udpRelay relays datagrams: each host client address gets its own socket
// inside the stack, connected to f.To, whose replies go back to that
// client from the listening socket. Sessions are bounded (lim.MaxSessions):
// a new source beyond the bound takes the place of the oldest session that
// never had a reply (as conntrack's early drop), else its datagram is
// dropped; so spoofed one-packet sources cannot push out real clients.
type udpRelay struct {
	st    *stack.Stack
	pc    net.PacketConn
	f     forwardSpec
	lim   forwardLimits
	stats *forwardStats
	log   *slog.Logger

	mu       sync.Mutex
	sessions map[string]*udpSession
	wg       sync.WaitGroup
}

type udpSession struct {
	c       *gonet.UDPConn
	from    net.Addr
	key     string
	created time.Time
	last    atomic.Int64 // unix nanos of the last datagram either way
	replied atomic.Bool  // the stack side answered at least once
	ended   atomic.Bool
}

// timeout is how long the session may stay idle.
func (s *udpSession) timeout(lim forwardLimits) time.Duration {
	if !s.replied.Load() {
		return min(lim.Idle, udpUnrepliedIdle)
	}
	return lim.Idle
}

func (r *udpRelay) run(ctx context.Context) {
	defer func() {
		r.mu.Lock()
		for _, s := range r.sessions {
			s.c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	}()
	to := r.st.FullAddress(r.f.To.Addr(), r.f.To.Port())
	buf := make([]byte, 65536)
	for {
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				r.log.Error("forward udp read", "listen", r.f.Listen, "err", err)
			}
			return
		}
		key := from.String()
		r.mu.Lock()
		s := r.sessions[key]
		if s == nil {
			if len(r.sessions) >= r.lim.MaxSessions && !r.evictLocked() {
				r.mu.Unlock()
				r.stats.UDPRefused.Add(1)
				continue
			}
			c, err := gonet.DialUDP(r.st.Stack, nil, &to, stack.Proto(r.f.To.Addr()))
			if err != nil {
				r.mu.Unlock()
				r.log.Warn("forward udp dial", "to", r.f.To.String(), "err", err)
				continue
			}
			s = &udpSession{c: c, from: from, key: key, created: time.Now()}
			s.last.Store(time.Now().UnixNano())
			r.sessions[key] = s
			r.log.Debug("forward udp session", "from", key, "to", r.f.To.String())
			r.wg.Add(1)
			go r.back(ctx, s)
		}
		s.last.Store(time.Now().UnixNano())
		r.mu.Unlock()
		if _, err := s.c.Write(buf[:n]); err != nil {
			r.log.Debug("forward udp write", "to", r.f.To.String(), "err", err)
		}
	}
}

// evictLocked ends the oldest session that never had a reply, making room
// for a new source; false if every session has been answered.
func (r *udpRelay) evictLocked() bool {
	var old *udpSession
	for _, s := range r.sessions {
		if !s.replied.Load() && (old == nil || s.created.Before(old.created)) {
			old = s
		}
	}
	if old == nil {
		return false
	}
	r.endLocked(old)
	r.stats.UDPEvicted.Add(1)
	return true
}

// endLocked removes s and closes its stack socket (its goroutine ends).
func (r *udpRelay) endLocked(s *udpSession) {
	if r.sessions[s.key] == s {
		delete(r.sessions, s.key)
	}
	s.ended.Store(true)
	s.c.Close()
}

// back relays the stack's replies of session s to its client until the
// session is idle past its timeout or closed.
func (r *udpRelay) back(ctx context.Context, s *udpSession) {
	defer r.wg.Done()
	rb := make([]byte, 65536)
	for {
		s.c.SetReadDeadline(time.Unix(0, s.last.Load()).Add(s.timeout(r.lim)))
		n, err := s.c.Read(rb)
		if err != nil {
			r.mu.Lock()
			idle := time.Since(time.Unix(0, s.last.Load())) >= s.timeout(r.lim)
			if s.ended.Load() || idle || ctx.Err() != nil || !isTimeout(err) {
				if idle && !s.ended.Load() && ctx.Err() == nil {
					r.stats.UDPIdleClosed.Add(1)
				}
				r.endLocked(s)
				r.mu.Unlock()
				return
			}
			r.mu.Unlock()
			continue
		}
		s.replied.Store(true)
		s.last.Store(time.Now().UnixNano())
		r.pc.WriteTo(rb[:n], s.from)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
