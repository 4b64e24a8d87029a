package stack

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/qdisc/fifo"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// DefaultOverheadReserve is the least that is subtracted from the wire
// MTU on every route so that a full-size TCP segment still fits after
// IPsec: one ESP tunnel (IPv6 outer 40, ESP header 8, CBC IV 16, padding
// and trailer up to 17, HMAC-SHA-512 ICV 32) rounded up. Bundles that add
// more (ESP tunnel + AH, nested tunnels) raise the reserve to their
// overhead: see Stack.UpdateRouteMTU.
const DefaultOverheadReserve = 120

// Route is a static route: packets for Dst go via Gateway (unset: on-link)
// out of NIC. NIC 0 picks the NIC whose on-link prefix (Config.Addrs,
// NIC.Addrs) contains Gateway, else the first NIC.
type Route struct {
	Dst     netip.Prefix
	Gateway netip.Addr
	NIC     tcpip.NICID
}

// NIC describes a network interface beyond the first (Config.LANs).
type NIC struct {
	// Link is the link endpoint: Ethernet (memlink, afpacket, tap) or,
	// with L3, one without a link header (TUN). It is wrapped with the
	// xfrm Endpoint like the first NIC's.
	Link stack.LinkEndpoint
	// Addrs are the NIC's addresses with their on-link prefixes.
	Addrs []netip.Prefix
	// L3 says that Link carries bare IP packets (TUN): it has no
	// Ethernet header, and no ARP or NDP address resolution runs on it.
	// The link endpoint must say so too (no
	// CapabilityResolutionRequired), as gVisor's fdbased does for a TUN.
	L3 bool
}

// Config describes a stack.
type Config struct {
	// Link is the Ethernet link endpoint the stack owns (memlink,
	// afpacket, tap). It is wrapped with the xfrm output hook.
	Link stack.LinkEndpoint
	// Addrs are the stack's addresses with their on-link prefixes.
	Addrs []netip.Prefix
	// Routes are extra routes; on-link routes for Addrs are added.
	Routes []Route
	// Engine is the xfrm engine; nil creates one.
	Engine *xfrm.Engine
	// OverheadReserve is the least taken off the wire MTU on routes; 0
	// takes DefaultOverheadReserve. The installed outbound bundles'
	// overhead raises it (Stack.UpdateRouteMTU).
	OverheadReserve int
	// DAD turns IPv6 duplicate address detection on (off by default:
	// test links have no duplicates and DAD delays start-up by a second).
	DAD bool
	// LANs are further NICs, with IDs 2, 3, ... in order; each is
	// wrapped with the xfrm Endpoint like the first (Link, Addrs, ID 1).
	LANs []NIC
	// Forwarding turns IPv4 and IPv6 forwarding on between all NICs,
	// with RFC 4301 processing: packets not addressed to the stack are
	// checked against the fwd policies on the way in (cleartext, and
	// inner packets of tunnels) and protected by the out policies on the
	// way out (see forward.go).
	Forwarding bool
	// ClampMSS lowers the MSS option of forwarded TCP SYNs to what fits
	// the egress path after IPsec (the tunnel MTU less the IP and TCP
	// headers), for peers that block ICMP.
	ClampMSS bool
	// TxQueue, if positive, puts a FIFO queue of that many packets (a
	// gVisor fifo qdisc) in front of the IPsec wrapper: the sender's
	// goroutine only queues, and one goroutine of the queue seals and
	// writes what has piled up, up to fifo.BatchSize packets at a time,
	// in one call to the link (one sendmmsg for fdbased links, instead
	// of one system call per TCP segment). A packet that finds the queue
	// full is dropped and counted (the NIC's
	// TxPacketsDroppedNoBufferSpace; TCP resends it). 0: no queue, the
	// sender's goroutine writes (what in-memory links want).
	TxQueue int
	// NoGSO turns off the segmentation offload by which the stack's TCP
	// hands the IPsec wrapper packets of up to 64 KiB, which it cuts into
	// segments before sealing (see Endpoint.SupportedGSO). It is on by
	// default.
	NoGSO bool
}

// DefaultTxQueue is a TxQueue for links to the kernel: 4096 full-size
// segments, some 5.5 MB, most of a window of MaxTCPBuffer, since gVisor's
// TCP has no small-queue limit of its own (Linux's tcp_limit_output_bytes)
// and may hand the link much of its window at once.
const DefaultTxQueue = 4096

