package ikecrypto

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// swanVector is one run of two strongSwan 5.9.8 charons (see
// ike/testdata/strongswan/extract.py): what charon A, the initiator,
// sent, received, and printed at log level 4. It is the independent
// oracle for key derivation, SK protection and the PSK AUTH value.
type swanVector struct {
	Name        string   `json:"name"`
	IKEProposal string   `json:"ike_proposal"`
	InitReq     string   `json:"ike_sa_init_request"`
	InitResp    string   `json:"ike_sa_init_response"`
	AuthReq     string   `json:"ike_auth_request"`
	AuthResp    string   `json:"ike_auth_response"`
	Shared      string   `json:"shared_secret"`
	SKEYSEED    string   `json:"skeyseed"`
	SKd         string   `json:"sk_d"`
	SKai        string   `json:"sk_ai"`
	SKar        string   `json:"sk_ar"`
	SKei        string   `json:"sk_ei"`
	SKer        string   `json:"sk_er"`
	SKpi        string   `json:"sk_pi"`
	SKpr        string   `json:"sk_pr"`
	PSK         string   `json:"psk"`
	AuthI       string   `json:"auth_i"`
	AuthR       string   `json:"auth_r"`
	ChildNonces string   `json:"child_nonces"`
	ChildEncrI  string   `json:"child_encr_i"`
	ChildEncrR  string   `json:"child_encr_r"`
	ChildIntegI string   `json:"child_integ_i"`
	ChildIntegR string   `json:"child_integ_r"`
	PFSSecret   string   `json:"pfs_dh_secret"`
	PFSSeed     string   `json:"pfs_seed"`
	PFSEncrI    string   `json:"pfs_encr_i"`
	PFSEncrR    string   `json:"pfs_encr_r"`
	NATDChunk   []string `json:"natd_chunk"`
	NATDHash    []string `json:"natd_hash"`
}

func loadSwan(t *testing.T) []swanVector {
	t.Helper()
	files, _ := filepath.Glob("../testdata/strongswan/*.json")
	if len(files) == 0 {
		t.Fatal("no strongSwan vectors in ../testdata/strongswan")
	}
	var vs []swanVector
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v swanVector
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vs = append(vs, v)
	}
	return vs
}

