package exchange

import (
	"bytes"
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
)

// certConfigs returns the PSK test configurations turned to
// certificates: each side proves itself with its certificate and key and
// trusts ca for the peer.
func certConfigs(iCert *x509.Certificate, iKey crypto.Signer, rCert *x509.Certificate, rKey crypto.Signer, cas ...*x509.Certificate) (ci, cr Config) {
	ci, cr = configs(suites[0].ike, suites[0].esp)
	ci.PSK, cr.PSK = nil, nil
	ci.LocalID, ci.RemoteID, cr.LocalID, cr.RemoteID = Identity{}, Identity{}, Identity{}, Identity{}
	ci.LocalAuth = Auth{Method: AuthPubkey, Certs: []*x509.Certificate{iCert}, Key: iKey}
	cr.LocalAuth = Auth{Method: AuthPubkey, Certs: []*x509.Certificate{rCert}, Key: rKey}
	ci.RemoteAuth = Auth{Method: AuthPubkey, CACerts: cas}
	cr.RemoteAuth = Auth{Method: AuthPubkey, CACerts: cas}
	return ci, cr
}

// TestCertificateAuth runs both roles with certificates of every key
// type from one CA made here, identities defaulting to the subject DN,
// and checks what each side learnt of the other and which AUTH method
// was used: RFC 7427 (14) since both announce SIGNATURE_HASH_ALGORITHMS.
func TestCertificateAuth(t *testing.T) {
	pki := newPKI(t, "Test Root CA", "p384")
	for _, tt := range []struct {
		name         string
		iKind, rKind string
		pss          bool
		iHash, rHash uint16 // hash of the initiator's and the responder's signature
	}{
		{"RSA and ECDSA P-256", "rsa2048", "p256", false, ikecrypto.HashSHA2_256, ikecrypto.HashSHA2_256},
		{"RSA-PSS and ECDSA P-384", "rsa2048", "p384", true, ikecrypto.HashSHA2_256, ikecrypto.HashSHA2_384},
		{"ECDSA P-521 and Ed25519", "p521", "ed25519", false, ikecrypto.HashSHA2_512, ikecrypto.HashIdentity},
		{"Ed25519 both", "ed25519", "ed25519b", false, ikecrypto.HashIdentity, ikecrypto.HashIdentity},
	} {
		t.Run(tt.name, func(t *testing.T) {
			iCert, iKey := pki.endEntity(t, "initiator", tt.iKind, []string{"initiator.test"}, nil, nil)
			rCert, rKey := pki.endEntity(t, "responder", tt.rKind, []string{"responder.test"}, nil, nil)
			ci, cr := certConfigs(iCert, iKey, rCert, rKey, pki.ca)
			ci.LocalAuth.PSS = tt.pss
			i, r, err := run(t, ci, cr)
			if err != nil {
				t.Fatal(err)
			}
			pi, pr := i.Result().Peer, r.Result().Peer
			if !bytes.Equal(pr.ID.Data, iCert.RawSubject) || pr.ID.Type != message.ID_DER_ASN1_DN {
				t.Errorf("responder saw identity %v", pr.ID)
			}
			if len(pr.Certs) != 2 || !pr.Certs[0].Equal(iCert) || !pr.Certs[1].Equal(pki.ca) {
				t.Errorf("responder's chain %v", pr.Certs)
			}
			if len(pi.Certs) != 2 || !pi.Certs[0].Equal(rCert) {
				t.Errorf("initiator's chain %v", pi.Certs)
			}
			if pr.Scheme.Method != message.AuthDigitalSignature || pr.Scheme.Hash != tt.iHash || pr.Scheme.PSS != tt.pss {
				t.Errorf("initiator signed with %v", pr.Scheme)
			}
			if pi.Scheme.Method != message.AuthDigitalSignature || pi.Scheme.Hash != tt.rHash {
				t.Errorf("responder signed with %v", pi.Scheme)
			}
			if !pr.InitialContact {
				t.Error("INITIAL_CONTACT not seen by the responder")
			}
		})
	}
}

