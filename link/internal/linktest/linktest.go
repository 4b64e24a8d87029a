// Package linktest holds helpers shared by the link endpoint tests: a full
// gVisor stack on one endpoint, ICMP echo from inside a stack, and a TCP
// transfer between two stacks.
package linktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// NICID is the NIC every helper stack uses.
const NICID tcpip.NICID = 1

// NewStack builds a stack with IPv4, IPv6, ARP, TCP, UDP and ICMP on ep,
// gives it addrs and on-link routes for them, and destroys it at test end.
func NewStack(t testing.TB, ep stack.LinkEndpoint, addrs ...netip.Prefix) *stack.Stack {
	t.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	t.Cleanup(s.Destroy)
	if err := s.CreateNIC(NICID, ep); err != nil {
		t.Fatalf("CreateNIC: %v", err)
	}
	var routes []tcpip.Route
	for _, p := range addrs {
		pa := tcpip.ProtocolAddress{
			Protocol:          Proto(p.Addr()),
			AddressWithPrefix: tcpip.AddrFromSlice(p.Addr().AsSlice()).WithPrefix(),
		}
		pa.AddressWithPrefix.PrefixLen = p.Bits()
		if err := s.AddProtocolAddress(NICID, pa, stack.AddressProperties{}); err != nil {
			t.Fatalf("AddProtocolAddress(%v): %v", p, err)
		}
		routes = append(routes, tcpip.Route{Destination: pa.AddressWithPrefix.Subnet(), NIC: NICID})
	}
	s.SetRouteTable(routes)
	return s
}

// Proto returns the network protocol number of a.
func Proto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// Addr converts a to a gVisor address.
func Addr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }

// Ping sends one ICMP echo request from s to dst through a gVisor ping
// endpoint and waits up to timeout for the reply. It returns nil on a reply
// with the same payload.
func Ping(s *stack.Stack, dst netip.Addr, timeout time.Duration) error {
	var wq waiter.Queue
	tp, np := icmp.ProtocolNumber4, ipv4.ProtocolNumber
	typ, reply := byte(header.ICMPv4Echo), byte(header.ICMPv4EchoReply)
	if dst.Is6() {
		tp, np = icmp.ProtocolNumber6, ipv6.ProtocolNumber
		typ, reply = byte(header.ICMPv6EchoRequest), byte(header.ICMPv6EchoReply)
	}
	ep, terr := s.NewEndpoint(tp, np, &wq)
	if terr != nil {
		return fmt.Errorf("NewEndpoint: %v", terr)
	}
	defer ep.Close()
	we, ch := waiter.NewChannelEntry(waiter.EventIn)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)

	payload := []byte(fmt.Sprintf("ipsecstack-ping-%d", time.Now().UnixNano()))
	msg := make([]byte, 8+len(payload))
	msg[0] = typ // code, checksum, ident: filled in by the endpoint
	msg[7] = 1   // sequence
	copy(msg[8:], payload)
	var r bytes.Reader
	r.Reset(msg)
	if _, terr := ep.Write(&r, tcpip.WriteOptions{To: &tcpip.FullAddress{NIC: NICID, Addr: Addr(dst)}}); terr != nil {
		return fmt.Errorf("write echo request: %v", terr)
	}
	deadline := time.After(timeout)
	for {
		var buf bytes.Buffer
		_, terr := ep.Read(&buf, tcpip.ReadOptions{})
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			select {
			case <-ch:
				continue
			case <-deadline:
				return fmt.Errorf("no echo reply from %v within %v", dst, timeout)
			}
		}
		if terr != nil {
			return fmt.Errorf("read echo reply: %v", terr)
		}
		b := buf.Bytes()
		if len(b) >= 8 && b[0] == reply && bytes.Equal(b[8:], payload) {
			return nil
		}
	}
}

// TransferTCP listens on server at dst:port, dials from client, sends n
// random bytes and checks that the server received exactly those bytes.
func TransferTCP(t testing.TB, client, server *stack.Stack, dst netip.Addr, port uint16, n int) {
	t.Helper()
	ln, err := gonet.ListenTCP(server, tcpip.FullAddress{NIC: NICID, Addr: Addr(dst), Port: port}, Proto(dst))
	if err != nil {
		t.Fatalf("ListenTCP: %v", err)
	}
	Transfer(t, ln, func(ctx context.Context) (net.Conn, error) {
		return gonet.DialContextTCP(ctx, client, tcpip.FullAddress{NIC: NICID, Addr: Addr(dst), Port: port}, Proto(dst))
	}, n)
}

// Transfer accepts one connection on ln (closing ln after), dials with dial,
// sends n random bytes, half-closes, and checks the accepted side received
// exactly those bytes. ln and dial may be gVisor (gonet) or host sockets.
func Transfer(t testing.TB, ln net.Listener, dial func(context.Context) (net.Conn, error), n int) {
	t.Helper()
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		done <- r
	}()

	data := make([]byte, n)
	rand.Read(data)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := dial(ctx)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
	} else {
		t.Fatalf("%T cannot half-close", c)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("server: %v", r.err)
		}
		if r.n != int64(n) || r.sum != sha256.Sum256(data) {
			t.Fatalf("server got %d bytes (sha256 match %v), want %d", r.n, r.sum == sha256.Sum256(data), n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not finish within 30s")
	}
}

// OnesSum is the RFC 1071 one's complement sum of b added to sum, folded
// to 16 bits: the tests' own, so that their checksums owe nothing to
// gVisor's checksum package, which the code under test uses.
func OnesSum(b []byte, sum uint32) uint16 {
	for len(b) > 1 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}