// TCP buffer sizes (tcpip.TCPSendBufferSizeRangeOption and
// TCPReceiveBufferSizeRangeOption). gVisor's defaults, 1 MiB growing to
// 4 MiB, cap a connection at 4 MiB per round trip; a userspace stack's
// round trip includes scheduling delays (milliseconds on a busy host),
// so the buffers may grow to MaxTCPBuffer, with receive buffer
// moderation (tcpip.TCPModerateReceiveBufferOption, as Linux's
// tcp_moderate_rcvbuf) growing them only for connections that need it.
const (
	DefaultTCPBuffer = 1 << 20
	MaxTCPBuffer     = 8 << 20
)

// Stack is a gVisor netstack with IPsec on each of its NICs.
type Stack struct {
	*stack.Stack
	Engine *xfrm.Engine
	// Endpoint and NIC are the first NIC's (Config.Link).
	Endpoint *Endpoint
	NIC      tcpip.NICID
	ownsEng  bool
	closeMu  sync.Once

	// eps are the NICs' endpoints; eps[i] is NIC i+1's.
	eps []*Endpoint
	fwd *forwarder // nil unless Config.Forwarding

	routeMu  sync.Mutex
	reserve  int                    // the configured least reserve
	routeMTU map[tcpip.NICID]uint32 // per NIC, the MTU last put on its routes
	stop     chan struct{}
}

// routeWatchInterval is how often an idle stack checks whether policies
// or SAs changed since its route MTUs were computed (the endpoint also
// checks on every packet it sends).
const routeWatchInterval = 250 * time.Millisecond

const nicID tcpip.NICID = 1

