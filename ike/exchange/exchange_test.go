package exchange

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

var (
	addrI = netip.MustParseAddrPort("192.0.2.1:500")
	addrR = netip.MustParseAddrPort("198.51.100.2:500")
)

func prefixTS(p string) message.TrafficSelector {
	pf := netip.MustParsePrefix(p)
	t := message.TrafficSelector{TSType: message.TS_IPV4_ADDR_RANGE, EndPort: 65535, Start: pf.Masked().Addr()}
	if pf.Addr().Is6() {
		t.TSType = message.TS_IPV6_ADDR_RANGE
	}
	end := pf.Masked().Addr().AsSlice()
	for i := pf.Bits(); i < len(end)*8; i++ {
		end[i/8] |= 0x80 >> (i % 8)
	}
	t.End, _ = netip.AddrFromSlice(end)
	return t
}

func configs(ike IKESuite, esp ESPSuite) (ci, cr Config) {
	psk := []byte("a pre-shared key of some length")
	netI := []message.TrafficSelector{prefixTS("10.1.0.0/16"), prefixTS("fd00:1::/64")}
	netR := []message.TrafficSelector{prefixTS("10.2.0.0/16"), prefixTS("fd00:2::/64")}
	ci = Config{Local: addrI, Remote: addrR, LocalID: FQDN("initiator.test"), RemoteID: Email("responder@test"),
		PSK: psk, IKE: ike, ESP: esp, LocalTS: netI, RemoteTS: netR, Mode: xfrm.ModeTunnel}
	cr = Config{Local: addrR, Remote: addrI, LocalID: ci.RemoteID, RemoteID: ci.LocalID,
		PSK: psk, IKE: ike, ESP: esp, LocalTS: netR, RemoteTS: netI, Mode: xfrm.ModeTunnel}
	return ci, cr
}

// run drives both state machines to the end, as an in-memory transport
// that delivers every datagram (fragments included) in order.
func run(t *testing.T, ci, cr Config) (*Initiator, *Responder, error) {
	t.Helper()
	i, err := NewInitiator(ci)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResponder(cr)
	if err != nil {
		t.Fatal(err)
	}
	return drive(t, i, r)
}

// driveFrom passes req to the responder and each answer back, to the end.
func driveFrom(t *testing.T, i *Initiator, r *Responder, req [][]byte) (*Initiator, *Responder, error) {
	t.Helper()
	for n := 0; n < 8; n++ {
		var resp [][]byte
		var rdone bool
		var rerr error
		for _, d := range req {
			out, dn, err := r.Handle(d)
			resp, rdone = append(resp, out...), dn
			if err != nil {
				rerr = err
			}
		}
		if rerr != nil && resp == nil {
			return i, r, rerr
		}
		var next [][]byte
		done := false
		for _, d := range resp {
			nx, dn, ierr := i.Handle(d)
			if ierr != nil {
				return i, r, ierr
			}
			next, done = append(next, nx...), done || dn
		}
		if rerr != nil && !errors.Is(rerr, ErrUnexpected) {
			return i, r, rerr
		}
		if done {
			if !rdone {
				t.Fatal("initiator done before responder")
			}
			return i, r, nil
		}
		req = next
	}
	t.Fatal("exchange did not finish")
	return nil, nil, nil
}

var suites = []struct {
	name string
	ike  IKESuite
	esp  ESPSuite
}{
	{"strongSwan default: AES-CBC-128/SHA2-256/X25519, ESP AES-GCM-128",
		IKESuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA2_256_128, message.PRF_HMAC_SHA2_256, message.KE_CURVE25519},
		ESPSuite{message.ENCR_AES_GCM_16, 128, message.AUTH_NONE, false}},
	{"AES-GCM-256/SHA2-384/ECP-384, ESP AES-CBC-256/SHA2-512",
		IKESuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, message.PRF_HMAC_SHA2_384, message.KE_ECP384},
		ESPSuite{message.ENCR_AES_CBC, 256, message.AUTH_HMAC_SHA2_512_256, false}},
	{"ChaCha20-Poly1305/SHA2-512/MODP-2048, ESP ChaCha20-Poly1305",
		IKESuite{message.ENCR_CHACHA20_POLY1305, 0, message.AUTH_NONE, message.PRF_HMAC_SHA2_512, message.KE_MODP2048},
		ESPSuite{message.ENCR_CHACHA20_POLY1305, 0, message.AUTH_NONE, false}},
	{"AES-CBC-128/SHA1/CMAC/ECP-256, ESP AES-CBC-128/SHA1",
		IKESuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA1_96, message.PRF_AES128_CMAC, message.KE_ECP256},
		ESPSuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA1_96, false}},
}

