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

// ErrUnexpected is wrapped by the error for a message that does not
// belong to the exchange in progress (wrong SPI, message ID, exchange or
// flags). RFC 7296 §2.21: such a message is dropped, the exchange goes on.
var ErrUnexpected = errors.New("unexpected message")

const nonceLen = 32

// maxKERetries bounds INVALID_KE_PAYLOAD round trips: each must name a
// group we offer and have not tried, so there are at most as many as
// groups; this also stops two peers that keep asking for something else.
const maxKERetries = 4

type initState uint8

const (
	initStart initState = iota
	initSentSAInit
	initSentAuth
	initDone
	initFailed
)

// Initiator runs IKE_SA_INIT and IKE_AUTH as the original initiator.
type Initiator struct {
	cfg   Config
	state initState

	spii, spir uint64
	keGroup    uint16 // the group of our KE payload
	keTried    []uint16
	ke         ikecrypto.KeyExchange
	ni, nr     []byte
	msg1       []byte // our IKE_SA_INIT request as sent: our AUTH signs it
	msg2       []byte // the IKE_SA_INIT response as received: the peer's AUTH signs it
	cookie     []byte
	espSPI     uint32
	ikeOffer   []message.Proposal
	espOffer   []message.Proposal

	suite      IKESuite
	prf        *ikecrypto.PRF
	keys       *ikecrypto.IKEKeys
	outP       *ikecrypto.Protector
	inP        *ikecrypto.Protector
	natt       bool
	frag       bool     // both sides announced RFC 7383 fragmentation
	peerHashes []uint16 // the responder's SIGNATURE_HASH_ALGORITHMS; nil if none
	certAsked  bool     // the responder sent a CERTREQ
	reasm      reassembler
	result     *Result
}

// NewInitiator checks cfg and returns an Initiator.
func NewInitiator(cfg Config) (*Initiator, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	i := &Initiator{cfg: cfg, ikeOffer: withSPI(cfg.IKEProposals, nil)}
	i.keGroup = keGroups(i.ikeOffer)[0]
	return i, nil
}

