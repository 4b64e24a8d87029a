package esp

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"testing"
)

// TestCTRKeystreamFromGCM checks the GCM-keystream counter mode against
// crypto/cipher's own CTR with the RFC 3686 counter block (nonce || IV ||
// 1) for every length from 0 to 300 bytes and a few large ones, and against
// the block-at-a-time path it replaces.
func TestCTRKeystreamFromGCM(t *testing.T) {
	for _, keyLen := range []int{16, 24, 32} {
		key := make([]byte, keyLen+4)
		for i := range key {
			key[i] = byte(i*7 + keyLen)
		}
		ctr, _, err := lookup(KindEncryption, "rfc3686(ctr(aes))", 0)
		if err != nil {
			t.Fatal(err)
		}
		e, err := newCBCEngine(ctr, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		if e.ctrGCM == nil {
			t.Fatal("no GCM keystream for AES")
		}
		blk, _ := aes.NewCipher(key[:keyLen])
		iv := []byte{1, 2, 3, 4, 5, 6, 7, 8}
		sizes := []int{1400, 8192, 65535}
		for n := 0; n <= 300; n++ {
			sizes = append(sizes, n)
		}
		s := e.newScratch().(*cbcScratch)
		for _, n := range sizes {
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(i)
			}
			var cb [16]byte
			copy(cb[:4], key[keyLen:])
			copy(cb[4:12], iv)
			binary.BigEndian.PutUint32(cb[12:], 1)
			want := make([]byte, n)
			cipher.NewCTR(blk, cb[:]).XORKeyStream(want, data)

			got := bytes.Clone(data)
			e.ctrXOR(s, iv, got)
			if !bytes.Equal(got, want) {
				t.Fatalf("AES-%d, %d bytes: GCM keystream differs from CTR", keyLen*8, n)
			}
			slow := bytes.Clone(data)
			e.ctrXORBlocks(s, iv, slow)
			if !bytes.Equal(slow, want) {
				t.Fatalf("AES-%d, %d bytes: block path differs from CTR", keyLen*8, n)
			}
		}
	}
}

// TestCCMFastPaths checks CCM with the GCM keystream and the one-call
// CBC-MAC against the block-at-a-time construction (the one the RFC 3610
// vectors pin down), sealing and opening every length from 0 to 300 bytes
// and a few large ones, with and without AAD.
func TestCCMFastPaths(t *testing.T) {
	blk, _ := aes.NewCipher(bytes.Repeat([]byte{0x42}, 16))
	for _, tag := range []int{8, 12, 16} {
		fast, err := newCCM(blk, 11, tag)
		if err != nil {
			t.Fatal(err)
		}
		slow, _ := newCCM(blk, 11, tag)
		slow.gcm = nil
		slow.scratch.New = func() any { return new(ccmScratch) } // no CBC mode: block at a time
		if fast.gcm == nil {
			t.Fatal("no GCM keystream for CCM with an 11-byte nonce")
		}
		nonce := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
		sizes := []int{1400, 8192}
		for n := 0; n <= 300; n++ {
			sizes = append(sizes, n)
		}
		for _, n := range sizes {
			for _, aad := range [][]byte{nil, []byte("spi+seq!"), bytes.Repeat([]byte{7}, 12)} {
				pt := make([]byte, n)
				for i := range pt {
					pt[i] = byte(i * 3)
				}
				want := slow.Seal(nil, nonce, pt, aad)
				got := fast.Seal(nil, nonce, pt, aad)
				if !bytes.Equal(got, want) {
					t.Fatalf("tag %d, %d bytes, aad %d: fast seal differs", tag, n, len(aad))
				}
				back, err := fast.Open(nil, nonce, want, aad)
				if err != nil || !bytes.Equal(back, pt) {
					t.Fatalf("tag %d, %d bytes: fast open: %v", tag, n, err)
				}
			}
		}
	}
}
