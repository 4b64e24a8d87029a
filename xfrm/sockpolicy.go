package xfrm

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// SocketKey identifies one socket by what its packets carry: the transport
// protocol and the local and remote address and port, once bound and
// connected. A zero Remote matches any remote (a bound, unconnected UDP
// socket); an exact key is preferred.
type SocketKey struct {
	Proto  uint8
	Local  netip.AddrPort
	Remote netip.AddrPort
}

// sockTable holds per-socket policies (the IP_IPSEC_POLICY idea). The
// output path and the inbound check consult it before the SPD; when it is
// empty the check is one atomic load.
type sockTable struct {
	n  atomic.Int32
	mu sync.RWMutex
	m  map[sockKey]*Policy
}

// sockKey is a socket and a direction: a socket may have an outbound and
// an inbound policy, as with Linux's IP_IPSEC_POLICY per direction.
type sockKey struct {
	dir Dir
	SocketKey
}

// SetSocketPolicy attaches p to the socket k for p.Dir: with DirOut the
// socket's packets follow p (bypass, discard, or protect with p's
// templates) instead of whatever the SPD says; with DirIn the packets
// arriving for the socket are checked against p instead of the SPD's
// inbound policy. The selector of p is ignored. The engine keeps its own
// copy.
func (e *Engine) SetSocketPolicy(k SocketKey, p *Policy) error {
	if p == nil || (p.Dir != DirOut && p.Dir != DirIn) {
		return fmt.Errorf("%w: a socket policy must be an inbound or outbound policy", ErrInvalid)
	}
	if !k.Local.IsValid() {
		return fmt.Errorf("%w: socket policy for an unbound socket", ErrInvalid)
	}
	if p.Action == ActionProtect && (len(p.Templates) == 0 || len(p.Templates) > maxBundle) {
		return fmt.Errorf("%w: socket policy with %d templates", ErrInvalid, len(p.Templates))
	}
	np := &Policy{ID: p.ID, Dir: p.Dir, Priority: p.Priority, Action: p.Action, Templates: slices.Clone(p.Templates)}
	k.Local = netip.AddrPortFrom(k.Local.Addr().Unmap(), k.Local.Port())
	if k.Remote.IsValid() {
		k.Remote = netip.AddrPortFrom(k.Remote.Addr().Unmap(), k.Remote.Port())
	}
	t := &e.sock
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[sockKey]*Policy)
	}
	sk := sockKey{p.Dir, k}
	if _, ok := t.m[sk]; !ok {
		t.n.Add(1)
	}
	t.m[sk] = np
	t.mu.Unlock()
	return nil
}

// ClearSocketPolicy detaches the policies of socket k, both directions.
func (e *Engine) ClearSocketPolicy(k SocketKey) {
	t := &e.sock
	t.mu.Lock()
	for _, d := range []Dir{DirIn, DirOut} {
		if _, ok := t.m[sockKey{d, k}]; ok {
			delete(t.m, sockKey{d, k})
			t.n.Add(-1)
		}
	}
	t.mu.Unlock()
}

// SocketPolicy returns the outbound policy attached to the socket an
// outgoing flow belongs to, or nil.
func (e *Engine) SocketPolicy(f *Flow) *Policy {
	return e.socketPolicy(DirOut, f, netip.AddrPortFrom(f.Src, f.SrcPort), netip.AddrPortFrom(f.Dst, f.DstPort))
}

// socketPolicyIn returns the inbound policy of the socket an arriving
// flow is for, or nil.
func (e *Engine) socketPolicyIn(f *Flow) *Policy {
	return e.socketPolicy(DirIn, f, netip.AddrPortFrom(f.Dst, f.DstPort), netip.AddrPortFrom(f.Src, f.SrcPort))
}

func (e *Engine) socketPolicy(dir Dir, f *Flow, local, remote netip.AddrPort) *Policy {
	t := &e.sock
	if t.n.Load() == 0 || f.Opaque {
		return nil
	}
	k := sockKey{dir, SocketKey{Proto: f.Proto, Local: local, Remote: remote}}
	t.mu.RLock()
	p := t.m[k]
	if p == nil {
		k.Remote = netip.AddrPort{}
		p = t.m[k]
	}
	t.mu.RUnlock()
	return p
}

// lookupOut is the output path's policy lookup: a socket policy first,
// then the SPD, whose flow cache may also hold the flow's SA bundle (o,
// nil when the caller caches none; left zero for a socket policy, whose
// bundle is not cached).
func (e *Engine) lookupOut(f *Flow, o *outLookup) *Policy {
	if p := e.SocketPolicy(f); p != nil {
		return p
	}
	if o == nil {
		return e.SPD.Lookup(DirOut, f)
	}
	return e.SPD.lookupOut(f, o)
}