// TestCertificateIdentities: every identity type is matched against the
// certificate it must be in (RFC 4945 §3.1: DN against the subject, the
// others against subjectAltNames, KEY_ID against the subject key ID).
func TestCertificateIdentities(t *testing.T) {
	pki := newPKI(t, "Test Root CA", "p256")
	ip4, ip6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	iCert, iKey := pki.endEntity(t, "initiator", "p256b", []string{"initiator.test"}, []string{"ini@test"},
		[]net.IP{ip4.AsSlice(), ip6.AsSlice()})
	rCert, rKey := pki.endEntity(t, "responder", "p256c", []string{"responder.test"}, nil, nil)
	gn := func(tag int, b []byte) []byte {
		d, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, Bytes: b})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	dirName, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: iCert.RawSubject})
	for _, tt := range []struct {
		name string
		id   Identity
		ok   bool
	}{
		{"DN", DN(iCert.RawSubject), true},
		{"FQDN", FQDN("initiator.test"), true},
		{"FQDN in other case", FQDN("Initiator.TEST"), true},
		{"e-mail", Email("ini@test"), true},
		{"IPv4", Addr(ip4), true},
		{"IPv6", Addr(ip6), true},
		{"KEY_ID", Identity{Type: message.ID_KEY_ID, Data: []byte("initiator")}, true},
		{"GN dNSName", Identity{Type: message.ID_DER_ASN1_GN, Data: gn(2, []byte("initiator.test"))}, true},
		{"GN directoryName", Identity{Type: message.ID_DER_ASN1_GN, Data: dirName}, true},
		{"GN iPAddress", Identity{Type: message.ID_DER_ASN1_GN, Data: gn(7, ip4.AsSlice())}, true},
		{"DN of another", DN(rCert.RawSubject), false},
		{"FQDN not in SAN", FQDN("other.test"), false},
		{"IPv4 not in SAN", Addr(netip.MustParseAddr("192.0.2.2")), false},
		{"GN rfc822 not in SAN", Identity{Type: message.ID_DER_ASN1_GN, Data: gn(1, []byte("x@test"))}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := certHasID(iCert, tt.id); got != tt.ok {
				t.Fatalf("certHasID = %v, want %v", got, tt.ok)
			}
			if !tt.ok {
				return
			}
			ci, cr := certConfigs(iCert, iKey, rCert, rKey, pki.ca)
			ci.LocalID, cr.RemoteID = tt.id, tt.id
			_, r, err := run(t, ci, cr)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Result().Peer.ID; !idEqual(tt.id, got) {
				t.Errorf("responder saw %v", got)
			}
		})
	}
	// An identity not in our own certificate is a configuration error.
	ci, _ := certConfigs(iCert, iKey, rCert, rKey, pki.ca)
	ci.LocalID = FQDN("not-mine.test")
	if _, err := NewInitiator(ci); err == nil {
		t.Error("local identity outside the certificate accepted")
	}
}

