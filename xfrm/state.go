package xfrm

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipsecstack/ipsecstack/xfrm/ah"
	"github.com/ipsecstack/ipsecstack/xfrm/esp"
	"github.com/ipsecstack/ipsecstack/xfrm/ipcomp"
	"github.com/ipsecstack/ipsecstack/xfrm/replay"
)

// SACounters are the per-SA counters (Linux's xfrm_state curlft and stats).
type SACounters struct {
	Bytes           atomic.Uint64 // payload bytes protected or accepted
	Packets         atomic.Uint64
	ReplayErrors    atomic.Uint64
	IntegrityErrors atomic.Uint64
	// IPComp: packets sent uncompressed (too small or incompressible),
	// and decompressions refused for exceeding the size cap.
	Uncompressed       atomic.Uint64
	DecompressionBombs atomic.Uint64
}

// MaxReplayWindow is the largest anti-replay window an SA accepts (in
// packets; the bitmap costs a bit per packet).
const MaxReplayWindow = 1 << 20

// SA is one security association: its configuration, keyed transform and
// mutable state. Safe for concurrent use; packets in flight hold a
// reference, so deleting an SA never pulls keys from under them.
type SA struct {
	// Config is the SA as added. Its key bytes are wiped when the SA dies.
	Config SAConfig

	esp  *esp.Transform
	ah   *ah.Transform
	comp *ipcomp.Transform

	state atomic.Uint32 // SAState
	refs  atomic.Int32  // 1 for the SAD + one per packet in flight

	// outSeq is the last sequence number sent.
	outSeq atomic.Uint64

	replayMu sync.Mutex
	replay   replay.Window

	// Counters are this SA's byte and packet counts.
	Counters SACounters

	// lft holds the soft and hard lifetimes in force. They start as
	// Config's and a key manager's UPDATE replaces them in place while
	// packets read them (SetLifetimes), so they live behind an atomic
	// pointer rather than in Config.
	lft atomic.Pointer[lifetimes]

	added    time.Time
	firstUse atomic.Int64 // unix nanos of first use, 0 until then
	softHit  atomic.Bool
	hardHit  atomic.Bool

	// outPeer and inPeer are the remote end of an encapsulated SA (see
	// OutPeer, InPeer): port floating moves them while packets read them.
	outPeer atomic.Pointer[EncapPeer]
	// ports are the encapsulation's source and destination ports in
	// force (EncapPorts), SPort<<16 | DPort.
	ports  atomic.Uint32
	inPeer atomic.Pointer[EncapPeer]
	// lastKA is when the last NAT keepalive went out (unix nanos).
	lastKA atomic.Int64

	// acqSeq is the ACQUIRE sequence of a larval acquire SA.
	acqSeq uint32

	// hooks set by the SAD
	onExpire func(sa *SA, hard bool)
}

// lifetimes are an SA's soft and hard limits.
type lifetimes struct{ soft, hard Lifetime }

// ErrBadSA reports an SA configuration that cannot be used.
var ErrBadSA = errors.New("invalid SA")

