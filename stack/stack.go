package stack

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// DefaultOverheadReserve is subtracted from the wire MTU on every route so
// that a full-size TCP segment still fits after IPsec: the largest ESP
// overhead we build (IPv6 tunnel 40, ESP header 8, CBC IV 16, padding and
// trailer up to 17, HMAC-SHA-512 ICV 32) rounded up.
const DefaultOverheadReserve = 120

// Route is a static route: packets for Dst go via Gateway (unset: on-link).
type Route struct {
	Dst     netip.Prefix
	Gateway netip.Addr
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
	// OverheadReserve is taken off the wire MTU on routes; 0 takes
	// DefaultOverheadReserve.
	OverheadReserve int
	// DAD turns IPv6 duplicate address detection on (off by default:
	// test links have no duplicates and DAD delays start-up by a second).
	DAD bool
}

// Stack is a gVisor netstack with IPsec on its one NIC.
type Stack struct {
	*stack.Stack
	Engine   *xfrm.Engine
	Endpoint *Endpoint
	NIC      tcpip.NICID
	ownsEng  bool
	closeMu  sync.Once
}

const nicID tcpip.NICID = 1

// New builds the stack, its NIC on cfg.Link wrapped with IPsec, addresses
// and routes.
func New(cfg Config) (*Stack, error) {
	if cfg.Link == nil {
		return nil, fmt.Errorf("stack: no link endpoint")
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
	ep := NewEndpoint(cfg.Link, eng)
	st := &Stack{Stack: s, Engine: eng, Endpoint: ep, NIC: nicID, ownsEng: owns}
	install(s, func(id tcpip.NICID) *Endpoint {
		if id == nicID {
			return ep
		}
		return nil
	})
	if err := s.CreateNIC(nicID, ep); err != nil {
		return nil, fmt.Errorf("stack: create NIC: %s", err)
	}
	// TCP: SACK on, moderate buffers; gVisor's defaults are fine otherwise.
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)

	reserve := cfg.OverheadReserve
	if reserve == 0 {
		reserve = DefaultOverheadReserve
	}
	routeMTU := uint32(0)
	if w := int(ep.WireMTU()); w > reserve+68 {
		routeMTU = uint32(w - reserve)
	}
	var routes []tcpip.Route
	for _, p := range cfg.Addrs {
		proto := ipv6.ProtocolNumber
		if p.Addr().Is4() {
			proto = ipv4.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          proto,
			AddressWithPrefix: tcpip.AddrFromSlice(p.Addr().AsSlice()).WithPrefix(),
		}
		pa.AddressWithPrefix.PrefixLen = p.Bits()
		if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return nil, fmt.Errorf("stack: add address %v: %s", p, err)
		}
		routes = append(routes, tcpip.Route{Destination: pa.AddressWithPrefix.Subnet(), NIC: nicID, MTU: routeMTU})
	}
	for _, r := range cfg.Routes {
		sub, err := subnet(r.Dst)
		if err != nil {
			return nil, err
		}
		tr := tcpip.Route{Destination: sub, NIC: nicID, MTU: routeMTU}
		if r.Gateway.IsValid() {
			tr.Gateway = tcpip.AddrFromSlice(r.Gateway.AsSlice())
		}
		routes = append(routes, tr)
	}
	// Link-local and multicast on the NIC too (NDP, MLD).
	ll, _ := subnet(netip.MustParsePrefix("fe80::/10"))
	routes = append(routes, tcpip.Route{Destination: ll, NIC: nicID, MTU: routeMTU})
	s.SetRouteTable(routes)
	return st, nil
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
