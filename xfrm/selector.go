package xfrm

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Upper-layer protocol numbers that carry ports or a message type, beyond
// the ones types.go names.
const (
	protoDCCP    uint8 = 33
	protoSCTP    uint8 = 132
	protoMH      uint8 = 135 // IPv6 Mobility Header: its type is a selector (RFC 4301 §4.4.1.1)
	protoUDPLite uint8 = 136
)

// Match reports whether the flow f is one the selector s picks.
//
// Addresses follow net/netip semantics and are never unmapped: an IPv4
// prefix does not match an IPv4-mapped IPv6 address (::ffff:a.b.c.d), which
// is IPv6 traffic on the wire, and an IPv6 prefix does not match an IPv4
// address. A 4-in-6 prefix such as ::ffff:10.0.0.0/104 matches mapped
// addresses. An invalid (zero) prefix is ANY and matches every address of
// either family. The IPv6 zone of a flow address is ignored, so fe80::/10
// matches a zoned link-local address.
//
// A port range that is ANY matches every flow, OPAQUE ones included; any
// other range never matches an OPAQUE flow (RFC 4301 §4.4.1.1) and otherwise
// contains the flow's port, or its ICMP type (SrcPorts) and code (DstPorts).
func (s *Selector) Match(f *Flow) bool {
	if s.Src.IsValid() && !s.Src.Contains(f.Src.WithZone("")) {
		return false
	}
	if s.Dst.IsValid() && !s.Dst.Contains(f.Dst.WithZone("")) {
		return false
	}
	return s.matchL4(f)
}

// matchL4 checks everything but the addresses; the SPD's tuple search has
// already matched those through its hash.
func (s *Selector) matchL4(f *Flow) bool {
	if s.Proto != ProtoAny && s.Proto != f.Proto {
		return false
	}
	return matchPorts(s.SrcPorts, f.SrcPort, f.Opaque) &&
		matchPorts(s.DstPorts, f.DstPort, f.Opaque)
}

func matchPorts(r PortRange, p uint16, opaque bool) bool {
	if r.IsAny() {
		return true
	}
	return !opaque && r.Lo <= p && p <= r.Hi
}

// Family returns 4 or 6, the address family the selector's prefixes pin, or
// 0 when both are ANY and the selector matches either family. For an
// invalid selector whose prefixes disagree it returns the source's family.
func (s Selector) Family() int {
	p := s.Src
	if !p.IsValid() {
		p = s.Dst
	}
	switch {
	case !p.IsValid():
		return 0
	case p.Addr().Is4():
		return 4
	}
	return 6
}

// Validate reports why a selector cannot be installed: prefixes of two
// families (a policy would never match anything) or a port range whose Lo
// exceeds its Hi. The error wraps ErrInvalid.
func (s Selector) Validate() error {
	if s.Src.IsValid() && s.Dst.IsValid() && s.Src.Addr().Is4() != s.Dst.Addr().Is4() {
		return fmt.Errorf("%w: selector source %v and destination %v are of different address families",
			ErrInvalid, s.Src, s.Dst)
	}
	if !s.SrcPorts.IsAny() && s.SrcPorts.Lo > s.SrcPorts.Hi {
		return fmt.Errorf("%w: selector source range %d-%d is empty", ErrInvalid, s.SrcPorts.Lo, s.SrcPorts.Hi)
	}
	if !s.DstPorts.IsAny() && s.DstPorts.Lo > s.DstPorts.Hi {
		return fmt.Errorf("%w: selector destination range %d-%d is empty", ErrInvalid, s.DstPorts.Lo, s.DstPorts.Hi)
	}
	return nil
}

// canonical returns s with masked prefixes, ANY ranges as the zero
// PortRange and Specified set only where it matters, so selectors that
// match the same flows compare equal (the SPD finds duplicates and deletes
// by ==).
func (s Selector) canonical() Selector {
	if s.Src.IsValid() {
		s.Src = s.Src.Masked()
	}
	if s.Dst.IsValid() {
		s.Dst = s.Dst.Masked()
	}
	s.SrcPorts = s.SrcPorts.canonical()
	s.DstPorts = s.DstPorts.canonical()
	return s
}

func (r PortRange) canonical() PortRange {
	switch {
	case r.IsAny():
		return PortRange{}
	case r.Lo == 0 && (r.Hi == 0 || r.Hi == 0xffff):
		return PortRange{Lo: r.Lo, Hi: r.Hi, Specified: true}
	}
	return PortRange{Lo: r.Lo, Hi: r.Hi}
}

// Equal reports whether two selectors pick the same traffic as the SPD
// compares them: prefixes masked, ANY port ranges in one form.
func (s Selector) Equal(o Selector) bool { return s.canonical() == o.canonical() }

// String formats the selector like setkey's spdadd arguments:
// "10.0.0.0/24[any] 10.0.1.5/32[443] tcp". ANY addresses print as "any";
// ranges as "lo-hi". For ICMP and ICMPv6 the type and code follow the
// protocol as setkey's "icmp6 135,0" does, ranges allowed ("icmp6 133-137").
func (s Selector) String() string {
	var b strings.Builder
	icmp := s.Proto == ProtoICMP || s.Proto == ProtoICMPv6 || s.Proto == protoMH
	writePrefix := func(p netip.Prefix, r PortRange) {
		if p.IsValid() {
			b.WriteString(p.String())
		} else {
			b.WriteString("any")
		}
		if !icmp {
			b.WriteByte('[')
			writeRange(&b, r)
			b.WriteByte(']')
		}
	}
	writePrefix(s.Src, s.SrcPorts)
	b.WriteByte(' ')
	writePrefix(s.Dst, s.DstPorts)
	b.WriteByte(' ')
	b.WriteString(protoName(s.Proto))
	if icmp && (!s.SrcPorts.IsAny() || !s.DstPorts.IsAny()) {
		b.WriteByte(' ')
		writeRange(&b, s.SrcPorts)
		if !s.DstPorts.IsAny() {
			b.WriteByte(',')
			writeRange(&b, s.DstPorts)
		}
	}
	return b.String()
}

func writeRange(b *strings.Builder, r PortRange) {
	switch {
	case r.IsAny():
		b.WriteString("any")
	case r.Lo == r.Hi:
		b.WriteString(strconv.Itoa(int(r.Lo)))
	default:
		b.WriteString(strconv.Itoa(int(r.Lo)))
		b.WriteByte('-')
		b.WriteString(strconv.Itoa(int(r.Hi)))
	}
}

// protoName spells an upper-layer protocol as setkey accepts it.
func protoName(p uint8) string {
	switch p {
	case ProtoAny:
		return "any"
	case ProtoICMP:
		return "icmp"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMPv6:
		return "icmp6"
	case protoSCTP:
		return "sctp"
	case protoUDPLite:
		return "udplite"
	case protoDCCP:
		return "dccp"
	case protoMH:
		return "mh"
	case uint8(ProtoESP):
		return "esp"
	case uint8(ProtoAH):
		return "ah"
	case uint8(ProtoIPComp):
		return "ipcomp"
	}
	return strconv.Itoa(int(p))
}