// TestCertificateFailures: the peer is refused with AUTHENTICATION_FAILED
// when its chain does not end in our CA, its identity is another than
// configured or not in its certificate, its signature is bad, or it sends
// no certificate; the initiator refuses such a responder too.
func TestCertificateFailures(t *testing.T) {
	pki := newPKI(t, "Test Root CA", "p256")
	other := newPKI(t, "Other CA", "p256b")
	iCert, iKey := pki.endEntity(t, "initiator", "p384", []string{"initiator.test"}, nil, nil)
	rCert, rKey := pki.endEntity(t, "responder", "rsa2048", []string{"responder.test"}, nil, nil)
	fakeI, fakeIKey := other.endEntity(t, "initiator", "p384", []string{"initiator.test"}, nil, nil)
	wrongKey := testKey(t, "p256c")
	for _, tt := range []struct {
		name      string
		mutate    func(ci, cr *Config)
		responder bool // the initiator refuses the responder, rather than the other way round
	}{
		{"initiator from another CA", func(ci, cr *Config) { ci.LocalAuth.Certs[0], ci.LocalAuth.Key = fakeI, fakeIKey }, false},
		{"responder trusts another CA", func(ci, cr *Config) { cr.RemoteAuth.CACerts = []*x509.Certificate{other.ca} }, false},
		{"initiator identity not the configured one", func(ci, cr *Config) { cr.RemoteID = FQDN("someone.else") }, false},
		{"initiator claims a name its certificate lacks", func(ci, cr *Config) { ci.LocalID = FQDN("responder.test") }, false},
		{"initiator sends no certificate", func(ci, cr *Config) { ci.SendCert = SendCertNever }, false},
		{"initiator not pinned", func(ci, cr *Config) { cr.RemoteAuth.Certs = []*x509.Certificate{rCert} }, false},
		{"initiator uses PSK", func(ci, cr *Config) { ci.LocalAuth = Auth{Method: AuthPSK, PSK: []byte("x")} }, false},
		{"responder from another CA", func(ci, cr *Config) { ci.RemoteAuth.CACerts = []*x509.Certificate{other.ca} }, true},
		{"initiator asks for another responder identity", func(ci, cr *Config) { ci.RemoteID = FQDN("initiator.test") }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ci, cr := certConfigs(iCert, iKey, rCert, rKey, pki.ca)
			ci.LocalAuth.Certs = []*x509.Certificate{iCert}
			tt.mutate(&ci, &cr)
			if !ci.LocalID.IsZero() && ci.LocalAuth.Method == AuthPubkey && !certHasID(ci.LocalAuth.Certs[0], ci.LocalID) {
				// Bypass our own configuration check to play a lying peer.
				i, _, err := runUnchecked(t, ci, cr)
				_ = i
				checkAuthFailed(t, err, tt.responder)
				return
			}
			_, _, err := run(t, ci, cr)
			checkAuthFailed(t, err, tt.responder)
		})
	}
	t.Run("bad signature", func(t *testing.T) {
		ci, cr := certConfigs(iCert, iKey, rCert, rKey, pki.ca)
		_, _, err := runWith(t, ci, cr, func(i *Initiator, r *Responder) { i.cfg.LocalAuth.Key = wrongKey })
		checkAuthFailed(t, err, false)
	})
	t.Run("responder claims a name its certificate lacks", func(t *testing.T) {
		ci, cr := certConfigs(iCert, iKey, rCert, rKey, pki.ca)
		_, _, err := runWith(t, ci, cr, func(i *Initiator, r *Responder) { r.cfg.LocalID = DN(iCert.RawSubject) })
		checkAuthFailed(t, err, true)
	})
	t.Run("responder's bad signature", func(t *testing.T) {
		ci, cr := certConfigs(iCert, iKey, rCert, rKey, pki.ca)
		_, _, err := runWith(t, ci, cr, func(i *Initiator, r *Responder) { r.cfg.LocalAuth.Key = wrongKey })
		checkAuthFailed(t, err, true)
	})
}

func checkAuthFailed(t *testing.T, err error, byInitiator bool) {
	t.Helper()
	if byInitiator {
		if !errors.Is(err, ErrAuthFailed) {
			t.Errorf("err = %v, want the initiator's ErrAuthFailed", err)
		}
		return
	}
	var pe *PeerError
	if !errors.As(err, &pe) || pe.Notify != message.AUTHENTICATION_FAILED {
		t.Errorf("err = %v, want AUTHENTICATION_FAILED from the responder", err)
	}
}

// runUnchecked is run with an initiator whose configuration skipped the
// local identity check: a peer that claims what its certificate lacks.
func runUnchecked(t *testing.T, ci, cr Config) (*Initiator, *Responder, error) {
	id := ci.LocalID
	ci.LocalID = Identity{}
	return runWith(t, ci, cr, func(i *Initiator, _ *Responder) { i.cfg.LocalID = id })
}

// runWith is run with a hook that changes the state machines after their
// configuration was checked.
func runWith(t *testing.T, ci, cr Config, hook func(*Initiator, *Responder)) (*Initiator, *Responder, error) {
	t.Helper()
	i, err := NewInitiator(ci)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResponder(cr)
	if err != nil {
		t.Fatal(err)
	}
	hook(i, r)
	return drive(t, i, r)
}

