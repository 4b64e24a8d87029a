package esp

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"sync"

	"github.com/ipsecstack/ipsecstack/internal/aesgcm"
)

// aeadEngine runs a combined-mode cipher (RFC 4106, 4309, 7634): nonce =
// salt || IV, AAD = SPI || seq (8 bytes) or SPI || seq-hi || seq-lo with
// ESN. With gmac (RFC 4543) nothing is encrypted: the AAD is SPI || seq
// (|| with ESN the high half before the low) || IV || payload and trailer,
// and the ICV is GCM's tag over an empty plaintext.
type aeadEngine struct {
	aead cipher.AEAD
	// vgcm is aead when it is our AES-GCM (not GMAC): called directly
	// with the nonce and AAD as integers, so that the scratch pool is
	// skipped.
	vgcm *aesgcm.AEAD
	// ivSalt is XORed into the sequence number to make the explicit IV
	// (see seqIV): random per transform, so that two SAs with one key
	// never share a nonce.
	ivSalt  uint64
	salt    [4]byte
	saltLen int
	gmac    bool
	icvLen  int
	// short is set when the ICV is shorter than any tag the cipher.AEAD
	// supports (AES-GCM with 8 bytes): it computes a full tag and
	// truncates, which needs a packet-sized scratch buffer.
	short bool

	// scratch holds *aeadScratch. The nonce and the ESN AAD cannot live on
	// the stack: passing them to an interface method (cipher.AEAD) makes
	// them escape, one allocation per packet. A pool of heap scratch
	// structs costs two cheap per-P operations instead.
	scratch sync.Pool
}

type aeadScratch struct {
	nonce [12]byte
	aad   [12]byte
	tag   [16]byte
	// buf holds the packet-sized output of the short-tag path and the
	// assembled GMAC AAD with ESN.
	buf []byte
}

func newAEADEngine(a *algorithm, key, salt []byte, icvLen int) (*aeadEngine, error) {
	aead, err := a.newAEAD(key, icvLen)
	if err != nil {
		return nil, err
	}
	ivSalt, err := newIVSalt()
	if err != nil {
		return nil, err
	}
	e := &aeadEngine{aead: aead, ivSalt: ivSalt, icvLen: icvLen, short: icvLen < aead.Overhead(), saltLen: len(salt), gmac: a.gmac}
	copy(e.salt[:], salt)
	if g, ok := aead.(*aesgcm.AEAD); ok && !e.gmac && !e.short && len(salt) == 4 {
		e.vgcm = g
	}
	e.scratch.New = func() any { return new(aeadScratch) }
	return e, nil
}

// params fills nonce and picks the AAD for packet b; with ESN the AAD is
// assembled in esnAAD (both the scratch's).
func (e *aeadEngine) params(nonce, esnAAD *[12]byte, b []byte, seq uint64, esn bool) (n, aad []byte) {
	copy(nonce[:e.saltLen], e.salt[:])
	copy(nonce[e.saltLen:], b[HeaderLen:HeaderLen+8])
	n = nonce[:e.saltLen+8]
	if !esn {
		// Without ESN the AAD is the header itself (RFC 4106 §5).
		return n, b[:HeaderLen]
	}
	copy(esnAAD[0:4], b[0:4])
	binary.BigEndian.PutUint32(esnAAD[4:8], uint32(seq>>32))
	copy(esnAAD[8:12], b[4:8])
	return n, esnAAD[:]
}

// gmacTag computes the RFC 4543 ICV of packet b (ICV field excluded) into
// s.tag. Without ESN the AAD is contiguous in the packet; with ESN the
// high sequence half goes between SPI and the low half, so the AAD is
// assembled in s.buf.
func (e *aeadEngine) gmacTag(s *aeadScratch, b []byte, seq uint64, esn bool) []byte {
	nonce, _ := e.params(&s.nonce, &s.aad, b, seq, esn)
	body := b[:len(b)-e.icvLen]
	if !esn {
		return e.aead.Seal(s.tag[:0], nonce, nil, body)[:e.icvLen]
	}
	aad := grow(&s.buf, len(body)+4)
	copy(aad[:12], s.aad[:])
	copy(aad[12:], body[HeaderLen:])
	return e.aead.Seal(s.tag[:0], nonce, nil, aad)[:e.icvLen]
}

// gcmNonce is RFC 4106's nonce, salt || IV, for vgcm.
func (e *aeadEngine) gcmNonce(iv uint64) aesgcm.Nonce {
	return aesgcm.Nonce{Hi: uint64(binary.BigEndian.Uint32(e.salt[:]))<<32 | iv>>32, Lo: uint32(iv)}
}

