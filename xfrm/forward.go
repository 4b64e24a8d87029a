package xfrm

import "net/netip"

// SetLocal makes the engine a security gateway's: isLocal reports whether
// a packet to an address is for this host (its own addresses, multicast,
// broadcast). Decapsulated packets to other addresses, which the host
// forwards, are then checked against the fwd policies rather than the in
// policies (RFC 4301 §5.2; Linux checks XFRM_POLICY_FWD in ip_forward).
// nil, the default, takes every packet as this host's. isLocal runs on
// the packet path: it must not block. An engine shared by several stacks
// uses the last one's.
func (e *Engine) SetLocal(isLocal func(netip.Addr) bool) {
	if isLocal == nil {
		e.local.Store(nil)
		return
	}
	e.local.Store(&isLocal)
}

// ForwardsReassembled reports whether a gateway reassembles the fragments
// of the IP packet pkt that it forwards, before the fwd check, rather than
// forwarding each: IPv4 yes, IPv6 no (see finishInput). The stack glue
// follows the same rule for fragments that arrive in clear.
func ForwardsReassembled(pkt []byte) bool { return len(pkt) > 0 && pkt[0]>>4 == 4 }

// inputDir is the policy direction that decides an inbound packet to dst:
// DirFwd when the host forwards it, else DirIn.
func (e *Engine) inputDir(dst netip.Addr) Dir {
	if fn := e.local.Load(); fn != nil && !(*fn)(dst) {
		return DirFwd
	}
	return DirIn
}

// OutMTU returns the largest IP packet of pkt's flow that leaves in one
// piece once the outbound SPD has applied its bundle: the path MTU of the
// outermost tunnel's addresses (pathMTU answers it) less what the bundle's
// SAs add at that size, which is Linux's xfrm_state_mtu over the bundle
// (ESP's padding makes the answer depend on the cipher's block). Without a
// protect policy it is pathMTU of pkt's own addresses. A template without
// an SA counts nothing: such a packet is dropped anyway. It returns 0 when
// pkt cannot be parsed. It walks the SPD (through the flow cache) and the
// SAD: call it for a packet that did not fit, not for every packet.
func (e *Engine) OutMTU(pkt []byte, pathMTU func(src, dst netip.Addr) int) int {
	var f Flow
	if _, err := ParseFlow(pkt, &f); err != nil {
		return 0
	}
	p := e.lookupOut(&f, nil)
	if p == nil || p.Action != ActionProtect || len(p.Templates) > maxBundle {
		return pathMTU(f.Src, f.Dst)
	}
	var bundle [maxBundle]*SA
	n, src, dst, _ := e.resolve(p, &f, &bundle, true)
	defer func() {
		for _, sa := range bundle[:n] {
			sa.put()
		}
	}()
	mtu := pathMTU(src, dst)
	fits := func(size int) bool {
		for _, sa := range bundle[:n] {
			size += sa.Overhead(size)
		}
		return size <= mtu
	}
	// Start above the answer (the overhead at mtu less the most padding
	// can vary, a block per SA) and step down: fits is monotonic, and
	// this takes at most a few blocks' worth of steps.
	size := mtu
	for _, sa := range bundle[:n] {
		size -= sa.Overhead(mtu)
	}
	size = min(mtu, size+n*32)
	for size > 0 && !fits(size) {
		size--
	}
	return max(size, 0)
}
