package ikecrypto

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// Hash algorithm identifiers of the SIGNATURE_HASH_ALGORITHMS notification
// (RFC 7427 §7, IANA "IKEv2 Hash Algorithms").
const (
	HashSHA1     uint16 = 1
	HashSHA2_256 uint16 = 2
	HashSHA2_384 uint16 = 3
	HashSHA2_512 uint16 = 4
	HashIdentity uint16 = 5 // RFC 8420: the signature covers the octets themselves (EdDSA)
)

// DefaultHashes are the hash algorithms announced in
// SIGNATURE_HASH_ALGORITHMS, in preference order: what strongSwan 5.9.8
// sends (SHA2-256, SHA2-384, SHA2-512, Identity; SHA-1 is not offered).
var DefaultHashes = []uint16{HashSHA2_256, HashSHA2_384, HashSHA2_512, HashIdentity}

// ErrSignature is wrapped by the error for an AUTH payload whose
// signature does not verify with the peer's key.
var ErrSignature = errors.New("signature does not verify")

// Scheme is one way to sign the AUTH octets (RFC 7296 §2.15): the AUTH
// method, and for RFC 7427 Digital Signature (method 14) the hash and, for
// RSA, whether RSASSA-PSS is used.
type Scheme struct {
	Method message.AuthMethod
	// Hash is a Hash* identifier: the digest signed (HashIdentity for
	// Ed25519, which signs the octets themselves).
	Hash uint16
	// PSS selects RSASSA-PSS (salt as long as the digest, MGF1 with the
	// same hash) instead of PKCS#1 v1.5 for an RSA key under method 14.
	PSS bool

	// saltLen is the salt length a peer's RSASSA-PSS parameters named,
	// plus one (0: the digest length, which is what we sign with).
	saltLen int
}

func (s Scheme) String() string {
	if s.Method != message.AuthDigitalSignature {
		return fmt.Sprintf("auth method %d", s.Method)
	}
	pss := ""
	if s.PSS {
		pss = " RSASSA-PSS"
	}
	return fmt.Sprintf("RFC 7427 signature, hash %d%s", s.Hash, pss)
}

func hashOf(id uint16) crypto.Hash {
	switch id {
	case HashSHA1:
		return crypto.SHA1
	case HashSHA2_256:
		return crypto.SHA256
	case HashSHA2_384:
		return crypto.SHA384
	case HashSHA2_512:
		return crypto.SHA512
	}
	return 0
}

// ecdsaMethod is the RFC 4754 method of a curve: its hash is fixed.
func ecdsaMethod(c elliptic.Curve) (message.AuthMethod, uint16) {
	switch c {
	case elliptic.P256():
		return message.AuthECDSA256, HashSHA2_256
	case elliptic.P384():
		return message.AuthECDSA384, HashSHA2_384
	case elliptic.P521():
		return message.AuthECDSA521, HashSHA2_512
	}
	return 0, 0
}

