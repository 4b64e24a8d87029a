package exchange

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// ESNMode says which extended sequence number setting (RFC 4304, the ESN
// transform of RFC 7296 §3.3.2) a CHILD SA is negotiated with.
type ESNMode uint8

// ESN modes. strongSwan's default is ESNNo.
const (
	ESNNo     ESNMode = iota // NO_ESN only (strongSwan "noesn")
	ESNYes                   // ESN only ("esn")
	ESNEither                // offer both, ESN first; as responder prefer ESN
)

// ChildConfig is how a CHILD SA is negotiated in CREATE_CHILD_SA.
type ChildConfig struct {
	// ESP is the proposal's encryption and integrity.
	ESP ESPSuite
	// PFS lists the key exchange methods (message.KE_*) offered for
	// perfect forward secrecy, the first one sent in the KE payload; empty
	// means no PFS. A responder requires one of them.
	PFS []uint16
	// ESN selects extended sequence numbers.
	ESN ESNMode
	// LocalTS and RemoteTS are this side's and the peer's selectors.
	LocalTS, RemoteTS []message.TrafficSelector
	// Mode is tunnel or transport (USE_TRANSPORT_MODE, §1.3.1).
	Mode xfrm.Mode
	// ReplayWindow is given to the SAs; 0 takes 32.
	ReplayWindow uint32
}

// SAOptions configures an established IKE SA (NewIKESA).
type SAOptions struct {
	// Retransmit is the schedule of this side's requests; the zero value
	// is strongSwan's (4 s, x1.8, 5 retransmissions). After the last one
	// times out the peer is declared dead.
	Retransmit Retransmit
	// Children are the configurations a peer's CREATE_CHILD_SA for a new
	// CHILD SA is accepted under, first match wins. Empty: the IKE_AUTH
	// CHILD SA's configuration.
	Children []ChildConfig
	// PFS and ESN apply to rekeying the CHILD SA created by IKE_AUTH
	// (IKE_AUTH itself carries no KE payload).
	PFS []uint16
	ESN ESNMode
	// RekeyKE lists the key exchange methods offered and accepted when the
	// IKE SA is rekeyed; empty takes the IKE SA's own method.
	RekeyKE []uint16
	// RetryDelay is how long a request answered with TEMPORARY_FAILURE
	// waits at least before it is sent again (RFC 7296 §2.25), up to
	// twice that at random; 0 takes 2 s.
	RetryDelay time.Duration
	// SPI, when set, allocates inbound ESP SPIs (the daemon knows which
	// are free in its SAD); otherwise they are random.
	SPI func() (uint32, error)
}

// ChildSA is one CHILD SA: its two SAs as xfrm installs them and its
// traffic selectors.
type ChildSA struct {
	// ID names the logical CHILD SA: a rekey keeps it, so a daemon can map
	// it to its policies (reqid). The IKE_AUTH CHILD SA is 1.
	ID int
	// In carries the peer's traffic to this side; its SPI was chosen
	// here. Out carries this side's traffic to the peer.
	In, Out xfrm.SAConfig
	// LocalTS and RemoteTS are the agreed selectors.
	LocalTS, RemoteTS []message.TrafficSelector
}

// Event is something the caller acts on: installing or removing SAs, or
// the end of the IKE SA. The concrete types are ChildAdded,
// ChildRekeyed, ChildOutbound, ChildDeleted, ChildFailed, IKERekeyed,
// IKEDeleted and Dead.
type Event interface{ event() }

// ChildAdded: a new CHILD SA is up; install In and Out and use Out.
type ChildAdded struct{ Child ChildSA }

// ChildRekeyed: New replaces Old (RFC 7296 §2.8, make-before-break).
// Install New.In at once, so that the peer may use it; keep Old until its
// ChildDeleted. If Outbound, also install New.Out and send with it from
// now on (this side initiated the rekey); otherwise a ChildOutbound for
// New follows, when the peer deletes Old: the peer installs its inbound
// SA only when it receives the response this side just sent.
type ChildRekeyed struct {
	Old, New ChildSA
	Outbound bool
}

// ChildOutbound: install Child.Out and send with it from now on.
type ChildOutbound struct{ Child ChildSA }

