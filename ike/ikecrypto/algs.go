package ikecrypto

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// Encr describes an encryption transform (IANA transform type 1) as the
// Encrypted payload and CHILD SA KEYMAT need it.
type Encr struct {
	// ID is the transform ID, message.ENCR_*.
	ID uint16
	// KeyBits is the cipher key length in bits (the Key Length attribute).
	KeyBits int
	// AEAD is set for the combined modes (GCM, ChaCha20-Poly1305).
	AEAD bool
	// SaltLen is the number of bytes of keying material after the cipher
	// key that form the nonce salt of an AEAD (RFC 5282 §7.1, RFC 7634
	// §2): 4.
	SaltLen int
	// IVLen is the length of the IV sent in each Encrypted payload.
	IVLen int
	// BlockLen is the cipher block size that the plaintext is padded to;
	// 1 for AEADs, which need no padding.
	BlockLen int
	// ICVLen is the AEAD tag length; 0 for a non-AEAD cipher, whose ICV
	// comes from the integrity transform.
	ICVLen int
}

// KeyLen is the number of bytes of keying material the transform takes:
// the key, and for an AEAD the salt (SK_ei, SK_er and each CHILD SA
// encryption key are this long).
func (e *Encr) KeyLen() int { return e.KeyBits/8 + e.SaltLen }

// LookupEncr returns the encryption transform id with key length keyBits
// (0 for a transform without a Key Length attribute).
func LookupEncr(id uint16, keyBits int) (*Encr, error) {
	aesBits := keyBits == 128 || keyBits == 192 || keyBits == 256
	switch id {
	case message.ENCR_AES_CBC:
		if aesBits {
			return &Encr{ID: id, KeyBits: keyBits, IVLen: 16, BlockLen: 16}, nil
		}
	case message.ENCR_AES_GCM_12, message.ENCR_AES_GCM_16:
		// ENCR_AES_GCM_8 is left out: crypto/cipher's GCM takes tags of 12
		// to 16 bytes only, and no common peer offers 8-byte ICVs first.
		if aesBits {
			icv := map[uint16]int{message.ENCR_AES_GCM_12: 12, message.ENCR_AES_GCM_16: 16}[id]
			return &Encr{ID: id, KeyBits: keyBits, AEAD: true, SaltLen: 4, IVLen: 8, BlockLen: 1, ICVLen: icv}, nil
		}
	case message.ENCR_CHACHA20_POLY1305:
		// RFC 7634 §3: no Key Length attribute; the key is 256 bits.
		if keyBits == 0 || keyBits == 256 {
			return &Encr{ID: id, KeyBits: 256, AEAD: true, SaltLen: 4, IVLen: 8, BlockLen: 1, ICVLen: 16}, nil
		}
	default:
		return nil, fmt.Errorf("ikecrypto: unsupported encryption transform %d", id)
	}
	return nil, fmt.Errorf("ikecrypto: encryption transform %d with key length %d", id, keyBits)
}

// Integ describes an integrity transform (IANA transform type 3).
type Integ struct {
	// ID is the transform ID, message.AUTH_*.
	ID uint16
	// KeyLen is the key length in bytes (SK_ai, SK_ar).
	KeyLen int
	// ICVLen is the length of the truncated MAC (RFC 4868 §2.1, RFC 2404).
	ICVLen int

	mac func(key []byte, data ...[]byte) []byte
}

var integs = map[uint16]*Integ{
	message.AUTH_HMAC_SHA1_96:      {ID: message.AUTH_HMAC_SHA1_96, KeyLen: 20, ICVLen: 12, mac: hmacSum(sha1.New)},
	message.AUTH_AES_XCBC_96:       {ID: message.AUTH_AES_XCBC_96, KeyLen: 16, ICVLen: 12, mac: func(k []byte, d ...[]byte) []byte { return xcbcMAC(k, d) }},
	message.AUTH_HMAC_SHA2_256_128: {ID: message.AUTH_HMAC_SHA2_256_128, KeyLen: 32, ICVLen: 16, mac: hmacSum(sha256.New)},
	message.AUTH_HMAC_SHA2_384_192: {ID: message.AUTH_HMAC_SHA2_384_192, KeyLen: 48, ICVLen: 24, mac: hmacSum(sha512.New384)},
	message.AUTH_HMAC_SHA2_512_256: {ID: message.AUTH_HMAC_SHA2_512_256, KeyLen: 64, ICVLen: 32, mac: hmacSum(sha512.New)},
}

func hmacSum(h func() hash.Hash) func(key []byte, data ...[]byte) []byte {
	return func(key []byte, data ...[]byte) []byte {
		m := hmacOf(h)(key)
		for _, d := range data {
			m.Write(d)
		}
		return m.Sum(nil)
	}
}

// LookupInteg returns the integrity transform id.
func LookupInteg(id uint16) (*Integ, error) {
	if i := integs[id]; i != nil {
		return i, nil
	}
	return nil, fmt.Errorf("ikecrypto: unsupported integrity transform %d", id)
}

// ICV returns the truncated MAC of data under key.
func (i *Integ) ICV(key []byte, data ...[]byte) []byte {
	return i.mac(key, data...)[:i.ICVLen]
}