// ChooseScheme picks how to sign with pub's private key. When both sides
// announced SIGNATURE_HASH_ALGORITHMS (peerHashes not nil), it is RFC
// 7427's method 14 with the first of ours (in our order) that the peer
// accepts, preferring for ECDSA the hash that matches the curve, as
// strongSwan does; otherwise the classic method of the key type: RSA
// PKCS#1 v1.5 with SHA-1 (method 1, RFC 7296 §3.8) or ECDSA with the
// curve's hash (methods 9-11, RFC 4754). Ed25519 exists only under RFC
// 7427 with the Identity hash (RFC 8420).
func ChooseScheme(pub crypto.PublicKey, ours, peerHashes []uint16, pss bool) (Scheme, error) {
	if len(ours) == 0 {
		ours = DefaultHashes
	}
	peer := map[uint16]bool{}
	for _, h := range peerHashes {
		peer[h] = true
	}
	pick := func(want func(uint16) bool) (uint16, bool) {
		for _, h := range ours {
			if peer[h] && want(h) {
				return h, true
			}
		}
		return 0, false
	}
	digest := func(h uint16) bool { return h != HashIdentity && hashOf(h) != 0 }
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if peerHashes == nil {
			return Scheme{Method: message.AuthRSASignature, Hash: HashSHA1}, nil
		}
		if h, ok := pick(digest); ok {
			return Scheme{Method: message.AuthDigitalSignature, Hash: h, PSS: pss}, nil
		}
	case *ecdsa.PublicKey:
		m, curveHash := ecdsaMethod(k.Curve)
		if m == 0 {
			return Scheme{}, fmt.Errorf("ikecrypto: ECDSA curve %s has no IKE signature method", k.Curve.Params().Name)
		}
		if peerHashes == nil {
			return Scheme{Method: m, Hash: curveHash}, nil
		}
		if h, ok := pick(func(h uint16) bool { return h == curveHash }); ok {
			return Scheme{Method: message.AuthDigitalSignature, Hash: h}, nil
		}
		if h, ok := pick(digest); ok {
			return Scheme{Method: message.AuthDigitalSignature, Hash: h}, nil
		}
	case ed25519.PublicKey:
		if _, ok := pick(func(h uint16) bool { return h == HashIdentity }); ok {
			return Scheme{Method: message.AuthDigitalSignature, Hash: HashIdentity}, nil
		}
		return Scheme{}, errors.New("ikecrypto: Ed25519 needs RFC 7427 signatures with the Identity hash, which the peer did not announce")
	default:
		return Scheme{}, fmt.Errorf("ikecrypto: no IKE signature method for a %T key", pub)
	}
	return Scheme{}, errors.New("ikecrypto: no hash algorithm in common with the peer's SIGNATURE_HASH_ALGORITHMS")
}

// Object identifiers of the RFC 7427 Appendix A AlgorithmIdentifiers.
var (
	oidSHA1WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	oidSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidRSASSAPSS       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidMGF1            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidECDSAWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidSHA1            = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
)

var hashOIDs = []struct {
	id  uint16
	oid asn1.ObjectIdentifier
	rsa asn1.ObjectIdentifier
	ec  asn1.ObjectIdentifier
}{
	{HashSHA1, oidSHA1, oidSHA1WithRSA, oidECDSAWithSHA1},
	{HashSHA2_256, oidSHA256, oidSHA256WithRSA, oidECDSAWithSHA256},
	{HashSHA2_384, oidSHA384, oidSHA384WithRSA, oidECDSAWithSHA384},
	{HashSHA2_512, oidSHA512, oidSHA512WithRSA, oidECDSAWithSHA512},
}

// pssParams is RSASSA-PSS-params (RFC 4055 §3.1).
type pssParams struct {
	Hash         pkix.AlgorithmIdentifier `asn1:"explicit,tag:0,optional"`
	MGF          pkix.AlgorithmIdentifier `asn1:"explicit,tag:1,optional"`
	SaltLength   int                      `asn1:"explicit,tag:2,optional,default:20"`
	TrailerField int                      `asn1:"explicit,tag:3,optional,default:1"`
}

func nullParams() asn1.RawValue { return asn1.RawValue{Tag: asn1.TagNull} }

