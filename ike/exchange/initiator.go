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

// ErrUnexpected is wrapped by the error for a message that does not
// belong to the exchange in progress (wrong SPI, message ID, exchange or
// flags). RFC 7296 §2.21: such a message is dropped, the exchange goes on.
var ErrUnexpected = errors.New("unexpected message")

const nonceLen = 32

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
	ke         ikecrypto.KeyExchange
	ni, nr     []byte
	msg1       []byte // our IKE_SA_INIT request as sent: our AUTH signs it
	msg2       []byte // the IKE_SA_INIT response as received: the peer's AUTH signs it
	cookie     []byte
	espSPI     uint32

	prf    *ikecrypto.PRF
	keys   *ikecrypto.IKEKeys
	outP   *ikecrypto.Protector
	inP    *ikecrypto.Protector
	natt   bool
	result *Result
}

// NewInitiator checks cfg and returns an Initiator.
func NewInitiator(cfg Config) (*Initiator, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &Initiator{cfg: cfg}, nil
}

// Start returns the IKE_SA_INIT request to send to Remote on port 500.
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
	var err error
	if i.ke, err = ikecrypto.NewKeyExchange(i.cfg.IKE.KE); err != nil {
		return nil, err
	}
	return i.saInitRequest()
}

func (i *Initiator) saInitRequest() ([]byte, error) {
	var ps []message.Payload
	if i.cookie != nil {
		// §2.6: the COOKIE notification comes first.
		ps = append(ps, &message.Notify{NotifyType: message.COOKIE, Data: i.cookie})
	}
	ps = append(ps,
		&message.SA{Proposals: []message.Proposal{{Num: 1, Protocol: message.ProtoIKE, Transforms: i.cfg.IKE.transforms()}}},
		&message.KE{Group: i.cfg.IKE.KE, Data: i.ke.Public()},
		&message.Nonce{Data: i.ni},
	)
	ps = append(ps, natdNotifies(i.spii, 0, i.cfg.Local, i.cfg.Remote)...)
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

// UseNATT reports whether IKE_SA_INIT detected a NAT: the caller sends
// the IKE_AUTH request, and everything after it, from and to port 4500
// with the non-ESP marker (RFC 3948 §2.2, RFC 7296 §2.23).
func (i *Initiator) UseNATT() bool { return i.natt }

// Result returns the outcome once Handle has reported done.
func (i *Initiator) Result() *Result { return i.result }

// Handle processes a response. It returns the next request to send, or
// done once the IKE SA and the CHILD SA are up. An error wrapping
// ErrUnexpected means the message was ignored and the exchange goes on;
// any other error ends it.
func (i *Initiator) Handle(raw []byte) (next []byte, done bool, err error) {
	m, err := message.Decode(raw)
	if err != nil {
		return nil, false, fmt.Errorf("exchange: dropping malformed response: %w: %w", ErrUnexpected, err)
	}
	if !m.IsResponse() || m.IsInitiator() || m.SPIi != i.spii {
		return nil, false, fmt.Errorf("exchange: %w: not a response to us", ErrUnexpected)
	}
	switch {
	case i.state == initSentSAInit && m.Exchange == message.IKE_SA_INIT && m.MessageID == 0:
		next, err = i.handleSAInit(raw, m) // the IKE_AUTH request, or IKE_SA_INIT again with a cookie
	case i.state == initSentAuth && m.Exchange == message.IKE_AUTH && m.MessageID == 1 && m.SPIr == i.spir:
		err = i.handleAuth(raw, m)
		done = err == nil
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
}

func (i *Initiator) handleSAInit(raw []byte, m *message.Message) ([]byte, error) {
	if c := notifies(m.Payloads, message.COOKIE); len(c) == 1 && i.cookie == nil {
		i.cookie = append([]byte(nil), c[0].Data...)
		return i.saInitRequest()
	}
	if n := firstError(m.Payloads); n != nil {
		// INVALID_KE_PAYLOAD names the group the responder wants; with one
		// configured group there is nothing else to offer.
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
	if len(sa.Proposals) != 1 || sa.Proposals[0].Protocol != message.ProtoIKE || !sameTransforms(&sa.Proposals[0], i.cfg.IKE.transforms()) {
		return nil, errors.New("exchange: IKE_SA_INIT response chose a proposal we did not offer")
	}
	if ke.Group != i.cfg.IKE.KE {
		return nil, fmt.Errorf("exchange: IKE_SA_INIT response KE group %d, we offered %d", ke.Group, i.cfg.IKE.KE)
	}
	i.spir = m.SPIr
	i.msg2 = append([]byte(nil), raw...)
	i.nr = append([]byte(nil), nonce.Data...)
	nat, ok := natDetected(m.Payloads, i.spii, i.spir, i.cfg.Local, i.cfg.Remote)
	i.natt = nat && ok

	gir, err := i.ke.SharedSecret(ke.Data)
	i.ke.Wipe()
	if err != nil {
		return nil, err
	}
	defer clear(gir)
	prf, encr, integ, err := i.cfg.ikeAlgs()
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
	return i.authRequest()
}

func (i *Initiator) authRequest() ([]byte, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	i.espSPI = binary.BigEndian.Uint32(b[:]) | 0x100 // SPIs 1..255 are reserved (RFC 4303 §2.1)
	idi := &message.ID{IDType: i.cfg.LocalID.Type, Data: i.cfg.LocalID.Data}
	octets := ikecrypto.SignedOctets(i.prf, i.msg1, i.nr, i.keys.Pi, idi.Body())
	auth := ikecrypto.PSKAuth(i.prf, i.cfg.PSK, octets)
	inner := []message.Payload{
		idi,
		&message.Notify{NotifyType: message.INITIAL_CONTACT},
		&message.ID{Responder: true, IDType: i.cfg.RemoteID.Type, Data: i.cfg.RemoteID.Data},
		&message.Auth{Method: message.AuthSharedKeyMIC, Data: auth},
	}
	if i.cfg.Mode == xfrm.ModeTransport {
		inner = append(inner, &message.Notify{NotifyType: message.USE_TRANSPORT_MODE})
	}
	inner = append(inner,
		&message.SA{Proposals: []message.Proposal{{Num: 1, Protocol: message.ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, i.espSPI), Transforms: i.cfg.ESP.transforms()}}},
		&message.TS{Selectors: i.cfg.LocalTS},
		&message.TS{Responder: true, Selectors: i.cfg.RemoteTS},
	)
	h := message.Header{SPIi: i.spii, SPIr: i.spir, Exchange: message.IKE_AUTH, Flags: message.FlagInitiator, MessageID: 1}
	req, err := sealMessage(i.outP, h, inner)
	if err != nil {
		return nil, err
	}
	i.state = initSentAuth
	return req, nil
}

func (i *Initiator) handleAuth(raw []byte, m *message.Message) error {
	ps, err := openMessage(i.inP, raw, m)
	if err != nil {
		// A forged or corrupted response is dropped; the real one may follow.
		return fmt.Errorf("%w: %w", ErrUnexpected, err)
	}
	if n := firstError(ps); n != nil {
		return &PeerError{Exchange: message.IKE_AUTH, Notify: n.NotifyType}
	}
	idr := findID(ps, true)
	auth := find[*message.Auth](ps)
	if idr == nil || auth == nil {
		return errors.New("exchange: IKE_AUTH response lacks IDr or AUTH")
	}
	if idr.IDType != i.cfg.RemoteID.Type || subtle.ConstantTimeCompare(idr.Data, i.cfg.RemoteID.Data) != 1 {
		return errors.New("exchange: IKE_AUTH response from an unexpected identity")
	}
	if auth.Method != message.AuthSharedKeyMIC {
		return fmt.Errorf("exchange: IKE_AUTH response with auth method %d, want shared key", auth.Method)
	}
	// The responder signs its IKE_SA_INIT response as it sent it (§2.15).
	octets := ikecrypto.SignedOctets(i.prf, i.msg2, i.ni, i.keys.Pr, idr.Body())
	want := ikecrypto.PSKAuth(i.prf, i.cfg.PSK, octets)
	if subtle.ConstantTimeCompare(want, auth.Data) != 1 {
		return errors.New("exchange: IKE_AUTH response AUTH does not verify (wrong PSK?)")
	}
	sa := find[*message.SA](ps)
	tsi, tsr := findTS(ps, false), findTS(ps, true)
	if sa == nil || tsi == nil || tsr == nil {
		return errors.New("exchange: IKE_AUTH response lacks SA, TSi or TSr")
	}
	if len(sa.Proposals) != 1 || sa.Proposals[0].Protocol != message.ProtoESP || len(sa.Proposals[0].SPI) != 4 ||
		!sameTransforms(&sa.Proposals[0], i.cfg.ESP.transforms()) {
		return errors.New("exchange: IKE_AUTH response chose an ESP proposal we did not offer")
	}
	if !within(tsi.Selectors, i.cfg.LocalTS) || !within(tsr.Selectors, i.cfg.RemoteTS) {
		return errors.New("exchange: IKE_AUTH response widened the traffic selectors")
	}
	transport := len(notifies(ps, message.USE_TRANSPORT_MODE)) > 0
	if transport != (i.cfg.Mode == xfrm.ModeTransport) {
		return errors.New("exchange: responder did not agree on the CHILD SA mode")
	}
	encr, integ, _ := espAlgs(i.cfg.ESP)
	encLen, integLen := keyLens(encr, integ)
	ck, err := ikecrypto.DeriveChildKeys(i.prf, i.keys.D, nil, i.ni, i.nr, encLen, integLen)
	if err != nil {
		return err
	}
	defer ck.Wipe()
	r := &Result{SPIi: i.spii, SPIr: i.spir, Keys: i.keys, PRF: i.prf, NATT: i.natt,
		LocalTS: tsi.Selectors, RemoteTS: tsr.Selectors}
	peerSPI := binary.BigEndian.Uint32(sa.Proposals[0].SPI)
	if r.In, r.Out, err = childSAs(&i.cfg, r, true, i.espSPI, peerSPI, ck); err != nil {
		return err
	}
	r.establish(true, &i.cfg, i.inP, i.outP, nil, nil)
	i.result = r
	i.state = initDone
	return nil
}
