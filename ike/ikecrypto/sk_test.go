package ikecrypto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

type skSuite struct {
	name     string
	encr     uint16
	keyBits  int
	integ    uint16
	icv, ivl int
}

var skSuites = []skSuite{
	{"AES-CBC-128 HMAC-SHA1-96", message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA1_96, 12, 16},
	{"AES-CBC-128 AES-XCBC-96", message.ENCR_AES_CBC, 128, message.AUTH_AES_XCBC_96, 12, 16},
	{"AES-CBC-256 HMAC-SHA2-256-128", message.ENCR_AES_CBC, 256, message.AUTH_HMAC_SHA2_256_128, 16, 16},
	{"AES-CBC-192 HMAC-SHA2-384-192", message.ENCR_AES_CBC, 192, message.AUTH_HMAC_SHA2_384_192, 24, 16},
	{"AES-CBC-256 HMAC-SHA2-512-256", message.ENCR_AES_CBC, 256, message.AUTH_HMAC_SHA2_512_256, 32, 16},
	{"AES-GCM-16-128", message.ENCR_AES_GCM_16, 128, 0, 16, 8},
	{"AES-GCM-12-256", message.ENCR_AES_GCM_12, 256, 0, 12, 8},
	{"ChaCha20-Poly1305", message.ENCR_CHACHA20_POLY1305, 0, 0, 16, 8},
}

func newTestProtector(t *testing.T, s skSuite) *Protector {
	t.Helper()
	e, err := LookupEncr(s.encr, s.keyBits)
	if err != nil {
		t.Fatal(err)
	}
	var in *Integ
	var ik []byte
	if s.integ != 0 {
		if in, err = LookupInteg(s.integ); err != nil {
			t.Fatal(err)
		}
		ik = seq(in.KeyLen)
	}
	p, err := NewProtector(e, in, bytes.Repeat([]byte{0x42}, e.KeyLen()), ik)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sealTestMessage builds header | SK header | sealed plaintext the way an
// exchange does: lengths first, then Seal.
func sealTestMessage(t *testing.T, p *Protector, pt []byte) []byte {
	t.Helper()
	n := p.SealedLen(len(pt))
	msg := make([]byte, message.HeaderLen, message.HeaderLen+4+n)
	msg[17] = 0x20
	binary.BigEndian.PutUint32(msg[24:], uint32(message.HeaderLen+4+n))
	msg[16] = byte(message.PayloadSK)
	msg = append(msg, byte(message.PayloadNonce), 0, byte((4+n)>>8), byte(4+n))
	out, err := p.Seal(msg, pt)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != message.HeaderLen+4+n {
		t.Fatalf("sealed %d bytes, SealedLen promised %d", len(out)-message.HeaderLen-4, n)
	}
	return out
}

// TestSealOpen round-trips plaintexts of every length around the block
// size through each suite, and checks that the result decodes as an IKE
// message whose SK body Open accepts.
func TestSealOpen(t *testing.T) {
	for _, s := range skSuites {
		p := newTestProtector(t, s)
		for n := 0; n <= 40; n++ {
			pt := seq(n)
			msg := sealTestMessage(t, p, pt)
			m, err := message.Decode(msg)
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			sk := m.Payloads[0].(*message.SK)
			got, err := p.Open(msg, len(msg)-len(sk.Data))
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("%s, %d bytes: %x, %v", s.name, n, got, err)
			}
			if want := s.ivl + s.icv; len(sk.Data) < want+n+1 {
				t.Errorf("%s: body of %d bytes for %d plaintext bytes", s.name, len(sk.Data), n)
			}
		}
	}
}

// TestAEADIVsDiffer: two seals of the same plaintext under one key never
// reuse an AEAD nonce (RFC 5282 §3.1: the IV MUST NOT repeat).
func TestAEADIVsDiffer(t *testing.T) {
	p := newTestProtector(t, skSuites[5])
	a := sealTestMessage(t, p, []byte("same"))
	b := sealTestMessage(t, p, []byte("same"))
	ivAt := message.HeaderLen + 4
	if bytes.Equal(a[ivAt:ivAt+8], b[ivAt:ivAt+8]) {
		t.Error("AEAD IV repeated")
	}
}

