package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Session drives an established IKE SA: the exchanges after IKE_AUTH
// (CREATE_CHILD_SA, INFORMATIONAL, liveness). The daemon runs one
// goroutine per IKE SA that feeds its Session every message received for
// the SA and a time tick, sends what it returns and applies its events to
// the xfrm engine. The full state machine (rekeying both ways, collisions,
// DPD with strongSwan's timing) is ike/exchange's; until it lands,
// infoSession below does INFORMATIONAL (delete, liveness) only.
type Session interface {
	// Handle processes a message received for the IKE SA.
	Handle(msg []byte, now time.Time) (out [][]byte, evs []SessionEvent, err error)
	// Tick runs the timers: retransmissions, liveness checks, rekeying.
	Tick(now time.Time) (out [][]byte, evs []SessionEvent)
	// AddChild records a CHILD SA the daemon installed (from IKE_AUTH).
	AddChild(inSPI, outSPI uint32)
	// DeleteChild starts deleting the CHILD SA whose inbound SPI is inSPI.
	DeleteChild(inSPI uint32, now time.Time) (out [][]byte, err error)
	// RekeyChild starts rekeying it (CREATE_CHILD_SA with REKEY_SA).
	RekeyChild(inSPI uint32, now time.Time) (out [][]byte, err error)
	// Delete starts deleting the IKE SA and its children.
	Delete(now time.Time) (out [][]byte, err error)
	// CreateChild starts a CREATE_CHILD_SA for another CHILD SA of the
	// configured child named name; ChildAdded reports it.
	CreateChild(name string, now time.Time) (out [][]byte, err error)
}

// EventKind says what a SessionEvent reports.
type EventKind uint8

// Session events.
const (
	// ChildAdded: a new CHILD SA (In, Out) to install.
	ChildAdded EventKind = iota + 1
	// ChildRekeyed: In, Out replace the CHILD SA OldInSPI: install the
	// new pair, switch outbound, remove the old one after. Without Out
	// (SPI 0) only the inbound SA goes in and the old outbound SA stays
	// in use until ChildOutbound.
	ChildRekeyed
	// ChildDeleted: the CHILD SA OldInSPI is gone; remove it.
	ChildDeleted
	// ChildOutbound: the outbound SA Out of the CHILD SA whose inbound
	// SPI is OldInSPI, held back by a ChildRekeyed without one. A
	// responder installs its new outbound SA only once the initiator has
	// its new inbound one (strongSwan waits for the initiator's delete of
	// the old SA), so no packet meets an SA not there yet.
	ChildOutbound
	// IKERekeyed: the IKE SA continues as SPIi/SPIr.
	IKERekeyed
	// IKEDeleted: the IKE SA was deleted by either side.
	IKEDeleted
	// Dead: the peer did not answer (DPD or a request's retransmissions).
	Dead
)

// SessionEvent is one change a Session reports.
type SessionEvent struct {
	Kind EventKind
	// Child names the configured child of a ChildAdded.
	Child string
	// In and Out are the new CHILD SA pair (ChildAdded, ChildRekeyed),
	// as exchange.Result gives them; the daemon sets the reqid,
	// lifetimes and NAT ports, and wipes the keys after installing.
	In, Out xfrm.SAConfig
	// LocalTS and RemoteTS are the new pair's traffic selectors (a
	// ChildRekeyed without them keeps the old ones).
	LocalTS, RemoteTS []message.TrafficSelector
	// OldInSPI names the CHILD SA rekeyed or deleted by our inbound SPI.
	OldInSPI uint32
	// SPIi and SPIr are the IKE SA's new SPIs (IKERekeyed).
	SPIi, SPIr uint64
	// KeyLog is the new IKE SA's ikev2_decryption_table line
	// (IKERekeyed), for Options.KeyLog.
	KeyLog string
}

// sessionRekeys says whether newSession's sessions rekey (the stop-gap
// does not: a CHILD SA's hard expiry then ends its IKE SA).
var sessionRekeys = false

