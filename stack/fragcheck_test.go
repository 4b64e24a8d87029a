package stack_test

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Ports of the port-specific policy tests: B requires ESP for UDP to
// protectedPort and has no policy for openPort. The same crafted datagrams
// are sent to both: openPort receiving them proves the datagram is one the
// stack accepts, so protectedPort receiving nothing is the policy's doing.
const (
	protectedPort = 7777
	openPort      = 7778
)

// portPolicyB builds a plain pair and gives B an inbound policy requiring
// ESP for UDP to protectedPort, IPv4 and IPv6, and UDP sockets on both
// ports, keyed by family and port.
func portPolicyB(t *testing.T) (*testbed.Pair, map[[2]int]*gonet.UDPConn) {
	t.Helper()
	p, socks, err := newPortPolicyBed()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range socks {
			c.Close()
		}
		p.Close()
	})
	return p, socks
}

// newPortPolicyBed is portPolicyB without a test to clean up after (the
// fuzz target's bed lives as long as the process).
func newPortPolicyBed() (*testbed.Pair, map[[2]int]*gonet.UDPConn, error) {
	p, err := testbed.New(testbed.Config{Plain: true})
	if err != nil {
		return nil, nil, err
	}
	tmpl := xfrm.Template{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTransport, Level: xfrm.LevelRequire}
	socks := map[[2]int]*gonet.UDPConn{}
	for _, fam := range []struct {
		v    int
		a, b netip.Addr
	}{{4, testbed.A4, testbed.B4}, {6, testbed.A6, testbed.B6}} {
		sel := xfrm.Selector{Src: netip.PrefixFrom(fam.a, fam.a.BitLen()), Dst: netip.PrefixFrom(fam.b, fam.b.BitLen()),
			Proto: xfrm.ProtoUDP, DstPorts: xfrm.PortRange{Lo: protectedPort, Hi: protectedPort}}
		if _, err := p.B.Engine.AddPolicy(&xfrm.Policy{Dir: xfrm.DirIn, Priority: 10, Action: xfrm.ActionProtect,
			Sel: sel, Templates: []xfrm.Template{tmpl}}); err != nil {
			p.Close()
			return nil, nil, err
		}
		for _, port := range []uint16{protectedPort, openPort} {
			la := p.B.FullAddress(fam.b, port)
			c, err := gonet.DialUDP(p.B.Stack, &la, nil, stack.Proto(fam.b))
			if err != nil {
				p.Close()
				return nil, nil, err
			}
			socks[[2]int{fam.v, int(port)}] = c
		}
	}
	return p, socks, nil
}

// received drains c and returns the datagrams it holds. Delivery from
// InjectB is synchronous (the datagram is queued on the socket before
// InjectB returns), so a short deadline suffices.
func received(c *gonet.UDPConn) [][]byte {
	var got [][]byte
	buf := make([]byte, 70000)
	for {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return got
		}
		got = append(got, append([]byte(nil), buf[:n]...))
	}
}

// ip6Header returns a 40-byte IPv6 header A6 → B6 with next header nh
// and payload length plen.
func ip6Header(nh uint8, plen int) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(plen))
	h[6] = nh
	h[7] = 64
	a, b := testbed.A6.As16(), testbed.B6.As16()
	copy(h[8:], a[:])
	copy(h[24:], b[:])
	return h
}

// udpSeg builds a UDP segment to dport with a checksum over the pseudo
// header of src and dst (raw address bytes).
func udpSeg(src, dst []byte, dport uint16, payload []byte) []byte {
	u := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], 5555)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	binary.BigEndian.PutUint16(u[6:], l4sum(append(append([]byte(nil), src...), dst...), 17, u))
	return u
}

// frag6 returns an IPv6 fragment: unfrag (extension headers before the
// Fragment header, whose first next-header is named by firstNH), then a
// Fragment header naming fragNH, then data at byte offset off.
func frag6(firstNH uint8, unfrag []byte, fragNH uint8, off int, more bool, id uint32, data []byte) []byte {
	fh := make([]byte, 8)
	fh[0] = fragNH
	fo := uint16(off)
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(fh[2:], fo)
	binary.BigEndian.PutUint32(fh[4:], id)
	nh := uint8(44)
	if len(unfrag) > 0 {
		nh = firstNH
	}
	p := ip6Header(nh, len(unfrag)+8+len(data))
	p = append(p, unfrag...)
	p = append(p, fh...)
	return append(p, data...)
}

// udp4Frags builds an IPv4 UDP datagram to dport and splits its payload
// (UDP header included) at the given byte offsets (multiples of 8).
func udp4Frags(dport uint16, payload []byte, id uint16, cuts ...int) [][]byte {
	a, b := testbed.A4.As4(), testbed.B4.As4()
	u := udpSeg(a[:], b[:], dport, payload)
	bounds := append(append([]int{0}, cuts...), len(u))
	var out [][]byte
	for i := 0; i+1 < len(bounds); i++ {
		part := u[bounds[i]:bounds[i+1]]
		h := make([]byte, 20, 20+len(part))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(part)))
		binary.BigEndian.PutUint16(h[4:], id)
		fo := uint16(bounds[i] / 8)
		if i+2 < len(bounds) {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], fo)
		h[8], h[9] = 64, 17
		copy(h[12:], a[:])
		copy(h[16:], b[:])
		binary.BigEndian.PutUint16(h[10:], ipv4Sum(h))
		out = append(out, append(h, part...))
	}
	return out
}