// ChildDeleted: remove Child.In and Child.Out (if installed).
type ChildDeleted struct{ Child ChildSA }

// ChildFailed: a CREATE_CHILD_SA this side started did not create a CHILD
// SA. ID is the CHILD SA being rekeyed, or 0 for a new one; Err is often a
// *PeerError (NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE, ...).
type ChildFailed struct {
	ID  int
	Err error
}

// IKERekeyed: the IKE SA has new SPIs and keys (§2.18); the CHILD SAs
// moved to it. Messages for both SPI pairs go to this IKESA until the old
// one is deleted (SPIs lists what it accepts).
type IKERekeyed struct {
	OldSPIi, OldSPIr uint64
	SPIi, SPIr       uint64
	// Initiator: this side initiated the rekey, which makes it the new
	// IKE SA's initiator (§2.18; in a collision, of the surviving SA),
	// whatever its role in the old one: our SPI is SPIi, else SPIr.
	Initiator bool
	// Suite and Keys are the new IKE SA's, for a key log.
	Suite IKESuite
	Keys  *ikecrypto.IKEKeys
}

// IKEDeleted: the IKE SA was deleted, by the peer if ByPeer; a
// ChildDeleted for each CHILD SA precedes it.
type IKEDeleted struct{ ByPeer bool }

// Dead: the peer did not answer a request after all retransmissions, or
// told us the IKE SA is gone; a ChildDeleted for each CHILD SA precedes
// it.
type Dead struct{ Err error }

func (ChildAdded) event()    {}
func (ChildRekeyed) event()  {}
func (ChildOutbound) event() {}
func (ChildDeleted) event()  {}
func (ChildFailed) event()   {}
func (IKERekeyed) event()    {}
func (IKEDeleted) event()    {}
func (Dead) event()          {}

// Counters count what an IKE SA received and did, with strongSwan's
// counter names (its counters plugin, swanctl --counters) in the
// comments.
type Counters struct {
	// Invalid: malformed messages (invalid).
	Invalid uint64
	// InvalidSPI: messages for no IKE SA of this one (invalid-spi).
	InvalidSPI uint64
	// IntegrityFailed: messages whose Encrypted payload did not verify;
	// dropped unanswered (§2.21.2).
	IntegrityFailed uint64
	// InvalidMessageID: requests outside the window and responses to no
	// outstanding request (§2.3).
	InvalidMessageID uint64
	// Retransmits: this side's requests sent again after a timeout.
	Retransmits uint64
	// ResponsesResent: cached responses sent again for a repeated request
	// (§2.1).
	ResponsesResent uint64
	// IKERekeyInit and IKERekeyResp: IKE SA rekeys initiated and answered
	// (ike-rekey-init, ike-rekey-resp); ChildRekey: CHILD SA rekeys either
	// way (child-rekey).
	IKERekeyInit, IKERekeyResp, ChildRekey uint64
	// Requests and responses by exchange and direction
	// (create-child-in-req, ..., info-out-resp).
	CreateChildInReq, CreateChildInResp, CreateChildOutReq, CreateChildOutResp uint64
	InfoInReq, InfoInResp, InfoOutReq, InfoOutResp                             uint64
}

// ikeSA is one IKE SA's keys and message ID windows. An IKESA has more
// than one while a rekey completes (the old one until its Delete, and in
// a collision the redundant new one).
type ikeSA struct {
	spii, spir uint64
	initiator  bool // this side is the initiator of this IKE SA (the I flag)
	suite      IKESuite
	prf        *ikecrypto.PRF
	encr       *ikecrypto.Encr
	integ      *ikecrypto.Integ
	keys       *ikecrypto.IKEKeys
	inP, outP  *ikecrypto.Protector

	nextReq  uint32 // message ID of this side's next request
	peerNext uint32 // message ID expected for the peer's next request
	// lastReq (a hash) and lastResp answer a repeated request (§2.1).
	lastReq  [32]byte
	lastResp [][]byte
	haveLast bool

	pending *request // window 1: at most one request of ours outstanding
	// replaced is set once a rekey replaced this IKE SA (or, in a
	// collision, made it redundant): it then only waits for its Delete,
	// which this side sends if wantDelete.
	replaced, wantDelete bool
	// expire, when set, is when a replaced or redundant IKE SA whose
	// Delete never completed is forgotten.
	expire time.Time
	// rekeyNonces are the nonces of the exchange that created this IKE SA
	// by rekeying, for collision resolution.
	ni, nr []byte
}

