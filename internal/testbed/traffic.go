package testbed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/stack"
)

// Ports the servers listen on.
const (
	TCPSinkPort = 9000
	EchoPort    = 7
)

// StartServers starts a TCP sink (reads everything, answers with its
// SHA-256) and TCP/UDP echo on both stacks.
func (p *Pair) StartServers(ctx context.Context) error {
	for _, s := range []*stack.Stack{p.A, p.B} {
		if err := ServeSink(ctx, s, TCPSinkPort); err != nil {
			return err
		}
		if err := s.ServeTCPEcho(ctx, EchoPort); err != nil {
			return err
		}
		if err := s.ServeUDPEcho(ctx, EchoPort); err != nil {
			return err
		}
	}
	return nil
}

// ServeSink serves the TCP sink protocol on port of every address of s
// until ctx ends: it reads each connection to EOF and answers with the
// SHA-256 of what it read.
func ServeSink(ctx context.Context, s *stack.Stack, port uint16) error {
	l, err := gonet.ListenTCP(s.Stack, s.FullAddress(netip.IPv6Unspecified(), port), stack.Proto(netip.IPv6Unspecified()))
	if err != nil {
		return fmt.Errorf("sink listen: %w", err)
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
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					return
				}
				c.Write(h.Sum(nil))
			}()
		}
	}()
	return nil
}

// TCPTransfer sends n pseudo-random bytes from one stack to the sink at
// dst, and checks the SHA-256 the sink returns. It returns the rate.
func TCPTransfer(ctx context.Context, from *stack.Stack, dst netip.Addr, n int) (bytesPerSec float64, err error) {
	return TCPTransferFrom(ctx, from, netip.Addr{}, dst, TCPSinkPort, n)
}

// TCPTransferFrom is TCPTransfer from source address src (the zero Addr
// leaves the choice to the stack) to a sink at dst:port.
func TCPTransferFrom(ctx context.Context, from *stack.Stack, src, dst netip.Addr, port uint16, n int) (bytesPerSec float64, err error) {
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	return tcpTransfer(ctx, from, src, dst, port, n, func(buf []byte) {
		for i := 0; i < len(buf); i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8 && i+j < len(buf); j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
	})
}

// TCPTransferText is TCPTransfer with compressible content (repeated
// text), for IPComp.
func TCPTransferText(ctx context.Context, from *stack.Stack, dst netip.Addr, n int) (bytesPerSec float64, err error) {
	line := []byte("GET /index.html HTTP/1.1 Host: example.com Accept: */* ")
	off := 0
	return tcpTransfer(ctx, from, netip.Addr{}, dst, TCPSinkPort, n, func(buf []byte) {
		for i := range buf {
			buf[i] = line[off%len(line)] + byte(off/4096%3)
			off++
		}
	})
}

// peerName names dst, and src when one is given, for error messages.
func peerName(src, dst netip.Addr) string {
	if src.IsValid() {
		return fmt.Sprintf("%v from %v", dst, src)
	}
	return dst.String()
}

func tcpTransfer(ctx context.Context, from *stack.Stack, src, dst netip.Addr, port uint16, n int, fill func([]byte)) (bytesPerSec float64, err error) {
	raddr := from.FullAddress(dst, port)
	var c *gonet.TCPConn
	if src.IsValid() {
		c, err = gonet.DialTCPWithBind(ctx, from.Stack, from.FullAddress(src, 0), raddr, stack.Proto(dst))
	} else {
		c, err = gonet.DialContextTCP(ctx, from.Stack, raddr, stack.Proto(dst))
	}
	if err != nil {
		return 0, fmt.Errorf("tcp dial %v: %w", peerName(src, dst), err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	buf := make([]byte, 64<<10)
	h := sha256.New()
	start := time.Now()
	for left := n; left > 0; {
		m := min(left, len(buf))
		fill(buf[:m])
		h.Write(buf[:m])
		if _, err := c.Write(buf[:m]); err != nil {
			return 0, fmt.Errorf("tcp write to %v after %d bytes: %w", dst, n-left, err)
		}
		left -= m
	}
	if err := c.CloseWrite(); err != nil {
		return 0, fmt.Errorf("tcp close-write: %w", err)
	}
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, sum); err != nil {
		return 0, fmt.Errorf("tcp read digest from %v: %w", dst, err)
	}
	el := time.Since(start)
	if !bytes.Equal(sum, h.Sum(nil)) {
		return 0, fmt.Errorf("tcp transfer to %v: content differs (sha256 mismatch)", dst)
	}
	return float64(n) / el.Seconds(), nil
}

// UDPEcho sends one datagram of size bytes to the echo server at dst and
// checks the echo, retrying a few times (the first packet may wait for
// neighbour resolution).
func UDPEcho(ctx context.Context, from *stack.Stack, dst netip.Addr, size int) error {
	return UDPEchoFrom(ctx, from, netip.Addr{}, dst, EchoPort, size)
}

// UDPEchoFrom is UDPEcho from source address src (the zero Addr leaves the
// choice to the stack) to an echo server at dst:port.
func UDPEchoFrom(ctx context.Context, from *stack.Stack, src, dst netip.Addr, port uint16, size int) error {
	raddr := from.FullAddress(dst, port)
	var laddr *tcpip.FullAddress
	if src.IsValid() {
		l := from.FullAddress(src, 0)
		laddr = &l
	}
	c, err := gonet.DialUDP(from.Stack, laddr, &raddr, stack.Proto(dst))
	if err != nil {
		return fmt.Errorf("udp dial %v: %w", peerName(src, dst), err)
	}
	defer c.Close()
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i*13 + size)
	}
	got := make([]byte, size+100)
	for try := 0; try < 5; try++ {
		if _, err := c.Write(msg); err != nil {
			return fmt.Errorf("udp write %d bytes to %v: %w", size, dst, err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(got)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		if !bytes.Equal(got[:n], msg) {
			return fmt.Errorf("udp echo of %d bytes from %v differs (got %d bytes)", size, dst, n)
		}
		return nil
	}
	return fmt.Errorf("udp echo of %d bytes to %v: no reply after 5 tries", size, peerName(src, dst))
}

// Ping pings dst count times (with retries for the first) and returns the
// replies.
func Ping(ctx context.Context, from *stack.Stack, dst netip.Addr, count, size int) ([]stack.PingReply, error) {
	var out []stack.PingReply
	for seq := 1; seq <= count; seq++ {
		var r stack.PingReply
		var err error
		for try := 0; try < 5; try++ {
			c, cancel := context.WithTimeout(ctx, time.Second)
			r, err = from.Ping(c, dst, uint16(seq*10+try), size)
			cancel()
			if err == nil {
				break
			}
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}
