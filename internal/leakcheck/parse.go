package leakcheck

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// readingKind says what one reading of a datagram found.
type readingKind int

const (
	// kindTuple: traffic in clear, described by the reading's tuple.
	kindTuple readingKind = iota
	// kindQuoted: the packet an ICMP error in clear quotes.
	kindQuoted
	// kindProtected: the datagram is ESP, AH, IPComp or ESP in UDP.
	kindProtected
	// kindBad: the datagram is malformed (the reason says how); other
	// readings of it still say what can be read.
	kindBad
)

// reading is one interpretation of a datagram (or of a fragment, or of
// the packet an ICMP error quotes).
type reading struct {
	kind readingKind
	t    tuple
	why  string // kindBad: what is wrong; kindProtected: which protocol
	// frag is set for a reading of a fragment on its own, which the
	// rest of its datagram may still settle.
	frag bool
}

// fragment is one fragment of a datagram, as the reassembler keeps it.
type fragment struct {
	key  trainKey
	off  int
	more bool
	data []byte // aliases the frame; copied by the reassembler
}

// trainKey identifies the fragments of one datagram: source, destination,
// identification and protocol (IPv4, RFC 791) or Fragment header next
// header (IPv6; RFC 8200 keys by the first three, adding the next header
// keeps a train whose first fragment went under ESP apart from clear tail
// fragments of the same identification, which are then judged alone).
type trainKey struct {
	fam      int
	src, dst netip.Addr
	id       uint32
	nh       uint8
}

// ctx is where in a packet the parser is.
type ctx struct {
	t tuple
	// partial: the bytes may end early (the first fragment of a datagram,
	// the packet an ICMP error quotes): a header cut short leaves fields
	// unknown instead of making the datagram malformed.
	partial bool
	// quote: parsing the packet an ICMP error quotes; its fragments are
	// not reassembled and ICMP errors inside are not followed.
	quote bool
	// inner: parsing the inner packet of IP-in-IP; its fragments are not
	// reassembled (judged from what each carries).
	inner bool
	// reassembled: the payload of a reassembled datagram; a Fragment
	// header in it is a nested fragment.
	reassembled bool
	// frag: parsing a fragment on its own.
	frag bool
	// first: the next IPv6 header directly follows the fixed header (the
	// only place a hop-by-hop header may be, RFC 8200 §4.1).
	first bool
	depth int
}

// parser collects the readings and fragments of one packet.
type parser struct {
	espPorts []uint16
	readings []reading
	frags    []fragment
}

const maxDepth = 4 // IP-in-IP nesting followed

func (p *parser) add(c ctx, r reading) {
	r.frag = c.frag
	p.readings = append(p.readings, r)
}

func (p *parser) bad(c ctx, format string, args ...any) {
	p.add(c, reading{kind: kindBad, t: c.t, why: fmt.Sprintf(format, args...)})
}

// unknownL4 records a reading whose protocol is proto but whose ports or
// ICMP type are not in these bytes.
func (p *parser) unknownL4(c ctx, proto uint8) {
	t := c.t
	t.proto, t.l4 = proto, false
	p.add(c, reading{kind: p.kind(c), t: t})
}

// unknownProto records a reading where not even the protocol is known.
func (p *parser) unknownProto(c ctx) {
	t := c.t
	t.l4, t.noProto = false, true
	p.add(c, reading{kind: p.kind(c), t: t})
}

func (p *parser) kind(c ctx) readingKind {
	if c.quote {
		return kindQuoted
	}
	return kindTuple
}

// ip parses an IP packet (version from its first nibble).
func (p *parser) ip(c ctx, b []byte) {
	if len(b) == 0 {
		p.bad(c, "empty IP packet")
		return
	}
	switch b[0] >> 4 {
	case 4:
		p.ip4(c, b)
	case 6:
		p.ip6(c, b)
	default:
		p.bad(c, "IP version %d", b[0]>>4)
	}
}

