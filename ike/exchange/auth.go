package exchange

import (
	"bytes"
	"crypto"
	"crypto/sha1"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
)

// PeerInfo is what the peer proved in IKE_AUTH.
type PeerInfo struct {
	// ID is the identity of its IDi/IDr payload.
	ID Identity
	// Certs is its verified chain, end entity first and trust anchor last
	// (empty with a PSK).
	Certs []*x509.Certificate
	// Scheme is how its AUTH was made (Method AuthSharedKeyMIC with a
	// PSK).
	Scheme ikecrypto.Scheme
	// InitialContact is set when it sent INITIAL_CONTACT: it holds no
	// other IKE SA with us, so the caller deletes the old ones (§2.4).
	InitialContact bool
}

// ErrAuthFailed is wrapped by the error for a peer whose AUTH, identity
// or certificate did not verify: the responder answers
// AUTHENTICATION_FAILED, the initiator gives up (§2.21.2). It is also
// IKESA's Dead reason when the peer reports, in an INFORMATIONAL after
// IKE_AUTH, that it did not accept ours (the other reason is ErrTimeout).
var ErrAuthFailed = errors.New("authentication failed")

func authErr(format string, a ...any) error {
	return fmt.Errorf("exchange: %w: %s", ErrAuthFailed, fmt.Sprintf(format, a...))
}

// publicKeysEqual compares two public keys of any standard type.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// keyHash is the CERTREQ Certification Authority entry of a CA: the
// SHA-1 of its SubjectPublicKeyInfo (RFC 7296 §3.7).
func keyHash(c *x509.Certificate) [20]byte { return sha1.Sum(c.RawSubjectPublicKeyInfo) }

// certReq returns the CERTREQ payload naming cas, or nil without CAs.
func certReq(cas []*x509.Certificate) message.Payload {
	if len(cas) == 0 {
		return nil
	}
	var b []byte
	for _, c := range cas {
		h := keyHash(c)
		b = append(b, h[:]...)
	}
	return &message.CertReq{Encoding: message.CertX509Signature, Authority: b}
}

// certRequested reports whether the peer asked for an X.509 certificate.
func certRequested(ps []message.Payload) bool {
	for _, p := range ps {
		if r, ok := p.(*message.CertReq); ok && r.Encoding == message.CertX509Signature {
			return true
		}
	}
	return false
}

// hashList decodes SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4): nil when the
// peer sent none, so that only the classic methods are used toward it.
func hashList(ps []message.Payload) []uint16 {
	ns := notifies(ps, message.SIGNATURE_HASH_ALGORITHMS)
	if len(ns) == 0 {
		return nil
	}
	out := []uint16{}
	for _, n := range ns {
		for d := n.Data; len(d) >= 2; d = d[2:] {
			out = append(out, binary.BigEndian.Uint16(d))
		}
	}
	return out
}

func hashNotify(hashes []uint16) *message.Notify {
	if len(hashes) == 0 {
		hashes = ikecrypto.DefaultHashes
	}
	var b []byte
	for _, h := range hashes {
		b = binary.BigEndian.AppendUint16(b, h)
	}
	return &message.Notify{NotifyType: message.SIGNATURE_HASH_ALGORITHMS, Data: b}
}

// certPayloads are the CERT payloads of our chain, end entity first,
// when the policy says to send them.
func certPayloads(c *Config, asked bool) []message.Payload {
	a := &c.LocalAuth
	if a.Method != AuthPubkey || c.SendCert == SendCertNever || c.SendCert == SendCertIfAsked && !asked {
		return nil
	}
	var out []message.Payload
	for _, cert := range a.Certs {
		out = append(out, &message.Cert{Encoding: message.CertX509Signature, Data: cert.Raw})
	}
	return out
}

// makeAuth computes our AUTH payload over octets.
func makeAuth(prf *ikecrypto.PRF, a *Auth, octets []byte, peerHashes []uint16) (*message.Auth, error) {
	if a.Method == AuthPSK {
		return &message.Auth{Method: message.AuthSharedKeyMIC, Data: ikecrypto.PSKAuth(prf, a.PSK, octets)}, nil
	}
	s, err := ikecrypto.ChooseScheme(a.Key.Public(), a.Hashes, peerHashes, a.PSS)
	if err != nil {
		return nil, err
	}
	sig, err := ikecrypto.Sign(a.Key, s, octets)
	if err != nil {
		return nil, err
	}
	return &message.Auth{Method: s.Method, Data: sig}, nil
}

