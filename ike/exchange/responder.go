package exchange

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

type respState uint8

const (
	respStart respState = iota
	respSentSAInit
	respDone
	respFailed
)

// Responder answers one initiator's IKE_SA_INIT and IKE_AUTH. A server
// keeps one Responder per half-open IKE SA, keyed by the initiator's SPI
// and address (cookies against floods, §2.6, are not implemented yet).
type Responder struct {
	cfg   Config
	state respState

	spii, spir uint64
	ni, nr     []byte
	msg1, msg2 []byte // IKE_SA_INIT request as received, response as sent
	prf        *ikecrypto.PRF
	keys       *ikecrypto.IKEKeys
	inP, outP  *ikecrypto.Protector
	natt       bool
	lastResp   []byte // retransmitted when a request is repeated (§2.1)
	lastReqMID uint32
	result     *Result
}

// NewResponder checks cfg and returns a Responder.
func NewResponder(cfg Config) (*Responder, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &Responder{cfg: cfg}, nil
}

// UseNATT reports whether IKE_SA_INIT detected a NAT; the initiator then
// continues on port 4500 and the CHILD SAs are UDP-encapsulated.
func (r *Responder) UseNATT() bool { return r.natt }

// Result returns the outcome once Handle has reported done.
func (r *Responder) Result() *Result { return r.result }

// Handle processes a request and returns the response to send (possibly
// an error notification), and done once the IKE SA and CHILD SA are up.
// An error wrapping ErrUnexpected means the request was dropped without
// an answer; any other error has ended the exchange (resp, if not nil,
// still goes to the peer to tell it why).
func (r *Responder) Handle(raw []byte) (resp []byte, done bool, err error) {
	m, err := message.Decode(raw)
	if err != nil {
		// Before authentication nothing is answered to garbage (§2.21.1).
		return nil, false, fmt.Errorf("exchange: dropping malformed request: %w: %w", ErrUnexpected, err)
	}
	if m.IsResponse() || !m.IsInitiator() {
		return nil, false, fmt.Errorf("exchange: %w: not a request from an initiator", ErrUnexpected)
	}
	if r.state != respStart && m.SPIi == r.spii && m.MessageID == r.lastReqMID && r.lastResp != nil {
		return r.lastResp, r.state == respDone, nil // a retransmitted request (§2.1)
	}
	switch {
	case r.state == respStart && m.Exchange == message.IKE_SA_INIT && m.MessageID == 0 && m.SPIr == 0:
		resp, err = r.handleSAInit(raw, m)
	case r.state == respSentSAInit && m.Exchange == message.IKE_AUTH && m.MessageID == 1 && m.SPIi == r.spii && m.SPIr == r.spir:
		resp, err = r.handleAuth(raw, m)
		if err == nil {
			r.state = respDone
			done = true
		}
	default:
		return nil, false, fmt.Errorf("exchange: %w: %v request %d in state %d", ErrUnexpected, m.Exchange, m.MessageID, r.state)
	}
	if err != nil && !errors.Is(err, ErrUnexpected) {
		r.state = respFailed
		if r.keys != nil {
			r.keys.Wipe()
		}
	}
	if resp != nil {
		r.lastResp, r.lastReqMID = resp, m.MessageID
	}
	return resp, done, err
}

// notifyOnly encodes an unprotected IKE_SA_INIT response carrying one
// notification (§1.2: errors before keys exist travel in the clear).
func (r *Responder) notifyOnly(m *message.Message, t message.NotifyType, data []byte) []byte {
	resp := &message.Message{
		Header:   message.Header{SPIi: m.SPIi, Exchange: message.IKE_SA_INIT, Flags: message.FlagResponse},
		Payloads: []message.Payload{&message.Notify{NotifyType: t, Data: data}},
	}
	b, _ := resp.Encode()
	return b
}

