package aesgcm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"fmt"
	"testing"
)

// gcmVector is one AES-GCM known answer: a 12-byte IV and a 16-byte tag.
// All fields are hex.
type gcmVector struct {
	name       string
	key        string
	iv         string
	plaintext  string
	aad        string
	ciphertext string
	tag        string
}

// gcmVectors are the test cases of D. McGrew and J. Viega, "The
// Galois/Counter Mode of Operation (GCM)", Appendix B (the NIST GCM
// submission, gcm-spec.pdf), limited to the ones with a 96-bit IV: cases
// 1-4 (AES-128), 7-10 (AES-192) and 13-16 (AES-256). Cases 5, 6, 11, 12,
// 17 and 18 use 64- and 480-bit IVs, which this package does not take.
//
// The hex was taken from the gcm_tests table of hostap's tests/test-aes.c
// (Jouni Malinen), which quotes gcm-spec.pdf. It was checked against the
// copies of the same cases in Apple CommonCrypto's CCGCMTest.c (1-4),
// Signal's AesGcmCipherTest.java (1-4, 13-16) and several other public
// test suites (7-10). testGCMVectorsStdlib also runs every row through
// crypto/aes + crypto/cipher.NewGCM, so a transcription error fails there
// and not only in this package.
var gcmVectors = []gcmVector{
	{
		name: "McGrew-Viega GCM spec, Test Case 1",
		key:  "00000000000000000000000000000000",
		iv:   "000000000000000000000000",
		tag:  "58e2fccefa7e3061367f1d57a4e7455a",
	},
	{
		name:       "McGrew-Viega GCM spec, Test Case 2",
		key:        "00000000000000000000000000000000",
		iv:         "000000000000000000000000",
		plaintext:  "00000000000000000000000000000000",
		ciphertext: "0388dace60b6a392f328c2b971b2fe78",
		tag:        "ab6e47d42cec13bdf53a67b21257bddf",
	},
	{
		name:       "McGrew-Viega GCM spec, Test Case 3",
		key:        "feffe9928665731c6d6a8f9467308308",
		iv:         "cafebabefacedbaddecaf888",
		plaintext:  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
		ciphertext: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
		tag:        "4d5c2af327cd64a62cf35abd2ba6fab4",
	},
	{
		name:       "McGrew-Viega GCM spec, Test Case 4",
		key:        "feffe9928665731c6d6a8f9467308308",
		iv:         "cafebabefacedbaddecaf888",
		plaintext:  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
		aad:        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
		ciphertext: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
		tag:        "5bc94fbc3221a5db94fae95ae7121a47",
	},
	{
		name: "McGrew-Viega GCM spec, Test Case 7",
		key:  "000000000000000000000000000000000000000000000000",
		iv:   "000000000000000000000000",
		tag:  "cd33b28ac773f74ba00ed1f312572435",
	},
	{
		name:       "McGrew-Viega GCM spec, Test Case 8",
		key:        "000000000000000000000000000000000000000000000000",
		iv:         "000000000000000000000000",
		plaintext:  "00000000000000000000000000000000",
		ciphertext: "98e7247c07f0fe411c267e4384b0f600",
		tag:        "2ff58d80033927ab8ef4d4587514f0fb",
	},
	{
		name:       "McGrew-Viega GCM spec, Test Case 9",
		key:        "feffe9928665731c6d6a8f9467308308feffe9928665731c",
		iv:         "cafebabefacedbaddecaf888",
		plaintext:  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
		ciphertext: "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710acade256",
		tag:        "9924a7c8587336bfb118024db8674a14",
	},
	{
		name:       "McGrew-Viega GCM spec, Test Case 10",
		key:        "feffe9928665731c6d6a8f9467308308feffe9928665731c",
		iv:         "cafebabefacedbaddecaf888",
		plaintext:  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
		aad:        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
		ciphertext: "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710",
		tag:        "2519498e80f1478f37ba55bd6d27618c",
	},
	{
		name: "McGrew-Viega GCM spec, Test Case 13",
		key:  "0000000000000000000000000000000000000000000000000000000000000000",
		iv:   "000000000000000000000000",
		tag:  "530f8afbc74536b9a963b4f1c4cb738b",
	},
	{
		name:       "McGrew-Viega GCM spec, Test Case 14",
		key:        "0000000000000000000000000000000000000000000000000000000000000000",
		iv:         "000000000000000000000000",
		plaintext:  "00000000000000000000000000000000",
		ciphertext: "cea7403d4d606b6e074ec5d3baf39d18",
		tag:        "d0d1c8a799996bf0265b98b5d48ab919",
	},
	{
		name:       "McGrew-Viega GCM spec, Test Case 15",
		key:        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
		iv:         "cafebabefacedbaddecaf888",
		plaintext:  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
		ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
		tag:        "b094dac5d93471bdec1a502270e3cc6c",
	},
	{
		name:       "McGrew-Viega GCM spec, Test Case 16",
		key:        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
		iv:         "cafebabefacedbaddecaf888",
		plaintext:  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
		aad:        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
		ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
		tag:        "76fc6ece0f4e1768cddf8853bb2d551b",
	},
}