// verifyPeer authenticates the peer of an IKE_AUTH message: its identity
// against RemoteID, its AUTH against octets (built by the caller from
// the peer's ID payload) with the PSK or the key of a certificate chain
// that ends in one of RemoteAuth.CACerts (or is pinned), and the identity
// against that certificate.
func verifyPeer(c *Config, prf *ikecrypto.PRF, ps []message.Payload, id *message.ID, auth *message.Auth, octets []byte) (PeerInfo, error) {
	info := PeerInfo{ID: Identity{Type: id.IDType, Data: append([]byte(nil), id.Data...)}}
	if !c.RemoteID.IsZero() && !idEqual(c.RemoteID, info.ID) {
		return info, authErr("peer identity of type %d is not the configured one", id.IDType)
	}
	ra := &c.RemoteAuth
	if ra.Method == AuthPSK {
		if auth.Method != message.AuthSharedKeyMIC {
			return info, authErr("auth method %d, want shared key", auth.Method)
		}
		if subtle.ConstantTimeCompare(ikecrypto.PSKAuth(prf, ra.PSK, octets), auth.Data) != 1 {
			return info, authErr("shared key AUTH does not verify (wrong PSK?)")
		}
		info.Scheme = ikecrypto.Scheme{Method: message.AuthSharedKeyMIC}
		return info, nil
	}
	switch auth.Method {
	case message.AuthRSASignature, message.AuthECDSA256, message.AuthECDSA384, message.AuthECDSA521, message.AuthDigitalSignature:
	default:
		return info, authErr("auth method %d, want a signature", auth.Method)
	}
	var certs []*x509.Certificate
	for _, p := range ps {
		cp, ok := p.(*message.Cert)
		if !ok || cp.Encoding != message.CertX509Signature {
			continue // hash and URL, CRLs, ...: not used
		}
		cert, err := x509.ParseCertificate(cp.Data)
		if err != nil {
			return info, authErr("CERT payload %d does not parse: %v", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		if len(ra.Certs) != 1 {
			return info, authErr("peer sent no certificate")
		}
		certs = ra.Certs[:1] // the one pinned certificate stands in for it
	}
	ee := certs[0]
	if len(ra.Certs) > 0 {
		pinned := false
		for _, p := range ra.Certs {
			pinned = pinned || bytes.Equal(p.Raw, ee.Raw)
		}
		if !pinned {
			return info, authErr("peer certificate %q is not a pinned one", ee.Subject)
		}
	}
	chain := []*x509.Certificate{ee}
	if len(ra.CACerts) > 0 {
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, ca := range ra.CACerts {
			roots.AddCert(ca)
		}
		for _, ic := range certs[1:] {
			inter.AddCert(ic)
		}
		chains, err := ee.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: c.Now(),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return info, authErr("peer certificate %q: %v", ee.Subject, err)
		}
		chain = chains[0]
	}
	if !certHasID(ee, info.ID) {
		return info, authErr("peer identity of type %d is not in its certificate %q", id.IDType, ee.Subject)
	}
	s, err := ikecrypto.Verify(ee.PublicKey, auth.Method, auth.Data, octets, ra.Hashes)
	if err != nil {
		return info, authErr("%v", err)
	}
	info.Certs, info.Scheme = chain, s
	return info, nil
}

// idEqual compares a configured identity with a received one: DNs as
// names (the same RDNs in the same order, whatever the string types),
// FQDNs and e-mail addresses case-insensitively, the rest by bytes.
func idEqual(want, got Identity) bool {
	if want.Type != got.Type {
		return false
	}
	switch want.Type {
	case message.ID_DER_ASN1_DN:
		return dnEqual(want.Data, got.Data)
	case message.ID_FQDN, message.ID_RFC822_ADDR:
		return strings.EqualFold(string(want.Data), string(got.Data))
	}
	return bytes.Equal(want.Data, got.Data)
}

func dnEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var ra, rb pkix.RDNSequence
	if rest, err := asn1.Unmarshal(a, &ra); err != nil || len(rest) != 0 {
		return false
	}
	if rest, err := asn1.Unmarshal(b, &rb); err != nil || len(rest) != 0 {
		return false
	}
	return ra.String() == rb.String()
}

// certHasID reports whether certificate c vouches for id (RFC 7296
// §3.5, RFC 4945 §3.1): a DN is its subject, an FQDN, e-mail address or
// IP address one of its subjectAltNames, a key ID its subject key
// identifier, a DER GeneralName any of these.
func certHasID(c *x509.Certificate, id Identity) bool {
	switch id.Type {
	case message.ID_DER_ASN1_DN:
		return dnEqual(id.Data, c.RawSubject)
	case message.ID_FQDN:
		for _, n := range c.DNSNames {
			if strings.EqualFold(n, string(id.Data)) {
				return true
			}
		}
	case message.ID_RFC822_ADDR:
		for _, n := range c.EmailAddresses {
			if strings.EqualFold(n, string(id.Data)) {
				return true
			}
		}
	case message.ID_IPV4_ADDR, message.ID_IPV6_ADDR:
		a, ok := netip.AddrFromSlice(id.Data)
		if !ok {
			return false
		}
		for _, ip := range c.IPAddresses {
			if b, ok := netip.AddrFromSlice(ip); ok && b.Unmap() == a.Unmap() {
				return true
			}
		}
	case message.ID_KEY_ID:
		return len(c.SubjectKeyId) > 0 && bytes.Equal(c.SubjectKeyId, id.Data)
	case message.ID_DER_ASN1_GN:
		var gn asn1.RawValue
		if rest, err := asn1.Unmarshal(id.Data, &gn); err != nil || len(rest) != 0 || gn.Class != asn1.ClassContextSpecific {
			return false
		}
		switch gn.Tag {
		case 1: // rfc822Name
			return certHasID(c, Email(string(gn.Bytes)))
		case 2: // dNSName
			return certHasID(c, FQDN(string(gn.Bytes)))
		case 4: // directoryName: an explicit tag around the Name
			return gn.IsCompound && certHasID(c, DN(gn.Bytes))
		case 7: // iPAddress
			t := message.ID_IPV4_ADDR
			if len(gn.Bytes) == 16 {
				t = message.ID_IPV6_ADDR
			}
			return certHasID(c, Identity{Type: t, Data: gn.Bytes})
		}
	}
	return false
}