// request is one of this side's outstanding requests.
type request struct {
	id      uint32
	msg     []byte
	ex      message.ExchangeType
	task    *task
	tries   int
	timeout time.Duration
	next    time.Time
}

// IKESA is an established IKE SA (after IKE_AUTH) as a pure state
// machine: Handle takes a received message, Tick the passing of time, and
// both return the messages to send (IKE messages without the non-ESP
// marker; on port 4500 when NAT traversal is on) and events. Operations
// (CreateChild, RekeyChild, RekeyIKE, DeleteChild, Delete, Liveness) are
// queued and sent, one outstanding request at a time (window size 1, as
// strongSwan), by the next Tick or Handle. An IKESA is not safe for
// concurrent use.
type IKESA struct {
	opts   SAOptions
	rt     Retransmit
	params saParams // the IKE_AUTH config: addresses, NAT-T, mode

	cur *ikeSA   // new requests go here
	sas []*ikeSA // every IKE SA accepting messages, cur among them

	children []*child
	nextID   int
	queue    []*task
	events   []Event
	out      [][]byte
	closed   bool
	lastRecv time.Time

	// ikeCollision is the IKE SA created answering the peer's rekey while
	// ours was outstanding (§2.8.2).
	ikeCollision *ikeSA
	// closeAfter and dropAfter act once the response in hand is sent.
	closeAfter Event
	dropAfter  *ikeSA
	now        time.Time // of the Handle or Tick running

	// Counters are updated as messages are handled.
	Counters Counters

	rand io.Reader
}

type childState uint8

const (
	childInstalled childState = iota
	childRekeyed              // replaced by a newer SA; waiting for the Delete
	childDeleting             // our Delete is outstanding
)

type child struct {
	sa    ChildSA
	cfg   ChildConfig // what it was negotiated with (rekeys reuse it)
	esn   bool
	state childState
	// outPending: a rekey we answered; its Out goes live when the peer
	// deletes the SA it replaced.
	outPending bool
	// replacedBy is the SA that replaces a rekeyed one.
	replacedBy *child
	// rekeyNonces are the nonces of the exchange that created it.
	ni, nr []byte
	// collision is a CHILD SA we created by answering the peer's rekey of
	// this one while our own rekey of it was outstanding (§2.8.1).
	collision *child
	// hidden: a redundant SA of a collision, never installed, so no
	// events.
	hidden bool
	// expire, when set, is when this side deletes a redundant SA that the
	// peer should have deleted.
	expire time.Time
}

// NewIKESA continues the IKE SA of a completed Initiator or Responder
// (its Result) with the exchanges after IKE_AUTH. The CHILD SA of
// IKE_AUTH becomes CHILD SA 1 (no event: the Result carries it).
func NewIKESA(r *Result, opts SAOptions) (*IKESA, error) {
	if r == nil || r.est == nil {
		return nil, errors.New("exchange: NewIKESA needs the Result of a completed IKE_AUTH")
	}
	e := r.est
	prf, encr, integ, err := ikeAlgs(e.ikeSuite)
	if err != nil {
		return nil, err
	}
	sa := &ikeSA{spii: r.SPIi, spir: r.SPIr, initiator: e.initiator, suite: e.ikeSuite, prf: prf, encr: encr, integ: integ,
		keys: r.Keys, inP: e.inP, outP: e.outP}
	if e.initiator {
		sa.nextReq = 2
	} else {
		sa.peerNext = 2
		if e.authResp != nil {
			sa.lastReq, sa.lastResp, sa.haveLast = sha256.Sum256(e.authReq), e.authResp, true
		}
	}
	s := &IKESA{opts: opts, rt: opts.Retransmit.norm(), cur: sa, sas: []*ikeSA{sa}, nextID: 2, rand: rand.Reader}
	if s.opts.RetryDelay <= 0 {
		s.opts.RetryDelay = 2 * time.Second
	}
	c := &e.cfg
	s.params = saParams{local: c.Local, remote: c.Remote, natt: r.NATT, mode: c.Mode, replay: c.ReplayWindow}
	first := ChildConfig{ESP: e.childSuite, PFS: opts.PFS, ESN: opts.ESN, LocalTS: c.LocalTS, RemoteTS: c.RemoteTS,
		Mode: c.Mode, ReplayWindow: c.ReplayWindow}
	if e.childSuite.ESN && first.ESN == ESNNo {
		first.ESN = ESNYes // a rekey keeps what IKE_AUTH negotiated
	}
	if len(s.opts.Children) == 0 {
		s.opts.Children = []ChildConfig{first}
	}
	s.children = []*child{{sa: ChildSA{ID: 1, In: r.In, Out: r.Out, LocalTS: r.LocalTS, RemoteTS: r.RemoteTS}, cfg: first}}
	return s, nil
}

