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

// inputDir is the policy direction that decides an inbound packet to dst:
// DirFwd when the host forwards it, else DirIn.
func (e *Engine) inputDir(dst netip.Addr) Dir {
	if fn := e.local.Load(); fn != nil && !(*fn)(dst) {
		return DirFwd
	}
	return DirIn
}