// New builds the stack, its NICs on cfg.Link and cfg.LANs wrapped with
// IPsec, addresses and routes.
func New(cfg Config) (*Stack, error) {
	if cfg.Link == nil {
		return nil, fmt.Errorf("stack: no link endpoint")
	}
	nics := append([]NIC{{Link: cfg.Link, Addrs: cfg.Addrs}}, cfg.LANs...)
	for i, n := range nics {
		if n.Link == nil {
			return nil, fmt.Errorf("stack: NIC %d: no link endpoint", i+1)
		}
		if n.L3 && n.Link.Capabilities()&stack.CapabilityResolutionRequired != 0 {
			return nil, fmt.Errorf("stack: NIC %d: L3 link asks for link address resolution", i+1)
		}
	}
	eng := cfg.Engine
	owns := false
	if eng == nil {
		eng = xfrm.NewEngine()
		owns = true
	}
	trans := []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6}
	trans = append(trans, IPsecProtocols...)
	dad := uint8(0)
	if cfg.DAD {
		dad = 1
	}
	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocol, arp.NewProtocol,
			ipv6.NewProtocolWithOptions(ipv6.Options{
				DADConfigs: stack.DADConfigurations{DupAddrDetectTransmits: dad},
			}),
		},
		TransportProtocols: trans,
		HandleLocal:        true,
	})
	st := &Stack{Stack: s, Engine: eng, NIC: nicID, ownsEng: owns, routeMTU: make(map[tcpip.NICID]uint32)}
	if cfg.Forwarding {
		st.fwd = newForwarder(st, cfg.ClampMSS)
	}
	for _, n := range nics {
		ep := NewEndpoint(n.Link, eng)
		ep.fwd = st.fwd
		ep.noGSO = cfg.NoGSO
		st.eps = append(st.eps, ep)
	}
	st.Endpoint = st.eps[0]
	install(s, st.EndpointOf)
	for i, ep := range st.eps {
		var nicOpts stack.NICOptions
		if cfg.TxQueue > 0 {
			nicOpts.QDisc = fifo.New(ep, 1, cfg.TxQueue)
		}
		if err := s.CreateNICWithOptions(tcpip.NICID(i+1), ep, nicOpts); err != nil {
			if nicOpts.QDisc != nil {
				nicOpts.QDisc.Close() // its goroutine
			}
			return nil, fmt.Errorf("stack: create NIC %d: %s", i+1, err)
		}
	}
	// TCP: SACK on, buffers that may grow (see MaxTCPBuffer).
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	// No RACK (RFC 8985): gVisor's RACK walks every segment in flight on
	// every ACK (rackControl.detectLoss), so its cost per ACK grows with
	// the window; with windows of thousands of segments it took 8% of
	// the daemon's CPU. SACK loss recovery (RFC 6675) remains.
	recovery := tcpip.TCPRecovery(0)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &recovery)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate)
	sndRange := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: DefaultTCPBuffer, Max: MaxTCPBuffer}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sndRange)
	rcvRange := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: DefaultTCPBuffer, Max: MaxTCPBuffer}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcvRange)

	st.reserve = cfg.OverheadReserve
	if st.reserve == 0 {
		st.reserve = DefaultOverheadReserve
	}
	var routes []tcpip.Route
	for i, n := range nics {
		id := tcpip.NICID(i + 1)
		mtu := routeMTUFor(st.eps[i].WireMTU(), st.reserve)
		st.routeMTU[id] = mtu
		for _, p := range n.Addrs {
			pa := tcpip.ProtocolAddress{
				Protocol:          Proto(p.Addr()),
				AddressWithPrefix: tcpip.AddrFromSlice(p.Addr().AsSlice()).WithPrefix(),
			}
			pa.AddressWithPrefix.PrefixLen = p.Bits()
			if err := s.AddProtocolAddress(id, pa, stack.AddressProperties{}); err != nil {
				return nil, fmt.Errorf("stack: NIC %d: add address %v: %s", id, p, err)
			}
			routes = append(routes, tcpip.Route{Destination: pa.AddressWithPrefix.Subnet(), NIC: id, MTU: mtu})
		}
	}
	for _, r := range cfg.Routes {
		sub, err := subnet(r.Dst)
		if err != nil {
			return nil, err
		}
		id := r.NIC
		if id == 0 {
			id = routeNIC(nics, r.Gateway)
		}
		if int(id) > len(nics) {
			return nil, fmt.Errorf("stack: route %v: no NIC %d", r.Dst, id)
		}
		tr := tcpip.Route{Destination: sub, NIC: id, MTU: st.routeMTU[id]}
		if r.Gateway.IsValid() {
			tr.Gateway = tcpip.AddrFromSlice(r.Gateway.AsSlice())
		}
		routes = append(routes, tr)
	}
	// Link-local and multicast on every NIC too (NDP, MLD); a packet to
	// a link-local address without a NIC goes out of the first.
	ll, _ := subnet(netip.MustParsePrefix("fe80::/10"))
	for i := range nics {
		id := tcpip.NICID(i + 1)
		routes = append(routes, tcpip.Route{Destination: ll, NIC: id, MTU: st.routeMTU[id]})
	}
	s.SetRouteTable(routes)
	if cfg.Forwarding {
		for _, p := range []tcpip.NetworkProtocolNumber{ipv4.ProtocolNumber, ipv6.ProtocolNumber} {
			if err := s.SetForwardingDefaultAndAllNICs(p, true); err != nil {
				return nil, fmt.Errorf("stack: forwarding on for protocol %d: %s", p, err)
			}
		}
		st.fwd.start()
	}
	st.UpdateRouteMTU()
	update := st.UpdateRouteMTU
	for _, ep := range st.eps {
		ep.onConfig.Store(&update)
	}
	// NAT keepalives of encapsulated SAs go out on this stack's link.
	// An engine shared by several stacks sends them on the last one's.
	eng.SetKeepaliveSender(st.sendKeepalive)
	st.stop = make(chan struct{})
	go st.watchRoutes()
	return st, nil
}

// routeNIC picks the NIC of a route without one: the first whose on-link
// prefix contains gw, else the first NIC.
func routeNIC(nics []NIC, gw netip.Addr) tcpip.NICID {
	if gw.IsValid() {
		for i, n := range nics {
			for _, p := range n.Addrs {
				if p.Masked().Contains(gw) {
					return tcpip.NICID(i + 1)
				}
			}
		}
	}
	return nicID
}

// NICs returns the IDs of the stack's NICs, the first NIC's first.
func (s *Stack) NICs() []tcpip.NICID {
	ids := make([]tcpip.NICID, len(s.eps))
	for i := range s.eps {
		ids[i] = tcpip.NICID(i + 1)
	}
	return ids
}

