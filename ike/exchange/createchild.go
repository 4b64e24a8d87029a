package exchange

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

type taskKind uint8

const (
	taskCreateChild taskKind = iota
	taskRekeyChild
	taskRekeyIKE
	taskDeleteChild
	taskDeleteIKE
	taskLiveness
)

// task is one queued or outstanding request of this side.
type task struct {
	kind      taskKind
	notBefore time.Time // a retry after TEMPORARY_FAILURE waits

	cfg      ChildConfig // taskCreateChild
	child    *child      // taskRekeyChild
	children []*child    // taskDeleteChild: these SAs,
	id       int         // or every SA of this CHILD SA

	// The state of an outstanding CREATE_CHILD_SA.
	ke        ikecrypto.KeyExchange
	group     uint16 // the KE payload's method, 0 without PFS
	ni        []byte
	spi       uint32 // our new inbound ESP SPI
	ikeSPI    uint64 // our SPI of the new IKE SA
	offer     []message.Transform
	keRetries int
}

// IKERekeyFailed: a rekey of the IKE SA this side started failed; the IKE
// SA goes on with its current keys.
type IKERekeyFailed struct{ Err error }

func (IKERekeyFailed) event() {}

// ErrClosed is returned by operations on an IKE SA that is gone.
var ErrClosed = errors.New("exchange: IKE SA closed")

// CreateChild queues a CREATE_CHILD_SA for a new CHILD SA (RFC 7296
// §1.3.1); ChildAdded or ChildFailed reports the outcome.
func (s *IKESA) CreateChild(cfg ChildConfig) error {
	if s.closed {
		return ErrClosed
	}
	if err := cfg.check(); err != nil {
		return err
	}
	s.queue = append(s.queue, &task{kind: taskCreateChild, cfg: cfg})
	return nil
}

func (c *ChildConfig) check() error {
	if _, _, err := espAlgs(c.ESP); err != nil {
		return err
	}
	for _, g := range c.PFS {
		if !ikecrypto.Supported(g) {
			return fmt.Errorf("exchange: PFS key exchange method %d not supported", g)
		}
	}
	if len(c.LocalTS) == 0 || len(c.RemoteTS) == 0 {
		return errors.New("exchange: CHILD SA without traffic selectors")
	}
	return nil
}

// RekeyChild queues the rekey of CHILD SA id (§1.3.3, §2.8);
// ChildRekeyed or ChildFailed reports the outcome.
func (s *IKESA) RekeyChild(id int) error {
	if s.closed {
		return ErrClosed
	}
	c := s.childByID(id)
	if c == nil {
		return fmt.Errorf("exchange: no CHILD SA %d", id)
	}
	s.queue = append(s.queue, &task{kind: taskRekeyChild, child: c})
	return nil
}

// RekeyIKE queues the rekey of the IKE SA (§1.3.2, §2.18); IKERekeyed or
// IKERekeyFailed reports the outcome.
func (s *IKESA) RekeyIKE() error {
	if s.closed {
		return ErrClosed
	}
	s.queue = append(s.queue, &task{kind: taskRekeyIKE})
	return nil
}

// start sends the request of task t on the current IKE SA.
func (s *IKESA) start(t *task, now time.Time) {
	var err error
	switch t.kind {
	case taskCreateChild, taskRekeyChild:
		err = s.startChild(t, now)
	case taskRekeyIKE:
		err = s.startRekeyIKE(t, now)
	case taskDeleteChild:
		err = s.startDeleteChild(t, now)
	case taskDeleteIKE:
		err = s.send(s.cur, message.INFORMATIONAL, []message.Payload{&message.Delete{Protocol: message.ProtoIKE}}, t, now)
	case taskLiveness:
		err = s.send(s.cur, message.INFORMATIONAL, nil, t, now)
	}
	if err != nil {
		s.failTask(s.cur, t, err)
	}
}

// failTask reports a task that ended without its result.
func (s *IKESA) failTask(sa *ikeSA, t *task, err error) {
	if t.ke != nil {
		t.ke.Wipe()
		t.ke = nil
	}
	switch t.kind {
	case taskCreateChild:
		s.events = append(s.events, ChildFailed{Err: err})
	case taskRekeyChild:
		s.events = append(s.events, ChildFailed{ID: t.child.sa.ID, Err: err})
	case taskRekeyIKE:
		s.ikeCollision = nil
		s.events = append(s.events, IKERekeyFailed{Err: err})
	case taskDeleteChild:
		for _, c := range t.children {
			s.removeChild(c)
		}
	case taskDeleteIKE:
		if sa != s.cur {
			s.dropSA(sa)
		} else {
			s.close(IKEDeleted{})
		}
	}
}

