package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"
)

// ivGen makes the random-looking, unpredictable IVs CBC needs (RFC 3602
// §2.3: an IV must not be predictable). Each IV is AES, under a secret key
// drawn from crypto/rand for this transform only, of a 64-bit random prefix
// and a 64-bit atomic counter — the construction NIST SP 800-38A Appendix C
// suggests (encrypt a nonce with the forward cipher).
//
// Why not crypto/rand per packet, or a crypto/rand buffer under a lock: the
// former is a syscall-backed read per packet, and the latter serializes
// every core sealing on one SA behind a mutex. The counter is one atomic
// add, the encryption one AES block (a few ns with AES-NI), no allocation.
// Counters never repeat within 2^64 packets, so neither do IVs.
type ivGen struct {
	block  cipher.Block
	prefix [8]byte
	ctr    atomic.Uint64
}

func newIVGen() (*ivGen, error) {
	var key [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(key[:])
	clear(key[:])
	if err != nil {
		return nil, err
	}
	g := &ivGen{block: b}
	if _, err := rand.Read(g.prefix[:]); err != nil {
		return nil, err
	}
	return g, nil
}

// fill writes the next IV into iv (at most 16 bytes) using tmp, which must
// be heap memory so that the interface call does not make it escape.
func (g *ivGen) fill(iv []byte, tmp *[16]byte) {
	copy(tmp[:8], g.prefix[:])
	binary.BigEndian.PutUint64(tmp[8:], g.ctr.Add(1))
	g.block.Encrypt(tmp[:], tmp[:])
	copy(iv, tmp[:])
}
