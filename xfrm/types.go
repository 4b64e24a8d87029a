// Package xfrm is the IPsec core of ipsecstack: selectors, the security
// policy database (SPD), the security association database (SAD), SA state
// (sequence numbers, replay windows, lifetimes), and the input and output
// engines that run ESP over plain byte slices.
//
// The package knows nothing of gVisor; stack/ glues it into a netstack. The
// split follows Linux net/xfrm: selector.go and spd.go (xfrm_policy), sad.go
// and state.go (xfrm_state), input.go and output.go (xfrm_input,
// xfrm_output), stats.go (xfrm_proc).
package xfrm

import (
	"fmt"
	"net/netip"
	"time"
)

// Proto is an IPsec protocol number as carried in the IP next-header field.
type Proto uint8

// IPsec protocols.
const (
	ProtoESP    Proto = 50
	ProtoAH     Proto = 51
	ProtoIPComp Proto = 108
)

// String implements fmt.Stringer.
func (p Proto) String() string {
	switch p {
	case ProtoESP:
		return "esp"
	case ProtoAH:
		return "ah"
	case ProtoIPComp:
		return "ipcomp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Mode is the IPsec encapsulation mode of an SA or template.
type Mode uint8

// Modes, numbered as Linux's XFRM_MODE_*.
const (
	ModeTransport Mode = 0
	ModeTunnel    Mode = 1
)

// String implements fmt.Stringer.
func (m Mode) String() string {
	if m == ModeTunnel {
		return "tunnel"
	}
	return "transport"
}

// Dir is a policy direction.
type Dir uint8

// Policy directions, numbered as Linux's XFRM_POLICY_IN/OUT/FWD.
const (
	DirIn  Dir = 0
	DirOut Dir = 1
	DirFwd Dir = 2
)

// String implements fmt.Stringer.
func (d Dir) String() string {
	switch d {
	case DirIn:
		return "in"
	case DirOut:
		return "out"
	case DirFwd:
		return "fwd"
	}
	return fmt.Sprintf("dir(%d)", uint8(d))
}

// Action is what a policy does with the packets it matches.
type Action uint8

// Policy actions. Bypass is setkey's "none" and Linux's "allow".
const (
	ActionBypass Action = iota
	ActionDiscard
	ActionProtect
)

// String implements fmt.Stringer.
func (a Action) String() string {
	switch a {
	case ActionBypass:
		return "bypass"
	case ActionDiscard:
		return "discard"
	case ActionProtect:
		return "ipsec"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Level says how strictly a template must be satisfied (RFC 2367 / KAME).
type Level uint8

// Template levels. Use sends in clear when no SA exists and accepts both;
// Require and Unique insist on an SA, Unique on one bound to this policy
// by its ReqID (the SPD assigns one when none is given, see
// MaxManualReqID).
const (
	LevelDefault Level = iota
	LevelUse
	LevelRequire
	LevelUnique
)

// String implements fmt.Stringer.
func (l Level) String() string {
	switch l {
	case LevelUse:
		return "use"
	case LevelRequire:
		return "require"
	case LevelUnique:
		return "unique"
	}
	return "default"
}

// Upper-layer protocol numbers the selectors care about.
const (
	ProtoAny    uint8 = 0 // any upper-layer protocol (Linux's 0, PF_KEY's 255)
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// PortRange is an inclusive range of ports. For ICMP and ICMPv6 the source
// range holds the message type and the destination range the code, as in
// Linux's xfrm_selector.
//
// The zero value and {0, 65535} mean ANY (every port, OPAQUE ones too), so
// that a zero Selector matches everything. ICMP type 0 (IPv4 echo reply)
// and code 0 are real values, though, which a {0, 0} range cannot name:
// Specified makes the range literal, {0, 0} the single value 0 and
// {0, 65535} every port but not OPAQUE ones (Linux's xfrm_selector says
// the same with a mask: sport_mask 0 is any, 0xffff exact). Port builds a
// single-value range that is exact even for 0. Ranges other than these two
// are literal with or without Specified.
type PortRange struct {
	Lo, Hi uint16
	// Specified marks the range as given rather than ANY; it only
	// matters for {0, 0} and {0, 65535}.
	Specified bool
}

// AnyPorts is the port range that matches every port, and OPAQUE ones.
var AnyPorts = PortRange{Lo: 0, Hi: 0xffff}

// Port returns the range holding only p, a port or an ICMP type or code;
// Port(0) is exact, not ANY.
func Port(p uint16) PortRange { return PortRange{Lo: p, Hi: p, Specified: true} }

// IsAny reports whether r matches every port.
func (r PortRange) IsAny() bool { return !r.Specified && r.Lo == 0 && (r.Hi == 0 || r.Hi == 0xffff) }

// Contains reports whether p lies in r.
func (r PortRange) Contains(p uint16) bool {
	if r.IsAny() {
		return true
	}
	return p >= r.Lo && p <= r.Hi
}

// Selector picks the traffic a policy or SA applies to (RFC 4301 §4.4.1.1).
// An invalid (zero) prefix is ANY for that family-less field; Src and Dst,
// when both valid, must be of one family.
type Selector struct {
	Src, Dst netip.Prefix
	// Proto is the upper-layer protocol; ProtoAny matches all.
	Proto uint8
	// SrcPorts and DstPorts match transport ports, or ICMP type and code.
	// A range other than ANY does not match a flow whose ports are OPAQUE.
	SrcPorts, DstPorts PortRange
}

// Flow is what a packet offers to selectors: its addresses, upper-layer
// protocol and ports (or ICMP type and code).
type Flow struct {
	Src, Dst netip.Addr
	Proto    uint8
	SrcPort  uint16 // or ICMP type
	DstPort  uint16 // or ICMP code
	// Opaque is set when the ports are not available (a non-initial
	// fragment, RFC 4301 §7): only ANY port ranges match it.
	Opaque bool
}

// String implements fmt.Stringer.
func (f Flow) String() string {
	if f.Opaque {
		return fmt.Sprintf("%v->%v proto %d ports OPAQUE", f.Src, f.Dst, f.Proto)
	}
	return fmt.Sprintf("%v:%d->%v:%d proto %d", f.Src, f.SrcPort, f.Dst, f.DstPort, f.Proto)
}

// Template is one transform a protect policy requires, in bundle order
// (first applied first on output: IPComp, then ESP, then AH).
type Template struct {
	Proto Proto
	Mode  Mode
	// Src and Dst are the tunnel endpoints; unset in transport mode, where
	// the packet's own addresses are used.
	Src, Dst netip.Addr
	Level    Level
	// ReqID ties the template to SAs with the same request id; 0 matches
	// any. A LevelUnique template stored without one gets its own.
	ReqID uint32
	// SPI, when non-zero, names the only SA that satisfies the template.
	SPI uint32
}

// Policy is one SPD entry.
type Policy struct {
	// ID is the policy index, assigned by the SPD when zero.
	ID  uint32
	Dir Dir
	Sel Selector
	// Priority orders policies: lower values win, as in Linux. Equal
	// priorities are ordered by insertion (older first).
	Priority  uint32
	Action    Action
	Templates []Template

	// seq is the insertion order, for the deterministic tie-break.
	seq uint64
}

// Lifetime holds limits on an SA; zero means no limit.
type Lifetime struct {
	Bytes   uint64
	Packets uint64
	// AddSeconds counts from the SA's creation, UseSeconds from first use.
	AddSeconds uint64
	UseSeconds uint64
}

// Algorithm names an algorithm by its Linux xfrm name or its setkey name,
// with a key. ICVBits truncates an AEAD or auth ICV; 0 takes the default.
type Algorithm struct {
	Name    string
	Key     []byte
	ICVBits int
}

// SAConfig describes an SA to add to the SAD.
type SAConfig struct {
	Proto    Proto
	SPI      uint32
	Src, Dst netip.Addr
	Mode     Mode
	ReqID    uint32
	// Sel limits the SA to traffic it matches; zero matches all.
	Sel Selector
	// AEAD, or Enc with Auth, choose the ESP transform; Auth alone the
	// AH transform; Comp the IPComp algorithm ("deflate", the default for
	// an IPComp SA), whose CPI is the SA's SPI (16 bits).
	AEAD Algorithm
	Enc  Algorithm
	Auth Algorithm
	Comp Algorithm
	// ReplayWindow is the anti-replay window in packets; 0 turns checking off.
	ReplayWindow uint32
	// ESN enables 64-bit extended sequence numbers (RFC 4304).
	ESN        bool
	Soft, Hard Lifetime
	// Seq is the initial outbound sequence number (the next packet gets
	// Seq+1); tests use it to start near the 2^32 boundary.
	Seq uint64
	// Encap puts ESP inside UDP (RFC 3948, NAT traversal); the zero value
	// is plain ESP.
	Encap Encap
}

// EncapType names a UDP encapsulation, with Linux's numbers
// (include/uapi/linux/udp.h) as PF_KEY's sadb_x_nat_t_type carries them.
type EncapType uint8

// Encapsulation types.
const (
	EncapNone     EncapType = 0
	EncapESPInUDP EncapType = 2 // UDP_ENCAP_ESPINUDP: RFC 3948, non-ESP marker for IKE
)

// Encap is an SA's UDP encapsulation, Linux's `encap espinudp SPORT DPORT
// OA`: the outer UDP ports and the peer's original address before NAT
// (NAT-OA, RFC 3947), unspecified when unknown. As in Linux and PF_KEY,
// SPort is the port at the SA's source and DPort the one at its
// destination: an outbound SA sends from SPort to DPort, an inbound SA
// receives on DPort (the SAD then treats UDP to (Dst, DPort) as RFC 3948
// traffic, SAD.IsEncapPort) from a peer at SPort. NAT-OA is not needed by
// the data plane: a transport-mode TCP/UDP checksum is recomputed on
// input (RFC 3948 §3.1.2).
type Encap struct {
	Type         EncapType
	SPort, DPort uint16
	OA           netip.Addr
	// Keepalive, when set on an outbound SA, makes this side send a NAT
	// keepalive (a UDP datagram holding the byte 0xFF, RFC 3948 §2.3)
	// from Src:SPort to the SA's peer every interval (strongSwan's
	// default is 20 s; the engine's timer runs every 250 ms, the
	// finest interval it honours). The stack sends them past the SPD.
	Keepalive time.Duration
}

// SAState is the life-cycle state of an SA, as in KAME/Linux.
type SAState uint8

// SA states.
const (
	StateLarval SAState = iota // waiting for keys (after ACQUIRE / GETSPI)
	StateMature                // usable
	StateDying                 // soft lifetime passed; still usable
	StateDead                  // hard lifetime passed or deleted
)

// String implements fmt.Stringer.
func (s SAState) String() string {
	switch s {
	case StateLarval:
		return "larval"
	case StateMature:
		return "mature"
	case StateDying:
		return "dying"
	}
	return "dead"
}

// String names the algorithm and its key length, never the key: an SA
// config printed with %v must not leak key material into logs.
func (a Algorithm) String() string {
	if a.Name == "" {
		return "none"
	}
	s := fmt.Sprintf("%s (%d-byte key)", a.Name, len(a.Key))
	if a.ICVBits != 0 {
		s += fmt.Sprintf(" icv %d bits", a.ICVBits)
	}
	return s
}

// GoString is String, so %#v does not leak the key either.
func (a Algorithm) GoString() string { return "xfrm.Algorithm{" + a.String() + "}" }