// SPIs returns the SPI pairs (SPIi, SPIr) of the IKE SAs this IKESA
// accepts messages for: one, or during a rekey the old and new ones.
func (s *IKESA) SPIs() [][2]uint64 {
	var out [][2]uint64
	for _, sa := range s.sas {
		out = append(out, [2]uint64{sa.spii, sa.spir})
	}
	return out
}

// Children returns the CHILD SAs, including those replaced by a rekey
// and not yet deleted.
func (s *IKESA) Children() []ChildSA {
	var out []ChildSA
	for _, c := range s.children {
		if !c.hidden {
			out = append(out, c.sa)
		}
	}
	return out
}

// Closed reports whether the IKE SA is gone (deleted or dead).
func (s *IKESA) Closed() bool { return s.closed }

// LastReceived is when the last authenticated message arrived (at
// first, the time of the first Handle or Tick: IKE_AUTH just completed):
// a daemon starts a liveness check (DPD) when it is older than its
// dpd_delay and no ESP arrived either.
func (s *IKESA) LastReceived() time.Time { return s.lastRecv }

// clock records now for the handlers.
func (s *IKESA) clock(now time.Time) {
	s.now = now
	if s.lastRecv.IsZero() {
		s.lastRecv = now
	}
}

// NextTimeout returns when Tick has something to do (a retransmission,
// the peer's death, a delayed retry), or the zero time.
func (s *IKESA) NextTimeout() time.Time {
	var t time.Time
	min := func(u time.Time) {
		if !u.IsZero() && (t.IsZero() || u.Before(t)) {
			t = u
		}
	}
	for _, sa := range s.sas {
		if sa.pending != nil {
			min(sa.pending.next)
		}
		min(sa.expire)
	}
	for _, c := range s.children {
		min(c.expire)
	}
	if s.cur.pending == nil {
		for _, k := range s.queue {
			min(k.notBefore)
		}
	}
	return t
}

// Tick retransmits requests whose time has come, declares the peer dead
// after the last retransmission, and starts queued requests.
func (s *IKESA) Tick(now time.Time) (out [][]byte, events []Event) {
	s.clock(now)
	if !s.closed {
		s.expireRedundant(now)
		for _, sa := range append([]*ikeSA(nil), s.sas...) {
			p := sa.pending
			if p == nil || now.Before(p.next) {
				continue
			}
			if p.tries >= s.rt.Tries {
				s.timedOut(sa, p)
				continue
			}
			p.tries++
			p.timeout = time.Duration(float64(p.timeout) * s.rt.Base)
			p.next = now.Add(p.timeout)
			s.Counters.Retransmits++
			s.out = append(s.out, p.msg)
		}
	}
	s.flush(now)
	return s.take()
}

// giveUp is how long a request of the peer can take, all
// retransmissions included: what this side waits for a Delete the peer
// owes before acting itself. The peer's schedule is unknown; it is taken
// to be ours or strongSwan's default (165 s), whichever is longer, so
// that a short local schedule does not forget an IKE SA on which a
// default peer still retransmits.
func (s *IKESA) giveUp() time.Duration {
	return max(s.rt.total(), Retransmit{}.norm().total())
}