// newSession makes the Session of an IKE SA that IKE_AUTH established;
// it owns res.Keys from here (and wipes what it does not keep). The
// stop-gap is the default; the IKE SA state machine of ike/exchange
// replaces it (ikesa_session.go).
var newSession = func(sa *ikeSA, res *exchange.Result, now time.Time) (Session, error) {
	s, err := newInfoSession(sa.initiator, &sa.xcfg, res, sa.d.opts.Retransmit, sa.conn.c.DPDDelay, now)
	res.Keys.Wipe() // the stop-gap does no CREATE_CHILD_SA: SK_d is not needed
	return s, err
}

// ErrNotSupported is returned for exchanges infoSession does not do.
var ErrNotSupported = errors.New("daemon: exchange not supported until the IKE SA state machine lands")

// infoSession is the stop-gap Session: INFORMATIONAL exchanges with
// Delete payloads (children and the IKE SA), empty ones (liveness, both
// as requester after dpdDelay of silence and as responder), retransmission
// of requests on the Retransmit schedule and of the last response for a
// repeated request (RFC 7296 §2.1). CREATE_CHILD_SA requests are refused
// with NO_ADDITIONAL_SAS (§1.3), which tells the peer to keep the SAs it
// has.
type infoSession struct {
	initiator  bool
	spii, spir uint64
	out, in    *ikecrypto.Protector
	rt         exchange.Retransmit
	dpdDelay   time.Duration

	nextMID   uint32 // our next request
	expectMID uint32 // the peer's next request
	lastResp  []byte
	lastRecv  time.Time

	pending *pendingReq
	queue   []queuedReq
	// children maps our inbound SPI to the peer's (our outbound SA's).
	children map[uint32]uint32
}

type reqKind uint8

const (
	reqDeleteChild reqKind = iota + 1
	reqDeleteIKE
	reqDPD
)

type queuedReq struct {
	kind reqKind
	spi  uint32
}

type pendingReq struct {
	queuedReq
	mid     uint32
	msg     []byte
	sent    time.Time
	timeout time.Duration
	tries   int
}

// newInfoSession builds the stop-gap session from the IKE_AUTH result.
func newInfoSession(initiator bool, cfg *exchange.Config, r *exchange.Result, rt exchange.Retransmit, dpd time.Duration, now time.Time) (*infoSession, error) {
	encr, err := ikecrypto.LookupEncr(cfg.IKE.Encr, cfg.IKE.KeyBits)
	if err != nil {
		return nil, err
	}
	var integ *ikecrypto.Integ
	if !encr.AEAD {
		if integ, err = ikecrypto.LookupInteg(cfg.IKE.Integ); err != nil {
			return nil, err
		}
	}
	pi, err := ikecrypto.NewProtector(encr, integ, r.Keys.Ei, r.Keys.Ai)
	if err != nil {
		return nil, err
	}
	pr, err := ikecrypto.NewProtector(encr, integ, r.Keys.Er, r.Keys.Ar)
	if err != nil {
		return nil, err
	}
	s := &infoSession{initiator: initiator, spii: r.SPIi, spir: r.SPIr, rt: normRetransmit(rt), dpdDelay: dpd,
		lastRecv: now, children: map[uint32]uint32{}}
	// IKE_SA_INIT and IKE_AUTH used the original initiator's IDs 0 and 1;
	// the responder's own requests start at 0 (§2.2).
	if initiator {
		s.out, s.in, s.nextMID, s.expectMID = pi, pr, 2, 0
	} else {
		s.out, s.in, s.nextMID, s.expectMID = pr, pi, 0, 2
	}
	return s, nil
}

func normRetransmit(r exchange.Retransmit) exchange.Retransmit {
	if r.Timeout <= 0 {
		r.Timeout = 4 * time.Second
	}
	if r.Base < 1 {
		r.Base = 1.8
	}
	if r.Tries <= 0 {
		r.Tries = 5
	}
	return r
}

func (s *infoSession) AddChild(inSPI, outSPI uint32) { s.children[inSPI] = outSPI }

func (s *infoSession) header(resp bool, mid uint32) message.Header {
	h := message.Header{SPIi: s.spii, SPIr: s.spir, Exchange: message.INFORMATIONAL, MessageID: mid}
	if s.initiator {
		h.Flags |= message.FlagInitiator
	}
	if resp {
		h.Flags |= message.FlagResponse
	}
	return h
}

