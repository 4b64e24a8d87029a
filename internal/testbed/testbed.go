package testbed

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/internal/leakcheck"
	"github.com/ipsecstack/ipsecstack/link/memlink"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Addresses of the two stacks (documentation prefixes, RFC 5737/3849).
var (
	A4 = netip.MustParseAddr("192.0.2.1")
	B4 = netip.MustParseAddr("192.0.2.2")
	A6 = netip.MustParseAddr("2001:db8::1")
	B6 = netip.MustParseAddr("2001:db8::2")
)

// NDPMode says how the pair treats neighbour discovery.
type NDPMode int

// NDP modes.
const (
	// NDPProtect protects NS/NA with ESP: transport SAs to each side's
	// solicited-node multicast address and between the unicast addresses.
	NDPProtect NDPMode = iota
	// NDPBypass exempts ICMPv6 types 133-137 with a higher-priority bypass.
	NDPBypass
)

// Config chooses what a Pair protects and how.
type Config struct {
	Suite Suite
	Mode  xfrm.Mode
	// Inner is the family of the protected traffic (4 or 6); Outer the
	// family of the tunnel endpoints (tunnel mode only; 0 = Inner).
	Inner, Outer int
	NDP          NDPMode
	ESN          bool
	ReplayWindow uint32
	// ReplayOff turns anti-replay checking off (a window of 0).
	ReplayOff bool
	// Bundle lists the transforms of the main policy in output order
	// (first innermost), e.g. {IPComp, ESP} or {ESP, AH}; nil is {ESP}.
	// In tunnel mode the first transform is the tunnel and the others
	// are transport-mode SAs between the tunnel endpoints, the one-tunnel
	// bundle Linux builds. AH SAs take Suite.Auth (or AH.Auth when set).
	Bundle []xfrm.Proto
	// AH, when set, is the integrity algorithm of the AH SAs of a bundle.
	AH Suite
	// Seq is the sequence number the main outbound SAs start after (for
	// tests near the 2^32 boundary).
	Seq uint64
	// MTU of the link; 0 = 1500.
	MTU uint32
	// Plain builds the pair without any SA or policy (the baseline).
	Plain bool
	// NoGSO turns the stacks' segmentation offload off
	// (stack.Config.NoGSO).
	NoGSO bool
	// TxQueue gives both stacks a transmit queue (stack.Config.TxQueue),
	// as `ipsecstack run` has.
	TxQueue int
	// Dispatchers per link end (benchmarks use 2).
	Dispatchers int
	// PortSAs adds, for each port, a pair of ESP SAs of their own and
	// policies (preferred over the main ones) that send TCP traffic to
	// or from that port over them. Their SPIs are chosen so that each
	// pair's packets land on a different memlink delivery goroutine than
	// the main SAs' and the earlier port SAs' where Dispatchers allows.
	PortSAs []uint16
	// Encap, when its Type is set, UDP-encapsulates the main ESP SAs
	// (RFC 3948): A's end uses port Encap.SPort, B's Encap.DPort (0 =
	// 4500), and A, the side behind a NAT, sends keepalives every
	// Encap.Keepalive when set.
	Encap xfrm.Encap
	// WrapLinkA, when set, wraps A's link endpoint (a NAT, a lossy link)
	// before stack A is built on it.
	WrapLinkA func(gstack.LinkEndpoint) gstack.LinkEndpoint
}

// Priorities: lower wins, as in Linux.
const (
	prioNDP  = 100
	prioMain = 1000
)

// Pair is two stacks joined by a memlink.
type Pair struct {
	Config Config
	A, B   *stack.Stack
	LinkA  *memlink.Endpoint
	LinkB  *memlink.Endpoint
	// AddrA and AddrB are the addresses the protected traffic uses.
	AddrA, AddrB netip.Addr

	mu  sync.Mutex
	tap func(from string, frame []byte)
	// leakA and leakB watch the frames each side sends (see Leaks).
	leakA, leakB *leakcheck.Checker
}

// SetTap calls fn with every frame a side sends ("A" or "B"), after the
// leak detector saw it. fn must not block.
func (p *Pair) SetTap(fn func(from string, frame []byte)) {
	p.mu.Lock()
	p.tap = fn
	p.mu.Unlock()
}

