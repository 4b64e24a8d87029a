package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/ipsecstack/ipsecstack/internal/aesgcm"
	"github.com/ipsecstack/ipsecstack/xfrm/esp"
)

// transformSizes are the payload sizes of the transforms suite.
var transformSizes = []int{64, 512, 1400, 8192}

// tcase is one ESP algorithm combination with its raw primitive.
type tcase struct {
	name     string // e.g. "aes-gcm-16/128"
	aead     *esp.AlgInfo
	enc      *esp.AlgInfo
	auth     *esp.AlgInfo
	keyBytes int // AEAD or cipher key length without salt
	against  string
}

// transformCases lists every algorithm of esp.Algorithms(): each AEAD
// (AES-GCM also with a 256-bit key), each cipher with HMAC-SHA256 and each
// integrity algorithm with AES-CBC-128.
func transformCases() []tcase {
	algs := esp.Algorithms()
	var sha256i, cbc *esp.AlgInfo
	for i := range algs {
		switch algs[i].LinuxName {
		case "hmac(sha256)":
			sha256i = &algs[i]
		case "cbc(aes)":
			cbc = &algs[i]
		}
	}
	var out []tcase
	for i := range algs {
		a := &algs[i]
		n := a.SetkeyNames[0]
		switch a.Kind {
		case esp.KindAEAD:
			out = append(out, tcase{name: fmt.Sprintf("%s/%d", n, a.KeySizes[0]*8), aead: a, keyBytes: a.KeySizes[0], against: "raw AEAD"})
			if n == "aes-gcm-16" {
				out = append(out, tcase{name: n + "/256", aead: a, keyBytes: 32, against: "raw AEAD"})
			}
		case esp.KindEncryption:
			out = append(out, tcase{name: n + "+hmac-sha256", enc: a, auth: sha256i, keyBytes: a.KeySizes[0], against: "raw cipher+HMAC"})
		case esp.KindIntegrity:
			if a == sha256i {
				continue
			}
			out = append(out, tcase{name: "aes-cbc+" + n, enc: cbc, auth: a, keyBytes: 16, against: "raw cipher+MAC"})
		}
	}
	return out
}

func key(n int, seed byte) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = seed + byte(i*7)
	}
	return k
}

func (c tcase) transform() (*esp.Transform, error) {
	if c.aead != nil {
		return esp.New(c.aead.SetkeyNames[0], key(c.keyBytes+c.aead.SaltLen, 1), 0, "", nil, "", nil, 0)
	}
	return esp.New("", nil, 0, c.enc.SetkeyNames[0], key(c.keyBytes+c.enc.SaltLen, 2), c.auth.SetkeyNames[0], key(c.auth.KeySizes[0], 3), 0)
}

// raw is the bare cryptography of one packet on a buffer laid out as ESP's
// ([header][IV][plaintext+trailer][ICV]): off is where the plaintext
// starts, n its length, icv the ICV length.
type raw struct {
	seal, open func(b []byte, off, n int) bool
}

type ivSetter interface{ SetIV([]byte) }