// seal encodes a message whose payloads travel in one SK payload
// (§3.14), as exchange's sealMessage does.
func seal(p *ikecrypto.Protector, h message.Header, inner []message.Payload) ([]byte, error) {
	pt, err := message.AppendPayloads(nil, inner)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	first := message.NoNextPayload
	if len(inner) > 0 {
		first = inner[0].Type()
	}
	n := p.SealedLen(len(pt))
	outer := &message.Message{Header: h, Payloads: []message.Payload{&message.SK{Next: first}}}
	b, err := outer.AppendEncode(make([]byte, 0, message.HeaderLen+4+n))
	if err != nil {
		return nil, err
	}
	total := len(b) + n
	if total > message.MaxMessageLen {
		return nil, fmt.Errorf("daemon: message of %d bytes needs fragmentation", total)
	}
	binary.BigEndian.PutUint32(b[24:28], uint32(total))
	binary.BigEndian.PutUint16(b[len(b)-2:], uint16(4+n))
	return p.Seal(b, pt)
}

// open decrypts a message's SK payload.
func open(p *ikecrypto.Protector, raw []byte, m *message.Message) ([]message.Payload, error) {
	if len(m.Payloads) == 0 {
		return nil, errors.New("no SK payload")
	}
	sk, ok := m.Payloads[len(m.Payloads)-1].(*message.SK)
	if !ok {
		return nil, errors.New("no SK payload")
	}
	bodyAt := len(raw) - len(sk.Data)
	pt, err := p.Open(raw, bodyAt)
	if err != nil {
		return nil, err
	}
	ps, err := message.DecodePayloads(sk.Next, pt, bodyAt)
	clear(pt)
	return ps, err
}

func (s *infoSession) Handle(raw []byte, now time.Time) ([][]byte, []SessionEvent, error) {
	m, err := message.Decode(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("malformed message: %w", err)
	}
	if m.SPIi != s.spii || m.SPIr != s.spir {
		return nil, nil, errors.New("message for another IKE SA")
	}
	if m.IsResponse() {
		return s.handleResponse(raw, m, now)
	}
	// A request: the original initiator's carry the I flag (§3.1).
	if m.IsInitiator() == s.initiator {
		return nil, nil, errors.New("request with our own role flag")
	}
	if m.MessageID+1 == s.expectMID && s.lastResp != nil {
		return [][]byte{s.lastResp}, nil, nil // a retransmitted request (§2.1)
	}
	if m.MessageID != s.expectMID {
		return nil, nil, fmt.Errorf("request %d outside the window (expect %d)", m.MessageID, s.expectMID)
	}
	ps, err := open(s.in, raw, m)
	if err != nil {
		return nil, nil, fmt.Errorf("%v request %d: %w", m.Exchange, m.MessageID, err)
	}
	s.lastRecv = now
	var reply []message.Payload
	var evs []SessionEvent
	switch m.Exchange {
	case message.INFORMATIONAL:
		reply, evs = s.informational(ps)
	case message.CREATE_CHILD_SA:
		reply = []message.Payload{&message.Notify{NotifyType: message.NO_ADDITIONAL_SAS}}
	default:
		return nil, nil, fmt.Errorf("%v request in an established IKE SA", m.Exchange)
	}
	h := s.header(true, m.MessageID)
	h.Exchange = m.Exchange
	resp, err := seal(s.out, h, reply)
	if err != nil {
		return nil, nil, err
	}
	s.lastResp = resp
	s.expectMID++
	return [][]byte{resp}, evs, nil
}

// informational answers an INFORMATIONAL request: deletes and liveness.
func (s *infoSession) informational(ps []message.Payload) ([]message.Payload, []SessionEvent) {
	var reply []message.Payload
	var evs []SessionEvent
	var ours [][]byte
	for _, p := range ps {
		d, ok := p.(*message.Delete)
		if !ok {
			continue
		}
		switch d.Protocol {
		case message.ProtoIKE:
			// §1.4.1: the response is empty; the IKE SA and its
			// children are gone.
			return nil, []SessionEvent{{Kind: IKEDeleted}}
		case message.ProtoESP:
			for _, spi := range d.SPIs {
				if len(spi) != 4 {
					continue
				}
				peer := binary.BigEndian.Uint32(spi)
				for in, out := range s.children {
					if out == peer {
						ours = append(ours, binary.BigEndian.AppendUint32(nil, in))
						delete(s.children, in)
						evs = append(evs, SessionEvent{Kind: ChildDeleted, OldInSPI: in})
					}
				}
			}
		}
	}
	if len(ours) > 0 {
		reply = append(reply, &message.Delete{Protocol: message.ProtoESP, SPISize: 4, SPIs: ours})
	}
	return reply, evs
}

