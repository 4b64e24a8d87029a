package exchange

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// IKESuite is one IKE SA transform of each type: a single-choice
// proposal as configured (Config.IKE), or what a negotiation chose
// (Result.IKE).
type IKESuite struct {
	Encr    uint16 // message.ENCR_*
	KeyBits int    // Key Length attribute; 0 for ChaCha20-Poly1305
	Integ   uint16 // message.AUTH_*; AUTH_NONE with an AEAD
	PRF     uint16 // message.PRF_*
	KE      uint16 // message.KE_*
}

// ESPSuite is one CHILD SA transform of each type.
type ESPSuite struct {
	Encr    uint16
	KeyBits int
	Integ   uint16
	// ESN selects 64-bit extended sequence numbers (ESN transform 1);
	// strongSwan's default proposals offer only ESN_NO.
	ESN bool
}

// AuthMethod is how one side authenticates.
type AuthMethod uint8

// Authentication methods.
const (
	// AuthPSK is a pre-shared key (AUTH method 2, RFC 7296 §2.15).
	AuthPSK AuthMethod = iota + 1
	// AuthPubkey is a signature with the private key of an X.509
	// certificate: RSA (method 1), ECDSA (9-11) or RFC 7427 (14) with
	// PKCS#1 v1.5, RSASSA-PSS, ECDSA or Ed25519.
	AuthPubkey
)

// Auth is how one side proves its identity (Config.LocalAuth) or must
// prove it (Config.RemoteAuth), as swanctl's local and remote sections.
type Auth struct {
	Method AuthMethod
	// PSK is the shared key of AuthPSK.
	PSK []byte
	// Certs are, for the local side, the end entity certificate (Certs[0],
	// whose key is Key) and the intermediates sent with it; for the remote
	// side, optional pinned end entity certificates, one of which the
	// peer's must be (and which stand in for a CERT payload it omits).
	Certs []*x509.Certificate
	// Key is the local private key of Certs[0].
	Key crypto.Signer
	// CACerts are, for the remote side, the trust anchors the peer's chain
	// must end in; their key hashes go out in CERTREQ payloads.
	CACerts []*x509.Certificate
	// Hashes are the RFC 7427 hash algorithms (ikecrypto.Hash*) in
	// preference order: for the local side the ones we sign with, for the
	// remote side the ones we accept and announce in
	// SIGNATURE_HASH_ALGORITHMS. Empty takes ikecrypto.DefaultHashes.
	Hashes []uint16
	// PSS signs with RSASSA-PSS instead of PKCS#1 v1.5 (local RSA keys
	// under RFC 7427; strongSwan's rsa_pss option).
	PSS bool
}

// SendCert is when our certificate goes out (swanctl send_cert).
type SendCert uint8

// Certificate sending policies.
const (
	SendCertIfAsked SendCert = iota // when the peer sent a CERTREQ (default)
	SendCertAlways
	SendCertNever
)

// Fragmentation is the RFC 7383 policy (swanctl fragmentation).
type Fragmentation uint8

// Fragmentation policies.
const (
	// FragmentYes announces support and fragments messages larger than
	// FragmentSize when the peer announced it too (default).
	FragmentYes Fragmentation = iota
	// FragmentAccept announces support and reassembles, but never
	// fragments what we send.
	FragmentAccept
	// FragmentForce is FragmentYes: IKEv2 cannot fragment IKE_SA_INIT,
	// and everything after it is fragmented when it is too large anyway.
	FragmentForce
	// FragmentNo neither announces nor accepts fragments.
	FragmentNo
)

// DefaultFragmentSize is strongSwan's charon.fragment_size: the largest
// IP datagram carrying one IKE fragment.
const DefaultFragmentSize = 1280

