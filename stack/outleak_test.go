package stack_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Port-specific pairs: only UDP to or from portProtected on B is
// protected, by ESP SAs of their own; everything else has no policy.
const (
	portProtected = 4500
	spiPortAtoB   = 0x7001
	spiPortBtoA   = 0x7002
)

// portPolicyPair builds a pair whose only policies protect UDP between A
// and B port portProtected in mode (tunnel endpoints: the same addresses).
func portPolicyPair(t *testing.T, fam int, mode xfrm.Mode, mtu uint32) *testbed.Pair {
	t.Helper()
	p, err := testbed.New(testbed.Config{Plain: true, Inner: fam, MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	bits := p.AddrA.BitLen()
	host := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, bits) }
	port := xfrm.PortRange{Lo: portProtected, Hi: portProtected}
	key := func(spi uint32) []byte { return bytes.Repeat([]byte{byte(spi)}, 20) }
	for _, sd := range []struct {
		s             *stack.Stack
		self, peer    netip.Addr
		spiOut, spiIn uint32
		out, in       xfrm.Selector
	}{
		{p.A, p.AddrA, p.AddrB, spiPortAtoB, spiPortBtoA,
			xfrm.Selector{Src: host(p.AddrA), Dst: host(p.AddrB), Proto: xfrm.ProtoUDP, DstPorts: port},
			xfrm.Selector{Src: host(p.AddrB), Dst: host(p.AddrA), Proto: xfrm.ProtoUDP, SrcPorts: port}},
		{p.B, p.AddrB, p.AddrA, spiPortBtoA, spiPortAtoB,
			xfrm.Selector{Src: host(p.AddrB), Dst: host(p.AddrA), Proto: xfrm.ProtoUDP, SrcPorts: port},
			xfrm.Selector{Src: host(p.AddrA), Dst: host(p.AddrB), Proto: xfrm.ProtoUDP, DstPorts: port}},
	} {
		for _, c := range []xfrm.SAConfig{
			{SPI: sd.spiOut, Src: sd.self, Dst: sd.peer},
			{SPI: sd.spiIn, Src: sd.peer, Dst: sd.self},
		} {
			c.Proto, c.Mode, c.ReqID, c.ReplayWindow = xfrm.ProtoESP, mode, 7, 64
			c.AEAD = xfrm.Algorithm{Name: "rfc4106(gcm(aes))", Key: key(c.SPI)}
			if _, err := sd.s.Engine.AddSA(c); err != nil {
				t.Fatal(err)
			}
		}
		tmpl := func(src, dst netip.Addr) []xfrm.Template {
			tp := xfrm.Template{Proto: xfrm.ProtoESP, Mode: mode, Level: xfrm.LevelRequire, ReqID: 7}
			if mode == xfrm.ModeTunnel {
				tp.Src, tp.Dst = src, dst
			}
			return []xfrm.Template{tp}
		}
		for _, pol := range []*xfrm.Policy{
			{Dir: xfrm.DirOut, Sel: sd.out, Action: xfrm.ActionProtect, Templates: tmpl(sd.self, sd.peer)},
			{Dir: xfrm.DirIn, Sel: sd.in, Action: xfrm.ActionProtect, Templates: tmpl(sd.peer, sd.self)},
		} {
			if _, err := sd.s.Engine.AddPolicy(pol); err != nil {
				t.Fatal(err)
			}
		}
	}
	return p
}

// frameIP is what the test's own minimal parser sees in an Ethernet frame:
// the IP version, the protocol after the IPv6 header (skipping at most one
// Fragment header) or the IPv4 protocol, whether it is a fragment, and the
// upper-layer bytes when the frame starts the datagram. It shares no code
// with xfrm.ParseFlow.
type frameIP struct {
	version  int
	proto    uint8
	fragment bool
	first    bool // the upper-layer header is in this frame
	l4       []byte
	src, dst netip.Addr
}

func parseFrame(frame []byte) (frameIP, bool) {
	var r frameIP
	if len(frame) < 14 {
		return r, false
	}
	ip := frame[14:]
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x0800:
		if len(ip) < 20 {
			return r, false
		}
		r.version, r.proto = 4, ip[9]
		r.src, r.dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		fw := binary.BigEndian.Uint16(ip[6:])
		r.fragment = fw&0x3fff != 0
		r.first = fw&0x1fff == 0
		if hl := int(ip[0]&15) * 4; len(ip) >= hl {
			r.l4 = ip[hl:]
		}
	case 0x86dd:
		if len(ip) < 40 {
			return r, false
		}
		r.version, r.proto, r.first = 6, ip[6], true
		r.src, r.dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		r.l4 = ip[40:]
		if r.proto == 44 && len(ip) >= 48 {
			r.proto, r.fragment = ip[40], true
			r.first = binary.BigEndian.Uint16(ip[42:])&0xfff8 == 0
			r.l4 = ip[48:]
		}
	default:
		return r, false
	}
	return r, true
}

// capture keeps the frames one side sends.
type capture struct {
	mu     sync.Mutex
	frames map[string][][]byte
}

func newCapture(p *testbed.Pair) *capture {
	c := &capture{frames: map[string][][]byte{}}
	p.SetTap(func(from string, frame []byte) {
		c.mu.Lock()
		c.frames[from] = append(c.frames[from], bytes.Clone(frame))
		c.mu.Unlock()
	})
	return c
}

func (c *capture) of(side string) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.frames[side]...)
}

