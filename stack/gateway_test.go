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

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/internal/leakcheck"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/link/memlink"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Site-to-site topology (issue 14): L1 —lan1— G1 —wan— G2 —lan2— L2. L1
// and L2 are hosts without any IPsec configuration (stacks with an empty
// SPD); G1 and G2 are security gateways with an ESP tunnel between their
// WAN addresses for the traffic between lan1 and lan2. Addresses are
// private and documentation prefixes (RFC 1918, RFC 5737, RFC 3849,
// RFC 4193).
var (
	lan1v4 = netip.MustParsePrefix("10.1.0.0/24")
	lan2v4 = netip.MustParsePrefix("10.2.0.0/24")
	lan1v6 = netip.MustParsePrefix("fd01::/64")
	lan2v6 = netip.MustParsePrefix("fd02::/64")

	l1v4, g1lan4 = netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("10.1.0.1")
	l2v4, g2lan4 = netip.MustParseAddr("10.2.0.2"), netip.MustParseAddr("10.2.0.1")
	l1v6, g1lan6 = netip.MustParseAddr("fd01::2"), netip.MustParseAddr("fd01::1")
	l2v6, g2lan6 = netip.MustParseAddr("fd02::2"), netip.MustParseAddr("fd02::1")
	g1wan4       = netip.MustParseAddr("192.0.2.1")
	g2wan4       = netip.MustParseAddr("192.0.2.2")
	g1wan6       = netip.MustParseAddr("2001:db8::1")
	g2wan6       = netip.MustParseAddr("2001:db8::2")
)

const (
	spiG1toG2 = 0x1400
	spiG2toG1 = 0x2400
)

// gwNet is the four stacks and their links.
type gwNet struct {
	inner, outer   int
	L1, G1, G2, L2 *stack.Stack
	wan1, wan2     *memlink.Endpoint // G1's and G2's WAN ends
	lan1G, lan2G   *memlink.Endpoint // G1's and G2's LAN ends
	leak           *leakcheck.Checker
	ch             *channel.Endpoint // G1's LAN with gwConfig.l3LAN (then L1 is nil)

	mu     sync.Mutex
	frames map[string][][]byte // IP packets sent, by link end name (see capture)
}

type gwConfig struct {
	inner, outer int
	wanMTU       uint32
	clampMSS     bool
	// l3LAN puts G1's LAN on a link without Ethernet header (a TUN's
	// kind: gVisor's channel endpoint), with no L1 stack behind it.
	l3LAN bool
}

func (n *gwNet) addr(l1, l2 bool) netip.Addr {
	switch {
	case l1 && n.inner == 4:
		return l1v4
	case l1:
		return l1v6
	case l2 && n.inner == 4:
		return l2v4
	}
	return l2v6
}

func newGwNet(t *testing.T, cfg gwConfig) *gwNet {
	t.Helper()
	if cfg.wanMTU == 0 {
		cfg.wanMTU = 1500
	}
	n := &gwNet{inner: cfg.inner, outer: cfg.outer, frames: map[string][][]byte{}}
	opts := memlink.Options{MTU: 1500, QueueLen: 4096}
	lan1L, lan1G := memlink.NewPairWithOptions("\x02\x00\x00\x00\x01\x02", "\x02\x00\x00\x00\x01\x01", opts)
	lan2L, lan2G := memlink.NewPairWithOptions("\x02\x00\x00\x00\x02\x02", "\x02\x00\x00\x00\x02\x01", opts)
	wopts := opts
	wopts.MTU = cfg.wanMTU
	wan1, wan2 := memlink.NewPairWithOptions("\x02\x00\x00\x00\x00\x01", "\x02\x00\x00\x00\x00\x02", wopts)
	n.wan1, n.wan2, n.lan1G, n.lan2G = wan1, wan2, lan1G, lan2G
	pfx := func(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }
	mk := func(c stack.Config) *stack.Stack {
		s, err := stack.New(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	lan1 := stack.NIC{Link: lan1G, Addrs: []netip.Prefix{pfx(g1lan4, 24), pfx(g1lan6, 64)}}
	if cfg.l3LAN {
		n.ch = channel.New(256, 1500, "")
		t.Cleanup(n.ch.Close)
		lan1.Link, lan1.L3 = n.ch, true
	} else {
		n.L1 = mk(stack.Config{Link: lan1L, Addrs: []netip.Prefix{pfx(l1v4, 24), pfx(l1v6, 64)},
			Routes: []stack.Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: g1lan4}, {Dst: netip.MustParsePrefix("::/0"), Gateway: g1lan6}}})
	}
	n.L2 = mk(stack.Config{Link: lan2L, Addrs: []netip.Prefix{pfx(l2v4, 24), pfx(l2v6, 64)},
		Routes: []stack.Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: g2lan4}, {Dst: netip.MustParsePrefix("::/0"), Gateway: g2lan6}}})
	n.G1 = mk(stack.Config{Link: wan1, Addrs: []netip.Prefix{pfx(g1wan4, 24), pfx(g1wan6, 64)},
		LANs:       []stack.NIC{lan1},
		Routes:     []stack.Route{{Dst: lan2v4, Gateway: g2wan4}, {Dst: lan2v6, Gateway: g2wan6}},
		Forwarding: true, ClampMSS: cfg.clampMSS})
	n.G2 = mk(stack.Config{Link: wan2, Addrs: []netip.Prefix{pfx(g2wan4, 24), pfx(g2wan6, 64)},
		LANs:       []stack.NIC{{Link: lan2G, Addrs: []netip.Prefix{pfx(g2lan4, 24), pfx(g2lan6, 64)}}},
		Routes:     []stack.Route{{Dst: lan1v4, Gateway: g1wan4}, {Dst: lan1v6, Gateway: g1wan6}},
		Forwarding: true, ClampMSS: cfg.clampMSS})
	n.configureTunnel(t)
	// The leak detector holds both subnet pairs protected, whichever
	// family the tunnel carries; it parses the WAN frames itself.
	n.leak = leakcheck.New(leakcheck.Config{Flows: []leakcheck.Flow{
		{Name: "lan1<->lan2 v4", Src: lan1v4, Dst: lan2v4, Both: true},
		{Name: "lan1<->lan2 v6", Src: lan1v6, Dst: lan2v6, Both: true},
	}})
	for name, l := range map[string]*memlink.Endpoint{"wan1": wan1, "wan2": wan2, "lan1G": lan1G, "lan2G": lan2G} {
		name, isWAN := name, l == wan1 || l == wan2
		l.SetTap(func(dir memlink.Direction, frame []byte) {
			if dir != memlink.Out {
				return
			}
			if isWAN {
				n.leak.Frame(frame)
			}
			if len(frame) > 14 {
				n.mu.Lock()
				n.frames[name] = append(n.frames[name], append([]byte(nil), frame[14:]...))
				n.mu.Unlock()
			}
		})
	}
	return n
}

