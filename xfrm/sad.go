package xfrm

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Sentinel errors of the SAD and SPD, mapped to errnos by the PF_KEY layer.
var (
	ErrExist    = errors.New("already exists")
	ErrNotFound = errors.New("not found")
)

// saKey is the inbound identity of an SA (RFC 4301 §4.1: destination,
// protocol, SPI; multicast SAs are looked up the same way).
type saKey struct {
	dst   netip.Addr
	proto Proto
	spi   uint32
}

// spiKey is an SA's protocol and SPI as one integer, the key of the
// SAD's inbound index (bySPI).
func spiKey(proto Proto, spi uint32) uint64 { return uint64(spi)<<8 | uint64(proto) }

// outKey finds outbound SAs for a template.
type outKey struct {
	src, dst netip.Addr
	proto    Proto
	mode     Mode
}

// SAD is the security association database. Lookups take a read lock on a
// hash map: O(1) in the number of SAs.
type SAD struct {
	mu    sync.RWMutex
	byID  map[saKey]*SA
	byOut map[outKey][]*SA // newest last
	// bySPI holds byID's SAs by protocol and SPI alone (spiKey), for
	// Lookup, which every inbound packet asks: a map hashes an integer
	// key several times faster than saKey, whose netip.Addr goes
	// through the generic hash (BenchmarkSADLookup: 32 ns/op by byID,
	// 10 by bySPI). An SPI is chosen per destination, so a few SAs may
	// share one: the list holds them all, and Lookup compares the
	// destination, up to maxSPIShare of them (see there).
	bySPI map[uint64][]*SA

	// changed is called after every change, outside the lock (the engine
	// invalidates the flow cache with it).
	changed func()
	// expired is called when an SA's soft or hard lifetime passes.
	expired func(sa *SA, hard bool)
	// inserted is called after an SA is added or updated, outside the
	// lock (the engine retires the ACQUIRE state it answers).
	inserted func(sa *SA)

	// encapPorts counts the encapsulated SAs by (destination, DPort):
	// the (address, UDP port) pairs on which we receive ESP-in-UDP
	// (IsEncapPort). keepalives counts the SAs with a keepalive interval.
	encapPorts map[encapKey]int
	encapSAs   atomic.Int64 // SAs in encapPorts, read without the lock
	keepalives atomic.Int64

	// larvalTimeout is the life of larval SAs in nanoseconds (larval.go).
	larvalTimeout atomic.Int64
}

// NewSAD returns an empty SAD.
func NewSAD() *SAD {
	return &SAD{byID: make(map[saKey]*SA), byOut: make(map[outKey][]*SA), bySPI: make(map[uint64][]*SA), encapPorts: make(map[encapKey]int)}
}

// Add inserts sa; an SA with the same (dst, proto, SPI) is ErrExist.
func (d *SAD) Add(sa *SA) error {
	c := &sa.Config
	k := saKey{c.Dst, c.Proto, c.SPI}
	d.mu.Lock()
	if d.byID[k] != nil {
		d.mu.Unlock()
		return fmt.Errorf("SA %s spi 0x%x dst %v: %w", c.Proto, c.SPI, c.Dst, ErrExist)
	}
	d.insertLocked(sa, nil)
	return nil
}

// Update is PF_KEY's SADB_UPDATE (RFC 2367 §3.1.2; Linux's
// xfrm_state_update) with sa, an SA built from the message, and returns
// the SA that is in the SAD afterwards:
//
//   - When the SA with sa's (dst, proto, SPI) is larval (GETSPI reserved
//     it), sa replaces it: the key manager completes it.
//   - When it is mature or dying, it is updated in place and returned: only
//     its lifetimes change (SA.SetLifetimes), and the UDP encapsulation's
//     ports (SA.EncapPorts; the type may not change), as Linux copies
//     x->encap. Its keys, sequence counter,
//     replay window and lifetime counters stay: replacing the SA would
//     restart the outbound counter (and, with the same keys, the nonces),
//     accept captured packets again and forget what the SA has used. An
//     UPDATE that would change anything else is refused with ErrBadSA.
//     sa itself is discarded (its keys wiped).
//   - When there is none, the error is ErrNotFound.
func (d *SAD) Update(sa *SA) (*SA, error) {
	c := &sa.Config
	k := saKey{c.Dst, c.Proto, c.SPI}
	d.mu.Lock()
	old := d.byID[k]
	switch {
	case old == nil:
		d.mu.Unlock()
		return nil, fmt.Errorf("SA %s spi 0x%x dst %v: %w", c.Proto, c.SPI, c.Dst, ErrNotFound)
	case old.State() == StateLarval:
		d.insertLocked(sa, old)
		return sa, nil
	}
	d.mu.Unlock()
	if err := sameIdentity(old, sa); err != nil {
		return nil, err
	}
	old.SetLifetimes(c.Soft, c.Hard)
	if old.encapsulated() {
		d.mu.Lock()
		if d.byID[k] == old { // not deleted meanwhile
			d.linkEncapLocked(old, -1)
			old.updateEncap(sa)
			d.linkEncapLocked(old, 1)
		}
		d.mu.Unlock()
	}
	DiscardSA(sa)
	d.notify()
	return old, nil
}