func (r *Responder) handleSAInit(raw []byte, m *message.Message) ([]byte, error) {
	sa := find[*message.SA](m.Payloads)
	ke := find[*message.KE](m.Payloads)
	nonce := find[*message.Nonce](m.Payloads)
	if sa == nil || ke == nil || nonce == nil {
		return nil, fmt.Errorf("exchange: %w: IKE_SA_INIT request lacks SA, KE or Nonce", ErrUnexpected)
	}
	want := r.cfg.IKE.transforms()
	var chosen *message.Proposal
	for k := range sa.Proposals {
		if p := &sa.Proposals[k]; p.Protocol == message.ProtoIKE && len(p.SPI) == 0 && contains(p, want) {
			chosen = p
			break
		}
	}
	if chosen == nil {
		return r.notifyOnly(m, message.NO_PROPOSAL_CHOSEN, nil), &PeerError{Exchange: message.IKE_SA_INIT, Notify: message.NO_PROPOSAL_CHOSEN}
	}
	if ke.Group != r.cfg.IKE.KE {
		// §1.3: tell the initiator which group to use; it retries, and this
		// Responder stays ready for that retry.
		g := binary.BigEndian.AppendUint16(nil, r.cfg.IKE.KE)
		return r.notifyOnly(m, message.INVALID_KE_PAYLOAD, g), fmt.Errorf("exchange: %w: initiator used KE group %d, asked for %d", ErrUnexpected, ke.Group, r.cfg.IKE.KE)
	}
	if prf, _, _, _ := r.cfg.ikeAlgs(); checkNonce(prf, nonce.Data) != nil {
		return r.notifyOnly(m, message.INVALID_SYNTAX, nil), checkNonce(prf, nonce.Data)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	r.spii, r.spir = m.SPIi, binary.BigEndian.Uint64(b[:])|1
	r.ni = append([]byte(nil), nonce.Data...)
	r.nr = make([]byte, nonceLen)
	if _, err := rand.Read(r.nr); err != nil {
		return nil, err
	}
	nat, ok := natDetected(m.Payloads, r.spii, 0, r.cfg.Local, r.cfg.Remote)
	r.natt = nat && ok

	pub, gir, err := ikecrypto.Respond(r.cfg.IKE.KE, ke.Data)
	if err != nil {
		return r.notifyOnly(m, message.INVALID_SYNTAX, nil), err
	}
	defer clear(gir)
	prf, encr, integ, err := r.cfg.ikeAlgs()
	if err != nil {
		return nil, err
	}
	r.prf = prf
	if r.keys, r.inP, r.outP, err = deriveIKESA(prf, encr, integ, r.ni, r.nr, r.spii, r.spir, gir); err != nil {
		return nil, err
	}
	ps := []message.Payload{
		&message.SA{Proposals: []message.Proposal{{Num: chosen.Num, Protocol: message.ProtoIKE, Transforms: want}}},
		&message.KE{Group: r.cfg.IKE.KE, Data: pub},
		&message.Nonce{Data: r.nr},
	}
	ps = append(ps, natdNotifies(r.spii, r.spir, r.cfg.Local, r.cfg.Remote)...)
	resp := &message.Message{
		Header:   message.Header{SPIi: r.spii, SPIr: r.spir, Exchange: message.IKE_SA_INIT, Flags: message.FlagResponse},
		Payloads: ps,
	}
	out, err := resp.Encode()
	if err != nil {
		return nil, err
	}
	r.msg1 = append([]byte(nil), raw...)
	r.msg2 = out
	r.state = respSentSAInit
	return out, nil
}

// authError seals an IKE_AUTH response carrying one error notification.
func (r *Responder) authError(t message.NotifyType) []byte {
	h := message.Header{SPIi: r.spii, SPIr: r.spir, Exchange: message.IKE_AUTH, Flags: message.FlagResponse, MessageID: 1}
	b, _ := sealMessage(r.outP, h, []message.Payload{&message.Notify{NotifyType: t}})
	return b
}

func (r *Responder) handleAuth(raw []byte, m *message.Message) ([]byte, error) {
	ps, err := openMessage(r.inP, raw, m)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnexpected, err) // dropped unanswered (§2.21.2)
	}
	idi := findID(ps, false)
	auth := find[*message.Auth](ps)
	if idi == nil || auth == nil {
		return r.authError(message.AUTHENTICATION_FAILED), errors.New("exchange: IKE_AUTH request lacks IDi or AUTH")
	}
	if idi.IDType != r.cfg.RemoteID.Type || subtle.ConstantTimeCompare(idi.Data, r.cfg.RemoteID.Data) != 1 || auth.Method != message.AuthSharedKeyMIC {
		return r.authError(message.AUTHENTICATION_FAILED), errors.New("exchange: IKE_AUTH request from an unexpected identity or auth method")
	}
	octets := ikecrypto.SignedOctets(r.prf, r.msg1, r.nr, r.keys.Pi, idi.Body())
	if subtle.ConstantTimeCompare(ikecrypto.PSKAuth(r.prf, r.cfg.PSK, octets), auth.Data) != 1 {
		return r.authError(message.AUTHENTICATION_FAILED), errors.New("exchange: IKE_AUTH request AUTH does not verify (wrong PSK?)")
	}
	if idr := findID(ps, true); idr != nil && (idr.IDType != r.cfg.LocalID.Type || subtle.ConstantTimeCompare(idr.Data, r.cfg.LocalID.Data) != 1) {
		return r.authError(message.AUTHENTICATION_FAILED), errors.New("exchange: IKE_AUTH request names another responder identity")
	}

	// The IKE SA is authenticated; CHILD SA failures from here on are
	// reported but leave it up (§1.2) — with no further exchanges
	// implemented yet, they end this Responder too.
	sa := find[*message.SA](ps)
	tsi, tsr := findTS(ps, false), findTS(ps, true)
	if sa == nil || tsi == nil || tsr == nil {
		return r.authError(message.INVALID_SYNTAX), errors.New("exchange: IKE_AUTH request lacks SA, TSi or TSr")
	}
	want := r.cfg.ESP.transforms()
	var chosen *message.Proposal
	for k := range sa.Proposals {
		if p := &sa.Proposals[k]; p.Protocol == message.ProtoESP && len(p.SPI) == 4 && contains(p, want) {
			chosen = p
			break
		}
	}
	if chosen == nil {
		return r.authError(message.NO_PROPOSAL_CHOSEN), &PeerError{Exchange: message.IKE_AUTH, Notify: message.NO_PROPOSAL_CHOSEN}
	}
	// From the initiator's view TSi is its side: our RemoteTS.
	gotI, gotR := narrow(tsi.Selectors, r.cfg.RemoteTS), narrow(tsr.Selectors, r.cfg.LocalTS)
	if gotI == nil || gotR == nil {
		return r.authError(message.TS_UNACCEPTABLE), &PeerError{Exchange: message.IKE_AUTH, Notify: message.TS_UNACCEPTABLE}
	}
	transport := len(notifies(ps, message.USE_TRANSPORT_MODE)) > 0
	if transport != (r.cfg.Mode == xfrm.ModeTransport) {
		return r.authError(message.NO_PROPOSAL_CHOSEN), errors.New("exchange: initiator asked for another CHILD SA mode")
	}

	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	ourSPI := binary.BigEndian.Uint32(b[:]) | 0x100
	encr, integ, _ := espAlgs(r.cfg.ESP)
	encLen, integLen := keyLens(encr, integ)
	ck, err := ikecrypto.DeriveChildKeys(r.prf, r.keys.D, nil, r.ni, r.nr, encLen, integLen)
	if err != nil {
		return nil, err
	}
	defer ck.Wipe()
	res := &Result{SPIi: r.spii, SPIr: r.spir, Keys: r.keys, PRF: r.prf, NATT: r.natt, LocalTS: gotR, RemoteTS: gotI}
	if res.In, res.Out, err = childSAs(&r.cfg, res, false, ourSPI, binary.BigEndian.Uint32(chosen.SPI), ck); err != nil {
		return nil, err
	}

	idr := &message.ID{Responder: true, IDType: r.cfg.LocalID.Type, Data: r.cfg.LocalID.Data}
	myAuth := ikecrypto.PSKAuth(r.prf, r.cfg.PSK, ikecrypto.SignedOctets(r.prf, r.msg2, r.ni, r.keys.Pr, idr.Body()))
	inner := []message.Payload{idr, &message.Auth{Method: message.AuthSharedKeyMIC, Data: myAuth}}
	if transport {
		inner = append(inner, &message.Notify{NotifyType: message.USE_TRANSPORT_MODE})
	}
	inner = append(inner,
		&message.SA{Proposals: []message.Proposal{{Num: chosen.Num, Protocol: message.ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, ourSPI), Transforms: want}}},
		&message.TS{Selectors: gotI},
		&message.TS{Responder: true, Selectors: gotR},
	)
	h := message.Header{SPIi: r.spii, SPIr: r.spir, Exchange: message.IKE_AUTH, Flags: message.FlagResponse, MessageID: 1}
	resp, err := sealMessage(r.outP, h, inner)
	if err != nil {
		return nil, err
	}
	res.establish(false, &r.cfg, r.inP, r.outP, raw, [][]byte{resp})
	r.result = res
	return resp, nil
}