// tunnelEnds returns G1's and G2's WAN addresses of the outer family.
func (n *gwNet) tunnelEnds() (g1, g2 netip.Addr) {
	if n.outer == 4 {
		return g1wan4, g2wan4
	}
	return g1wan6, g2wan6
}

func (n *gwNet) subnets() (lan1, lan2 netip.Prefix) {
	if n.inner == 4 {
		return lan1v4, lan2v4
	}
	return lan1v6, lan2v6
}

// gcmKey is an AES-GCM-128 key with its 4-byte salt (RFC 4106 §8.1).
func gcmKey(seed byte) []byte {
	k := make([]byte, 20)
	for i := range k {
		k[i] = seed + byte(i*7)
	}
	return k
}

// configureTunnel installs the ESP tunnel SAs and the out, in and fwd
// policies of a site-to-site setup as strongSwan installs them in Linux.
func (n *gwNet) configureTunnel(t *testing.T) {
	t.Helper()
	o1, o2 := n.tunnelEnds()
	lan1, lan2 := n.subnets()
	for _, g := range []struct {
		s                  *stack.Stack
		self, peer         netip.Addr
		local, remote      netip.Prefix
		spiOut, spiIn      uint32
		keyOutSeed, inSeed byte
	}{
		{n.G1, o1, o2, lan1, lan2, spiG1toG2, spiG2toG1, 1, 2},
		{n.G2, o2, o1, lan2, lan1, spiG2toG1, spiG1toG2, 2, 1},
	} {
		e := g.s.Engine
		for _, c := range []xfrm.SAConfig{
			{Proto: xfrm.ProtoESP, SPI: g.spiOut, Src: g.self, Dst: g.peer, Mode: xfrm.ModeTunnel, ReqID: 1,
				ReplayWindow: 128, AEAD: xfrm.Algorithm{Name: "rfc4106(gcm(aes))", Key: gcmKey(g.keyOutSeed)}},
			{Proto: xfrm.ProtoESP, SPI: g.spiIn, Src: g.peer, Dst: g.self, Mode: xfrm.ModeTunnel, ReqID: 1,
				ReplayWindow: 128, AEAD: xfrm.Algorithm{Name: "rfc4106(gcm(aes))", Key: gcmKey(g.inSeed)}},
		} {
			if _, err := e.AddSA(c); err != nil {
				t.Fatal(err)
			}
		}
		out := xfrm.Template{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTunnel, Src: g.self, Dst: g.peer, ReqID: 1}
		in := xfrm.Template{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTunnel, Src: g.peer, Dst: g.self, ReqID: 1}
		for _, p := range []*xfrm.Policy{
			{Dir: xfrm.DirOut, Priority: 1000, Action: xfrm.ActionProtect, Templates: []xfrm.Template{out},
				Sel: xfrm.Selector{Src: g.local, Dst: g.remote}},
			{Dir: xfrm.DirIn, Priority: 1000, Action: xfrm.ActionProtect, Templates: []xfrm.Template{in},
				Sel: xfrm.Selector{Src: g.remote, Dst: g.local}},
			{Dir: xfrm.DirFwd, Priority: 1000, Action: xfrm.ActionProtect, Templates: []xfrm.Template{in},
				Sel: xfrm.Selector{Src: g.remote, Dst: g.local}},
		} {
			if _, err := e.AddPolicy(p); err != nil {
				t.Fatal(err)
			}
		}
		g.s.UpdateRouteMTU()
	}
}

// sentBy returns copies of the IP packets the named link end sent so far.
func (n *gwNet) sentBy(name string) [][]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([][]byte(nil), n.frames[name]...)
}

// checkNoLeaks fails the test when the WAN carried a protected flow in clear.
func (n *gwNet) checkNoLeaks(t *testing.T) {
	t.Helper()
	n.leak.Flush()
	if f := n.leak.Findings(); len(f) > 0 {
		t.Fatalf("WAN leaks (%d frames): %v", n.leak.Stats().Frames, f)
	}
	if n.leak.Stats().Protected == 0 {
		t.Fatalf("WAN carried no IPsec at all")
	}
}

// inject hands the IP packet ip to stack s's NIC id as if its link had
// received it.
func inject(s *stack.Stack, id tcpip.NICID, ip []byte) {
	proto := header.IPv6ProtocolNumber
	if ip[0]>>4 == 4 {
		proto = header.IPv4ProtocolNumber
	}
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(append([]byte(nil), ip...))})
	defer pkt.DecRef()
	s.EndpointOf(id).DeliverNetworkPacket(proto, pkt)
}