// TestInMemory runs initiator against responder for several suites and
// checks that each side's outbound CHILD SA is the other's inbound one,
// that xfrm accepts them, and that the traffic selectors agree.
func TestInMemory(t *testing.T) {
	for _, s := range suites {
		t.Run(s.name, func(t *testing.T) {
			ci, cr := configs(s.ike, s.esp)
			i, r, err := run(t, ci, cr)
			if err != nil {
				t.Fatal(err)
			}
			ri, rr := i.Result(), r.Result()
			if ri.SPIi != rr.SPIi || ri.SPIr != rr.SPIr || ri.NATT || rr.NATT {
				t.Errorf("IKE SA: %x/%x vs %x/%x, NAT-T %v/%v", ri.SPIi, ri.SPIr, rr.SPIi, rr.SPIr, ri.NATT, rr.NATT)
			}
			if !bytes.Equal(ri.Keys.D, rr.Keys.D) {
				t.Error("SK_d differs")
			}
			for _, pair := range [][2]xfrm.SAConfig{{ri.Out, rr.In}, {rr.Out, ri.In}} {
				a, b := pair[0], pair[1]
				if a.SPI != b.SPI || a.Src != b.Src || a.Dst != b.Dst || !bytes.Equal(a.AEAD.Key, b.AEAD.Key) ||
					!bytes.Equal(a.Enc.Key, b.Enc.Key) || !bytes.Equal(a.Auth.Key, b.Auth.Key) || a.AEAD.Name != b.AEAD.Name {
					t.Errorf("outbound %+v does not match the peer's inbound %+v", a, b)
				}
				if _, err := xfrm.NewSA(a); err != nil {
					t.Errorf("xfrm refuses the CHILD SA: %v", err)
				}
			}
			if ri.Out.Src != addrI.Addr() || ri.Out.Dst != addrR.Addr() || ri.In.SPI == ri.Out.SPI {
				t.Errorf("initiator SAs %v->%v", ri.Out.Src, ri.Out.Dst)
			}
			if len(ri.LocalTS) != 2 || !reflect.DeepEqual(ri.LocalTS, rr.RemoteTS) || !reflect.DeepEqual(ri.RemoteTS, rr.LocalTS) {
				t.Errorf("traffic selectors %v %v / %v %v", ri.LocalTS, ri.RemoteTS, rr.LocalTS, rr.RemoteTS)
			}
		})
	}
}

// TestNATDetected: when the responder is seen at another address than it
// has (a NAT in between), both sides switch to NAT-T and encapsulate.
func TestNATDetected(t *testing.T) {
	ci, cr := configs(suites[0].ike, suites[0].esp)
	cr.Local = netip.MustParseAddrPort("10.0.0.2:500") // behind a NAT
	i, r, err := run(t, ci, cr)
	if err != nil {
		t.Fatal(err)
	}
	if !i.UseNATT() || !r.UseNATT() {
		t.Fatalf("NAT not detected: %v %v", i.UseNATT(), r.UseNATT())
	}
	out := i.Result().Out
	if out.Encap.Type != xfrm.EncapESPInUDP || out.Encap.SPort != NATTPort || out.Encap.DPort != NATTPort {
		t.Errorf("outbound encap %+v", out.Encap)
	}
}

// TestTransportMode: USE_TRANSPORT_MODE is offered and accepted (§1.3.1).
func TestTransportMode(t *testing.T) {
	ci, cr := configs(suites[0].ike, suites[0].esp)
	ci.Mode, cr.Mode = xfrm.ModeTransport, xfrm.ModeTransport
	i, _, err := run(t, ci, cr)
	if err != nil {
		t.Fatal(err)
	}
	if i.Result().Out.Mode != xfrm.ModeTransport {
		t.Error("not transport mode")
	}
	cr.Mode = xfrm.ModeTunnel
	if _, _, err := run(t, ci, cr); err == nil {
		t.Error("mode mismatch accepted")
	}
}

