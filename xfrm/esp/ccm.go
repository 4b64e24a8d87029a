package esp

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
)

// ccm is AES-CCM (RFC 3610, NIST SP 800-38C) as a cipher.AEAD: CBC-MAC
// over B0 || encoded AAD || plaintext, and CTR encryption of the payload
// with counter blocks A1, A2, ... and of the tag with A0. The Go standard
// library has no CCM. RFC 4309 uses it with an 11-byte nonce (3-byte salt
// || 8-byte IV, so L = 4) and 8, 12 or 16-byte tags; the RFC 3610 test
// vectors use 13-byte nonces (L = 2).
//
// Seal and Open work in place (dst may be plaintext[:0] / ciphertext[:0])
// and allocate nothing: their block-sized scratch comes from a pool, since
// passing stack arrays to cipher.Block's interface methods would make them
// escape.
type ccm struct {
	b         cipher.Block
	nonceSize int
	tagSize   int
	scratch   sync.Pool // *ccmScratch
	// gcm, with RFC 4309's 11-byte nonce, generates the counter blocks
	// A1, A2, ... pipelined (see gcmStream); nil: one block at a time.
	gcm cipher.AEAD
}

type ccmScratch struct {
	x, s0 [16]byte
	// cbc runs the CBC-MAC over whole blocks in one call; its (discarded)
	// output goes to ctr.buf, beside GCM's keystream.
	cbc cbcMode
	ctr gcmStream
}

var errCCMOpen = errors.New("ccm: message authentication failed")

// newCCM returns CCM over a 16-byte block cipher. nonceSize is 7..13 and
// tagSize 4..16 even (RFC 3610 §2).
func newCCM(b cipher.Block, nonceSize, tagSize int) (*ccm, error) {
	if b.BlockSize() != 16 {
		return nil, errors.New("ccm: needs a 128-bit block cipher")
	}
	if nonceSize < 7 || nonceSize > 13 {
		return nil, errors.New("ccm: nonce must be 7 to 13 bytes")
	}
	if tagSize < 4 || tagSize > 16 || tagSize%2 != 0 {
		return nil, errors.New("ccm: tag must be 4, 6, ..., 16 bytes")
	}
	c := &ccm{b: b, nonceSize: nonceSize, tagSize: tagSize}
	if nonceSize == 11 {
		// flags || nonce is then 12 bytes, GCM's nonce; the 4-byte
		// counter that follows counts the same way in both modes.
		if g, err := cipher.NewGCM(b); err == nil {
			c.gcm = g
		}
	}
	c.scratch.New = func() any {
		s := new(ccmScratch)
		s.cbc, _ = cipher.NewCBCEncrypter(b, make([]byte, 16)).(cbcMode)
		return s
	}
	return c, nil
}

func (c *ccm) NonceSize() int { return c.nonceSize }
func (c *ccm) Overhead() int  { return c.tagSize }

// l is the size of the length field (and of the counter).
func (c *ccm) l() int { return 15 - c.nonceSize }

// mac computes the unencrypted CBC-MAC T over nonce, aad and the plaintext
// pt into s.x.
func (c *ccm) mac(s *ccmScratch, nonce, aad, pt []byte) {
	L := c.l()
	x := s.x[:]
	// B0: flags || nonce || l(m).
	flags := byte((c.tagSize-2)/2) << 3
	flags |= byte(L - 1)
	if len(aad) > 0 {
		flags |= 0x40
	}
	x[0] = flags
	copy(x[1:], nonce)
	clear(x[1+c.nonceSize:])
	n := uint64(len(pt))
	for i := 15; i > c.nonceSize; i-- {
		x[i] = byte(n)
		n >>= 8
	}
	c.b.Encrypt(x, x)
	if len(aad) > 0 {
		// Encoded l(a) then a, zero padded to the block (RFC 3610 §2.2).
		blk := s.ctr.ks[:]
		clear(blk)
		var hl int
		switch {
		case len(aad) < 0xff00:
			binary.BigEndian.PutUint16(blk, uint16(len(aad)))
			hl = 2
		default:
			blk[0], blk[1] = 0xff, 0xfe
			binary.BigEndian.PutUint32(blk[2:], uint32(len(aad)))
			hl = 6
		}
		k := copy(blk[hl:], aad)
		subtle.XORBytes(x, x, blk)
		c.b.Encrypt(x, x)
		c.cbc(s, aad[k:])
	}
	c.cbc(s, pt)
}

