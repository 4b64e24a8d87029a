package esp

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"sync"
)

// cbcEngine runs a block cipher in CBC mode (RFC 3602, 2451, 2405), AES in
// counter mode (RFC 3686), or the NULL cipher, with a separate MAC over
// SPI || seq || IV || ciphertext (RFC 4303 §3.3.2.1), followed by the high
// 32 sequence bits with ESN (§2.2.1, not sent). Integrity is checked
// before anything is decrypted (§3.4.4).
type cbcEngine struct {
	block cipher.Block // nil: NULL encryption; the raw key is not kept
	ivLen int
	mac   *MAC // nil: no integrity
	ivs   *ivGen
	// ctr: RFC 3686 counter mode; nonce is the 4-byte value carried at
	// the end of the key.
	ctr   bool
	nonce [4]byte
	// ivSalt makes counter-mode IVs (seqIV), random per transform.
	ivSalt uint64
	// ctrGCM generates the counter-mode keystream with Go's pipelined
	// AES-GCM (see ctrXOR); nil falls back to one block at a time.
	ctrGCM cipher.AEAD

	// scratch holds *cbcScratch: CBC modes whose IV is reset per packet,
	// so that no packet allocates.
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
	iv       [16]byte
	ctr      gcmStream // counter mode (RFC 3686)
}

func newCBCEngine(enc *algorithm, encKey []byte, mac *MAC) (*cbcEngine, error) {
	e := &cbcEngine{ivLen: enc.IVLen, mac: mac, ctr: enc.ctr}
	if enc.newBlock != nil {
		k := len(encKey) - enc.SaltLen
		b, err := enc.newBlock(encKey[:k])
		if err != nil {
			return nil, err
		}
		e.block = b
		copy(e.nonce[:], encKey[k:])
		if e.ctr {
			if e.ivSalt, err = newIVSalt(); err != nil {
				return nil, err
			}
			// The counter-mode keystream comes from GCM (ctrXOR); a
			// block cipher without GCM takes the block-at-a-time path.
			if g, err := cipher.NewGCM(b); err == nil {
				e.ctrGCM = g
			}
		}
		if !e.ctr {
			ivs, err := newIVGen()
			if err != nil {
				return nil, err
			}
			e.ivs = ivs
		}
	}
	e.scratch.New = e.newScratch
	return e, nil
}

func (e *cbcEngine) newScratch() any {
	s := new(cbcScratch)
	if e.block != nil && !e.ctr {
		zero := make([]byte, e.block.BlockSize())
		// Every crypto/cipher CBC mode has SetIV; if one ever does not,
		// the packet path falls back to building a mode per packet.
		s.enc, _ = cipher.NewCBCEncrypter(e.block, zero).(cbcMode)
		s.dec, _ = cipher.NewCBCDecrypter(e.block, zero).(cbcMode)
	}
	return s
}

// ctrXOR is RFC 3686 §4: counter block = nonce || IV || 32-bit block
// counter starting at 1; the keystream is XORed over data in place. The
// keystream comes from GCM (see gcmStream).
func (e *cbcEngine) ctrXOR(s *cbcScratch, iv, data []byte) {
	if !gcmFits(e.ctrGCM, len(data)) {
		e.ctrXORBlocks(s, iv, data)
		return
	}
	copy(s.ctr.nonce[0:4], e.nonce[:])
	copy(s.ctr.nonce[4:12], iv)
	s.ctr.xor(e.block, e.ctrGCM, data, data)
}

// ctrXORBlocks is counter mode one block at a time: for payloads of one
// block, where GCM's setup costs more than it saves.
func (e *cbcEngine) ctrXORBlocks(s *cbcScratch, iv, data []byte) {
	cb, ks := &s.ctr.blk, &s.ctr.ks
	copy(cb[0:4], e.nonce[:])
	copy(cb[4:12], iv)
	for ctr := uint32(1); len(data) > 0; ctr++ {
		binary.BigEndian.PutUint32(cb[12:], ctr)
		e.block.Encrypt(ks[:], cb[:])
		n := subtle.XORBytes(data, data, ks[:])
		data = data[n:]
	}
}

func (e *cbcEngine) seal(b []byte, seq uint64, esn bool, testIV []byte) {
	ivEnd := HeaderLen + e.ivLen
	ctEnd := len(b) - e.icvLen()
	if e.block != nil {
		s := e.scratch.Get().(*cbcScratch)
		iv := b[HeaderLen:ivEnd]
		switch {
		case testIV != nil:
			copy(iv, testIV)
		case e.ctr:
			// RFC 3686 §3.1: the IV must be unique per key; the
			// sequence number XOR a per-transform salt is (seqIV).
			binary.BigEndian.PutUint64(iv, seqIV(seq, e.ivSalt))
		default:
			e.ivs.fill(iv, &s.iv)
		}
		ct := b[ivEnd:ctEnd]
		switch {
		case e.ctr:
			e.ctrXOR(s, iv, ct)
		case s.enc != nil:
			s.enc.SetIV(iv)
			s.enc.CryptBlocks(ct, ct)
		default:
			cipher.NewCBCEncrypter(e.block, iv).CryptBlocks(ct, ct)
		}
		e.scratch.Put(s)
	}
	if e.mac != nil {
		e.mac.Compute(b[ctEnd:], seq, esn, b[:ctEnd])
	}
}

func (e *cbcEngine) open(b []byte, seq uint64, esn bool) ([]byte, error) {
	ivEnd := HeaderLen + e.ivLen
	ctEnd := len(b) - e.icvLen()
	if e.mac != nil && !e.mac.Verify(b[ctEnd:], seq, esn, b[:ctEnd]) {
		return nil, ErrICV
	}
	ct := b[ivEnd:ctEnd]
	if e.block != nil {
		s := e.scratch.Get().(*cbcScratch)
		iv := b[HeaderLen:ivEnd]
		switch {
		case e.ctr:
			e.ctrXOR(s, iv, ct)
		case s.dec != nil:
			s.dec.SetIV(iv)
			s.dec.CryptBlocks(ct, ct)
		default:
			cipher.NewCBCDecrypter(e.block, iv).CryptBlocks(ct, ct)
		}
		e.scratch.Put(s)
	}
	return ct, nil
}

func (e *cbcEngine) icvLen() int {
	if e.mac == nil {
		return 0
	}
	return e.mac.icvLen
}

func (e *cbcEngine) zero() {
	if e.mac != nil {
		e.mac.Zero()
	}
	clear(e.nonce[:])
	e.ivSalt = 0
	e.block = nil
	e.ctrGCM = nil
	e.ivs = nil
	e.scratch = sync.Pool{}
}