// Start returns the IKE_SA_INIT request to send to Remote on port 500.
// It offers all of Config.IKEProposals with a KE payload of the first
// proposal's first group.
func (i *Initiator) Start() ([]byte, error) {
	if i.state != initStart {
		return nil, errors.New("exchange: initiator already started")
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	i.spii = binary.BigEndian.Uint64(b[:]) | 1 // never zero
	i.ni = make([]byte, nonceLen)
	if _, err := rand.Read(i.ni); err != nil {
		return nil, err
	}
	return i.saInitRequest()
}

func (i *Initiator) saInitRequest() ([]byte, error) {
	if i.ke == nil {
		var err error
		if i.ke, err = ikecrypto.NewKeyExchange(i.keGroup); err != nil {
			return nil, err
		}
		i.keTried = append(i.keTried, i.keGroup)
	}
	var ps []message.Payload
	if i.cookie != nil {
		// §2.6: the COOKIE notification comes first.
		ps = append(ps, &message.Notify{NotifyType: message.COOKIE, Data: i.cookie})
	}
	ps = append(ps,
		&message.SA{Proposals: i.ikeOffer},
		&message.KE{Group: i.keGroup, Data: i.ke.Public()},
		&message.Nonce{Data: i.ni},
	)
	ps = append(ps, natdNotifies(i.spii, 0, i.cfg.Local, i.cfg.Remote, i.cfg.ForceEncap)...)
	ps = append(ps, saInitNotifies(&i.cfg)...)
	m := &message.Message{
		Header:   message.Header{SPIi: i.spii, Exchange: message.IKE_SA_INIT, Flags: message.FlagInitiator},
		Payloads: ps,
	}
	b, err := m.Encode()
	if err != nil {
		return nil, err
	}
	i.msg1 = b
	i.state = initSentSAInit
	return b, nil
}

// saInitNotifies are the status notifications both sides add to
// IKE_SA_INIT, in strongSwan's order: FRAGMENTATION_SUPPORTED (RFC 7383
// §2.3) unless fragmentation is off, and SIGNATURE_HASH_ALGORITHMS (RFC
// 7427 §4) with the hashes we accept.
func saInitNotifies(c *Config) []message.Payload {
	var ps []message.Payload
	if c.Fragmentation != FragmentNo {
		ps = append(ps, &message.Notify{NotifyType: message.IKEV2_FRAGMENTATION_SUPPORTED})
	}
	return append(ps, hashNotify(c.RemoteAuth.Hashes))
}

// UseNATT reports whether IKE_SA_INIT detected a NAT: the caller sends
// the IKE_AUTH request, and everything after it, from and to port 4500
// with the non-ESP marker (RFC 3948 §2.2, RFC 7296 §2.23).
func (i *Initiator) UseNATT() bool { return i.natt }

// Result returns the outcome once Handle has reported done.
func (i *Initiator) Result() *Result { return i.result }

// DropFragments forgets the fragments of an incomplete response; the
// caller does so when its reassembly timer expires (RFC 7383 §2.6). A
// retransmitted request makes the responder send all of them again.
func (i *Initiator) DropFragments() { i.reasm.reset() }

// Handle processes one received datagram. It returns the next request to
// send (several datagrams when it is fragmented), or done once the IKE
// SA and the CHILD SA are up. Nothing to send, not done and no error
// means the datagram was one fragment of a response that is not complete
// yet. An error wrapping ErrUnexpected means the message was ignored and
// the exchange goes on; any other error ends it.
func (i *Initiator) Handle(raw []byte) (next [][]byte, done bool, err error) {
	m, err := message.Decode(raw)
	if err != nil {
		return nil, false, fmt.Errorf("exchange: dropping malformed response: %w: %w", ErrUnexpected, err)
	}
	if !m.IsResponse() || m.IsInitiator() || m.SPIi != i.spii {
		return nil, false, fmt.Errorf("exchange: %w: not a response to us", ErrUnexpected)
	}
	switch {
	case i.state == initSentSAInit && m.Exchange == message.IKE_SA_INIT && m.MessageID == 0:
		var req []byte
		req, err = i.handleSAInit(raw, m) // IKE_SA_INIT again (cookie, other group) or nil: IKE_AUTH follows
		if err == nil && req != nil {
			return [][]byte{req}, false, nil
		}
		if err == nil {
			next, err = i.authRequest()
		}
	case i.state == initSentAuth && m.Exchange == message.IKE_AUTH && m.MessageID == 1 && m.SPIr == i.spir:
		var ps []message.Payload
		ps, err = openAny(i.inP, &i.reasm, i.frag, raw, m)
		if errors.Is(err, errIncomplete) {
			return nil, false, nil
		}
		if err == nil {
			err = i.handleAuth(ps)
			done = err == nil
		}
	default:
		return nil, false, fmt.Errorf("exchange: %w: %v response %d in state %d", ErrUnexpected, m.Exchange, m.MessageID, i.state)
	}
	if err != nil {
		if !errors.Is(err, ErrUnexpected) {
			i.fail()
		}
		return nil, false, err
	}
	return next, done, nil
}

func (i *Initiator) fail() {
	i.state = initFailed
	if i.ke != nil {
		i.ke.Wipe()
	}
	if i.keys != nil {
		i.keys.Wipe()
	}
	i.reasm.reset()
}

// handleSAInit processes the IKE_SA_INIT response: a new IKE_SA_INIT
// request to send after a COOKIE or INVALID_KE_PAYLOAD, or nil when the
// keys are derived and IKE_AUTH follows.
func (i *Initiator) handleSAInit(raw []byte, m *message.Message) ([]byte, error) {
	if c := notifies(m.Payloads, message.COOKIE); len(c) == 1 && i.cookie == nil {
		i.cookie = append([]byte(nil), c[0].Data...)
		return i.saInitRequest()
	}
	if n := firstError(m.Payloads); n != nil {
		if n.NotifyType == message.INVALID_KE_PAYLOAD && len(n.Data) == 2 {
			// §1.3 and §2.7: retry with the group the responder asks for if
			// we offered it; same SPI, nonce and cookie (strongSwan keeps
			// them too), a fresh KE.
			g := binary.BigEndian.Uint16(n.Data)
			if containsU16(keGroups(i.ikeOffer), g) && !containsU16(i.keTried, g) && len(i.keTried) < maxKERetries {
				i.ke.Wipe()
				i.ke, i.keGroup = nil, g
				return i.saInitRequest()
			}
			return nil, fmt.Errorf("exchange: responder asks for KE group %d, which we did not offer or tried already: %w",
				g, &PeerError{Exchange: message.IKE_SA_INIT, Notify: n.NotifyType})
		}
		return nil, &PeerError{Exchange: message.IKE_SA_INIT, Notify: n.NotifyType}
	}
	if m.SPIr == 0 {
		return nil, errors.New("exchange: IKE_SA_INIT response with zero responder SPI")
	}
	sa := find[*message.SA](m.Payloads)
	ke := find[*message.KE](m.Payloads)
	nonce := find[*message.Nonce](m.Payloads)
	if sa == nil || ke == nil || nonce == nil {
		return nil, errors.New("exchange: IKE_SA_INIT response lacks SA, KE or Nonce")
	}
	if len(sa.Proposals) != 1 || sa.Proposals[0].Protocol != message.ProtoIKE || len(sa.Proposals[0].SPI) != 0 {
		return nil, errors.New("exchange: IKE_SA_INIT response does not hold one IKE proposal")
	}
	if err := acceptResponse(i.ikeOffer, &sa.Proposals[0], false); err != nil {
		return nil, err
	}
	suite, err := ikeSuiteOf(sa.Proposals[0].Transforms)
	if err != nil {
		return nil, err
	}
	if suite.KE != i.keGroup || ke.Group != i.keGroup {
		return nil, fmt.Errorf("exchange: IKE_SA_INIT response chose KE group %d with a KE payload of %d, we sent %d", suite.KE, ke.Group, i.keGroup)
	}
	i.suite = suite
	i.spir = m.SPIr
	i.msg2 = append([]byte(nil), raw...)
	i.nr = append([]byte(nil), nonce.Data...)
	nat, ok := natDetected(m.Payloads, i.spii, i.spir, i.cfg.Local, i.cfg.Remote)
	i.natt = (nat || i.cfg.ForceEncap) && ok
	i.frag = i.cfg.Fragmentation != FragmentNo && len(notifies(m.Payloads, message.IKEV2_FRAGMENTATION_SUPPORTED)) > 0
	i.peerHashes = hashList(m.Payloads)
	i.certAsked = certRequested(m.Payloads)

	gir, err := i.ke.SharedSecret(ke.Data)
	i.ke.Wipe()
	if err != nil {
		return nil, err
	}
	defer clear(gir)
	prf, encr, integ, err := ikeAlgs(suite)
	if err != nil {
		return nil, err
	}
	i.prf = prf
	if err := checkNonce(prf, i.nr); err != nil {
		return nil, err
	}
	if i.keys, i.outP, i.inP, err = deriveIKESA(prf, encr, integ, i.ni, i.nr, i.spii, i.spir, gir); err != nil {
		return nil, err
	}
	return nil, nil
}

// fragLimit is the largest IKE message we send unfragmented: 0 (never
// fragment) unless both sides announced support and we may fragment.
func fragLimit(c *Config, negotiated, natt bool) int {
	if !negotiated || c.Fragmentation == FragmentAccept || c.Fragmentation == FragmentNo {
		return 0
	}
	return maxIKEMessage(c.FragmentSize, c.Remote.Addr().Unmap().Is6(), natt)
}

func (i *Initiator) authRequest() ([][]byte, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	i.espSPI = binary.BigEndian.Uint32(b[:]) | 0x100 // SPIs 1..255 are reserved (RFC 4303 §2.1)
	i.espOffer = withSPI(stripKE(i.cfg.ESPProposals), spiBytes(i.espSPI))
	idi := &message.ID{IDType: i.cfg.LocalID.Type, Data: i.cfg.LocalID.Data}
	octets := ikecrypto.SignedOctets(i.prf, i.msg1, i.nr, i.keys.Pi, idi.Body())
	auth, err := makeAuth(i.prf, &i.cfg.LocalAuth, octets, i.peerHashes)
	if err != nil {
		return nil, err
	}
	// strongSwan's order: IDi, CERT, INITIAL_CONTACT, CERTREQ, IDr, AUTH.
	inner := []message.Payload{idi}
	inner = append(inner, certPayloads(&i.cfg, i.certAsked)...)
	if !i.cfg.NoInitialContact {
		inner = append(inner, &message.Notify{NotifyType: message.INITIAL_CONTACT})
	}
	if cr := certReq(i.cfg.RemoteAuth.CACerts); cr != nil && i.cfg.RemoteAuth.Method == AuthPubkey && !i.cfg.NoCertReq {
		inner = append(inner, cr)
	}
	if !i.cfg.RemoteID.IsZero() {
		inner = append(inner, &message.ID{Responder: true, IDType: i.cfg.RemoteID.Type, Data: i.cfg.RemoteID.Data})
	}
	inner = append(inner, auth)
	if i.cfg.Mode == xfrm.ModeTransport {
		inner = append(inner, &message.Notify{NotifyType: message.USE_TRANSPORT_MODE})
	}
	inner = append(inner,
		&message.SA{Proposals: i.espOffer},
		&message.TS{Selectors: i.cfg.LocalTS},
		&message.TS{Responder: true, Selectors: i.cfg.RemoteTS},
	)
	h := message.Header{SPIi: i.spii, SPIr: i.spir, Exchange: message.IKE_AUTH, Flags: message.FlagInitiator, MessageID: 1}
	reqs, err := sealFragments(i.outP, h, inner, fragLimit(&i.cfg, i.frag, i.natt))
	if err != nil {
		return nil, err
	}
	i.state = initSentAuth
	return reqs, nil
}

func (i *Initiator) handleAuth(ps []message.Payload) error {
	if n := firstError(ps); n != nil {
		return &PeerError{Exchange: message.IKE_AUTH, Notify: n.NotifyType}
	}
	idr := findID(ps, true)
	auth := find[*message.Auth](ps)
	if idr == nil || auth == nil {
		return errors.New("exchange: IKE_AUTH response lacks IDr or AUTH")
	}
	// The responder signs its IKE_SA_INIT response as it sent it (§2.15).
	octets := ikecrypto.SignedOctets(i.prf, i.msg2, i.ni, i.keys.Pr, idr.Body())
	peer, err := verifyPeer(&i.cfg, i.prf, ps, idr, auth, octets)
	if err != nil {
		return err
	}
	sa := find[*message.SA](ps)
	tsi, tsr := findTS(ps, false), findTS(ps, true)
	if sa == nil || tsi == nil || tsr == nil {
		return errors.New("exchange: IKE_AUTH response lacks SA, TSi or TSr")
	}
	if len(sa.Proposals) != 1 || sa.Proposals[0].Protocol != message.ProtoESP || len(sa.Proposals[0].SPI) != 4 {
		return errors.New("exchange: IKE_AUTH response does not hold one ESP proposal")
	}
	if err := acceptResponse(i.espOffer, &sa.Proposals[0], true); err != nil {
		return err
	}
	esp, _, err := espSuiteOf(sa.Proposals[0].Transforms)
	if err != nil {
		return err
	}
	if !within(tsi.Selectors, i.cfg.LocalTS) || !within(tsr.Selectors, i.cfg.RemoteTS) {
		return errors.New("exchange: IKE_AUTH response widened the traffic selectors")
	}
	transport := len(notifies(ps, message.USE_TRANSPORT_MODE)) > 0
	if transport != (i.cfg.Mode == xfrm.ModeTransport) {
		return errors.New("exchange: responder did not agree on the CHILD SA mode")
	}
	encr, integ, _ := espAlgs(esp)
	encLen, integLen := keyLens(encr, integ)
	ck, err := ikecrypto.DeriveChildKeys(i.prf, i.keys.D, nil, i.ni, i.nr, encLen, integLen)
	if err != nil {
		return err
	}
	defer ck.Wipe()
	r := &Result{SPIi: i.spii, SPIr: i.spir, IKE: i.suite, ESP: esp, Peer: peer, Fragmentation: i.frag,
		Keys: i.keys, PRF: i.prf, NATT: i.natt, LocalTS: tsi.Selectors, RemoteTS: tsr.Selectors}
	peerSPI := binary.BigEndian.Uint32(sa.Proposals[0].SPI)
	if r.In, r.Out, err = childSAs(&i.cfg, r, true, i.espSPI, peerSPI, ck); err != nil {
		return err
	}
	r.establish(true, &i.cfg, i.inP, i.outP, nil, nil)
	i.result = r
	i.state = initDone
	return nil
}