// AlgorithmIdentifier returns the DER AlgorithmIdentifier that names a
// method 14 signature of a key of pub's type (RFC 7427 §3 and Appendix
// A; RFC 8420 §2 for Ed25519). RSA PKCS#1 v1.5 and PSS identifiers carry
// NULL hash parameters, as in RFC 7427 A.4.3.
func (s Scheme) AlgorithmIdentifier(pub crypto.PublicKey) ([]byte, error) {
	var ai pkix.AlgorithmIdentifier
	switch pub.(type) {
	case ed25519.PublicKey:
		if s.Hash != HashIdentity {
			return nil, errors.New("ikecrypto: Ed25519 signs with the Identity hash only")
		}
		ai.Algorithm = oidEd25519
	case *rsa.PublicKey, *ecdsa.PublicKey:
		var row *struct {
			id  uint16
			oid asn1.ObjectIdentifier
			rsa asn1.ObjectIdentifier
			ec  asn1.ObjectIdentifier
		}
		for k := range hashOIDs {
			if hashOIDs[k].id == s.Hash {
				row = &hashOIDs[k]
			}
		}
		if row == nil {
			return nil, fmt.Errorf("ikecrypto: hash %d cannot sign", s.Hash)
		}
		_, isRSA := pub.(*rsa.PublicKey)
		switch {
		case !isRSA:
			ai.Algorithm = row.ec // RFC 5758 §3.2: parameters absent
		case s.PSS:
			h := pkix.AlgorithmIdentifier{Algorithm: row.oid, Parameters: nullParams()}
			hb, err := asn1.Marshal(h)
			if err != nil {
				return nil, err
			}
			p, err := asn1.Marshal(pssParams{
				Hash:         h,
				MGF:          pkix.AlgorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: hb}},
				SaltLength:   hashOf(s.Hash).Size(),
				TrailerField: 1,
			})
			if err != nil {
				return nil, err
			}
			ai = pkix.AlgorithmIdentifier{Algorithm: oidRSASSAPSS, Parameters: asn1.RawValue{FullBytes: p}}
		default:
			ai = pkix.AlgorithmIdentifier{Algorithm: row.rsa, Parameters: nullParams()}
		}
	default:
		return nil, fmt.Errorf("ikecrypto: no signature algorithm for a %T key", pub)
	}
	return asn1.Marshal(ai)
}

// Sign returns the AUTH payload data for octets (SignedOctets) signed
// with key under scheme s: for method 14 the AlgorithmIdentifier with its
// one-octet length before the signature (RFC 7427 §3); for ECDSA under
// methods 9-11 the fixed-size r‖s of RFC 4754 §7, under method 14 the DER
// ECDSA-Sig-Value of the AlgorithmIdentifier's ecdsa-with-SHA* (RFC 3279).
func Sign(key crypto.Signer, s Scheme, octets []byte) ([]byte, error) {
	pub := key.Public()
	var prefix []byte
	if s.Method == message.AuthDigitalSignature {
		ai, err := s.AlgorithmIdentifier(pub)
		if err != nil {
			return nil, err
		}
		if len(ai) > 255 {
			return nil, errors.New("ikecrypto: AlgorithmIdentifier longer than 255 bytes")
		}
		prefix = append([]byte{byte(len(ai))}, ai...)
	} else if err := checkClassic(pub, s); err != nil {
		return nil, err
	}
	if _, ok := pub.(ed25519.PublicKey); ok {
		sig, err := key.Sign(rand.Reader, octets, crypto.Hash(0))
		if err != nil {
			return nil, fmt.Errorf("ikecrypto: Ed25519 signature: %w", err)
		}
		return append(prefix, sig...), nil
	}
	h := hashOf(s.Hash)
	if h == 0 {
		return nil, fmt.Errorf("ikecrypto: hash %d cannot sign", s.Hash)
	}
	d := h.New()
	d.Write(octets)
	digest := d.Sum(nil)
	var opts crypto.SignerOpts = h
	if s.PSS {
		opts = &rsa.PSSOptions{SaltLength: h.Size(), Hash: h}
	}
	sig, err := key.Sign(rand.Reader, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("ikecrypto: %v: %w", s, err)
	}
	if ec, ok := pub.(*ecdsa.PublicKey); ok && s.Method != message.AuthDigitalSignature {
		if sig, err = derToRS(sig, (ec.Curve.Params().BitSize+7)/8); err != nil {
			return nil, err
		}
	}
	return append(prefix, sig...), nil
}

