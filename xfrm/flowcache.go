package xfrm

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
)

// flowCacheBits sizes the SPD flow cache: 2^12 slots (32 KiB of pointers)
// in two-way sets, so two hot flows that hash alike do not evict each other
// on every packet. A miss costs one table search, never a wrong answer.
const flowCacheBits = 12

// flowEntry is one immutable cached lookup result. It is valid while gen
// equals the SPD's generation.
type flowEntry struct {
	flow Flow
	dir  Dir
	gen  uint64
	pol  *Policy // nil: no policy matched
	// bundle, for an outbound protect policy, is what the output path
	// resolved pol's templates to for this flow at gen (Linux caches the
	// bundle, xfrm_dst, with the flow the same way); nil until it has.
	// The SAD bumps the generation on every SA added, updated or
	// removed, so only a state change within an SA can outdate it: the
	// output path checks each SA's state per packet (cachedBundle).
	bundle []*SA
}

// flowCache is a fixed-size, lock-free cache of SPD lookups. Readers load a
// slot's pointer atomically and compare; writers publish a fresh entry, so
// a reader never sees a torn entry and a hit allocates nothing.
type flowCache struct {
	slots [1 << flowCacheBits]atomic.Pointer[flowEntry]
}

// set returns the index of the first of the two slots of h's set.
func set(h uint64) uint64 { return h & (1<<flowCacheBits - 2) }

func (e *flowEntry) is(dir Dir, f *Flow, gen uint64) bool {
	return e != nil && e.gen == gen && e.dir == dir && e.flow == *f
}

// get returns the cached entry for (dir, f) at generation gen, or nil.
func (c *flowCache) get(h uint64, dir Dir, f *Flow, gen uint64) *flowEntry {
	i := set(h)
	if e := c.slots[i].Load(); e.is(dir, f, gen) {
		return e
	}
	if e := c.slots[i+1].Load(); e.is(dir, f, gen) {
		return e
	}
	return nil
}

// put records a result computed at generation gen. gen must have been read
// before the lookup started, so a concurrent change makes the entry stale
// rather than wrong. It fills an empty or stale way first, else evicts the
// way the hash's high bit picks.
func (c *flowCache) put(h uint64, dir Dir, f *Flow, gen uint64, p *Policy) {
	c.store(h, &flowEntry{flow: *f, dir: dir, gen: gen, pol: p})
}

// putBundle records the SA bundle the output path resolved p to for f at
// generation gen (read before the policy lookup), replacing the entry
// without one.
func (c *flowCache) putBundle(h uint64, f *Flow, gen uint64, p *Policy, bundle []*SA) {
	c.store(h, &flowEntry{flow: *f, dir: DirOut, gen: gen, pol: p, bundle: bundle})
}

// store publishes e in the way that holds the same lookup, else in an
// empty or stale way, else in the way the hash's high bit picks.
func (c *flowCache) store(h uint64, e *flowEntry) {
	i := set(h)
	a, b := c.slots[i].Load(), c.slots[i+1].Load()
	switch {
	case a.is(e.dir, &e.flow, e.gen):
	case b.is(e.dir, &e.flow, e.gen):
		i++
	case a != nil && a.gen == e.gen && (b == nil || b.gen != e.gen || h>>63 != 0):
		i++
	}
	c.slots[i].Store(e)
}

// clear drops every entry; used by Flush to release policies for the GC.
func (c *flowCache) clear() {
	for i := range c.slots {
		c.slots[i].Store(nil)
	}
}

// hashFlow mixes the flow's fields with wyhash-style 64x64→128 multiplies:
// a few nanoseconds, no allocation, and every input bit reaches the low
// bits that index the cache.
func hashFlow(dir Dir, f *Flow) uint64 {
	const (
		k0 = 0xa0761d6478bd642f
		k1 = 0xe7037ed1a0b428db
		k2 = 0x8ebc6af09c88c6e3
		k3 = 0x589965cc75374cc3
	)
	s, d := f.Src.As16(), f.Dst.As16()
	rest := uint64(f.Proto) | uint64(f.SrcPort)<<8 | uint64(f.DstPort)<<24 | uint64(dir)<<40
	if f.Opaque {
		rest |= 1 << 48
	}
	if f.Src.Is4() {
		rest |= 1 << 49 // 1.2.3.4 and ::ffff:1.2.3.4 share As16
	}
	if f.Dst.Is4() {
		rest |= 1 << 50
	}
	h := mum(binary.LittleEndian.Uint64(s[:8])^k0, binary.LittleEndian.Uint64(s[8:])^k1)
	h = mum(h^binary.LittleEndian.Uint64(d[:8])^k2, binary.LittleEndian.Uint64(d[8:])^k3)
	return mum(h^rest^k1, k0)
}

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}