// sum16 is the Internet checksum (RFC 1071) of b with an initial sum,
// written here so the test does not use the checksum code it checks.
func sum16(b []byte, initial uint32) uint16 {
	s := initial
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// pseudo is the sum of the pseudo-header (RFC 768, RFC 8200 §8.1).
func pseudo(src, dst netip.Addr, proto uint8, n int) uint32 {
	var s uint32
	for _, a := range [][]byte{src.AsSlice(), dst.AsSlice()} {
		for i := 0; i < len(a); i += 2 {
			s += uint32(a[i])<<8 | uint32(a[i+1])
		}
	}
	return s + uint32(proto) + uint32(n)
}

// buildIP makes an IPv4 or IPv6 packet (by src's family) carrying payload
// as protocol proto, with ttl (hop limit) and, for IPv4, DF as asked; the
// transport checksum (ICMP, ICMPv6, UDP at the usual offsets) is filled in.
func buildIP(src, dst netip.Addr, proto uint8, ttl uint8, df bool, payload []byte) []byte {
	var ip []byte
	if src.Is4() {
		ip = make([]byte, 20+len(payload))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
		binary.BigEndian.PutUint16(ip[4:], 0x4242)
		if df {
			ip[6] = 0x40
		}
		ip[8], ip[9] = ttl, proto
		copy(ip[12:], src.AsSlice())
		copy(ip[16:], dst.AsSlice())
		binary.BigEndian.PutUint16(ip[10:], sum16(ip[:20], 0))
		copy(ip[20:], payload)
	} else {
		ip = make([]byte, 40+len(payload))
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(payload)))
		ip[6], ip[7] = proto, ttl
		copy(ip[8:], src.AsSlice())
		copy(ip[24:], dst.AsSlice())
		copy(ip[40:], payload)
	}
	l4 := ip[len(ip)-len(payload):]
	switch proto {
	case 1:
		binary.BigEndian.PutUint16(l4[2:], sum16(l4, 0))
	case 58:
		binary.BigEndian.PutUint16(l4[2:], sum16(l4, pseudo(src, dst, 58, len(l4))))
	case 17:
		binary.BigEndian.PutUint16(l4[6:], sum16(l4, pseudo(src, dst, 17, len(l4))))
	}
	return ip
}

// echoRequest is an ICMP or ICMPv6 echo request with n bytes of data.
func echoRequest(v4 bool, n int) []byte {
	b := make([]byte, 8+n)
	b[0] = 128
	if v4 {
		b[0] = 8
	}
	binary.BigEndian.PutUint16(b[4:], 0x77)
	binary.BigEndian.PutUint16(b[6:], 1)
	for i := range b[8:] {
		b[8+i] = byte(i)
	}
	return b
}

// icmpMsg is an ICMP error found in a captured packet.
type icmpMsg struct {
	src, dst  netip.Addr
	typ, code uint8
	mtu       uint32
	quote     []byte
}

// findICMP returns the ICMP (IPv4) or ICMPv6 messages of type typ among
// pkts, parsed here without the stack's code.
func findICMP(pkts [][]byte, typ uint8) []icmpMsg {
	var out []icmpMsg
	for _, p := range pkts {
		var m icmpMsg
		var l4 []byte
		switch {
		case len(p) >= 20 && p[0]>>4 == 4 && p[9] == 1:
			ihl := int(p[0]&0xf) * 4
			m.src, m.dst = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
			l4 = p[ihl:]
			if len(l4) >= 8 {
				m.mtu = uint32(binary.BigEndian.Uint16(l4[6:8]))
			}
		case len(p) >= 40 && p[0]>>4 == 6 && p[6] == 58:
			m.src, m.dst = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
			l4 = p[40:]
			if len(l4) >= 8 {
				m.mtu = binary.BigEndian.Uint32(l4[4:8])
			}
		default:
			continue
		}
		if len(l4) < 8 || l4[0] != typ {
			continue
		}
		m.typ, m.code, m.quote = l4[0], l4[1], l4[8:]
		out = append(out, m)
	}
	return out
}

