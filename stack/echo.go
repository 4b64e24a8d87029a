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
	l, err := gonet.ListenTCP(s.Stack, tcpip.FullAddress{NIC: s.NIC, Port: port}, ipv6.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("tcp echo on port %d: %w", port, err)
	}
	go func() {
		<-ctx.Done()
		l.Close()
	}()
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
	c, err := gonet.DialUDP(s.Stack, &tcpip.FullAddress{NIC: s.NIC, Port: port}, nil, ipv6.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("udp echo on port %d: %w", port, err)
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
			c.WriteTo(buf[:n], from)
		}
	}()
	return nil
}