// checkClassic checks that a method 1 or 9-11 signature fits the key.
func checkClassic(pub crypto.PublicKey, s Scheme) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if s.Method == message.AuthRSASignature && s.Hash == HashSHA1 && !s.PSS {
			return nil
		}
	case *ecdsa.PublicKey:
		if m, h := ecdsaMethod(k.Curve); m == s.Method && h == s.Hash {
			return nil
		}
	}
	return fmt.Errorf("ikecrypto: %v does not fit a %T key", s, pub)
}

type ecdsaSig struct{ R, S *big.Int }

func derToRS(der []byte, n int) ([]byte, error) {
	var sig ecdsaSig
	if rest, err := asn1.Unmarshal(der, &sig); err != nil || len(rest) != 0 {
		return nil, errors.New("ikecrypto: ECDSA signer returned no DER signature")
	}
	out := make([]byte, 2*n)
	sig.R.FillBytes(out[:n])
	sig.S.FillBytes(out[n:])
	return out, nil
}

// Verify checks the AUTH payload data of method m against octets with
// the peer's public key and returns the scheme it was made with. allowed
// lists the hashes accepted under method 14 (what we announced; nil takes
// DefaultHashes); the classic methods have their fixed hash. A mismatch
// between key and method, an unknown AlgorithmIdentifier or a bad
// signature are errors (the exchange answers AUTHENTICATION_FAILED).
func Verify(pub crypto.PublicKey, m message.AuthMethod, data, octets []byte, allowed []uint16) (Scheme, error) {
	if len(allowed) == 0 {
		allowed = DefaultHashes
	}
	s := Scheme{Method: m}
	sig := data
	switch m {
	case message.AuthRSASignature:
		s.Hash = HashSHA1
	case message.AuthECDSA256, message.AuthECDSA384, message.AuthECDSA521:
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return s, fmt.Errorf("ikecrypto: auth method %d with a %T key", m, pub)
		}
		var wantM message.AuthMethod
		wantM, s.Hash = ecdsaMethod(ec.Curve)
		if wantM != m {
			return s, fmt.Errorf("ikecrypto: auth method %d with an ECDSA %s key", m, ec.Curve.Params().Name)
		}
		n := (ec.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return s, fmt.Errorf("ikecrypto: ECDSA signature of %d bytes, want %d: %w", len(sig), 2*n, ErrSignature)
		}
		der, err := asn1.Marshal(ecdsaSig{new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])})
		if err != nil {
			return s, err
		}
		sig = der
	case message.AuthDigitalSignature:
		if len(data) < 1 || len(data) < 1+int(data[0]) {
			return s, errors.New("ikecrypto: RFC 7427 AUTH data shorter than its AlgorithmIdentifier")
		}
		var err error
		if s, err = parseAlgorithmIdentifier(data[1:1+int(data[0])], pub); err != nil {
			return s, err
		}
		ok := false
		for _, h := range allowed {
			ok = ok || h == s.Hash
		}
		if !ok {
			return s, fmt.Errorf("ikecrypto: RFC 7427 signature with hash %d, which we did not announce", s.Hash)
		}
		sig = data[1+int(data[0]):]
	default:
		return s, fmt.Errorf("ikecrypto: auth method %d is not a signature method", m)
	}
	if err := verifyRaw(pub, s, sig, octets); err != nil {
		return s, err
	}
	return s, nil
}