// newRaw prepares the raw primitive once: cipher objects, MAC, nonce.
// CCM, XCBC and CMAC have no primitive in Go's library; their baseline is
// the same AES work done with crypto/cipher (CBC-MAC over the data plus
// CTR for CCM; CBC-MAC for XCBC/CMAC).
func (c tcase) newRaw(icv int) (raw, error) {
	nonce := make([]byte, 12)
	if c.aead != nil {
		k := key(c.keyBytes, 9)
		blk, _ := aes.NewCipher(k)
		switch c.aead.LinuxName {
		case "rfc4106(gcm(aes))", "rfc4543(gcm(aes))":
			var a cipher.AEAD
			var err error
			switch {
			case aesgcm.Supported():
				// The primitive the transform runs on this CPU.
				a, err = aesgcm.New(k, icv)
			case icv < 12:
				// Go's GCM has no tags under 12 bytes: the same work
				// with a 16-byte tag, truncated.
				return truncGCM(blk, nonce, icv), nil
			default:
				a, err = cipher.NewGCMWithTagSize(blk, icv)
			}
			if err != nil {
				return raw{}, err
			}
			if c.aead.LinuxName == "rfc4543(gcm(aes))" {
				return gmacRaw(a, nonce, icv), nil
			}
			if g, ok := a.(*aesgcm.AEAD); ok {
				return wordsRaw(g), nil
			}
			return aeadRaw(a, nonce), nil
		case "rfc7539esp(chacha20,poly1305)":
			a, err := chacha20poly1305.New(key(32, 9))
			if err != nil {
				return raw{}, err
			}
			return aeadRaw(a, nonce), nil
		case "rfc4309(ccm(aes))":
			mac := cbcMAC(blk)
			ctr := cipher.NewCTR(blk, make([]byte, 16))
			return raw{
				seal: func(b []byte, off, n int) bool {
					mac(b[:off+n]) // B0, AAD and payload blocks
					ctr.XORKeyStream(b[off:off+n], b[off:off+n])
					return true
				},
				open: func(b []byte, off, n int) bool {
					ctr.XORKeyStream(b[off:off+n], b[off:off+n])
					mac(b[:off+n])
					return true
				},
			}, nil
		}
		return raw{}, fmt.Errorf("no raw primitive for %s", c.aead.LinuxName)
	}
	// Cipher.
	var blk cipher.Block
	ctr := false
	switch c.enc.LinuxName {
	case "cbc(aes)":
		blk, _ = aes.NewCipher(key(c.keyBytes, 9))
	case "rfc3686(ctr(aes))":
		blk, _ = aes.NewCipher(key(c.keyBytes, 9))
		ctr = true
	case "cbc(des3_ede)":
		blk, _ = des.NewTripleDESCipher(key(24, 9))
	case "cbc(des)":
		blk, _ = des.NewCipher(key(8, 9))
	case "ecb(cipher_null)":
	default:
		return raw{}, fmt.Errorf("no raw primitive for %s", c.enc.LinuxName)
	}
	var encrypt, decrypt func(iv, p []byte)
	switch {
	case ctr:
		// One long keystream: the cipher's cost without per-packet setup.
		s := cipher.NewCTR(blk, make([]byte, 16))
		encrypt = func(_, p []byte) { s.XORKeyStream(p, p) }
		decrypt = encrypt
	case blk != nil:
		zero := make([]byte, blk.BlockSize())
		e := cipher.NewCBCEncrypter(blk, zero)
		d := cipher.NewCBCDecrypter(blk, zero)
		encrypt = func(iv, p []byte) { e.(ivSetter).SetIV(iv); e.CryptBlocks(p, p) }
		decrypt = func(iv, p []byte) { d.(ivSetter).SetIV(iv); d.CryptBlocks(p, p) }
	default:
		encrypt = func(_, _ []byte) {}
		decrypt = encrypt
	}
	// MAC.
	var mac func(b []byte) []byte
	sum := make([]byte, 0, 64)
	hm := func(h func() hash.Hash, n int) {
		m := hmac.New(h, key(n, 9))
		mac = func(b []byte) []byte { m.Reset(); m.Write(b); return m.Sum(sum[:0]) }
	}
	switch c.auth.LinuxName {
	case "hmac(sha1)":
		hm(sha1.New, 20)
	case "hmac(sha256)":
		hm(sha256.New, 32)
	case "hmac(sha384)":
		hm(sha512.New384, 48)
	case "hmac(sha512)":
		hm(sha512.New, 64)
	case "hmac(md5)":
		hm(md5.New, 16)
	case "xcbc(aes)", "cmac(aes)":
		b, _ := aes.NewCipher(key(16, 9))
		m := cbcMAC(b)
		mac = func(p []byte) []byte { return m(p) }
	default:
		return raw{}, fmt.Errorf("no raw primitive for %s", c.auth.LinuxName)
	}
	ivLen := c.enc.IVLen
	return raw{
		seal: func(b []byte, off, n int) bool {
			encrypt(b[off-ivLen:off], b[off:off+n])
			copy(b[off+n:], mac(b[:off+n])[:icv])
			return true
		},
		open: func(b []byte, off, n int) bool {
			ok := hmac.Equal(mac(b[:off+n])[:icv], b[off+n:off+n+icv])
			decrypt(b[off-ivLen:off], b[off:off+n])
			return ok
		},
	}, nil
}