// retryAt is when a request refused with TEMPORARY_FAILURE goes again:
// after a random delay in [RetryDelay, 2*RetryDelay), so that two peers
// that refused each other's requests (§2.25.2) do not collide again.
func (s *IKESA) retryAt(now time.Time) time.Time {
	b, err := s.randBytes(2)
	if err != nil {
		return now.Add(s.opts.RetryDelay)
	}
	frac := float64(binary.BigEndian.Uint16(b)) / 65536
	return now.Add(s.opts.RetryDelay + time.Duration(frac*float64(s.opts.RetryDelay)))
}

func (s *IKESA) requeue(t *task, at time.Time) {
	if t.ke != nil {
		t.ke.Wipe()
		t.ke = nil
	}
	t.notBefore = at
	s.queue = append([]*task{t}, s.queue...)
}

// childOffer lists the transforms of a CHILD SA proposal for cfg, with
// the PFS methods in order (first is what the KE payload uses).
func childOffer(cfg *ChildConfig, pfs []uint16) []message.Transform {
	ts := []message.Transform{encrTransform(cfg.ESP.Encr, cfg.ESP.KeyBits)}
	if cfg.ESP.Integ != message.AUTH_NONE {
		ts = append(ts, message.Transform{Type: message.TransformINTEG, ID: cfg.ESP.Integ})
	}
	for _, g := range pfs {
		ts = append(ts, message.Transform{Type: message.TransformKE, ID: g})
	}
	for _, e := range esnIDs(cfg.ESN) {
		ts = append(ts, message.Transform{Type: message.TransformESN, ID: e})
	}
	return ts
}

func esnIDs(m ESNMode) []uint16 {
	switch m {
	case ESNYes:
		return []uint16{message.ESN_YES}
	case ESNEither:
		return []uint16{message.ESN_YES, message.ESN_NO}
	}
	return []uint16{message.ESN_NO}
}

// preferFirst returns list with g moved to the front, if it is in it.
func preferFirst(list []uint16, g uint16) []uint16 {
	out := []uint16{}
	for _, x := range list {
		if x == g {
			out = append(out, x)
		}
	}
	for _, x := range list {
		if x != g {
			out = append(out, x)
		}
	}
	return out
}

func (s *IKESA) startChild(t *task, now time.Time) error {
	cfg := &t.cfg
	var ps []message.Payload
	if t.kind == taskRekeyChild {
		c := t.child
		if c.state != childInstalled || c.replacedBy != nil || s.childByIn(c.sa.In.SPI) == nil {
			return nil // deleted or rekeyed by the peer meanwhile: nothing left to do
		}
		cfg = &c.cfg
		ps = append(ps, &message.Notify{Protocol: message.ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, c.sa.In.SPI), NotifyType: message.REKEY_SA})
	}
	if cfg.Mode == xfrm.ModeTransport {
		ps = append(ps, &message.Notify{NotifyType: message.USE_TRANSPORT_MODE})
	}
	var err error
	if t.spi, err = s.newESPSPI(); err != nil {
		return err
	}
	if t.ni, err = s.randBytes(nonceLen); err != nil {
		return err
	}
	pfs := cfg.PFS
	if t.group != 0 {
		pfs = preferFirst(pfs, t.group) // the group INVALID_KE_PAYLOAD asked for
	}
	t.group = 0
	if len(pfs) > 0 {
		t.group = pfs[0]
	}
	t.offer = childOffer(cfg, pfs)
	ps = append(ps,
		&message.SA{Proposals: []message.Proposal{{Num: 1, Protocol: message.ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, t.spi), Transforms: t.offer}}},
		&message.Nonce{Data: t.ni})
	if t.group != 0 {
		if t.ke, err = ikecrypto.NewKeyExchange(t.group); err != nil {
			return err
		}
		ps = append(ps, &message.KE{Group: t.group, Data: t.ke.Public()})
	}
	lts, rts := cfg.LocalTS, cfg.RemoteTS
	if t.kind == taskRekeyChild {
		lts, rts = t.child.sa.LocalTS, t.child.sa.RemoteTS
	}
	ps = append(ps, &message.TS{Selectors: lts}, &message.TS{Responder: true, Selectors: rts})
	return s.send(s.cur, message.CREATE_CHILD_SA, ps, t, now)
}

func (s *IKESA) rekeyGroups() []uint16 {
	if len(s.opts.RekeyKE) > 0 {
		return s.opts.RekeyKE
	}
	return []uint16{s.cur.suite.KE}
}

func ikeOffer(suite IKESuite, groups []uint16) []message.Transform {
	ts := []message.Transform{encrTransform(suite.Encr, suite.KeyBits)}
	if suite.Integ != message.AUTH_NONE {
		ts = append(ts, message.Transform{Type: message.TransformINTEG, ID: suite.Integ})
	}
	ts = append(ts, message.Transform{Type: message.TransformPRF, ID: suite.PRF})
	for _, g := range groups {
		ts = append(ts, message.Transform{Type: message.TransformKE, ID: g})
	}
	return ts
}

