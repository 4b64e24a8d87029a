package stack

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Security gateway (RFC 4301 §5.2, §6, §8): with Config.Forwarding the
// stack forwards between its NICs, and gVisor does the routing, the TTL
// or hop limit decrement and most ICMP errors. Each NIC's Endpoint does the
// IPsec part. On the way in it tells packets for the stack from packets to
// forward by their destination (isLocal): the latter, cleartext or the
// inner packets of tunnels, are checked against the fwd policies
// (xfrm.DirFwd) instead of the in policies. On the way out gVisor hands
// every forwarded packet to the egress NIC's Endpoint, marked
// IsForwardedPacket, and the out policies protect it like a local one;
// only its MTU handling differs (forwardOut).

// forwarder is a gateway stack's forwarding state, shared by its NICs'
// Endpoints.
type forwarder struct {
	st       *Stack
	clampMSS bool

	// bcast holds the IPv4 directed broadcast addresses of the stack's
	// subnets (refreshed from gVisor's address table): they are local.
	bcast    atomic.Pointer[[]netip.Addr]
	inFlight atomic.Int32 // ICMP errors being sent
	wg       sync.WaitGroup
}

func newForwarder(st *Stack, clampMSS bool) *forwarder {
	f := &forwarder{st: st, clampMSS: clampMSS}
	f.bcast.Store(&[]netip.Addr{})
	return f
}

// start is called once the NICs have their addresses.
func (f *forwarder) start() {
	f.refresh()
	f.st.Engine.SetLocal(f.isLocal)
}

// close waits for the ICMP errors being sent.
func (f *forwarder) close() {
	f.st.Engine.SetLocal(nil)
	f.wg.Wait()
}

// refresh recomputes the directed broadcast addresses.
func (f *forwarder) refresh() {
	var b []netip.Addr
	for _, addrs := range f.st.AllAddresses() {
		for _, pa := range addrs {
			if pa.Protocol != header.IPv4ProtocolNumber || pa.AddressWithPrefix.PrefixLen >= 31 {
				continue
			}
			a, _ := netip.AddrFromSlice(pa.AddressWithPrefix.Address.AsSlice())
			p := netip.PrefixFrom(a, pa.AddressWithPrefix.PrefixLen).Masked()
			last := p.Addr().As4()
			host := uint32(1)<<(32-p.Bits()) - 1
			v := uint32(last[0])<<24 | uint32(last[1])<<16 | uint32(last[2])<<8 | uint32(last[3]) | host
			b = append(b, netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}))
		}
	}
	f.bcast.Store(&b)
}

// isLocal reports whether a packet to a is for the stack rather than to
// be forwarded: one of its addresses on any NIC, multicast, or broadcast.
func (f *forwarder) isLocal(a netip.Addr) bool {
	if a.IsMulticast() || a.IsUnspecified() {
		return true
	}
	if a.Is4() {
		if a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return true
		}
		for _, b := range *f.bcast.Load() {
			if a == b {
				return true
			}
		}
	}
	return f.st.CheckLocalAddress(0, Proto(a), tcpip.AddrFromSlice(a.AsSlice())) != 0
}

// local reports whether the endpoint's stack takes a packet to dst
// itself: always when it does not forward.
func (e *Endpoint) local(dst netip.Addr) bool {
	return e.fwd == nil || e.fwd.isLocal(dst)
}
