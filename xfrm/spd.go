package xfrm

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// ErrInvalid is Linux's EINVAL: the request itself is wrong (a selector
// mixing families, an empty port range, an index of the wrong direction).
// The SPD wraps it, and sad.go's ErrExist and ErrNotFound, with details;
// test with errors.Is.
var ErrInvalid = errors.New("xfrm: invalid argument")

const numDirs = 3

// SPD is the security policy database (RFC 4301 §4.4.1).
//
// Lookup is a tuple-space search: policies of one direction are grouped by
// the tuple (address family, source prefix length, destination prefix
// length); each tuple hashes the masked addresses to the policies sharing
// them, sorted by (Priority, insertion). A lookup probes each tuple once, so
// its cost follows the number of distinct prefix-length pairs, not the
// number of policies. A flow cache in front answers repeated flows without a
// lock.
//
// Stored policies are immutable: the SPD copies what it is given, and
// policies returned by Get, Lookup and Walk must not be modified (Update
// replaces). All methods are safe for concurrent use.
type SPD struct {
	mu    sync.RWMutex // writers exclusive; table readers shared
	dirs  [numDirs]dirTable
	byID  map[uint32]*Policy
	bySel map[selKey]*Policy // the policy's identity: duplicate detection (EEXIST), Update, Delete
	idx   uint32             // index generator: IDs are idx<<3 | dir
	seq   uint64             // insertion counter for the tie-break

	// reqids counts the templates of stored policies per reqid, and
	// reqid is the last one genReqID handed out: unique templates
	// without a reqid get one nobody uses (reqid.go).
	reqids map[uint32]int
	reqid  uint32

	gen   atomic.Uint64 // bumped on every change; cache entries of older generations are stale
	cache flowCache
}

// selKey identifies a policy the way Linux does (xfrm_policy_insert_list
// compares type, if_id, selector, mark and security context; ipsecstack
// has only the selector, plus the direction that picks the table). The
// priority is not part of it: one selector has one policy per direction,
// whatever its priority.
type selKey struct {
	dir Dir
	sel Selector
}

// NewSPD returns an empty SPD.
func NewSPD() *SPD {
	return &SPD{
		byID:   make(map[uint32]*Policy),
		bySel:  make(map[selKey]*Policy),
		reqids: make(map[uint32]int),
	}
}

// Add inserts a copy of p and returns its ID. A zero p.ID is assigned as
// Linux does, (counter << 3) | dir; a non-zero one must carry p.Dir in its
// low three bits and be unused. A policy with the same Dir and Selector
// already present, whatever its priority, is an error wrapping ErrExist
// (SPDADD's EEXIST). A template of level unique without a ReqID gets one
// of its own (see MaxManualReqID). The SPD never retains or modifies p
// itself.
func (s *SPD) Add(p *Policy) (uint32, error) { return s.insert(p, false) }

// Update replaces the policy with p's Dir and Selector by a copy of p,
// priority included, or adds it when there is none (SPDUPDATE). The
// replacement keeps the old ID unless p.ID names another. With the same
// priority it keeps the old policy's place in the insertion-order
// tie-break; with another it is re-sorted behind the policies already at
// its new priority, as Linux's xfrm_policy_insert_list places it. A unique
// template without a ReqID keeps the one the SPD gave the old policy's
// template at that position (same protocol and mode), so the SAs made for
// it stay bound; otherwise it gets a new one.
func (s *SPD) Update(p *Policy) (uint32, error) { return s.insert(p, true) }

func (s *SPD) insert(in *Policy, update bool) (uint32, error) {
	if in == nil {
		return 0, fmt.Errorf("%w: nil policy", ErrInvalid)
	}
	if in.Dir >= numDirs {
		return 0, fmt.Errorf("%w: policy direction %v", ErrInvalid, in.Dir)
	}
	if err := in.Sel.Validate(); err != nil {
		return 0, err
	}
	if in.ID != 0 && in.ID&7 != uint32(in.Dir) {
		return 0, fmt.Errorf("%w: policy index %d is not of direction %v", ErrInvalid, in.ID, in.Dir)
	}
	np := &Policy{
		ID:        in.ID,
		Dir:       in.Dir,
		Sel:       in.Sel.canonical(),
		Priority:  in.Priority,
		Action:    in.Action,
		Templates: slices.Clone(in.Templates),
	}
	key := selKey{dir: np.Dir, sel: np.Sel}

	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.bySel[key]
	if old != nil && !update {
		return 0, fmt.Errorf("%w: policy %v dir %v (index %d, priority %d)", ErrExist, np.Sel, np.Dir, old.ID, old.Priority)
	}
	if np.ID != 0 {
		if q := s.byID[np.ID]; q != nil && q != old {
			return 0, fmt.Errorf("%w: policy index %d", ErrExist, np.ID)
		}
	}
	s.assignReqIDs(np, old)
	if old != nil {
		s.countReqIDs(old, -1)
	}
	s.countReqIDs(np, 1)
	switch {
	case old != nil && old.Priority == np.Priority:
		if np.ID == 0 {
			np.ID = old.ID
		}
		np.seq = old.seq
		s.dirs[np.Dir].replace(old, np)
		delete(s.byID, old.ID)
	case old != nil:
		// A new priority moves the policy: out of its bucket slot and
		// its tuple's priority set, in behind its new equals.
		if np.ID == 0 {
			np.ID = old.ID
		}
		s.dirs[np.Dir].remove(old)
		delete(s.byID, old.ID)
		s.seq++
		np.seq = s.seq
		s.dirs[np.Dir].insert(np)
	default:
		if np.ID == 0 {
			np.ID = s.newID(np.Dir)
		}
		s.seq++
		np.seq = s.seq
		s.dirs[np.Dir].insert(np)
	}
	s.byID[np.ID] = np
	s.bySel[key] = np
	s.gen.Add(1)
	return np.ID, nil
}