// InjectB hands the IP packet ip to stack B as if it arrived on its link.
func (p *Pair) InjectB(ip []byte) {
	proto := header.IPv6ProtocolNumber
	if len(ip) > 0 && ip[0]>>4 == 4 {
		proto = header.IPv4ProtocolNumber
	}
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(append([]byte(nil), ip...))})
	defer pkt.DecRef()
	p.B.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// New builds a pair.
func New(cfg Config) (*Pair, error) {
	if cfg.Inner == 0 {
		cfg.Inner = 6
	}
	if cfg.Outer == 0 || cfg.Mode == xfrm.ModeTransport {
		cfg.Outer = cfg.Inner
	}
	if cfg.ReplayWindow == 0 {
		cfg.ReplayWindow = 128
	}
	if cfg.ReplayOff {
		cfg.ReplayWindow = 0
	}
	if len(cfg.Bundle) == 0 {
		cfg.Bundle = []xfrm.Proto{xfrm.ProtoESP}
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = 1500
	}
	la, lb := memlink.NewPairWithOptions("\x02\x00\x00\x00\x00\x01", "\x02\x00\x00\x00\x00\x02",
		memlink.Options{MTU: mtu, Dispatchers: cfg.Dispatchers, QueueLen: 4096})
	p := &Pair{Config: cfg, LinkA: la, LinkB: lb}
	p.AddrA, p.AddrB = A6, B6
	if cfg.Inner == 4 {
		p.AddrA, p.AddrB = A4, B4
	}
	var err error
	if cfg.Encap.Type != xfrm.EncapNone {
		if cfg.Encap.SPort == 0 {
			cfg.Encap.SPort = 4500
		}
		if cfg.Encap.DPort == 0 {
			cfg.Encap.DPort = 4500
		}
		p.Config.Encap = cfg.Encap
	}
	mk := func(l gstack.LinkEndpoint, a4, a6 netip.Addr) (*stack.Stack, error) {
		return stack.New(stack.Config{
			Link:    l,
			Addrs:   []netip.Prefix{netip.PrefixFrom(a4, 24), netip.PrefixFrom(a6, 64)},
			NoGSO:   cfg.NoGSO,
			TxQueue: cfg.TxQueue,
		})
	}
	var linkA gstack.LinkEndpoint = la
	if cfg.WrapLinkA != nil {
		linkA = cfg.WrapLinkA(la)
	}
	if p.A, err = mk(linkA, A4, A6); err != nil {
		return nil, err
	}
	if p.B, err = mk(lb, B4, B6); err != nil {
		p.A.Close()
		return nil, err
	}
	if !cfg.Plain {
		if err := p.configure(); err != nil {
			p.Close()
			return nil, err
		}
	}
	flows := p.LeakFlows()
	var ports []uint16
	if cfg.Encap.Type != xfrm.EncapNone {
		ports = []uint16{p.Config.Encap.SPort, p.Config.Encap.DPort}
	}
	p.leakA = leakcheck.New(leakcheck.Config{Flows: flows, ESPInUDPPorts: ports})
	p.leakB = leakcheck.New(leakcheck.Config{Flows: flows, ESPInUDPPorts: ports})
	la.SetTap(func(dir memlink.Direction, frame []byte) {
		if dir == memlink.Out {
			p.inspect("A", p.leakA, frame)
		}
	})
	lb.SetTap(func(dir memlink.Direction, frame []byte) {
		if dir == memlink.Out {
			p.inspect("B", p.leakB, frame)
		}
	})
	return p, nil
}

// Close stops both stacks.
func (p *Pair) Close() {
	if p.A != nil {
		p.A.Close()
	}
	if p.B != nil {
		p.B.Close()
	}
}

// SolicitedNode returns the solicited-node multicast address of a.
func SolicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	m := [16]byte{0xff, 0x02, 11: 0x01, 12: 0xff}
	copy(m[13:], b[13:])
	return netip.AddrFrom16(m)
}

