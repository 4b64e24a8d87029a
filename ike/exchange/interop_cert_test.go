package exchange

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/internal/charontest"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// charonCertSetup mints one CA (ECDSA P-384, made here in Go), an RSA-3072
// certificate for charon (subject DN as its identity, which makes its
// IKE_AUTH messages larger than strongSwan's 1280-byte fragment size, so
// charon fragments them) and one of ourKind for us (identity the FQDN
// goike.ike.test in its subjectAltName), and starts charon with a
// connection "gwcert" that uses them with default proposals.
func charonCertSetup(t *testing.T, ourKind string) (pc peerCharon, ca, charonCert, ourCert *x509.Certificate, ourKey crypto.Signer) {
	t.Helper()
	charontest.Require(t)
	pki := newPKI(t, "ipsecstack interop CA", "p384")
	charonCert, charonKey := pki.endEntity(t, "charon", "rsa3072", []string{"charon.ike.test"}, nil, nil)
	ourCert, ourKey = pki.endEntity(t, "goike", ourKind, []string{"goike.ike.test"}, nil, nil)
	// charon's directory, where swanctl.conf names the certificates: not
	// t.TempDir, named after the subtest, since swanctl reads a comma as a
	// list separator. Removed after charon stops (cleanups run last
	// first).
	dir, err := os.MkdirTemp("", "ikecert")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(charonKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := write("ca.pem", "CERTIFICATE", pki.ca.Raw)
	certFile := write("charon.pem", "CERTIFICATE", charonCert.Raw)
	conns := fmt.Sprintf(`  gwcert {
    version = 2
    local_addrs = 10.55.0.1
    remote_addrs = 10.55.0.2
    proposals = default
    local { auth = pubkey
            certs = %s }
    remote { auth = pubkey
             id = goike.ike.test
             cacerts = %s }
    children { certnet { local_ts = 10.56.1.0/24
                         remote_ts = 10.56.2.0/24
                         esp_proposals = default } }
  }`, certFile, caFile)
	files := map[string][]byte{"private/charon.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}
	return startCharonWith(t, dir, conns, files), pki.ca, charonCert, ourCert, ourKey
}

func certInteropConfig(local, remote netip.AddrPort, ca, ourCert *x509.Certificate, ourKey crypto.Signer) Config {
	return Config{
		Local: local, Remote: remote,
		LocalID:      FQDN("goike.ike.test"),
		LocalAuth:    Auth{Method: AuthPubkey, Certs: []*x509.Certificate{ourCert}, Key: ourKey},
		RemoteAuth:   Auth{Method: AuthPubkey, CACerts: []*x509.Certificate{ca}},
		IKEProposals: DefaultIKEProposals(),
		ESPProposals: DefaultESPProposals(),
		LocalTS:      []message.TrafficSelector{prefixTS("10.56.2.0/24")},
		RemoteTS:     []message.TrafficSelector{prefixTS("10.56.1.0/24")},
		Mode:         xfrm.ModeTunnel,
	}
}

// countingTransport counts the SKF fragments that leave and arrive.
type countingTransport struct {
	*udpTransport
	fragsIn, fragsOut int
}

func (c *countingTransport) Send(b []byte, natt bool) error {
	if len(b) >= message.HeaderLen && message.PayloadType(b[16]) == message.PayloadSKF {
		c.fragsOut++
	}
	return c.udpTransport.Send(b, natt)
}

func (c *countingTransport) Recv(ctx context.Context) ([]byte, bool, error) {
	b, natt, err := c.udpTransport.Recv(ctx)
	if err == nil && len(b) >= message.HeaderLen && message.PayloadType(b[16]) == message.PayloadSKF {
		c.fragsIn++
	}
	return b, natt, err
}

// TestStrongSwanCertificates authenticates with X.509 certificates from
// one CA against a default charon 5.9.8 in both roles: charon's default
// proposals against our default offer, charon's RSA-3072 certificate
// with its DN identity (its IKE_AUTH message comes in RFC 7383 fragments
// that we reassemble), ours ECDSA P-256 or Ed25519 with an FQDN identity;
// in one case we fragment too (a 576-byte fragment size), which charon
// reassembles.
func TestStrongSwanCertificates(t *testing.T) {
	charontest.Require(t)
	for _, tt := range []struct {
		name     string
		kind     string
		fragSize int
	}{
		{"ECDSA P-256", "p256", 0},
		{"Ed25519", "ed25519", 0},
		{"ECDSA P-256, we fragment too", "p256b", 576},
	} {
		t.Run("charon responds, "+tt.name, func(t *testing.T) {
			pc, ca, charonCert, ourCert, ourKey := charonCertSetup(t, tt.kind)
			local := netip.MustParseAddrPort("10.55.0.2:500")
			remote := netip.MustParseAddrPort("10.55.0.1:500")
			c500, c4500 := udpInNetns(t, pc.ns, local), udpInNetns(t, pc.ns, netip.AddrPortFrom(local.Addr(), NATTPort))
			cfg := certInteropConfig(local, remote, ca, ourCert, ourKey)
			cfg.FragmentSize = tt.fragSize
			tr := &countingTransport{udpTransport: &udpTransport{c500: c500, c4500: c4500, peer: remote.Addr()}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := Initiate(ctx, cfg, tr, Retransmit{Timeout: time.Second})
			if err != nil {
				t.Fatalf("%v\n%s", err, pc.Report())
			}
			sas, _ := pc.ListSAs()
			if !strings.Contains(sas, "ESTABLISHED") || !strings.Contains(sas, fmt.Sprintf("%016x_i %016x_r*", r.SPIi, r.SPIr)) ||
				!strings.Contains(sas, fmt.Sprintf("in  %08x", r.Out.SPI)) {
				t.Errorf("charon's view does not match ours:\n%s", sas)
			}
			if !strings.Contains(sas, "goike.ike.test") {
				t.Errorf("charon does not name our identity:\n%s", sas)
			}
			if r.Peer.ID.Type != message.ID_DER_ASN1_DN || !bytes.Equal(r.Peer.ID.Data, charonCert.RawSubject) ||
				len(r.Peer.Certs) != 2 || !r.Peer.Certs[0].Equal(charonCert) {
				t.Errorf("peer %v, chain of %d", r.Peer.ID, len(r.Peer.Certs))
			}
			if !r.Fragmentation || tr.fragsIn < 2 || (tt.fragSize != 0) != (tr.fragsOut > 1) {
				t.Errorf("fragmentation %v, %d fragments from charon, %d to it", r.Fragmentation, tr.fragsIn, tr.fragsOut)
			}
			want := IKESuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA2_256_128, message.PRF_HMAC_SHA2_256, message.KE_CURVE25519}
			if r.IKE != want {
				t.Errorf("IKE suite %+v, want %+v", r.IKE, want)
			}
			t.Logf("IKE %+v ESP %+v, charon signed with %v, %d fragments in, %d out; charon:\n%s", r.IKE, r.ESP, r.Peer.Scheme, tr.fragsIn, tr.fragsOut, sas)
		})
	}
	for _, tt := range []struct{ name, kind string }{{"ECDSA P-256", "p256"}, {"Ed25519", "ed25519"}} {
		t.Run("charon initiates, "+tt.name, func(t *testing.T) {
			pc, ca, charonCert, ourCert, ourKey := charonCertSetup(t, tt.kind)
			local := netip.MustParseAddrPort("10.55.0.2:500")
			remote := netip.MustParseAddrPort("10.55.0.1:500")
			cfg := certInteropConfig(local, remote, ca, ourCert, ourKey)
			r, err := NewResponder(cfg)
			if err != nil {
				t.Fatal(err)
			}
			out, frags := serveCharon(t, pc, r, "certnet")
			res := r.Result()
			if !strings.Contains(out, "established") || !strings.Contains(out, fmt.Sprintf("%08x_i %08x_o", res.Out.SPI, res.In.SPI)) {
				t.Errorf("charon's initiate output does not show our CHILD SA:\n%s", out)
			}
			if !bytes.Equal(res.Peer.ID.Data, charonCert.RawSubject) || !res.Peer.InitialContact || frags < 2 {
				t.Errorf("peer %v, INITIAL_CONTACT %v, %d fragments", res.Peer.ID, res.Peer.InitialContact, frags)
			}
			t.Logf("IKE %+v ESP %+v, charon signed with %v; charon:\n%s", res.IKE, res.ESP, res.Peer.Scheme, out)
		})
	}
}

// serveCharon has charon initiate child and answers with r on our two
// sockets until r is done; it returns swanctl's output and the number of
// fragments that came in.
func serveCharon(t *testing.T, pc peerCharon, r *Responder, child string) (string, int) {
	t.Helper()
	local := netip.MustParseAddrPort("10.55.0.2:500")
	c500, c4500 := udpInNetns(t, pc.ns, local), udpInNetns(t, pc.ns, netip.AddrPortFrom(local.Addr(), NATTPort))
	type dgram struct {
		b    []byte
		from netip.AddrPort
		natt bool
	}
	in := make(chan dgram, 16)
	for _, c := range []*net.UDPConn{c500, c4500} {
		go func(c *net.UDPConn, natt bool) {
			buf := make([]byte, 65536)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return // closed by Cleanup
				}
				in <- dgram{append([]byte(nil), buf[:n]...), from, natt}
			}
		}(c, c == c4500)
	}
	initiated := swanctlAsync(pc, "--initiate", "--child", child, "--timeout", "10")
	frags := 0
	deadline := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case d := <-in:
			b := d.b
			if d.natt {
				if len(b) <= 4 || !bytes.Equal(b[:4], []byte{0, 0, 0, 0}) {
					continue // ESP or a keepalive, not IKE
				}
				b = b[4:]
			}
			if len(b) >= message.HeaderLen && message.PayloadType(b[16]) == message.PayloadSKF {
				frags++
			}
			resp, fin, err := r.Handle(b)
			if errors.Is(err, ErrUnexpected) {
				// Dropped, or answered with a notification that lets the
				// exchange go on (INVALID_KE_PAYLOAD, say).
				t.Logf("responder: %v", err)
			} else if err != nil {
				t.Fatalf("responder: %v\n%s", err, pc.Report())
			}
			for _, out := range resp {
				c := c500
				if d.natt {
					c, out = c4500, append([]byte{0, 0, 0, 0}, out...)
				}
				if _, err := c.WriteToUDPAddrPort(out, d.from); err != nil {
					t.Fatal(err)
				}
			}
			done = fin
		case <-deadline:
			t.Fatalf("charon did not complete the exchange\n%s", pc.Report())
		}
	}
	return <-initiated, frags
}
