package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/netip"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestCertificatesAndProposals: the two daemons authenticate with ECDSA
// P-256 certificates from one CA (RFC 7427 signatures) and negotiate from
// proposal lists whose first entries differ (A prefers AES-GCM-256 and
// ChaCha20-Poly1305 ESP, B offers only AES-CBC/SHA2-256 IKE and AES-GCM-128
// ESP among others), then carry TCP over the CHILD SA.
func TestCertificatesAndProposals(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64) (*x509.Certificate, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, k
	}
	certA, keyA := leaf("a.test", 2)
	certB, keyB := leaf("b.test", 3)
	mk := func(local, remote string, cert *x509.Certificate, key *ecdsa.PrivateKey, ike, esp []message.Proposal) *config.Config {
		c := connConfig(mustAddr4(local), mustAddr4(remote), cert.Subject.CommonName, "", xfrm.ModeTunnel, config.StartNone)
		conn := c.Connections[0]
		conn.Local = []*config.Auth{{Method: config.AuthPubkey, ID: exchange.FQDN(cert.Subject.CommonName), Certs: []*x509.Certificate{cert}, Key: key}}
		peer := "b.test"
		if cert == certB {
			peer = "a.test"
		}
		conn.Remote = []*config.Auth{{Method: config.AuthPubkey, ID: exchange.FQDN(peer)}}
		conn.Proposals, conn.Children[0].Proposals = ike, esp
		conn.SendCertReq = true
		c.Authorities = []*x509.Certificate{ca}
		c.Secrets = nil
		return c
	}
	tr := func(typ message.TransformType, id uint16, bits int) message.Transform {
		t := message.Transform{Type: typ, ID: id}
		if bits != 0 {
			t.Attributes = []message.Attribute{message.KeyLengthAttr(bits)}
		}
		return t
	}
	ikeA := []message.Proposal{
		{Num: 1, Protocol: message.ProtoIKE, Transforms: []message.Transform{tr(message.TransformENCR, message.ENCR_AES_GCM_16, 256),
			tr(message.TransformPRF, message.PRF_HMAC_SHA2_384, 0), tr(message.TransformKE, message.KE_ECP384, 0)}},
		{Num: 2, Protocol: message.ProtoIKE, Transforms: ikeProposal()[0].Transforms},
	}
	espA := []message.Proposal{
		{Num: 1, Protocol: message.ProtoESP, Transforms: []message.Transform{tr(message.TransformENCR, message.ENCR_CHACHA20_POLY1305, 0), tr(message.TransformESN, message.ESN_NO, 0)}},
		{Num: 2, Protocol: message.ProtoESP, Transforms: espProposal()[0].Transforms},
	}
	b := newBed(t, 4, mk("192.0.2.1", "192.0.2.2", certA, keyA, ikeA, espA), mk("192.0.2.2", "192.0.2.1", certB, keyB, ikeProposal(), espProposal()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	if _, err := testbed.TCPTransfer(ctx, b.a, addrB4, 1<<20); err != nil {
		t.Fatal(err)
	}
	l := b.da.List()
	if l.SAs[0].RemoteID != "b.test" {
		t.Errorf("A's listing:\n%s", l.Format())
	}
	b.checkLeaks(t)
}

func mustAddr4(s string) netip.Addr { return netip.MustParseAddr(s) }
