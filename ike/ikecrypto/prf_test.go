package ikecrypto

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

func x(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// TestPRFVectors checks each PRF transform against published vectors.
func TestPRFVectors(t *testing.T) {
	cmacMsg := x(t, `6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
		30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710`)
	cmacKey := x(t, "2b7e151628aed2a6abf7158809cf4f3c")
	k18 := x(t, "000102030405060708090a0b0c0d0e0fedcb")
	tests := []struct {
		source string
		id     uint16
		key    []byte
		data   []byte
		want   string
	}{
		// RFC 4231 §4.2/§4.3 (the PRF vectors RFC 4868 §2.7.1 points to).
		{"RFC 4231 4.2", message.PRF_HMAC_SHA2_256, bytes.Repeat([]byte{0x0b}, 20), []byte("Hi There"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
		{"RFC 4231 4.3", message.PRF_HMAC_SHA2_256, []byte("Jefe"), []byte("what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
		{"RFC 4231 4.2", message.PRF_HMAC_SHA2_384, bytes.Repeat([]byte{0x0b}, 20), []byte("Hi There"), "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6"},
		{"RFC 4231 4.3", message.PRF_HMAC_SHA2_384, []byte("Jefe"), []byte("what do ya want for nothing?"), "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649"},
		{"RFC 4231 4.2", message.PRF_HMAC_SHA2_512, bytes.Repeat([]byte{0x0b}, 20), []byte("Hi There"), "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"},
		{"RFC 4231 4.3", message.PRF_HMAC_SHA2_512, []byte("Jefe"), []byte("what do ya want for nothing?"), "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"},
		{"RFC 2202 §3 case 1", message.PRF_HMAC_SHA1, bytes.Repeat([]byte{0x0b}, 20), []byte("Hi There"), "b617318655057264e28bc0b6fb378c8ef146be00"},
		// RFC 4434 §2.1: AES-XCBC-PRF-128, keys shorter than 16 bytes are
		// zero padded, longer ones compressed.
		{"RFC 4434 key 16", message.PRF_AES128_XCBC, seq(16), seq(20), "47f51b4564966215b8985c63055ed308"},
		{"RFC 4434 key 10", message.PRF_AES128_XCBC, seq(10), seq(20), "0fa087af7d866e7653434e602fdde835"},
		{"RFC 4434 key 18", message.PRF_AES128_XCBC, k18, seq(20), "8cd3c93ae598a9803006ffb67c40e9e4"},
		// RFC 3566 §4.6: AES-XCBC-MAC with message lengths around the block.
		{"RFC 3566 case 1", message.PRF_AES128_XCBC, seq(16), nil, "75f0251d528ac01c4573dfd584d79f29"},
		{"RFC 3566 case 2", message.PRF_AES128_XCBC, seq(16), seq(3), "5b376580ae2f19afe7219ceef172756f"},
		{"RFC 3566 case 3", message.PRF_AES128_XCBC, seq(16), seq(16), "d2a246fa349b68a79998a4394ff7a263"},
		{"RFC 3566 case 5", message.PRF_AES128_XCBC, seq(16), seq(32), "f54f0ec8d2b9f3d36807734bd5283fd4"},
		{"RFC 3566 case 6", message.PRF_AES128_XCBC, seq(16), seq(34), "becbb3bccdb518a30677d5481fb6b4d8"},
		{"RFC 3566 case 7", message.PRF_AES128_XCBC, seq(16), make([]byte, 1000), "f0dafee895db30253761103b5d84528f"},
		// RFC 4493 §4: AES-CMAC.
		{"RFC 4493 example 1", message.PRF_AES128_CMAC, cmacKey, nil, "bb1d6929e95937287fa37d129b756746"},
		{"RFC 4493 example 2", message.PRF_AES128_CMAC, cmacKey, cmacMsg[:16], "070a16b46b4d4144f79bdd9dd04a287c"},
		{"RFC 4493 example 3", message.PRF_AES128_CMAC, cmacKey, cmacMsg[:40], "dfa66747de9ae63030ca32611497c827"},
		{"RFC 4493 example 4", message.PRF_AES128_CMAC, cmacKey, cmacMsg, "51f0bebf7e3b9d92fc49741779363cfe"},
		// RFC 4615 §4: AES-CMAC-PRF-128 compresses every key that is not
		// 16 bytes, shorter ones too (unlike XCBC).
		{"RFC 4615 key 18", message.PRF_AES128_CMAC, k18, seq(20), "84a348a4a45d235babfffc0d2b4da09a"},
		{"RFC 4615 key 16", message.PRF_AES128_CMAC, seq(16), seq(20), "980ae87b5f4c9c5214f5b6a8455e4c2d"},
		{"RFC 4615 key 10", message.PRF_AES128_CMAC, seq(10), seq(20), "290d9e112edb09ee141fcf64c0b72f3d"},
	}
	for _, tt := range tests {
		p, err := LookupPRF(tt.id)
		if err != nil {
			t.Fatal(err)
		}
		// Split the data to exercise the multi-slice path.
		half := len(tt.data) / 3
		if got := p.Sum(tt.key, tt.data[:half], tt.data[half:]); !bytes.Equal(got, x(t, tt.want)) {
			t.Errorf("%s %s: %x, want %s", tt.source, p.Name, got, tt.want)
		}
	}
}

// TestIntegVectors checks the truncated ICVs of RFC 4868 §2.7.2 (keys of
// the full length, "Hi There") and RFC 2404.
func TestIntegVectors(t *testing.T) {
	tests := []struct {
		source string
		id     uint16
		key    []byte
		want   string
	}{
		{"RFC 4868 2.7.2.1 case 1", message.AUTH_HMAC_SHA2_256_128, bytes.Repeat([]byte{0x0b}, 32), "198a607eb44bfbc69903a0f1cf2bbdc5"},
		{"RFC 4868 2.7.2.2 case 1", message.AUTH_HMAC_SHA2_384_192, bytes.Repeat([]byte{0x0b}, 48), "b6a8d5636f5c6a7224f9977dcf7ee6c7fb6d0c48cbdee973"},
		{"RFC 4868 2.7.2.3 case 1", message.AUTH_HMAC_SHA2_512_256, bytes.Repeat([]byte{0x0b}, 64), "637edc6e01dce7e6742a99451aae82df23da3e92439e590e43e761b33e910fb8"},
		{"RFC 2202 §3 case 1 (96-bit)", message.AUTH_HMAC_SHA1_96, bytes.Repeat([]byte{0x0b}, 20), "b617318655057264e28bc0b6"},
	}
	for _, tt := range tests {
		i, err := LookupInteg(tt.id)
		if err != nil {
			t.Fatal(err)
		}
		if len(tt.key) != i.KeyLen {
			t.Errorf("%s: key length %d, transform says %d", tt.source, len(tt.key), i.KeyLen)
		}
		if got := i.ICV(tt.key, []byte("Hi There")); !bytes.Equal(got, x(t, tt.want)) {
			t.Errorf("%s: %x, want %s", tt.source, got, tt.want)
		}
	}
}

// TestPRFPlus checks prf+ against its definition (RFC 7296 §2.13) written
// out by hand, and its 255-block limit.
func TestPRFPlus(t *testing.T) {
	p, _ := LookupPRF(message.PRF_HMAC_SHA2_256)
	key, seed := []byte("key"), []byte("seed")
	t1 := p.Sum(key, seed, []byte{1})
	t2 := p.Sum(key, t1, seed, []byte{2})
	t3 := p.Sum(key, t2, seed, []byte{3})
	want := append(append(append([]byte(nil), t1...), t2...), t3...)[:80]
	got, err := p.Plus(key, seed, 80)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("prf+ = %x, %v\nwant %x", got, err, want)
	}
	if _, err := p.Plus(key, seed, 255*32); err != nil {
		t.Errorf("255 blocks: %v", err)
	}
	if _, err := p.Plus(key, seed, 255*32+1); err == nil {
		t.Error("256 blocks accepted")
	}
}

// TestFixedKeySKEYSEED: with AES-XCBC or AES-CMAC as PRF, SKEYSEED is
// keyed with the first 8 bytes of each nonce (RFC 7296 §2.14).
func TestFixedKeySKEYSEED(t *testing.T) {
	p, _ := LookupPRF(message.PRF_AES128_XCBC)
	ni, nr, gir := seq(32), bytes.Repeat([]byte{0xaa}, 32), []byte("g^ir")
	got, err := SKEYSEED(p, ni, nr, gir)
	if err != nil {
		t.Fatal(err)
	}
	want := xcbcMAC(append(append([]byte(nil), ni[:8]...), nr[:8]...), [][]byte{gir})
	if !bytes.Equal(got, want) {
		t.Errorf("SKEYSEED %x, want %x", got, want)
	}
}

// TestChildKeysPFS: with PFS, KEYMAT = prf+(SK_d, g^ir (new) | Ni | Nr)
// (RFC 7296 §2.17), and the keys split initiator-first, encryption before
// integrity.
func TestChildKeysPFS(t *testing.T) {
	p, _ := LookupPRF(message.PRF_HMAC_SHA2_256)
	skd, gir, ni, nr := seq(32), []byte("new g^ir"), []byte("Ni.............."), []byte("Nr..............")
	km, _ := p.Plus(skd, bytes.Join([][]byte{gir, ni, nr}, nil), 2*(16+32))
	k, err := DeriveChildKeys(p, skd, gir, ni, nr, 16, 32)
	if err != nil {
		t.Fatal(err)
	}
	got := bytes.Join([][]byte{k.EncI, k.IntegI, k.EncR, k.IntegR}, nil)
	if !bytes.Equal(got, km) || len(k.EncI) != 16 || len(k.IntegR) != 32 {
		t.Errorf("KEYMAT split wrong")
	}
	nopfs, _ := DeriveChildKeys(p, skd, nil, ni, nr, 16, 32)
	if bytes.Equal(nopfs.EncI, k.EncI) {
		t.Error("PFS g^ir did not enter KEYMAT")
	}
}