// SPIs used by the pair: A→B and B→A for the main SAs and the NDP SAs.
const (
	SPIAtoB          = 0x1001
	SPIBtoA          = 0x2001
	SPINDPMulticastA = 0x3001 // A → solicited-node(B)
	spiNDPmcastB     = 0x3002 // B → solicited-node(A)
	spiNDPuniA       = 0x3003 // A → B unicast NDP
	spiNDPuniB       = 0x3004
)

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// configure installs SAs and policies on both sides.
func (p *Pair) configure() error {
	cfg := p.Config
	outerA, outerB := A6, B6
	if cfg.Outer == 4 {
		outerA, outerB = A4, B4
	}
	type side struct {
		s             *stack.Stack
		self, peer    netip.Addr
		oSelf, oPeer  netip.Addr
		spiOut, spiIn uint32
	}
	sides := []side{
		{p.A, p.AddrA, p.AddrB, outerA, outerB, SPIAtoB, SPIBtoA},
		{p.B, p.AddrB, p.AddrA, outerB, outerA, SPIBtoA, SPIAtoB},
	}
	sa := func(proto xfrm.Proto, spi uint32, src, dst netip.Addr, mode xfrm.Mode, reqid uint32) xfrm.SAConfig {
		c := xfrm.SAConfig{Proto: proto, SPI: spi, Src: src, Dst: dst, Mode: mode, ReqID: reqid,
			ReplayWindow: cfg.ReplayWindow, ESN: cfg.ESN}
		seed := byte(spi) ^ byte(spi>>8) ^ byte(proto)
		switch proto {
		case xfrm.ProtoAH:
			ahs := cfg.AH
			if ahs.Auth == "" {
				ahs = cfg.Suite
			}
			ahs.keyedAH(&c, seed)
		case xfrm.ProtoIPComp:
			c.Comp = xfrm.Algorithm{Name: "deflate"}
		default:
			cfg.Suite.keyed(&c, seed)
		}
		return c
	}
	for _, sd := range sides {
		e := sd.s.Engine
		var outT, inT []xfrm.Template
		for i, proto := range cfg.Bundle {
			mode := cfg.Mode
			if i > 0 {
				mode = xfrm.ModeTransport
			}
			srcA, dstA := sd.self, sd.peer
			inSrc, inDst := sd.peer, sd.self
			if cfg.Mode == xfrm.ModeTunnel {
				srcA, dstA = sd.oSelf, sd.oPeer
				inSrc, inDst = sd.oPeer, sd.oSelf
			}
			out := sa(proto, sd.spiOut, srcA, dstA, mode, 1)
			if proto != xfrm.ProtoIPComp {
				out.Seq = cfg.Seq
			}
			in := sa(proto, sd.spiIn, inSrc, inDst, mode, 1)
			if proto == xfrm.ProtoESP && cfg.Encap.Type != xfrm.EncapNone {
				// An SA's ports are those of its source and
				// destination (Linux's encap sport/dport).
				// Only A's outbound SA sends keepalives.
				aToB, bToA := cfg.Encap, cfg.Encap
				bToA.SPort, bToA.DPort, bToA.Keepalive = aToB.DPort, aToB.SPort, 0
				if sd.s == p.A {
					out.Encap, in.Encap = aToB, bToA
				} else {
					aToB.Keepalive = 0
					out.Encap, in.Encap = bToA, aToB
				}
			}
			for _, c := range []xfrm.SAConfig{out, in} {
				if _, err := e.AddSA(c); err != nil {
					return err
				}
			}
			ot := xfrm.Template{Proto: proto, Mode: mode, Level: xfrm.LevelRequire, ReqID: 1}
			it := ot
			if mode == xfrm.ModeTunnel {
				ot.Src, ot.Dst = sd.oSelf, sd.oPeer
				it.Src, it.Dst = sd.oPeer, sd.oSelf
			}
			outT = append(outT, ot)
			inT = append(inT, it)
		}
		pols := []*xfrm.Policy{
			{Dir: xfrm.DirOut, Priority: prioMain, Action: xfrm.ActionProtect, Templates: outT,
				Sel: xfrm.Selector{Src: host(sd.self), Dst: host(sd.peer)}},
			{Dir: xfrm.DirIn, Priority: prioMain, Action: xfrm.ActionProtect, Templates: inT,
				Sel: xfrm.Selector{Src: host(sd.peer), Dst: host(sd.self)}},
		}
		if err := addPolicies(e, pols); err != nil {
			return err
		}
	}
	if err := p.configurePortSAs(outerA, outerB); err != nil {
		return err
	}
	if cfg.Inner == 6 || cfg.Outer == 6 {
		return p.configureNDP()
	}
	return nil
}