// TestFailures: each misconfiguration ends the exchange with the notify
// RFC 7296 prescribes, reported to the initiator.
func TestFailures(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(ci, cr *Config)
		notify message.NotifyType
	}{
		{"wrong PSK", func(ci, cr *Config) { cr.PSK = []byte("another key") }, message.AUTHENTICATION_FAILED},
		{"unknown initiator identity", func(ci, cr *Config) { cr.RemoteID = FQDN("someone.else") }, message.AUTHENTICATION_FAILED},
		{"no common IKE proposal", func(ci, cr *Config) { cr.IKE.PRF = message.PRF_HMAC_SHA2_512 }, message.NO_PROPOSAL_CHOSEN},
		{"KE group not offered", func(ci, cr *Config) { cr.IKE.KE = message.KE_ECP256 }, message.NO_PROPOSAL_CHOSEN},
		{"no common ESP proposal", func(ci, cr *Config) { cr.ESP.KeyBits = 256 }, message.NO_PROPOSAL_CHOSEN},
		{"disjoint traffic selectors", func(ci, cr *Config) { cr.LocalTS = []message.TrafficSelector{prefixTS("10.9.0.0/16")} }, message.TS_UNACCEPTABLE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ci, cr := configs(suites[0].ike, suites[0].esp)
			tt.mutate(&ci, &cr)
			_, _, err := run(t, ci, cr)
			var pe *PeerError
			if !errors.As(err, &pe) || pe.Notify != tt.notify {
				t.Errorf("err = %v, want peer error %v", err, tt.notify)
			}
		})
	}
	// The initiator also checks the responder: a responder that knows the
	// PSK but claims another identity is refused.
	ci, cr := configs(suites[0].ike, suites[0].esp)
	ci.RemoteID = FQDN("expected.responder")
	cr.LocalID = FQDN("expected.responder")
	if _, _, err := run(t, ci, cr); err != nil {
		t.Fatalf("control run: %v", err)
	}
	cr.LocalID = FQDN("impostor")
	if _, _, err := run(t, ci, cr); err == nil {
		t.Error("responder with another identity accepted")
	}
}

// TestTamperedAndRepeated: a corrupted IKE_AUTH response is dropped
// (ErrUnexpected) and the genuine one still completes the exchange; a
// repeated request gets the same response (§2.1).
func TestTamperedAndRepeated(t *testing.T) {
	ci, cr := configs(suites[0].ike, suites[0].esp)
	i, _ := NewInitiator(ci)
	r, _ := NewResponder(cr)
	req1, _ := i.Start()
	resp1s, _, err := r.Handle(req1)
	if err != nil {
		t.Fatal(err)
	}
	resp1 := resp1s[0]
	again, _, err := r.Handle(req1)
	if err != nil || !bytes.Equal(again[0], resp1) {
		t.Fatalf("retransmitted IKE_SA_INIT: %v", err)
	}
	req2s, _, err := i.Handle(resp1)
	if err != nil {
		t.Fatal(err)
	}
	req2 := req2s[0]
	resp2s, done, err := r.Handle(req2)
	if err != nil || !done {
		t.Fatal(err)
	}
	resp2 := resp2s[0]
	bad := append([]byte(nil), resp2...)
	bad[len(bad)-1] ^= 1
	if _, _, err := i.Handle(bad); !errors.Is(err, ErrUnexpected) {
		t.Fatalf("tampered response: %v", err)
	}
	if _, _, err := i.Handle(resp1); !errors.Is(err, ErrUnexpected) {
		t.Fatalf("stale IKE_SA_INIT response: %v", err)
	}
	if _, done, err := i.Handle(resp2); err != nil || !done {
		t.Fatalf("genuine response after a tampered one: %v", err)
	}
	if _, _, err := r.Handle(append(req2[:28:28], 0)); !errors.Is(err, ErrUnexpected) {
		t.Errorf("garbage request: %v", err)
	}
}

