package swanctl

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/ipsecstack/ipsecstack/ike/config"
	m "github.com/ipsecstack/ipsecstack/ike/message"
)

// parseTS parses one local_ts/remote_ts entry as vici's parse_ts does
// (src/libcharon/plugins/vici/vici_config.c, 5.9.8): an address, a CIDR
// subnet (host bits are cleared), a range a-b, or "dynamic", optionally
// followed by [proto/port]: proto is a name from /etc/protocols, a number
// or "any"; port a service name, a number, a range lo-hi, "any" or
// "opaque". For ICMP the "port" is type<<8|code, as in RFC 4301.
//
// A bare address is a /32 or /128; strongSwan reads %any as 0.0.0.0 and
// so as 0.0.0.0/32, and so does this (write 0.0.0.0/0 or ::/0 for all).
func parseTS(s string) (m.TrafficSelector, error) {
	var proto uint8
	from, to := uint16(0), uint16(0xffff)
	if i := strings.IndexByte(s, '['); i >= 0 {
		pp := s[i+1:]
		s = s[:i]
		j := strings.LastIndexByte(pp, ']')
		if j < 0 {
			return m.TrafficSelector{}, fmt.Errorf("missing ']'")
		}
		pp = pp[:j]
		protoStr, port, _ := strings.Cut(pp, "/")
		p, err := parseProto(protoStr)
		if err != nil {
			return m.TrafficSelector{}, err
		}
		proto = p
		if from, to, err = parsePorts(port, protoStr); err != nil {
			return m.TrafficSelector{}, err
		}
	}
	if s == "dynamic" {
		return config.DynamicTS(proto, from, to), nil
	}
	ts := m.TrafficSelector{IPProto: proto, StartPort: from, EndPort: to}
	if strings.Contains(s, "-") {
		lo, hi, err := parseRange(s)
		if err != nil {
			return m.TrafficSelector{}, err
		}
		ts.Start, ts.End = lo, hi
	} else {
		p, err := parseSubnet(s)
		if err != nil {
			return m.TrafficSelector{}, err
		}
		ts.Start, ts.End = p.Addr(), lastAddr(p)
	}
	ts.TSType = m.TS_IPV4_ADDR_RANGE
	if ts.Start.Is6() {
		ts.TSType = m.TS_IPV6_ADDR_RANGE
	}
	return ts, nil
}

