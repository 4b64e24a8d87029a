package message

import (
	"encoding/binary"
	"net/netip"
)

// TS is a Traffic Selector payload, TSi or TSr (RFC 7296 §3.13).
type TS struct {
	// Responder selects TSr; otherwise the payload is TSi.
	Responder bool
	// Selectors are the traffic selectors; their union is the traffic
	// the sender proposes or accepts.
	Selectors []TrafficSelector
}

// TrafficSelector is one traffic selector (RFC 7296 §3.13.1): an address
// range, a protocol, a port range.
type TrafficSelector struct {
	// TSType is TS_IPV4_ADDR_RANGE or TS_IPV6_ADDR_RANGE; for any other
	// type Start, End and the ports are unused and Data holds the body.
	TSType TSType
	// IPProto is the IP protocol, 0 for any.
	IPProto uint8
	// StartPort and EndPort bound the ports (for ICMP, type and code in
	// the two octets, RFC 4301 §4.4.1.1); 0..65535 is any.
	StartPort, EndPort uint16
	// Start and End bound the addresses, inclusive.
	Start, End netip.Addr
	// Data is the body after the Selector Length of an unknown type.
	Data []byte
}

// Type implements Payload.
func (p *TS) Type() PayloadType {
	if p.Responder {
		return PayloadTSr
	}
	return PayloadTSi
}

const tsHeaderLen = 8 // TS Type, IP Protocol ID, Selector Length, ports

func decodeTS(t PayloadType, b []byte, at int) (Payload, error) {
	if len(b) < 4 {
		return nil, syntaxErr(at, t, "body of %d bytes is shorter than 4", len(b))
	}
	p := &TS{Responder: t == PayloadTSr}
	count := int(b[0])
	off := 4
	for i := 0; i < count; i++ {
		sat := at + off
		if len(b)-off < 4 {
			return nil, syntaxErr(sat, t, "selector %d of %d: %d bytes left, shorter than a selector header", i+1, count, len(b)-off)
		}
		s := TrafficSelector{TSType: TSType(b[off]), IPProto: b[off+1]}
		n := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if n < 4 || n > len(b)-off {
			return nil, syntaxErr(sat+2, t, "selector %d of %d: length %d does not fit the %d bytes left", i+1, count, n, len(b)-off)
		}
		var alen int
		switch s.TSType {
		case TS_IPV4_ADDR_RANGE:
			alen = 4
		case TS_IPV6_ADDR_RANGE:
			alen = 16
		}
		if alen == 0 {
			s.Data = clone(b[off+4 : off+n])
		} else {
			if n != tsHeaderLen+2*alen {
				return nil, syntaxErr(sat+2, t, "selector %d of %d: length %d, want %d for type %d", i+1, count, n, tsHeaderLen+2*alen, s.TSType)
			}
			s.StartPort = binary.BigEndian.Uint16(b[off+4:])
			s.EndPort = binary.BigEndian.Uint16(b[off+6:])
			s.Start, _ = netip.AddrFromSlice(b[off+8 : off+8+alen])
			s.End, _ = netip.AddrFromSlice(b[off+8+alen : off+8+2*alen])
		}
		p.Selectors = append(p.Selectors, s)
		off += n
	}
	if off != len(b) {
		return nil, syntaxErr(at+off, t, "%d bytes after selector %d of %d", len(b)-off, count, count)
	}
	return p, nil
}

func (p *TS) appendBody(b []byte) ([]byte, error) {
	if len(p.Selectors) > 255 {
		return nil, encodeErr(p.Type(), "%d selectors", len(p.Selectors))
	}
	b = append(b, byte(len(p.Selectors)), 0, 0, 0)
	for i := range p.Selectors {
		s := &p.Selectors[i]
		at := len(b)
		b = append(b, byte(s.TSType), s.IPProto, 0, 0)
		switch s.TSType {
		case TS_IPV4_ADDR_RANGE, TS_IPV6_ADDR_RANGE:
			v4 := s.TSType == TS_IPV4_ADDR_RANGE
			if s.Start.Is4() != v4 || s.End.Is4() != v4 || s.Start.Is6() == v4 || s.End.Is6() == v4 ||
				s.Start.Zone() != "" || s.End.Zone() != "" {
				return nil, encodeErr(p.Type(), "selector %d: addresses %v..%v do not match type %d", i, s.Start, s.End, s.TSType)
			}
			b = binary.BigEndian.AppendUint16(b, s.StartPort)
			b = binary.BigEndian.AppendUint16(b, s.EndPort)
			b = append(b, s.Start.AsSlice()...)
			b = append(b, s.End.AsSlice()...)
		default:
			if len(s.Data) > 0xffff-4 {
				return nil, encodeErr(p.Type(), "selector %d of %d bytes", i, len(s.Data))
			}
			b = append(b, s.Data...)
		}
		binary.BigEndian.PutUint16(b[at+2:], uint16(len(b)-at))
	}
	return b, nil
}