// gmacRaw is RFC 4543's GMAC: the tag of everything up to the ICV as AAD.
func gmacRaw(a cipher.AEAD, nonce []byte, icv int) raw {
	tag := make([]byte, 0, 16)
	return raw{
		seal: func(b []byte, off, n int) bool {
			copy(b[off+n:], a.Seal(tag[:0], nonce, nil, b[:off+n]))
			return true
		},
		open: func(b []byte, off, n int) bool {
			_, err := a.Open(tag[:0], nonce, b[off+n:off+n+icv], b[:off+n])
			return err == nil
		},
	}
}

func aeadRaw(a cipher.AEAD, nonce []byte) raw {
	return raw{
		seal: func(b []byte, off, n int) bool {
			a.Seal(b[off:off], nonce, b[off:off+n], b[:8])
			return true
		},
		open: func(b []byte, off, n int) bool {
			_, err := a.Open(b[off:off], nonce, b[off:off+n+a.Overhead()], b[:8])
			return err == nil
		},
	}
}

// wordsRaw is our AES-GCM called as ESP calls it: the nonce and the
// 8-byte AAD handed over as integers (aesgcm.SealWords).
func wordsRaw(g *aesgcm.AEAD) raw {
	return raw{
		seal: func(b []byte, off, n int) bool {
			g.SealWords(b[off:off], b[off:off+n], aesgcm.Nonce{}, aesgcm.AAD{Hi: binary.BigEndian.Uint64(b[:8]), Len: 8})
			return true
		},
		open: func(b []byte, off, n int) bool {
			_, err := g.OpenWords(b[off:off], b[off:off+n+g.Overhead()], aesgcm.Nonce{}, aesgcm.AAD{Hi: binary.BigEndian.Uint64(b[:8]), Len: 8})
			return err == nil
		},
	}
}

// truncGCM is AES-GCM with a 16-byte tag cut to icv bytes; open runs the
// same cipher and GHASH work (a seal into scratch) and compares the tag.
func truncGCM(blk cipher.Block, nonce []byte, icv int) raw {
	a, _ := cipher.NewGCM(blk)
	scratch := make([]byte, 0, 9000)
	return raw{
		seal: func(b []byte, off, n int) bool {
			out := a.Seal(scratch[:0], nonce, b[off:off+n], b[:8])
			copy(b[off:], out[:n+icv])
			return true
		},
		open: func(b []byte, off, n int) bool {
			out := a.Seal(scratch[:0], nonce, b[off:off+n], b[:8])
			copy(b[off:off+n], out[:n])
			return hmac.Equal(out[n:n+icv], out[n:n+icv])
		},
	}
}

// cbcMAC returns the AES CBC-MAC of its input (zero-padded), the block
// cipher work XCBC, CMAC and CCM's MAC do.
func cbcMAC(b cipher.Block) func([]byte) []byte {
	var st, blk [16]byte
	return func(p []byte) []byte {
		st = [16]byte{}
		for len(p) > 0 {
			k := copy(blk[:], p)
			clear(blk[k:])
			for i := range st {
				st[i] ^= blk[i]
			}
			b.Encrypt(st[:], st[:])
			p = p[k:]
		}
		return st[:]
	}
}

// interleave times a and b in alternating batches until budget has passed
// and returns the mean ns per call of each.
func interleave(budget time.Duration, a, b func()) (nsA, nsB float64) {
	// Batch size: about 100 µs of a.
	t0 := time.Now()
	a()
	b()
	est := time.Since(t0)
	batch := int(100*time.Microsecond/max(est, time.Nanosecond)) + 1
	var tA, tB time.Duration
	calls := 0
	end := time.Now().Add(budget)
	for time.Now().Before(end) || calls == 0 {
		t0 := time.Now()
		for i := 0; i < batch; i++ {
			a()
		}
		t1 := time.Now()
		for i := 0; i < batch; i++ {
			b()
		}
		tB += time.Since(t1)
		tA += t1.Sub(t0)
		calls += batch
	}
	return float64(tA.Nanoseconds()) / float64(calls), float64(tB.Nanoseconds()) / float64(calls)
}

