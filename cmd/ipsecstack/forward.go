package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/stack"
)

// udpIdle ends a UDP forwarding session after this long without traffic.
const udpIdle = 2 * time.Minute

// startForward starts a --forward listener on the host and returns the
// function that stops it (closing the listener and every connection).
func startForward(ctx context.Context, st *stack.Stack, f forwardSpec, log *slog.Logger) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if f.Proto == "udp" {
		pc, err := net.ListenPacket("udp", f.Listen)
		if err != nil {
			cancel()
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			forwardUDP(ctx, st, pc, f, log)
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
			if !track(c, true) {
				c.Close()
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer track(c, false)
				spliceTCP(ctx, st, c, f, log, track)
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
// half-closes on, until both directions are done.
func spliceTCP(ctx context.Context, st *stack.Stack, c net.Conn, f forwardSpec, log *slog.Logger, track func(net.Conn, bool) bool) {
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
	var up, down int64
	done := make(chan struct{})
	go func() {
		up, _ = io.Copy(sc, c)
		sc.CloseWrite()
		close(done)
	}()
	down, _ = io.Copy(c, sc)
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	<-done
	log.Debug("forward closed", "from", c.RemoteAddr().String(), "to", f.To.String(), "bytes_in", up, "bytes_out", down)
}

// forwardUDP relays datagrams: each host client address gets its own
// socket inside the stack, connected to f.To, whose replies go back to that
// client from the listening socket.
func forwardUDP(ctx context.Context, st *stack.Stack, pc net.PacketConn, f forwardSpec, log *slog.Logger) {
	type session struct {
		c    *gonet.UDPConn
		last time.Time
	}
	var mu sync.Mutex
	sessions := map[string]*session{}
	defer func() {
		mu.Lock()
		for _, s := range sessions {
			s.c.Close()
		}
		mu.Unlock()
	}()
	to := st.FullAddress(f.To.Addr(), f.To.Port())
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Error("forward udp read", "listen", f.Listen, "err", err)
			}
			return
		}
		key := from.String()
		mu.Lock()
		s := sessions[key]
		if s == nil {
			c, err := gonet.DialUDP(st.Stack, nil, &to, stack.Proto(f.To.Addr()))
			if err != nil {
				mu.Unlock()
				log.Warn("forward udp dial", "to", f.To.String(), "err", err)
				continue
			}
			s = &session{c: c}
			sessions[key] = s
			log.Debug("forward udp session", "from", key, "to", f.To.String())
			go func(s *session, from net.Addr) {
				rb := make([]byte, 65536)
				for {
					s.c.SetReadDeadline(time.Now().Add(udpIdle))
					n, err := s.c.Read(rb)
					if err != nil {
						mu.Lock()
						idle := time.Since(s.last) >= udpIdle
						if idle || ctx.Err() != nil || !isTimeout(err) {
							if sessions[from.String()] == s {
								delete(sessions, from.String())
							}
							mu.Unlock()
							s.c.Close()
							return
						}
						mu.Unlock()
						continue
					}
					mu.Lock()
					s.last = time.Now()
					mu.Unlock()
					pc.WriteTo(rb[:n], from)
				}
			}(s, from)
		}
		s.last = time.Now()
		mu.Unlock()
		if _, err := s.c.Write(buf[:n]); err != nil {
			log.Debug("forward udp write", "to", f.To.String(), "err", err)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