// total is the time from the first send of a request to giving up.
func (r Retransmit) total() time.Duration {
	d, t := time.Duration(0), r.Timeout
	for i := 0; i <= r.Tries; i++ {
		d += t
		t = time.Duration(float64(t) * r.Base)
	}
	return d
}

// expireRedundant acts for a peer that never deleted the redundant SA of
// a collision it lost (§2.8): charon, seeing our Delete of the old IKE SA
// before our answer to its own rekey, aborts its rekey and forgets the SA
// without a Delete. The IKE SA is forgotten; the CHILD SA, which the peer
// may still have, is deleted.
func (s *IKESA) expireRedundant(now time.Time) {
	for _, sa := range append([]*ikeSA(nil), s.sas...) {
		if !sa.expire.IsZero() && !now.Before(sa.expire) && sa != s.cur {
			s.dropSA(sa)
		}
	}
	for _, c := range s.children {
		if !c.expire.IsZero() && !now.Before(c.expire) {
			c.expire = time.Time{}
			if c.state != childDeleting {
				s.queueDelete(c)
			}
		}
	}
}

// timedOut handles a request that was never answered: the peer is dead
// (§2.4), except for the Delete of an IKE SA, whose end is the goal.
func (s *IKESA) timedOut(sa *ikeSA, p *request) {
	sa.pending = nil
	if sa != s.cur {
		// A replaced IKE SA: deleting it was all that was left, and the
		// current one's requests tell whether the peer lives.
		s.dropSA(sa)
		return
	}
	if p.task.kind == taskDeleteIKE {
		s.close(IKEDeleted{})
		return
	}
	s.close(Dead{Err: fmt.Errorf("%w: %v request %d after %d retransmissions", ErrTimeout, p.ex, p.id, s.rt.Tries)})
}

func (s *IKESA) take() ([][]byte, []Event) {
	out, ev := s.out, s.events
	s.out, s.events = nil, nil
	return out, ev
}

// close ends the IKE SA: every CHILD SA is deleted, then ev.
func (s *IKESA) close(ev Event) {
	if s.closed {
		return
	}
	for _, c := range s.children {
		if !c.hidden {
			s.events = append(s.events, ChildDeleted{Child: c.sa})
		}
	}
	s.children = nil
	s.queue = nil
	for _, sa := range s.sas {
		sa.pending = nil
		sa.keys.Wipe()
	}
	s.closed = true
	s.events = append(s.events, ev)
}

func (s *IKESA) dropSA(sa *ikeSA) {
	for i, x := range s.sas {
		if x == sa {
			s.sas = append(s.sas[:i], s.sas[i+1:]...)
			break
		}
	}
	if sa != s.cur {
		sa.keys.Wipe()
	}
}

// Handle processes a message received from the peer.
func (s *IKESA) Handle(raw []byte, now time.Time) (out [][]byte, events []Event) {
	s.clock(now)
	s.handle(raw, now)
	s.flush(now)
	return s.take()
}

func (s *IKESA) handle(raw []byte, now time.Time) {
	if s.closed {
		s.Counters.InvalidSPI++
		return
	}
	m, err := message.Decode(raw)
	if err != nil {
		s.Counters.Invalid++
		return
	}
	var sa *ikeSA
	for _, x := range s.sas {
		if x.spii == m.SPIi && x.spir == m.SPIr {
			sa = x
		}
	}
	if sa == nil {
		s.Counters.InvalidSPI++
		return
	}
	if m.IsInitiator() == sa.initiator || (m.Exchange != message.CREATE_CHILD_SA && m.Exchange != message.INFORMATIONAL &&
		!(m.Exchange == message.IKE_AUTH && !sa.initiator)) {
		// The I flag names the sender (§3.1); a message with ours is a
		// reflection of our own.
		s.Counters.Invalid++
		return
	}
	if m.IsResponse() {
		s.handleResponse(sa, raw, m, now)
		return
	}
	s.handleRequest(sa, raw, m, now)
}

