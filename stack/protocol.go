package stack

import (
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// ipsecProtocol registers an IPsec protocol number with the stack so that
// IPv4 and IPv6 deliver its packets (after extension headers and
// reassembly) to our handler instead of answering Protocol Unreachable or
// Parameter Problem. It has no endpoints of its own.
type ipsecProtocol struct {
	num tcpip.TransportProtocolNumber
}

var _ stack.TransportProtocol = (*ipsecProtocol)(nil)

func (p *ipsecProtocol) Number() tcpip.TransportProtocolNumber { return p.num }

func (p *ipsecProtocol) NewEndpoint(tcpip.NetworkProtocolNumber, *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
	return nil, &tcpip.ErrUnknownProtocol{}
}

func (p *ipsecProtocol) NewRawEndpoint(tcpip.NetworkProtocolNumber, *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
	return nil, &tcpip.ErrUnknownProtocol{}
}

// MinimumPacketSize is 1 so that truncated packets reach the handler and
// are counted there (XfrmInHdrError) rather than dropped silently.
func (p *ipsecProtocol) MinimumPacketSize() int { return 1 }

// ParsePorts must succeed or the NIC drops the packet as malformed.
func (p *ipsecProtocol) ParsePorts([]byte) (src, dst uint16, err tcpip.Error) { return 0, 0, nil }

// HandleUnknownDestinationPacket claims the packet so no ICMP error goes out.
func (p *ipsecProtocol) HandleUnknownDestinationPacket(stack.TransportEndpointID, *stack.PacketBuffer) stack.UnknownDestinationPacketDisposition {
	return stack.UnknownDestinationPacketHandled
}

func (p *ipsecProtocol) SetOption(tcpip.SettableTransportProtocolOption) tcpip.Error {
	return &tcpip.ErrUnknownProtocolOption{}
}

func (p *ipsecProtocol) Option(tcpip.GettableTransportProtocolOption) tcpip.Error {
	return &tcpip.ErrUnknownProtocolOption{}
}

func (p *ipsecProtocol) Close()   {}
func (p *ipsecProtocol) Wait()    {}
func (p *ipsecProtocol) Pause()   {}
func (p *ipsecProtocol) Resume()  {}
func (p *ipsecProtocol) Restore() {}

// Parse puts the first bytes (up to the ESP header's 8) into the transport
// header: the NIC drops packets whose transport header is empty.
func (p *ipsecProtocol) Parse(pkt *stack.PacketBuffer) bool {
	n := min(pkt.Data().Size(), 8)
	if n == 0 {
		return false
	}
	_, ok := pkt.TransportHeader().Consume(n)
	return ok
}

// ipsecProtocolFactory returns the stack.TransportProtocolFactory for num.
func ipsecProtocolFactory(num tcpip.TransportProtocolNumber) stack.TransportProtocolFactory {
	return func(*stack.Stack) stack.TransportProtocol { return &ipsecProtocol{num: num} }
}

// IPsecProtocols are the factories to add to stack.Options.TransportProtocols.
var IPsecProtocols = []stack.TransportProtocolFactory{
	ipsecProtocolFactory(tcpip.TransportProtocolNumber(xfrm.ProtoESP)),
	ipsecProtocolFactory(tcpip.TransportProtocolNumber(xfrm.ProtoAH)),
	ipsecProtocolFactory(tcpip.TransportProtocolNumber(xfrm.ProtoIPComp)),
}

// handler is the input side: the default handler for ESP, AH and IPComp.
// It copies the packet out (decryption is in place), runs the engine and
// re-injects the result through the NIC's wrapper endpoint.
type handler struct {
	proto  xfrm.Proto
	lookup func(tcpip.NICID) *Endpoint
}

func (h *handler) handle(_ stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	ep := h.lookup(pkt.NICID)
	if ep == nil {
		return true
	}
	hdr := pkt.NetworkHeader().Slice()
	th := pkt.TransportHeader().Slice()
	// One copy: the transport header, then the data views written straight
	// in behind it (the view has room for both, so the writes cannot fail).
	v := buffer.NewView(len(th) + pkt.Data().Size())
	defer v.Release()
	_, _ = v.Write(th)
	_, _ = pkt.Data().ReadTo(v, true)
	b := v.AsSlice()
	a := allocPool.Get().(*viewAlloc)
	defer allocPool.Put(a)
	out := ep.engine.Input(hdr, h.proto, b, a)
	if out == nil {
		a.release()
		return true
	}
	ep.reinject(a.take(), nil)
	return true
}

// install registers the handlers on s.
func install(s *stack.Stack, lookup func(tcpip.NICID) *Endpoint) {
	for _, p := range []xfrm.Proto{xfrm.ProtoESP, xfrm.ProtoAH, xfrm.ProtoIPComp} {
		h := &handler{proto: p, lookup: lookup}
		s.SetTransportProtocolHandler(tcpip.TransportProtocolNumber(p), h.handle)
	}
}
