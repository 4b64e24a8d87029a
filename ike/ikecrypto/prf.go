package ikecrypto

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// PRF is a negotiated pseudorandom function (IANA transform type 2).
type PRF struct {
	// ID is the transform ID, message.PRF_*.
	ID uint16
	// Name is the IANA name, for errors and logs.
	Name string
	// Size is the output length in bytes.
	Size int
	// KeyLen is the preferred key length: the length of SK_d, SK_pi and
	// SK_pr (RFC 7296 §2.14), the output length for HMAC, 16 for the AES
	// PRFs.
	KeyLen int
	// FixedKey is set for PRFs that take a key of exactly KeyLen bytes
	// (AES-XCBC and AES-CMAC): SKEYSEED then keys them with half of each
	// nonce (RFC 7296 §2.14).
	FixedKey bool

	mac func(key []byte) hash.Hash
	aes func(key []byte, data ...[]byte) []byte
}

var prfs = map[uint16]*PRF{
	message.PRF_HMAC_SHA1:     {ID: message.PRF_HMAC_SHA1, Name: "PRF_HMAC_SHA1", Size: sha1.Size, KeyLen: sha1.Size, mac: hmacOf(sha1.New)},
	message.PRF_HMAC_SHA2_256: {ID: message.PRF_HMAC_SHA2_256, Name: "PRF_HMAC_SHA2_256", Size: sha256.Size, KeyLen: sha256.Size, mac: hmacOf(sha256.New)},
	message.PRF_HMAC_SHA2_384: {ID: message.PRF_HMAC_SHA2_384, Name: "PRF_HMAC_SHA2_384", Size: sha512.Size384, KeyLen: sha512.Size384, mac: hmacOf(sha512.New384)},
	message.PRF_HMAC_SHA2_512: {ID: message.PRF_HMAC_SHA2_512, Name: "PRF_HMAC_SHA2_512", Size: sha512.Size, KeyLen: sha512.Size, mac: hmacOf(sha512.New)},
	message.PRF_AES128_XCBC:   {ID: message.PRF_AES128_XCBC, Name: "PRF_AES128_XCBC", Size: 16, KeyLen: 16, FixedKey: true, aes: xcbcPRF},
	message.PRF_AES128_CMAC:   {ID: message.PRF_AES128_CMAC, Name: "PRF_AES128_CMAC", Size: 16, KeyLen: 16, FixedKey: true, aes: cmacPRF},
}

func hmacOf(h func() hash.Hash) func([]byte) hash.Hash {
	return func(key []byte) hash.Hash { return hmac.New(h, key) }
}

// LookupPRF returns the PRF with transform ID id.
func LookupPRF(id uint16) (*PRF, error) {
	if p := prfs[id]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("ikecrypto: unsupported PRF transform %d", id)
}

// Sum returns prf(key, data[0] | data[1] | ...).
func (p *PRF) Sum(key []byte, data ...[]byte) []byte {
	if p.aes != nil {
		return p.aes(key, data...)
	}
	h := p.mac(key)
	for _, d := range data {
		h.Write(d)
	}
	return h.Sum(nil)
}

// Plus returns the first n bytes of prf+(key, seed) (RFC 7296 §2.13):
// T1 | T2 | ... with Ti = prf(key, Ti-1 | seed | i). The counter is one
// octet, so at most 255*Size bytes exist.
func (p *PRF) Plus(key, seed []byte, n int) ([]byte, error) {
	if n > 255*p.Size {
		return nil, fmt.Errorf("ikecrypto: prf+ of %s cannot produce %d bytes (at most %d)", p.Name, n, 255*p.Size)
	}
	out := make([]byte, 0, n+p.Size)
	var t []byte
	for i := 1; len(out) < n; i++ {
		t = p.Sum(key, t, seed, []byte{byte(i)})
		out = append(out, t...)
	}
	clear(out[n:]) // the unused tail of the last block is key material too
	return out[:n], nil
}
