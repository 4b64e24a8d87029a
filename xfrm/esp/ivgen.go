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

// newIVSalt draws the per-transform salt of seqIV from crypto/rand.
func newIVSalt() (uint64, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b[:]), nil
}

// seqIV is the explicit IV of the counter-based modes (the AEADs of RFC
// 4106, 4309, 4543, 7634 and AES-CTR of RFC 3686), which need an IV that
// never repeats under one key but need not be unpredictable. It is
// Linux's seqiv: the 64-bit sequence number XOR a random salt drawn once
// per transform. The sequence number alone would repeat the (key, nonce)
// pair whenever the counter restarts under the same key (a daemon
// restarted with static keys, an SA deleted and added again); for GCM
// that gives away the authentication key. With a fresh salt per SA two
// runs collide only if their salts happen to put two counter ranges on
// one value (about n*m/2^64 for n and m packets). Within one transform
// distinct sequence numbers give distinct IVs, since XOR with a constant
// is a bijection; the SA never moves its counter backwards (SA.SetOutSeq).
// The IV travels in the packet, so the peer needs no change.
func seqIV(seq, salt uint64) uint64 { return seq ^ salt }