func (s *IKESA) handleRequest(sa *ikeSA, raw []byte, m *message.Message, now time.Time) {
	if m.MessageID+1 == sa.peerNext && sa.haveLast {
		// A repeated request gets the same response (§2.1); only the
		// identical message does, so a forged one costs no more than a
		// hash.
		if sha256.Sum256(raw) == sa.lastReq {
			s.Counters.ResponsesResent++
			s.out = append(s.out, sa.lastResp...)
			return
		}
	}
	if m.MessageID != sa.peerNext {
		s.Counters.InvalidMessageID++
		return
	}
	if m.Exchange == message.IKE_AUTH {
		s.Counters.InvalidMessageID++
		return
	}
	ps, err := openMessage(sa.inP, raw, m)
	if err != nil {
		var me *message.Error
		var uc *message.UnsupportedCriticalPayloadError
		switch {
		case errors.As(err, &uc):
			// Authenticated but with a critical payload we do not know:
			// the one answer §2.5 prescribes.
			s.respond(sa, raw, m, []message.Payload{&message.Notify{NotifyType: message.UNSUPPORTED_CRITICAL_PAYLOAD, Data: []byte{byte(uc.Type)}}})
			s.Counters.Invalid++
		case errors.As(err, &me):
			// Authenticated but malformed inside (§2.21.2).
			s.respond(sa, raw, m, []message.Payload{&message.Notify{NotifyType: message.INVALID_SYNTAX}})
			s.Counters.Invalid++
		default:
			s.Counters.IntegrityFailed++
		}
		return
	}
	s.lastRecv = now
	var resp []message.Payload
	switch m.Exchange {
	case message.CREATE_CHILD_SA:
		s.Counters.CreateChildInReq++
		resp = s.handleCreateChildRequest(sa, ps)
		s.Counters.CreateChildOutResp++
	case message.INFORMATIONAL:
		s.Counters.InfoInReq++
		resp = s.handleInformationalRequest(sa, ps)
		s.Counters.InfoOutResp++
	}
	s.respond(sa, raw, m, resp)
	s.afterRespond()
}

// isInnerError tells a decoding error inside the SK payload (the message
// was authentic) from a failed integrity check.
func isInnerError(err error) bool {
	var me *message.Error
	var uc *message.UnsupportedCriticalPayloadError
	return errors.As(err, &me) || errors.As(err, &uc)
}

// respond seals and sends the response to request m and caches it.
func (s *IKESA) respond(sa *ikeSA, raw []byte, m *message.Message, ps []message.Payload) {
	var f message.Flags = message.FlagResponse
	if sa.initiator {
		f |= message.FlagInitiator
	}
	h := message.Header{SPIi: sa.spii, SPIr: sa.spir, Exchange: m.Exchange, Flags: f, MessageID: m.MessageID}
	b, err := sealMessage(sa.outP, h, ps)
	if err != nil {
		b, _ = sealMessage(sa.outP, h, []message.Payload{&message.Notify{NotifyType: message.INVALID_SYNTAX}})
	}
	sa.lastReq, sa.lastResp, sa.haveLast = sha256.Sum256(raw), [][]byte{b}, true
	sa.peerNext = m.MessageID + 1
	s.out = append(s.out, b)
}

func (s *IKESA) handleResponse(sa *ikeSA, raw []byte, m *message.Message, now time.Time) {
	p := sa.pending
	if p == nil || m.MessageID != p.id || m.Exchange != p.ex {
		s.Counters.InvalidMessageID++
		return
	}
	ps, err := openMessage(sa.inP, raw, m)
	if err != nil {
		if isInnerError(err) {
			// Authentic but undecodable: the exchange failed (§2.21.2).
			s.Counters.Invalid++
			sa.pending = nil
			s.failTask(sa, p.task, err)
			return
		}
		s.Counters.IntegrityFailed++
		return
	}
	s.lastRecv = now
	sa.pending = nil
	switch m.Exchange {
	case message.CREATE_CHILD_SA:
		s.Counters.CreateChildInResp++
		s.handleCreateChildResponse(sa, p.task, ps, now)
	case message.INFORMATIONAL:
		s.Counters.InfoInResp++
		s.handleInformationalResponse(sa, p.task, ps)
	}
}

