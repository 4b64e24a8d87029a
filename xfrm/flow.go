package xfrm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Errors from ParseFlow and ParseIPLayout. They are wrapped with details;
// test with errors.Is.
var (
	// ErrTruncated means a header or a length field points past the buffer.
	ErrTruncated = errors.New("xfrm: packet truncated")
	// ErrMalformed means a header is self-contradictory (IHL < 5, a total
	// length shorter than the header, a hop-by-hop header not first, …).
	ErrMalformed = errors.New("xfrm: malformed packet")
	// ErrBadVersion means the version nibble is neither 4 nor 6.
	ErrBadVersion = errors.New("xfrm: not an IPv4 or IPv6 packet")
)

// IPv6 extension headers that ParseFlow walks, and No Next Header.
const (
	nhHopOpts  = 0
	nhRouting  = 43
	nhFragment = 44
	nhNoNext   = 59
	nhDstOpts  = 60
	// nhExperiment is RFC 4727's experimental extension header, which
	// gVisor walks as a fixed 8-byte header (header.IPv6ExperimentExtHdr):
	// our walk must agree with the stack's or a port-specific policy is
	// checked against the wrong protocol.
	nhExperiment = 253
)

const (
	ipv4MinHeader = 20
	ipv6Header    = 40
)

// ParseFlow fills f from a raw IP packet that starts at its IPv4 or IPv6
// header (the version nibble decides) and returns l4off, the offset of the
// upper-layer header: TCP, UDP, ICMP, … or, since IPsec protocols end the
// walk, the ESP or AH header (f.Proto is then 50 or 51, the protocol the SPD
// sees for already-protected traffic). For a non-initial fragment l4off is
// where the fragment's data starts.
//
// IPv4 options are skipped by IHL. IPv6 hop-by-hop, routing, fragment and
// destination options headers are walked; anything else, No Next Header
// included, is the upper-layer protocol. Ports (TCP, UDP, SCTP, UDP-Lite,
// DCCP), ICMP/ICMPv6 type (SrcPort) and code (DstPort), and the Mobility
// Header type (SrcPort) are read when present; other protocols leave them
// zero. A non-initial fragment (offset != 0) has OPAQUE ports (RFC 4301 §7),
// and so does an initial fragment too short to hold them; a whole packet
// too short to hold them is ErrTruncated.
//
// Bytes past the IPv4 total length or IPv6 payload length (link padding)
// are ignored. Every field is bounds-checked: ParseFlow never panics and
// does not allocate unless it returns an error.
func ParseFlow(pkt []byte, f *Flow) (l4off int, err error) {
	*f = Flow{}
	if len(pkt) == 0 {
		return 0, fmt.Errorf("%w: empty packet", ErrTruncated)
	}
	switch pkt[0] >> 4 {
	case 4:
		return parseFlow4(pkt, f)
	case 6:
		return parseFlow6(pkt, f)
	}
	return 0, fmt.Errorf("%w: version %d", ErrBadVersion, pkt[0]>>4)
}

// ipv4Bounds checks an IPv4 header and returns its length and the datagram's.
func ipv4Bounds(pkt []byte) (ihl, end int, err error) {
	if len(pkt) < ipv4MinHeader {
		return 0, 0, fmt.Errorf("%w: IPv4 header needs %d bytes, have %d", ErrTruncated, ipv4MinHeader, len(pkt))
	}
	ihl = int(pkt[0]&0x0f) * 4
	if ihl < ipv4MinHeader {
		return 0, 0, fmt.Errorf("%w: IPv4 IHL %d", ErrMalformed, ihl/4)
	}
	end = int(binary.BigEndian.Uint16(pkt[2:4]))
	if end < ihl {
		return 0, 0, fmt.Errorf("%w: IPv4 total length %d shorter than header %d", ErrMalformed, end, ihl)
	}
	if end > len(pkt) {
		return 0, 0, fmt.Errorf("%w: IPv4 total length %d, have %d bytes", ErrTruncated, end, len(pkt))
	}
	return ihl, end, nil
}

func parseFlow4(pkt []byte, f *Flow) (int, error) {
	ihl, end, err := ipv4Bounds(pkt)
	if err != nil {
		return 0, err
	}
	pkt = pkt[:end]
	f.Src = netip.AddrFrom4([4]byte(pkt[12:16]))
	f.Dst = netip.AddrFrom4([4]byte(pkt[16:20]))
	f.Proto = pkt[9]
	frag := binary.BigEndian.Uint16(pkt[6:8])
	if frag&0x1fff != 0 {
		f.Opaque = true
		return ihl, nil
	}
	return ihl, parsePorts(pkt[ihl:], f, frag&0x2000 != 0)
}

