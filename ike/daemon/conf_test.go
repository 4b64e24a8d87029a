package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
)

// TestTSPrefix: address ranges that are prefixes become them; others are
// refused (the SPD holds prefixes).
func TestTSPrefix(t *testing.T) {
	r := func(a, b string) message.TrafficSelector {
		s, e := netip.MustParseAddr(a), netip.MustParseAddr(b)
		ty := message.TS_IPV4_ADDR_RANGE
		if s.Is6() {
			ty = message.TS_IPV6_ADDR_RANGE
		}
		return message.TrafficSelector{TSType: ty, Start: s, End: e, EndPort: 65535}
	}
	for _, c := range []struct {
		ts   message.TrafficSelector
		want string // "" = refused
	}{
		{r("10.0.0.0", "10.0.0.255"), "10.0.0.0/24"},
		{r("10.0.0.1", "10.0.0.1"), "10.0.0.1/32"},
		{r("0.0.0.0", "255.255.255.255"), "0.0.0.0/0"},
		{r("fd00::", "fd00::ffff:ffff:ffff:ffff"), "fd00::/64"},
		{r("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), "::/0"},
		{r("10.0.0.1", "10.0.0.2"), ""},
		{r("10.0.0.0", "10.0.0.254"), ""},
		{r("10.0.0.128", "10.0.1.127"), ""},
	} {
		p, err := tsPrefix(c.ts)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%v-%v: got %v, want refused", c.ts.Start, c.ts.End, p)
		case c.want != "" && (err != nil || p.String() != c.want):
			t.Errorf("%v-%v: got %v (%v), want %s", c.ts.Start, c.ts.End, p, err, c.want)
		}
	}
}

// TestPSKFor: charon's choice of shared key (mem_cred's shared filter: a
// secret naming an identity matches it perfectly, one naming none matches
// any): one naming both identities beats one naming either, which beats
// one naming none; a secret naming only other identities is never used.
func TestPSKFor(t *testing.T) {
	a, b, c := exchange.FQDN("a"), exchange.FQDN("b"), exchange.FQDN("c")
	cfg := &config.Config{Secrets: []*config.Secret{
		{Type: "ike", Data: []byte("any")},
		{Type: "ike", IDs: []exchange.Identity{a}, Data: []byte("a")},
		{Type: "ike", IDs: []exchange.Identity{a, b}, Data: []byte("ab")},
		{Type: "ike", IDs: []exchange.Identity{c}, Data: []byte("c")},
		{Type: "private", IDs: []exchange.Identity{a, b}},
	}}
	for _, tc := range []struct {
		l, r exchange.Identity
		want string
	}{{a, b, "ab"}, {b, a, "ab"}, {a, c, "a"}, {b, exchange.FQDN("d"), "ab"}, {exchange.FQDN("d"), exchange.FQDN("e"), "any"}} {
		if got := string(pskFor(cfg, tc.l, tc.r)); got != tc.want {
			t.Errorf("%s/%s: %q, want %q", tc.l.Data, tc.r.Data, got, tc.want)
		}
	}
}

// TestDynamicTS: swanctl's "dynamic" selectors (none given, or the
// parser's selector of no type and no address, with its protocol and
// ports) become the IKE address of their side; others stay.
func TestDynamicTS(t *testing.T) {
	la, ra := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::2")
	net10 := message.TrafficSelector{TSType: message.TS_IPV4_ADDR_RANGE, Start: netip.MustParseAddr("10.0.0.0"), End: netip.MustParseAddr("10.0.0.255"), EndPort: 65535}
	ch := &config.Child{LocalTS: []message.TrafficSelector{{IPProto: 6, StartPort: 80, EndPort: 80}, net10}}
	l, r := childTS(ch, la, ra)
	wantL := []message.TrafficSelector{{TSType: message.TS_IPV4_ADDR_RANGE, IPProto: 6, StartPort: 80, EndPort: 80, Start: la, End: la}, net10}
	wantR := []message.TrafficSelector{{TSType: message.TS_IPV6_ADDR_RANGE, EndPort: 65535, Start: ra, End: ra}}
	if !reflect.DeepEqual(l, wantL) || !reflect.DeepEqual(r, wantR) {
		t.Errorf("got %+v / %+v\nwant %+v / %+v", l, r, wantL, wantR)
	}
}

// TestCovers: a CHILD SA the peer created belongs to the configured
// child whose selectors contain the agreed ones.
func TestCovers(t *testing.T) {
	r := func(a, b string, proto uint8, lo, hi uint16) message.TrafficSelector {
		return message.TrafficSelector{TSType: message.TS_IPV4_ADDR_RANGE, Start: netip.MustParseAddr(a), End: netip.MustParseAddr(b), IPProto: proto, StartPort: lo, EndPort: hi}
	}
	conf := []message.TrafficSelector{r("10.0.0.0", "10.0.0.255", 0, 0, 65535)}
	for _, c := range []struct {
		got  []message.TrafficSelector
		want bool
	}{
		{[]message.TrafficSelector{r("10.0.0.0", "10.0.0.255", 0, 0, 65535)}, true},
		{[]message.TrafficSelector{r("10.0.0.5", "10.0.0.5", 6, 80, 80)}, true},
		{[]message.TrafficSelector{r("10.0.0.5", "10.0.1.5", 0, 0, 65535)}, false},
		{[]message.TrafficSelector{r("10.0.0.5", "10.0.0.5", 0, 0, 65535), r("10.0.2.0", "10.0.2.0", 0, 0, 65535)}, false},
		{nil, false},
	} {
		if got := covers(conf, c.got); got != c.want {
			t.Errorf("%v: %v, want %v", tsStrings(c.got), got, c.want)
		}
	}
}

// TestExchangeConfigPubkey: a swanctl connection with auth = pubkey on
// both sides reaches the exchange as certificate authentication: our
// certificate and key, the peer checked against the remote cacerts or,
// without them, every loaded authority (charon's behaviour), the schemes
// as RFC 7427 hashes; PSK and pubkey mix per side. Before, the daemon
// refused anything but PSK.
func TestExchangeConfigPubkey(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	ca, _ := x509.ParseCertificate(caDER)
	eeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	eeTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "ours"},
		DNSNames: []string{"ours.test"}, NotBefore: caTmpl.NotBefore, NotAfter: caTmpl.NotAfter}
	eeDER, _ := x509.CreateCertificate(rand.Reader, eeTmpl, ca, eeKey.Public(), caKey)
	ee, _ := x509.ParseCertificate(eeDER)
	other := &x509.Certificate{Raw: []byte("other CA")}

	local := netip.MustParseAddrPort("10.0.0.1:500")
	remote := netip.MustParseAddrPort("10.0.0.2:500")
	pub := config.Auth{Method: config.AuthPubkey, Certs: []*x509.Certificate{ee}, Key: eeKey, Schemes: []uint16{3}}
	psk := config.Auth{Method: config.AuthPSK}
	esp := []message.Proposal{{Transforms: []message.Transform{{Type: message.TransformENCR, ID: message.ENCR_AES_GCM_16}}}}
	ikeP := []message.Proposal{{Transforms: []message.Transform{{Type: message.TransformENCR, ID: message.ENCR_AES_GCM_16},
		{Type: message.TransformPRF, ID: message.PRF_HMAC_SHA2_256}, {Type: message.TransformKE, ID: 31}}}}
	for _, tc := range []struct {
		name        string
		l, r        config.Auth
		authorities []*x509.Certificate
		wantL       exchange.Auth
		wantR       exchange.Auth
		wantLID     exchange.Identity
		wantRID     exchange.Identity
		wantErr     bool
	}{
		{name: "pubkey both, authorities", l: pub, r: config.Auth{Method: config.AuthPubkey},
			authorities: []*x509.Certificate{ca},
			wantL:       exchange.Auth{Method: exchange.AuthPubkey, Certs: pub.Certs, Key: eeKey, Hashes: []uint16{3}},
			wantR:       exchange.Auth{Method: exchange.AuthPubkey, CACerts: []*x509.Certificate{ca}}},
		{name: "remote cacerts win", l: pub, r: config.Auth{Method: config.AuthPubkey, CACerts: []*x509.Certificate{ca},
			ID: exchange.FQDN("peer.test")}, authorities: []*x509.Certificate{other},
			wantL:   exchange.Auth{Method: exchange.AuthPubkey, Certs: pub.Certs, Key: eeKey, Hashes: []uint16{3}},
			wantR:   exchange.Auth{Method: exchange.AuthPubkey, CACerts: []*x509.Certificate{ca}},
			wantRID: exchange.FQDN("peer.test")},
		{name: "pubkey local, psk remote", l: pub, r: psk,
			wantL:   exchange.Auth{Method: exchange.AuthPubkey, Certs: pub.Certs, Key: eeKey, Hashes: []uint16{3}},
			wantR:   exchange.Auth{Method: exchange.AuthPSK, PSK: []byte("k")},
			wantRID: addrID(remote.Addr())},
		{name: "no CA", l: pub, r: config.Auth{Method: config.AuthPubkey}, wantErr: true},
		{name: "no key", l: config.Auth{Method: config.AuthPubkey, Certs: pub.Certs}, r: psk, wantErr: true},
	} {
		cfg := &config.Config{Authorities: tc.authorities,
			Secrets: []*config.Secret{{Type: "ike", Data: []byte("k")}}}
		c := &config.Connection{Name: "c", Local: []*config.Auth{&tc.l}, Remote: []*config.Auth{&tc.r}, Proposals: ikeP,
			Children: []*config.Child{{Name: "ch", Proposals: esp}}}
		x, err := exchangeConfig(cfg, c, c.Children[0], local, remote)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%s: no error", tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(x.LocalAuth, tc.wantL) || !reflect.DeepEqual(x.RemoteAuth, tc.wantR) {
			t.Errorf("%s: auth\n got %+v / %+v\nwant %+v / %+v", tc.name, x.LocalAuth, x.RemoteAuth, tc.wantL, tc.wantR)
		}
		if !reflect.DeepEqual(x.LocalID, tc.wantLID) || !reflect.DeepEqual(x.RemoteID, tc.wantRID) {
			t.Errorf("%s: ids %+v / %+v, want %+v / %+v", tc.name, x.LocalID, x.RemoteID, tc.wantLID, tc.wantRID)
		}
	}
}
