package ah

import "encoding/binary"

// IP protocol numbers of the IPv6 extension headers AH handles.
const (
	protoHopByHop = 0
	protoRouting  = 43
	protoFragment = 44
	protoDestOpts = 60
	protoAH       = 51
)

// immutable copies the IP header hdr (with its IPv6 extension headers)
// into *bp in the form the ICV covers: mutable fields zeroed, lengths set
// for a packet with rest more bytes after the header (AH included), the
// last next-header field naming AH, a Fragment header left by reassembly
// removed, and a routing header put in the order it has on arrival at the
// final destination (RFC 4302 §3.3.3.1).
func immutable(bp *[]byte, hdr []byte, rest int) ([]byte, error) {
	if len(hdr) < 1 {
		return nil, ErrHeader
	}
	if hdr[0]>>4 == 4 {
		return immutable4(bp, hdr, rest)
	}
	return immutable6(bp, hdr, rest)
}

// immutable4 is RFC 4302 §3.3.3.1.1: TOS, flags, fragment offset, TTL and
// checksum zeroed; options: End of List, NOP, Security (130), Extended
// Security (133), Commercial Security (134), Router Alert (148) and
// Sender Directed Multi-Destination Delivery (149) are immutable (Appendix
// A); every other option is zeroed entirely, and a loose or strict source
// route puts its final address in the destination field, as Linux's
// ip_clear_mutable_options does.
func immutable4(bp *[]byte, hdr []byte, rest int) ([]byte, error) {
	if len(hdr) < 20 {
		return nil, ErrHeader
	}
	ihl := int(hdr[0]&0xf) * 4
	if ihl < 20 || ihl > len(hdr) || ihl+rest > 0xffff {
		return nil, ErrHeader
	}
	h := append((*bp)[:0], hdr[:ihl]...)
	*bp = h
	h[1] = 0                                            // TOS
	binary.BigEndian.PutUint16(h[2:], uint16(ihl+rest)) // total length as sent
	h[6], h[7] = 0, 0                                   // flags, fragment offset
	h[8] = 0                                            // TTL
	h[9] = protoAH
	h[10], h[11] = 0, 0 // checksum
	opts := h[20:]
	for len(opts) > 0 {
		switch opts[0] {
		case 0: // End of Option List
			return h, nil
		case 1: // NOP
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || int(opts[1]) < 2 || int(opts[1]) > len(opts) {
			return nil, ErrHeader
		}
		l := int(opts[1])
		switch opts[0] {
		case 130, 133, 134, 148, 149:
		case 131, 137: // LSRR, SSRR
			if l < 7 {
				return nil, ErrHeader
			}
			copy(h[16:20], opts[l-4:l])
			clear(opts[:l])
		default:
			clear(opts[:l])
		}
		opts = opts[l:]
	}
	return h, nil
}

// immutable6 is RFC 4302 §3.3.3.1.2: version kept, traffic class, flow
// label and hop limit zeroed; in hop-by-hop and destination options the
// data of every option whose type has the "may change" bit (0x20) set is
// zeroed; routing headers of type 0 and 2 are rearranged to their form at
// the final destination; other routing types are covered as they are.
func immutable6(bp *[]byte, hdr []byte, rest int) ([]byte, error) {
	if len(hdr) < 40 {
		return nil, ErrHeader
	}
	h := append((*bp)[:0], hdr[:40]...)
	h[0] &= 0xf0
	h[1], h[2], h[3] = 0, 0, 0
	h[7] = 0
	nhOff := 6
	for off := 40; off < len(hdr); {
		nh := h[nhOff]
		if off+8 > len(hdr) {
			return nil, ErrHeader
		}
		if nh == protoFragment {
			// Left by reassembly: not there when the sender computed the
			// ICV. Splice it out.
			h[nhOff] = hdr[off]
			off += 8
			continue
		}
		l := (int(hdr[off+1]) + 1) * 8
		if off+l > len(hdr) {
			return nil, ErrHeader
		}
		start := len(h)
		h = append(h, hdr[off:off+l]...)
		e := h[start:]
		switch nh {
		case protoHopByHop, protoDestOpts:
			if err := zeroMutableOptions(e[2:]); err != nil {
				return nil, err
			}
		case protoRouting:
			finalRouting(h, e)
		default:
			return nil, ErrHeader
		}
		nhOff = start
		off += l
	}
	*bp = h
	if len(h)-40+rest > 0xffff {
		return nil, ErrHeader
	}
	h[nhOff] = protoAH
	binary.BigEndian.PutUint16(h[4:], uint16(len(h)-40+rest))
	return h, nil
}

// zeroMutableOptions walks the TLV options of a hop-by-hop or
// destination options header and zeroes the data of those that may change
// en route (RFC 8200 §4.2: the third-highest bit of the type).
func zeroMutableOptions(o []byte) error {
	for len(o) > 0 {
		if o[0] == 0 { // Pad1
			o = o[1:]
			continue
		}
		if len(o) < 2 || 2+int(o[1]) > len(o) {
			return ErrHeader
		}
		l := 2 + int(o[1])
		if o[0]&0x20 != 0 {
			clear(o[2:l])
		}
		o = o[l:]
	}
	return nil
}

// finalRouting rewrites a type 0 or type 2 routing header r (and the
// destination address in h) with segments left > 0 into the form it has
// when it reaches the final destination: each hop swaps the destination
// with the next address and decrements segments left.
func finalRouting(h, r []byte) {
	if len(r) < 8 || (r[2] != 0 && r[2] != 2) {
		return
	}
	n := int(r[1]) / 2 // addresses
	sl := int(r[3])
	if sl == 0 || sl > n || len(r) < 8+16*n {
		return
	}
	var tmp [16]byte
	dst := h[24:40]
	for ; sl > 0; sl-- {
		a := r[8+16*(n-sl) : 8+16*(n-sl)+16]
		copy(tmp[:], dst)
		copy(dst, a)
		copy(a, tmp[:])
	}
	r[3] = 0
}
