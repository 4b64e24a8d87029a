// Package aesgcm is AES-GCM (NIST SP 800-38D) with a 96-bit nonce for
// CPUs with VAES and VPCLMULQDQ on 512-bit registers (AVX-512). Go's own
// AES-GCM interleaves AES-NI and PCLMULQDQ on 128-bit registers, one block
// per instruction; here one instruction takes four blocks, and the counter
// mode and GHASH each run sixteen blocks per loop, which on such CPUs
// roughly doubles the speed. It also takes tags of 8 to 16 bytes natively
// (RFC 4106's 8- and 12-byte ICVs), where Go's GCM stops at 12.
//
// The layout follows the usual split (Gueron and Kounavis, "Intel
// Carry-Less Multiplication Instruction and its Usage for Computing the GCM
// Mode"): GHASH works on byte-reversed blocks with the hash key
// pre-multiplied by x, so that a product needs no bit reflection, and
// reduces with two folds by the constant 0xc2 || 0^120 || 1.
package aesgcm

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"unsafe"
)

const (
	// NonceSize is the only nonce length supported: 96 bits, RFC 4106's
	// salt || IV.
	NonceSize = 12
	blockSize = 16
	htabLen   = 32 * blockSize
)

var (
	// ErrUnsupported is returned by New when the CPU lacks VAES,
	// VPCLMULQDQ or AVX-512 (or the OS does not save its registers).
	ErrUnsupported = errors.New("aesgcm: CPU lacks VAES/VPCLMULQDQ/AVX-512")
	errOpen        = errors.New("aesgcm: message authentication failed")
)

// AEAD is AES-GCM keyed once; it implements crypto/cipher.AEAD and is safe
// for concurrent use.
type AEAD struct {
	// rk is the expanded key schedule, rounds+1 16-byte round keys.
	rk     [15 * blockSize]byte
	rounds int
	// htab holds H^17, H^16, …, H^1 in GHASH's working representation
	// (byte-reversed, times x), the order in which blocks are multiplied,
	// then zeros: the last step loads four registers of powers from any
	// entry.
	htab    [htabLen]byte
	tagSize int
}

// Supported reports whether this CPU runs the package.
func Supported() bool { return supported }

// New returns AES-GCM with a 12-byte nonce and tagSize-byte tags (8 to 16)
// for a 16-, 24- or 32-byte key.
func New(key []byte, tagSize int) (*AEAD, error) {
	if !supported {
		return nil, ErrUnsupported
	}
	if tagSize < 8 || tagSize > 16 {
		return nil, errors.New("aesgcm: tag size must be 8 to 16 bytes")
	}
	g := &AEAD{tagSize: tagSize}
	switch len(key) {
	case 16:
		g.rounds = 10
	case 24:
		g.rounds = 12
	case 32:
		g.rounds = 14
	default:
		return nil, errors.New("aesgcm: key must be 16, 24 or 32 bytes")
	}
	expandKey(&g.rk, key, g.rounds)
	var h [blockSize]byte
	encryptBlock(&g.rk, g.rounds, &h, &h)
	// H as a 128-bit integer (byte 0 most significant), times x modulo
	// the reflected polynomial: the working representation of H.
	hi, lo := binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(h[8:])
	carry := hi >> 63
	hi, lo = hi<<1|lo>>63, lo<<1
	if carry != 0 {
		hi ^= 0xc200000000000000
		lo ^= 1
	}
	binary.LittleEndian.PutUint64(h[:8], lo)
	binary.LittleEndian.PutUint64(h[8:], hi)
	ghashInit(&h, &g.htab)
	clear(h[:])
	return g, nil
}

// NonceSize returns 12.
func (g *AEAD) NonceSize() int { return NonceSize }

// Overhead returns the tag size.
func (g *AEAD) Overhead() int { return g.tagSize }

// Zero wipes the key schedule and hash key table; the AEAD must not be
// used afterwards.
func (g *AEAD) Zero() {
	clear(g.rk[:])
	clear(g.htab[:])
}

// Zeroed reports whether Zero has wiped the key material (for tests).
func (g *AEAD) Zeroed() bool {
	return g.rk == [len(g.rk)]byte{} && g.htab == [htabLen]byte{}
}

