package exchange

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// IKESuite is the IKE SA proposal: one transform of each type.
type IKESuite struct {
	Encr    uint16 // message.ENCR_*
	KeyBits int    // Key Length attribute; 0 for ChaCha20-Poly1305
	Integ   uint16 // message.AUTH_*; AUTH_NONE with an AEAD
	PRF     uint16 // message.PRF_*
	KE      uint16 // message.KE_*
}

// ESPSuite is the CHILD SA proposal. Extended sequence numbers are not
// offered (ESN_NO), like strongSwan's default.
type ESPSuite struct {
	Encr    uint16
	KeyBits int
	Integ   uint16
}

// Config is one side's configuration of an IKE SA and its CHILD SA.
type Config struct {
	// Local and Remote are the IKE endpoints: this side's address and
	// port 500, and the peer's. They enter the NAT detection hashes and
	// the CHILD SAs' outer addresses.
	Local, Remote netip.AddrPort
	// LocalID and RemoteID are the identities sent in IDi/IDr and expected
	// from the peer.
	LocalID, RemoteID Identity
	// PSK is the shared key of both identities (auth method 2).
	PSK []byte
	// IKE and ESP are the proposals.
	IKE IKESuite
	ESP ESPSuite
	// LocalTS and RemoteTS are the traffic selectors for this side's and
	// the peer's traffic (TSi/TSr from the initiator's view).
	LocalTS, RemoteTS []message.TrafficSelector
	// Mode is the CHILD SA mode; transport mode is negotiated with
	// USE_TRANSPORT_MODE (§1.3.1).
	Mode xfrm.Mode
	// ReplayWindow is given to the CHILD SAs; 0 takes 32.
	ReplayWindow uint32
}

// Identity is an IKE identity (RFC 7296 §3.5).
type Identity struct {
	Type message.IDType
	Data []byte
}

// FQDN returns an ID_FQDN identity.
func FQDN(name string) Identity { return Identity{Type: message.ID_FQDN, Data: []byte(name)} }

// Email returns an ID_RFC822_ADDR identity.
func Email(addr string) Identity { return Identity{Type: message.ID_RFC822_ADDR, Data: []byte(addr)} }

func (c *Config) check() error {
	if !c.Local.IsValid() || !c.Remote.IsValid() {
		return errors.New("exchange: Local and Remote endpoints must be set")
	}
	if len(c.PSK) == 0 {
		return errors.New("exchange: no PSK")
	}
	if len(c.LocalTS) == 0 || len(c.RemoteTS) == 0 {
		return errors.New("exchange: traffic selectors must be set")
	}
	for _, id := range []Identity{c.LocalID, c.RemoteID} {
		// The ID payload's own checks (an ID_IPV4_ADDR is 4 bytes, ...): AUTH
		// signs the encoded body, so an unencodable identity must not get
		// that far.
		m := &message.Message{Payloads: []message.Payload{&message.ID{IDType: id.Type, Data: id.Data}}}
		if _, err := m.Encode(); err != nil || len(id.Data) == 0 {
			return fmt.Errorf("exchange: identity of type %d with %d bytes is not valid", id.Type, len(id.Data))
		}
	}
	if !ikecrypto.Supported(c.IKE.KE) {
		return fmt.Errorf("exchange: key exchange method %d not supported", c.IKE.KE)
	}
	if _, _, _, err := c.ikeAlgs(); err != nil {
		return err
	}
	if _, _, err := espAlgs(c.ESP); err != nil {
		return err
	}
	return nil
}

func (c *Config) ikeAlgs() (*ikecrypto.PRF, *ikecrypto.Encr, *ikecrypto.Integ, error) {
	prf, err := ikecrypto.LookupPRF(c.IKE.PRF)
	if err != nil {
		return nil, nil, nil, err
	}
	encr, err := ikecrypto.LookupEncr(c.IKE.Encr, c.IKE.KeyBits)
	if err != nil {
		return nil, nil, nil, err
	}
	integ, err := integOf(encr, c.IKE.Integ)
	return prf, encr, integ, err
}

func espAlgs(s ESPSuite) (*ikecrypto.Encr, *ikecrypto.Integ, error) {
	encr, err := ikecrypto.LookupEncr(s.Encr, s.KeyBits)
	if err != nil {
		return nil, nil, err
	}
	integ, err := integOf(encr, s.Integ)
	return encr, integ, err
}

func integOf(encr *ikecrypto.Encr, id uint16) (*ikecrypto.Integ, error) {
	if encr.AEAD {
		if id != message.AUTH_NONE {
			return nil, fmt.Errorf("exchange: AEAD transform %d with integrity transform %d", encr.ID, id)
		}
		return nil, nil
	}
	return ikecrypto.LookupInteg(id)
}