// ipv6Bounds checks an IPv6 header and returns the datagram's length.
func ipv6Bounds(pkt []byte) (end int, err error) {
	if len(pkt) < ipv6Header {
		return 0, fmt.Errorf("%w: IPv6 header needs %d bytes, have %d", ErrTruncated, ipv6Header, len(pkt))
	}
	plen := int(binary.BigEndian.Uint16(pkt[4:6]))
	end = ipv6Header + plen
	if plen == 0 && pkt[6] == nhHopOpts {
		// A jumbogram carries its length in a hop-by-hop option; no link
		// here has such an MTU, so trust the buffer.
		end = len(pkt)
	}
	if end > len(pkt) {
		return 0, fmt.Errorf("%w: IPv6 payload length %d, have %d bytes", ErrTruncated, plen, len(pkt)-ipv6Header)
	}
	return end, nil
}

// extLen returns the length of the IPv6 extension header at off (hop-by-hop,
// routing and destination options share the format: 8-octet units not
// counting the first).
func extLen(pkt []byte, off int, nh uint8) (int, error) {
	if len(pkt)-off < 2 {
		return 0, fmt.Errorf("%w: IPv6 extension header %d at %d", ErrTruncated, nh, off)
	}
	n := (int(pkt[off+1]) + 1) * 8
	if len(pkt)-off < n {
		return 0, fmt.Errorf("%w: IPv6 extension header %d at %d needs %d bytes, have %d",
			ErrTruncated, nh, off, n, len(pkt)-off)
	}
	return n, nil
}

// skipExt6 steps over the IPv6 extension header nh at off if it is one
// gVisor walks before a Fragment header or the upper layer: hop-by-hop,
// routing and destination options (length in 8-octet units after the
// first) and the fixed 8-byte experiment header 253. It returns the next
// header and the offset after it; isExt is false for any other nh. A
// header that does not fit is ErrTruncated. Every walk of the header chain
// on input (ParseFlow, ParseFragment, the ICMP error quote) steps with it,
// so they agree with each other and with gVisor.
func skipExt6(pkt []byte, off int, nh uint8) (next uint8, end int, isExt bool, err error) {
	switch nh {
	case nhHopOpts, nhRouting, nhDstOpts:
		n, err := extLen(pkt, off, nh)
		if err != nil {
			return 0, 0, true, err
		}
		return pkt[off], off + n, true, nil
	case nhExperiment:
		if len(pkt)-off < 8 {
			return 0, 0, true, fmt.Errorf("%w: IPv6 experiment header at %d", ErrTruncated, off)
		}
		return pkt[off], off + 8, true, nil
	}
	return nh, off, false, nil
}

func parseFlow6(pkt []byte, f *Flow) (int, error) {
	end, err := ipv6Bounds(pkt)
	if err != nil {
		return 0, err
	}
	pkt = pkt[:end]
	// AddrFrom16 keeps IPv4-mapped addresses IPv6: they are IPv6 traffic and
	// must not match IPv4 selectors.
	f.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
	f.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
	nh, off := pkt[6], ipv6Header
	fragment := false
	// Every header is at least 8 bytes, so the walk ends within len(pkt)/8
	// steps.
	for {
		if nh == nhHopOpts && off != ipv6Header {
			return 0, fmt.Errorf("%w: IPv6 hop-by-hop header at %d, not first", ErrMalformed, off)
		}
		next, end, isExt, err := skipExt6(pkt, off, nh)
		if err != nil {
			return 0, err
		}
		if isExt {
			nh, off = next, end
			continue
		}
		switch nh {
		case nhFragment:
			if len(pkt)-off < 8 {
				return 0, fmt.Errorf("%w: IPv6 fragment header at %d", ErrTruncated, off)
			}
			fo := binary.BigEndian.Uint16(pkt[off+2 : off+4])
			nh, off = pkt[off], off+8
			if fo>>3 != 0 {
				f.Proto = nh
				f.Opaque = true
				return off, nil
			}
			// M set: an initial fragment. M clear: an atomic fragment
			// (RFC 6946), a whole datagram.
			fragment = fragment || fo&1 != 0
		default:
			f.Proto = nh
			return off, parsePorts(pkt[off:], f, fragment)
		}
	}
}