// NewSA builds an SA from cfg, validating algorithms and keys. The SA keeps
// its own copy of the keys.
func NewSA(cfg SAConfig) (*SA, error) {
	if !cfg.Src.IsValid() || !cfg.Dst.IsValid() {
		return nil, fmt.Errorf("%w: SA %s spi 0x%x: source and destination addresses are required", ErrBadSA, cfg.Proto, cfg.SPI)
	}
	if cfg.Src.Is4() != cfg.Dst.Is4() {
		return nil, fmt.Errorf("%w: SA %s spi 0x%x: %v and %v are of different families", ErrBadSA, cfg.Proto, cfg.SPI, cfg.Src, cfg.Dst)
	}
	if cfg.SPI < 256 && cfg.Proto != ProtoIPComp {
		return nil, fmt.Errorf("%w: SA %s spi 0x%x: SPIs 0-255 are reserved (RFC 4303 §2.1)", ErrBadSA, cfg.Proto, cfg.SPI)
	}
	if cfg.ReplayWindow > MaxReplayWindow {
		return nil, fmt.Errorf("%w: SA %s spi 0x%x: replay window %d exceeds %d", ErrBadSA, cfg.Proto, cfg.SPI, cfg.ReplayWindow, MaxReplayWindow)
	}
	if err := validateEncap(&cfg); err != nil {
		return nil, err
	}
	cfg.AEAD.Key = clone(cfg.AEAD.Key)
	cfg.Enc.Key = clone(cfg.Enc.Key)
	cfg.Auth.Key = clone(cfg.Auth.Key)
	sa := &SA{Config: cfg, added: time.Now()}
	switch cfg.Proto {
	case ProtoESP:
		t, err := esp.New(cfg.AEAD.Name, cfg.AEAD.Key, cfg.AEAD.ICVBits, cfg.Enc.Name, cfg.Enc.Key, cfg.Auth.Name, cfg.Auth.Key, cfg.Auth.ICVBits)
		if err != nil {
			sa.wipe()
			return nil, fmt.Errorf("%w: SA esp spi 0x%x %v->%v: %v", ErrBadSA, cfg.SPI, cfg.Src, cfg.Dst, err)
		}
		sa.esp = t
	case ProtoAH:
		if cfg.AEAD.Name != "" || cfg.Enc.Name != "" || cfg.Comp.Name != "" {
			sa.wipe()
			return nil, fmt.Errorf("%w: SA ah spi 0x%x: AH takes only an integrity algorithm", ErrBadSA, cfg.SPI)
		}
		t, err := ah.New(cfg.Auth.Name, cfg.Auth.Key, cfg.Auth.ICVBits)
		if err != nil {
			sa.wipe()
			return nil, fmt.Errorf("%w: SA ah spi 0x%x %v->%v: %v", ErrBadSA, cfg.SPI, cfg.Src, cfg.Dst, err)
		}
		sa.ah = t
	case ProtoIPComp:
		if cfg.SPI == 0 || cfg.SPI > 0xffff {
			return nil, fmt.Errorf("%w: SA ipcomp cpi 0x%x: a CPI is 16 bits and not 0 (RFC 3173 §2.1)", ErrBadSA, cfg.SPI)
		}
		if cfg.AEAD.Name != "" || cfg.Enc.Name != "" || cfg.Auth.Name != "" {
			sa.wipe()
			return nil, fmt.Errorf("%w: SA ipcomp cpi 0x%x: IPComp takes only a compression algorithm", ErrBadSA, cfg.SPI)
		}
		name := cfg.Comp.Name
		if name == "" {
			name = "deflate"
		}
		t, err := ipcomp.New(name, 0)
		if err != nil {
			return nil, fmt.Errorf("%w: SA ipcomp cpi 0x%x: %v", ErrBadSA, cfg.SPI, err)
		}
		sa.comp = t
		// IPComp has no sequence numbers and no replay protection.
		cfg.ReplayWindow, cfg.ESN = 0, false
		sa.Config.ReplayWindow, sa.Config.ESN = 0, false
	default:
		sa.wipe()
		return nil, fmt.Errorf("%w: SA spi 0x%x: protocol %s is not supported", ErrBadSA, cfg.SPI, cfg.Proto)
	}
	sa.replay.Init(cfg.ReplayWindow, cfg.ESN)
	sa.initEncap()
	sa.lft.Store(&lifetimes{soft: cfg.Soft, hard: cfg.Hard})
	sa.outSeq.Store(cfg.Seq)
	sa.refs.Store(1)
	sa.state.Store(uint32(StateMature))
	return sa, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

// State returns the SA's life-cycle state.
func (sa *SA) State() SAState { return SAState(sa.state.Load()) }

// SPI returns the SA's SPI.
func (sa *SA) SPI() uint32 { return sa.Config.SPI }

// Usable reports whether packets may use the SA.
func (sa *SA) Usable() bool {
	s := sa.State()
	return s == StateMature || s == StateDying
}

// ESP returns the SA's ESP transform (nil for other protocols).
func (sa *SA) ESP() *esp.Transform { return sa.esp }

// AH returns the SA's AH transform (nil for other protocols).
func (sa *SA) AH() *ah.Transform { return sa.ah }

// IPComp returns the SA's IPComp transform (nil for other protocols).
func (sa *SA) IPComp() *ipcomp.Transform { return sa.comp }

// Overhead returns the most bytes the SA adds to a packet of n bytes,
// outer header included in tunnel mode, UDP header included when the SA is
// encapsulated.
func (sa *SA) Overhead(n int) int {
	o := 0
	switch {
	case sa.esp != nil:
		o = sa.esp.SealedLen(n) - n
	case sa.ah != nil:
		o = sa.ah.Len(sa.Config.Dst.Is4())
	}
	// IPComp adds nothing: it sends a packet compressed only if smaller.
	if sa.Config.Mode == ModeTunnel {
		o += outerLen(sa.Config.Dst)
	}
	if sa.encapsulated() {
		o += UDPHeaderLen
	}
	return o
}

// LastSeq returns the last outbound sequence number used.
func (sa *SA) LastSeq() uint64 { return sa.outSeq.Load() }

// ErrSeqBackwards reports an attempt to move an SA's outbound sequence
// counter back.
var ErrSeqBackwards = errors.New("outbound sequence number may not move backwards")

// SetOutSeq sets the last outbound sequence number used, as Linux's
// replay-oseq does when an SA moves between hosts. The counter only moves
// forward: a sequence number sent again would be dropped by the peer's
// replay window anyway, and under the same transform it would repeat an
// AEAD or counter-mode nonce (the IV is derived from it, esp.seqIV). Moving
// it back is refused with ErrSeqBackwards rather than re-keying the IV
// salt, so that a sequence number on the wire always names one packet.
func (sa *SA) SetOutSeq(seq uint64) error {
	for {
		cur := sa.outSeq.Load()
		if seq < cur {
			return fmt.Errorf("%w: SA %s spi 0x%x: %d is behind %d, already used", ErrSeqBackwards, sa.Config.Proto, sa.Config.SPI, seq, cur)
		}
		if sa.outSeq.CompareAndSwap(cur, seq) {
			return nil
		}
	}
}

// ReplayTop returns the highest inbound sequence number accepted.
func (sa *SA) ReplayTop() uint64 {
	sa.replayMu.Lock()
	defer sa.replayMu.Unlock()
	return sa.replay.Top()
}

// tryGet takes a packet reference; false once the SA is gone.
func (sa *SA) tryGet() bool {
	for {
		r := sa.refs.Load()
		if r <= 0 {
			return false
		}
		if sa.refs.CompareAndSwap(r, r+1) {
			// Deleted while other packets still hold it: in-flight
			// packets finish, new ones must not start.
			if sa.State() == StateDead {
				sa.put()
				return false
			}
			return true
		}
	}
}

// put drops a reference; the last one wipes the keys.
func (sa *SA) put() {
	if sa.refs.Add(-1) == 0 {
		sa.wipe()
	}
}

// kill marks the SA dead and drops the SAD's reference.
func (sa *SA) kill() {
	if SAState(sa.state.Swap(uint32(StateDead))) == StateDead {
		return
	}
	sa.put()
}

func (sa *SA) wipe() {
	for _, k := range [][]byte{sa.Config.AEAD.Key, sa.Config.Enc.Key, sa.Config.Auth.Key} {
		clear(k)
	}
	if sa.esp != nil {
		sa.esp.Zero()
	}
	if sa.ah != nil {
		sa.ah.Zero()
	}
}

// noLifetimes are the limits of an SA that has none (a larval SA).
var noLifetimes lifetimes

// limits returns the lifetimes in force.
func (sa *SA) limits() *lifetimes {
	if l := sa.lft.Load(); l != nil {
		return l
	}
	return &noLifetimes
}

// Lifetimes returns the soft and hard lifetimes in force: Config's, or
// what a later SetLifetimes gave.
func (sa *SA) Lifetimes() (soft, hard Lifetime) {
	l := sa.limits()
	return l.soft, l.hard
}

// SetLifetimes replaces the soft and hard lifetimes of a live SA in place,
// as Linux's xfrm_state_update does for the UPDATE of a valid state: the
// keys, sequence counter, replay window and lifetime counters stay. A
// soft expiry already reported is forgotten (Linux clears km.dying), so a
// dying SA becomes mature again and the new soft limit reports anew; the
// new limits are applied to what the SA has already used at once.
func (sa *SA) SetLifetimes(soft, hard Lifetime) {
	sa.lft.Store(&lifetimes{soft: soft, hard: hard})
	if sa.softHit.Swap(false) {
		sa.state.CompareAndSwap(uint32(StateDying), uint32(StateMature))
	}
	l := sa.limits()
	b, p := sa.Counters.Bytes.Load(), sa.Counters.Packets.Load()
	switch {
	case (l.hard.Bytes != 0 && b > l.hard.Bytes) || (l.hard.Packets != 0 && p > l.hard.Packets):
		sa.expire(true)
		return
	case (l.soft.Bytes != 0 && b >= l.soft.Bytes) || (l.soft.Packets != 0 && p >= l.soft.Packets):
		sa.expire(false)
	}
	sa.checkTime(time.Now())
}

// sameIdentity reports why n, an SA built from an UPDATE of the mature SA
// sa, cannot be applied in place: an UPDATE may change the lifetimes
// only. Keys, algorithms, mode, reqid, source address and replay window
// are part of what the peer agreed to; changing them needs a new SA (and
// SPI). Linux ignores such fields silently; we refuse them, as FreeBSD's
// key_update does, so that a key manager never believes a rekey happened.
func sameIdentity(sa, n *SA) error {
	a, b := &sa.Config, &n.Config
	var what string
	switch {
	case a.Mode != b.Mode:
		what = "mode"
	case a.ReqID != b.ReqID:
		what = "reqid"
	case a.Src != b.Src:
		what = "source address"
	case a.Encap.Type != b.Encap.Type:
		// Linux's xfrm_state_update fails the same way; ports and
		// NAT-OA of the same type are updated in place (updateEncap).
		what = "encapsulation type"
	case min(a.ReplayWindow, 255) != min(b.ReplayWindow, 255):
		what = "replay window"
	case transformName(sa) != transformName(n):
		what = "algorithms"
	case !keysEqual(a, b):
		what = "keys"
	default:
		return nil
	}
	return fmt.Errorf("%w: SA %s spi 0x%x dst %v is mature: UPDATE may change its lifetimes only, not its %s", ErrBadSA, a.Proto, a.SPI, a.Dst, what)
}

// transformName names an SA's algorithms and ICV length.
func transformName(sa *SA) string {
	switch {
	case sa.esp != nil:
		return sa.esp.String()
	case sa.ah != nil:
		return sa.ah.String()
	case sa.comp != nil:
		return sa.comp.String()
	}
	return ""
}

// keysEqual compares the key material of two SA configurations in
// constant time.
func keysEqual(a, b *SAConfig) bool {
	eq := 1
	for _, p := range [][2][]byte{{a.AEAD.Key, b.AEAD.Key}, {a.Enc.Key, b.Enc.Key}, {a.Auth.Key, b.Auth.Key}} {
		eq &= subtle.ConstantTimeCompare(p[0], p[1]) // 1 for two empty keys
	}
	return eq == 1
}

// nextSeq allocates an outbound sequence number. Without ESN the counter
// must not cycle (RFC 4303 §3.3.3): past 2^32-1 the SA is exhausted.
func (sa *SA) nextSeq() (uint64, bool) {
	s := sa.outSeq.Add(1)
	if !sa.Config.ESN && s > 0xffffffff {
		return 0, false
	}
	if s == 0 {
		return 0, false
	}
	return s, true
}

// nextSeqOut allocates the sequence number of an outbound packet, counting
// XfrmOutStateSeqError when the SA has none left. It runs after the
// lifetime check (accountOut), as Linux's xfrm_output_one checks expiry
// before its replay overflow hook: a packet refused for its lifetime must
// not consume a sequence number.
func (e *Engine) nextSeqOut(sa *SA) (uint64, bool) {
	seq, ok := sa.nextSeq()
	if !ok {
		e.Stats.OutStateSeqError.Add(1)
	}
	return seq, ok
}

// account adds a packet of n bytes to the SA's lifetime counters and
// reports false when the hard lifetime is exceeded.
func (sa *SA) account(n int) bool {
	if sa.firstUse.Load() == 0 {
		sa.firstUse.CompareAndSwap(0, time.Now().UnixNano())
	}
	b := sa.Counters.Bytes.Add(uint64(n))
	p := sa.Counters.Packets.Add(1)
	l := sa.limits()
	hard, soft := &l.hard, &l.soft
	if (hard.Bytes != 0 && b > hard.Bytes) || (hard.Packets != 0 && p > hard.Packets) {
		sa.expire(true)
		return false
	}
	if (soft.Bytes != 0 && b >= soft.Bytes) || (soft.Packets != 0 && p >= soft.Packets) {
		sa.expire(false)
	}
	return true
}

// checkTime applies the time lifetimes at now; false if hard-expired.
func (sa *SA) checkTime(now time.Time) bool {
	if sa.hardHit.Load() {
		return false
	}
	age := uint64(now.Sub(sa.added) / time.Second)
	var used uint64
	if fu := sa.firstUse.Load(); fu != 0 {
		used = uint64(now.Sub(time.Unix(0, fu)) / time.Second)
	}
	l := sa.limits()
	hard, soft := &l.hard, &l.soft
	if (hard.AddSeconds != 0 && age >= hard.AddSeconds) || (hard.UseSeconds != 0 && sa.firstUse.Load() != 0 && used >= hard.UseSeconds) {
		sa.expire(true)
		return false
	}
	if (soft.AddSeconds != 0 && age >= soft.AddSeconds) || (soft.UseSeconds != 0 && sa.firstUse.Load() != 0 && used >= soft.UseSeconds) {
		sa.expire(false)
	}
	return true
}

func (sa *SA) expire(hard bool) {
	if hard {
		if sa.hardHit.Swap(true) {
			return
		}
	} else {
		if sa.softHit.Swap(true) {
			return
		}
		sa.state.CompareAndSwap(uint32(StateMature), uint32(StateDying))
	}
	if sa.onExpire != nil {
		sa.onExpire(sa, hard)
	}
}

// String implements fmt.Stringer.
func (sa *SA) String() string {
	c := &sa.Config
	return fmt.Sprintf("%s %s spi 0x%08x %v->%v reqid %d %s", c.Proto, c.Mode, c.SPI, c.Src, c.Dst, c.ReqID, sa.State())
}
