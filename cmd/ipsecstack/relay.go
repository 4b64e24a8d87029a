package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The relays between a listener and the other end of each connection or
// UDP client session. They take both ends as net.Conn and a dial
// function, so the same code serves --publish (listener in the stack,
// host dialled) and can serve --forward (listener on the host, stack
// dialled; forward.go still has its own copy, with the same behaviour,
// until it is moved onto these). Byte copying is copyIdle's, shared.

// serveTCPRelay accepts connections on ln, at most lim.MaxSessions at once
// (beyond: closed at once, counted in stats.TCPRefused), dials the other
// end of each with dial and relays both ways (pipeTCP). The returned
// function closes the listener and every connection and waits for the
// relays to end.
func serveTCPRelay(ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error), what string,
	lim forwardLimits, stats *forwardStats, log *slog.Logger) func() {
	ctx, cancel := context.WithCancel(ctx)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		active int
	)
	// track adds (false once stopping: the caller closes c) or removes
	// a connection the stop function must close.
	track := func(c net.Conn, add bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if !add {
			delete(conns, c)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		conns[c] = struct{}{}
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
					log.Error("relay accept", "relay", what, "err", err)
				}
				return
			}
			// Read once, now: a gVisor connection that has failed or
			// closed has no remote address (RemoteAddr is nil).
			from := addrString(c.RemoteAddr())
			mu.Lock()
			full := active >= lim.MaxSessions
			if !full {
				active++
			}
			mu.Unlock()
			if full {
				stats.TCPRefused.Add(1)
				log.Debug("relay refused", "relay", what, "from", from, "max", lim.MaxSessions)
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
				defer c.Close()
				dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
				o, err := dial(dctx)
				dcancel()
				if err != nil {
					log.Warn("relay dial", "relay", what, "from", from, "err", err)
					return
				}
				if !track(o, true) {
					o.Close()
					return
				}
				defer track(o, false)
				defer o.Close()
				up, down, timedOut := pipeTCP(c, o, lim.Idle)
				if timedOut {
					stats.TCPIdleClosed.Add(1)
				}
				log.Debug("relay closed", "relay", what, "from", from, "bytes_in", up, "bytes_out", down, "idle_timeout", timedOut)
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
	}
}

// pipeTCP copies a to b and b to a, passing each half-close on, until both
// directions are done or neither has moved a byte for idle (then both are
// closed). It returns the bytes copied each way.
func pipeTCP(a, b net.Conn, idle time.Duration) (ab, ba int64, timedOut bool) {
	var last atomic.Int64 // unix nanos of the last byte either way
	last.Store(time.Now().UnixNano())
	var to atomic.Bool
	done := make(chan struct{})
	go func() {
		ab = copyIdle(b, a, idle, &last, &to)
		closeWrite(b)
		close(done)
	}()
	ba = copyIdle(a, b, idle, &last, &to)
	closeWrite(a)
	if to.Load() {
		a.Close()
		b.Close()
	}
	<-done
	return ab, ba, to.Load()
}

// addrString is a's String, or "?" for a nil address.
func addrString(a net.Addr) string {
	if a == nil {
		return "?"
	}
	return a.String()
}

// closeWrite half-closes a TCP connection (the host's *net.TCPConn or the
// stack's *gonet.TCPConn).
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// sessionRelay relays datagrams between clients of front and one
// connected socket per client, made by dial, whose replies go back to
// that client from front. Sessions are bounded as --forward's UDP relay
// bounds them: beyond lim.MaxSessions a new source takes the place of the
// oldest session that never had a reply, else its datagram is dropped;
// unanswered sessions end after 30 s at most, answered ones after
// lim.Idle without traffic.
type sessionRelay struct {
	front net.PacketConn
	dial  func(context.Context) (net.Conn, error)
	what  string
	lim   forwardLimits
	stats *forwardStats
	log   *slog.Logger

	mu       sync.Mutex
	sessions map[string]*relaySession
	wg       sync.WaitGroup
}

type relaySession struct {
	c       net.Conn
	from    net.Addr
	key     string
	created time.Time
	last    atomic.Int64 // unix nanos of the last datagram either way
	replied atomic.Bool
	ended   atomic.Bool
}

func (s *relaySession) timeout(lim forwardLimits) time.Duration {
	if !s.replied.Load() {
		return min(lim.Idle, udpUnrepliedIdle)
	}
	return lim.Idle
}

func newSessionRelay(front net.PacketConn, dial func(context.Context) (net.Conn, error), what string,
	lim forwardLimits, stats *forwardStats, log *slog.Logger) *sessionRelay {
	return &sessionRelay{front: front, dial: dial, what: what, lim: lim, stats: stats, log: log, sessions: map[string]*relaySession{}}
}

// start runs the relay until the returned function is called.
func (r *sessionRelay) start(ctx context.Context) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx)
	}()
	return func() { cancel(); r.front.Close(); <-done }
}

func (r *sessionRelay) run(ctx context.Context) {
	defer func() {
		r.mu.Lock()
		for _, s := range r.sessions {
			s.c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	}()
	buf := make([]byte, 65536)
	for {
		n, from, err := r.front.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			if isTimeout(err) {
				continue
			}
			r.log.Error("relay udp read", "relay", r.what, "err", err)
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
			dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := r.dial(dctx)
			dcancel()
			if err != nil {
				r.mu.Unlock()
				r.log.Warn("relay udp dial", "relay", r.what, "err", err)
				continue
			}
			s = &relaySession{c: c, from: from, key: key, created: time.Now()}
			s.last.Store(time.Now().UnixNano())
			r.sessions[key] = s
			r.log.Debug("relay udp session", "relay", r.what, "from", key)
			r.wg.Add(1)
			go r.back(ctx, s)
		}
		s.last.Store(time.Now().UnixNano())
		r.mu.Unlock()
		if _, err := s.c.Write(buf[:n]); err != nil {
			r.log.Debug("relay udp write", "relay", r.what, "err", err)
		}
	}
}

func (r *sessionRelay) evictLocked() bool {
	var old *relaySession
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

func (r *sessionRelay) endLocked(s *relaySession) {
	if r.sessions[s.key] == s {
		delete(r.sessions, s.key)
	}
	s.ended.Store(true)
	s.c.Close()
}

// back relays replies of session s to its client until the session is
// idle past its timeout or closed.
func (r *sessionRelay) back(ctx context.Context, s *relaySession) {
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
		r.front.WriteTo(rb[:n], s.from)
	}
}