// Config is one side's configuration of an IKE SA and its CHILD SA.
type Config struct {
	// Local and Remote are the IKE endpoints: this side's address and
	// port 500, and the peer's. They enter the NAT detection hashes and
	// the CHILD SAs' outer addresses.
	Local, Remote netip.AddrPort
	// LocalID and RemoteID are the identities sent in IDi/IDr and expected
	// from the peer. A zero LocalID is the certificate's subject DN with
	// AuthPubkey and the Local address otherwise (swanctl's default); a
	// zero RemoteID accepts any identity (%any) that the peer proves.
	LocalID, RemoteID Identity
	// LocalAuth and RemoteAuth say how each side authenticates. When
	// their Method is zero and PSK is set, both are AuthPSK with PSK.
	LocalAuth, RemoteAuth Auth
	// PSK is a shorthand for a shared key of both identities.
	PSK []byte
	// SendCert is when our certificate is sent; NoCertReq stops the
	// CERTREQ payloads naming RemoteAuth.CACerts.
	SendCert  SendCert
	NoCertReq bool
	// NoInitialContact leaves out INITIAL_CONTACT from our IKE_AUTH
	// request. strongSwan sends it when it holds no IKE SA with the same
	// peer (unless unique = never); the caller knows.
	NoInitialContact bool
	// IKEProposals and ESPProposals are the proposals in preference order
	// (Protocol PROTO_IKE and PROTO_ESP, transforms of one type being
	// alternatives, a responder's order deciding as in strongSwan). When
	// empty, IKE and ESP are the only proposal.
	IKEProposals, ESPProposals []message.Proposal
	// IKE and ESP are single-suite proposals, used when IKEProposals or
	// ESPProposals is empty.
	IKE IKESuite
	ESP ESPSuite
	// Fragmentation is the RFC 7383 policy; FragmentSize is the largest
	// IP datagram of a fragment (0: DefaultFragmentSize).
	Fragmentation Fragmentation
	FragmentSize  int
	// LocalTS and RemoteTS are the traffic selectors for this side's and
	// the peer's traffic (TSi/TSr from the initiator's view).
	LocalTS, RemoteTS []message.TrafficSelector
	// Mode is the CHILD SA mode; transport mode is negotiated with
	// USE_TRANSPORT_MODE (§1.3.1).
	Mode xfrm.Mode
	// ReplayWindow is given to the CHILD SAs; 0 takes 32.
	ReplayWindow uint32
	// ForceEncap makes the CHILD SAs UDP-encapsulated even without a NAT
	// (swanctl encap = yes): as strongSwan does, our NAT_DETECTION_SOURCE_IP
	// carries a random hash, so that the peer too sees a NAT and both
	// sides move to port 4500 and encapsulate (RFC 7296 §2.23).
	ForceEncap bool
	// Now is the clock for certificate validity; nil is time.Now.
	Now func() time.Time
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

// Addr returns an ID_IPV4_ADDR or ID_IPV6_ADDR identity.
func Addr(a netip.Addr) Identity {
	a = a.Unmap()
	if a.Is4() {
		return Identity{Type: message.ID_IPV4_ADDR, Data: a.AsSlice()}
	}
	return Identity{Type: message.ID_IPV6_ADDR, Data: a.AsSlice()}
}

// DN returns an ID_DER_ASN1_DN identity: a certificate's subject
// (x509.Certificate.RawSubject) or another DER Name.
func DN(der []byte) Identity { return Identity{Type: message.ID_DER_ASN1_DN, Data: der} }

// IsZero reports whether id is unset (any identity, for RemoteID).
func (id Identity) IsZero() bool { return id.Type == 0 && len(id.Data) == 0 }

// check validates c and fills in the defaults (LocalAuth and RemoteAuth
// from PSK, LocalID from the certificate or address).
func (c *Config) check() error {
	if !c.Local.IsValid() || !c.Remote.IsValid() {
		return errors.New("exchange: Local and Remote endpoints must be set")
	}
	for _, a := range []*Auth{&c.LocalAuth, &c.RemoteAuth} {
		if a.Method == 0 && len(c.PSK) > 0 {
			a.Method, a.PSK = AuthPSK, c.PSK
		}
	}
	switch c.LocalAuth.Method {
	case AuthPSK:
		if len(c.LocalAuth.PSK) == 0 {
			return errors.New("exchange: no PSK")
		}
	case AuthPubkey:
		if len(c.LocalAuth.Certs) == 0 || c.LocalAuth.Key == nil {
			return errors.New("exchange: public key authentication without certificate or private key")
		}
		if !publicKeysEqual(c.LocalAuth.Key.Public(), c.LocalAuth.Certs[0].PublicKey) {
			return errors.New("exchange: the private key does not belong to the first local certificate")
		}
	default:
		return errors.New("exchange: no PSK")
	}
	switch c.RemoteAuth.Method {
	case AuthPSK:
		if len(c.RemoteAuth.PSK) == 0 {
			return errors.New("exchange: no PSK for the peer")
		}
	case AuthPubkey:
		if len(c.RemoteAuth.CACerts) == 0 && len(c.RemoteAuth.Certs) == 0 {
			return errors.New("exchange: public key authentication of the peer without CA or pinned certificates")
		}
	default:
		return errors.New("exchange: no authentication method for the peer")
	}
	if len(c.LocalTS) == 0 || len(c.RemoteTS) == 0 {
		return errors.New("exchange: traffic selectors must be set")
	}
	if c.LocalID.IsZero() {
		if c.LocalAuth.Method == AuthPubkey {
			c.LocalID = DN(c.LocalAuth.Certs[0].RawSubject)
		} else {
			c.LocalID = Addr(c.Local.Addr())
		}
	}
	for _, id := range []Identity{c.LocalID, c.RemoteID} {
		if id.IsZero() {
			continue // RemoteID: any
		}
		// The ID payload's own checks (an ID_IPV4_ADDR is 4 bytes, ...): AUTH
		// signs the encoded body, so an unencodable identity must not get
		// that far.
		m := &message.Message{Payloads: []message.Payload{&message.ID{IDType: id.Type, Data: id.Data}}}
		if _, err := m.Encode(); err != nil || len(id.Data) == 0 {
			return fmt.Errorf("exchange: identity of type %d with %d bytes is not valid", id.Type, len(id.Data))
		}
	}
	if c.LocalAuth.Method == AuthPubkey && !certHasID(c.LocalAuth.Certs[0], c.LocalID) {
		return errors.New("exchange: the local identity is not in the local certificate")
	}
	if c.FragmentSize == 0 {
		c.FragmentSize = DefaultFragmentSize
	}
	if c.FragmentSize < minFragmentSize {
		return fmt.Errorf("exchange: fragment size %d is below %d", c.FragmentSize, minFragmentSize)
	}
	if len(c.IKEProposals) == 0 {
		if !ikecrypto.Supported(c.IKE.KE) {
			return fmt.Errorf("exchange: key exchange method %d not supported", c.IKE.KE)
		}
		if _, _, _, err := ikeAlgs(c.IKE); err != nil {
			return err
		}
		c.IKEProposals = []message.Proposal{c.IKE.Proposal()}
	}
	if len(c.ESPProposals) == 0 {
		if _, _, err := espAlgs(c.ESP); err != nil {
			return err
		}
		c.ESPProposals = []message.Proposal{c.ESP.Proposal()}
	}
	if err := checkProposals(c.IKEProposals, message.ProtoIKE); err != nil {
		return err
	}
	if err := checkProposals(c.ESPProposals, message.ProtoESP); err != nil {
		return err
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

func ikeAlgs(s IKESuite) (*ikecrypto.PRF, *ikecrypto.Encr, *ikecrypto.Integ, error) {
	prf, err := ikecrypto.LookupPRF(s.PRF)
	if err != nil {
		return nil, nil, nil, err
	}
	encr, err := ikecrypto.LookupEncr(s.Encr, s.KeyBits)
	if err != nil {
		return nil, nil, nil, err
	}
	integ, err := integOf(encr, s.Integ)
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