// espFrame is the start of an Ethernet frame carrying ESP from src to dst
// with spi: enough for memlink's flow hash.
func espFrame(src, dst netip.Addr, spi uint32) []byte {
	f := make([]byte, 14+40+8)
	ip := f[14:]
	if src.Is4() {
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ip[0], ip[9] = 0x45, byte(xfrm.ProtoESP)
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint32(ip[20:], spi)
		return f
	}
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	ip[0], ip[6] = 0x60, byte(xfrm.ProtoESP)
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	binary.BigEndian.PutUint32(ip[40:], spi)
	return f
}

// configurePortSAs installs Config.PortSAs.
func (p *Pair) configurePortSAs(outerA, outerB netip.Addr) error {
	cfg := p.Config
	srcA, dstA := p.AddrA, p.AddrB
	if cfg.Mode == xfrm.ModeTunnel {
		srcA, dstA = outerA, outerB
	}
	// Dispatchers already taken on each receiving link.
	usedB := map[int]bool{p.LinkB.DispatcherOf(espFrame(srcA, dstA, SPIAtoB)): true}
	usedA := map[int]bool{p.LinkA.DispatcherOf(espFrame(dstA, srcA, SPIBtoA)): true}
	n := max(cfg.Dispatchers, 1)
	for k, port := range cfg.PortSAs {
		reqid := uint32(10 + k)
		spiAB, spiBA := uint32(SPIAtoB+0x100*(k+1)), uint32(SPIBtoA+0x100*(k+1))
		for try := 0; try < 256; try++ {
			db, da := p.LinkB.DispatcherOf(espFrame(srcA, dstA, spiAB)), p.LinkA.DispatcherOf(espFrame(dstA, srcA, spiBA))
			if (!usedB[db] || len(usedB) >= n) && (!usedA[da] || len(usedA) >= n) {
				usedB[db], usedA[da] = true, true
				break
			}
			spiAB++
			spiBA++
		}
		type side struct {
			s             *stack.Stack
			self, peer    netip.Addr
			oSelf, oPeer  netip.Addr
			spiOut, spiIn uint32
		}
		for _, sd := range []side{
			{p.A, p.AddrA, p.AddrB, srcA, dstA, spiAB, spiBA},
			{p.B, p.AddrB, p.AddrA, dstA, srcA, spiBA, spiAB},
		} {
			mk := func(spi uint32, src, dst netip.Addr) xfrm.SAConfig {
				c := xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: spi, Src: src, Dst: dst, Mode: cfg.Mode, ReqID: reqid,
					ReplayWindow: cfg.ReplayWindow, ESN: cfg.ESN}
				cfg.Suite.keyed(&c, byte(spi)^byte(spi>>8)^0x55)
				return c
			}
			for _, c := range []xfrm.SAConfig{mk(sd.spiOut, sd.oSelf, sd.oPeer), mk(sd.spiIn, sd.oPeer, sd.oSelf)} {
				if _, err := sd.s.Engine.AddSA(c); err != nil {
					return err
				}
			}
			ot := xfrm.Template{Proto: xfrm.ProtoESP, Mode: cfg.Mode, Level: xfrm.LevelRequire, ReqID: reqid}
			it := ot
			if cfg.Mode == xfrm.ModeTunnel {
				ot.Src, ot.Dst = sd.oSelf, sd.oPeer
				it.Src, it.Dst = sd.oPeer, sd.oSelf
			}
			ports := xfrm.PortRange{Lo: port, Hi: port}
			var pols []*xfrm.Policy
			for _, sel := range []xfrm.Selector{
				{Src: host(sd.self), Dst: host(sd.peer), Proto: xfrm.ProtoTCP, DstPorts: ports},
				{Src: host(sd.self), Dst: host(sd.peer), Proto: xfrm.ProtoTCP, SrcPorts: ports},
			} {
				in := xfrm.Selector{Src: sel.Dst, Dst: sel.Src, Proto: sel.Proto, SrcPorts: sel.SrcPorts, DstPorts: sel.DstPorts}
				pols = append(pols,
					&xfrm.Policy{Dir: xfrm.DirOut, Priority: prioMain - 1, Action: xfrm.ActionProtect, Templates: []xfrm.Template{ot}, Sel: sel},
					&xfrm.Policy{Dir: xfrm.DirIn, Priority: prioMain - 1, Action: xfrm.ActionProtect, Templates: []xfrm.Template{it}, Sel: in})
			}
			if err := addPolicies(sd.s.Engine, pols); err != nil {
				return err
			}
		}
	}
	return nil
}