// truncatedTagVector is a row of gcmVectors sealed with a shorter tag.
// Per NIST SP 800-38D §5.2.1.2 the tag of length t is MSB_t of the full
// one, so tag must equal the first tagSize bytes of base's tag (the test
// checks this too).
type truncatedTagVector struct {
	base    string // name of the gcmVectors row
	tagSize int
	tag     string
}

// truncatedTagVectors use the cases with both plaintext and AAD, one per
// key size, at the tag sizes RFC 4106 allows besides 16 (ICV 8 and 12).
var truncatedTagVectors = []truncatedTagVector{
	{base: "McGrew-Viega GCM spec, Test Case 4", tagSize: 8, tag: "5bc94fbc3221a5db"},
	{base: "McGrew-Viega GCM spec, Test Case 4", tagSize: 12, tag: "5bc94fbc3221a5db94fae95a"},
	{base: "McGrew-Viega GCM spec, Test Case 10", tagSize: 8, tag: "2519498e80f1478f"},
	{base: "McGrew-Viega GCM spec, Test Case 10", tagSize: 12, tag: "2519498e80f1478f37ba55bd"},
	{base: "McGrew-Viega GCM spec, Test Case 16", tagSize: 8, tag: "76fc6ece0f4e1768"},
	{base: "McGrew-Viega GCM spec, Test Case 16", tagSize: 12, tag: "76fc6ece0f4e1768cddf8853"},
}

func vecHex(t testing.TB, field, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in %s: %v", field, err)
	}
	return b
}

type decodedVector struct {
	key, iv, plaintext, aad, ciphertext, tag []byte
}

func (v gcmVector) decode(t testing.TB) decodedVector {
	t.Helper()
	d := decodedVector{
		key:        vecHex(t, "key", v.key),
		iv:         vecHex(t, "iv", v.iv),
		plaintext:  vecHex(t, "plaintext", v.plaintext),
		aad:        vecHex(t, "aad", v.aad),
		ciphertext: vecHex(t, "ciphertext", v.ciphertext),
		tag:        vecHex(t, "tag", v.tag),
	}
	if len(d.iv) != 12 {
		t.Fatalf("iv is %d bytes, want 12", len(d.iv))
	}
	if len(d.tag) != 16 {
		t.Fatalf("tag is %d bytes, want 16", len(d.tag))
	}
	if len(d.ciphertext) != len(d.plaintext) {
		t.Fatalf("ciphertext is %d bytes, plaintext %d", len(d.ciphertext), len(d.plaintext))
	}
	return d
}

func findGCMVector(t testing.TB, name string) gcmVector {
	t.Helper()
	for _, v := range gcmVectors {
		if v.name == name {
			return v
		}
	}
	t.Fatalf("no gcmVectors row named %q", name)
	return gcmVector{}
}

func vecConcat(a, b []byte) []byte {
	return append(append([]byte(nil), a...), b...)
}

func skipUnlessSupported(t *testing.T) {
	t.Helper()
	if !Supported() {
		t.Skip("aesgcm: this CPU lacks VAES/AVX-512; the generic GCM serves instead")
	}
}