// send makes req the outstanding request of sa.
func (s *IKESA) send(sa *ikeSA, ex message.ExchangeType, ps []message.Payload, t *task, now time.Time) error {
	var f message.Flags
	if sa.initiator {
		f = message.FlagInitiator
	}
	h := message.Header{SPIi: sa.spii, SPIr: sa.spir, Exchange: ex, Flags: f, MessageID: sa.nextReq}
	b, err := sealMessage(sa.outP, h, ps)
	if err != nil {
		return err
	}
	sa.pending = &request{id: sa.nextReq, msg: b, ex: ex, task: t, timeout: s.rt.Timeout, next: now.Add(s.rt.Timeout)}
	sa.nextReq++
	switch ex {
	case message.CREATE_CHILD_SA:
		s.Counters.CreateChildOutReq++
	case message.INFORMATIONAL:
		s.Counters.InfoOutReq++
	}
	s.out = append(s.out, b)
	return nil
}

// flush starts the next queued task when no request is outstanding,
// and the Delete of replaced IKE SAs this side is to delete.
func (s *IKESA) flush(now time.Time) {
	for _, sa := range s.sas {
		if !s.closed && sa.wantDelete && sa.pending == nil && sa != s.cur {
			sa.wantDelete = false
			t := &task{kind: taskDeleteIKE}
			if err := s.send(sa, message.INFORMATIONAL, []message.Payload{&message.Delete{Protocol: message.ProtoIKE}}, t, now); err != nil {
				s.dropAfter = sa
			}
		}
	}
	if sa := s.dropAfter; sa != nil {
		s.dropAfter = nil
		s.dropSA(sa)
	}
	for !s.closed && s.cur.pending == nil && len(s.queue) > 0 {
		k := -1
		for i, t := range s.queue {
			if !now.Before(t.notBefore) {
				k = i
				break
			}
		}
		if k < 0 {
			return
		}
		t := s.queue[k]
		s.queue = append(s.queue[:k], s.queue[k+1:]...)
		s.start(t, now)
	}
}

// randBytes returns n random bytes.
func (s *IKESA) randBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(s.rand, b)
	return b, err
}

func (s *IKESA) newESPSPI() (uint32, error) {
	if s.opts.SPI != nil {
		return s.opts.SPI()
	}
	for {
		b, err := s.randBytes(4)
		if err != nil {
			return 0, err
		}
		spi := binary.BigEndian.Uint32(b) | 0x100 // 1..255 are reserved (RFC 4303 §2.1)
		if s.childByIn(spi) == nil {
			return spi, nil
		}
	}
}

func (s *IKESA) childByIn(spi uint32) *child {
	for _, c := range s.children {
		if c.sa.In.SPI == spi {
			return c
		}
	}
	return nil
}

func (s *IKESA) childByOut(spi uint32) *child {
	for _, c := range s.children {
		if c.sa.Out.SPI == spi {
			return c
		}
	}
	return nil
}

func (s *IKESA) childByID(id int) *child {
	for _, c := range s.children {
		if c.sa.ID == id && c.state == childInstalled && c.replacedBy == nil {
			return c
		}
	}
	return nil
}

// removeChild forgets c. When c had been replaced by a rekey that we
// answered, the replacement's outbound SA goes live now (ChildRekeyed).
func (s *IKESA) removeChild(c *child) {
	for i, x := range s.children {
		if x == c {
			s.children = append(s.children[:i], s.children[i+1:]...)
			if r := c.replacedBy; r != nil && r.outPending && s.childByIn(r.sa.In.SPI) != nil {
				r.outPending = false
				s.events = append(s.events, ChildOutbound{Child: r.sa})
			}
			if !c.hidden {
				s.events = append(s.events, ChildDeleted{Child: c.sa})
			}
			return
		}
	}
}

// afterRespond acts on what a request decided once its response is
// sealed with the keys it needed.
func (s *IKESA) afterRespond() {
	if ev := s.closeAfter; ev != nil {
		s.closeAfter = nil
		s.close(ev)
	}
	if sa := s.dropAfter; sa != nil {
		s.dropAfter = nil
		s.dropSA(sa)
	}
}