func addPolicies(e *xfrm.Engine, pols []*xfrm.Policy) error {
	for _, pol := range pols {
		if _, err := e.AddPolicy(pol); err != nil {
			return fmt.Errorf("policy %s %v: %w", pol.Dir, pol.Sel, err)
		}
	}
	return nil
}

var snRange = netip.MustParsePrefix("ff02::1:ff00:0/104")

// ndpTypes selects NS and NA (ICMPv6 type in the source port range).
var ndpTypes = xfrm.PortRange{Lo: 135, Hi: 136}

func (p *Pair) configureNDP() error {
	cfg := p.Config
	if cfg.NDP == NDPBypass {
		for _, s := range []*stack.Stack{p.A, p.B} {
			sel := xfrm.Selector{Proto: xfrm.ProtoICMPv6, SrcPorts: xfrm.PortRange{Lo: 133, Hi: 137}}
			if err := addPolicies(s.Engine, []*xfrm.Policy{
				{Dir: xfrm.DirOut, Priority: prioNDP, Action: xfrm.ActionBypass, Sel: sel},
				{Dir: xfrm.DirIn, Priority: prioNDP, Action: xfrm.ActionBypass, Sel: sel},
			}); err != nil {
				return err
			}
		}
		return nil
	}
	type side struct {
		s                      *stack.Stack
		self, peer             netip.Addr
		mcOut, mcIn, uOut, uIn uint32
	}
	for _, sd := range []side{
		{p.A, A6, B6, SPINDPMulticastA, spiNDPmcastB, spiNDPuniA, spiNDPuniB},
		{p.B, B6, A6, spiNDPmcastB, SPINDPMulticastA, spiNDPuniB, spiNDPuniA},
	} {
		e := sd.s.Engine
		mk := func(spi uint32, src, dst netip.Addr) xfrm.SAConfig {
			c := xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: spi, Src: src, Dst: dst, Mode: xfrm.ModeTransport,
				ReqID: 2, ReplayWindow: cfg.ReplayWindow, ESN: cfg.ESN}
			cfg.Suite.keyed(&c, byte(spi))
			return c
		}
		for _, c := range []xfrm.SAConfig{
			mk(sd.mcOut, sd.self, SolicitedNode(sd.peer)),
			mk(sd.mcIn, sd.peer, SolicitedNode(sd.self)),
			mk(sd.uOut, sd.self, sd.peer),
			mk(sd.uIn, sd.peer, sd.self),
		} {
			if _, err := e.AddSA(c); err != nil {
				return err
			}
		}
		t := []xfrm.Template{{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTransport, Level: xfrm.LevelRequire, ReqID: 2}}
		icmp := func(src, dst netip.Prefix) xfrm.Selector {
			return xfrm.Selector{Src: src, Dst: dst, Proto: xfrm.ProtoICMPv6, SrcPorts: ndpTypes}
		}
		if err := addPolicies(e, []*xfrm.Policy{
			{Dir: xfrm.DirOut, Priority: prioNDP, Action: xfrm.ActionProtect, Templates: t, Sel: icmp(host(sd.self), snRange)},
			{Dir: xfrm.DirIn, Priority: prioNDP, Action: xfrm.ActionProtect, Templates: t, Sel: icmp(host(sd.peer), snRange)},
			{Dir: xfrm.DirOut, Priority: prioNDP, Action: xfrm.ActionProtect, Templates: t, Sel: icmp(host(sd.self), host(sd.peer))},
			{Dir: xfrm.DirIn, Priority: prioNDP, Action: xfrm.ActionProtect, Templates: t, Sel: icmp(host(sd.peer), host(sd.self))},
		}); err != nil {
			return err
		}
	}
	return nil
}