// parseHost is host_create_from_string (family unspecified): %any,
// %any4, 0.0.0.0, %any6, :: and literal addresses. Hostnames are not
// resolved here.
func parseHost(s string) (netip.Addr, error) {
	switch s {
	case "%any", "%any4", "0.0.0.0":
		return netip.IPv4Unspecified(), nil
	case "%any6", "::":
		return netip.IPv6Unspecified(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("%q: IPv4-mapped IPv6 addresses are not supported", s)
	}
	return a, nil
}

// parseSubnet is host_create_from_subnet plus the masking of
// traffic_selector_create_from_subnet.
func parseSubnet(s string) (netip.Prefix, error) {
	addr, bitsStr, cut := strings.Cut(s, "/")
	a, err := parseHost(strings.TrimSpace(addr))
	if err != nil {
		return netip.Prefix{}, err
	}
	bits := a.BitLen()
	if cut {
		n, err := strconv.Atoi(bitsStr)
		if err != nil || n < 0 || n > a.BitLen() {
			return netip.Prefix{}, fmt.Errorf("%q: bad prefix length %q", s, bitsStr)
		}
		bits = n
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// parseRange is host_create_from_range: lo-hi, blanks around "-" allowed,
// both of one family, lo not above hi.
func parseRange(s string) (netip.Addr, netip.Addr, error) {
	l, h, _ := strings.Cut(s, "-")
	lo, err := parseHost(strings.TrimSpace(l))
	if err != nil {
		return lo, lo, err
	}
	hi, err := parseHost(strings.TrimSpace(h))
	if err != nil {
		return lo, hi, err
	}
	if lo.Is4() != hi.Is4() {
		return lo, hi, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
	}
	if hi.Less(lo) {
		return lo, hi, fmt.Errorf("range %q ends below its start", s)
	}
	return lo, hi, nil
}

var (
	protoOnce  sync.Once
	protoNames map[string]uint8
)

// parseProto is getprotobyname, then a number (strtol base 0), or "any".
func parseProto(s string) (uint8, error) {
	if s == "any" {
		return 0, nil
	}
	protoOnce.Do(loadProtocols)
	if p, ok := protoNames[s]; ok {
		return p, nil
	}
	n, err := strconv.ParseUint(s, 0, 8)
	if err != nil {
		return 0, fmt.Errorf("unknown protocol %q", s)
	}
	return uint8(n), nil
}

// loadProtocols reads /etc/protocols (names and aliases, as
// getprotobyname does), over a built-in table for systems without one.
func loadProtocols() {
	protoNames = map[string]uint8{
		"ip": 0, "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "ipv6": 41, "gre": 47,
		"esp": 50, "ah": 51, "ipv6-icmp": 58, "ospf": 89, "sctp": 132, "udplite": 136,
	}
	f, err := os.Open("/etc/protocols")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fs := strings.Fields(line)
		if len(fs) < 2 {
			continue
		}
		n, err := strconv.ParseUint(fs[1], 10, 8)
		if err != nil {
			continue
		}
		protoNames[fs[0]] = uint8(n)
		for _, alias := range fs[2:] {
			protoNames[alias] = uint8(n)
		}
	}
}

// parsePorts is the port part of parse_ts.
func parsePorts(port, proto string) (uint16, uint16, error) {
	switch port {
	case "", "any":
		return 0, 0xffff, nil
	case "opaque":
		return 0xffff, 0, nil
	}
	if p, err := net.LookupPort(protoForService(proto), port); err == nil && !isNumeric(port) {
		return uint16(p), uint16(p), nil
	}
	lo, hi, isRange := strings.Cut(port, "-")
	a, err := strconv.ParseUint(lo, 0, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("bad port %q", port)
	}
	b := a
	if isRange {
		if b, err = strconv.ParseUint(hi, 0, 16); err != nil {
			return 0, 0, fmt.Errorf("bad port range %q", port)
		}
	}
	return uint16(a), uint16(b), nil
}

func isNumeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// protoForService picks the network for a service lookup; getservbyname
// with a NULL protocol takes any, which tcp and udp entries cover.
func protoForService(proto string) string {
	if proto == "udp" {
		return "udp"
	}
	return "tcp"
}

// TSString formats a traffic selector as strongSwan prints it (%R):
// "10.0.0.0/24", "10.0.0.1..10.0.0.5", "dynamic", with "[tcp/80]" when
// a protocol or ports are set.
func TSString(ts m.TrafficSelector) string {
	var s string
	if config.IsDynamic(ts) {
		s = "dynamic"
	} else if p, ok := tsPrefix(ts); ok {
		s = p.String()
	} else {
		s = ts.Start.String() + ".." + ts.End.String()
	}
	if ts.IPProto == 0 && ts.StartPort == 0 && ts.EndPort == 0xffff {
		return s
	}
	protoOnce.Do(loadProtocols)
	proto := strconv.Itoa(int(ts.IPProto))
	for _, n := range []string{"tcp", "udp", "icmp", "ipv6-icmp", "sctp", "gre", "esp", "ah"} {
		if protoNames[n] == ts.IPProto && ts.IPProto != 0 {
			proto = n
			break
		}
	}
	switch {
	case ts.StartPort == 0 && ts.EndPort == 0xffff:
		return s + "[" + proto + "]"
	case ts.StartPort == 0xffff && ts.EndPort == 0:
		return s + "[" + proto + "/OPAQUE]"
	case ts.StartPort == ts.EndPort:
		return fmt.Sprintf("%s[%s/%d]", s, proto, ts.StartPort)
	}
	return fmt.Sprintf("%s[%s/%d-%d]", s, proto, ts.StartPort, ts.EndPort)
}

// tsPrefix returns the prefix a selector's address range is, if it is one.
func tsPrefix(ts m.TrafficSelector) (netip.Prefix, bool) {
	for bits := 0; bits <= ts.Start.BitLen(); bits++ {
		p := netip.PrefixFrom(ts.Start, bits)
		if p.Masked().Addr() == ts.Start && lastAddr(p) == ts.End {
			return p, true
		}
	}
	return netip.Prefix{}, false
}
