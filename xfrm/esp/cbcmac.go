package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"hash"
)

// cbcMAC is the CBC-MAC family with a distinct final-block treatment:
// AES-XCBC-MAC-96 (RFC 3566) and AES-CMAC (RFC 4493, used as AES-CMAC-96
// by RFC 4494). Both chain E_K over the message and XOR the last block
// with one subkey when it is complete and, after 10* padding, with
// another when it is not; they differ only in how the cipher key and the
// subkeys derive from the user key. It implements hash.Hash so that it
// slots into the MAC engine beside crypto/hmac.
type cbcMAC struct {
	block           cipher.Block
	kFull, kPartial [aes.BlockSize]byte
	x               [aes.BlockSize]byte // chaining value
	buf             [aes.BlockSize]byte // pending bytes: the last block is held back
	n               int
	last            [aes.BlockSize]byte // Sum's scratch (a field: no escape)
}

var _ hash.Hash = (*cbcMAC)(nil)

// newXCBC derives RFC 3566 §4 keys: K1 = E(K, 0x01..), K2 = E(K, 0x02..),
// K3 = E(K, 0x03..); the MAC runs under K1, a complete last block takes K2,
// a padded one K3.
func newXCBC(key []byte) (hash.Hash, error) {
	kb, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	var k [3][aes.BlockSize]byte
	for i := range k {
		for j := range k[i] {
			k[i][j] = byte(i + 1)
		}
		kb.Encrypt(k[i][:], k[i][:])
	}
	b, err := aes.NewCipher(k[0][:])
	if err != nil {
		return nil, err
	}
	m := &cbcMAC{block: b, kFull: k[1], kPartial: k[2]}
	clear(k[0][:])
	return m, nil
}

// newCMAC derives RFC 4493 §2.3 subkeys: L = E(K, 0), K1 = dbl(L),
// K2 = dbl(K1), with the MAC under K itself.
func newCMAC(key []byte) (hash.Hash, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	m := &cbcMAC{block: b}
	var l [aes.BlockSize]byte
	b.Encrypt(l[:], l[:])
	dbl(&m.kFull, &l)
	dbl(&m.kPartial, &m.kFull)
	clear(l[:])
	return m, nil
}

// dbl is multiplication by x in GF(2^128) with the CMAC polynomial.
func dbl(dst, src *[aes.BlockSize]byte) {
	carry := src[0] >> 7
	for i := 0; i < aes.BlockSize-1; i++ {
		dst[i] = src[i]<<1 | src[i+1]>>7
	}
	dst[aes.BlockSize-1] = src[aes.BlockSize-1]<<1 ^ (0x87 & -carry)
}

func (m *cbcMAC) Size() int      { return aes.BlockSize }
func (m *cbcMAC) BlockSize() int { return aes.BlockSize }

func (m *cbcMAC) Reset() {
	clear(m.x[:])
	m.n = 0
}

func (m *cbcMAC) Write(p []byte) (int, error) {
	total := len(p)
	if m.n > 0 || len(p) <= aes.BlockSize {
		c := copy(m.buf[m.n:], p)
		m.n += c
		p = p[c:]
		if len(p) == 0 {
			return total, nil
		}
		// buf is full and more follows: it is not the last block.
		subtle.XORBytes(m.x[:], m.x[:], m.buf[:])
		m.block.Encrypt(m.x[:], m.x[:])
		m.n = 0
	}
	// Whole blocks, keeping at least one byte back for the final block.
	for len(p) > aes.BlockSize {
		subtle.XORBytes(m.x[:], m.x[:], p[:aes.BlockSize])
		m.block.Encrypt(m.x[:], m.x[:])
		p = p[aes.BlockSize:]
	}
	m.n = copy(m.buf[:], p)
	return total, nil
}

func (m *cbcMAC) Sum(in []byte) []byte {
	last := &m.last
	clear(last[:])
	copy(last[:], m.buf[:m.n])
	k := &m.kFull
	if m.n < aes.BlockSize {
		last[m.n] = 0x80
		k = &m.kPartial
	}
	subtle.XORBytes(last[:], last[:], k[:])
	subtle.XORBytes(last[:], last[:], m.x[:])
	m.block.Encrypt(last[:], last[:])
	return append(in, last[:]...)
}