// parsePorts reads the ports, or ICMP type and code, at the start of l4.
// In an initial fragment missing ports make the flow OPAQUE; in a whole
// datagram they are an error.
func parsePorts(l4 []byte, f *Flow, fragment bool) error {
	var need int
	switch f.Proto {
	case ProtoTCP, ProtoUDP, protoSCTP, protoUDPLite, protoDCCP:
		need = 4
	case ProtoICMP, ProtoICMPv6:
		need = 2
	case protoMH:
		need = 3
	default:
		return nil
	}
	if len(l4) < need {
		if fragment {
			f.Opaque = true
			return nil
		}
		return fmt.Errorf("%w: protocol %d header needs %d bytes, have %d", ErrTruncated, f.Proto, need, len(l4))
	}
	switch need {
	case 4:
		f.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		f.DstPort = binary.BigEndian.Uint16(l4[2:4])
	case 2:
		f.SrcPort = uint16(l4[0])
		f.DstPort = uint16(l4[1])
	case 3:
		f.SrcPort = uint16(l4[2]) // MH type, as Linux's xfrm_flowi_sport
	}
	return nil
}

// IPLayout locates the fields transport-mode ESP and AH rewrite in an IP
// packet (see ParseIPLayout). Offsets count from the start of the IP header.
type IPLayout struct {
	// Version is 4 or 6.
	Version int
	// End is the datagram length from the header's length field; bytes
	// past it are link padding and must not be encrypted.
	End int
	// InsertOff is where a transport-mode ESP or AH header goes: after the
	// IPv4 header with its options, or after the IPv6 unfragmentable part.
	InsertOff int
	// NextHdrOff is the offset of the protocol byte that names the header
	// now at InsertOff: the IPv4 Protocol field (9), the IPv6 Next Header
	// (6), or the Next Header byte of the last extension header before
	// InsertOff. Transport mode copies that byte into the ESP trailer (or
	// AH's Next Header) and overwrites it with 50 or 51.
	NextHdrOff int
	// FragOff is the offset of the first IPv6 Fragment header, or -1 (and
	// always -1 for IPv4).
	FragOff int
	// Fragment is set for a fragment: IPv4 MF or offset, IPv6 Fragment
	// header with M or offset (an atomic fragment, RFC 6946, is not one).
	// Transport-mode SAs carry whole datagrams only (RFC 4301 §7):
	// reassemble first and remove the Fragment header.
	Fragment bool
}

// ParseIPLayout finds where transport-mode IPsec inserts its header.
//
// IPv4: InsertOff is IHL*4 and NextHdrOff 9.
//
// IPv6 (RFC 4303 §3.1.1, RFC 4302 §3.1.1, RFC 8200 §4.1): ESP and AH are
// end-to-end payloads, so they follow the unfragmentable part: the
// hop-by-hop header, any routing header, and destination options that
// precede a routing header (options for the intermediate destinations).
// Destination options not followed by a routing header are for the final
// destination and stay after ESP, encrypted. This differs from Linux's
// ip6_find_1stfragopt, which keeps every destination options header before
// the first routing header in the clear even when there is no routing
// header. The walk stops at a Fragment header (InsertOff is then at most its
// offset) and at the first header that is not one of these.
func ParseIPLayout(pkt []byte) (IPLayout, error) {
	if len(pkt) == 0 {
		return IPLayout{}, fmt.Errorf("%w: empty packet", ErrTruncated)
	}
	switch pkt[0] >> 4 {
	case 4:
		ihl, end, err := ipv4Bounds(pkt)
		if err != nil {
			return IPLayout{}, err
		}
		return IPLayout{
			Version:    4,
			End:        end,
			InsertOff:  ihl,
			NextHdrOff: 9,
			FragOff:    -1,
			Fragment:   binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0,
		}, nil
	case 6:
		end, err := ipv6Bounds(pkt)
		if err != nil {
			return IPLayout{}, err
		}
		pkt = pkt[:end]
		l := IPLayout{Version: 6, End: end, InsertOff: ipv6Header, NextHdrOff: 6, FragOff: -1}
		off, nhOff := ipv6Header, 6
		for {
			nh := pkt[nhOff]
			switch nh {
			case nhHopOpts, nhRouting, nhDstOpts:
				if nh == nhHopOpts && off != ipv6Header {
					return IPLayout{}, fmt.Errorf("%w: IPv6 hop-by-hop header at %d, not first", ErrMalformed, off)
				}
				n, err := extLen(pkt, off, nh)
				if err != nil {
					return IPLayout{}, err
				}
				nhOff, off = off, off+n
				if nh != nhDstOpts {
					// Commits the destination options walked so far too.
					l.InsertOff, l.NextHdrOff = off, nhOff
				}
			case nhFragment:
				if len(pkt)-off < 8 {
					return IPLayout{}, fmt.Errorf("%w: IPv6 fragment header at %d", ErrTruncated, off)
				}
				l.FragOff = off
				l.Fragment = binary.BigEndian.Uint16(pkt[off+2:off+4])&0xfff9 != 0
				return l, nil
			default:
				return l, nil
			}
		}
	}
	return IPLayout{}, fmt.Errorf("%w: version %d", ErrBadVersion, pkt[0]>>4)
}
