package xfrm

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// EventType tells what an Event reports.
type EventType uint8

// Event types, the messages a key manager receives (RFC 2367).
const (
	EventAcquire    EventType = iota // a protect policy found no SA
	EventSoftExpire                  // an SA passed its soft lifetime
	EventHardExpire                  // an SA passed its hard lifetime and is gone
	// EventNewMapping: an authenticated packet on an encapsulated
	// inbound SA came from a new address or port (RFC 3948 §4; Linux's
	// XFRM_MSG_MAPPING, PF_KEY's SADB_X_NAT_T_NEW_MAPPING). SA is the
	// inbound SA; OldPeer and NewPeer say where its peer was and is.
	EventNewMapping
)

// String implements fmt.Stringer.
func (t EventType) String() string {
	switch t {
	case EventAcquire:
		return "acquire"
	case EventSoftExpire:
		return "expire-soft"
	case EventNewMapping:
		return "new-mapping"
	}
	return "expire-hard"
}

// Event is sent to subscribers (key managers, loggers).
type Event struct {
	Type EventType
	// SA is set for expire and new-mapping events.
	SA *SA
	// OldPeer and NewPeer are set for EventNewMapping: the inbound SA's
	// peer (address and UDP source port) before and after the move. The
	// encapsulated SAs that sent to OldPeer from the inbound SA's
	// destination now send to NewPeer (SA.OutPeer).
	OldPeer, NewPeer EncapPeer
	// Policy, Template and Flow are set for ACQUIRE.
	Policy   *Policy
	Template *Template
	Flow     Flow
}

// Engine ties the SPD, the SAD and the counters together and runs the
// output and input paths. Safe for concurrent use.
type Engine struct {
	SPD   *SPD
	SAD   *SAD
	Stats Stats
	// Reasm reassembles fragments before the inbound policy check, both
	// those from the link and those decapsulated from a tunnel.
	Reasm *Reassembler

	subMu sync.RWMutex
	subs  map[int]func(Event)
	subID int

	// AcquireStats count the pending-ACQUIRE table's evictions.
	AcquireStats AcquireStats

	acqMu  sync.Mutex
	acq    acquireTable
	acqSeq uint32

	ipID atomic.Uint32
	// kaSend sends NAT keepalives (SetKeepaliveSender).
	kaSend atomic.Pointer[func(Keepalive)]
	sock   sockTable // per-socket policies (sockpolicy.go)
	// local tells a gateway's own addresses from those it forwards to
	// (SetLocal); nil: every packet is for this host.
	local atomic.Pointer[func(netip.Addr) bool]
	stop  chan struct{}
	once  sync.Once
}

// NewEngine returns an engine with empty databases. Call Close to stop its
// lifetime timer.
func NewEngine() *Engine {
	e := &Engine{
		SPD:   NewSPD(),
		SAD:   NewSAD(),
		Reasm: NewReassembler(DefaultReasmMemLimit, DefaultReasmTimeout),
		subs:  make(map[int]func(Event)),
		stop:  make(chan struct{}),
	}
	e.acq.init()
	e.SAD.changed = e.SPD.Invalidate
	e.SAD.inserted = e.acquireAnswered
	e.SAD.expired = func(sa *SA, hard bool) {
		t := EventSoftExpire
		if hard {
			t = EventHardExpire
		}
		e.emit(Event{Type: t, SA: sa})
	}
	go e.tick()
	return e
}

// Close stops the engine's timer.
func (e *Engine) Close() { e.once.Do(func() { close(e.stop) }) }

func (e *Engine) tick() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			e.SAD.ExpireTick(now)
			if e.SAD.keepalives.Load() > 0 {
				e.keepaliveTick(now)
			}
			e.expireAcquires(now)
		}
	}
}

// Subscribe registers fn for events; the returned func unregisters it. fn
// runs on the packet path: it must not block.
func (e *Engine) Subscribe(fn func(Event)) (cancel func()) {
	e.subMu.Lock()
	e.subID++
	id := e.subID
	e.subs[id] = fn
	e.subMu.Unlock()
	return func() {
		e.subMu.Lock()
		delete(e.subs, id)
		e.subMu.Unlock()
	}
}

func (e *Engine) emit(ev Event) bool {
	e.subMu.RLock()
	defer e.subMu.RUnlock()
	for _, fn := range e.subs {
		fn(ev)
	}
	return len(e.subs) > 0
}

// AddSA builds an SA from cfg and adds it.
func (e *Engine) AddSA(cfg SAConfig) (*SA, error) {
	sa, err := NewSA(cfg)
	if err != nil {
		return nil, err
	}
	if err := e.SAD.Add(sa); err != nil {
		sa.kill()
		return nil, err
	}
	return sa, nil
}

// AddPolicy adds p to the SPD.
func (e *Engine) AddPolicy(p *Policy) (uint32, error) { return e.SPD.Add(p) }
