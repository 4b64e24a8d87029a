package stack_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// quotedUDP builds the start of a packet B sent: IPv4 or IPv6 from B to A,
// UDP sport → dport (what an ICMP error quotes).
func quotedUDP(v6 bool, sport, dport uint16) []byte {
	u := make([]byte, 8)
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], 108)
	if v6 {
		h := make([]byte, 40)
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], 108)
		h[6], h[7] = 17, 64
		b, a := testbed.B6.As16(), testbed.A6.As16()
		copy(h[8:], b[:])
		copy(h[24:], a[:])
		return append(h, u...)
	}
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], 128)
	h[8], h[9] = 64, 17
	b, a := testbed.B4.As4(), testbed.A4.As4()
	copy(h[12:], b[:])
	copy(h[16:], a[:])
	binary.BigEndian.PutUint16(h[10:], ipv4Sum(h))
	return append(h, u...)
}

// icmpError wraps quote in an ICMP Port Unreachable (ICMPv6 type 1 code 4,
// ICMPv4 type 3 code 3) from src to dst.
func icmpError(src, dst netip.Addr, quote []byte) []byte {
	m := make([]byte, 8+len(quote))
	copy(m[8:], quote)
	if dst.Is6() {
		m[0], m[1] = 1, 4
		h := ip6Header(58, len(m))
		s, d := src.As16(), dst.As16()
		copy(h[8:], s[:])
		copy(h[24:], d[:])
		binary.BigEndian.PutUint16(m[2:], l4sum(h[8:40], 58, m))
		return append(h, m...)
	}
	m[0], m[1] = 3, 3
	binary.BigEndian.PutUint16(m[2:], ipv4Sum(m))
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(m)))
	h[8], h[9] = 64, 1
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], ipv4Sum(h))
	return append(h, m...)
}

// TestInboundICMPErrorInClear is the inbound half of issue 10 finding 6: an
// ICMP error in clear that quotes a flow the inbound policy requires
// protected is dropped (anyone on the path could otherwise reset it); one
// quoting an unprotected flow passes.
func TestInboundICMPErrorInClear(t *testing.T) {
	p, _ := portPolicyB(t)
	for _, fam := range []struct {
		name string
		a, b netip.Addr
	}{{"ipv6", testbed.A6, testbed.B6}, {"ipv4", testbed.A4, testbed.B4}} {
		for _, c := range []struct {
			port    uint16
			dropped bool
		}{{protectedPort, true}, {openPort, false}} {
			before, _ := p.B.Engine.Stats.Get("XfrmInTmplMismatch")
			passed := p.B.Endpoint.Stats.InChecked.Load()
			p.InjectB(icmpError(fam.a, fam.b, quotedUDP(fam.a.Is6(), c.port, 5555)))
			after, _ := p.B.Engine.Stats.Get("XfrmInTmplMismatch")
			gotPassed := p.B.Endpoint.Stats.InChecked.Load() - passed
			if c.dropped && (after != before+1 || gotPassed != 0) {
				t.Errorf("%s: error quoting protected port %d: XfrmInTmplMismatch +%d, passed %d; want dropped", fam.name, c.port, after-before, gotPassed)
			}
			if !c.dropped && (after != before || gotPassed != 1) {
				t.Errorf("%s: error quoting open port %d: XfrmInTmplMismatch +%d, passed %d; want passed", fam.name, c.port, after-before, gotPassed)
			}
		}
	}
}

// TestInboundICMPErrorThroughSA: an ICMP error that arrives through an SA
// must quote a packet that SA's flows could carry (RFC 4301 §6.2.2). A
// peer holding only the main SA quotes a packet of the TCP port flow that
// policy binds to the port SAs (another reqid): dropped. Quoting a main-SA
// flow passes.
func TestInboundICMPErrorThroughSA(t *testing.T) {
	for _, inner := range []int{6, 4} {
		p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: xfrm.ModeTransport, Inner: inner, PortSAs: []uint16{9000}})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		quote := func(sport uint16) []byte {
			q := quotedUDP(inner == 6, sport, 5555)
			if inner == 6 {
				q[6] = 6
			} else {
				q[9] = 6
				binary.BigEndian.PutUint16(q[10:], 0)
				binary.BigEndian.PutUint16(q[10:], ipv4Sum(q[:20]))
			}
			return append(q, make([]byte, 12)...) // the rest of a TCP header
		}
		for _, c := range []struct {
			sport   uint16
			dropped bool
		}{{9000, true}, {80, false}} {
			plain := icmpError(p.AddrA, p.AddrB, quote(c.sport))
			v, esp := p.A.Engine.Output(plain, xfrm.HeapAllocator{})
			if v != xfrm.VerdictProtected {
				t.Fatalf("A did not protect the ICMP error (verdict %v)", v)
			}
			before, _ := p.B.Engine.Stats.Get("XfrmInTmplMismatch")
			reinjected := p.B.Endpoint.Stats.Reinjected.Load()
			p.InjectB(esp)
			after, _ := p.B.Engine.Stats.Get("XfrmInTmplMismatch")
			got := p.B.Endpoint.Stats.Reinjected.Load() - reinjected
			if c.dropped && (after != before+1 || got != 0) {
				t.Errorf("IPv%d: error quoting port-SA flow %d via the main SA: XfrmInTmplMismatch +%d, reinjected %d; want dropped", inner, c.sport, after-before, got)
			}
			if !c.dropped && (after != before || got != 1) {
				t.Errorf("IPv%d: error quoting main-SA flow %d: XfrmInTmplMismatch +%d, reinjected %d; want passed", inner, c.sport, after-before, got)
			}
		}
	}
}
