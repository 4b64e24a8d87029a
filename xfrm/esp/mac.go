package esp

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"
)

// MAC is a keyed integrity algorithm of the table (HMAC-MD5/SHA1/SHA2,
// AES-XCBC-MAC, AES-CMAC) truncated to its ICV length. ESP's cipher+MAC
// engine and AH (xfrm/ah) share it. Safe for concurrent use: keyed states
// are pooled, so computing an ICV allocates nothing.
type MAC struct {
	info   *algorithm
	key    []byte
	icvLen int
	name   string
	pool   sync.Pool // *macState
	// err records a failure to key a state (cannot happen after NewMAC
	// validated the key, but a pool New cannot return an error).
	err error
}

type macState struct {
	h   hash.Hash
	sum [64]byte
	hi  [4]byte
}

// NewMAC builds the integrity algorithm name (Linux or setkey name) with
// key, truncated to icvBits (0: the algorithm's default).
func NewMAC(name string, key []byte, icvBits int) (*MAC, error) {
	a, icvLen, err := lookupKeyed(KindIntegrity, name, icvBits, key)
	if err != nil {
		return nil, err
	}
	return newMAC(a, bytes.Clone(key), icvLen)
}

func newMAC(a *algorithm, key []byte, icvLen int) (*MAC, error) {
	m := &MAC{info: a, key: key, icvLen: icvLen, name: fmt.Sprintf("%s/%d", a.LinuxName, icvLen*8)}
	// Key one state now: it reports key errors and primes the pool.
	h, err := a.newMAC(key)
	if err != nil {
		return nil, fmt.Errorf("esp: %s: %v", a.LinuxName, err)
	}
	m.pool.New = func() any {
		h, err := m.info.newMAC(m.key)
		if err != nil {
			return nil
		}
		return &macState{h: h}
	}
	m.pool.Put(&macState{h: h})
	return m, nil
}

// ICVLen is the length of the (truncated) ICV in bytes.
func (m *MAC) ICVLen() int { return m.icvLen }

// String names the algorithm and ICV length, e.g. "hmac(sha256)/128".
func (m *MAC) String() string { return m.name }

// Info describes the algorithm.
func (m *MAC) Info() AlgInfo { i := m.info.AlgInfo; i.ICVLen = m.icvLen; return i }

func (m *MAC) get() *macState {
	s, _ := m.pool.Get().(*macState)
	return s
}

// sum computes the untruncated MAC of parts (and, with esn, of the high 32
// bits of seq appended, RFC 4303 §2.2.1 / RFC 4302 §2.5.1) into s.sum.
func (m *MAC) sum(s *macState, seq uint64, esn bool, parts ...[]byte) []byte {
	s.h.Reset()
	for _, p := range parts {
		s.h.Write(p)
	}
	if esn {
		binary.BigEndian.PutUint32(s.hi[:], uint32(seq>>32))
		s.h.Write(s.hi[:])
	}
	return s.h.Sum(s.sum[:0])[:m.icvLen]
}

// Compute writes the ICV of the concatenation of parts (followed by the
// high half of seq when esn) into icv[:ICVLen()]. It does nothing after Zero.
func (m *MAC) Compute(icv []byte, seq uint64, esn bool, parts ...[]byte) {
	s := m.get()
	if s == nil {
		return
	}
	copy(icv[:m.icvLen], m.sum(s, seq, esn, parts...))
	m.pool.Put(s)
}

// Verify reports, in constant time, whether icv is the ICV of parts.
func (m *MAC) Verify(icv []byte, seq uint64, esn bool, parts ...[]byte) bool {
	s := m.get()
	if s == nil {
		return false
	}
	ok := len(icv) == m.icvLen && subtle.ConstantTimeCompare(m.sum(s, seq, esn, parts...), icv) == 1
	m.pool.Put(s)
	return ok
}

// Zero wipes the key; Compute and Verify fail afterwards. Pooled states
// hold key-derived material that is left to the GC.
func (m *MAC) Zero() {
	clear(m.key)
	m.pool = sync.Pool{}
}
