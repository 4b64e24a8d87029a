package xfrm

import (
	"encoding/binary"
	"errors"
)

// portPolicyCovers reports whether a protect policy of direction dir with a port
// (or ICMP type/code) selector other than ANY matches the OPAQUE flow f by
// its addresses and protocol, and would be preferred to found (the policy
// the lookup chose, or nil). Such a policy might cover the datagram f is a
// fragment of; only the ports, which the fragment does not carry, could
// tell (RFC 4301 §7). It is asked only about OPAQUE flows: outbound
// fragments, which locally generated traffic never produces (the stack
// glue keeps the IP layer from fragmenting before IPsec), and ICMP errors
// whose quote lacks the ports; so the walk over the SPD is off the hot
// path.
func (e *Engine) portPolicyCovers(dir Dir, f *Flow, found *Policy) bool {
	covered := false
	e.SPD.Walk(func(p *Policy) bool {
		if p.Dir != dir {
			return p.Dir < dir
		}
		if found != nil && comparePolicies(p, found) >= 0 {
			// Walk goes in preference order: nothing after found
			// could have been chosen over it.
			return false
		}
		if p.Action != ActionProtect || (p.Sel.SrcPorts.IsAny() && p.Sel.DstPorts.IsAny()) {
			return true
		}
		if p.Sel.Proto != ProtoAny && p.Sel.Proto != f.Proto {
			return true
		}
		if p.Sel.Src.IsValid() && !p.Sel.Src.Contains(f.Src.WithZone("")) {
			return true
		}
		if p.Sel.Dst.IsValid() && !p.Sel.Dst.Contains(f.Dst.WithZone("")) {
			return true
		}
		covered = true
		return false
	})
	return covered
}

// protectPieces carries pkt, too long for its length fields once the
// bundle (whose first SA is a tunnel) is applied, as IP fragments made
// before encapsulation, each protected with the same bundle: the inner
// packet is the sender's to fragment, and the peer reassembles after
// decapsulation (Linux fragments before its tunnel output the same way
// when the inner packet exceeds the tunnel's MTU). An IPv4 packet with DF
// is not fragmented (XfrmOutError). On error, pieces already emitted stay
// sent: the peer's reassembly discards an incomplete datagram.
func (e *Engine) protectPieces(bundle []*SA, pkt []byte, em Emitter) (Verdict, []byte) {
	limit := maxIPv4Len
	if last := lastTunnel(bundle); !last.Config.Dst.Is4() {
		limit = maxIPv6Payload + ipv6Header
	}
	over := 0
	for _, sa := range bundle {
		over += sa.Overhead(limit)
	}
	// Padding varies with the length by less than a cipher block, which
	// Overhead at the limit already counts; 16 more bytes of slack cover
	// a bundle's rounding.
	pieces, err := e.fragmentInner(pkt, limit-over-16)
	if err != nil {
		e.Stats.OutError.Add(1)
		return VerdictDrop, nil
	}
	for i, piece := range pieces {
		out := piece
		for _, sa := range bundle {
			var ok bool
			if out, ok = e.applyOut(sa, out, em); !ok {
				return VerdictDrop, nil
			}
		}
		if i == len(pieces)-1 {
			return VerdictProtected, out
		}
		em.Emit(out)
	}
	return VerdictDrop, nil
}

// lastTunnel returns the outermost tunnel SA of a bundle whose first SA is
// a tunnel: its destination decides the outer header.
func lastTunnel(bundle []*SA) *SA {
	t := bundle[0]
	for _, sa := range bundle {
		if sa.Config.Mode == ModeTunnel {
			t = sa
		}
	}
	return t
}

// fragmentInner splits the IP packet pkt into fragments of at most max
// bytes (RFC 791 §3.2, RFC 8200 §4.5). The pieces are scratch copies on
// the heap: this is the rare path of packets near 64 KiB.
func (e *Engine) fragmentInner(pkt []byte, max int) ([][]byte, error) {
	l, err := ParseIPLayout(pkt)
	if err != nil {
		return nil, err
	}
	pkt = pkt[:l.End]
	var pieces [][]byte
	if l.Version == 4 {
		if pkt[6]&0x40 != 0 {
			return nil, errDontFragment
		}
		ihl := l.InsertOff
		chunk := (max - ihl) &^ 7
		if chunk <= 0 {
			return nil, errDontFragment
		}
		fw := binary.BigEndian.Uint16(pkt[6:8])
		origOff, origMF := int(fw&0x1fff)*8, fw&0x2000 != 0
		payload := pkt[ihl:]
		for off := 0; off < len(payload); off += chunk {
			end := min(off+chunk, len(payload))
			b := make([]byte, ihl+end-off)
			copy(b, pkt[:ihl])
			copy(b[ihl:], payload[off:end])
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
	if l.Fragment || l.FragOff >= 0 {
		// Already a fragment (or an atomic one): no second Fragment
		// header.
		return nil, errDontFragment
	}
	hlen, nhOff := l.InsertOff, l.NextHdrOff
	chunk := (max - hlen - 8) &^ 7
	if chunk <= 0 {
		return nil, errDontFragment
	}
	id := e.ipID.Add(1)
	nh := pkt[nhOff]
	payload := pkt[hlen:]
	for off := 0; off < len(payload); off += chunk {
		end := min(off+chunk, len(payload))
		b := make([]byte, hlen+8+end-off)
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

// errDontFragment reports a packet fragmentInner may not or cannot split.
var errDontFragment = errors.New("xfrm: packet may not be fragmented")