func (p *parser) ip4(c ctx, b []byte) {
	if len(b) < 20 {
		if !c.partial { // else the rest is in another fragment, or not quoted
			p.bad(c, "IPv4 header cut at %d bytes", len(b))
		}
		return
	}
	if b[0]>>4 != 4 {
		p.bad(c, "IP version %d where IPv4 was expected", b[0]>>4)
		return
	}
	c.t = tuple{fam: 4, src: netip.AddrFrom4([4]byte(b[12:16])), dst: netip.AddrFrom4([4]byte(b[16:20]))}
	ihl := int(b[0]&15) * 4
	if ihl < 20 {
		p.bad(c, "IPv4 header length %d", ihl)
		return
	}
	if len(b) < ihl {
		if !c.partial {
			p.bad(c, "IPv4 header of %d bytes cut at %d", ihl, len(b))
			return
		}
		p.unknownProto(c)
		return
	}
	tl := int(binary.BigEndian.Uint16(b[2:]))
	switch {
	case tl < ihl:
		p.bad(c, "IPv4 total length %d below the header length %d", tl, ihl)
		return
	case tl > len(b):
		if !c.partial {
			p.bad(c, "IPv4 total length %d beyond the %d bytes captured", tl, len(b))
			c.partial = true // judge what is there
		}
	default:
		b = b[:tl] // link-layer padding
	}
	if why := checkOptions4(b[20:ihl]); why != "" {
		p.bad(c, "IPv4 options: %s", why)
	}
	proto := b[9]
	fo := binary.BigEndian.Uint16(b[6:])
	more, off := fo&0x2000 != 0, int(fo&0x1fff)*8
	payload := b[ihl:]
	if !more && off == 0 {
		p.payload(c, proto, payload)
		return
	}
	// A fragment (RFC 791).
	if off+len(payload) > 65535-ihl {
		p.bad(c, "IPv4 fragment at %d+%d ends beyond 65535", off, len(payload))
	}
	if more && len(payload)%8 != 0 && !c.partial {
		p.bad(c, "IPv4 non-final fragment of %d bytes (not a multiple of 8)", len(payload))
	}
	if !c.quote && !c.inner && !c.partial {
		p.frags = append(p.frags, fragment{
			key:  trainKey{fam: 4, src: c.t.src, dst: c.t.dst, id: uint32(binary.BigEndian.Uint16(b[4:])), nh: proto},
			off:  off,
			more: more,
			data: payload,
		})
	}
	// The fragment on its own: ports only in the first one.
	c.frag = true
	if off == 0 {
		c.partial = true
		p.payload(c, proto, payload)
		return
	}
	if isIPsec(proto) {
		p.protected(c, c.t, protoName(proto)) // a piece of an IPsec packet
		return
	}
	p.unknownL4(c, proto)
}

// checkOptions4 walks IPv4 options (RFC 791): end of list, no-op, and
// type-length-value options that must fit in the header.
func checkOptions4(o []byte) string {
	for i := 0; i < len(o); {
		switch o[i] {
		case 0: // end of option list
			return ""
		case 1: // no operation
			i++
			continue
		}
		if i+1 >= len(o) {
			return fmt.Sprintf("option %d at %d has no length", o[i], i)
		}
		l := int(o[i+1])
		if l < 2 || i+l > len(o) {
			return fmt.Sprintf("option %d at %d has length %d (%d bytes left)", o[i], i, l, len(o)-i)
		}
		i += l
	}
	return ""
}

func (p *parser) ip6(c ctx, b []byte) {
	if len(b) < 40 {
		if !c.partial {
			p.bad(c, "IPv6 header cut at %d bytes", len(b))
		}
		return
	}
	if b[0]>>4 != 6 {
		p.bad(c, "IP version %d where IPv6 was expected", b[0]>>4)
		return
	}
	c.t = tuple{fam: 6, src: netip.AddrFrom16([16]byte(b[8:24])), dst: netip.AddrFrom16([16]byte(b[24:40]))}
	plen := int(binary.BigEndian.Uint16(b[4:]))
	nh := b[6]
	switch {
	case plen == 0 && nh == protoHopByHop && !c.partial:
		// A jumbogram (RFC 2675): the length is in a hop-by-hop option.
		// No stack here sends one; judge the bytes captured.
		p.bad(c, "IPv6 payload length 0 with a hop-by-hop header (jumbogram)")
		c.partial = true
	case 40+plen > len(b):
		if !c.partial {
			p.bad(c, "IPv6 payload length %d beyond the %d bytes captured", plen, len(b)-40)
			c.partial = true
		}
	default:
		b = b[:40+plen]
	}
	c.first = true
	p.walk6(c, nh, b[40:])
}