// TestOpenMalformed: each corruption is refused with an error, never a
// panic or a plaintext.
func TestOpenMalformed(t *testing.T) {
	for _, s := range skSuites {
		p := newTestProtector(t, s)
		msg := sealTestMessage(t, p, []byte("inner payloads"))
		bodyAt := message.HeaderLen + 4
		tests := []struct {
			name string
			msg  []byte
			at   int
			auth bool // the integrity check must be what fails
		}{
			{"flipped header byte", flip(msg, 20), bodyAt, true},
			{"flipped IV", flip(msg, bodyAt), bodyAt, true},
			{"flipped ICV", flip(msg, len(msg)-1), bodyAt, true},
			{"truncated", msg[:len(msg)-1], bodyAt, true},
			{"body shorter than IV+ICV", msg[:bodyAt+s.ivl+s.icv], bodyAt, false},
			{"offset inside the header", msg, 10, false},
			{"offset past the end", msg, len(msg) + 1, false},
		}
		for _, tt := range tests {
			pt, err := p.Open(tt.msg, tt.at)
			if err == nil || pt != nil {
				t.Errorf("%s, %s: accepted", s.name, tt.name)
			}
			if tt.auth && !errors.Is(err, ErrAuthentication) {
				t.Errorf("%s, %s: %v, want ErrAuthentication", s.name, tt.name, err)
			}
		}
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x80
	return c
}

// TestPadLengthTooLarge: an authentic SK payload whose Pad Length
// exceeds the plaintext (a peer bug) is an error, not a slice panic.
func TestPadLengthTooLarge(t *testing.T) {
	// Seal always appends a valid Pad Length, so build the body by hand:
	// AES-GCM over the 1-byte plaintext 0xff.
	e, _ := LookupEncr(message.ENCR_AES_GCM_16, 128)
	key := bytes.Repeat([]byte{1}, e.KeyLen())
	p, _ := NewProtector(e, nil, key, nil)
	msg := make([]byte, message.HeaderLen+4)
	iv := make([]byte, 8)
	ct := p.aead.Seal(nil, p.nonce(iv), []byte{0xff}, msg)
	msg = append(append(msg, iv...), ct...)
	if pt, err := p.Open(msg, message.HeaderLen+4); err == nil || pt != nil {
		t.Errorf("Pad Length 255 in a 1-byte plaintext accepted: %v", err)
	}
}

// TestProtectorKeyLengths: keys of the wrong length are refused.
func TestProtectorKeyLengths(t *testing.T) {
	e, _ := LookupEncr(message.ENCR_AES_CBC, 128)
	i, _ := LookupInteg(message.AUTH_HMAC_SHA2_256_128)
	if _, err := NewProtector(e, i, make([]byte, 15), make([]byte, 32)); err == nil {
		t.Error("short encryption key accepted")
	}
	if _, err := NewProtector(e, i, make([]byte, 16), make([]byte, 31)); err == nil {
		t.Error("short integrity key accepted")
	}
	if _, err := NewProtector(e, nil, make([]byte, 16), nil); err == nil {
		t.Error("CBC without integrity accepted")
	}
	g, _ := LookupEncr(message.ENCR_AES_GCM_16, 128)
	if g.KeyLen() != 20 {
		t.Errorf("AES-GCM-128 key material %d bytes, want 20 (RFC 5282 §7.1: key + 4-byte salt)", g.KeyLen())
	}
	if _, err := NewProtector(g, i, make([]byte, 20), make([]byte, 32)); err == nil {
		t.Error("AEAD with integrity accepted")
	}
	for _, bad := range []struct {
		id   uint16
		bits int
	}{{message.ENCR_AES_CBC, 0}, {message.ENCR_AES_GCM_16, 64}, {message.ENCR_CHACHA20_POLY1305, 128}, {message.ENCR_3DES, 0}, {message.ENCR_AES_GCM_8, 128}} {
		if _, err := LookupEncr(bad.id, bad.bits); err == nil {
			t.Errorf("encryption transform %d/%d accepted", bad.id, bad.bits)
		}
	}
}
