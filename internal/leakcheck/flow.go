// Package leakcheck is a test oracle for "no protected flow crosses the
// wire in clear". It watches captured frames, reassembles IPv4 and IPv6
// fragments itself, decodes every datagram with a parser of its own and
// classifies it against a list of protected flows that the test describes
// in its own terms.
//
// It deliberately shares no code with what it checks: it imports nothing
// of ipsecstack (no xfrm.ParseFlow, no SPD lookup, no selector type), and
// it decodes Ethernet, IPv4 (with options), IPv6 (with every extension
// header an end host walks, RFC 8200 §4) and the upper-layer headers by
// hand. Where end hosts disagree on how to read a packet (the experiment
// next headers 253/254 of RFC 4727, overlapping fragments) it evaluates
// every reading and reports a leak if any reading is one.
package leakcheck

import (
	"fmt"
	"net/netip"
	"strings"
)

// Range is an inclusive range of port numbers or ICMP types/codes. The
// zero Range matches anything; Exactly and Between build set ones, so
// that "ICMP type 0" (echo reply) is not confused with "any type".
type Range struct {
	Lo, Hi uint16
	// Set is true when the range restricts the value.
	Set bool
}

// Exactly is the range holding v only.
func Exactly(v uint16) Range { return Range{Lo: v, Hi: v, Set: true} }

// Between is the range lo..hi (inclusive).
func Between(lo, hi uint16) Range { return Range{Lo: lo, Hi: hi, Set: true} }

func (r Range) has(v uint16) bool { return !r.Set || (v >= r.Lo && v <= r.Hi) }

