package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

// ServeTCPEcho serves TCP echo (RFC 862) on port of every address of the
// stack, IPv4 and IPv6 (a dual-stack IPv6 listener), until ctx ends.
func (s *Stack) ServeTCPEcho(ctx context.Context, port uint16) error {
	l, err := s.listenTCP(ctx, port, "echo")
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	go func() {
		defer wg.Wait()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func(c net.Conn) {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}(c)
		}
	}()
	return nil
}

// ServeUDPEcho serves UDP echo on port of every address until ctx ends.
func (s *Stack) ServeUDPEcho(ctx context.Context, port uint16) error {
	return s.serveUDP(ctx, port, "echo", func(c *gonet.UDPConn, b []byte, from net.Addr) { c.WriteTo(b, from) })
}

// discardBuf is the read size of the discard services: one read takes
// whatever the socket holds (a TCP receive window's worth, or the largest
// datagram), so a bulk sink costs few reads and no allocation per read.
const discardBuf = 256 << 10

// ServeTCPDiscard serves TCP discard (RFC 863) on port of every address of
// the stack, IPv4 and IPv6, until ctx ends: every connection is read to its
// end and the data thrown away. It is the sink of one-way bulk benchmarks.
func (s *Stack) ServeTCPDiscard(ctx context.Context, port uint16) error {
	l, err := s.listenTCP(ctx, port, "discard")
	if err != nil {
		return err
	}
	go func() {
		var mu sync.Mutex
		conns := map[net.Conn]struct{}{}
		go func() {
			// Ending ctx ends every connection, not only the listener.
			<-ctx.Done()
			mu.Lock()
			for c := range conns {
				c.Close()
			}
			mu.Unlock()
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if ctx.Err() != nil {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			mu.Unlock()
			go func(c net.Conn) {
				defer func() { mu.Lock(); delete(conns, c); mu.Unlock() }()
				defer c.Close()
				buf := make([]byte, discardBuf) // one per connection, reused by every read
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}(c)
		}
	}()
	return nil
}

// ServeUDPDiscard serves UDP discard (RFC 863) on port of every address
// until ctx ends: datagrams are read and dropped, nothing is sent back.
func (s *Stack) ServeUDPDiscard(ctx context.Context, port uint16) error {
	return s.serveUDP(ctx, port, "discard", func(*gonet.UDPConn, []byte, net.Addr) {})
}

// listenTCP listens on port of every address of the stack, IPv4 and IPv6
// (a dual-stack IPv6 listener), until ctx ends; what names the service
// in errors.
func (s *Stack) listenTCP(ctx context.Context, port uint16, what string) (*gonet.TCPListener, error) {
	l, err := gonet.ListenTCP(s.Stack, tcpip.FullAddress{NIC: s.NIC, Port: port}, ipv6.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("tcp %s on port %d: %w", what, port, err)
	}
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	return l, nil
}

// serveUDP reads the datagrams to port of every address until ctx ends and
// hands each to handle (with the socket, to answer on); what names the
// service in errors.
func (s *Stack) serveUDP(ctx context.Context, port uint16, what string, handle func(c *gonet.UDPConn, b []byte, from net.Addr)) error {
	c, err := gonet.DialUDP(s.Stack, &tcpip.FullAddress{NIC: s.NIC, Port: port}, nil, ipv6.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("udp %s on port %d: %w", what, port, err)
	}
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				// A closed stack or socket fails every read from now
				// on: stop rather than spin.
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
					continue
				}
				return
			}
			handle(c, buf[:n], from)
		}
	}()
	return nil
}