func h(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decode(t *testing.T, b []byte) *message.Message {
	t.Helper()
	m, err := message.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func find[T message.Payload](ps []message.Payload) T {
	for _, p := range ps {
		if q, ok := p.(T); ok {
			return q
		}
	}
	var zero T
	return zero
}

// suiteOf returns the transforms of the single proposal of an SA payload.
func suiteOf(t *testing.T, sa *message.SA) (prf *PRF, encr *Encr, integ *Integ) {
	t.Helper()
	if len(sa.Proposals) != 1 {
		t.Fatalf("%d proposals in a response", len(sa.Proposals))
	}
	var err error
	for _, tr := range sa.Proposals[0].Transforms {
		switch tr.Type {
		case message.TransformPRF:
			prf, err = LookupPRF(tr.ID)
		case message.TransformENCR:
			kl, _ := tr.KeyLength()
			encr, err = LookupEncr(tr.ID, kl)
		case message.TransformINTEG:
			if tr.ID != message.AUTH_NONE {
				integ, err = LookupInteg(tr.ID)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return prf, encr, integ
}

func keyLens(encr *Encr, integ *Integ) (int, int) {
	if integ == nil {
		return encr.KeyLen(), 0
	}
	return encr.KeyLen(), integ.KeyLen
}

// TestStrongSwanKeys reproduces, from charon's own nonces, SPIs and DH
// shared secret, the SKEYSEED and SK_* it printed; then opens its
// IKE_AUTH messages with those keys, recomputes both PSK AUTH values from
// the decrypted IDs and checks them against charon's log and AUTH
// payloads, and derives the CHILD SA keys charon installed.
func TestStrongSwanKeys(t *testing.T) {
	for _, v := range loadSwan(t) {
		t.Run(v.Name+"/"+v.IKEProposal, func(t *testing.T) {
			initReq, initResp := h(t, v.InitReq), h(t, v.InitResp)
			req, resp := decode(t, initReq), decode(t, initResp)
			ni := find[*message.Nonce](req.Payloads).Data
			nr := find[*message.Nonce](resp.Payloads).Data
			prf, encr, integ := suiteOf(t, find[*message.SA](resp.Payloads))
			encLen, integLen := keyLens(encr, integ)

			skeyseed, err := SKEYSEED(prf, ni, nr, h(t, v.Shared))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(skeyseed, h(t, v.SKEYSEED)) {
				t.Fatalf("SKEYSEED differs from charon's")
			}
			k, err := DeriveIKEKeys(prf, skeyseed, ni, nr, resp.SPIi, resp.SPIr, encLen, integLen)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name      string
				got, want []byte
			}{
				{"SK_d", k.D, h(t, v.SKd)}, {"SK_ai", k.Ai, h(t, v.SKai)}, {"SK_ar", k.Ar, h(t, v.SKar)},
				{"SK_ei", k.Ei, h(t, v.SKei)}, {"SK_er", k.Er, h(t, v.SKer)},
				{"SK_pi", k.Pi, h(t, v.SKpi)}, {"SK_pr", k.Pr, h(t, v.SKpr)},
			} {
				if !bytes.Equal(c.got, c.want) {
					t.Errorf("%s differs from charon's (%d vs %d bytes)", c.name, len(c.got), len(c.want))
				}
			}

			psk := h(t, v.PSK)
			for _, dir := range []struct {
				name          string
				msg           string
				encKey, integ []byte
				realMessage   []byte
				nonce, skp    []byte
				wantAuth      string
			}{
				{"initiator", v.AuthReq, k.Ei, k.Ai, initReq, nr, k.Pi, v.AuthI},
				{"responder", v.AuthResp, k.Er, k.Ar, initResp, ni, k.Pr, v.AuthR},
			} {
				p, err := NewProtector(encr, integ, dir.encKey, dir.integ)
				if err != nil {
					t.Fatal(err)
				}
				raw := h(t, dir.msg)
				m := decode(t, raw)
				sk := m.Payloads[len(m.Payloads)-1].(*message.SK)
				pt, err := p.Open(raw, len(raw)-len(sk.Data))
				if err != nil {
					t.Fatalf("%s IKE_AUTH: %v", dir.name, err)
				}
				inner, err := message.DecodePayloads(sk.Next, pt, 0)
				if err != nil {
					t.Fatalf("%s IKE_AUTH plaintext: %v", dir.name, err)
				}
				if os.Getenv("IKE_WRITE_CORPUS") != "" {
					writeCorpus(t, "strongswan-"+v.Name+"-ike-auth-"+dir.name, pt, sk.Next)
				}
				id := find[*message.ID](inner)
				auth := find[*message.Auth](inner)
				if id == nil || auth == nil || auth.Method != message.AuthSharedKeyMIC {
					t.Fatalf("%s IKE_AUTH lacks ID or PSK AUTH: %v", dir.name, inner)
				}
				got := PSKAuth(prf, psk, SignedOctets(prf, dir.realMessage, dir.nonce, dir.skp, id.Body()))
				if !bytes.Equal(got, h(t, dir.wantAuth)) || !bytes.Equal(got, auth.Data) {
					t.Errorf("%s AUTH differs from charon's", dir.name)
				}
				// Tampering with any byte fails the integrity check.
				bad := append([]byte(nil), raw...)
				bad[len(bad)/2] ^= 1
				if _, err := p.Open(bad, len(raw)-len(sk.Data)); err != ErrAuthentication {
					t.Errorf("%s: tampered message: %v", dir.name, err)
				}
				if dir.name == "responder" {
					checkChildKeys(t, v, prf, k.D, ni, nr, inner)
				}
			}
		})
	}
}

// checkChildKeys derives KEYMAT for the CHILD SA that charon's IKE_AUTH
// response accepted and compares it with the keys charon installed.
func checkChildKeys(t *testing.T, v swanVector, prf *PRF, skd, ni, nr []byte, inner []message.Payload) {
	t.Helper()
	if !bytes.Equal(h(t, v.ChildNonces), append(append([]byte(nil), ni...), nr...)) {
		t.Fatal("charon's KEYMAT seed is not Ni | Nr")
	}
	_, encr, integ := suiteOf(t, find[*message.SA](inner))
	encLen, integLen := keyLens(encr, integ)
	ck, err := DeriveChildKeys(prf, skd, nil, ni, nr, encLen, integLen)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"initiator encryption", ck.EncI, h(t, v.ChildEncrI)}, {"responder encryption", ck.EncR, h(t, v.ChildEncrR)},
		{"initiator integrity", ck.IntegI, h(t, v.ChildIntegI)}, {"responder integrity", ck.IntegR, h(t, v.ChildIntegR)},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("CHILD SA %s key differs from charon's", c.name)
		}
	}
}

// TestStrongSwanNATD recomputes the NAT detection hashes charon printed
// from the SPIs, address and port it printed with them.
func TestStrongSwanNATD(t *testing.T) {
	for _, v := range loadSwan(t) {
		for i, c := range v.NATDChunk {
			b := h(t, c)
			var addr netip.Addr
			switch len(b) {
			case 8 + 8 + 4 + 2:
				addr = netip.AddrFrom4([4]byte(b[16:20]))
			case 8 + 8 + 16 + 2:
				addr = netip.AddrFrom16([16]byte(b[16:32]))
			default:
				t.Fatalf("%s: NAT-D chunk of %d bytes", v.Name, len(b))
			}
			got := NATDetectionHash(binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), addr, binary.BigEndian.Uint16(b[len(b)-2:]))
			if !bytes.Equal(got[:], h(t, v.NATDHash[i])) {
				t.Errorf("%s: NAT-D hash %d differs from charon's", v.Name, i)
			}
		}
	}
}