func (s *IKESA) startRekeyIKE(t *task, now time.Time) error {
	groups := s.rekeyGroups()
	if t.group != 0 {
		groups = preferFirst(groups, t.group)
	}
	t.group = groups[0]
	b, err := s.randBytes(8)
	if err != nil {
		return err
	}
	t.ikeSPI = binary.BigEndian.Uint64(b) | 1
	if t.ni, err = s.randBytes(nonceLen); err != nil {
		return err
	}
	if t.ke, err = ikecrypto.NewKeyExchange(t.group); err != nil {
		return err
	}
	t.offer = ikeOffer(s.cur.suite, groups)
	ps := []message.Payload{
		&message.SA{Proposals: []message.Proposal{{Num: 1, Protocol: message.ProtoIKE, SPI: binary.BigEndian.AppendUint64(nil, t.ikeSPI), Transforms: t.offer}}},
		&message.Nonce{Data: t.ni},
		&message.KE{Group: t.group, Data: t.ke.Public()},
	}
	s.ikeCollision = nil
	return s.send(s.cur, message.CREATE_CHILD_SA, ps, t, now)
}

// want is one transform type a responder selects: the acceptable
// transforms in order of preference; optional when the proposal may omit
// the type.
type want struct {
	typ      message.TransformType
	opts     []message.Transform
	optional bool
}

// pick selects one transform per wanted type from proposal p (§3.3.6).
// A type the proposal has but we do not want is acceptable only if the
// proposal allows NONE for it (ID 0: INTEG or KE).
func pick(p *message.Proposal, wants []want) ([]message.Transform, bool) {
	known := map[message.TransformType]bool{}
	var chosen []message.Transform
	for _, w := range wants {
		known[w.typ] = true
		offered := false
		for _, t := range p.Transforms {
			if t.Type == w.typ {
				offered = true
			}
		}
		if !offered {
			if w.optional {
				continue
			}
			return nil, false
		}
		found := false
		for _, o := range w.opts {
			for k := range p.Transforms {
				t := &p.Transforms[k]
				if t.Type == o.Type && t.ID == o.ID && keyBits(t) == keyBits(&o) {
					chosen, found = append(chosen, o), true
					break
				}
			}
			if found {
				break
			}
		}
		if !found {
			return nil, false
		}
	}
	for _, t := range p.Transforms {
		if known[t.Type] {
			continue
		}
		none := false
		for _, u := range p.Transforms {
			if u.Type == t.Type && u.ID == 0 {
				none = true
			}
		}
		if !none {
			return nil, false
		}
	}
	return chosen, true
}