// waitICMP waits for an ICMP message of type typ sent on the named link end.
func (n *gwNet) waitICMP(t *testing.T, name string, typ uint8) icmpMsg {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ms := findICMP(n.sentBy(name), typ); len(ms) > 0 {
			return ms[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no ICMP type %d sent on %s", typ, name)
	return icmpMsg{}
}

// resolve has each host ping its gateway, so that neighbour entries exist
// before packets are injected.
func (n *gwNet) resolve(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, c := range []struct {
		s   *stack.Stack
		dst netip.Addr
	}{{n.L1, g1lan4}, {n.L1, g1lan6}, {n.L2, g2lan4}, {n.L2, g2lan6}, {n.G1, g2wan4}, {n.G1, g2wan6}} {
		if c.s == nil {
			continue
		}
		if _, err := testbed.Ping(ctx, c.s, c.dst, 1, 8); err != nil {
			t.Fatalf("ping %v: %v", c.dst, err)
		}
	}
}

var gwFamilies = []struct{ inner, outer int }{{4, 4}, {6, 6}, {4, 6}, {6, 4}}

// TestGatewaySiteToSite: hosts on two LANs reach each other through two
// gateways over an ESP tunnel, in every family combination: ping both
// ways, TCP transfers of 4 MiB and 1 MiB both ways with their content
// checked, and UDP datagrams of 100 and 8000 bytes (fragmented on the
// LAN; IPv4 fragments are fragmented again before the tunnel, IPv6 ones
// make the host lower its path MTU). The WAN never carries the subnets'
// traffic in clear, the gateways count no IPsec error, and the forwarded
// packets came through the fwd check.
func TestGatewaySiteToSite(t *testing.T) {
	for _, fam := range gwFamilies {
		t.Run(fmt.Sprintf("%d-in-%d", fam.inner, fam.outer), func(t *testing.T) {
			n := newGwNet(t, gwConfig{inner: fam.inner, outer: fam.outer})
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			a1, a2 := n.addr(true, false), n.addr(false, true)
			for _, s := range []*stack.Stack{n.L1, n.L2} {
				if err := testbed.ServeSink(ctx, s, testbed.TCPSinkPort); err != nil {
					t.Fatal(err)
				}
				if err := s.ServeUDPEcho(ctx, testbed.EchoPort); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := testbed.Ping(ctx, n.L1, a2, 3, 56); err != nil {
				t.Fatalf("ping L1->L2: %v", err)
			}
			if _, err := testbed.Ping(ctx, n.L2, a1, 3, 56); err != nil {
				t.Fatalf("ping L2->L1: %v", err)
			}
			for _, size := range []int{100, 8000} {
				if err := testbed.UDPEcho(ctx, n.L1, a2, size); err != nil {
					n.dump(t)
					t.Fatalf("udp L1->L2: %v", err)
				}
				if err := testbed.UDPEcho(ctx, n.L2, a1, size); err != nil {
					t.Fatalf("udp L2->L1: %v", err)
				}
			}
			r1, err := testbed.TCPTransfer(ctx, n.L1, a2, 4<<20)
			if err != nil {
				t.Fatalf("tcp L1->L2: %v", err)
			}
			r2, err := testbed.TCPTransfer(ctx, n.L2, a1, 1<<20)
			if err != nil {
				t.Fatalf("tcp L2->L1: %v", err)
			}
			t.Logf("TCP through both gateways: L1->L2 4 MiB at %.0f Mbit/s, L2->L1 1 MiB at %.0f Mbit/s", r1*8/1e6, r2*8/1e6)
			n.checkNoLeaks(t)
			for _, g := range []struct {
				name string
				s    *stack.Stack
			}{{"G1", n.G1}, {"G2", n.G2}} {
				for _, st := range g.s.Engine.Stats.Snapshot() {
					if st.Value != 0 {
						t.Errorf("%s: %s = %d, want 0", g.name, st.Name, st.Value)
					}
				}
				wan, lan := g.s.EndpointOf(1), g.s.EndpointOf(2)
				if wan.Stats.InForwarded.Load() < 100 || lan.Stats.InForwarded.Load() < 100 {
					t.Errorf("%s: forwarded in from WAN %d, from LAN %d; want the bulk of the traffic", g.name,
						wan.Stats.InForwarded.Load(), lan.Stats.InForwarded.Load())
				}
				if wan.Stats.OutProtected.Load() < 100 {
					t.Errorf("%s: %d packets protected on the WAN", g.name, wan.Stats.OutProtected.Load())
				}
			}
		})
	}
}

// dump logs the counters of every stack, for a failing test.
func (n *gwNet) dump(t *testing.T) {
	t.Helper()
	for _, g := range []struct {
		name string
		s    *stack.Stack
	}{{"L1", n.L1}, {"G1", n.G1}, {"G2", n.G2}, {"L2", n.L2}} {
		if g.s == nil {
			continue
		}
		for _, id := range g.s.NICs() {
			ls := &g.s.EndpointOf(id).Stats
			t.Logf("%s nic %d: passed %d protected %d dropped %d frags %d toobig %d dfclr %d | in checked %d dropped %d ipsec %d frags %d reinj %d fwd %d | out fwd %d innerfrags %d",
				g.name, id, ls.OutPassed.Load(), ls.OutProtected.Load(), ls.OutDropped.Load(), ls.OutFragments.Load(), ls.OutTooBig.Load(), ls.OutDFCleared.Load(),
				ls.InChecked.Load(), ls.InDropped.Load(), ls.InIPsec.Load(), ls.InFragments.Load(), ls.Reinjected.Load(), ls.InForwarded.Load(),
				ls.OutForwarded.Load(), ls.FwdInnerFragments.Load())
		}
		for _, st := range g.s.Engine.Stats.Snapshot() {
			if st.Value != 0 {
				t.Logf("%s: %s = %d", g.name, st.Name, st.Value)
			}
		}
		t.Logf("%s: icmp errors sent %d; path MTU L1->L2 %d (v6) %d (v4)", g.name, g.s.ICMPErrorsSent(),
			g.s.Endpoint.PathMTU(l1v6, l2v6), g.s.Endpoint.PathMTU(l1v4, l2v4))
		rs := &g.s.Engine.Reasm.Stats
		t.Logf("%s: reasm reqds %d oks %d fails %d timeout %d; udp %+v", g.name, rs.ReasmReqds.Load(), rs.ReasmOKs.Load(),
			rs.ReasmFails.Load(), rs.ReasmTimeout.Load(), g.s.Stats().UDP)
	}
}

// tunnelMTU is the largest inner packet an ESP tunnel with AES-GCM-128
// carries on a wire of mtu bytes, by the RFCs rather than the code: outer
// header 20 (RFC 791) or 40 (RFC 8200), ESP header 8 and trailer 2 (RFC
// 4303 §2), padding to 4 bytes, IV 8 and ICV 16 (RFC 4106 §3-§4). It is
// Linux's xfrm_state_mtu for that SA.
func tunnelMTU(wire, outer int) int {
	oh := 20
	if outer == 6 {
		oh = 40
	}
	return ((wire - oh - 8 - 8 - 16) &^ 3) - 2
}

// TestGatewayPathMTU (RFC 4301 §8): with a WAN MTU of 1400, a forwarded
// packet that does not fit the tunnel is answered by the gateway with
// Fragmentation Needed (IPv4 with DF: a 1472-byte ping) or Packet Too Big
// (IPv6: a 1452-byte ping) giving the tunnel MTU, sent to the inner source
// on the LAN; an IPv4 datagram without DF is fragmented before the tunnel
// and arrives whole; and a Fragmentation Needed or Packet Too Big from a
// router on the WAN that quotes the tunnel's ESP lowers the tunnel MTU
// the next inner packet is told. Before the gateway handled forwarded
// packets' MTU, gVisor (to which the wrapper reports a 64 KiB MTU) never
// answered and the ESP packets went out fragmented.
func TestGatewayPathMTU(t *testing.T) {
	for _, fam := range gwFamilies {
		t.Run(fmt.Sprintf("%d-in-%d", fam.inner, fam.outer), func(t *testing.T) {
			n := newGwNet(t, gwConfig{inner: fam.inner, outer: fam.outer, wanMTU: 1400})
			n.resolve(t)
			src, dst := n.addr(true, false), n.addr(false, true)
			v4 := fam.inner == 4
			want := tunnelMTU(1400, fam.outer)
			// 1500 bytes on the LAN: a 1472-byte ping with DF, or a
			// 1452-byte IPv6 ping.
			size, typ, proto := 1452, uint8(2), uint8(58)
			if v4 {
				size, typ, proto = 1472, 3, 1
			}
			inject(n.G1, 2, buildIP(src, dst, proto, 64, true, echoRequest(v4, size)))
			m := n.waitICMP(t, "lan1G", typ)
			if v4 && m.code != 4 {
				t.Fatalf("ICMP type 3 code %d, want 4 (fragmentation needed)", m.code)
			}
			if m.dst != src || (m.src != g1lan4 && m.src != g1lan6) || int(m.mtu) != want {
				t.Fatalf("error %v -> %v MTU %d; want from G1's LAN address to %v with MTU %d", m.src, m.dst, m.mtu, src, want)
			}
			if qs, qd, ok := quotedAddrs(m.quote); !ok || qs != src || qd != dst {
				t.Fatalf("the error quotes %v -> %v, not the dropped packet", qs, qd)
			}
			// A router on the WAN reports a path MTU of 1300 for the
			// tunnel's ESP packets: G1 records it for the tunnel.
			o1, o2 := n.tunnelEnds()
			esp := buildIP(o1, o2, 50, 63, o1.Is4(), append(binary.BigEndian.AppendUint32(nil, spiG1toG2), make([]byte, 1350)...))
			router := netip.MustParseAddr("192.0.2.254")
			var ptb []byte
			if o1.Is4() {
				msg := []byte{3, 4, 0, 0, 0, 0, 1300 >> 8, 1300 & 0xff}
				ptb = buildIP(router, o1, 1, 64, false, append(msg, esp[:28]...))
			} else {
				router = netip.MustParseAddr("2001:db8::fe")
				msg := []byte{2, 0, 0, 0, 0, 0, 1300 >> 8, 1300 & 0xff}
				ptb = buildIP(router, o1, 58, 64, false, append(msg, esp[:48]...))
			}
			inject(n.G1, 1, ptb)
			if got := n.G1.Endpoint.PathMTU(o1, o2); got != 1300 {
				t.Fatalf("G1's path MTU to %v is %d after the router's error, want 1300", o2, got)
			}
			n.mu.Lock()
			n.frames["lan1G"] = nil
			n.mu.Unlock()
			inject(n.G1, 2, buildIP(src, dst, proto, 64, true, echoRequest(v4, 1300)))
			m = n.waitICMP(t, "lan1G", typ)
			want = tunnelMTU(1300, fam.outer)
			if !v4 {
				// Below IPv6's minimum MTU the tunnel still takes
				// 1280-byte packets, in outer fragments, and says
				// 1280 (RFC 2473 §7.2).
				want = max(want, 1280)
			}
			if int(m.mtu) != want {
				t.Fatalf("after the outer path MTU fell to 1300: MTU %d, want %d", m.mtu, want)
			}
			if !v4 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := testbed.Ping(ctx, n.L1, dst, 1, 1280-48); err != nil {
					t.Fatalf("1280-byte ping through the 1300-byte path: %v", err)
				}
				if n.G1.Endpoint.Stats.OutFragments.Load() == 0 {
					t.Fatalf("the 1280-byte packet was not carried in outer fragments")
				}
				n.checkNoLeaks(t)
				return
			}
			// IPv4 without DF: fragmented before the tunnel, each
			// fragment sealed, reassembled by L2.
			laddr := n.L2.FullAddress(dst, 5555)
			c, err := gonet.DialUDP(n.L2.Stack, &laddr, nil, stack.Proto(dst))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			payload := make([]byte, 1472)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			udp := make([]byte, 8+len(payload))
			binary.BigEndian.PutUint16(udp[0:], 4444)
			binary.BigEndian.PutUint16(udp[2:], 5555)
			binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
			copy(udp[8:], payload)
			before := n.G1.Endpoint.Stats.FwdInnerFragments.Load()
			inject(n.G1, 2, buildIP(src, dst, 17, 64, false, udp))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, 2000)
			k, err := c.Read(got)
			if err != nil {
				n.dump(t)
				t.Fatalf("the 1500-byte datagram without DF did not arrive: %v", err)
			}
			if !bytes.Equal(got[:k], payload) {
				t.Fatalf("datagram arrived changed (%d bytes)", k)
			}
			if d := n.G1.Endpoint.Stats.FwdInnerFragments.Load() - before; d != 2 {
				t.Fatalf("G1 made %d inner fragments, want 2", d)
			}
			n.checkNoLeaks(t)
		})
	}
}

// quotedAddrs returns the addresses of the IP header an ICMP error quotes.
func quotedAddrs(q []byte) (src, dst netip.Addr, ok bool) {
	switch {
	case len(q) >= 20 && q[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(q[12:16])), netip.AddrFrom4([4]byte(q[16:20])), true
	case len(q) >= 40 && q[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(q[8:24])), netip.AddrFrom16([16]byte(q[24:40])), true
	}
	return netip.Addr{}, netip.Addr{}, false
}

// TestGatewayTimeExceeded: a packet whose TTL (hop limit) is 1 when it
// reaches a gateway is not forwarded; the gateway answers with Time
// Exceeded (RFC 1812 §5.3.1, RFC 8200 §3). From L1 in clear, the answer
// goes to L1 on the LAN; from L2 through the tunnel (TTL 2 at G2, 1 at
// G1), G1's answer quotes a protected flow and goes back through the
// tunnel (RFC 4301 §6.2), reaching L2 and never the WAN in clear. gVisor's
// IPv4 forwarding sent Time Exceeded only for a TTL of 0 and forwarded a
// TTL of 1 as 0: the IPv4 cases fail without the gateway's own check.
func TestGatewayTimeExceeded(t *testing.T) {
	for _, fam := range gwFamilies {
		t.Run(fmt.Sprintf("%d-in-%d", fam.inner, fam.outer), func(t *testing.T) {
			n := newGwNet(t, gwConfig{inner: fam.inner, outer: fam.outer})
			n.resolve(t)
			l1, l2 := n.addr(true, false), n.addr(false, true)
			v4 := fam.inner == 4
			proto, typ := uint8(58), uint8(3)
			if v4 {
				proto, typ = 1, 11
			}
			inject(n.G1, 2, buildIP(l1, l2, proto, 1, false, echoRequest(v4, 56)))
			m := n.waitICMP(t, "lan1G", typ)
			if m.dst != l1 || m.code != 0 || (m.src != g1lan4 && m.src != g1lan6) {
				t.Fatalf("Time Exceeded %v -> %v code %d, want from G1's LAN address to %v, code 0", m.src, m.dst, m.code, l1)
			}
			if qs, qd, ok := quotedAddrs(m.quote); !ok || qs != l1 || qd != l2 {
				t.Fatalf("Time Exceeded quotes %v -> %v", qs, qd)
			}
			for _, p := range n.sentBy("lan2G") {
				if s, _, ok := quotedAddrs(p); ok && s == l1 {
					t.Fatalf("the expired packet was forwarded to L2")
				}
			}
			// Through the tunnel: G2 forwards with TTL 1, G1 answers.
			inject(n.G2, 2, buildIP(l2, l1, proto, 2, false, echoRequest(v4, 56)))
			m = n.waitICMP(t, "lan2G", typ)
			if m.dst != l2 {
				t.Fatalf("Time Exceeded through the tunnel went to %v, want %v", m.dst, l2)
			}
			if m.src != g1wan4 && m.src != g1wan6 && m.src != g1lan4 && m.src != g1lan6 {
				t.Fatalf("Time Exceeded from %v, want one of G1's addresses", m.src)
			}
			for _, p := range n.sentBy("lan1G") {
				if s, d, ok := quotedAddrs(p); ok && s == l2 && d == l1 {
					t.Fatalf("the expired packet was forwarded to L1")
				}
			}
			n.checkNoLeaks(t)
		})
	}
}

// TestGatewayFwdPolicy: the fwd policies decide what a gateway forwards
// (RFC 4301 §5.2; Linux's XFRM_POLICY_FWD). A fwd discard policy for one
// host blocks it, in clear from the LAN and out of the tunnel, counting
// XfrmInPolBlock; a tunnel packet whose inner addresses no fwd policy
// covers is XfrmInNoPols, and one whose fwd policy names another tunnel is
// XfrmInTmplMismatch. An ICMP error arriving in clear on the WAN for a
// host behind the gateway that quotes a flow the fwd policy protects is
// dropped (RFC 4301 §6.2). Before forwarded packets were checked against
// the fwd policies, the in policies decided them: the discards let the
// packets through and the cleartext error reached L1.
func TestGatewayFwdPolicy(t *testing.T) {
	for _, fam := range gwFamilies {
		t.Run(fmt.Sprintf("%d-in-%d", fam.inner, fam.outer), func(t *testing.T) {
			n := newGwNet(t, gwConfig{inner: fam.inner, outer: fam.outer})
			n.resolve(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			l1, l2 := n.addr(true, false), n.addr(false, true)
			v4 := fam.inner == 4
			lan1, lan2 := n.subnets()
			if _, err := testbed.Ping(ctx, n.L1, l2, 1, 56); err != nil {
				t.Fatalf("ping before the discard: %v", err)
			}
			host := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
			o1, o2 := n.tunnelEnds()

			// G2 discards what the tunnel brings for L2.
			discard := &xfrm.Policy{Dir: xfrm.DirFwd, Priority: 10, Action: xfrm.ActionDiscard,
				Sel: xfrm.Selector{Src: lan1, Dst: host(l2)}}
			id, err := n.G2.Engine.AddPolicy(discard)
			if err != nil {
				t.Fatal(err)
			}
			pc, cancelPing := context.WithTimeout(ctx, 500*time.Millisecond)
			if _, err := n.L1.Ping(pc, l2, 99, 56); err == nil {
				t.Fatalf("ping L1->L2 passed G2's fwd discard policy")
			}
			cancelPing()
			if got := n.G2.Engine.Stats.InPolBlock.Load(); got == 0 {
				t.Fatalf("G2 XfrmInPolBlock = 0 after the fwd discard")
			}
			if _, err := n.G2.Engine.SPD.DeleteByID(id); err != nil {
				t.Fatal(err)
			}

			// G1 discards what L1 sends in clear.
			discard = &xfrm.Policy{Dir: xfrm.DirFwd, Priority: 10, Action: xfrm.ActionDiscard,
				Sel: xfrm.Selector{Src: host(l1), Dst: lan2}}
			if id, err = n.G1.Engine.AddPolicy(discard); err != nil {
				t.Fatal(err)
			}
			pc, cancelPing = context.WithTimeout(ctx, 500*time.Millisecond)
			if _, err := n.L1.Ping(pc, l2, 98, 56); err == nil {
				t.Fatalf("ping L1->L2 passed G1's fwd discard policy")
			}
			cancelPing()
			if got := n.G1.Engine.Stats.InPolBlock.Load(); got == 0 {
				t.Fatalf("G1 XfrmInPolBlock = 0 after the fwd discard")
			}
			if _, err := n.G1.Engine.SPD.DeleteByID(id); err != nil {
				t.Fatal(err)
			}
			if _, err := testbed.Ping(ctx, n.L1, l2, 1, 56); err != nil {
				t.Fatalf("ping after the discards were removed: %v", err)
			}

			// Inner addresses outside every fwd policy: G1 tunnels
			// traffic from another subnet (its out policy allows it),
			// G2 has no fwd policy for it.
			other := netip.MustParsePrefix("10.9.0.0/24")
			otherHost := netip.MustParseAddr("10.9.0.5")
			if !v4 {
				other = netip.MustParsePrefix("fd09::/64")
				otherHost = netip.MustParseAddr("fd09::5")
			}
			tmpl := xfrm.Template{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTunnel, Src: o1, Dst: o2, ReqID: 1}
			if _, err := n.G1.Engine.AddPolicy(&xfrm.Policy{Dir: xfrm.DirOut, Priority: 10, Action: xfrm.ActionProtect,
				Sel: xfrm.Selector{Src: other, Dst: lan2}, Templates: []xfrm.Template{tmpl}}); err != nil {
				t.Fatal(err)
			}
			proto := uint8(58)
			if v4 {
				proto = 1
			}
			waitCount := func(what string, c func() uint64) {
				t.Helper()
				for deadline := time.Now().Add(3 * time.Second); c() == 0; time.Sleep(10 * time.Millisecond) {
					if time.Now().After(deadline) {
						n.dump(t)
						t.Fatalf("%s stayed 0", what)
					}
				}
			}
			inject(n.G1, 2, buildIP(otherHost, l2, proto, 64, false, echoRequest(v4, 56)))
			waitCount("G2 XfrmInNoPols", n.G2.Engine.Stats.InNoPols.Load)
			// A fwd policy for it that asks for another tunnel.
			wrong := tmpl
			wrong.Src, wrong.Dst = netip.MustParseAddr("192.0.2.99"), o2
			if !o1.Is4() {
				wrong.Src = netip.MustParseAddr("2001:db8::99")
			}
			if _, err := n.G2.Engine.AddPolicy(&xfrm.Policy{Dir: xfrm.DirFwd, Priority: 10, Action: xfrm.ActionProtect,
				Sel: xfrm.Selector{Src: other, Dst: lan2}, Templates: []xfrm.Template{wrong}}); err != nil {
				t.Fatal(err)
			}
			inject(n.G1, 2, buildIP(otherHost, l2, proto, 64, false, echoRequest(v4, 56)))
			waitCount("G2 XfrmInTmplMismatch", n.G2.Engine.Stats.InTmplMismatch.Load)
			for _, p := range n.sentBy("lan2G") {
				if s, _, ok := quotedAddrs(p); ok && s == otherHost {
					t.Fatalf("G2 forwarded a packet from %v that no fwd policy allows", otherHost)
				}
			}

			// An ICMP error in clear from the WAN, to L1, about L1's
			// traffic to L2: the fwd policy wants that flow
			// protected. G1 keeps only out and fwd policies (no in
			// policy for the subnets), as a gateway needs.
			var inID uint32
			n.G1.Engine.SPD.Walk(func(p *xfrm.Policy) bool {
				if p.Dir == xfrm.DirIn && p.Sel.Dst == lan1 {
					inID = p.ID
				}
				return true
			})
			if _, err := n.G1.Engine.SPD.DeleteByID(inID); err != nil {
				t.Fatal(err)
			}
			before := n.G1.Engine.Stats.InTmplMismatch.Load()
			udp := []byte{0x11, 0x5c, 0x00, 0x35, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}
			quoted := buildIP(l1, l2, 17, 63, false, udp)
			router := netip.MustParseAddr("192.0.2.254")
			var icmpErr []byte
			if v4 {
				icmpErr = buildIP(router, l1, 1, 64, false, append([]byte{3, 1, 0, 0, 0, 0, 0, 0}, quoted...))
			} else {
				router = netip.MustParseAddr("2001:db8::fe")
				icmpErr = buildIP(router, l1, 58, 64, false, append([]byte{1, 3, 0, 0, 0, 0, 0, 0}, quoted...))
			}
			inject(n.G1, 1, icmpErr)
			waitCount("G1 XfrmInTmplMismatch for the cleartext ICMP error", func() uint64 {
				return n.G1.Engine.Stats.InTmplMismatch.Load() - before
			})
			time.Sleep(50 * time.Millisecond)
			for _, p := range n.sentBy("lan1G") {
				if s, _, ok := quotedAddrs(p); ok && s == router {
					t.Fatalf("G1 forwarded the cleartext ICMP error about a protected flow to L1")
				}
			}
			n.checkNoLeaks(t)
		})
	}
}

// TestGatewayClampMSS: with ClampMSS, a forwarded TCP SYN's MSS option is
// lowered to what fits the tunnel (the tunnel MTU less 40 or 60 bytes of
// headers) with the TCP checksum still right; without it, L1's MSS
// (its route MTU less the headers) reaches L2 unchanged.
func TestGatewayClampMSS(t *testing.T) {
	for _, fam := range gwFamilies {
		for _, clamp := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d-in-%d/clamp=%v", fam.inner, fam.outer, clamp), func(t *testing.T) {
				n := newGwNet(t, gwConfig{inner: fam.inner, outer: fam.outer, wanMTU: 1400, clampMSS: clamp})
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				l1, l2 := n.addr(true, false), n.addr(false, true)
				if err := testbed.ServeSink(ctx, n.L2, testbed.TCPSinkPort); err != nil {
					t.Fatal(err)
				}
				if _, err := testbed.TCPTransfer(ctx, n.L1, l2, 256<<10); err != nil {
					t.Fatalf("tcp: %v", err)
				}
				hdrs := 40
				if fam.inner == 6 {
					hdrs = 60
				}
				// L1's own MSS: its route MTU (wire 1500 less the
				// stack's 120-byte IPsec reserve) less the headers.
				want := 1500 - stack.DefaultOverheadReserve - hdrs
				if clamp {
					want = tunnelMTU(1400, fam.outer) - hdrs
				}
				found := false
				for _, p := range n.sentBy("lan2G") {
					mss, ok := synMSS(t, p, l1, l2)
					if !ok {
						continue
					}
					found = true
					if mss != want {
						t.Fatalf("SYN reached L2 with MSS %d, want %d", mss, want)
					}
				}
				if !found {
					t.Fatalf("no SYN from %v seen on L2's LAN", l1)
				}
				if got := n.G1.EndpointOf(1).Stats.FwdMSSClamped.Load(); clamp != (got > 0) {
					t.Fatalf("G1 clamped %d SYNs (ClampMSS %v)", got, clamp)
				}
			})
		}
	}
}

