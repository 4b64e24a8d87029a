package exchange

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
)

// strongSwanDefaultRun loads the capture of two default charons
// (ike/testdata/strongswan/default.json, see its extract.py) and returns
// the proposals of charon's IKE_SA_INIT request and, decrypted with the
// logged SK_ei/SK_ai (AES-CBC-128 with HMAC-SHA2-256-128 was chosen), of
// its IKE_AUTH request.
func strongSwanDefaultRun(t *testing.T) (ike, esp []message.Proposal) {
	t.Helper()
	b, err := os.ReadFile("../testdata/strongswan/default.json")
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	h := func(k string) []byte {
		x, err := hex.DecodeString(d[k].(string))
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	m, err := message.Decode(h("ike_sa_init_request"))
	if err != nil {
		t.Fatal(err)
	}
	ike = find[*message.SA](m.Payloads).Proposals
	raw := h("ike_auth_request")
	m, err = message.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	encr, _ := ikecrypto.LookupEncr(message.ENCR_AES_CBC, 128)
	integ, _ := ikecrypto.LookupInteg(message.AUTH_HMAC_SHA2_256_128)
	p, err := ikecrypto.NewProtector(encr, integ, h("sk_ei"), h("sk_ai"))
	if err != nil {
		t.Fatal(err)
	}
	ps, err := openMessage(p, raw, m)
	if err != nil {
		t.Fatal(err)
	}
	esp = find[*message.SA](ps).Proposals
	for k := range esp {
		esp[k].SPI = nil
	}
	return ike, esp
}

// TestStrongSwanDefaultProposals: StrongSwanIKEProposals and
// StrongSwanESPProposals are exactly what a default charon 5.9.8 sent on
// the wire, and the Default* subsets are what we implement of them.
func TestStrongSwanDefaultProposals(t *testing.T) {
	ike, esp := strongSwanDefaultRun(t)
	if got := StrongSwanIKEProposals(); !reflect.DeepEqual(got, ike) {
		t.Errorf("IKE proposals differ from charon's:\n got %+v\nwant %+v", got, ike)
	}
	if got := StrongSwanESPProposals(); !reflect.DeepEqual(got, esp) {
		t.Errorf("ESP proposals differ from charon's:\n got %+v\nwant %+v", got, esp)
	}
	def := DefaultIKEProposals()
	if err := checkProposals(def, message.ProtoIKE); err != nil {
		t.Fatal(err)
	}
	if err := checkProposals(DefaultESPProposals(), message.ProtoESP); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(DefaultESPProposals(), esp) {
		t.Error("the data plane lacks part of charon's default ESP proposals")
	}
	if len(def) != 2 || !reflect.DeepEqual(keGroups(def), []uint16{message.KE_CURVE25519, message.KE_ECP256, message.KE_ECP384, message.KE_MODP2048}) {
		t.Errorf("default IKE proposals %+v", def)
	}
	// What a default charon as responder (its own order first) picks from
	// our default offer, with our KE payload of X25519.
	_, ts, ok := selectProposal(ike, def, message.ProtoIKE, 0, false, message.KE_CURVE25519)
	s, err := ikeSuiteOf(ts)
	want := IKESuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA2_256_128, message.PRF_HMAC_SHA2_256, message.KE_CURVE25519}
	if !ok || err != nil || s != want {
		t.Errorf("charon would choose %+v (%v), want %+v", s, err, want)
	}
}

