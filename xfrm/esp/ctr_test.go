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
