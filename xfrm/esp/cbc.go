package esp

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"hash"
	"sync"
)

// cbcEngine runs a block cipher in CBC mode (or the NULL cipher) with a
// separate HMAC over SPI || seq || IV || ciphertext (RFC 4303 §3.3.2.1),
// followed by the high 32 sequence bits with ESN (§2.2.1, not sent).
// Integrity is checked before anything is decrypted (§3.4.4).
type cbcEngine struct {
	block   cipher.Block // nil: NULL encryption; the raw key is not kept
	ivLen   int
	newHash func() hash.Hash // nil: no integrity
	macKey  []byte
	icvLen  int
	ivs     *ivGen

	// scratch holds *cbcScratch: CBC modes whose IV is reset per packet
	// and keyed HMAC states, so that no packet allocates. hmac.New costs
	// two hash states and the key schedule; Reset on a used HMAC is cheap.
	scratch sync.Pool
}

// cbcMode is what crypto/cipher's CBC modes implement beyond BlockMode
// (crypto/tls relies on it too).
type cbcMode interface {
	cipher.BlockMode
	SetIV([]byte)
}

type cbcScratch struct {
	enc, dec cbcMode
	mac      hash.Hash
	sum      [sha512.Size]byte
	hi       [4]byte
	iv       [16]byte
}

func newCBCEngine(enc *algorithm, encKey []byte, auth *algorithm, macKey []byte, icvLen int) (*cbcEngine, error) {
	// macKey is kept (a copy) because each pooled HMAC state is keyed
	// from it when the pool grows.
	e := &cbcEngine{ivLen: enc.IVLen, macKey: macKey, icvLen: icvLen}
	if enc.newBlock != nil {
		b, err := enc.newBlock(encKey)
		if err != nil {
			return nil, err
		}
		e.block = b
		ivs, err := newIVGen()
		if err != nil {
			return nil, err
		}
		e.ivs = ivs
	}
	if auth != nil {
		e.newHash = auth.newHash
	}
	e.scratch.New = e.newScratch
	return e, nil
}

func (e *cbcEngine) newScratch() any {
	s := new(cbcScratch)
	if e.block != nil {
		zero := make([]byte, e.block.BlockSize())
		// Every crypto/cipher CBC mode has SetIV; if one ever does not,
		// mode() falls back to building a mode per packet.
		s.enc, _ = cipher.NewCBCEncrypter(e.block, zero).(cbcMode)
		s.dec, _ = cipher.NewCBCDecrypter(e.block, zero).(cbcMode)
	}
	if e.newHash != nil {
		s.mac = hmac.New(e.newHash, e.macKey)
	}
	return s
}

func (e *cbcEngine) seal(b []byte, seq uint64, esn bool, testIV []byte) {
	s := e.scratch.Get().(*cbcScratch)
	ivEnd := HeaderLen + e.ivLen
	ctEnd := len(b) - e.icvLen
	if e.block != nil {
		iv := b[HeaderLen:ivEnd]
		if testIV != nil {
			copy(iv, testIV)
		} else {
			e.ivs.fill(iv, &s.iv)
		}
		ct := b[ivEnd:ctEnd]
		if s.enc != nil {
			s.enc.SetIV(iv)
			s.enc.CryptBlocks(ct, ct)
		} else {
			cipher.NewCBCEncrypter(e.block, iv).CryptBlocks(ct, ct)
		}
	}
	if s.mac != nil {
		copy(b[ctEnd:], e.icv(s, b[:ctEnd], seq, esn))
	}
	e.scratch.Put(s)
}

func (e *cbcEngine) open(b []byte, seq uint64, esn bool) ([]byte, error) {
	s := e.scratch.Get().(*cbcScratch)
	defer e.scratch.Put(s)
	ivEnd := HeaderLen + e.ivLen
	ctEnd := len(b) - e.icvLen
	if s.mac != nil {
		if subtle.ConstantTimeCompare(e.icv(s, b[:ctEnd], seq, esn), b[ctEnd:]) != 1 {
			return nil, ErrICV
		}
	}
	ct := b[ivEnd:ctEnd]
	if e.block != nil {
		iv := b[HeaderLen:ivEnd]
		if s.dec != nil {
			s.dec.SetIV(iv)
			s.dec.CryptBlocks(ct, ct)
		} else {
			cipher.NewCBCDecrypter(e.block, iv).CryptBlocks(ct, ct)
		}
	}
	return ct, nil
}

// icv computes the truncated HMAC of data (and the ESN high bits).
func (e *cbcEngine) icv(s *cbcScratch, data []byte, seq uint64, esn bool) []byte {
	s.mac.Reset()
	s.mac.Write(data)
	if esn {
		binary.BigEndian.PutUint32(s.hi[:], uint32(seq>>32))
		s.mac.Write(s.hi[:])
	}
	return s.mac.Sum(s.sum[:0])[:e.icvLen]
}

func (e *cbcEngine) zero() {
	clear(e.macKey)
	e.block = nil
	e.ivs = nil
	// Pooled HMAC states hold key-derived pads we cannot reach; dropping
	// the pool leaves them to the GC.
	e.scratch = sync.Pool{}
}