func keyLens(encr *ikecrypto.Encr, integ *ikecrypto.Integ) (int, int) {
	if integ == nil {
		return encr.KeyLen(), 0
	}
	return encr.KeyLen(), integ.KeyLen
}

// transforms lists the transforms of a suite, in RFC 7296 §3.3.2 order.
func encrTransform(id uint16, bits int) message.Transform {
	t := message.Transform{Type: message.TransformENCR, ID: id}
	if bits != 0 && id != message.ENCR_CHACHA20_POLY1305 {
		t.Attributes = []message.Attribute{message.KeyLengthAttr(bits)}
	}
	return t
}

func (s IKESuite) transforms() []message.Transform {
	ts := []message.Transform{encrTransform(s.Encr, s.KeyBits)}
	if s.Integ != message.AUTH_NONE {
		ts = append(ts, message.Transform{Type: message.TransformINTEG, ID: s.Integ})
	}
	return append(ts,
		message.Transform{Type: message.TransformPRF, ID: s.PRF},
		message.Transform{Type: message.TransformKE, ID: s.KE})
}

func (s ESPSuite) transforms() []message.Transform {
	ts := []message.Transform{encrTransform(s.Encr, s.KeyBits)}
	if s.Integ != message.AUTH_NONE {
		ts = append(ts, message.Transform{Type: message.TransformINTEG, ID: s.Integ})
	}
	return append(ts, message.Transform{Type: message.TransformESN, ID: message.ESN_NO})
}

// contains reports whether proposal p offers every transform of want.
// Within one transform type the offer is a choice (§3.3.6), so each of
// ours must appear among the peer's of that type; and the peer must not
// require a type we do not use (other than INTEG NONE).
func contains(p *message.Proposal, want []message.Transform) bool {
	types := map[message.TransformType]bool{}
	for _, w := range want {
		types[w.Type] = true
		found := false
		for _, t := range p.Transforms {
			if t.Type == w.Type && t.ID == w.ID && keyBits(&t) == keyBits(&w) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	for _, t := range p.Transforms {
		if !types[t.Type] && !(t.Type == message.TransformINTEG && t.ID == message.AUTH_NONE) {
			return false
		}
	}
	return true
}

func keyBits(t *message.Transform) int {
	n, _ := t.KeyLength()
	return n
}

// sameTransforms reports whether a response's single proposal is exactly
// the suite we offered (a responder must choose one transform per type
// out of the offer, §2.7; we offer one).
func sameTransforms(p *message.Proposal, want []message.Transform) bool {
	return len(p.Transforms) == len(want) && contains(p, want)
}

// checkNonce enforces RFC 7296 §2.10: a nonce is at least 128 bits and at
// least half the PRF's key size (the codec already bounds it to 16..256
// bytes).
func checkNonce(prf *ikecrypto.PRF, n []byte) error {
	if len(n) < prf.KeyLen/2 {
		return fmt.Errorf("exchange: nonce of %d bytes is shorter than half the %s key (%d)", len(n), prf.Name, prf.KeyLen/2)
	}
	return nil
}

// deriveIKESA derives an IKE SA's keys from the DH shared secret gir
// (RFC 7296 §2.14: SKEYSEED, then SK_d, SK_a*, SK_e*, SK_p*) and makes the
// SK payload protectors of its two directions: ir protects what the
// initiator sends (SK_ei, SK_ai), ri what the responder sends.
func deriveIKESA(prf *ikecrypto.PRF, encr *ikecrypto.Encr, integ *ikecrypto.Integ, ni, nr []byte, spii, spir uint64, gir []byte) (keys *ikecrypto.IKEKeys, ir, ri *ikecrypto.Protector, err error) {
	skeyseed, err := ikecrypto.SKEYSEED(prf, ni, nr, gir)
	if err != nil {
		return nil, nil, nil, err
	}
	encLen, integLen := keyLens(encr, integ)
	keys, err = ikecrypto.DeriveIKEKeys(prf, skeyseed, ni, nr, spii, spir, encLen, integLen)
	clear(skeyseed)
	if err != nil {
		return nil, nil, nil, err
	}
	if ir, err = ikecrypto.NewProtector(encr, integ, keys.Ei, keys.Ai); err != nil {
		return nil, nil, nil, err
	}
	if ri, err = ikecrypto.NewProtector(encr, integ, keys.Er, keys.Ar); err != nil {
		return nil, nil, nil, err
	}
	return keys, ir, ri, nil
}