// synMSS returns the MSS option of the TCP SYN from src to dst in the IP
// packet p, after checking the TCP checksum (RFC 9293 §3.1), all parsed
// here.
func synMSS(t *testing.T, p []byte, src, dst netip.Addr) (int, bool) {
	t.Helper()
	s, d, ok := quotedAddrs(p)
	if !ok || s != src || d != dst {
		return 0, false
	}
	var tcp []byte
	if p[0]>>4 == 4 {
		if p[9] != 6 {
			return 0, false
		}
		tcp = p[int(p[0]&0xf)*4 : binary.BigEndian.Uint16(p[2:4])]
	} else {
		if p[6] != 6 {
			return 0, false
		}
		tcp = p[40 : 40+int(binary.BigEndian.Uint16(p[4:6]))]
	}
	if len(tcp) < 20 || tcp[13]&0x02 == 0 {
		return 0, false
	}
	if sum16(tcp, pseudo(src, dst, 6, len(tcp))) != 0 {
		t.Fatalf("SYN with a bad TCP checksum: %x", p)
	}
	opts := tcp[20 : int(tcp[12]>>4)*4]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return 0, false
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			return 0, false
		}
		if opts[i] == 2 && opts[i+1] == 4 {
			return int(binary.BigEndian.Uint16(opts[i+2:])), true
		}
		i += int(opts[i+1])
	}
	return 0, false
}