// checkAEAD checks that a seals (key, iv, plaintext, aad) to want
// (ciphertext || tag), opens want back to plaintext, and refuses want with
// one bit flipped in the tag, in the ciphertext, or in the AAD.
func checkAEAD(t *testing.T, a cipher.AEAD, d decodedVector, want []byte) {
	t.Helper()
	tagSize := len(want) - len(d.plaintext)
	if got := a.NonceSize(); got != 12 {
		t.Errorf("NonceSize() = %d, want 12", got)
	}
	if got := a.Overhead(); got != tagSize {
		t.Errorf("Overhead() = %d, want %d", got, tagSize)
	}

	if got := a.Seal(nil, d.iv, d.plaintext, d.aad); !bytes.Equal(got, want) {
		t.Errorf("Seal = %x, want %x", got, want)
	}
	// Seal appends to dst.
	prefix := []byte("prefix")
	if got := a.Seal(append([]byte(nil), prefix...), d.iv, d.plaintext, d.aad); !bytes.Equal(got, vecConcat(prefix, want)) {
		t.Errorf("Seal with dst prefix = %x, want %x", got, vecConcat(prefix, want))
	}
	// Seal in place (dst = plaintext[:0], room for the tag).
	buf := make([]byte, len(d.plaintext), len(want))
	copy(buf, d.plaintext)
	if got := a.Seal(buf[:0], d.iv, buf, d.aad); !bytes.Equal(got, want) {
		t.Errorf("in-place Seal = %x, want %x", got, want)
	}

	got, err := a.Open(nil, d.iv, want, d.aad)
	if err != nil {
		t.Errorf("Open: %v", err)
	} else if !bytes.Equal(got, d.plaintext) {
		t.Errorf("Open = %x, want %x", got, d.plaintext)
	}
	// Open in place (dst = ciphertext[:0]).
	buf = append([]byte(nil), want...)
	got, err = a.Open(buf[:0], d.iv, buf, d.aad)
	if err != nil {
		t.Errorf("in-place Open: %v", err)
	} else if !bytes.Equal(got, d.plaintext) {
		t.Errorf("in-place Open = %x, want %x", got, d.plaintext)
	}

	// The tag's last bit: a truncated-tag check that compares too few
	// bytes would miss it.
	bad := append([]byte(nil), want...)
	bad[len(bad)-1] ^= 0x01
	if _, err := a.Open(nil, d.iv, bad, d.aad); err == nil {
		t.Errorf("Open accepted a flipped bit in the last tag byte")
	}
	bad = append([]byte(nil), want...)
	bad[len(d.plaintext)] ^= 0x80
	if _, err := a.Open(nil, d.iv, bad, d.aad); err == nil {
		t.Errorf("Open accepted a flipped bit in the first tag byte")
	}
	if len(d.plaintext) > 0 {
		bad = append([]byte(nil), want...)
		bad[len(d.plaintext)-1] ^= 0x01
		if _, err := a.Open(nil, d.iv, bad, d.aad); err == nil {
			t.Errorf("Open accepted a flipped bit in the ciphertext")
		}
	}
	if len(d.aad) > 0 {
		badAAD := append([]byte(nil), d.aad...)
		badAAD[0] ^= 0x01
		if _, err := a.Open(nil, d.iv, want, badAAD); err == nil {
			t.Errorf("Open accepted a flipped bit in the AAD")
		}
	}
	if _, err := a.Open(nil, d.iv, want[:len(want)-1], d.aad); err == nil {
		t.Errorf("Open accepted a message one byte short")
	}
}

func stdlibGCM(t *testing.T, key []byte, tagSize int) cipher.AEAD {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatalf("aes.NewCipher: %v", err)
	}
	var a cipher.AEAD
	if tagSize == 16 {
		a, err = cipher.NewGCM(block)
	} else {
		a, err = cipher.NewGCMWithTagSize(block, tagSize)
	}
	if err != nil {
		t.Fatalf("cipher.NewGCM: %v", err)
	}
	return a
}

// testGCMVectorsStdlib proves the table was transcribed right: the
// standard library must agree with every row.
func testGCMVectorsStdlib(t *testing.T) {
	for _, v := range gcmVectors {
		t.Run(v.name, func(t *testing.T) {
			d := v.decode(t)
			checkAEAD(t, stdlibGCM(t, d.key, 16), d, vecConcat(d.ciphertext, d.tag))
		})
	}
}

func TestGCMVectors(t *testing.T) {
	t.Run("stdlib", testGCMVectorsStdlib)
	t.Run("aesgcm", func(t *testing.T) {
		skipUnlessSupported(t)
		for _, v := range gcmVectors {
			t.Run(v.name, func(t *testing.T) {
				d := v.decode(t)
				a, err := New(d.key, 16)
				if err != nil {
					t.Fatalf("New(%d-byte key, 16): %v", len(d.key), err)
				}
				checkAEAD(t, a, d, vecConcat(d.ciphertext, d.tag))
			})
		}
	})
}

func TestGCMTruncatedTags(t *testing.T) {
	for _, tv := range truncatedTagVectors {
		base := findGCMVector(t, tv.base)
		name := fmt.Sprintf("%s, %d-byte tag", base.name, tv.tagSize)
		t.Run(name, func(t *testing.T) {
			d := base.decode(t)
			tag := vecHex(t, "tag", tv.tag)
			if len(tag) != tv.tagSize {
				t.Fatalf("tag is %d bytes, tagSize %d", len(tag), tv.tagSize)
			}
			// SP 800-38D §5.2.1.2: the short tag is the full tag's prefix.
			if !bytes.Equal(tag, d.tag[:tv.tagSize]) {
				t.Fatalf("tag %x is not the prefix of the full tag %x", tag, d.tag)
			}
			want := vecConcat(d.ciphertext, tag)
			// The standard library takes tag sizes 12..16 only.
			if tv.tagSize >= 12 {
				t.Run("stdlib", func(t *testing.T) {
					checkAEAD(t, stdlibGCM(t, d.key, tv.tagSize), d, want)
				})
			}
			t.Run("aesgcm", func(t *testing.T) {
				skipUnlessSupported(t)
				a, err := New(d.key, tv.tagSize)
				if err != nil {
					t.Fatalf("New(%d-byte key, %d): %v", len(d.key), tv.tagSize, err)
				}
				checkAEAD(t, a, d, want)
			})
		})
	}
}