// newID returns an unused index of Linux's form (counter << 3) | dir.
func (s *SPD) newID(dir Dir) uint32 {
	for {
		s.idx++
		id := s.idx<<3 | uint32(dir)
		if s.idx<<3 == 0 { // the counter wrapped its 29 bits
			continue
		}
		if _, used := s.byID[id]; !used {
			return id
		}
	}
}

// Delete removes the policy of direction dir whose selector equals sel (as
// canonicalized by Add: masked prefixes, ANY ranges) and returns it. The
// priority plays no part, as in PF_KEY's SPDDELETE (Linux's
// xfrm_policy_bysel_ctx): a selector has one policy per direction.
// Missing: an error wrapping ErrNotFound.
func (s *SPD) Delete(dir Dir, sel Selector) (*Policy, error) {
	sel = sel.canonical()
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.bySel[selKey{dir: dir, sel: sel}]; p != nil {
		s.removeLocked(p)
		return p, nil
	}
	return nil, fmt.Errorf("%w: policy %v dir %v", ErrNotFound, sel, dir)
}

// DeleteByID removes the policy with index id and returns it, or an error
// wrapping ErrNotFound.
func (s *SPD) DeleteByID(id uint32) (*Policy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.byID[id]
	if p == nil {
		return nil, fmt.Errorf("%w: policy index %d", ErrNotFound, id)
	}
	s.removeLocked(p)
	return p, nil
}

func (s *SPD) removeLocked(p *Policy) {
	s.dirs[p.Dir].remove(p)
	delete(s.byID, p.ID)
	delete(s.bySel, selKey{dir: p.Dir, sel: p.Sel})
	s.countReqIDs(p, -1)
	s.gen.Add(1)
}

// Get returns the policy with index id, or nil.
func (s *SPD) Get(id uint32) *Policy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byID[id]
}

// Flush removes every policy and returns how many there were.
func (s *SPD) Flush() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.byID)
	s.dirs = [numDirs]dirTable{}
	s.byID = make(map[uint32]*Policy)
	s.bySel = make(map[selKey]*Policy)
	s.reqids = make(map[uint32]int)
	s.gen.Add(1)
	s.cache.clear() // let the flushed policies be collected
	return n
}

// Len returns the number of policies.
func (s *SPD) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byID)
}

// Walk calls fn for each policy in (Dir, Priority, insertion) order until
// fn returns false. It iterates over a snapshot taken under the lock, so fn
// may call any SPD method, Delete included.
func (s *SPD) Walk(fn func(*Policy) bool) {
	s.mu.RLock()
	ps := make([]*Policy, 0, len(s.byID))
	for _, p := range s.byID {
		ps = append(ps, p)
	}
	s.mu.RUnlock()
	slices.SortFunc(ps, func(a, b *Policy) int {
		if c := cmp.Compare(a.Dir, b.Dir); c != 0 {
			return c
		}
		return comparePolicies(a, b)
	})
	for _, p := range ps {
		if !fn(p) {
			return
		}
	}
}

// Lookup returns the policy of direction dir that matches f with the lowest
// Priority, the oldest of equals, or nil when none matches. Repeated flows
// are answered from the flow cache without locking or allocating.
func (s *SPD) Lookup(dir Dir, f *Flow) *Policy {
	if dir >= numDirs {
		return nil
	}
	// The generation is read before the tables, so a change racing with
	// this lookup leaves a stale cache entry, never a wrong one.
	gen := s.gen.Load()
	h := hashFlow(dir, f)
	if e := s.cache.get(h, dir, f, gen); e != nil {
		return e.pol
	}
	p := s.lookupUncached(dir, f)
	s.cache.put(h, dir, f, gen, p)
	return p
}