// checkChosen verifies a response's proposal: exactly one transform of
// each type we offered, each one of ours (§2.7).
func checkChosen(p *message.Proposal, offered []message.Transform) bool {
	types := map[message.TransformType]int{}
	for _, o := range offered {
		types[o.Type] = 0
	}
	for k := range p.Transforms {
		t := &p.Transforms[k]
		n, ok := types[t.Type]
		if !ok || n > 0 {
			return false
		}
		types[t.Type] = 1
		found := false
		for _, o := range offered {
			if o.Type == t.Type && o.ID == t.ID && keyBits(&o) == keyBits(t) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	for _, n := range types {
		if n != 1 {
			return false
		}
	}
	return true
}

func transformID(ts []message.Transform, typ message.TransformType) (uint16, bool) {
	for _, t := range ts {
		if t.Type == typ {
			return t.ID, true
		}
	}
	return 0, false
}

// espWants is what a responder selects for a CHILD SA under cfg; kePref
// is the method of the initiator's KE payload, preferred if acceptable.
func espWants(cfg *ChildConfig, kePref uint16) []want {
	w := []want{{typ: message.TransformENCR, opts: []message.Transform{encrTransform(cfg.ESP.Encr, cfg.ESP.KeyBits)}}}
	if cfg.ESP.Integ != message.AUTH_NONE {
		w = append(w, want{typ: message.TransformINTEG, opts: []message.Transform{{Type: message.TransformINTEG, ID: cfg.ESP.Integ}}})
	}
	if len(cfg.PFS) > 0 {
		var ke []message.Transform
		for _, g := range preferFirst(cfg.PFS, kePref) {
			ke = append(ke, message.Transform{Type: message.TransformKE, ID: g})
		}
		w = append(w, want{typ: message.TransformKE, opts: ke})
	}
	var esn []message.Transform
	for _, e := range esnIDs(cfg.ESN) {
		esn = append(esn, message.Transform{Type: message.TransformESN, ID: e})
	}
	// A proposal without ESN transform means no ESN (strongSwan too).
	return append(w, want{typ: message.TransformESN, opts: esn, optional: cfg.ESN != ESNYes})
}

func notify(t message.NotifyType) []message.Payload {
	return []message.Payload{&message.Notify{NotifyType: t}}
}

func invalidKE(g uint16) []message.Payload {
	return []message.Payload{&message.Notify{NotifyType: message.INVALID_KE_PAYLOAD, Data: binary.BigEndian.AppendUint16(nil, g)}}
}

// ourChildExchange reports whether this side's outstanding request on sa
// creates, rekeys or deletes a CHILD SA.
func ourChildExchange(sa *ikeSA) bool {
	if sa.pending == nil {
		return false
	}
	k := sa.pending.task.kind
	return k == taskCreateChild || k == taskRekeyChild || k == taskDeleteChild
}

func ourIKERekey(sa *ikeSA) bool {
	return sa.pending != nil && sa.pending.task.kind == taskRekeyIKE
}

// handleCreateChildRequest answers the peer's CREATE_CHILD_SA (§1.3).
func (s *IKESA) handleCreateChildRequest(sa *ikeSA, ps []message.Payload) []message.Payload {
	sap := find[*message.SA](ps)
	nonce := find[*message.Nonce](ps)
	if sap == nil || nonce == nil || len(sap.Proposals) == 0 {
		return notify(message.INVALID_SYNTAX)
	}
	if sa.replaced {
		// This IKE SA has been rekeyed: it only waits for its Delete.
		return notify(message.TEMPORARY_FAILURE)
	}
	if checkNonce(sa.prf, nonce.Data) != nil {
		return notify(message.INVALID_SYNTAX)
	}
	if sap.Proposals[0].Protocol == message.ProtoIKE {
		return s.answerRekeyIKE(sa, sap, nonce.Data, find[*message.KE](ps))
	}
	return s.answerChild(sa, ps, sap, nonce.Data)
}

func (s *IKESA) answerChild(sa *ikeSA, ps []message.Payload, sap *message.SA, ni []byte) []message.Payload {
	if ourIKERekey(sa) {
		return notify(message.TEMPORARY_FAILURE) // §2.25.2
	}
	ke := find[*message.KE](ps)
	var kePref uint16
	if ke != nil {
		kePref = ke.Group
	}
	tsi, tsr := findTS(ps, false), findTS(ps, true)
	if tsi == nil || tsr == nil {
		return notify(message.INVALID_SYNTAX)
	}
	transport := len(notifies(ps, message.USE_TRANSPORT_MODE)) > 0

	var old *child
	cfgs := s.opts.Children
	if rk := notifies(ps, message.REKEY_SA); len(rk) > 0 {
		n := rk[0]
		if n.Protocol != message.ProtoESP || len(n.SPI) != 4 {
			return notify(message.INVALID_SYNTAX)
		}
		old = s.childByOut(binary.BigEndian.Uint32(n.SPI))
		if old == nil {
			return []message.Payload{&message.Notify{Protocol: message.ProtoESP, SPI: n.SPI, NotifyType: message.CHILD_SA_NOT_FOUND}}
		}
		if old.state != childInstalled || old.replacedBy != nil {
			return notify(message.TEMPORARY_FAILURE) // being deleted or already rekeyed (§2.25)
		}
		c := old.cfg
		c.LocalTS, c.RemoteTS = old.sa.LocalTS, old.sa.RemoteTS
		cfgs = []ChildConfig{c}
	}

	// The first configuration whose proposal and selectors fit.
	var cfg *ChildConfig
	var chosen []message.Transform
	var num uint8
	var peerSPI []byte
	var gotI, gotR []message.TrafficSelector
	proposalOK := false
	for k := range cfgs {
		c := &cfgs[k]
		var ts []message.Transform
		for j := range sap.Proposals {
			p := &sap.Proposals[j]
			if p.Protocol != message.ProtoESP || len(p.SPI) != 4 {
				continue
			}
			if t, ok := pick(p, espWants(c, kePref)); ok {
				ts, num, peerSPI = t, p.Num, p.SPI
				break
			}
		}
		if ts == nil {
			continue
		}
		proposalOK = true
		if transport != (c.Mode == xfrm.ModeTransport) {
			continue
		}
		i, r := narrow(tsi.Selectors, c.RemoteTS), narrow(tsr.Selectors, c.LocalTS)
		if i == nil || r == nil {
			continue
		}
		cfg, chosen, gotI, gotR = c, ts, i, r
		break
	}
	if cfg == nil {
		if proposalOK {
			return notify(message.TS_UNACCEPTABLE)
		}
		return notify(message.NO_PROPOSAL_CHOSEN)
	}
	group, _ := transformID(chosen, message.TransformKE)
	if group != 0 && (ke == nil || ke.Group != group) {
		return invalidKE(group) // §1.3: the initiator retries with this group
	}
	if group == 0 && ke != nil {
		return notify(message.INVALID_SYNTAX)
	}
	nr, err := s.randBytes(nonceLen)
	if err != nil {
		return notify(message.TEMPORARY_FAILURE)
	}
	var gir, kePub []byte
	if group != 0 {
		if kePub, gir, err = ikecrypto.Respond(group, ke.Data); err != nil {
			return notify(message.INVALID_SYNTAX)
		}
		defer clear(gir)
	}
	ourSPI, err := s.newESPSPI()
	if err != nil {
		return notify(message.TEMPORARY_FAILURE)
	}
	esnID, _ := transformID(chosen, message.TransformESN)
	nc, err := s.newChild(sa, cfg, old, false, esnID == message.ESN_YES, ourSPI, binary.BigEndian.Uint32(peerSPI), gir, ni, nr, gotR, gotI)
	if err != nil {
		return notify(message.NO_PROPOSAL_CHOSEN)
	}
	if old == nil {
		s.children = append(s.children, nc)
		s.events = append(s.events, ChildAdded{Child: nc.sa})
	} else {
		s.Counters.ChildRekey++
		nc.outPending = true
		s.children = append(s.children, nc)
		if sa.pending != nil && sa.pending.task.kind == taskRekeyChild && sa.pending.task.child == old {
			old.collision = nc // §2.8.1: resolved when our response arrives
		} else {
			old.state, old.replacedBy = childRekeyed, nc
		}
		s.events = append(s.events, ChildRekeyed{Old: old.sa, New: nc.sa})
	}
	var resp []message.Payload
	if cfg.Mode == xfrm.ModeTransport {
		resp = append(resp, &message.Notify{NotifyType: message.USE_TRANSPORT_MODE})
	}
	resp = append(resp,
		&message.SA{Proposals: []message.Proposal{{Num: num, Protocol: message.ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, ourSPI), Transforms: chosen}}},
		&message.Nonce{Data: nr})
	if group != 0 {
		resp = append(resp, &message.KE{Group: group, Data: kePub})
	}
	return append(resp, &message.TS{Selectors: gotI}, &message.TS{Responder: true, Selectors: gotR})
}

// newChild derives a CHILD SA's keys (§2.17) and builds it. initiator
// says whether this side initiated the CREATE_CHILD_SA.
func (s *IKESA) newChild(sa *ikeSA, cfg *ChildConfig, old *child, initiator, esn bool, ourSPI, peerSPI uint32, gir, ni, nr []byte, lts, rts []message.TrafficSelector) (*child, error) {
	encr, integ, err := espAlgs(cfg.ESP)
	if err != nil {
		return nil, err
	}
	encLen, integLen := keyLens(encr, integ)
	k, err := ikecrypto.DeriveChildKeys(sa.prf, sa.keys.D, gir, ni, nr, encLen, integLen)
	if err != nil {
		return nil, err
	}
	defer k.Wipe()
	p := s.params
	p.mode, p.replay, p.suite, p.esn = cfg.Mode, cfg.ReplayWindow, cfg.ESP, esn
	in, out, err := buildSAs(p, initiator, ourSPI, peerSPI, k)
	if err != nil {
		return nil, err
	}
	id := 0
	if old != nil {
		id = old.sa.ID
	} else {
		id = s.nextID
		s.nextID++
	}
	return &child{sa: ChildSA{ID: id, In: in, Out: out, LocalTS: lts, RemoteTS: rts}, cfg: *cfg, esn: esn,
		ni: append([]byte(nil), ni...), nr: append([]byte(nil), nr...)}, nil
}

// handleCreateChildResponse completes this side's CREATE_CHILD_SA.
func (s *IKESA) handleCreateChildResponse(sa *ikeSA, t *task, ps []message.Payload, now time.Time) {
	if t.kind == taskRekeyIKE {
		s.rekeyIKEResponse(sa, t, ps, now)
		return
	}
	if n := firstError(ps); n != nil {
		s.childError(sa, t, n, now)
		return
	}
	if err := s.childResponse(sa, t, ps); err != nil {
		s.failTask(sa, t, err)
	}
}

// childError handles an error notification answering our CREATE_CHILD_SA.
func (s *IKESA) childError(sa *ikeSA, t *task, n *message.Notify, now time.Time) {
	cfg := &t.cfg
	if t.kind == taskRekeyChild {
		cfg = &t.child.cfg
	}
	switch n.NotifyType {
	case message.INVALID_KE_PAYLOAD:
		// §1.3: retry with the group asked for, if we offered it.
		if len(n.Data) == 2 && t.keRetries < 2 {
			g := binary.BigEndian.Uint16(n.Data)
			for _, x := range cfg.PFS {
				if x == g && g != t.group {
					t.keRetries++
					t.group = g
					s.requeue(t, time.Time{})
					return
				}
			}
		}
	case message.TEMPORARY_FAILURE:
		// §2.25: a collision on the peer's side; try again a bit later.
		if t.kind == taskRekeyChild && t.child.collision != nil {
			// The peer rekeyed the same SA meanwhile and we answered it:
			// its rekey stands (the peer saw ours as the redundant one).
			s.settleCollision(t.child, nil, nil)
			return
		}
		s.requeue(t, s.retryAt(now))
		return
	}
	if t.kind == taskRekeyChild && t.child.collision != nil {
		s.settleCollision(t.child, nil, nil)
	}
	s.failTask(sa, t, &PeerError{Exchange: message.CREATE_CHILD_SA, Notify: n.NotifyType})
}

func (s *IKESA) childResponse(sa *ikeSA, t *task, ps []message.Payload) error {
	cfg := &t.cfg
	var old *child
	if t.kind == taskRekeyChild {
		old = t.child
		cfg = &old.cfg
	}
	sap := find[*message.SA](ps)
	nonce := find[*message.Nonce](ps)
	tsi, tsr := findTS(ps, false), findTS(ps, true)
	if sap == nil || nonce == nil || tsi == nil || tsr == nil {
		return errors.New("exchange: CREATE_CHILD_SA response lacks SA, Nonce, TSi or TSr")
	}
	if len(sap.Proposals) != 1 || sap.Proposals[0].Protocol != message.ProtoESP || len(sap.Proposals[0].SPI) != 4 ||
		!checkChosen(&sap.Proposals[0], t.offer) {
		return errors.New("exchange: CREATE_CHILD_SA response chose a proposal we did not offer")
	}
	if err := checkNonce(sa.prf, nonce.Data); err != nil {
		return err
	}
	lts, rts := cfg.LocalTS, cfg.RemoteTS
	if old != nil {
		lts, rts = old.sa.LocalTS, old.sa.RemoteTS
	}
	if !within(tsi.Selectors, lts) || !within(tsr.Selectors, rts) {
		return errors.New("exchange: CREATE_CHILD_SA response widened the traffic selectors")
	}
	if (len(notifies(ps, message.USE_TRANSPORT_MODE)) > 0) != (cfg.Mode == xfrm.ModeTransport) {
		return errors.New("exchange: CREATE_CHILD_SA responder did not agree on the mode")
	}
	chosen := sap.Proposals[0].Transforms
	var gir []byte
	if t.group != 0 {
		ke := find[*message.KE](ps)
		if g, _ := transformID(chosen, message.TransformKE); ke == nil || g != t.group || ke.Group != t.group {
			return errors.New("exchange: CREATE_CHILD_SA response without the KE payload of our group")
		}
		var err error
		gir, err = t.ke.SharedSecret(ke.Data)
		t.ke.Wipe()
		t.ke = nil
		if err != nil {
			return err
		}
		defer clear(gir)
	}
	esnID, _ := transformID(chosen, message.TransformESN)
	nc, err := s.newChild(sa, cfg, old, true, esnID == message.ESN_YES, t.spi, binary.BigEndian.Uint32(sap.Proposals[0].SPI), gir, t.ni, nonce.Data, tsi.Selectors, tsr.Selectors)
	if err != nil {
		return err
	}
	if old == nil {
		s.children = append(s.children, nc)
		s.events = append(s.events, ChildAdded{Child: nc.sa})
		return nil
	}
	s.Counters.ChildRekey++
	if old.collision != nil {
		s.settleCollision(old, nc, sa)
		return nil
	}
	if s.childByIn(old.sa.In.SPI) == nil {
		// The peer deleted the SA while we rekeyed it (§2.25.1): the new
		// one replaces nothing, and is deleted too.
		s.children = append(s.children, nc)
		s.events = append(s.events, ChildAdded{Child: nc.sa})
		s.queueDelete(nc)
		return nil
	}
	old.state, old.replacedBy = childRekeyed, nc
	s.children = append(s.children, nc)
	s.events = append(s.events, ChildRekeyed{Old: old.sa, New: nc.sa, Outbound: true})
	s.queueDelete(old)
	return nil
}

// lowest returns the smaller of two nonces, octet by octet (§2.8.1).
func lowest(a, b []byte) []byte {
	if bytes.Compare(a, b) < 0 {
		return a
	}
	return b
}

// settleCollision resolves a simultaneous rekey of old (§2.8.1): ours is
// the SA our rekey created (nil if it failed), theirs (old.collision) the
// one we created answering the peer's. The SA created with the lowest of
// the four nonces is redundant and is deleted by the side that initiated
// its exchange; the initiator of the survivor deletes old.
func (s *IKESA) settleCollision(old, ours *child, sa *ikeSA) {
	theirs := old.collision
	old.collision = nil
	old.state = childRekeyed
	if ours == nil || bytes.Compare(lowest(ours.ni, ours.nr), lowest(theirs.ni, theirs.nr)) < 0 {
		// Ours is redundant (or absent): never installed, deleted at once.
		old.replacedBy = theirs
		if ours != nil {
			ours.hidden = true
			s.children = append(s.children, ours)
			s.queueDelete(ours)
		}
		return // the peer deletes old, then theirs goes outbound
	}
	// Ours survives: the peer deletes theirs, we delete old.
	old.replacedBy = ours
	theirs.outPending = false
	theirs.expire = s.now.Add(s.giveUp())
	s.children = append(s.children, ours)
	s.events = append(s.events, ChildRekeyed{Old: old.sa, New: ours.sa, Outbound: true})
	s.queueDelete(old)
}

// answerRekeyIKE answers the peer's rekey of the IKE SA (§1.3.2, §2.18).
func (s *IKESA) answerRekeyIKE(sa *ikeSA, sap *message.SA, ni []byte, ke *message.KE) []message.Payload {
	if ourChildExchange(sa) {
		return notify(message.TEMPORARY_FAILURE) // §2.25.2
	}
	for _, c := range s.children {
		if c.state != childInstalled || c.collision != nil {
			// A CHILD SA rekey or delete is not finished yet.
			return notify(message.TEMPORARY_FAILURE)
		}
	}
	if ke == nil {
		return notify(message.INVALID_SYNTAX)
	}
	groups := []uint16{sa.suite.KE}
	if len(s.opts.RekeyKE) > 0 {
		groups = s.opts.RekeyKE
	}
	var kes []message.Transform
	for _, g := range preferFirst(groups, ke.Group) {
		kes = append(kes, message.Transform{Type: message.TransformKE, ID: g})
	}
	wants := []want{{typ: message.TransformENCR, opts: []message.Transform{encrTransform(sa.suite.Encr, sa.suite.KeyBits)}}}
	if sa.suite.Integ != message.AUTH_NONE {
		wants = append(wants, want{typ: message.TransformINTEG, opts: []message.Transform{{Type: message.TransformINTEG, ID: sa.suite.Integ}}})
	}
	wants = append(wants, want{typ: message.TransformPRF, opts: []message.Transform{{Type: message.TransformPRF, ID: sa.suite.PRF}}},
		want{typ: message.TransformKE, opts: kes})
	var chosen []message.Transform
	var p *message.Proposal
	for k := range sap.Proposals {
		q := &sap.Proposals[k]
		if q.Protocol != message.ProtoIKE || len(q.SPI) != 8 || binary.BigEndian.Uint64(q.SPI) == 0 {
			continue
		}
		if ts, ok := pick(q, wants); ok {
			chosen, p = ts, q
			break
		}
	}
	if p == nil {
		return notify(message.NO_PROPOSAL_CHOSEN)
	}
	group, _ := transformID(chosen, message.TransformKE)
	if ke.Group != group {
		return invalidKE(group)
	}
	nr, err := s.randBytes(nonceLen)
	if err != nil {
		return notify(message.TEMPORARY_FAILURE)
	}
	b, err := s.randBytes(8)
	if err != nil {
		return notify(message.TEMPORARY_FAILURE)
	}
	pub, gir, err := ikecrypto.Respond(group, ke.Data)
	if err != nil {
		return notify(message.INVALID_SYNTAX)
	}
	defer clear(gir)
	suite := sa.suite
	suite.KE = group
	n, err := rekeyedSA(sa, suite, false, binary.BigEndian.Uint64(p.SPI), binary.BigEndian.Uint64(b)|1, gir, ni, nr)
	if err != nil {
		return notify(message.NO_PROPOSAL_CHOSEN)
	}
	s.Counters.IKERekeyResp++
	s.sas = append(s.sas, n)
	if ourIKERekey(sa) {
		s.ikeCollision = n // §2.8.2: settled when our response arrives
	} else {
		s.switchIKE(sa, n)
	}
	return []message.Payload{
		&message.SA{Proposals: []message.Proposal{{Num: p.Num, Protocol: message.ProtoIKE, SPI: binary.BigEndian.AppendUint64(nil, n.spir), Transforms: chosen}}},
		&message.Nonce{Data: nr},
		&message.KE{Group: group, Data: pub},
	}
}

// rekeyedSA derives the IKE SA that replaces old (§2.18): SKEYSEED =
// prf(SK_d (old), g^ir (new) | Ni | Nr), then the SK_* of §2.14 with the
// new SPIs. initiator says whether this side initiated the rekey, which
// makes it the initiator of the new IKE SA.
func rekeyedSA(old *ikeSA, suite IKESuite, initiator bool, spii, spir uint64, gir, ni, nr []byte) (*ikeSA, error) {
	prf, encr, integ, err := ikeAlgs(suite)
	if err != nil {
		return nil, err
	}
	skeyseed := ikecrypto.RekeySKEYSEED(old.prf, old.keys.D, gir, ni, nr)
	encLen, integLen := keyLens(encr, integ)
	keys, err := ikecrypto.DeriveIKEKeys(prf, skeyseed, ni, nr, spii, spir, encLen, integLen)
	clear(skeyseed)
	if err != nil {
		return nil, err
	}
	ir, err := ikecrypto.NewProtector(encr, integ, keys.Ei, keys.Ai)
	if err != nil {
		return nil, err
	}
	ri, err := ikecrypto.NewProtector(encr, integ, keys.Er, keys.Ar)
	if err != nil {
		return nil, err
	}
	n := &ikeSA{spii: spii, spir: spir, initiator: initiator, suite: suite, prf: prf, encr: encr, integ: integ, keys: keys,
		inP: ri, outP: ir, ni: append([]byte(nil), ni...), nr: append([]byte(nil), nr...)}
	if !initiator {
		n.inP, n.outP = ir, ri
	}
	return n, nil
}

// switchIKE makes n the current IKE SA in place of old; the CHILD SAs
// move with it (§2.18).
func (s *IKESA) switchIKE(old, n *ikeSA) {
	old.replaced = true
	// The peer's Delete of it, or ours, is done within this time; if not,
	// the old IKE SA is forgotten all the same.
	old.expire = s.now.Add(s.giveUp())
	s.cur = n
	s.events = append(s.events, IKERekeyed{OldSPIi: old.spii, OldSPIr: old.spir, SPIi: n.spii, SPIr: n.spir, Initiator: n.initiator, Suite: n.suite, Keys: n.keys})
}

func (s *IKESA) rekeyIKEResponse(sa *ikeSA, t *task, ps []message.Payload, now time.Time) {
	theirs := s.ikeCollision
	s.ikeCollision = nil
	fail := func(err error) {
		if theirs != nil {
			s.switchIKE(sa, theirs) // the peer's rekey stands alone
		}
		s.failTask(sa, t, err)
	}
	if n := firstError(ps); n != nil {
		switch n.NotifyType {
		case message.INVALID_KE_PAYLOAD:
			if len(n.Data) == 2 && t.keRetries < 2 && theirs == nil {
				g := binary.BigEndian.Uint16(n.Data)
				for _, x := range s.rekeyGroups() {
					if x == g && g != t.group {
						t.keRetries++
						t.group = g
						s.requeue(t, time.Time{})
						return
					}
				}
			}
		case message.TEMPORARY_FAILURE:
			if theirs == nil {
				s.requeue(t, s.retryAt(now))
				return
			}
		}
		fail(&PeerError{Exchange: message.CREATE_CHILD_SA, Notify: n.NotifyType})
		return
	}
	sap := find[*message.SA](ps)
	nonce := find[*message.Nonce](ps)
	ke := find[*message.KE](ps)
	if sap == nil || nonce == nil || ke == nil || len(sap.Proposals) != 1 || sap.Proposals[0].Protocol != message.ProtoIKE ||
		len(sap.Proposals[0].SPI) != 8 || binary.BigEndian.Uint64(sap.Proposals[0].SPI) == 0 || !checkChosen(&sap.Proposals[0], t.offer) {
		fail(errors.New("exchange: IKE SA rekey response lacks SA, Nonce or KE, or chose a proposal we did not offer"))
		return
	}
	if g, _ := transformID(sap.Proposals[0].Transforms, message.TransformKE); g != t.group || ke.Group != t.group {
		fail(errors.New("exchange: IKE SA rekey response with another KE group"))
		return
	}
	if err := checkNonce(sa.prf, nonce.Data); err != nil {
		fail(err)
		return
	}
	gir, err := t.ke.SharedSecret(ke.Data)
	t.ke.Wipe()
	t.ke = nil
	if err != nil {
		fail(err)
		return
	}
	defer clear(gir)
	suite := sa.suite
	suite.KE = t.group
	ours, err := rekeyedSA(sa, suite, true, t.ikeSPI, binary.BigEndian.Uint64(sap.Proposals[0].SPI), gir, t.ni, nonce.Data)
	if err != nil {
		fail(err)
		return
	}
	s.Counters.IKERekeyInit++
	s.sas = append(s.sas, ours)
	if theirs != nil && bytes.Compare(lowest(ours.ni, ours.nr), lowest(theirs.ni, theirs.nr)) < 0 {
		// §2.8.2: ours has the lowest nonce and is redundant; we delete
		// it, the peer deletes the old one.
		ours.replaced, ours.wantDelete = true, true
		s.switchIKE(sa, theirs)
		return
	}
	if theirs != nil {
		theirs.replaced = true // the peer deletes it
		theirs.expire = now.Add(s.giveUp())
	}
	s.switchIKE(sa, ours)
	sa.wantDelete = true
}