// Seal encrypts and authenticates plaintext, authenticates aad and
// appends the result to dst. dst may alias plaintext exactly.
func (g *AEAD) Seal(dst, nonce, plaintext, aad []byte) []byte {
	if len(nonce) != NonceSize {
		panic("aesgcm: incorrect nonce length given to GCM")
	}
	if uint64(len(plaintext)) > (1<<32-2)*blockSize {
		panic("aesgcm: message too large for GCM")
	}
	ret, out := sliceForAppend(dst, len(plaintext)+g.tagSize)
	ct := out[:len(plaintext)]
	checkOverlap(out, plaintext, aad)
	ctr, acc := g.begin(nonce, aad)
	var tag [blockSize]byte
	// Whole 256-byte chunks go through the stitched loop, which leaves the
	// last chunk's GHASH to finish; the rest is counter mode alone.
	n := len(plaintext) &^ 255
	if n > 0 {
		gcmSeal256(&g.rk, g.rounds, &ctr, &g.htab, &acc, ct[:n], plaintext[:n])
		advance(&ctr, n)
	}
	if n < len(plaintext) {
		ctrXOR(&g.rk, g.rounds, &ctr, ct[n:], plaintext[n:])
	}
	g.finish(&tag, &acc, nonce, len(aad), ct[max(n-256, 0):], len(ct))
	copy(out[len(plaintext):], tag[:g.tagSize])
	return ret
}

// Open authenticates ciphertext (with its tag) and aad and, if they are
// authentic, decrypts and appends the plaintext to dst. dst may alias
// ciphertext exactly. When authentication fails, what was written to dst
// is zeroed (as crypto/cipher does).
func (g *AEAD) Open(dst, nonce, ciphertext, aad []byte) ([]byte, error) {
	if len(nonce) != NonceSize {
		panic("aesgcm: incorrect nonce length given to GCM")
	}
	if len(ciphertext) < g.tagSize || uint64(len(ciphertext)) > (1<<32-2)*blockSize+uint64(g.tagSize) {
		return nil, errOpen
	}
	ct := ciphertext[:len(ciphertext)-g.tagSize]
	ret, out := sliceForAppend(dst, len(ct))
	checkOverlap(out, ct, aad)
	ctr, acc := g.begin(nonce, aad)
	var tag [blockSize]byte
	// Whole 256-byte chunks are hashed and decrypted in one pass; the rest
	// is hashed, and decrypted only once the tag is known good.
	n := len(ct) &^ 255
	if n > 0 {
		gcmOpen256(&g.rk, g.rounds, &ctr, &g.htab, &acc, out[:n], ct[:n])
		advance(&ctr, n)
	}
	g.finish(&tag, &acc, nonce, len(aad), ct[n:], len(ct))
	if subtle.ConstantTimeCompare(tag[:g.tagSize], ciphertext[len(ct):]) != 1 {
		clear(out[:n])
		return nil, errOpen
	}
	if n < len(ct) {
		ctrXOR(&g.rk, g.rounds, &ctr, out[n:], ct[n:])
	}
	return ret, nil
}

// begin returns the first counter block of the data, J0+1, and GHASH's
// accumulator with aad absorbed.
func (g *AEAD) begin(nonce, aad []byte) (ctr, acc [blockSize]byte) {
	copy(ctr[:], nonce)
	ctr[15] = 2
	if len(aad) > 0 {
		ghash(&g.htab, &acc, aad, nil, nil, 0, nil)
	}
	return ctr, acc
}

// checkOverlap panics, as crypto/cipher does, when out overlaps in other
// than exactly, or overlaps aad at all.
func checkOverlap(out, in, aad []byte) {
	if inexactOverlap(out, in) {
		panic("aesgcm: invalid buffer overlap of output and input")
	}
	if anyOverlap(out, aad) {
		panic("aesgcm: invalid buffer overlap of output and additional data")
	}
}

// advance moves counter block ctr n bytes on (inc32).
func advance(ctr *[blockSize]byte, n int) {
	binary.BigEndian.PutUint32(ctr[12:], binary.BigEndian.Uint32(ctr[12:])+uint32(n/blockSize))
}

// finish absorbs rest (the ciphertext not yet hashed) and the length block
// into acc and writes the full 16-byte tag to t.
func (g *AEAD) finish(t, acc *[blockSize]byte, nonce []byte, aadLen int, rest []byte, ctLen int) {
	var lens [blockSize]byte
	binary.BigEndian.PutUint64(lens[:8], uint64(aadLen)*8)
	binary.BigEndian.PutUint64(lens[8:], uint64(ctLen)*8)
	copy(t[:], nonce)
	t[12], t[13], t[14], t[15] = 0, 0, 0, 1
	ghash(&g.htab, acc, rest, &lens, &g.rk, g.rounds, t)
}

// sliceForAppend extends in by n bytes, returning the whole slice and the
// new tail (as crypto/cipher does).
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	tail = head[len(in):]
	return
}

func anyOverlap(x, y []byte) bool {
	return len(x) > 0 && len(y) > 0 &&
		uintptr(unsafe.Pointer(&x[0])) <= uintptr(unsafe.Pointer(&y[len(y)-1])) &&
		uintptr(unsafe.Pointer(&y[0])) <= uintptr(unsafe.Pointer(&x[len(x)-1]))
}

func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	return anyOverlap(x, y)
}
