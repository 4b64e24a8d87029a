package exchange

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// testPKI mints certificates for the tests: a CA made here in Go,
// fresh keys, subjectAltNames as asked.
type testPKI struct {
	ca    *x509.Certificate
	caKey crypto.Signer
}

var (
	keyCache   = map[string]crypto.Signer{}
	keyCacheMu sync.Mutex
)

// testKey returns a key of the named kind; generated keys are reused
// under the same name so that RSA generation does not dominate the run.
func testKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	keyCacheMu.Lock()
	defer keyCacheMu.Unlock()
	if k, ok := keyCache[kind]; ok {
		return k
	}
	var k crypto.Signer
	var err error
	switch kind {
	case "rsa2048", "rsa2048b":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa3072":
		k, err = rsa.GenerateKey(rand.Reader, 3072)
	case "p256", "p256b", "p256c":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "p521":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "ed25519", "ed25519b":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("no key kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	keyCache[kind] = k
	return k
}

var serial int64

func mint(t testing.TB, tmpl *x509.Certificate, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newPKI(t testing.TB, name, kind string) *testPKI {
	k := testKey(t, kind)
	ca := mint(t, &x509.Certificate{
		Subject:               pkix.Name{Country: []string{"CH"}, Organization: []string{"ipsecstack test"}, CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, k.Public(), k)
	return &testPKI{ca: ca, caKey: k}
}

// intermediate returns a sub-CA of p.
func (p *testPKI) intermediate(t testing.TB, name, kind string) *testPKI {
	k := testKey(t, kind)
	c := mint(t, &x509.Certificate{
		Subject:               pkix.Name{Country: []string{"CH"}, Organization: []string{"ipsecstack test"}, CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}, p.ca, k.Public(), p.caKey)
	return &testPKI{ca: c, caKey: k}
}

// endEntity returns a certificate for a fresh key of kind with subject
// CN=cn and the given subjectAltNames.
func (p *testPKI) endEntity(t testing.TB, cn, kind string, dns, email []string, ips []net.IP) (*x509.Certificate, crypto.Signer) {
	k := testKey(t, kind)
	c := mint(t, &x509.Certificate{
		Subject:        pkix.Name{Country: []string{"CH"}, Organization: []string{"ipsecstack test"}, CommonName: cn},
		DNSNames:       dns,
		EmailAddresses: email,
		IPAddresses:    ips,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		SubjectKeyId:   []byte(cn),
	}, p.ca, k.Public(), p.caKey)
	return c, k
}
