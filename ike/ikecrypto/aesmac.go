package ikecrypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
)

// The AES-based PRFs take any key length. A 16-byte key is used as is. A
// longer one is first compressed with the same MAC under the all-zero key.
// A shorter one differs: AES-XCBC-PRF-128 pads it with zeros (RFC 4434
// §2), AES-CMAC-PRF-128 compresses it like a longer one (RFC 4615 §3).

func xcbcPRF(key []byte, data ...[]byte) []byte {
	return aesPRF(xcbcMAC, true, key, data)
}

func cmacPRF(key []byte, data ...[]byte) []byte {
	return aesPRF(cmacMAC, false, key, data)
}

func aesPRF(mac func(key []byte, data [][]byte) []byte, padShort bool, key []byte, data [][]byte) []byte {
	var k [16]byte
	switch {
	case len(key) == 16:
		copy(k[:], key)
	case len(key) < 16 && padShort:
		copy(k[:], key) // zero padded
	default:
		copy(k[:], mac(make([]byte, 16), [][]byte{key}))
	}
	out := mac(k[:], data)
	clear(k[:])
	return out
}

func newAES(key []byte) cipher.Block {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic("ikecrypto: AES key of 16 bytes refused: " + err.Error()) // unreachable: the caller passes 16 bytes
	}
	return b
}

// macBlocks runs the CBC-MAC shared by XCBC and CMAC over the
// concatenation of data and returns the state before the last block and
// the last block, padded with 10* when it is short (complete reports
// whether it was not).
func macBlocks(c cipher.Block, data [][]byte) (state, last [16]byte, complete bool) {
	var buf [16]byte
	n := 0
	total := 0
	for _, d := range data {
		total += len(d)
	}
	seen := 0
	for _, d := range data {
		for len(d) > 0 {
			k := copy(buf[n:], d)
			n += k
			d = d[k:]
			seen += k
			if n == 16 && seen < total {
				subtle.XORBytes(state[:], state[:], buf[:])
				c.Encrypt(state[:], state[:])
				n = 0
			}
		}
	}
	if n == 16 {
		return state, buf, true
	}
	buf[n] = 0x80
	clear(buf[n+1:])
	return state, buf, false
}

// xcbcMAC is AES-XCBC-MAC (RFC 3566 §4) with a full 128-bit output, the
// AES-XCBC-PRF-128 of RFC 4434 for a 16-byte key.
func xcbcMAC(key []byte, data [][]byte) []byte {
	c := newAES(key)
	var k1, k2, k3 [16]byte
	for i := range k1 {
		k1[i], k2[i], k3[i] = 1, 2, 3
	}
	c.Encrypt(k1[:], k1[:])
	c.Encrypt(k2[:], k2[:])
	c.Encrypt(k3[:], k3[:])
	c1 := newAES(k1[:])
	state, last, complete := macBlocks(c1, data)
	if complete {
		subtle.XORBytes(last[:], last[:], k2[:])
	} else {
		subtle.XORBytes(last[:], last[:], k3[:])
	}
	subtle.XORBytes(state[:], state[:], last[:])
	c1.Encrypt(state[:], state[:])
	clear(k1[:])
	clear(k2[:])
	clear(k3[:])
	return state[:]
}

// cmacMAC is AES-CMAC (RFC 4493), the AES-CMAC-PRF-128 of RFC 4615 for a
// 16-byte key.
func cmacMAC(key []byte, data [][]byte) []byte {
	c := newAES(key)
	var k1, k2 [16]byte
	c.Encrypt(k1[:], k1[:]) // L = AES(K, 0^128)
	k1 = dbl(k1)
	k2 = dbl(k1)
	state, last, complete := macBlocks(c, data)
	if complete {
		subtle.XORBytes(last[:], last[:], k1[:])
	} else {
		subtle.XORBytes(last[:], last[:], k2[:])
	}
	subtle.XORBytes(state[:], state[:], last[:])
	c.Encrypt(state[:], state[:])
	clear(k1[:])
	clear(k2[:])
	return state[:]
}

// dbl doubles in GF(2^128) with the polynomial x^128+x^7+x^2+x+1 (RFC
// 4493 §2.3), in constant time.
func dbl(b [16]byte) [16]byte {
	var out [16]byte
	msb := b[0] >> 7
	for i := 0; i < 15; i++ {
		out[i] = b[i]<<1 | b[i+1]>>7
	}
	out[15] = b[15]<<1 ^ (0x87 & -msb)
	return out
}