func runTransforms(o opts, r *Results) error {
	budget := 120 * time.Millisecond
	if o.quick {
		budget = 25 * time.Millisecond
	}
	for _, c := range transformCases() {
		tr, err := c.transform()
		if err != nil {
			return fmt.Errorf("%s: %v", c.name, err)
		}
		rw, err := c.newRaw(tr.ICVLen())
		if err != nil {
			return fmt.Errorf("%s: %v", c.name, err)
		}
		for _, size := range transformSizes {
			total := tr.SealedLen(size)
			off := esp.HeaderLen + tr.IVLen()
			n := total - off - tr.ICVLen()
			buf := make([]byte, total)
			rbuf := make([]byte, total)
			for i := range buf {
				buf[i] = byte(i)
			}
			copy(rbuf, buf)
			var seq uint64 = 1
			sealESP := func() {
				seq++
				tr.Seal(buf, 0x1001, seq, false, buf[off:off+size], 4)
			}
			sealRaw := func() { rw.seal(rbuf, off, n) }
			sealed := append([]byte(nil), tr.Seal(make([]byte, total), 0x1001, 7, false, make([]byte, size), 4)...)
			rsealed := make([]byte, total)
			rw.seal(rsealed, off, n)
			rsealed = append([]byte(nil), rsealed...)
			work, rwork := make([]byte, total), make([]byte, total)
			openESP := func() {
				copy(work, sealed)
				if _, _, err := tr.Open(work, 7, false); err != nil {
					panic(fmt.Sprintf("%s: open: %v", c.name, err))
				}
			}
			openRaw := func() {
				copy(rwork, rsealed)
				if !rw.open(rwork, off, n) {
					panic(fmt.Sprintf("%s: raw open failed", c.name))
				}
			}
			openESP()
			openRaw()
			for _, op := range []struct {
				name     string
				esp, raw func()
			}{{"encrypt", sealESP, sealRaw}, {"decrypt", openESP, openRaw}} {
				allocs := testing.AllocsPerRun(50, op.esp)
				e, b := interleave(budget, op.esp, op.raw)
				r.time("transforms", fmt.Sprintf("%s %d B", c.name, size), op.name, "ns/pkt", e, b,
					c.against, fmt.Sprintf("%.0f allocs/pkt", allocs))
			}
		}
	}
	return runGCMCiphers(budget, r)
}

// runGCMCiphers times the AES-GCM-128 that ESP runs (internal/aesgcm,
// VAES and VPCLMULQDQ on 512-bit registers) against Go's crypto/cipher on
// the same CPU, sealing and opening in place with an 8-byte AAD.
func runGCMCiphers(budget time.Duration, r *Results) error {
	if !aesgcm.Supported() {
		return nil
	}
	k := key(16, 9)
	ours, err := aesgcm.New(k, 16)
	if err != nil {
		return err
	}
	blk, _ := aes.NewCipher(k)
	std, _ := cipher.NewGCM(blk)
	nonce, aad := make([]byte, 12), make([]byte, 8)
	for _, size := range transformSizes {
		b1, b2 := make([]byte, size+16), make([]byte, size+16)
		sealed := ours.Seal(nil, nonce, make([]byte, size), aad)
		seal := func(a cipher.AEAD, b []byte) func() {
			return func() { a.Seal(b[:0], nonce, b[:size], aad) }
		}
		open := func(a cipher.AEAD, b []byte) func() {
			return func() {
				copy(b, sealed)
				if _, err := a.Open(b[:0], nonce, b, aad); err != nil {
					panic("aes-gcm open: " + err.Error())
				}
			}
		}
		for _, op := range []struct {
			name      string
			ours, std func()
		}{{"seal", seal(ours, b1), seal(std, b2)}, {"open", open(ours, b1), open(std, b2)}} {
			allocs := testing.AllocsPerRun(50, op.ours)
			o, s := interleave(budget, op.ours, op.std)
			r.time("transforms", fmt.Sprintf("AES-GCM-128 cipher %d B", size), op.name, "ns/pkt", o, s,
				"crypto/cipher GCM", fmt.Sprintf("VAES/VPCLMULQDQ-512; %.0f allocs/pkt", allocs))
		}
	}
	return nil
}