// writeCorpus stores a decrypted IKE_AUTH plaintext as a seed of
// ike/message's FuzzDecodePayloads.
func writeCorpus(t *testing.T, name string, pt []byte, first message.PayloadType) {
	t.Helper()
	var q strings.Builder
	for _, c := range pt {
		fmt.Fprintf(&q, "\\x%02x", c)
	}
	body := fmt.Sprintf("go test fuzz v1\n[]byte(\"%s\")\nuint8(%d)\n", q.String(), first)
	dir := "../message/testdata/fuzz/FuzzDecodePayloads"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStrongSwanPFSKeymat: charon rekeyed its CHILD SA with
// CREATE_CHILD_SA and ECP-256 PFS (pfs.json). KEYMAT = prf+(SK_d, g^ir
// (new) | Ni | Nr) (RFC 7296 §2.17) must give the keys it installed; the
// nonces are the rekey exchange's, taken from charon's printed seed.
func TestStrongSwanPFSKeymat(t *testing.T) {
	n := 0
	for _, v := range loadSwan(t) {
		if v.PFSSeed == "" {
			continue
		}
		n++
		resp := decode(t, h(t, v.InitResp))
		prf, _, _ := suiteOf(t, find[*message.SA](resp.Payloads))
		seed, gir := h(t, v.PFSSeed), h(t, v.PFSSecret)
		if !bytes.HasPrefix(seed, gir) || (len(seed)-len(gir))%2 != 0 {
			t.Fatalf("%s: charon's seed is not g^ir | Ni | Nr", v.Name)
		}
		nonces := seed[len(gir):]
		ni, nr := nonces[:len(nonces)/2], nonces[len(nonces)/2:]
		encI := h(t, v.PFSEncrI)
		k, err := DeriveChildKeys(prf, h(t, v.SKd), gir, ni, nr, len(encI), 0)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(k.EncI, encI) || !bytes.Equal(k.EncR, h(t, v.PFSEncrR)) {
			t.Errorf("%s: PFS CHILD SA keys differ from charon's", v.Name)
		}
	}
	if n == 0 {
		t.Fatal("no PFS vector")
	}
}