// TestGatewayL3LAN: a gateway whose LAN is a link without Ethernet header
// (NIC.L3, a TUN's kind) forwards between it and the tunnel: no ARP or
// NDP runs there, the packets it writes are bare IP. An echo request
// written into the LAN link comes back as the reply from L2, and a TTL
// (hop limit) of 1 as Time Exceeded.
func TestGatewayL3LAN(t *testing.T) {
	for _, fam := range gwFamilies {
		t.Run(fmt.Sprintf("%d-in-%d", fam.inner, fam.outer), func(t *testing.T) {
			n := newGwNet(t, gwConfig{inner: fam.inner, outer: fam.outer, l3LAN: true})
			n.resolve(t)
			l1, l2 := n.addr(true, false), n.addr(false, true)
			v4 := fam.inner == 4
			proto, reply, exceeded := uint8(58), uint8(129), uint8(3)
			if v4 {
				proto, reply, exceeded = 1, 0, 11
			}
			write := func(ip []byte) {
				pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(ip)})
				n.ch.InjectInbound(stack.Proto(l1), pkt)
				pkt.DecRef()
			}
			read := func(typ uint8) icmpMsg {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				for {
					pkt := n.ch.ReadContext(ctx)
					if pkt == nil {
						t.Fatalf("no ICMP type %d written to the L3 LAN", typ)
					}
					v := pkt.ToView()
					ip := append([]byte(nil), v.AsSlice()...)
					v.Release()
					pkt.DecRef()
					if ms := findICMP([][]byte{ip}, typ); len(ms) > 0 {
						return ms[0]
					}
				}
			}
			for try := 0; try < 3; try++ {
				// The first may wait for G2's and L2's neighbour
				// resolution.
				write(buildIP(l1, l2, proto, 64, false, echoRequest(v4, 56)))
			}
			if m := read(reply); m.src != l2 || m.dst != l1 {
				t.Fatalf("echo reply %v -> %v, want %v -> %v", m.src, m.dst, l2, l1)
			}
			write(buildIP(l1, l2, proto, 1, false, echoRequest(v4, 56)))
			if m := read(exceeded); m.dst != l1 {
				t.Fatalf("Time Exceeded to %v, want %v", m.dst, l1)
			}
			n.checkNoLeaks(t)
		})
	}
}

