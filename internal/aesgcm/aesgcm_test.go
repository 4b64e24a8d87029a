package aesgcm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"testing"
)

// stdGCM is the oracle: Go's own AES-GCM, which shares no code with this
// package.
func stdGCM(t testing.TB, key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func skipUnsupported(t testing.TB) {
	if !Supported() {
		t.Skip("aesgcm: this CPU lacks VAES/AVX-512; the generic GCM serves instead")
	}
}

// TestKeySchedule checks the generated S-box and the key expansion through
// the first block: E_K(0) against crypto/aes for every key size.
func TestKeySchedule(t *testing.T) {
	skipUnsupported(t)
	if sbox[0x00] != 0x63 || sbox[0x01] != 0x7c || sbox[0x53] != 0xed || sbox[0xff] != 0x16 {
		t.Fatalf("sbox wrong: %x %x %x %x", sbox[0], sbox[1], sbox[0x53], sbox[0xff])
	}
	for _, n := range []int{16, 24, 32} {
		key := make([]byte, n)
		rand.Read(key)
		g, err := New(key, 16)
		if err != nil {
			t.Fatal(err)
		}
		var in, out, want [16]byte
		rand.Read(in[:])
		encryptBlock(&g.rk, g.rounds, &out, &in)
		b, _ := aes.NewCipher(key)
		b.Encrypt(want[:], in[:])
		if out != want {
			t.Errorf("AES-%d: E(%x) = %x, crypto/aes says %x", n*8, in, out, want)
		}
	}
}

// TestAgainstStdlib seals and opens every length up to 1100 bytes (and
// some large ones) with random keys, nonces and AAD, comparing byte for
// byte with crypto/cipher's GCM.
func TestAgainstStdlib(t *testing.T) {
	skipUnsupported(t)
	lens := []int{}
	for n := 0; n <= 1100; n++ {
		lens = append(lens, n)
	}
	lens = append(lens, 1400, 1438, 4096, 9000, 65000, 65535)
	for _, keyLen := range []int{16, 24, 32} {
		key := make([]byte, keyLen)
		rand.Read(key)
		g, err := New(key, 16)
		if err != nil {
			t.Fatal(err)
		}
		ref := stdGCM(t, key)
		for _, n := range lens {
			nonce := make([]byte, 12)
			rand.Read(nonce)
			pt := make([]byte, n)
			rand.Read(pt)
			aad := make([]byte, (n*37)%600) // up to 37 blocks: every GHASH path
			rand.Read(aad)
			want := ref.Seal(nil, nonce, pt, aad)
			got := g.Seal(nil, nonce, pt, aad)
			if !bytes.Equal(got, want) {
				t.Fatalf("AES-%d len %d aad %d: Seal differs from crypto/cipher", keyLen*8, n, len(aad))
			}
			back, err := g.Open(got[:0], nonce, got, aad)
			if err != nil || !bytes.Equal(back, pt) {
				t.Fatalf("AES-%d len %d: Open(Seal) = %v", keyLen*8, n, err)
			}
		}
	}
}

// TestZero checks that Zero wipes the key schedule and the hash key table.
func TestZero(t *testing.T) {
	skipUnsupported(t)
	g, err := New(bytes.Repeat([]byte{7}, 16), 16)
	if err != nil {
		t.Fatal(err)
	}
	if g.Zeroed() {
		t.Fatal("a fresh key schedule reads as zeroed")
	}
	g.Zero()
	if !g.Zeroed() {
		t.Fatal("key schedule or hash key table survives Zero")
	}
}

// TestCounterWrap starts the 32-bit block counter just below 2^32: inc32
// wraps within the last four bytes (SP 800-38D §6.2), never carrying into
// the nonce.
func TestCounterWrap(t *testing.T) {
	skipUnsupported(t)
	key := make([]byte, 16)
	rand.Read(key)
	g, _ := New(key, 16)
	b, _ := aes.NewCipher(key)
	for _, start := range []uint32{0xffffffff - 3, 0xffffffff - 17, 0xffffffff} {
		var ctr [16]byte
		rand.Read(ctr[:12])
		ctr[12], ctr[13], ctr[14], ctr[15] = byte(start>>24), byte(start>>16), byte(start>>8), byte(start)
		src := make([]byte, 512+64+15) // whole chunks and a masked tail
		rand.Read(src)
		got := make([]byte, len(src))
		var acc, tag [16]byte
		lo, hi := binary.LittleEndian.Uint64(ctr[:8]), binary.LittleEndian.Uint64(ctr[8:])
		gcmSeal(&g.rk, g.rounds, &g.htab, &acc, lo, hi, hi, 0, 0, 0, 0, &tag, got, src)
		for i := 0; i*16 < len(src); i++ {
			blk := ctr
			v := start + uint32(i)
			blk[12], blk[13], blk[14], blk[15] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
			var ks [16]byte
			b.Encrypt(ks[:], blk[:])
			for j := 0; j < 16 && 16*i+j < len(src); j++ {
				if got[16*i+j] != src[16*i+j]^ks[j] {
					t.Fatalf("start %#x block %d differs", start, i)
				}
			}
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	skipUnsupported(b)
	for _, n := range []int{64, 1400, 8192, 65536} {
		key := make([]byte, 16)
		nonce := make([]byte, 12)
		aad := make([]byte, 8)
		buf := make([]byte, n, n+16)
		g, _ := New(key, 16)
		ref := stdGCM(b, key)
		b.Run(fmt.Sprintf("ours/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for i := 0; i < b.N; i++ {
				g.Seal(buf[:0], nonce, buf[:n], aad)
			}
		})
		b.Run(fmt.Sprintf("stdlib/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for i := 0; i < b.N; i++ {
				ref.Seal(buf[:0], nonce, buf[:n], aad)
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	skipUnsupported(b)
	for _, n := range []int{1400, 65536} {
		key := make([]byte, 16)
		nonce := make([]byte, 12)
		aad := make([]byte, 8)
		g, _ := New(key, 16)
		ref := stdGCM(b, key)
		sealed := g.Seal(nil, nonce, make([]byte, n), aad)
		buf := make([]byte, len(sealed))
		b.Run(fmt.Sprintf("ours/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for i := 0; i < b.N; i++ {
				copy(buf, sealed)
				if _, err := g.Open(buf[:0], nonce, buf, aad); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("stdlib/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for i := 0; i < b.N; i++ {
				copy(buf, sealed)
				if _, err := ref.Open(buf[:0], nonce, buf, aad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestWords checks SealWords and OpenWords, which take the nonce and a
// short AAD as integers, against crypto/cipher given the same bytes: every
// AAD length 0-16 (ESP's are 8 and 12), payloads across the chunk and
// mask boundaries, tags of 8, 12 and 16 bytes, in place and not. A
// tampered packet must fail and leave zeros, not unverified plaintext.
func TestWords(t *testing.T) {
	skipUnsupported(t)
	key := make([]byte, 16)
	rand.Read(key)
	for _, tagSize := range []int{8, 12, 16} {
		g, err := New(key, tagSize)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := aes.NewCipher(key)
		ref, _ := cipher.NewGCMWithTagSize(b, 16)
		for _, n := range []int{0, 1, 15, 16, 63, 64, 65, 255, 256, 257, 511, 512, 700, 1404, 1438, 4100} {
			for aadLen := 0; aadLen <= 16; aadLen++ {
				var nb [12]byte
				var ab [16]byte
				rand.Read(nb[:])
				rand.Read(ab[:aadLen])
				nonce := Nonce{Hi: binary.BigEndian.Uint64(nb[:8]), Lo: binary.BigEndian.Uint32(nb[8:])}
				aad := AAD{Hi: binary.BigEndian.Uint64(ab[:8]), Lo: binary.BigEndian.Uint64(ab[8:]), Len: aadLen}
				pt := make([]byte, n)
				rand.Read(pt)
				want := ref.Seal(nil, nb[:], pt, ab[:aadLen])
				want = append(want[:n], want[n:n+tagSize]...)
				got := g.SealWords(nil, pt, nonce, aad)
				if !bytes.Equal(got, want) {
					t.Fatalf("tag %d len %d aad %d: SealWords differs from crypto/cipher", tagSize, n, aadLen)
				}
				buf := append(make([]byte, 0, n+tagSize), pt...)
				if inPlace := g.SealWords(buf[:0], buf, nonce, aad); !bytes.Equal(inPlace, want) {
					t.Fatalf("tag %d len %d aad %d: in-place SealWords differs", tagSize, n, aadLen)
				}
				back, err := g.OpenWords(got[:0], got, nonce, aad)
				if err != nil || !bytes.Equal(back, pt) {
					t.Fatalf("tag %d len %d aad %d: OpenWords(SealWords) = %v", tagSize, n, aadLen, err)
				}
				sealed := g.SealWords(nil, pt, nonce, aad)
				sealed[len(sealed)-1] ^= 1
				out := make([]byte, n)
				if _, err := g.OpenWords(out[:0], sealed, nonce, aad); err == nil {
					t.Fatalf("tag %d len %d aad %d: OpenWords accepted a flipped tag bit", tagSize, n, aadLen)
				}
				if !bytes.Equal(out, make([]byte, n)) {
					t.Fatalf("tag %d len %d aad %d: failed OpenWords left plaintext behind", tagSize, n, aadLen)
				}
			}
		}
	}
}
