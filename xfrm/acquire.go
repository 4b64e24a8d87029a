package xfrm

import (
	"net/netip"
	"time"
)

// maxAcquires bounds the ACQUIRE states a flood of new flows can create;
// past it ACQUIRE fails and XfrmAcquireError counts it, as Linux does when
// it cannot allocate the state.
const maxAcquires = 4096

// acqKey identifies what an ACQUIRE asks a key manager for: an SA of this
// protocol and mode between these addresses (the template's tunnel
// endpoints, else the packet's), with this reqid.
type acqKey struct {
	proto    Proto
	mode     Mode
	src, dst netip.Addr
	reqID    uint32
}

// acquire runs when a protect policy finds no SA for template ti. Like
// Linux's xfrm_state_find it creates a larval SA (state "acquire", SPI 0)
// and sends ACQUIRE once; while that larval SA lives (the SAD's larval
// timeout, 30 s as Linux's XFRM_ACQ_EXPIRES) more packets of the flow are
// dropped without asking again. The key manager answers by adding the SA,
// which retires the larval one; if it never does, the larval SA times out
// and the next packet asks again.
func (e *Engine) acquire(p *Policy, ti int, f *Flow) {
	t := &p.Templates[ti]
	k := acqKey{t.Proto, t.Mode, f.Src, f.Dst, t.ReqID}
	if t.Mode == ModeTunnel {
		k.src, k.dst = t.Src, t.Dst
	}
	now := time.Now()
	e.acqMu.Lock()
	if sa := e.acq[k]; sa != nil && now.Sub(sa.added) < e.SAD.LarvalTimeout() {
		e.acqMu.Unlock()
		return
	}
	if len(e.acq) >= maxAcquires {
		e.acqMu.Unlock()
		e.Stats.AcquireError.Add(1)
		return
	}
	sa, err := NewLarvalSA(k.proto, k.src, k.dst, 0, k.mode, k.reqID)
	if err != nil {
		e.acqMu.Unlock()
		e.Stats.AcquireError.Add(1)
		return
	}
	sa.Config.Sel = Selector{Src: netip.PrefixFrom(f.Src, f.Src.BitLen()), Dst: netip.PrefixFrom(f.Dst, f.Dst.BitLen()), Proto: f.Proto}
	e.acqSeq++
	sa.acqSeq = e.acqSeq
	e.acq[k] = sa
	e.acqMu.Unlock()
	if !e.emit(Event{Type: EventAcquire, SA: sa, Policy: p, Template: t, Flow: *f}) {
		// Nobody listens: nothing can answer, but the larval state still
		// keeps the flow from asking on every packet.
		e.Stats.AcquireError.Add(1)
	}
}

// acquireAnswered retires the ACQUIRE state an added SA satisfies.
func (e *Engine) acquireAnswered(sa *SA) {
	c := &sa.Config
	e.acqMu.Lock()
	defer e.acqMu.Unlock()
	for k := range e.acq {
		if k.proto == c.Proto && k.mode == c.Mode && k.src == c.Src && k.dst == c.Dst && (k.reqID == 0 || k.reqID == c.ReqID) {
			delete(e.acq, k)
		}
	}
}

// expireAcquires drops ACQUIRE states older than the larval timeout.
func (e *Engine) expireAcquires(now time.Time) {
	e.acqMu.Lock()
	defer e.acqMu.Unlock()
	for k, sa := range e.acq {
		if now.Sub(sa.added) >= e.SAD.LarvalTimeout() {
			delete(e.acq, k)
		}
	}
}

// Acquires returns the larval SAs of pending ACQUIREs (Linux shows them in
// the SAD in state "acquire").
func (e *Engine) Acquires() []*SA {
	e.acqMu.Lock()
	defer e.acqMu.Unlock()
	out := make([]*SA, 0, len(e.acq))
	for _, sa := range e.acq {
		out = append(out, sa)
	}
	return out
}

// AcquireSeq returns the sequence number of the ACQUIRE that created a
// larval SA (0 for other SAs); a key manager's GETSPI may name it.
func (sa *SA) AcquireSeq() uint32 { return sa.acqSeq }