// TestCertificateChain: an end entity under an intermediate CA is
// verified when the intermediate travels in a second CERT payload, and
// refused when it does not.
func TestCertificateChain(t *testing.T) {
	root := newPKI(t, "Test Root CA", "p384")
	sub := root.intermediate(t, "Test Sub CA", "p256")
	iCert, iKey := sub.endEntity(t, "initiator", "p256b", []string{"initiator.test"}, nil, nil)
	rCert, rKey := root.endEntity(t, "responder", "ed25519", []string{"responder.test"}, nil, nil)
	ci, cr := certConfigs(iCert, iKey, rCert, rKey, root.ca)
	ci.LocalAuth.Certs = []*x509.Certificate{iCert, sub.ca}
	_, r, err := run(t, ci, cr)
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Result().Peer.Certs; len(c) != 3 || !c[1].Equal(sub.ca) || !c[2].Equal(root.ca) {
		t.Errorf("chain %v", c)
	}
	ci.LocalAuth.Certs = []*x509.Certificate{iCert}
	_, _, err = run(t, ci, cr)
	checkAuthFailed(t, err, false)
}

// TestCertReqAndClassicMethods: the responder's IKE_SA_INIT carries a
// CERTREQ with the SHA-1 of the CA's SubjectPublicKeyInfo (RFC 7296
// §3.7), recomputed here from a re-encoding of the CA key; and without
// the initiator's SIGNATURE_HASH_ALGORITHMS the responder signs with the
// classic method of its key (RFC 4754 ECDSA with SHA-384 for P-384).
func TestCertReqAndClassicMethods(t *testing.T) {
	pki := newPKI(t, "Test Root CA", "p256")
	iCert, iKey := pki.endEntity(t, "initiator", "rsa2048", []string{"initiator.test"}, nil, nil)
	rCert, rKey := pki.endEntity(t, "responder", "p384", []string{"responder.test"}, nil, nil)
	ci, cr := certConfigs(iCert, iKey, rCert, rKey, pki.ca)
	hook := func(i *Initiator, r *Responder) {}
	i, r, err := runWith(t, ci, cr, hook)
	if err != nil {
		t.Fatal(err)
	}
	m, err := message.Decode(r.msg2)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pki.ca.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	want := sha1.Sum(spki)
	cr0 := find[*message.CertReq](m.Payloads)
	if cr0 == nil || cr0.Encoding != message.CertX509Signature || !bytes.Equal(cr0.Authority, want[:]) {
		t.Errorf("CERTREQ %+v, want the CA key hash %x", cr0, want)
	}
	_ = i

	// Strip SIGNATURE_HASH_ALGORITHMS from the initiator's IKE_SA_INIT (and
	// from what its AUTH signs, as a peer without RFC 7427 would send it).
	i, _ = NewInitiator(ci)
	r, _ = NewResponder(cr)
	raw, _ := i.Start()
	m, _ = message.Decode(raw)
	var keep []message.Payload
	for _, p := range m.Payloads {
		if n, ok := p.(*message.Notify); !ok || n.NotifyType != message.SIGNATURE_HASH_ALGORITHMS {
			keep = append(keep, p)
		}
	}
	m.Payloads = keep
	raw, _ = m.Encode()
	i.msg1 = raw
	if _, _, err := driveFrom(t, i, r, [][]byte{raw}); err != nil {
		t.Fatal(err)
	}
	if s := i.Result().Peer.Scheme; s.Method != message.AuthECDSA384 {
		t.Errorf("responder signed with %v, want ECDSA-384 (method 10)", s)
	}
	if s := r.Result().Peer.Scheme; s.Method != message.AuthDigitalSignature {
		t.Errorf("initiator signed with %v, want RFC 7427 (the responder announced it)", s)
	}
}

// drive runs started state machines to the end.
func drive(t *testing.T, i *Initiator, r *Responder) (*Initiator, *Responder, error) {
	t.Helper()
	first, err := i.Start()
	if err != nil {
		t.Fatal(err)
	}
	return driveFrom(t, i, r, [][]byte{first})
}