// TestNoClearFragmentOfProtectedDatagram: a UDP datagram too big for one
// IPv6 packet of the wrapper's MTU, on a flow a port-specific policy
// protects, must not reach the wire with pieces in clear (issue 10,
// finding 3: gVisor fragmented it before the output hook and the tail
// fragments, OPAQUE, matched no policy). Too big for ESP as one packet, it
// is dropped and counted in transport mode, and a tunnel carries it in
// pieces fragmented before encapsulation; a datagram that fits is
// protected whole.
func TestNoClearFragmentOfProtectedDatagram(t *testing.T) {
	for _, fam := range []int{6, 4} {
		for _, mode := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
			for _, size := range []int{65500, 60000} {
				if fam == 4 && size > 65507 {
					continue
				}
				t.Run(fmt.Sprintf("ipv%d/%s/%d", fam, mode, size), func(t *testing.T) {
					p := portPolicyPair(t, fam, mode, 1500)
					capt := newCapture(p)
					raddr := p.A.FullAddress(p.AddrB, portProtected)
					c, err := gonet.DialUDP(p.A.Stack, nil, &raddr, stack.Proto(p.AddrB))
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					if _, err := c.Write(make([]byte, size)); err != nil {
						t.Fatalf("write %d bytes: %v", size, err)
					}
					fits := size+8+40 < 65535-100
					wantESP := fits || mode == xfrm.ModeTunnel
					// Wait for the datagram (after neighbour resolution)
					// to be sent, or counted as dropped.
					esp := 0
					for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
						esp = 0
						for _, f := range capt.of("A") {
							if ip, ok := parseFrame(f); ok && ip.proto == 50 {
								esp++
							}
						}
						if (wantESP && esp > 0) || (!wantESP && p.A.Engine.Stats.OutError.Load() > 0) {
							break
						}
					}
					time.Sleep(50 * time.Millisecond) // any straggling fragments
					for _, f := range capt.of("A") {
						if ip, ok := parseFrame(f); ok && ip.proto == 17 {
							t.Fatalf("A sent UDP in clear (fragment %v, %d bytes) on a protected flow", ip.fragment, len(f))
						}
					}
					if wantESP && esp == 0 {
						t.Errorf("a %d-byte datagram sent no ESP", size)
					}
					if !wantESP && p.A.Engine.Stats.OutError.Load() == 0 {
						t.Errorf("oversize protected datagram not counted as XfrmOutError")
					}
				})
			}
		}
	}
}

// TestICMPErrorQuotingProtectedFlow: B answers an ESP-protected datagram
// to a closed port with Port Unreachable, which quotes the decrypted
// datagram. The error's own selectors (ICMP) match no policy, but the
// flow it quotes, reversed, is protected (RFC 4301 §6.2; Linux
// icmp_route_lookup with xfrm_decode_session_reverse): it must leave B
// protected by that flow's SA, never in clear (issue 10, finding 6).
func TestICMPErrorQuotingProtectedFlow(t *testing.T) {
	for _, fam := range []int{6, 4} {
		for _, mode := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
			t.Run(fmt.Sprintf("ipv%d/%s", fam, mode), func(t *testing.T) {
				p := portPolicyPair(t, fam, mode, 1500)
				capt := newCapture(p)
				raddr := p.A.FullAddress(p.AddrB, portProtected)
				c, err := gonet.DialUDP(p.A.Stack, nil, &raddr, stack.Proto(p.AddrB))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				secret := bytes.Repeat([]byte("plaintext!"), 20)
				deadline := time.Now().Add(3 * time.Second)
				var espFromB int
				for time.Now().Before(deadline) && espFromB == 0 {
					c.Write(secret)
					time.Sleep(100 * time.Millisecond)
					espFromB = 0
					for _, f := range capt.of("B") {
						ip, ok := parseFrame(f)
						if !ok {
							continue
						}
						if bytes.Contains(f, secret[:40]) {
							t.Fatalf("B sent the decrypted datagram's bytes in clear (protocol %d)", ip.proto)
						}
						switch {
						case ip.proto == 1 && len(ip.l4) > 0 && ip.l4[0] == 3,
							ip.proto == 58 && len(ip.l4) > 0 && ip.l4[0] < 128:
							t.Fatalf("B sent an ICMP error (type %d) in clear for a protected flow", ip.l4[0])
						case ip.proto == 50 && len(ip.l4) >= 4 && binary.BigEndian.Uint32(ip.l4) == spiPortBtoA:
							espFromB++
						}
					}
				}
				if espFromB == 0 {
					t.Fatalf("B sent no ESP on the B->A SA: the Port Unreachable was neither seen protected")
				}
			})
		}
	}
}

// TestLargestDatagramsThroughTunnel: the largest UDP datagrams (65507
// bytes over IPv4, 65527 over IPv6) cross a tunnel: too big for the outer
// length field as one packet, they are fragmented before encapsulation
// and reassembled by the peer after decapsulation (issue 10, finding 3).
func TestLargestDatagramsThroughTunnel(t *testing.T) {
	suite, _ := testbed.SuiteByName("aes-gcm-128")
	for _, fam := range []int{4, 6} {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			p, err := testbed.New(testbed.Config{Suite: suite, Mode: xfrm.ModeTunnel, Inner: fam})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := p.StartServers(ctx); err != nil {
				t.Fatal(err)
			}
			size := 65507
			if fam == 6 {
				size = 65527
			}
			if err := testbed.UDPEcho(ctx, p.A, p.AddrB, size); err != nil {
				t.Fatalf("%v (A XfrmOutError %d)", err, p.A.Engine.Stats.OutError.Load())
			}
			if leaks, _ := p.Leaks(); len(leaks) != 0 {
				t.Errorf("cleartext: %v", leaks)
			}
		})
	}
}