func ipv4Sum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// TestInboundPortPolicyFragments is the regression test for issue 10
// finding 2: cleartext that a port-specific protect policy forbids must not
// reach the socket however it is cut or wrapped. Each train is also sent to
// an unprotected port, which must receive it exactly once (the train is a
// datagram the stack accepts).
func TestInboundPortPolicyFragments(t *testing.T) {
	a6, b6 := testbed.A6.As16(), testbed.B6.As16()
	payload := []byte("cleartext that must not reach the protected socket")
	trains := []struct {
		name string
		fam  int
		mk   func(port uint16, id uint32) [][]byte
	}{
		{
			// RFC 7112's tiny first fragment: Destination Options in the
			// first fragment name UDP, whose header is in the second.
			name: "ipv6 tiny first fragment, UDP header in the second",
			fam:  6,
			mk: func(port uint16, id uint32) [][]byte {
				dst := []byte{17, 0, 1, 4, 0, 0, 0, 0} // next header UDP, PadN
				u := udpSeg(a6[:], b6[:], port, payload)
				return [][]byte{
					frag6(0, nil, 60, 0, true, id, dst),
					frag6(0, nil, 60, 8, false, id, u),
				}
			},
		},
		{
			// gVisor walks next header 253 as an 8-byte experiment
			// extension header (RFC 4727): the datagram is UDP.
			name: "ipv6 experiment header 253 before UDP",
			fam:  6,
			mk: func(port uint16, id uint32) [][]byte {
				exp := []byte{17, 0, 0, 0, 0, 0, 0, 0}
				u := udpSeg(a6[:], b6[:], port, payload)
				p := ip6Header(253, len(exp)+len(u))
				return [][]byte{append(append(p, exp...), u...)}
			},
		},
		{
			name: "ipv6 fragments after destination options, experiment header inside",
			fam:  6,
			mk: func(port uint16, id uint32) [][]byte {
				exp := []byte{17, 0, 0, 0, 0, 0, 0, 0}
				u := udpSeg(a6[:], b6[:], port, payload)
				body := append(append([]byte(nil), exp...), u...)
				unfrag := []byte{44, 0, 1, 4, 0, 0, 0, 0} // dst opts naming Fragment
				return [][]byte{
					frag6(60, unfrag, 253, 0, true, id, body[:8]),
					frag6(60, unfrag, 253, 8, true, id, body[8:16]),
					frag6(60, unfrag, 253, 16, false, id, body[16:]),
				}
			},
		},
		{
			name: "ipv6 fragments in reverse order",
			fam:  6,
			mk: func(port uint16, id uint32) [][]byte {
				u := udpSeg(a6[:], b6[:], port, payload)
				return [][]byte{
					frag6(0, nil, 17, 16, false, id, u[16:]),
					frag6(0, nil, 17, 8, true, id, u[8:16]),
					frag6(0, nil, 17, 0, true, id, u[:8]),
				}
			},
		},
		{
			name: "ipv4 fragments in reverse order",
			fam:  4,
			mk: func(port uint16, id uint32) [][]byte {
				f := udp4Frags(port, payload, uint16(id), 8, 24)
				return [][]byte{f[2], f[1], f[0]}
			},
		},
	}
	p, socks := portPolicyB(t)
	for i, tr := range trains {
		t.Run(tr.name, func(t *testing.T) {
			before, _ := p.B.Engine.Stats.Get("XfrmInTmplMismatch")
			for _, f := range tr.mk(protectedPort, uint32(1000+2*i)) {
				p.InjectB(f)
			}
			if got := received(socks[[2]int{tr.fam, protectedPort}]); len(got) != 0 {
				t.Errorf("protected socket received %d cleartext datagram(s): %q", len(got), got)
			}
			if after, _ := p.B.Engine.Stats.Get("XfrmInTmplMismatch"); after != before+1 {
				t.Errorf("XfrmInTmplMismatch moved by %d, want 1", after-before)
			}
			for _, f := range tr.mk(openPort, uint32(1001+2*i)) {
				p.InjectB(f)
			}
			if got := received(socks[[2]int{tr.fam, openPort}]); len(got) != 1 || string(got[0]) != string(payload) {
				t.Errorf("unprotected socket received %q, want the datagram once (the train is not one the stack accepts)", got)
			}
		})
	}
	if n := p.B.Engine.Reasm.Pending(); n != 0 {
		t.Errorf("%d datagrams left in reassembly", n)
	}
}

// TestInboundOverlappingFragments: a second fragment that overlaps the
// first and rewrites its destination port (from an open port to the
// protected one) discards the whole datagram (RFC 5722; Linux for IPv4).
func TestInboundOverlappingFragments(t *testing.T) {
	p, socks := portPolicyB(t)
	payload := make([]byte, 40)
	open := udp4Frags(openPort, payload, 77, 16)
	prot := udp4Frags(protectedPort, payload, 77, 16)
	for _, f := range [][]byte{open[0], prot[0], open[1]} {
		p.InjectB(f)
	}
	for _, port := range []int{protectedPort, openPort} {
		if got := received(socks[[2]int{4, port}]); len(got) != 0 {
			t.Errorf("port %d received %d datagram(s) from overlapping fragments", port, len(got))
		}
	}
	if v := p.B.Engine.Reasm.Stats.ReasmFails.Load(); v == 0 {
		t.Error("ReasmFails did not move")
	}
}
