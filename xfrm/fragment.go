package xfrm

import (
	"encoding/binary"
	"errors"
)

// ErrDontFragment reports a packet Fragment may not or cannot split: IPv4
// with DF set, IPv6 that already has a Fragment header, or an MTU too small
// for one 8-byte unit of data.
var ErrDontFragment = errors.New("xfrm: packet may not be fragmented")

// Fragment splits the IP packet pkt into fragments of at most mtu bytes
// (RFC 791 §3.2, RFC 8200 §4.5), each written into a buffer from a, in
// order. It serves both places that fragment: the tunnel output, which
// splits an inner packet too long for the outer length field before
// encapsulation, and the link wrapper, which splits what exceeds the wire
// after IPsec (where ESP and AH are part of the fragmentable part; gVisor's
// own IPv6 fragmentation does not handle them, network/ipv6/ipv6.go).
//
// IPv4 fragments keep the packet's Identification when it has one (else
// take id), its options, and its own offset and MF, so a fragment can be
// split again. A DF packet is not split: the caller decides whether it may
// clear DF. IPv6 fragments get a Fragment header with id after the
// unfragmentable part (ParseIPLayout).
func Fragment(pkt []byte, mtu int, id uint32, a Allocator) ([][]byte, error) {
	l, err := ParseIPLayout(pkt)
	if err != nil {
		return nil, err
	}
	pkt = pkt[:l.End]
	var pieces [][]byte
	if l.Version == 4 {
		if pkt[6]&0x40 != 0 {
			return nil, ErrDontFragment
		}
		ihl := l.InsertOff
		chunk := (mtu - ihl) &^ 7
		if chunk <= 0 {
			return nil, ErrDontFragment
		}
		if pid := binary.BigEndian.Uint16(pkt[4:6]); pid != 0 {
			id = uint32(pid)
		}
		fw := binary.BigEndian.Uint16(pkt[6:8])
		origOff, origMF := int(fw&0x1fff)*8, fw&0x2000 != 0
		payload := pkt[ihl:]
		for off := 0; off < len(payload); off += chunk {
			end := min(off+chunk, len(payload))
			b := a.Alloc(ihl + end - off)
			copy(b, pkt[:ihl])
			copy(b[ihl:], payload[off:end])
			binary.BigEndian.PutUint16(b[4:], uint16(id))
			fo := uint16((origOff + off) / 8)
			if end < len(payload) || origMF {
				fo |= 0x2000
			}
			binary.BigEndian.PutUint16(b[6:], fo)
			fixLength(b, true)
			pieces = append(pieces, b)
		}
		return pieces, nil
	}
	if l.FragOff >= 0 {
		// Already a fragment (or an atomic one): no second Fragment
		// header.
		return nil, ErrDontFragment
	}
	hlen, nhOff := l.InsertOff, l.NextHdrOff
	chunk := (mtu - hlen - 8) &^ 7
	if chunk <= 0 {
		return nil, ErrDontFragment
	}
	nh := pkt[nhOff]
	payload := pkt[hlen:]
	for off := 0; off < len(payload); off += chunk {
		end := min(off+chunk, len(payload))
		b := a.Alloc(hlen + 8 + end - off)
		copy(b, pkt[:hlen])
		b[nhOff] = nhFragment
		fh := b[hlen:]
		fh[0], fh[1] = nh, 0
		fo := uint16(off)
		if end < len(payload) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		copy(b[hlen+8:], payload[off:end])
		fixLength(b, false)
		pieces = append(pieces, b)
	}
	return pieces, nil
}
