package exchange

import (
	"crypto/rand"
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
	suite      IKESuite
	prf        *ikecrypto.PRF
	keys       *ikecrypto.IKEKeys
	inP, outP  *ikecrypto.Protector
	natt       bool
	frag       bool     // both sides announced RFC 7383 fragmentation
	peerHashes []uint16 // the initiator's SIGNATURE_HASH_ALGORITHMS; nil if none
	reasm      reassembler
	lastResp   [][]byte // retransmitted when a request is repeated (§2.1)
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

// DropFragments forgets the fragments of an incomplete request, when the
// caller's reassembly timer expires (RFC 7383 §2.6).
func (r *Responder) DropFragments() { r.reasm.reset() }

// Handle processes one received datagram and returns the response to
// send (several datagrams when it is fragmented; possibly an error
// notification), and done once the IKE SA and CHILD SA are up. Nothing
// to send, not done and no error means the datagram was one fragment of
// a request that is not complete yet. An error wrapping ErrUnexpected
// means the request was dropped without an answer; any other error has
// ended the exchange (resp, if not nil, still goes to the peer to tell
// it why).
func (r *Responder) Handle(raw []byte) (resp [][]byte, done bool, err error) {
	m, err := message.Decode(raw)
	if err != nil {
		// Before authentication nothing is answered to garbage (§2.21.1).
		return nil, false, fmt.Errorf("exchange: dropping malformed request: %w: %w", ErrUnexpected, err)
	}
	if m.IsResponse() || !m.IsInitiator() {
		return nil, false, fmt.Errorf("exchange: %w: not a request from an initiator", ErrUnexpected)
	}
	if r.state != respStart && m.SPIi == r.spii && m.MessageID == r.lastReqMID && r.lastResp != nil {
		// A retransmitted request (§2.1). Of a fragmented one, only
		// fragment 1 is answered, so the peer gets the response once per
		// retransmission, not once per fragment (RFC 7383 §2.6.1).
		if skf := find[*message.SKF](m.Payloads); skf != nil && skf.Number != 1 {
			return nil, r.state == respDone, nil
		}
		return r.lastResp, r.state == respDone, nil
	}
	switch {
	case r.state == respStart && m.Exchange == message.IKE_SA_INIT && m.MessageID == 0 && m.SPIr == 0:
		var one []byte
		one, err = r.handleSAInit(raw, m)
		if one != nil {
			resp = [][]byte{one}
		}
	case r.state == respSentSAInit && m.Exchange == message.IKE_AUTH && m.MessageID == 1 && m.SPIi == r.spii && m.SPIr == r.spir:
		var ps []message.Payload
		ps, err = openAny(r.inP, &r.reasm, r.frag, raw, m)
		if errors.Is(err, errIncomplete) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err // dropped unanswered (§2.21.2)
		}
		resp, err = r.handleAuth(ps)
		if err == nil {
			r.result.establish(false, &r.cfg, r.inP, r.outP, raw, resp)
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
		r.reasm.reset()
	}
	if resp != nil && r.state != respStart {
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
	// Our proposals in our order, the initiator's in its order, the
	// group of its KE payload preferred where both offer it.
	chosen, ts, ok := selectProposal(r.cfg.IKEProposals, sa.Proposals, message.ProtoIKE, 0, false, ke.Group)
	if !ok {
		return r.notifyOnly(m, message.NO_PROPOSAL_CHOSEN, nil), &PeerError{Exchange: message.IKE_SA_INIT, Notify: message.NO_PROPOSAL_CHOSEN}
	}
	suite, err := ikeSuiteOf(ts)
	if err != nil {
		return r.notifyOnly(m, message.NO_PROPOSAL_CHOSEN, nil), err
	}
	if ke.Group != suite.KE {
		// §1.3: tell the initiator which group to use; it retries, and this
		// Responder stays ready for that retry.
		g := binary.BigEndian.AppendUint16(nil, suite.KE)
		return r.notifyOnly(m, message.INVALID_KE_PAYLOAD, g), fmt.Errorf("exchange: %w: initiator used KE group %d, asked for %d", ErrUnexpected, ke.Group, suite.KE)
	}
	prf, encr, integ, err := ikeAlgs(suite)
	if err != nil {
		return nil, err
	}
	if err := checkNonce(prf, nonce.Data); err != nil {
		return r.notifyOnly(m, message.INVALID_SYNTAX, nil), err
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
	r.natt = (nat || r.cfg.ForceEncap) && ok
	r.frag = r.cfg.Fragmentation != FragmentNo && len(notifies(m.Payloads, message.IKEV2_FRAGMENTATION_SUPPORTED)) > 0
	r.peerHashes = hashList(m.Payloads)

	pub, gir, err := ikecrypto.Respond(suite.KE, ke.Data)
	if err != nil {
		return r.notifyOnly(m, message.INVALID_SYNTAX, nil), err
	}
	defer clear(gir)
	r.suite, r.prf = suite, prf
	if r.keys, r.inP, r.outP, err = deriveIKESA(prf, encr, integ, r.ni, r.nr, r.spii, r.spir, gir); err != nil {
		return nil, err
	}
	// strongSwan's order: SA, KE, Nonce, NAT-D, CERTREQ, then the status
	// notifications.
	ps := []message.Payload{
		&message.SA{Proposals: []message.Proposal{chosenProposal(chosen.Num, message.ProtoIKE, nil, ts)}},
		&message.KE{Group: suite.KE, Data: pub},
		&message.Nonce{Data: r.nr},
	}
	ps = append(ps, natdNotifies(r.spii, r.spir, r.cfg.Local, r.cfg.Remote, r.cfg.ForceEncap)...)
	if cr := certReq(r.cfg.RemoteAuth.CACerts); cr != nil && r.cfg.RemoteAuth.Method == AuthPubkey && !r.cfg.NoCertReq {
		ps = append(ps, cr)
	}
	ps = append(ps, saInitNotifies(&r.cfg)...)
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

func (r *Responder) seal(inner []message.Payload) ([][]byte, error) {
	h := message.Header{SPIi: r.spii, SPIr: r.spir, Exchange: message.IKE_AUTH, Flags: message.FlagResponse, MessageID: 1}
	return sealFragments(r.outP, h, inner, fragLimit(&r.cfg, r.frag, r.natt))
}

// authError seals an IKE_AUTH response carrying one error notification.
func (r *Responder) authError(t message.NotifyType) [][]byte {
	b, _ := r.seal([]message.Payload{&message.Notify{NotifyType: t}})
	return b
}

func (r *Responder) handleAuth(ps []message.Payload) ([][]byte, error) {
	idi := findID(ps, false)
	auth := find[*message.Auth](ps)
	if idi == nil || auth == nil {
		return r.authError(message.AUTHENTICATION_FAILED), errors.New("exchange: IKE_AUTH request lacks IDi or AUTH")
	}
	if idr := findID(ps, true); idr != nil && !idEqual(r.cfg.LocalID, Identity{Type: idr.IDType, Data: idr.Data}) {
		return r.authError(message.AUTHENTICATION_FAILED), authErr("IKE_AUTH request names another responder identity")
	}
	octets := ikecrypto.SignedOctets(r.prf, r.msg1, r.nr, r.keys.Pi, idi.Body())
	peer, err := verifyPeer(&r.cfg, r.prf, ps, idi, auth, octets)
	if err != nil {
		return r.authError(message.AUTHENTICATION_FAILED), err
	}
	peer.InitialContact = len(notifies(ps, message.INITIAL_CONTACT)) > 0

	// The IKE SA is authenticated; CHILD SA failures from here on are
	// reported but leave it up (§1.2) — with no further exchanges
	// implemented yet, they end this Responder too.
	sa := find[*message.SA](ps)
	tsi, tsr := findTS(ps, false), findTS(ps, true)
	if sa == nil || tsi == nil || tsr == nil {
		return r.authError(message.INVALID_SYNTAX), errors.New("exchange: IKE_AUTH request lacks SA, TSi or TSr")
	}
	// In IKE_AUTH a KE transform in the ESP proposals is ignored (§1.2:
	// the CHILD SA's keys come from this IKE SA's key exchange).
	chosen, ts, ok := selectProposal(r.cfg.ESPProposals, sa.Proposals, message.ProtoESP, 4, true, 0)
	if !ok {
		return r.authError(message.NO_PROPOSAL_CHOSEN), &PeerError{Exchange: message.IKE_AUTH, Notify: message.NO_PROPOSAL_CHOSEN}
	}
	esp, _, err := espSuiteOf(ts)
	if err != nil {
		return r.authError(message.NO_PROPOSAL_CHOSEN), err
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
	encr, integ, _ := espAlgs(esp)
	encLen, integLen := keyLens(encr, integ)
	ck, err := ikecrypto.DeriveChildKeys(r.prf, r.keys.D, nil, r.ni, r.nr, encLen, integLen)
	if err != nil {
		return nil, err
	}
	defer ck.Wipe()
	res := &Result{SPIi: r.spii, SPIr: r.spir, IKE: r.suite, ESP: esp, Peer: peer, Fragmentation: r.frag,
		Keys: r.keys, PRF: r.prf, NATT: r.natt, LocalTS: gotR, RemoteTS: gotI}
	if res.In, res.Out, err = childSAs(&r.cfg, res, false, ourSPI, binary.BigEndian.Uint32(chosen.SPI), ck); err != nil {
		return nil, err
	}

	idr := &message.ID{Responder: true, IDType: r.cfg.LocalID.Type, Data: r.cfg.LocalID.Data}
	myAuth, err := makeAuth(r.prf, &r.cfg.LocalAuth, ikecrypto.SignedOctets(r.prf, r.msg2, r.ni, r.keys.Pr, idr.Body()), r.peerHashes)
	if err != nil {
		return r.authError(message.AUTHENTICATION_FAILED), err
	}
	inner := []message.Payload{idr}
	inner = append(inner, certPayloads(&r.cfg, certRequested(ps))...)
	inner = append(inner, myAuth)
	if transport {
		inner = append(inner, &message.Notify{NotifyType: message.USE_TRANSPORT_MODE})
	}
	inner = append(inner,
		&message.SA{Proposals: []message.Proposal{chosenProposal(chosen.Num, message.ProtoESP, spiBytes(ourSPI), ts)}},
		&message.TS{Selectors: gotI},
		&message.TS{Responder: true, Selectors: gotR},
	)
	resp, err := r.seal(inner)
	if err != nil {
		return nil, err
	}
	r.result = res
	return resp, nil
}
