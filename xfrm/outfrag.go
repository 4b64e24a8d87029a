package xfrm

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
	pieces, err := Fragment(pkt, limit-over-16, e.ipID.Add(1), HeapAllocator{})
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