// TestProposalSelection follows strongSwan's responder: its own
// proposals in its order, each against the initiator's in theirs, and
// within a type its own first transform the peer also offers; the group
// of the peer's KE payload when the proposal has it.
func TestProposalSelection(t *testing.T) {
	cbc := IKESuite{message.ENCR_AES_CBC, 256, message.AUTH_HMAC_SHA2_256_128, message.PRF_HMAC_SHA2_256, message.KE_ECP256}.Proposal()
	gcm := IKESuite{message.ENCR_AES_GCM_16, 128, message.AUTH_NONE, message.PRF_HMAC_SHA2_384, message.KE_CURVE25519}.Proposal()
	multi := message.Proposal{Protocol: message.ProtoIKE, Transforms: []message.Transform{
		encrTransform(message.ENCR_AES_CBC, 128), encrTransform(message.ENCR_AES_CBC, 256),
		{Type: message.TransformINTEG, ID: message.AUTH_HMAC_SHA2_512_256}, {Type: message.TransformINTEG, ID: message.AUTH_HMAC_SHA2_256_128},
		{Type: message.TransformPRF, ID: message.PRF_HMAC_SHA2_256},
		{Type: message.TransformKE, ID: message.KE_MODP2048}, {Type: message.TransformKE, ID: message.KE_ECP256},
	}}
	for _, tt := range []struct {
		name   string
		ours   []message.Proposal
		theirs []message.Proposal
		ke     uint16
		want   *IKESuite
		num    uint8
	}{
		{"our order wins over theirs", []message.Proposal{gcm, cbc}, withSPI([]message.Proposal{cbc, gcm}, nil), message.KE_ECP256,
			&IKESuite{message.ENCR_AES_GCM_16, 128, 0, message.PRF_HMAC_SHA2_384, message.KE_CURVE25519}, 2},
		{"our transform order within a type", []message.Proposal{multi}, withSPI([]message.Proposal{cbc}, nil), message.KE_ECP256,
			&IKESuite{message.ENCR_AES_CBC, 256, message.AUTH_HMAC_SHA2_256_128, message.PRF_HMAC_SHA2_256, message.KE_ECP256}, 1},
		{"the KE payload's group when both offer it", []message.Proposal{multi}, withSPI([]message.Proposal{multi}, nil), message.KE_ECP256,
			&IKESuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA2_512_256, message.PRF_HMAC_SHA2_256, message.KE_ECP256}, 1},
		{"our first group otherwise", []message.Proposal{multi}, withSPI([]message.Proposal{multi}, nil), message.KE_CURVE25519,
			&IKESuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA2_512_256, message.PRF_HMAC_SHA2_256, message.KE_MODP2048}, 1},
		{"AEAD against CBC", []message.Proposal{gcm}, withSPI([]message.Proposal{cbc}, nil), 0, nil, 0},
		{"an SPI in IKE_SA_INIT", []message.Proposal{cbc}, withSPI([]message.Proposal{cbc}, []byte{1, 2, 3, 4, 5, 6, 7, 8}), 0, nil, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, ts, ok := selectProposal(tt.ours, tt.theirs, message.ProtoIKE, 0, false, tt.ke)
			if tt.want == nil {
				if ok {
					t.Fatalf("chose %+v", ts)
				}
				return
			}
			if !ok {
				t.Fatal("no proposal chosen")
			}
			s, err := ikeSuiteOf(ts)
			if err != nil || s != *tt.want || p.Num != tt.num {
				t.Errorf("chose %d: %+v (%v), want %d: %+v", p.Num, s, err, tt.num, *tt.want)
			}
		})
	}
}

// TestMultiProposalExchange runs our default proposals against a
// responder that accepts only some of them, including a retry after
// INVALID_KE_PAYLOAD with the group the responder asked for.
func TestMultiProposalExchange(t *testing.T) {
	gcm256 := IKESuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, message.PRF_HMAC_SHA2_384, message.KE_ECP384}
	for _, tt := range []struct {
		name    string
		rIKE    []message.Proposal
		rESP    []message.Proposal
		wantIKE IKESuite
		wantESP ESPSuite
		retries int // IKE_SA_INIT requests beyond the first
	}{
		{"both default", DefaultIKEProposals(), DefaultESPProposals(),
			IKESuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA2_256_128, message.PRF_HMAC_SHA2_256, message.KE_CURVE25519},
			ESPSuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA2_256_128, false}, 0},
		{"responder wants ECP-384 with AES-GCM-256", []message.Proposal{gcm256.Proposal()},
			[]message.Proposal{ESPSuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, false}.Proposal()},
			gcm256, ESPSuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, false}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ci, cr := configs(suites[0].ike, suites[0].esp)
			ci.IKEProposals, ci.ESPProposals = DefaultIKEProposals(), DefaultESPProposals()
			cr.IKEProposals, cr.ESPProposals = tt.rIKE, tt.rESP
			i, err := NewInitiator(ci)
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewResponder(cr)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := drive(t, i, r); err != nil {
				t.Fatal(err)
			}
			ri, rr := i.Result(), r.Result()
			if ri.IKE != tt.wantIKE || rr.IKE != tt.wantIKE || ri.ESP != tt.wantESP || rr.ESP != tt.wantESP {
				t.Errorf("negotiated %+v %+v / %+v %+v, want %+v %+v", ri.IKE, ri.ESP, rr.IKE, rr.ESP, tt.wantIKE, tt.wantESP)
			}
			if got := len(i.keTried) - 1; got != tt.retries {
				t.Errorf("%d INVALID_KE_PAYLOAD retries, want %d", got, tt.retries)
			}
		})
	}
}