// gcmAAD is RFC 4106's AAD (§5) for vgcm: SPI || seq-lo, or with ESN
// SPI || seq-hi || seq-lo, seq-lo as on the wire.
func gcmAAD(spi, seqLo uint32, seq uint64, esn bool) aesgcm.AAD {
	if !esn {
		return aesgcm.AAD{Hi: uint64(spi)<<32 | uint64(seqLo), Len: 8}
	}
	return aesgcm.AAD{Hi: uint64(spi)<<32 | seq>>32, Lo: uint64(seqLo) << 32, Len: 12}
}

func (e *aeadEngine) seal(b []byte, seq uint64, esn bool, testIV []byte) {
	var ivv uint64
	if testIV != nil {
		ivv = binary.BigEndian.Uint64(testIV)
	} else {
		ivv = seqIV(seq, e.ivSalt)
	}
	binary.BigEndian.PutUint64(b[HeaderLen:HeaderLen+8], ivv)
	if e.vgcm != nil {
		// The SPI reads back from the 4-byte store that wrote it; the
		// rest the cipher takes as integers (aesgcm.SealWords).
		pt := b[HeaderLen+8 : len(b)-e.icvLen]
		e.vgcm.SealWords(pt[:0], pt, e.gcmNonce(ivv), gcmAAD(binary.BigEndian.Uint32(b[0:4]), uint32(seq), seq, esn))
		return
	}
	s := e.scratch.Get().(*aeadScratch)
	if e.gmac {
		copy(b[len(b)-e.icvLen:], e.gmacTag(s, b, seq, esn))
		e.scratch.Put(s)
		return
	}
	nonce, aad := e.params(&s.nonce, &s.aad, b, seq, esn)
	off := HeaderLen + 8
	pt := b[off : len(b)-e.icvLen]
	if !e.short {
		e.aead.Seal(pt[:0], nonce, pt, aad)
	} else {
		out := e.aead.Seal(grow(&s.buf, len(pt)+e.aead.Overhead())[:0], nonce, pt, aad)
		copy(b[off:], out[:len(pt)+e.icvLen])
	}
	e.scratch.Put(s)
}

func (e *aeadEngine) open(b []byte, seq uint64, esn bool) ([]byte, error) {
	if e.vgcm != nil {
		off := HeaderLen + 8
		aad := gcmAAD(binary.BigEndian.Uint32(b[0:4]), binary.BigEndian.Uint32(b[4:8]), seq, esn)
		if _, err := e.vgcm.OpenWords(b[off:off], b[off:], e.gcmNonce(binary.BigEndian.Uint64(b[HeaderLen:off])), aad); err != nil {
			return nil, ErrICV
		}
		return b[off : len(b)-e.icvLen], nil
	}
	s := e.scratch.Get().(*aeadScratch)
	defer e.scratch.Put(s)
	off := HeaderLen + 8
	end := len(b) - e.icvLen
	if e.gmac {
		if subtle.ConstantTimeCompare(e.gmacTag(s, b, seq, esn), b[end:]) != 1 {
			return nil, ErrICV
		}
		return b[off:end], nil
	}
	nonce, aad := e.params(&s.nonce, &s.aad, b, seq, esn)
	if !e.short {
		if _, err := e.aead.Open(b[off:off], nonce, b[off:], aad); err != nil {
			return nil, ErrICV
		}
		return b[off:end], nil
	}
	// Truncated tag: GCM's keystream does not depend on the data, so
	// sealing the ciphertext yields the plaintext; sealing that plaintext
	// yields the ciphertext again and the full tag to compare a prefix of.
	ct := b[off:end]
	buf := grow(&s.buf, len(ct)+e.aead.Overhead())[:0]
	pt := e.aead.Seal(buf, nonce, ct, aad)[:len(ct)]
	copy(ct, pt)
	full := e.aead.Seal(buf, nonce, ct, aad)
	if subtle.ConstantTimeCompare(full[len(ct):len(ct)+e.icvLen], b[end:]) != 1 {
		copy(ct, full[:len(ct)]) // put the ciphertext back: release nothing unverified
		return nil, ErrICV
	}
	return ct, nil
}

func (e *aeadEngine) zero() {
	// Go's AEADs keep their key schedules out of reach; ours can wipe.
	if z, ok := e.aead.(interface{ Zero() }); ok {
		z.Zero()
	}
	clear(e.salt[:])
	e.ivSalt = 0
	e.aead = nil
	e.vgcm = nil
	e.scratch = sync.Pool{}
}