// TestInvalidKEPayload: a proposal that offers the responder's group
// with a KE payload of another one is answered with INVALID_KE_PAYLOAD
// naming the wanted group (§1.3), and the responder then accepts the
// retry.
func TestInvalidKEPayload(t *testing.T) {
	ci, cr := configs(suites[0].ike, suites[0].esp)
	cr.IKE.KE = message.KE_ECP256
	i, _ := NewInitiator(ci)
	r, _ := NewResponder(cr)
	raw, _ := i.Start()
	m, err := message.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	sa := m.Payloads[0].(*message.SA)
	sa.Proposals[0].Transforms = append(sa.Proposals[0].Transforms, message.Transform{Type: message.TransformKE, ID: message.KE_ECP256})
	req, _ := m.Encode()
	resps, _, err := r.Handle(req)
	if !errors.Is(err, ErrUnexpected) || len(resps) != 1 {
		t.Fatalf("err %v", err)
	}
	resp := resps[0]
	rm, err := message.Decode(resp)
	if err != nil {
		t.Fatal(err)
	}
	n := rm.Payloads[0].(*message.Notify)
	if n.NotifyType != message.INVALID_KE_PAYLOAD || !bytes.Equal(n.Data, []byte{0, 19}) {
		t.Errorf("answer %v %x", n.NotifyType, n.Data)
	}
	// The initiator reports it (it did not offer ECP-256: nothing to retry).
	if _, _, err := i.Handle(resp); err == nil {
		t.Error("initiator ignored INVALID_KE_PAYLOAD")
	}
}

// TestCookie: a responder under load answers IKE_SA_INIT with only a
// COOKIE; the initiator repeats its request with the cookie as the first
// payload (RFC 7296 §2.6) and the same SPI, nonce and KE.
func TestCookie(t *testing.T) {
	ci, _ := configs(suites[0].ike, suites[0].esp)
	i, _ := NewInitiator(ci)
	req1, _ := i.Start()
	m1, _ := message.Decode(req1)
	cookie := []byte("a stateless cookie")
	resp := &message.Message{
		Header:   message.Header{SPIi: m1.SPIi, Exchange: message.IKE_SA_INIT, Flags: message.FlagResponse},
		Payloads: []message.Payload{&message.Notify{NotifyType: message.COOKIE, Data: cookie}},
	}
	rb, _ := resp.Encode()
	req2, done, err := i.Handle(rb)
	if err != nil || done {
		t.Fatalf("cookie response: %v", err)
	}
	m2, err := message.Decode(req2[0])
	if err != nil {
		t.Fatal(err)
	}
	n, ok := m2.Payloads[0].(*message.Notify)
	if !ok || n.NotifyType != message.COOKIE || !bytes.Equal(n.Data, cookie) {
		t.Fatalf("first payload %v", m2.Payloads[0])
	}
	if m2.SPIi != m1.SPIi || !reflect.DeepEqual(m2.Payloads[1:], m1.Payloads) {
		t.Error("retry changed more than the cookie")
	}
}

// TestShortNonce: with PRF_HMAC_SHA2_512 a nonce must have at least 32
// bytes (RFC 7296 §2.10); a 16-byte one, legal for the codec, is refused.
func TestShortNonce(t *testing.T) {
	ci, cr := configs(suites[2].ike, suites[2].esp) // PRF_HMAC_SHA2_512
	i, _ := NewInitiator(ci)
	r, _ := NewResponder(cr)
	raw, _ := i.Start()
	m, _ := message.Decode(raw)
	for _, p := range m.Payloads {
		if n, ok := p.(*message.Nonce); ok {
			n.Data = n.Data[:16]
		}
	}
	req, _ := m.Encode()
	if _, _, err := r.Handle(req); err == nil {
		t.Error("16-byte nonce accepted with a 64-byte PRF key")
	}
}

// TestConfigChecks: identities that cannot be encoded are refused before
// any exchange.
func TestConfigChecks(t *testing.T) {
	ci, _ := configs(suites[0].ike, suites[0].esp)
	ci.LocalID = Identity{Type: message.ID_IPV4_ADDR, Data: []byte{1, 2, 3}}
	if _, err := NewInitiator(ci); err == nil {
		t.Error("3-byte ID_IPV4_ADDR accepted")
	}
	ci, _ = configs(suites[0].ike, suites[0].esp)
	ci.IKE.Integ = message.AUTH_NONE // AES-CBC without integrity
	if _, err := NewInitiator(ci); err == nil {
		t.Error("AES-CBC without integrity accepted")
	}
}