func (s *infoSession) handleResponse(raw []byte, m *message.Message, now time.Time) ([][]byte, []SessionEvent, error) {
	p := s.pending
	if p == nil || m.MessageID != p.mid {
		return nil, nil, fmt.Errorf("response %d to no request of ours", m.MessageID)
	}
	if m.IsInitiator() == s.initiator {
		return nil, nil, errors.New("response with our own role flag")
	}
	if _, err := open(s.in, raw, m); err != nil {
		return nil, nil, fmt.Errorf("%v response %d: %w", m.Exchange, m.MessageID, err)
	}
	s.lastRecv = now
	s.pending = nil
	var evs []SessionEvent
	switch p.kind {
	case reqDeleteIKE:
		return nil, []SessionEvent{{Kind: IKEDeleted}}, nil
	case reqDeleteChild:
		evs = append(evs, SessionEvent{Kind: ChildDeleted, OldInSPI: p.spi})
	}
	out, err := s.next(now)
	return out, evs, err
}

// next sends the first queued request when none is outstanding (one
// request at a time: a window of 1, §2.3).
func (s *infoSession) next(now time.Time) ([][]byte, error) {
	if s.pending != nil || len(s.queue) == 0 {
		return nil, nil
	}
	q := s.queue[0]
	s.queue = s.queue[1:]
	var ps []message.Payload
	switch q.kind {
	case reqDeleteChild:
		if _, ok := s.children[q.spi]; !ok {
			return s.next(now)
		}
		delete(s.children, q.spi)
		ps = []message.Payload{&message.Delete{Protocol: message.ProtoESP, SPISize: 4, SPIs: [][]byte{binary.BigEndian.AppendUint32(nil, q.spi)}}}
	case reqDeleteIKE:
		ps = []message.Payload{&message.Delete{Protocol: message.ProtoIKE}}
	}
	msg, err := seal(s.out, s.header(false, s.nextMID), ps)
	if err != nil {
		return nil, err
	}
	s.pending = &pendingReq{queuedReq: q, mid: s.nextMID, msg: msg, sent: now, timeout: s.rt.Timeout}
	s.nextMID++
	return [][]byte{msg}, nil
}

func (s *infoSession) Tick(now time.Time) ([][]byte, []SessionEvent) {
	if p := s.pending; p != nil {
		if now.Sub(p.sent) < p.timeout {
			return nil, nil
		}
		if p.tries >= s.rt.Tries {
			if p.kind == reqDeleteIKE {
				// A peer that does not answer our delete is gone too.
				return nil, []SessionEvent{{Kind: IKEDeleted}}
			}
			return nil, []SessionEvent{{Kind: Dead}}
		}
		p.tries++
		p.sent = now
		p.timeout = time.Duration(float64(p.timeout) * s.rt.Base)
		return [][]byte{p.msg}, nil
	}
	if s.dpdDelay > 0 && len(s.queue) == 0 && now.Sub(s.lastRecv) >= s.dpdDelay {
		s.queue = append(s.queue, queuedReq{kind: reqDPD})
	}
	out, _ := s.next(now)
	return out, nil
}

func (s *infoSession) DeleteChild(inSPI uint32, now time.Time) ([][]byte, error) {
	if _, ok := s.children[inSPI]; !ok {
		return nil, fmt.Errorf("no CHILD SA with inbound SPI 0x%08x", inSPI)
	}
	s.queue = append(s.queue, queuedReq{kind: reqDeleteChild, spi: inSPI})
	return s.next(now)
}

func (s *infoSession) RekeyChild(uint32, time.Time) ([][]byte, error) { return nil, ErrNotSupported }

func (s *infoSession) CreateChild(string, time.Time) ([][]byte, error) { return nil, ErrNotSupported }

func (s *infoSession) Delete(now time.Time) ([][]byte, error) {
	// The IKE SA's delete goes before anything still queued: it takes
	// the children with it (§1.4.1).
	s.queue = []queuedReq{{kind: reqDeleteIKE}}
	return s.next(now)
}