// TestInvalidKERetryLimits: the initiator retries only with a group it
// offered and has not tried; otherwise INVALID_KE_PAYLOAD ends it.
func TestInvalidKERetryLimits(t *testing.T) {
	ci, _ := configs(suites[0].ike, suites[0].esp)
	ci.IKEProposals = DefaultIKEProposals()
	for _, tt := range []struct {
		name  string
		group []uint16
		ok    []bool
	}{
		{"offered group", []uint16{message.KE_ECP384}, []bool{true}},
		{"group not offered", []uint16{message.KE_ECP521}, []bool{false}},
		{"back to the first group", []uint16{message.KE_ECP256, message.KE_CURVE25519}, []bool{true, false}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			i, _ := NewInitiator(ci)
			raw, _ := i.Start()
			for k, g := range tt.group {
				m, _ := message.Decode(raw)
				resp := &message.Message{
					Header:   message.Header{SPIi: m.SPIi, Exchange: message.IKE_SA_INIT, Flags: message.FlagResponse},
					Payloads: []message.Payload{&message.Notify{NotifyType: message.INVALID_KE_PAYLOAD, Data: []byte{byte(g >> 8), byte(g)}}},
				}
				rb, _ := resp.Encode()
				next, _, err := i.Handle(rb)
				if (err == nil) != tt.ok[k] {
					t.Fatalf("retry %d with group %d: %v", k, g, err)
				}
				if err != nil {
					var pe *PeerError
					if !errors.As(err, &pe) || pe.Notify != message.INVALID_KE_PAYLOAD {
						t.Errorf("error %v", err)
					}
					return
				}
				m2, _ := message.Decode(next[0])
				if ke := find[*message.KE](m2.Payloads); ke.Group != g || m2.SPIi != m.SPIi ||
					!reflect.DeepEqual(find[*message.Nonce](m2.Payloads), find[*message.Nonce](m.Payloads)) {
					t.Errorf("retry: KE group %d, SPI %x/%x", ke.Group, m2.SPIi, m.SPIi)
				}
				raw = next[0]
			}
		})
	}
}

// TestResponseNotOffered: the initiator refuses a response proposal with
// a transform it did not offer or a missing type.
func TestResponseNotOffered(t *testing.T) {
	offer := withSPI(DefaultIKEProposals(), nil)
	good := IKESuite{message.ENCR_AES_CBC, 256, message.AUTH_HMAC_SHA1_96, message.PRF_HMAC_SHA2_512, message.KE_MODP2048}.Proposal()
	if err := acceptResponse(offer, &good, false); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []IKESuite{
		{message.ENCR_AES_CBC, 256, message.AUTH_NONE, message.PRF_HMAC_SHA2_512, message.KE_MODP2048},            // no integrity
		{message.ENCR_AES_GCM_16, 256, message.AUTH_HMAC_SHA1_96, message.PRF_HMAC_SHA2_512, message.KE_MODP2048}, // GCM is in proposal 2
		{message.ENCR_AES_CBC, 256, message.AUTH_HMAC_SHA1_96, message.PRF_AES128_CMAC, message.KE_MODP2048},      // PRF not offered
	} {
		p := bad.Proposal()
		if err := acceptResponse(offer, &p, false); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

// TestPFSProposalsInIKEAuth: ESP proposals with a PFS group (for
// CREATE_CHILD_SA) go out of IKE_AUTH without it, and a responder with
// or without PFS in its own proposals still agrees.
func TestPFSProposalsInIKEAuth(t *testing.T) {
	pfs := ESPSuite{message.ENCR_AES_GCM_16, 128, message.AUTH_NONE, false}.Proposal()
	pfs.Transforms = append(pfs.Transforms, message.Transform{Type: message.TransformKE, ID: message.KE_ECP256})
	for _, tt := range []struct {
		name   string
		ci, cr []message.Proposal
	}{
		{"initiator with PFS", []message.Proposal{pfs}, nil},
		{"responder with PFS", nil, []message.Proposal{pfs}},
		{"both with PFS", []message.Proposal{pfs}, []message.Proposal{pfs}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ci, cr := configs(suites[0].ike, suites[0].esp)
			ci.ESPProposals, cr.ESPProposals = tt.ci, tt.cr
			i, r, err := run(t, ci, cr)
			if err != nil {
				t.Fatal(err)
			}
			if i.Result().ESP != suites[0].esp || r.Result().ESP != suites[0].esp {
				t.Errorf("ESP %+v / %+v", i.Result().ESP, r.Result().ESP)
			}
			for _, p := range i.espOffer {
				for _, tr := range p.Transforms {
					if tr.Type == message.TransformKE {
						t.Error("KE transform offered in IKE_AUTH")
					}
				}
			}
		})
	}
}