// TestGatewayClampMSSClearEgress: a SYN that leaves the clamping gateway
// in clear (G2 onto a LAN whose MTU is 1300) carries the clamped MSS too,
// 1300 less the headers. The clamped copy used to be dropped in favour of
// the packet as gVisor forwarded it whenever no IPsec applied.
func TestGatewayClampMSSClearEgress(t *testing.T) {
	for _, inner := range []int{4, 6} {
		t.Run(fmt.Sprintf("v%d", inner), func(t *testing.T) {
			n := newGwNet(t, gwConfig{inner: inner, outer: inner, clampMSS: true})
			n.G2.EndpointOf(2).SetMTU(1300)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			l1, l2 := n.addr(true, false), n.addr(false, true)
			if err := testbed.ServeSink(ctx, n.L2, testbed.TCPSinkPort); err != nil {
				t.Fatal(err)
			}
			if _, err := testbed.TCPTransfer(ctx, n.L1, l2, 64<<10); err != nil {
				t.Fatalf("tcp: %v", err)
			}
			hdrs := 40
			if inner == 6 {
				hdrs = 60
			}
			found := false
			for _, p := range n.sentBy("lan2G") {
				if mss, ok := synMSS(t, p, l1, l2); ok {
					found = true
					if mss != 1300-hdrs {
						t.Fatalf("SYN left G2 in clear with MSS %d, want %d", mss, 1300-hdrs)
					}
				}
			}
			if !found {
				t.Fatalf("no SYN from %v seen on L2's LAN", l1)
			}
		})
	}
}
