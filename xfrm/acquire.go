package xfrm

import (
	"container/list"
	"net/netip"
	"sync/atomic"
	"time"
)

// Bounds of the pending-ACQUIRE table. maxAcquires bounds its memory (a
// larval SA and two list links each, a few hundred bytes: about 1.5 MiB in
// all); maxAcquiresPerPolicy is one policy's share.
const (
	maxAcquires          = 4096
	maxAcquiresPerPolicy = maxAcquires / 4
)

// acqKey identifies what an ACQUIRE asks a key manager for: an SA of this
// protocol and mode between these addresses (the template's tunnel
// endpoints, else the packet's), with this reqid.
type acqKey struct {
	proto    Proto
	mode     Mode
	src, dst netip.Addr
	reqID    uint32
}

// acqEntry is one pending ACQUIRE: its larval SA, the policy whose quota
// it counts against, and its places in that policy's and the table's
// oldest-first lists.
type acqEntry struct {
	key        acqKey
	sa         *SA
	pol        *Policy
	byPol, all *list.Element
}

// AcquireStats count what the bounds of the pending-ACQUIRE table did.
type AcquireStats struct {
	// Evicted counts pending ACQUIREs dropped, oldest first, to make room
	// for a new flow's: the evicted flow asks again with its next packet.
	Evicted atomic.Uint64
}

// acquireTable holds the pending ACQUIREs. Guarded by Engine.acqMu.
//
// Fairness: a host is made to send to addresses an attacker picks (replies
// and ICMP errors to spoofed sources, a forwarder relaying to them, a
// client resolving names the attacker controls). In transport mode every
// such destination is a new ACQUIRE (in tunnel mode they share the
// template's endpoints, one ACQUIRE). With one global table that refuses
// when full, 4,096 spoofed destinations left every other flow without an
// ACQUIRE, and so without an SA, for the 30 s the entries live. Here
// nothing is refused: each policy holds at most maxAcquiresPerPolicy
// entries, and when a policy (or the whole table) is full its oldest
// entry makes room. A flood under one policy recycles that policy's own
// slots and cannot touch another policy's; a real flow under the flooded
// policy still gets its ACQUIRE at once (and, if the flood evicts its
// entry before the key manager answers, another with its next packet,
// as after Linux's XFRM_ACQ_EXPIRES). Memory stays bounded by maxAcquires.
// The price of a flood is ACQUIRE messages at its packet rate, which is
// what Linux sends too; the PF_KEY sockets bound their queues.
type acquireTable struct {
	byKey map[acqKey]*acqEntry
	byPol map[*Policy]*list.List // of *acqEntry, oldest first
	all   list.List              // of *acqEntry, oldest first
}

func (t *acquireTable) init() {
	t.byKey = make(map[acqKey]*acqEntry)
	t.byPol = make(map[*Policy]*list.List)
	t.all.Init()
}

func (t *acquireTable) len() int { return len(t.byKey) }

// add links a new entry as the newest of its policy and of the table.
func (t *acquireTable) add(k acqKey, sa *SA, p *Policy) {
	en := &acqEntry{key: k, sa: sa, pol: p}
	l := t.byPol[p]
	if l == nil {
		l = list.New()
		t.byPol[p] = l
	}
	en.byPol = l.PushBack(en)
	en.all = t.all.PushBack(en)
	t.byKey[k] = en
}

// remove unlinks en.
func (t *acquireTable) remove(en *acqEntry) {
	delete(t.byKey, en.key)
	t.all.Remove(en.all)
	l := t.byPol[en.pol]
	l.Remove(en.byPol)
	if l.Len() == 0 {
		delete(t.byPol, en.pol)
	}
}

// makeRoom evicts, oldest first, until policy p may add one entry; it
// returns how many it evicted.
func (t *acquireTable) makeRoom(p *Policy) int {
	n := 0
	for l := t.byPol[p]; l != nil && l.Len() >= maxAcquiresPerPolicy; n++ {
		t.remove(l.Front().Value.(*acqEntry))
		l = t.byPol[p]
	}
	for ; t.all.Len() >= maxAcquires; n++ {
		t.remove(t.all.Front().Value.(*acqEntry))
	}
	return n
}

// acquire runs when a protect policy finds no SA for template ti. Like
// Linux's xfrm_state_find it creates a larval SA (state "acquire", SPI 0)
// and sends ACQUIRE once; while that larval SA lives (the SAD's larval
// timeout, 30 s as Linux's XFRM_ACQ_EXPIRES) more packets of the flow are
// dropped without asking again. The key manager answers by adding the SA,
// which retires the larval one; if it never does, the larval SA times out
// and the next packet asks again. See acquireTable for the bounds.
func (e *Engine) acquire(p *Policy, ti int, f *Flow) {
	t := &p.Templates[ti]
	k := acqKey{t.Proto, t.Mode, f.Src, f.Dst, t.ReqID}
	if t.Mode == ModeTunnel {
		k.src, k.dst = t.Src, t.Dst
	}
	now := time.Now()
	e.acqMu.Lock()
	if en := e.acq.byKey[k]; en != nil {
		if now.Sub(en.sa.added) < e.SAD.LarvalTimeout() {
			e.acqMu.Unlock()
			return
		}
		e.acq.remove(en)
	}
	sa, err := NewLarvalSA(k.proto, k.src, k.dst, 0, k.mode, k.reqID)
	if err != nil {
		e.acqMu.Unlock()
		e.Stats.AcquireError.Add(1)
		return
	}
	sa.Config.Sel = Selector{Src: netip.PrefixFrom(f.Src, f.Src.BitLen()), Dst: netip.PrefixFrom(f.Dst, f.Dst.BitLen()), Proto: f.Proto}
	if n := e.acq.makeRoom(p); n > 0 {
		e.AcquireStats.Evicted.Add(uint64(n))
	}
	e.acqSeq++
	sa.acqSeq = e.acqSeq
	e.acq.add(k, sa, p)
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
	for k, en := range e.acq.byKey {
		if k.proto == c.Proto && k.mode == c.Mode && k.src == c.Src && k.dst == c.Dst && (k.reqID == 0 || k.reqID == c.ReqID) {
			e.acq.remove(en)
		}
	}
}

// expireAcquires drops ACQUIRE states older than the larval timeout. The
// table lists them oldest first, so it stops at the first young one.
func (e *Engine) expireAcquires(now time.Time) {
	e.acqMu.Lock()
	defer e.acqMu.Unlock()
	for el := e.acq.all.Front(); el != nil; el = e.acq.all.Front() {
		en := el.Value.(*acqEntry)
		if now.Sub(en.sa.added) < e.SAD.LarvalTimeout() {
			return
		}
		e.acq.remove(en)
	}
}

// Acquires returns the larval SAs of pending ACQUIREs (Linux shows them in
// the SAD in state "acquire").
func (e *Engine) Acquires() []*SA {
	e.acqMu.Lock()
	defer e.acqMu.Unlock()
	out := make([]*SA, 0, e.acq.len())
	for _, en := range e.acq.byKey {
		out = append(out, en.sa)
	}
	return out
}

// AcquireSeq returns the sequence number of the ACQUIRE that created a
// larval SA (0 for other SAs); a key manager's GETSPI may name it.
func (sa *SA) AcquireSeq() uint32 { return sa.acqSeq }
