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
	"math/bits"
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

// Nonce is a 12-byte nonce as big-endian integers: Hi holds bytes 0-7 and
// Lo bytes 8-11.
type Nonce struct {
	Hi uint64
	Lo uint32
}

// AAD is additional data of at most 16 bytes as big-endian integers,
// zero-padded: Hi holds bytes 0-7, Lo bytes 8-15; Len is its length in
// bytes.
type AAD struct {
	Hi, Lo uint64
	Len    int
}

// Seal encrypts and authenticates plaintext, authenticates aad and
// appends the result to dst. dst may alias plaintext exactly.
func (g *AEAD) Seal(dst, nonce, plaintext, aad []byte) []byte {
	if len(nonce) != NonceSize {
		panic("aesgcm: incorrect nonce length given to GCM")
	}
	var acc [blockSize]byte
	a, mul := g.absorb(&acc, aad)
	return g.seal(dst, plaintext, aad, &acc, nonceWords(nonce), a, mul)
}

// SealWords is Seal with the nonce and a short AAD given as integers. ESP
// builds both from integers it holds (salt, IV, SPI, sequence number);
// passed in registers, they never go through memory, where a wide load of
// bytes just stored piecewise would wait for the store buffer to drain.
func (g *AEAD) SealWords(dst, plaintext []byte, nonce Nonce, aad AAD) []byte {
	checkWords(aad)
	var acc [blockSize]byte
	return g.seal(dst, plaintext, nil, &acc, nonce, aad, wordsMul(aad))
}

// Open authenticates and decrypts ciphertext (tag appended) with aad and
// appends the plaintext to dst. dst may alias ciphertext exactly. On
// failure nothing unauthenticated is left in dst.
func (g *AEAD) Open(dst, nonce, ciphertext, aad []byte) ([]byte, error) {
	if len(nonce) != NonceSize {
		panic("aesgcm: incorrect nonce length given to GCM")
	}
	var acc [blockSize]byte
	a, mul := g.absorb(&acc, aad)
	return g.open(dst, ciphertext, aad, &acc, nonceWords(nonce), a, mul)
}

// OpenWords is Open with the nonce and a short AAD given as integers (see
// SealWords).
func (g *AEAD) OpenWords(dst, ciphertext []byte, nonce Nonce, aad AAD) ([]byte, error) {
	checkWords(aad)
	var acc [blockSize]byte
	return g.open(dst, ciphertext, nil, &acc, nonce, aad, wordsMul(aad))
}

// seal appends plaintext sealed to dst (aadBytes, the AAD as given to
// Seal, only for the overlap check). GHASH starts from acc; with mul = 1
// it first absorbs the words of aad, whose Len is the AAD's length either
// way.
func (g *AEAD) seal(dst, plaintext, aadBytes []byte, acc *[blockSize]byte, nonce Nonce, aad AAD, mul int) []byte {
	if uint64(len(plaintext)) > (1<<32-2)*blockSize {
		panic("aesgcm: message too large for GCM")
	}
	ret, out := sliceForAppend(dst, len(plaintext)+g.tagSize)
	checkOverlap(out, plaintext, aadBytes)
	j0Lo, j0Hi := j0Words(nonce)
	var tag [blockSize]byte
	gcmSeal(&g.rk, g.rounds, &g.htab, acc, j0Lo, j0Hi, j0Hi+ctrOne, aad.Lo, aad.Hi, mul, uint64(aad.Len)*8, &tag, out[:len(plaintext)], plaintext)
	copy(out[len(plaintext):], tag[:g.tagSize])
	return ret
}

// open appends ciphertext (tag included) opened to dst; on a mismatch it
// wipes what it decrypted and fails. The other arguments are seal's.
func (g *AEAD) open(dst, ciphertext, aadBytes []byte, acc *[blockSize]byte, nonce Nonce, aad AAD, mul int) ([]byte, error) {
	if len(ciphertext) < g.tagSize || uint64(len(ciphertext)) > (1<<32-2)*blockSize+uint64(g.tagSize) {
		return nil, errOpen
	}
	ct := ciphertext[:len(ciphertext)-g.tagSize]
	ret, out := sliceForAppend(dst, len(ct))
	checkOverlap(out, ct, aadBytes)
	j0Lo, j0Hi := j0Words(nonce)
	var tag [blockSize]byte
	gcmOpen(&g.rk, g.rounds, &g.htab, acc, j0Lo, j0Hi, j0Hi+ctrOne, aad.Lo, aad.Hi, mul, uint64(aad.Len)*8, &tag, out, ct)
	if subtle.ConstantTimeCompare(tag[:g.tagSize], ciphertext[len(ct):]) != 1 {
		clear(out)
		return nil, errOpen
	}
	return ret, nil
}

// checkWords panics on an AAD the word form cannot hold.
func checkWords(aad AAD) {
	if aad.Len < 0 || aad.Len > blockSize {
		panic("aesgcm: the word form holds at most 16 bytes of AAD")
	}
}

// absorb returns aad as words for the assembly to absorb (mul = 1) when
// it fits one block; a longer one it hashes into acc itself.
func (g *AEAD) absorb(acc *[blockSize]byte, aad []byte) (a AAD, mul int) {
	if len(aad) <= blockSize {
		var b [blockSize]byte
		copy(b[:], aad)
		a = AAD{Hi: binary.BigEndian.Uint64(b[:8]), Lo: binary.BigEndian.Uint64(b[8:]), Len: len(aad)}
		return a, wordsMul(a)
	}
	ghash(&g.htab, acc, aad)
	return AAD{Len: len(aad)}, 0
}

// wordsMul is 1 when the words of aad hold any AAD to absorb.
func wordsMul(aad AAD) int {
	if aad.Len > 0 {
		return 1
	}
	return 0
}

// ctrOne adds one to the big-endian block counter in the last byte of the
// high word of a counter block in memory order (J0 counts from 1, so the
// first data block, 2, never carries).
const ctrOne = 1 << 56

func nonceWords(nonce []byte) Nonce {
	return Nonce{Hi: binary.BigEndian.Uint64(nonce[:8]), Lo: binary.BigEndian.Uint32(nonce[8:])}
}

// j0Words returns J0 = nonce || 0^31 || 1 as the two little-endian words
// of its memory order, which the assembly moves into a vector register.
func j0Words(n Nonce) (lo, hi uint64) {
	return bits.ReverseBytes64(n.Hi), uint64(bits.ReverseBytes32(n.Lo)) | 1<<56
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
