package main

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/ipsecstack/ipsecstack/xfrm/esp"
)

type aeadCase struct {
	name   string
	linux  string
	keyLen int // without the 4-byte salt
	raw    func(key []byte) cipher.AEAD
}

var aeadCases = []aeadCase{
	{"aes-gcm-128", "rfc4106(gcm(aes))", 16, func(k []byte) cipher.AEAD {
		b, _ := aes.NewCipher(k)
		a, _ := cipher.NewGCM(b)
		return a
	}},
	{"aes-gcm-256", "rfc4106(gcm(aes))", 32, func(k []byte) cipher.AEAD {
		b, _ := aes.NewCipher(k)
		a, _ := cipher.NewGCM(b)
		return a
	}},
	{"chacha20-poly1305", "rfc7539esp(chacha20,poly1305)", 32, func(k []byte) cipher.AEAD {
		a, _ := chacha20poly1305.New(k)
		return a
	}},
}

// BenchmarkTransform runs, in each iteration, one ESP Seal+Open through
// the SA transform and one raw AEAD Seal+Open of the same plaintext on the
// same kind of buffer, timing each, and reports both and their ratio
// (raw/esp: 1.0 means the transform costs nothing beyond the cipher).
func BenchmarkTransform(b *testing.B) {
	for _, c := range aeadCases {
		for _, size := range []int{64, 1400} {
			b.Run(fmt.Sprintf("%s/%d", c.name, size), func(b *testing.B) {
				key := make([]byte, c.keyLen+4)
				for i := range key {
					key[i] = byte(i)
				}
				tr, err := esp.New(c.linux, key, 0, "", nil, "", nil, 0)
				if err != nil {
					b.Fatal(err)
				}
				raw := c.raw(key[:c.keyLen])
				buf := make([]byte, tr.SealedLen(size))
				off := esp.HeaderLen + tr.IVLen()
				// The raw baseline: same plaintext (payload+trailer),
				// nonce and AAD prepared once.
				plain := make([]byte, tr.SealedLen(size)-off-tr.ICVLen())
				rawBuf := make([]byte, len(plain), len(plain)+16)
				nonce := make([]byte, raw.NonceSize())
				aad := make([]byte, 8)

				espOnce := func(seq uint64) {
					out := tr.Seal(buf, 0x1001, seq, false, buf[off:off+size], 4)
					if _, _, err := tr.Open(out, seq, false); err != nil {
						b.Fatal(err)
					}
				}
				rawOnce := func() {
					ct := raw.Seal(rawBuf[:0], nonce, rawBuf[:len(plain)], aad)
					if _, err := raw.Open(ct[:0], nonce, ct, aad); err != nil {
						b.Fatal(err)
					}
				}
				espOnce(1)
				rawOnce()
				allocs := testing.AllocsPerRun(100, func() { espOnce(2) })
				b.SetBytes(int64(size))
				b.ResetTimer()
				var tEsp, tRaw time.Duration
				const batch = 64
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
					for j := 0; j < batch; j++ {
						espOnce(uint64(i*batch + j + 3))
					}
					t1 := time.Now()
					for j := 0; j < batch; j++ {
						rawOnce()
					}
					t2 := time.Now()
					tEsp += t1.Sub(t0)
					tRaw += t2.Sub(t1)
				}
				n := float64(b.N * batch)
				b.ReportMetric(float64(tEsp.Nanoseconds())/n, "esp-ns/pkt")
				b.ReportMetric(float64(tRaw.Nanoseconds())/n, "raw-ns/pkt")
				b.ReportMetric(float64(tRaw)/float64(tEsp), "raw/esp")
				b.ReportMetric(allocs, "allocs/pkt")
			})
		}
	}
}
