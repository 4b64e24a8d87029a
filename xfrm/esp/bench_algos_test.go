package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"hash"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// rawPrimitive is the bare cryptography a transform runs for one packet:
// the cipher over the ESP plaintext and the MAC over header, IV and
// ciphertext (or the AEAD), prepared once, with no ESP framing. The ratio
// transform/raw is ESP's own cost.
type rawPrimitive func(buf []byte, ptOff, ptLen int)

type algoBench struct {
	name string
	cfg  config
	raw  func() rawPrimitive
}

func rawAEAD(a cipher.AEAD, nonceLen int) func() rawPrimitive {
	return func() rawPrimitive {
		nonce := make([]byte, nonceLen)
		return func(buf []byte, off, n int) {
			a.Seal(buf[off:off], nonce, buf[off:off+n], buf[:8])
		}
	}
}

func rawGMAC(a cipher.AEAD) func() rawPrimitive {
	return func() rawPrimitive {
		nonce := make([]byte, 12)
		tag := make([]byte, 0, 16)
		return func(buf []byte, off, n int) {
			a.Seal(tag, nonce, nil, buf[:off+n])
		}
	}
}

func rawCBCMAC(block cipher.Block, ctr bool, mac hash.Hash) func() rawPrimitive {
	return func() rawPrimitive {
		sum := make([]byte, 0, 64)
		var enc cipher.BlockMode
		if block != nil && !ctr {
			enc = cipher.NewCBCEncrypter(block, make([]byte, block.BlockSize()))
		}
		iv := make([]byte, 16)
		return func(buf []byte, off, n int) {
			pt := buf[off : off+n]
			switch {
			case ctr:
				cipher.NewCTR(block, iv).XORKeyStream(pt, pt)
			case enc != nil:
				enc.CryptBlocks(pt, pt)
			}
			if mac != nil {
				mac.Reset()
				mac.Write(buf[:off+n])
				mac.Sum(sum[:0])
			}
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

var algoBenches = func() []algoBench {
	aes128 := must(aes.NewCipher(make([]byte, 16)))
	gcm := must(cipher.NewGCM(aes128))
	ccm16 := must(newCCM(aes128, 11, 16))
	ccm8 := must(newCCM(aes128, 11, 8))
	chacha := must(chacha20poly1305.New(make([]byte, 32)))
	tdes := must(des.NewTripleDESCipher(make([]byte, 24)))
	sdes := must(des.NewCipher(make([]byte, 8)))
	hm := func(h func() hash.Hash, n int) hash.Hash { return hmac.New(h, make([]byte, n)) }
	return []algoBench{
		{"aes-gcm-16", config{aead: "aes-gcm-16", aeadKey: 20}, rawAEAD(gcm, 12)},
		{"aes-gcm-8", config{aead: "aes-gcm-8", aeadKey: 20}, rawAEAD(gcm, 12)},
		{"aes-ccm-16", config{aead: "aes-ccm-16", aeadKey: 19}, rawAEAD(ccm16, 11)},
		{"aes-ccm-8", config{aead: "aes-ccm-8", aeadKey: 19}, rawAEAD(ccm8, 11)},
		{"aes-gmac", config{aead: "null-aes-gmac", aeadKey: 20}, rawGMAC(gcm)},
		{"chacha20-poly1305", config{aead: "chacha20-poly1305", aeadKey: 36}, rawAEAD(chacha, 12)},
		{"aes-cbc+hmac-sha1", config{enc: "aes-cbc", encKey: 16, auth: "hmac-sha1", authKey: 20}, rawCBCMAC(aes128, false, hm(sha1.New, 20))},
		{"aes-cbc+hmac-sha256", config{enc: "aes-cbc", encKey: 16, auth: "hmac-sha256", authKey: 32}, rawCBCMAC(aes128, false, hm(sha256.New, 32))},
		{"aes-cbc+aes-cmac", config{enc: "aes-cbc", encKey: 16, auth: "aes-cmac", authKey: 16}, rawCBCMAC(aes128, false, must(newCMAC(make([]byte, 16))))},
		{"aes-ctr+hmac-sha1", config{enc: "aes-ctr", encKey: 20, auth: "hmac-sha1", authKey: 20}, rawCBCMAC(aes128, true, hm(sha1.New, 20))},
		{"aes-ctr+aes-xcbc", config{enc: "aes-ctr", encKey: 20, auth: "aes-xcbc-mac", authKey: 16}, rawCBCMAC(aes128, true, must(newXCBC(make([]byte, 16))))},
		{"3des-cbc+hmac-md5", config{enc: "3des-cbc", encKey: 24, auth: "hmac-md5", authKey: 16}, rawCBCMAC(tdes, false, hm(md5.New, 16))},
		{"des-cbc+hmac-sha1", config{enc: "des-cbc", encKey: 8, auth: "hmac-sha1", authKey: 20}, rawCBCMAC(sdes, false, hm(sha1.New, 20))},
		{"null+aes-xcbc", config{enc: "null", auth: "aes-xcbc-mac", authKey: 16}, rawCBCMAC(nil, false, must(newXCBC(make([]byte, 16))))},
	}
}()

// BenchmarkAlgorithms measures, per algorithm and payload size, Seal and
// Open of one ESP packet in place (Open includes restoring the sealed
// packet, a copy) and reports the raw primitive's time for the same bytes
// (raw-ns/op, measured first with the timer stopped, so allocations count
// the transform only) and the ratio transform/raw (x-raw).
func BenchmarkAlgorithms(b *testing.B) {
	for _, a := range algoBenches {
		for _, n := range benchSizes {
			for _, op := range []string{"seal", "open"} {
				b.Run(fmt.Sprintf("%s/%d/%s", a.name, n, op), func(b *testing.B) {
					tr := a.cfg.new(b)
					size := tr.SealedLen(n)
					buf := make([]byte, size)
					work := make([]byte, size)
					off := HeaderLen + tr.IVLen()
					ptLen := size - off - tr.ICVLen()
					sealed := append([]byte(nil), tr.Seal(nil, 1, 1, true, make([]byte, n), 4)...)
					raw := a.raw()
					b.StopTimer()
					t0 := time.Now()
					for i := 0; i < b.N; i++ {
						if op == "open" {
							copy(work, sealed)
						}
						raw(work, off, ptLen)
					}
					rawNs := float64(time.Since(t0).Nanoseconds()) / float64(b.N)
					b.SetBytes(int64(n))
					b.ReportAllocs()
					b.ResetTimer()
					b.StartTimer()
					for i := 0; i < b.N; i++ {
						if op == "seal" {
							tr.Seal(buf, 1, uint64(i+1), true, buf[off:off+n], 4)
							continue
						}
						copy(work, sealed)
						if _, _, err := tr.Open(work, 1, true); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
					b.ReportMetric(rawNs, "raw-ns/op")
					b.ReportMetric(ns/rawNs, "x-raw")
				})
			}
		}
	}
}
