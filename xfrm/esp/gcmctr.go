package esp

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
)

// zeros is the all-zero plaintext whose GCM encryption is the keystream.
var zeros [65536]byte

// gcmStream is the scratch of a counter mode whose counter blocks are a
// 12-byte prefix N followed by a 32-bit block counter starting at 1: RFC
// 3686's nonce || IV || counter, and RFC 4309 CCM's flags || salt || IV ||
// counter. Go has no counter mode that can be re-keyed with a new IV
// without an allocation, and encrypting one block per call runs at a
// fraction of the pipelined speed. GCM (NIST SP 800-38D) is that pipelined
// counter mode: with the 96-bit nonce N its keystream blocks are
// E(N || 2), E(N || 3), …, the blocks 2, 3, … wanted here. Block 1 is
// E(N || 1) computed directly, and the rest is GCM's encryption of zeros
// (its tag, over GHASH, is discarded: the price of the trick).
type gcmStream struct {
	nonce   [12]byte // N
	blk, ks [16]byte // one counter block and its keystream
	// buf takes GCM's keystream (and other packet-sized scratch); it grows
	// to the largest packet seen and is reused.
	buf []byte
}

// grow returns s.buf with room for n bytes.
func (s *gcmStream) grow(n int) []byte { return grow(&s.buf, n) }

// grow returns *buf resliced to n bytes, replacing it first with a larger
// one (at least 2048 bytes, a packet) if it is too small: per-packet
// scratch that settles at the largest packet seen.
func grow(buf *[]byte, n int) []byte {
	if cap(*buf) < n {
		*buf = make([]byte, 0, max(n, 2048))
	}
	return (*buf)[:n]
}

// fits reports whether xor can take n bytes with g: g exists and the GCM
// part is nonempty and no longer than zeros. Shorter data costs less one
// block at a time than GCM's setup.
func gcmFits(g cipher.AEAD, n int) bool {
	return g != nil && n > 16 && n-16 <= len(zeros)
}

// xor XORs src into dst with the keystream for counter blocks N || 1,
// N || 2, …, where g is GCM over the block cipher b and gcmFits(g, len(src)).
func (s *gcmStream) xor(b cipher.Block, g cipher.AEAD, dst, src []byte) {
	copy(s.blk[:12], s.nonce[:])
	binary.BigEndian.PutUint32(s.blk[12:], 1)
	b.Encrypt(s.ks[:], s.blk[:])
	subtle.XORBytes(dst[:16], src[:16], s.ks[:])
	rest := len(src) - 16
	ks := g.Seal(s.grow(rest + g.Overhead())[:0], s.nonce[:], zeros[:rest], nil)
	subtle.XORBytes(dst[16:], src[16:], ks[:rest])
}