// walk6 walks IPv6 extension headers from nh at b as an end host does
// (RFC 8200 §4), forking where hosts read a header differently.
func (p *parser) walk6(c ctx, nh uint8, b []byte) {
	for {
		first := c.first
		c.first = false
		switch nh {
		case protoHopByHop, protoRouting, protoDstOpts:
			if nh == protoHopByHop && !first {
				p.bad(c, "hop-by-hop header not first")
			}
			if len(b) < 2 {
				p.cut(c, nh, len(b))
				return
			}
			hl := (int(b[1]) + 1) * 8
			if len(b) < hl {
				p.cut(c, nh, len(b))
				return
			}
			nh, b = b[0], b[hl:]
		case protoFragment:
			if len(b) < 8 {
				p.cut(c, nh, len(b))
				return
			}
			p.fragment6(c, b)
			return
		case protoExp1:
			// RFC 4727 experiment. gVisor walks it as a fixed 8-byte
			// header; RFC 6564's uniform format gives (len+1)*8 bytes;
			// Linux takes it as an upper-layer protocol. Judge all three.
			p.payload(c, nh, b)
			if len(b) < 8 {
				p.cut(c, nh, len(b))
				return
			}
			if hl := (int(b[1]) + 1) * 8; hl != 8 && len(b) >= hl {
				p.walk6(c, b[0], b[hl:])
			} else if hl != 8 {
				p.cut(c, nh, len(b))
			}
			nh, b = b[0], b[8:]
		case protoExp2:
			// RFC 4727 experiment: the uniform format (RFC 6564), or an
			// upper-layer protocol (gVisor, Linux).
			p.payload(c, nh, b)
			if len(b) < 2 || len(b) < (int(b[1])+1)*8 {
				p.cut(c, nh, len(b))
				return
			}
			nh, b = b[0], b[(int(b[1])+1)*8:]
		default:
			p.payload(c, nh, b)
			return
		}
	}
}

// cut records an extension header nh cut short at n bytes.
func (p *parser) cut(c ctx, nh uint8, n int) {
	if !c.partial {
		p.bad(c, "IPv6 extension header %d cut at %d bytes", nh, n)
	}
	p.unknownProto(c)
}

func isExtHeader6(nh uint8) bool {
	switch nh {
	case protoHopByHop, protoRouting, protoFragment, protoDstOpts, protoExp1, protoExp2:
		return true
	}
	return false
}

// fragment6 handles a Fragment header at b (RFC 8200 §4.5).
func (p *parser) fragment6(c ctx, b []byte) {
	nh := b[0]
	fo := binary.BigEndian.Uint16(b[2:])
	off, more := int(fo&^7), fo&1 != 0
	id := binary.BigEndian.Uint32(b[4:])
	data := b[8:]
	if off == 0 && !more {
		// An atomic fragment (RFC 6946): processed as a whole datagram.
		p.walk6(c, nh, data)
		return
	}
	if c.reassembled {
		p.bad(c, "a Fragment header inside a reassembled datagram")
	}
	if off+len(data) > 65535 {
		p.bad(c, "IPv6 fragment at %d+%d ends beyond 65535", off, len(data))
	}
	if more && len(data)%8 != 0 && !c.partial {
		p.bad(c, "IPv6 non-final fragment of %d bytes (not a multiple of 8)", len(data))
	}
	if !c.quote && !c.inner && !c.partial && !c.reassembled {
		p.frags = append(p.frags, fragment{
			key:  trainKey{fam: 6, src: c.t.src, dst: c.t.dst, id: id, nh: nh},
			off:  off,
			more: more,
			data: data,
		})
	}
	// The fragment on its own: the first one holds the headers up to
	// what fits; later ones hold none (RFC 8200 §4.5).
	c.frag = true
	if off == 0 {
		c.partial = true
		p.walk6(c, nh, data)
		return
	}
	switch {
	case isIPsec(nh):
		p.protected(c, c.t, protoName(nh)) // a piece of an IPsec packet
	case isExtHeader6(nh):
		p.unknownProto(c)
	default:
		p.unknownL4(c, nh)
	}
}

func isIPsec(proto uint8) bool {
	return proto == protoESP || proto == protoAH || proto == protoIPComp
}

