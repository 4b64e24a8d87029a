package stack

import (
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// SocketKeyOf returns the xfrm key of a bound (and, for TCP and connected
// UDP, connected) gVisor transport endpoint: its protocol and local and
// remote address and port, read from the endpoint's TransportEndpointInfo.
func SocketKeyOf(ep tcpip.Endpoint) (xfrm.SocketKey, error) {
	info, ok := ep.Info().(*stack.TransportEndpointInfo)
	if !ok {
		return xfrm.SocketKey{}, fmt.Errorf("socket policy: endpoint %T has no transport endpoint info", ep)
	}
	id := info.ID
	if id.LocalAddress.Len() == 0 || id.LocalPort == 0 {
		return xfrm.SocketKey{}, fmt.Errorf("socket policy: endpoint is not bound to an address and port")
	}
	k := xfrm.SocketKey{
		Proto: uint8(info.TransProto),
		Local: netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort),
	}
	if id.RemoteAddress.Len() != 0 {
		k.Remote = netip.AddrPortFrom(addrOf(id.RemoteAddress), id.RemotePort)
	}
	return k, nil
}

func addrOf(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}

// AttachSocketPolicy attaches p to the endpoint (the IP_IPSEC_POLICY
// idea): with p.Dir out its outbound packets follow p rather than the SPD;
// with p.Dir in its arriving packets are checked against p. The endpoint
// must already be bound to a specific local address and port (and be
// connected, to leave other flows on the same local port alone); attach
// again after those change. The returned func detaches both directions.
func AttachSocketPolicy(e *xfrm.Engine, ep tcpip.Endpoint, p *xfrm.Policy) (detach func(), err error) {
	k, err := SocketKeyOf(ep)
	if err != nil {
		return nil, err
	}
	if err := e.SetSocketPolicy(k, p); err != nil {
		return nil, err
	}
	return func() { e.ClearSocketPolicy(k) }, nil
}