func verifyRaw(pub crypto.PublicKey, s Scheme, sig, octets []byte) error {
	if k, ok := pub.(ed25519.PublicKey); ok {
		if s.Hash != HashIdentity || !ed25519.Verify(k, octets, sig) {
			return fmt.Errorf("ikecrypto: Ed25519: %w", ErrSignature)
		}
		return nil
	}
	h := hashOf(s.Hash)
	if h == 0 {
		return fmt.Errorf("ikecrypto: hash %d with a %T key", s.Hash, pub)
	}
	d := h.New()
	d.Write(octets)
	digest := d.Sum(nil)
	switch k := pub.(type) {
	case *rsa.PublicKey:
		var err error
		if s.PSS {
			err = rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: pssSalt(s), Hash: h})
		} else {
			err = rsa.VerifyPKCS1v15(k, h, digest, sig)
		}
		if err != nil {
			return fmt.Errorf("ikecrypto: RSA %v: %w", s, ErrSignature)
		}
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return fmt.Errorf("ikecrypto: ECDSA %v: %w", s, ErrSignature)
		}
	default:
		return fmt.Errorf("ikecrypto: cannot verify with a %T key", pub)
	}
	return nil
}

// pssSalt is the salt length of a PSS signature: the one the peer's
// parameters named, or the digest length.
func pssSalt(s Scheme) int {
	if s.saltLen > 0 {
		return s.saltLen - 1
	}
	return hashOf(s.Hash).Size()
}

// parseAlgorithmIdentifier reads a method 14 AlgorithmIdentifier and
// checks that it fits the key.
func parseAlgorithmIdentifier(der []byte, pub crypto.PublicKey) (Scheme, error) {
	s := Scheme{Method: message.AuthDigitalSignature}
	var ai pkix.AlgorithmIdentifier
	if rest, err := asn1.Unmarshal(der, &ai); err != nil || len(rest) != 0 {
		return s, errors.New("ikecrypto: RFC 7427 AlgorithmIdentifier does not parse")
	}
	_, isRSA := pub.(*rsa.PublicKey)
	_, isEC := pub.(*ecdsa.PublicKey)
	_, isEd := pub.(ed25519.PublicKey)
	switch {
	case ai.Algorithm.Equal(oidEd25519):
		if !isEd {
			return s, fmt.Errorf("ikecrypto: Ed25519 signature with a %T key", pub)
		}
		s.Hash = HashIdentity
		return s, nil
	case ai.Algorithm.Equal(oidRSASSAPSS):
		if !isRSA {
			return s, fmt.Errorf("ikecrypto: RSASSA-PSS signature with a %T key", pub)
		}
		var p pssParams
		if rest, err := asn1.Unmarshal(ai.Parameters.FullBytes, &p); err != nil || len(rest) != 0 {
			return s, errors.New("ikecrypto: RSASSA-PSS parameters do not parse")
		}
		var mgfHash pkix.AlgorithmIdentifier
		if !p.MGF.Algorithm.Equal(oidMGF1) {
			return s, errors.New("ikecrypto: RSASSA-PSS with a mask generation function other than MGF1")
		}
		if rest, err := asn1.Unmarshal(p.MGF.Parameters.FullBytes, &mgfHash); err != nil || len(rest) != 0 || !mgfHash.Algorithm.Equal(p.Hash.Algorithm) {
			return s, errors.New("ikecrypto: RSASSA-PSS MGF1 hash differs from the message hash")
		}
		if p.TrailerField != 1 || p.SaltLength < 0 {
			return s, errors.New("ikecrypto: RSASSA-PSS trailer field or salt length invalid")
		}
		for _, r := range hashOIDs {
			if r.oid.Equal(p.Hash.Algorithm) {
				s.Hash, s.PSS = r.id, true
				s.saltLen = p.SaltLength + 1
				return s, nil
			}
		}
		return s, errors.New("ikecrypto: RSASSA-PSS with an unknown hash (the default SHA-1 needs explicit parameters)")
	}
	for _, r := range hashOIDs {
		if isRSA && r.rsa.Equal(ai.Algorithm) || isEC && r.ec.Equal(ai.Algorithm) {
			s.Hash = r.id
			return s, nil
		}
	}
	return s, fmt.Errorf("ikecrypto: RFC 7427 algorithm %v does not fit a %T key", ai.Algorithm, pub)
}
