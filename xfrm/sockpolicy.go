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
// output path checks it before the SPD; when it is empty the check is one
// atomic load.
type sockTable struct {
	n  atomic.Int32
	mu sync.RWMutex
	m  map[SocketKey]*Policy
}

// SetSocketPolicy attaches p to the socket k for outbound packets: the
// socket's packets follow p (bypass, discard, or protect with p's
// templates) instead of whatever the SPD says. The selector of p is
// ignored; its Dir must be DirOut. The engine keeps its own copy.
func (e *Engine) SetSocketPolicy(k SocketKey, p *Policy) error {
	if p == nil || p.Dir != DirOut {
		return fmt.Errorf("%w: a socket policy must be an outbound policy", ErrInvalid)
	}
	if !k.Local.IsValid() {
		return fmt.Errorf("%w: socket policy for an unbound socket", ErrInvalid)
	}
	if p.Action == ActionProtect && (len(p.Templates) == 0 || len(p.Templates) > maxBundle) {
		return fmt.Errorf("%w: socket policy with %d templates", ErrInvalid, len(p.Templates))
	}
	np := &Policy{ID: p.ID, Dir: DirOut, Priority: p.Priority, Action: p.Action, Templates: slices.Clone(p.Templates)}
	k.Local = netip.AddrPortFrom(k.Local.Addr().Unmap(), k.Local.Port())
	if k.Remote.IsValid() {
		k.Remote = netip.AddrPortFrom(k.Remote.Addr().Unmap(), k.Remote.Port())
	}
	t := &e.sock
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[SocketKey]*Policy)
	}
	if _, ok := t.m[k]; !ok {
		t.n.Add(1)
	}
	t.m[k] = np
	t.mu.Unlock()
	return nil
}

// ClearSocketPolicy detaches the policy of socket k, if any.
func (e *Engine) ClearSocketPolicy(k SocketKey) {
	t := &e.sock
	t.mu.Lock()
	if _, ok := t.m[k]; ok {
		delete(t.m, k)
		t.n.Add(-1)
	}
	t.mu.Unlock()
}

// SocketPolicy returns the policy attached to the socket a flow belongs
// to, or nil.
func (e *Engine) SocketPolicy(f *Flow) *Policy {
	t := &e.sock
	if t.n.Load() == 0 || f.Opaque {
		return nil
	}
	k := SocketKey{Proto: f.Proto, Local: netip.AddrPortFrom(f.Src, f.SrcPort), Remote: netip.AddrPortFrom(f.Dst, f.DstPort)}
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
// then the SPD.
func (e *Engine) lookupOut(f *Flow) *Policy {
	if p := e.SocketPolicy(f); p != nil {
		return p
	}
	return e.SPD.Lookup(DirOut, f)
}