// insertLocked links sa, replacing old (nil: none), and unlocks d.
func (d *SAD) insertLocked(sa, old *SA) {
	c := &sa.Config
	k := saKey{c.Dst, c.Proto, c.SPI}
	if old != nil {
		d.unlinkLocked(old)
	}
	sa.onExpire = d.onExpire
	d.byID[k] = sa
	sk := spiKey(c.Proto, c.SPI)
	d.bySPI[sk] = append(d.bySPI[sk], sa)
	ok := outKey{c.Src, c.Dst, c.Proto, c.Mode}
	d.byOut[ok] = append(d.byOut[ok], sa)
	d.linkEncapLocked(sa, 1)
	d.mu.Unlock()
	if old != nil {
		old.kill()
	}
	if d.inserted != nil {
		d.inserted(sa)
	}
	d.notify()
}

func (d *SAD) onExpire(sa *SA, hard bool) {
	// A hard-expired SA leaves the SAD before the event goes out, as
	// Linux deletes the state before km_state_expired: a key manager
	// that re-adds the SPI on EXPIRE must not find the old one.
	if hard {
		d.remove(sa)
	}
	if d.expired != nil {
		d.expired(sa, hard)
	}
}

func (d *SAD) notify() {
	if d.changed != nil {
		d.changed()
	}
}

func (d *SAD) unlinkLocked(sa *SA) {
	c := &sa.Config
	k := saKey{c.Dst, c.Proto, c.SPI}
	if d.byID[k] != sa {
		return // not linked (already unlinked)
	}
	delete(d.byID, k)
	d.linkEncapLocked(sa, -1)
	unlinkList(d.byOut, outKey{c.Src, c.Dst, c.Proto, c.Mode}, sa)
	unlinkList(d.bySPI, spiKey(c.Proto, c.SPI), sa)
}