// String is "any", "v" or "lo-hi".
func (r Range) String() string {
	switch {
	case !r.Set:
		return "any"
	case r.Lo == r.Hi:
		return fmt.Sprint(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Flow describes traffic the test protects, or, with Clear, traffic it
// allows in clear. Flows are evaluated in order and the first one that
// matches decides, as in an SPD ordered by priority; a datagram no flow
// matches may travel in clear.
type Flow struct {
	// Name identifies the flow in reports.
	Name string
	// Family is 4 or 6, or 0 for any (or as implied by Src and Dst).
	Family int
	// Src and Dst are the addresses; the zero Prefix matches any.
	Src, Dst netip.Prefix
	// Proto is the upper-layer protocol number, 0 for any (0 is the
	// hop-by-hop header, never an upper layer once headers are walked).
	Proto uint8
	// SrcPort and DstPort restrict TCP, UDP, UDP-Lite, SCTP and DCCP. A
	// flow with a set port range matches no other protocol.
	SrcPort, DstPort Range
	// ICMPType and ICMPCode restrict ICMP and ICMPv6. A flow with a set
	// type or code matches no other protocol.
	ICMPType, ICMPCode Range
	// Both makes the flow match the reverse direction too (addresses and
	// ports swapped; ICMP type and code are kept).
	Both bool
	// Clear marks traffic that may go in clear (a bypass): a datagram it
	// matches first is not a leak.
	Clear bool
}

// String is the flow's Name, or a description of it.
func (f Flow) String() string {
	if f.Name != "" {
		return f.Name
	}
	var b strings.Builder
	any := func(p netip.Prefix) string {
		if !p.IsValid() {
			return "any"
		}
		return p.String()
	}
	arrow := "->"
	if f.Both {
		arrow = "<->"
	}
	fmt.Fprintf(&b, "%s%s%s", any(f.Src), arrow, any(f.Dst))
	if f.Proto != 0 {
		fmt.Fprintf(&b, " proto %d", f.Proto)
	}
	if f.SrcPort.Set || f.DstPort.Set {
		fmt.Fprintf(&b, " ports %v->%v", f.SrcPort, f.DstPort)
	}
	if f.ICMPType.Set || f.ICMPCode.Set {
		fmt.Fprintf(&b, " icmp type %v code %v", f.ICMPType, f.ICMPCode)
	}
	if f.Clear {
		b.WriteString(" (clear)")
	}
	return b.String()
}

// Protocol numbers the classifier needs (IANA).
const (
	protoHopByHop = 0
	protoICMP     = 1
	protoIPIP     = 4
	protoTCP      = 6
	protoUDP      = 17
	protoIPv6     = 41
	protoRouting  = 43
	protoFragment = 44
	protoESP      = 50
	protoAH       = 51
	protoICMPv6   = 58
	protoNoNext   = 59
	protoDstOpts  = 60
	protoIPComp   = 108
	protoSCTP     = 132
	protoUDPLite  = 136
	protoDCCP     = 33
	protoExp1     = 253 // RFC 4727 experiment
	protoExp2     = 254 // RFC 4727 experiment
)

func hasPorts(p uint8) bool {
	switch p {
	case protoTCP, protoUDP, protoSCTP, protoUDPLite, protoDCCP:
		return true
	}
	return false
}

func isICMP(p uint8) bool { return p == protoICMP || p == protoICMPv6 }

// tuple is what one reading of a datagram says about it.
type tuple struct {
	fam      int
	src, dst netip.Addr
	proto    uint8
	// noProto is set when not even the upper-layer protocol could be
	// read (a non-initial IPv6 fragment whose Fragment header names an
	// extension header, or a header chain cut short).
	noProto bool
	// l4 is set when the ports (or ICMP type and code) were read; a
	// non-initial fragment or a truncated header leaves them unknown.
	l4               bool
	sport, dport     uint16
	icmpType, icmpCd uint16
}

func (t tuple) reversed() tuple {
	t.src, t.dst = t.dst, t.src
	t.sport, t.dport = t.dport, t.sport
	return t
}

func (t tuple) String() string {
	fam := "IPv6"
	if t.fam == 4 {
		fam = "IPv4"
	}
	if t.noProto {
		return fmt.Sprintf("%s %v->%v (protocol unknown)", fam, t.src, t.dst)
	}
	var l4 string
	switch {
	case !t.l4:
		l4 = " (ports unknown)"
	case hasPorts(t.proto):
		l4 = fmt.Sprintf(" ports %d->%d", t.sport, t.dport)
	case isICMP(t.proto):
		l4 = fmt.Sprintf(" type %d code %d", t.icmpType, t.icmpCd)
	}
	return fmt.Sprintf("%s %v->%v proto %d%s", fam, t.src, t.dst, t.proto, l4)
}

// match is a three-valued answer: the datagram matches, may match (the
// fields the flow restricts are unknown), or does not.
type match int

const (
	no match = iota
	maybe
	yes
)

func (f *Flow) matchOne(t tuple) match {
	if f.Family != 0 && f.Family != t.fam {
		return no
	}
	if f.Src.IsValid() && !f.Src.Contains(t.src) {
		return no
	}
	if f.Dst.IsValid() && !f.Dst.Contains(t.dst) {
		return no
	}
	m := yes
	if t.noProto {
		// Whatever the flow asks of the protocol or above is unknown.
		if f.Proto != 0 || f.SrcPort.Set || f.DstPort.Set || f.ICMPType.Set || f.ICMPCode.Set {
			return maybe
		}
		return yes
	}
	if f.Proto != 0 && f.Proto != t.proto {
		return no
	}
	if f.SrcPort.Set || f.DstPort.Set {
		if !hasPorts(t.proto) {
			return no
		}
		if !t.l4 {
			m = maybe
		} else if !f.SrcPort.has(t.sport) || !f.DstPort.has(t.dport) {
			return no
		}
	}
	if f.ICMPType.Set || f.ICMPCode.Set {
		if !isICMP(t.proto) {
			return no
		}
		if !t.l4 {
			m = maybe
		} else if !f.ICMPType.has(t.icmpType) || !f.ICMPCode.has(t.icmpCd) {
			return no
		}
	}
	return m
}

func (f *Flow) match(t tuple) match {
	m := f.matchOne(t)
	if f.Both && m != yes {
		m = max(m, f.matchOne(t.reversed()))
	}
	return m
}

// outcome of evaluating one tuple against the flow list.
type outcome struct {
	leak match  // yes: a protected flow matches first; maybe: it may
	flow string // the protected flow concerned
}

// evaluate runs the flows in order, first match wins. A flow that only
// may match cannot end the walk: a protected one makes the result at
// least "maybe a leak", a Clear one is passed over (it may not apply).
func evaluate(flows []Flow, t tuple) outcome {
	var o outcome
	mayBypass := false // a Clear flow that may match was passed over
	for i := range flows {
		f := &flows[i]
		switch f.match(t) {
		case yes:
			if f.Clear {
				return o
			}
			if o.leak == no {
				o.flow = f.String()
			}
			o.leak = yes
			if mayBypass {
				o.leak = maybe // unless that Clear flow applies
			}
			return o
		case maybe:
			if f.Clear {
				mayBypass = true
			} else if o.leak == no {
				o.leak, o.flow = maybe, f.String()
			}
		}
	}
	return o
}