// LeakFlows describes, for the leak detector, the flows the pair's
// configuration protects. It is written from what the test bed configured
// (addresses, protocols, ports, the NDP mode), in leakcheck's own terms,
// never read back from the SPD under test, so a fault in the SPD cannot
// hide a leak. Flows are in the policies' priority order.
func (p *Pair) LeakFlows() []leakcheck.Flow {
	cfg := p.Config
	if cfg.Plain {
		return nil
	}
	var flows []leakcheck.Flow
	if cfg.Inner == 6 || cfg.Outer == 6 {
		// Neighbour discovery between the IPv6 addresses (priority 100).
		nsna := leakcheck.Between(135, 136)
		switch cfg.NDP {
		case NDPBypass:
			flows = append(flows, leakcheck.Flow{Name: "NDP bypass (ICMPv6 133-137)", Family: 6,
				Proto: 58, ICMPType: leakcheck.Between(133, 137), Clear: true})
		case NDPProtect:
			for _, sd := range [][2]netip.Addr{{A6, B6}, {B6, A6}} {
				flows = append(flows,
					leakcheck.Flow{Name: fmt.Sprintf("NS/NA %v->solicited-node", sd[0]),
						Src: host(sd[0]), Dst: snRange, Proto: 58, ICMPType: nsna},
					leakcheck.Flow{Name: fmt.Sprintf("NS/NA %v->%v", sd[0], sd[1]),
						Src: host(sd[0]), Dst: host(sd[1]), Proto: 58, ICMPType: nsna})
			}
		}
	}
	for _, port := range cfg.PortSAs {
		// TCP to or from the port, both ways (priority 999).
		for _, f := range []leakcheck.Flow{{DstPort: leakcheck.Exactly(port)}, {SrcPort: leakcheck.Exactly(port)}} {
			f.Name = fmt.Sprintf("TCP port %d %v<->%v", port, p.AddrA, p.AddrB)
			f.Src, f.Dst, f.Proto, f.Both = host(p.AddrA), host(p.AddrB), 6, true
			flows = append(flows, f)
		}
	}
	if e := cfg.Encap; e.Type != xfrm.EncapNone && e.Keepalive > 0 {
		// NAT keepalives go in clear by design (RFC 3948 §2.3), as a
		// key manager's socket bypass sends them in Linux.
		flows = append([]leakcheck.Flow{{Name: "NAT keepalive", Src: host(p.AddrA), Dst: host(p.AddrB), Proto: 17,
			SrcPort: leakcheck.Exactly(e.SPort), DstPort: leakcheck.Exactly(e.DPort), Clear: true}}, flows...)
	}
	// The main policy: everything between the pair's addresses.
	return append(flows, leakcheck.Flow{Name: fmt.Sprintf("all %v<->%v", p.AddrA, p.AddrB),
		Src: host(p.AddrA), Dst: host(p.AddrB), Both: true})
}

// SetLeakFlows replaces the flows the leak detector holds protected, for a
// test that changes the pair's policies.
func (p *Pair) SetLeakFlows(flows []leakcheck.Flow) {
	p.leakA.SetFlows(flows)
	p.leakB.SetFlows(flows)
}

// inspect hands a frame a side sent to that side's leak detector, then to
// the tap.
func (p *Pair) inspect(who string, c *leakcheck.Checker, frame []byte) {
	c.Frame(frame)
	p.mu.Lock()
	tap := p.tap
	p.mu.Unlock()
	if tap != nil {
		tap(who, frame)
	}
}

// Leaks returns the leaks the detector found (at most 20): cleartext
// frames of a protected flow, fragments of datagrams that may belong to
// one (judged incomplete now), ICMP errors in clear quoting one, and
// frames it cannot classify. It also returns the number of frames
// inspected. The detector (internal/leakcheck) reassembles fragments and
// parses every frame itself, sharing no code with the stack.
func (p *Pair) Leaks() ([]string, int) {
	var out []string
	frames := 0
	for _, s := range []struct {
		who string
		c   *leakcheck.Checker
	}{{"A", p.leakA}, {"B", p.leakB}} {
		s.c.Flush()
		frames += s.c.Stats().Frames
		for _, f := range s.c.Findings() {
			if len(out) < 20 {
				out = append(out, fmt.Sprintf("%s sent %v", s.who, f))
			}
		}
	}
	return out, frames
}

// LeakStats sums what both sides' leak detectors counted.
func (p *Pair) LeakStats() leakcheck.Stats {
	a, b := p.leakA.Stats(), p.leakB.Stats()
	return leakcheck.Stats{
		Frames:         a.Frames + b.Frames,
		IP:             a.IP + b.IP,
		Fragments:      a.Fragments + b.Fragments,
		Reassembled:    a.Reassembled + b.Reassembled,
		Incomplete:     a.Incomplete + b.Incomplete,
		Overlaps:       a.Overlaps + b.Overlaps,
		Protected:      a.Protected + b.Protected,
		Clear:          a.Clear + b.Clear,
		Leaks:          a.Leaks + b.Leaks,
		Unclassifiable: a.Unclassifiable + b.Unclassifiable,
	}
}
