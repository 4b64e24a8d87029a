package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/ipsecstack/ipsecstack/internal/leakcheck"
	"github.com/ipsecstack/ipsecstack/stack"
)

// The stack-side clients (pingFrom, testbed.TCPTransferFrom and
// testbed.UDPEchoFrom) bind their source address explicitly: with several
// addresses per family the stack's own choice may not be the address the
// policies select (and the traffic would go in clear).

// serveUDPEcho serves UDP echo on port of each address, each socket bound
// to its address so that replies leave from it.
func serveUDPEcho(ctx context.Context, st *stack.Stack, port uint16, addrs ...netip.Addr) error {
	for _, a := range addrs {
		l := st.FullAddress(a, port)
		c, err := gonet.DialUDP(st.Stack, &l, nil, stack.Proto(a))
		if err != nil {
			return fmt.Errorf("udp echo on %v: %w", a, err)
		}
		go func() { <-ctx.Done(); c.Close() }()
		go func() {
			buf := make([]byte, 65536)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					continue
				}
				c.WriteTo(buf[:n], from)
			}
		}()
	}
	return nil
}

// pingFrom sends count echo requests from src to dst and waits for each
// reply (a few tries each).
func pingFrom(ctx context.Context, st *stack.Stack, src, dst netip.Addr, count, size int) error {
	tp, typ := icmp.ProtocolNumber6, byte(header.ICMPv6EchoRequest)
	if dst.Is4() {
		tp, typ = icmp.ProtocolNumber4, byte(header.ICMPv4Echo)
	}
	var wq waiter.Queue
	ep, terr := st.NewEndpoint(tp, stack.Proto(dst), &wq)
	if terr != nil {
		return fmt.Errorf("ping: %s", terr)
	}
	defer ep.Close()
	if terr := ep.Bind(st.FullAddress(src, 0)); terr != nil {
		return fmt.Errorf("ping: bind %v: %s", src, terr)
	}
	we, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	for seq := uint16(1); seq <= uint16(count); seq++ {
		ok := false
		for try := 0; try < 5 && !ok; try++ {
			id := seq*10 + uint16(try)
			req := make([]byte, 8+size)
			req[0] = typ
			binary.BigEndian.PutUint16(req[6:], id)
			for i := range req[8:] {
				req[8+i] = byte(i)
			}
			to := st.FullAddress(dst, 0)
			if _, terr := ep.Write(bytes.NewReader(req), tcpip.WriteOptions{To: &to}); terr != nil {
				return fmt.Errorf("ping %v: send: %s", dst, terr)
			}
			deadline := time.After(time.Second)
		wait:
			for {
				var buf bytes.Buffer
				_, terr := ep.Read(&buf, tcpip.ReadOptions{})
				if _, would := terr.(*tcpip.ErrWouldBlock); would {
					select {
					case <-ch:
						continue
					case <-deadline:
						break wait
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				if terr != nil {
					return fmt.Errorf("ping %v: receive: %s", dst, terr)
				}
				b := buf.Bytes()
				if len(b) >= 8 && binary.BigEndian.Uint16(b[6:]) == id {
					if !bytes.Equal(b[8:], req[8:]) {
						return fmt.Errorf("ping %v: reply payload differs", dst)
					}
					ok = true
					break wait
				}
			}
		}
		if !ok {
			return fmt.Errorf("ping %v from %v seq %d: no reply after 5 tries", dst, src, seq)
		}
	}
	return nil
}

// clearFrames returns the IP frames of a capture that travelled in clear
// although they are not neighbour discovery or MLD: with every test flow
// under a protect policy, any such frame is a leak (or a wrong source
// address that escaped the policies). With strictNDP (NDP under ESP),
// neighbour solicitations and advertisements from a global address are
// leaks too. The judge is internal/leakcheck, which shares no code with
// the stack: it reassembles fragments (a clear tail fragment is a leak
// too), follows the packets ICMP errors quote, and reports frames it
// cannot parse.
func clearFrames(frames [][]byte, strictNDP bool) []string {
	icmp6 := func(name string, lo, hi uint16) leakcheck.Flow {
		return leakcheck.Flow{Name: name, Family: 6, Proto: uint8(header.ICMPv6ProtocolNumber),
			ICMPType: leakcheck.Between(lo, hi), Clear: true}
	}
	var flows []leakcheck.Flow
	if strictNDP {
		ll := icmp6("NS/NA from a link-local address", 135, 136)
		ll.Src = netip.MustParsePrefix("fe80::/10")
		flows = append(flows, ll, icmp6("MLD, RS, RA", 130, 134), icmp6("redirect, MLDv2", 137, 143))
	} else {
		flows = append(flows, icmp6("MLD and NDP", 130, 143))
	}
	flows = append(flows, leakcheck.Flow{Name: "every test flow"})
	// ESPInUDPPorts set: a UDP fragment without its ports (the tail of
	// a fragmented ESP-in-UDP datagram, natt cases) is judged with its
	// reassembled datagram, which is a leak if it is not ESP in UDP.
	c := leakcheck.New(leakcheck.Config{Flows: flows, MaxFindings: len(frames) + 1, ESPInUDPPorts: []uint16{4500}})
	for _, fr := range frames {
		c.Frame(fr)
	}
	c.Flush()
	var bad []string
	for _, f := range c.Findings() {
		bad = append(bad, f.String())
	}
	return bad
}
