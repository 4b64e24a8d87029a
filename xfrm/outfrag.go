package xfrm

// portPolicyCovers reports whether an outbound protect policy with a port
// (or ICMP type/code) selector other than ANY matches the OPAQUE flow f by
// its addresses and protocol, and would be preferred to found (the policy
// the lookup chose, or nil). Such a policy might cover the datagram f is a
// fragment of; only the ports, which the fragment does not carry, could
// tell (RFC 4301 §7). The output path asks only for OPAQUE flows, which
// locally generated traffic never produces (the stack glue keeps the IP
// layer from fragmenting before IPsec), so the walk over the SPD is off
// the hot path.
func (e *Engine) portPolicyCovers(f *Flow, found *Policy) bool {
	covered := false
	e.SPD.Walk(func(p *Policy) bool {
		if p.Dir != DirOut {
			return p.Dir < DirOut
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