// unlinkList removes sa from the list m holds under k, and the entry when
// the list empties.
func unlinkList[K comparable](m map[K][]*SA, k K, sa *SA) {
	list := m[k]
	for i, s := range list {
		if s == sa {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(m, k)
	} else {
		m[k] = list
	}
}

func (d *SAD) remove(sa *SA) {
	d.mu.Lock()
	d.unlinkLocked(sa)
	d.mu.Unlock()
	sa.kill()
	d.notify()
}

// encapKey is a local address and UDP port that receives ESP-in-UDP.
type encapKey struct {
	dst  netip.Addr
	port uint16
}

// linkEncapLocked adds (n = 1) or removes (n = -1) sa's entries in the
// encapsulation indexes.
func (d *SAD) linkEncapLocked(sa *SA, n int) {
	if !sa.encapsulated() {
		return
	}
	_, dport := sa.EncapPorts()
	k := encapKey{sa.Config.Dst, dport}
	if c := d.encapPorts[k] + n; c > 0 {
		d.encapPorts[k] = c
	} else {
		delete(d.encapPorts, k)
	}
	d.encapSAs.Add(int64(n))
	if sa.Config.Encap.Keepalive > 0 {
		d.keepalives.Add(int64(n))
	}
}

// IsEncapPort reports whether some encapsulated SA receives on UDP port
// port at dst: a datagram to it is ESP, IKE or a keepalive (RFC 3948
// §2.2). Port 4500 is nothing special until an SA uses it.
func (d *SAD) IsEncapPort(dst netip.Addr, port uint16) bool {
	// Every inbound UDP datagram asks: without encapsulated SAs, answer
	// without the lock.
	if d.encapSAs.Load() == 0 {
		return false
	}
	d.mu.RLock()
	n := d.encapPorts[encapKey{dst, port}]
	d.mu.RUnlock()
	return n > 0
}

// maxSPIShare is how many SAs sharing a protocol and SPI Lookup compares
// one by one; beyond, it asks byID. A peer picks the SPIs of the SAs to
// it, so peers could choose one SPI for all theirs: a list Lookup walked
// whole would then cost every packet with that SPI, sent by anyone, a
// walk in proportion to their number.
const maxSPIShare = 4

// Lookup finds the SA for an inbound packet: the one with destination
// dst, protocol proto and SPI spi, as byID would (bySPI says why it does
// not ask byID).
func (d *SAD) Lookup(dst netip.Addr, proto Proto, spi uint32) *SA {
	d.mu.RLock()
	defer d.mu.RUnlock()
	list := d.bySPI[spiKey(proto, spi)]
	if len(list) > maxSPIShare {
		return d.byID[saKey{dst, proto, spi}]
	}
	for _, sa := range list {
		if sa.Config.Dst == dst {
			return sa
		}
	}
	return nil
}

// Get is Lookup under the name PF_KEY uses.
func (d *SAD) Get(dst netip.Addr, proto Proto, spi uint32) *SA { return d.Lookup(dst, proto, spi) }

// Delete removes the SA (dst, proto, spi) and wipes its keys once no
// packet uses it.
func (d *SAD) Delete(dst netip.Addr, proto Proto, spi uint32) (*SA, error) {
	d.mu.Lock()
	sa := d.byID[saKey{dst, proto, spi}]
	if sa == nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("SA %s spi 0x%x dst %v: %w", proto, spi, dst, ErrNotFound)
	}
	d.unlinkLocked(sa)
	d.mu.Unlock()
	sa.kill()
	d.notify()
	return sa, nil
}

// FindOutbound returns the SA that satisfies template t for a packet from
// src to dst (the packet's addresses in transport mode, the template's in
// tunnel mode): the newest usable SA with matching protocol, mode,
// endpoints, reqid and selector.
func (d *SAD) FindOutbound(t *Template, src, dst netip.Addr, f *Flow) *SA {
	d.mu.RLock()
	list := d.byOut[outKey{src, dst, t.Proto, t.Mode}]
	var best *SA
	for i := len(list) - 1; i >= 0; i-- {
		sa := list[i]
		if !sa.Usable() {
			continue
		}
		c := &sa.Config
		if t.ReqID != 0 && c.ReqID != t.ReqID {
			continue
		}
		if t.SPI != 0 && c.SPI != t.SPI {
			continue
		}
		if f != nil && !c.Sel.Match(f) {
			continue
		}
		// Prefer a mature SA over a dying one (RFC 2367 §3.1.2).
		if best == nil || (best.State() == StateDying && sa.State() == StateMature) {
			best = sa
			if sa.State() == StateMature {
				break
			}
		}
	}
	d.mu.RUnlock()
	return best
}

// Flush deletes every SA (of proto, or all when proto is 0).
func (d *SAD) Flush(proto Proto) int {
	d.mu.Lock()
	var dead []*SA
	for _, sa := range d.byID {
		if proto == 0 || sa.Config.Proto == proto {
			dead = append(dead, sa)
		}
	}
	for _, sa := range dead {
		d.unlinkLocked(sa)
	}
	d.mu.Unlock()
	for _, sa := range dead {
		sa.kill()
	}
	d.notify()
	return len(dead)
}

// Walk calls fn for every SA until it returns false. fn must not modify
// the SAD.
func (d *SAD) Walk(fn func(*SA) bool) {
	d.mu.RLock()
	list := make([]*SA, 0, len(d.byID))
	for _, sa := range d.byID {
		list = append(list, sa)
	}
	d.mu.RUnlock()
	for _, sa := range list {
		if !fn(sa) {
			return
		}
	}
}

// Len returns the number of SAs.
func (d *SAD) Len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.byID)
}

// ExpireTick applies the time lifetimes of every SA at now.
func (d *SAD) ExpireTick(now time.Time) {
	d.Walk(func(sa *SA) bool {
		d.expireLarval(sa, now)
		l := sa.limits()
		if l.soft.AddSeconds|l.soft.UseSeconds|l.hard.AddSeconds|l.hard.UseSeconds != 0 {
			sa.checkTime(now)
		}
		return true
	})
}