// payload judges the upper layer proto at b.
func (p *parser) payload(c ctx, proto uint8, b []byte) {
	t := c.t
	t.proto = proto
	switch proto {
	case protoESP, protoAH, protoIPComp:
		p.protected(c, t, protoName(proto))
		return
	case protoIPIP, protoIPv6:
		// IP in IP in clear: the outer datagram, and what it carries.
		t.l4 = true
		p.add(c, reading{kind: p.kind(c), t: t})
		if c.depth >= maxDepth {
			p.bad(c, "IP-in-IP nested deeper than %d", maxDepth)
			return
		}
		inner := ctx{partial: c.partial, quote: c.quote, inner: true, frag: c.frag, depth: c.depth + 1}
		if proto == protoIPIP {
			p.ip4(inner, b)
		} else {
			p.ip6(inner, b)
		}
		return
	}
	switch {
	case hasPorts(proto):
		need := 4
		switch proto {
		case protoUDP, protoUDPLite:
			need = 8
		case protoTCP:
			need = 20
		}
		if len(b) < 4 {
			if !c.partial {
				p.bad(c, "protocol %d header cut at %d bytes", proto, len(b))
			}
			p.unknownL4(c, proto)
			return
		}
		if len(b) < need && !c.partial {
			p.bad(c, "protocol %d header cut at %d bytes", proto, len(b))
		}
		t.l4 = true
		t.sport, t.dport = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
		if proto == protoUDP && len(b) >= 9 && binary.BigEndian.Uint16(b[4:]) == 9 && b[8] == 0xff &&
			(p.isESPPort(t.sport) || p.isESPPort(t.dport)) {
			// A NAT keepalive (RFC 3948 §2.3): the one byte 0xFF, sent
			// in clear by design; it carries nothing of any flow.
			p.protected(c, t, "NAT keepalive")
			return
		}
		if proto == protoUDP && len(b) >= 16 && (p.isESPPort(t.sport) || p.isESPPort(t.dport)) {
			// ESP in UDP (RFC 3948): a non-zero SPI, never one of the
			// reserved 1-255; a zero marker is IKE, judged as UDP.
			if spi := binary.BigEndian.Uint32(b[8:]); spi > 255 {
				p.protected(c, t, "ESP in UDP")
				return
			}
		}
		p.add(c, reading{kind: p.kind(c), t: t})
	case isICMP(proto):
		if len(b) < 2 {
			if !c.partial {
				p.bad(c, "ICMP header cut at %d bytes", len(b))
			}
			p.unknownL4(c, proto)
			return
		}
		t.l4 = true
		t.icmpType, t.icmpCd = uint16(b[0]), uint16(b[1])
		p.add(c, reading{kind: p.kind(c), t: t})
		if c.quote || !isICMPError(proto, b[0]) {
			return
		}
		// The packet an error quotes (RFC 792, RFC 4443 §2.4): its
		// plaintext is on the wire in clear too.
		if len(b) < 8 {
			if !c.partial {
				p.bad(c, "ICMP error cut at %d bytes", len(b))
			}
			return
		}
		q := ctx{partial: true, quote: true, frag: c.frag, depth: c.depth + 1}
		if proto == protoICMP {
			p.ip4(q, b[8:])
		} else {
			p.ip6(q, b[8:])
		}
	default:
		t.l4 = true // nothing more to know
		p.add(c, reading{kind: p.kind(c), t: t})
	}
}

// protected records an IPsec reading; an ICMP error quoting an IPsec
// packet quotes no plaintext, so a quoted one adds nothing to judge.
func (p *parser) protected(c ctx, t tuple, what string) {
	if !c.quote {
		p.add(c, reading{kind: kindProtected, t: t, why: what})
	}
}

func isICMPError(proto, typ uint8) bool {
	if proto == protoICMPv6 {
		return typ < 128 // RFC 4443 §2.1
	}
	switch typ {
	case 3, 4, 5, 11, 12: // unreachable, quench, redirect, time exceeded, parameter problem
		return true
	}
	return false
}

func (p *parser) isESPPort(port uint16) bool {
	for _, e := range p.espPorts {
		if e == port {
			return true
		}
	}
	return false
}

func protoName(p uint8) string {
	switch p {
	case protoESP:
		return "ESP"
	case protoAH:
		return "AH"
	case protoIPComp:
		return "IPComp"
	}
	return fmt.Sprintf("protocol %d", p)
}