// EndpointOf returns the xfrm Endpoint of NIC id, or nil when the stack
// has no such NIC.
func (s *Stack) EndpointOf(id tcpip.NICID) *Endpoint {
	if id < 1 || int(id) > len(s.eps) {
		return nil
	}
	return s.eps[id-1]
}

// watchRoutes keeps the route MTUs current while no packet is sent, so a
// connection opened right after a key manager installed a larger bundle
// already takes a segment size that fits.
func (s *Stack) watchRoutes() {
	t := time.NewTicker(routeWatchInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if s.Endpoint.configGen.Load() != s.Engine.SPD.Generation() {
				s.UpdateRouteMTU()
			}
			if s.fwd != nil {
				s.fwd.refresh()
			}
		}
	}
}

// routeMTUFor is the route MTU for a wire MTU and an IPsec reserve, or 0
// (the NIC's) when the link is too small to reserve anything.
func routeMTUFor(wire uint32, reserve int) uint32 {
	if w := int(wire); w > reserve+header.IPv4MinimumMTU {
		return uint32(w - reserve)
	}
	return 0
}

// UpdateRouteMTU sets the MTU of the stack's routes to their NIC's wire
// MTU less the larger of the configured reserve and the most any
// installed outbound bundle adds (xfrm.Engine.MaxOutboundOverhead), so
// that TCP, which takes its segment size from the route MTU, sends
// segments that fit the link after IPsec. Routes whose MTU is unset or the
// value this last set for their NIC are updated; others keep theirs. The
// endpoints call it when a wire MTU is set and, from their packet path,
// when policies or SAs changed; call it directly after configuring IPsec
// to have new connections use the new MTU at once. Existing TCP
// connections keep their segment size until a segment does not fit (the
// endpoint then injects a Packet Too Big).
func (s *Stack) UpdateRouteMTU() {
	s.routeMu.Lock()
	defer s.routeMu.Unlock()
	// Read the generation first: a change racing with this update makes
	// the endpoint call again.
	gen := s.Engine.SPD.Generation()
	reserve := max(s.reserve, s.Engine.MaxOutboundOverhead())
	changed := false
	mtus := make(map[tcpip.NICID]uint32, len(s.eps))
	for i, ep := range s.eps {
		id := tcpip.NICID(i + 1)
		mtus[id] = routeMTUFor(ep.WireMTU(), reserve)
		changed = changed || mtus[id] != s.routeMTU[id]
	}
	if changed {
		table := s.GetRouteTable()
		for i := range table {
			r := &table[i]
			if mtu, ok := mtus[r.NIC]; ok && (r.MTU == 0 || r.MTU == s.routeMTU[r.NIC]) {
				r.MTU = mtu
			}
		}
		s.SetRouteTable(table)
		s.routeMTU = mtus
	}
	for _, ep := range s.eps {
		ep.configGen.Store(gen)
	}
}

func subnet(p netip.Prefix) (tcpip.Subnet, error) {
	p = p.Masked()
	a := tcpip.AddrFromSlice(p.Addr().AsSlice())
	m := tcpip.MaskFromBytes(net.CIDRMask(p.Bits(), p.Addr().BitLen()))
	s, err := tcpip.NewSubnet(a, m)
	if err != nil {
		return tcpip.Subnet{}, fmt.Errorf("stack: route %v: %v", p, err)
	}
	return s, nil
}

// Close tears the stack down.
func (s *Stack) Close() {
	s.closeMu.Do(func() {
		close(s.stop)
		if s.fwd != nil {
			s.fwd.close()
		}
		s.Engine.SetKeepaliveSender(nil)
		s.Stack.Close()
		s.Stack.Wait()
		if s.ownsEng {
			s.Engine.Close()
		}
	})
}

// FullAddress makes a tcpip.FullAddress for addr:port on the stack's NIC.
// An invalid or unspecified addr means any address.
func (s *Stack) FullAddress(addr netip.Addr, port uint16) tcpip.FullAddress {
	fa := tcpip.FullAddress{NIC: s.NIC, Port: port}
	if addr.IsValid() && !addr.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(addr.AsSlice())
	}
	return fa
}

// Proto returns the network protocol number for addr's family.
func Proto(addr netip.Addr) tcpip.NetworkProtocolNumber {
	if addr.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}