// cbc absorbs data into the CBC-MAC, zero-padding its last block. Whole
// blocks go through CBC encryption with the MAC state as IV: its last
// ciphertext block is the new state (CBC-MAC is CBC encryption that keeps
// only the last block).
func (c *ccm) cbc(s *ccmScratch, data []byte) {
	x := s.x[:]
	if nb := len(data) &^ 15; nb >= 64 && s.cbc != nil {
		out := s.ctr.grow(nb)
		s.cbc.SetIV(x)
		s.cbc.CryptBlocks(out, data[:nb])
		copy(x, out[nb-16:])
		data = data[nb:]
	}
	for len(data) >= 16 {
		subtle.XORBytes(x, x, data[:16])
		c.b.Encrypt(x, x)
		data = data[16:]
	}
	if len(data) > 0 {
		subtle.XORBytes(x[:len(data)], x[:len(data)], data)
		c.b.Encrypt(x, x)
	}
}

// ctrXOR encrypts src into dst with counter blocks A1, A2, ..., and puts
// S0 = E(A0) into s.s0.
func (c *ccm) ctrXOR(s *ccmScratch, nonce, dst, src []byte) {
	a := s.ctr.blk[:]
	a[0] = byte(c.l() - 1)
	copy(a[1:], nonce)
	clear(a[1+c.nonceSize:])
	c.b.Encrypt(s.s0[:], a)
	if gcmFits(c.gcm, len(src)) {
		// A_i = flags || nonce || i, with a 4-byte counter.
		copy(s.ctr.nonce[:], a[:12])
		s.ctr.xor(c.b, c.gcm, dst, src)
		return
	}
	var i uint32
	for len(src) > 0 {
		i++
		for j, v := 15, i; j > c.nonceSize; j, v = j-1, v>>8 {
			a[j] = byte(v)
		}
		c.b.Encrypt(s.ctr.ks[:], a)
		n := subtle.XORBytes(dst, src, s.ctr.ks[:])
		dst, src = dst[n:], src[n:]
	}
}

// appendN extends in by n bytes (reusing its capacity) and returns the
// result and the extension, as cipher.AEAD's append convention wants.
func appendN(in []byte, n int) (head, tail []byte) {
	head = slices.Grow(in, n)[:len(in)+n]
	return head, head[len(in):]
}

func (c *ccm) Seal(dst, nonce, plaintext, aad []byte) []byte {
	if len(nonce) != c.nonceSize {
		panic("ccm: incorrect nonce length")
	}
	s := c.scratch.Get().(*ccmScratch)
	defer c.scratch.Put(s)
	c.mac(s, nonce, aad, plaintext)
	ret, out := appendN(dst, len(plaintext)+c.tagSize)
	c.ctrXOR(s, nonce, out[:len(plaintext)], plaintext)
	subtle.XORBytes(out[len(plaintext):], s.x[:c.tagSize], s.s0[:c.tagSize])
	return ret
}

func (c *ccm) Open(dst, nonce, ciphertext, aad []byte) ([]byte, error) {
	if len(nonce) != c.nonceSize {
		panic("ccm: incorrect nonce length")
	}
	if len(ciphertext) < c.tagSize {
		return nil, errCCMOpen
	}
	s := c.scratch.Get().(*ccmScratch)
	defer c.scratch.Put(s)
	n := len(ciphertext) - c.tagSize
	var tag [16]byte
	copy(tag[:], ciphertext[n:])
	ret, out := appendN(dst, n)
	c.ctrXOR(s, nonce, out, ciphertext[:n])
	c.mac(s, nonce, aad, out)
	subtle.XORBytes(s.x[:c.tagSize], s.x[:c.tagSize], s.s0[:c.tagSize])
	if subtle.ConstantTimeCompare(s.x[:c.tagSize], tag[:c.tagSize]) != 1 {
		clear(out) // release nothing unverified
		return nil, errCCMOpen
	}
	return ret, nil
}