// outLookup is an outbound SPD lookup with what the output path needs to
// cache the SA bundle it resolves (see protect).
type outLookup struct {
	spd    bool // the policy came from the SPD (not a socket's): cacheable
	h, gen uint64
	bundle []*SA // cached for this flow and policy, nil if none yet
}

// lookupOut is Lookup(DirOut, f) that also returns the cached bundle.
func (s *SPD) lookupOut(f *Flow, o *outLookup) *Policy {
	o.spd = true
	o.gen = s.gen.Load()
	o.h = hashFlow(DirOut, f)
	if e := s.cache.get(o.h, DirOut, f, o.gen); e != nil {
		o.bundle = e.bundle
		return e.pol
	}
	p := s.lookupUncached(DirOut, f)
	s.cache.put(o.h, DirOut, f, o.gen, p)
	return p
}

// lookupUncached searches the tables, bypassing the flow cache.
func (s *SPD) lookupUncached(dir Dir, f *Flow) *Policy {
	s.mu.RLock()
	p := s.dirs[dir].lookup(f)
	s.mu.RUnlock()
	return p
}

// Invalidate drops every cached lookup. The SPD calls it on each change;
// the SAD must call it on any SA change, since callers may cache bundles
// keyed by Generation.
func (s *SPD) Invalidate() { s.gen.Add(1) }

// Generation returns a counter that changes whenever a cached lookup, or
// anything derived from one (an SA bundle), may have become stale.
func (s *SPD) Generation() uint64 { return s.gen.Load() }

// comparePolicies orders by Priority, then insertion: the order Lookup
// prefers and buckets are sorted in. seq is unique, so no two policies tie.
func comparePolicies(a, b *Policy) int {
	if c := cmp.Compare(a.Priority, b.Priority); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// tupleMask is a tuple of the tuple-space search. Prefix lengths are -1 for
// ANY; fam is 4 or 6, or 0 when both are ANY.
type tupleMask struct {
	fam          uint8
	sbits, dbits int16
}

// addrKey holds a masked source and destination address, big-endian halves
// of the 16-byte form (IPv4 as ::ffff:a.b.c.d; the tuple's family keeps the
// two apart).
type addrKey struct{ sh, sl, dh, dl uint64 }

func maskOf(sel Selector) tupleMask {
	m := tupleMask{fam: uint8(sel.Family()), sbits: -1, dbits: -1}
	if sel.Src.IsValid() {
		m.sbits = int16(sel.Src.Bits())
	}
	if sel.Dst.IsValid() {
		m.dbits = int16(sel.Dst.Bits())
	}
	return m
}

// maskAddr keeps the top bits of a's fam-relative address.
func maskAddr(a netip.Addr, bits int, fam uint8) (hi, lo uint64) {
	b := a.As16()
	hi, lo = binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	if fam == 4 {
		bits += 96
	}
	if bits < 64 {
		return hi &^ (^uint64(0) >> bits), 0
	}
	return hi, lo &^ (^uint64(0) >> (bits - 64))
}

func (m tupleMask) familyOK(a netip.Addr) bool {
	if m.fam == 4 {
		return a.Is4()
	}
	return a.Is6()
}

// flowKey returns the hash key the flow's addresses have in this tuple, or
// false when an address is of the wrong family and nothing here can match.
func (m tupleMask) flowKey(src, dst netip.Addr) (k addrKey, ok bool) {
	if m.sbits >= 0 {
		if !m.familyOK(src) {
			return k, false
		}
		k.sh, k.sl = maskAddr(src, int(m.sbits), m.fam)
	}
	if m.dbits >= 0 {
		if !m.familyOK(dst) {
			return k, false
		}
		k.dh, k.dl = maskAddr(dst, int(m.dbits), m.fam)
	}
	return k, true
}

// selKey returns the hash key of a selector of this tuple.
func (m tupleMask) selKey(sel Selector) addrKey {
	k, _ := m.flowKey(sel.Src.Addr(), sel.Dst.Addr())
	return k
}

// tuple holds the policies of one tupleMask.
type tuple struct {
	mask    tupleMask
	buckets map[addrKey][]*Policy // each sorted by comparePolicies
	n       int
	minPrio uint32 // lowest Priority in the tuple: lets Lookup stop early
	prios   prioSet
}

// dirTable is the tuple space of one direction.
type dirTable struct {
	tuples []*tuple // sorted by minPrio
	byMask map[tupleMask]*tuple
}

// lookup visits tuples in order of their best priority and stops once no
// remaining tuple can beat the best match so far.
func (t *dirTable) lookup(f *Flow) *Policy {
	var best *Policy
	for _, tp := range t.tuples {
		if best != nil && tp.minPrio > best.Priority {
			break
		}
		k, ok := tp.mask.flowKey(f.Src, f.Dst)
		if !ok {
			continue
		}
		for _, p := range tp.buckets[k] {
			if best != nil && comparePolicies(p, best) > 0 {
				break
			}
			if p.Sel.matchL4(f) {
				best = p
				break
			}
		}
	}
	return best
}

func (t *dirTable) insert(p *Policy) {
	m := maskOf(p.Sel)
	if t.byMask == nil {
		t.byMask = make(map[tupleMask]*tuple)
	}
	tp := t.byMask[m]
	created := tp == nil
	if created {
		tp = &tuple{mask: m, buckets: make(map[addrKey][]*Policy)}
		t.byMask[m] = tp
		t.tuples = append(t.tuples, tp)
	}
	k := m.selKey(p.Sel)
	b := tp.buckets[k]
	i, _ := slices.BinarySearchFunc(b, p, comparePolicies)
	tp.buckets[k] = slices.Insert(b, i, p)
	tp.n++
	tp.prios.add(p.Priority)
	t.updateMin(tp, created)
}

// replace swaps old for p, which has the same selector, priority and seq and
// so the same slot.
func (t *dirTable) replace(old, p *Policy) {
	tp := t.byMask[maskOf(old.Sel)]
	b := tp.buckets[tp.mask.selKey(old.Sel)]
	i, _ := slices.BinarySearchFunc(b, old, comparePolicies)
	b[i] = p
}

func (t *dirTable) remove(p *Policy) {
	m := maskOf(p.Sel)
	tp := t.byMask[m]
	k := m.selKey(p.Sel)
	b := tp.buckets[k]
	i, _ := slices.BinarySearchFunc(b, p, comparePolicies)
	b = slices.Delete(b, i, i+1)
	if len(b) == 0 {
		delete(tp.buckets, k)
	} else {
		tp.buckets[k] = b
	}
	tp.n--
	if tp.n == 0 {
		delete(t.byMask, m)
		t.tuples = slices.DeleteFunc(t.tuples, func(x *tuple) bool { return x == tp })
		return
	}
	tp.prios.remove(p.Priority)
	t.updateMin(tp, false)
}

// updateMin refreshes tp.minPrio and keeps the tuples sorted by it. There
// are few tuples, and the sort runs only when a minimum moved or a tuple
// was appended.
func (t *dirTable) updateMin(tp *tuple, created bool) {
	m := tp.prios.min()
	if m == tp.minPrio && !created {
		return
	}
	tp.minPrio = m
	slices.SortStableFunc(t.tuples, func(a, b *tuple) int { return cmp.Compare(a.minPrio, b.minPrio) })
}

// prioSet is a multiset of priorities with O(log n) minimum upkeep: a count
// per priority and a min-heap of priorities with lazy deletion (entries
// whose count dropped to zero are popped when they reach the top).
type prioSet struct {
	counts map[uint32]int
	heap   []uint32
}

func (ps *prioSet) add(p uint32) {
	if ps.counts == nil {
		ps.counts = make(map[uint32]int)
	}
	ps.counts[p]++
	if ps.counts[p] == 1 {
		ps.heap = append(ps.heap, p)
		for i := len(ps.heap) - 1; i > 0; {
			j := (i - 1) / 2
			if ps.heap[j] <= ps.heap[i] {
				break
			}
			ps.heap[i], ps.heap[j] = ps.heap[j], ps.heap[i]
			i = j
		}
	}
}

func (ps *prioSet) remove(p uint32) {
	if c := ps.counts[p]; c > 1 {
		ps.counts[p] = c - 1
		return
	}
	delete(ps.counts, p)
	for len(ps.heap) > 0 && ps.counts[ps.heap[0]] == 0 {
		ps.pop()
	}
	if len(ps.heap) > 2*len(ps.counts)+16 {
		// Too many stale entries: rebuild. A sorted slice is a heap.
		ps.heap = ps.heap[:0]
		for q := range ps.counts {
			ps.heap = append(ps.heap, q)
		}
		slices.Sort(ps.heap)
	}
}

func (ps *prioSet) pop() {
	n := len(ps.heap) - 1
	ps.heap[0] = ps.heap[n]
	ps.heap = ps.heap[:n]
	for i := 0; ; {
		l, small := 2*i+1, i
		if l < n && ps.heap[l] < ps.heap[small] {
			small = l
		}
		if l+1 < n && ps.heap[l+1] < ps.heap[small] {
			small = l + 1
		}
		if small == i {
			return
		}
		ps.heap[i], ps.heap[small] = ps.heap[small], ps.heap[i]
		i = small
	}
}

// min returns the lowest priority; the set must not be empty.
func (ps *prioSet) min() uint32 { return ps.heap[0] }
