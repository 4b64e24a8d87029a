package esp

import (
	"bytes"
	"crypto/aes"
	"testing"
)

// Known answers for the algorithms of the algorithms issue. Published
// vectors first (each quoted with its source), then ESP packets made by an
// independent implementation, pyca/cryptography, with
// testdata/gen_vectors_algos.py (which also asserts the published vectors
// below against pyca).

// TestXCBCKnownAnswers: RFC 3566 §4.6 test cases 1-7 (key 000102...0f).
func TestXCBCKnownAnswers(t *testing.T) {
	key := unhex(t, "000102030405060708090a0b0c0d0e0f")
	seq := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}
	cases := []struct {
		msg []byte
		mac string
	}{
		{nil, "75f0251d528ac01c4573dfd584d79f29"},
		{seq(3), "5b376580ae2f19afe7219ceef172756f"},
		{seq(16), "d2a246fa349b68a79998a4394ff7a263"},
		{seq(20), "47f51b4564966215b8985c63055ed308"},
		{seq(32), "f54f0ec8d2b9f3d36807734bd5283fd4"},
		{seq(34), "becbb3bccdb518a30677d5481fb6b4d8"},
		{make([]byte, 1000), "f0dafee895db30253761103b5d84528f"},
	}
	for i, c := range cases {
		checkMAC(t, "xcbc(aes)", key, c.msg, c.mac, i+1)
	}
}

// TestCMACKnownAnswers: RFC 4493 §4 examples 1-4; AES-CMAC-96 (RFC 4494
// §4) is their first 96 bits, which checkMAC checks through the default
// truncation.
func TestCMACKnownAnswers(t *testing.T) {
	key := unhex(t, "2b7e151628aed2a6abf7158809cf4f3c")
	msg := unhex(t, `6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
		30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710`)
	cases := []struct {
		n   int
		mac string
	}{
		{0, "bb1d6929e95937287fa37d129b756746"},
		{16, "070a16b46b4d4144f79bdd9dd04a287c"},
		{40, "dfa66747de9ae63030ca32611497c827"},
		{64, "51f0bebf7e3b9d92fc49741779363cfe"},
	}
	for i, c := range cases {
		checkMAC(t, "cmac(aes)", key, msg[:c.n], c.mac, i+1)
	}
}

// checkMAC checks the full MAC and the default 96-bit ICV, writing the
// message in one piece and in uneven pieces.
func checkMAC(t *testing.T, alg string, key, msg []byte, want string, n int) {
	t.Helper()
	w := unhex(t, want)
	for _, bits := range []int{128, 0} {
		m, err := NewMAC(alg, key, bits)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, m.ICVLen())
		m.Compute(got, 0, false, msg)
		if !bytes.Equal(got, w[:m.ICVLen()]) {
			t.Errorf("%s case %d/%d: got %x, want %x", alg, n, bits, got, w[:m.ICVLen()])
		}
		if len(msg) > 5 {
			got2 := make([]byte, m.ICVLen())
			m.Compute(got2, 0, false, msg[:1], msg[1:5], nil, msg[5:])
			if !bytes.Equal(got2, got) {
				t.Errorf("%s case %d: split writes give %x", alg, n, got2)
			}
		}
		if !m.Verify(got, 0, false, msg) {
			t.Errorf("%s case %d: Verify failed", alg, n)
		}
	}
}

// TestCCMPacketVector1: RFC 3610 §8 packet vector #1 (13-byte nonce,
// 8-byte AAD, M = 8), sealed and opened in place.
func TestCCMPacketVector1(t *testing.T) {
	key := unhex(t, "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf")
	nonce := unhex(t, "00000003020100a0a1a2a3a4a5")
	pkt := unhex(t, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e")
	want := unhex(t, "0001020304050607588c979a61c663d2f066d0c2c0f989806d5f6b61dac38417e8d12cfdf926e0")
	b, _ := aes.NewCipher(key)
	c, err := newCCM(b, 13, 8)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(pkt)+8)
	copy(buf, pkt)
	out := c.Seal(buf[8:8], nonce, buf[8:len(pkt)], buf[:8])
	if !bytes.Equal(buf, want) || &out[0] != &buf[8] {
		t.Fatalf("Seal:\n got %x\nwant %x", buf, want)
	}
	pt, err := c.Open(buf[8:8], nonce, buf[8:], buf[:8])
	if err != nil || !bytes.Equal(pt, pkt[8:]) {
		t.Fatalf("Open = %x, %v", pt, err)
	}
	if _, err := c.Open(nil, nonce, bytes.Clone(want[8:]), want[:7]); err == nil {
		t.Fatal("Open accepted a changed AAD")
	}
}

// TestCTRKnownAnswers: RFC 3686 §6 test vectors #1 and #2 (AES-128).
func TestCTRKnownAnswers(t *testing.T) {
	cases := []struct{ key, nonce, iv, pt, ct string }{
		{"ae6852f8121067cc4bf7a5765577f39e", "00000030", "0000000000000000", "53696e676c6520626c6f636b206d7367", "e4095d4fb7a7b3792d6175a3261311b8"},
		{"7e24067817fae0d743d6ce1f32539163", "006cb6db", "c0543b59da48d90b",
			"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
			"5104a106168a72d9790d41ee8edad388eb2e1efc46da57c8fce630df9141be28"},
	}
	ctrAlg, _, err := lookup(KindEncryption, "rfc3686(ctr(aes))", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		e, err := newCBCEngine(ctrAlg, append(unhex(t, c.key), unhex(t, c.nonce)...), nil)
		if err != nil {
			t.Fatal(err)
		}
		s := e.scratch.Get().(*cbcScratch)
		data := unhex(t, c.pt)
		e.ctrXOR(s, unhex(t, c.iv), data)
		if want := unhex(t, c.ct); !bytes.Equal(data, want) {
			t.Errorf("vector #%d: got %x, want %x", i+1, data, want)
		}
	}
}

// Output of: /usr/bin/python3 xfrm/esp/testdata/gen_vectors_algos.py
var pyAlgoCBCVectors = []pyCBCVector{
	{"ctr-128+xcbc esn", "rfc3686(ctr(aes))", "000102030405060708090a0b0c0d0e0f11223344", "xcbc(aes)", "101112131415161718191a1b1c1d1e1f", 0, 0x1020304, 0x100000005, true, "", "01020304000000050000000100000005f34979d10ea118975fb50d4b3620ce5b7ee6270d2f307f36613c8dcb202671251562fd242c822f1685044e4340b94cbc4f4061ab4e0b7b62001882dc", 76},
	{"ctr-256+cmac", "rfc3686(ctr(aes))", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fcafef00d", "cmac(aes)", "28292a2b2c2d2e2f3031323334353637", 0, 0x999, 0xc, false, "", "000009990000000c000000000000000c0ff2c46778e3db237a142210c14254130fee08ecc7a3be190ddf7ba2cc2ccf3eb719abe0634414ae62699c3ba0ede06c8df6d2c5478a5bd6be84e780", 76},
	{"3des+md5", "cbc(des3_ede)", "000102030405060708090a0b0c0d0e0f1011121314151617", "hmac(md5)", "000102030405060708090a0b0c0d0e0f", 0, 0x4000, 0x200000003, true, "a0a1a2a3a4a5a6a7", "0000400000000003a0a1a2a3a4a5a6a7ecb4ed79c9543e5b58f664ef34dc0a1e6a1b42a2797d0c42a2bb5841cff92d6439ca036acee86efa9ed49963746c4cdd2a15c8aebac6fce64f45ea91", 76},
	{"des+sha1", "cbc(des)", "0123456789abcdef", "hmac(sha1)", "000102030405060708090a0b0c0d0e0f10111213", 0, 0x4001, 0x9, false, "0001020304050607", "0000400100000009000102030405060765e98f378235125c7657c2ff7c35e839865e8e13a2ee5c7cd3a4212fb1ac722c6336ea21490f8e64b366cb8705fbff731ce95d6428ca159959d322b2", 76},
	{"aes-cbc-192+xcbc/128", "cbc(aes)", "000102030405060708090a0b0c0d0e0f1011121314151617", "xcbc(aes)", "000102030405060708090a0b0c0d0e0f", 128, 0x4002, 0xffffffff, false, "000102030405060708090a0b0c0d0e0f", "00004002ffffffff000102030405060708090a0b0c0d0e0fe2a300b556fc63d3cbcd6347497287937b9dac30e2f6b6902dcfe818baa936a7f7e02f4c2c396a531c0a13fd03f01022c51f6e9e04ddbcf372890605944f913b", 88},
}

var pyAlgoAEADVectors = []pyAEADVector{
	{"rfc4309 128/16", "rfc4309(ccm(aes))", "000102030405060708090a0b0c0d0e0f010203", 128, 0x11223344, 0x7, false, "112233440000000700000000000000072833a643a99921be0e6a6643a2d08cbdb0726a681b651fa3167253e405b6c103acc2c93f9337fee2fff97c48576ecb0d604c46ecdff32458c92bdc75b52b57a6"},
	{"rfc4309 256/12 esn", "rfc4309(ccm(aes))", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa1a2a3", 96, 0x5566, 0x300000001, true, "00005566000000010000000300000001797f82d7186ea5c6494fcd88146914850ab182006504b0a91ad236f98ca68f0977abea70c88bd7bcb989b5faddaf0748df450f443b47d8181da46fd0"},
	{"rfc4309 192/8", "rfc4309(ccm(aes))", "000102030405060708090a0b0c0d0e0f1011121314151617ffeedd", 64, 0x777, 0xfffffffe, false, "00000777fffffffe00000000fffffffed090a6630e7673e14ce52ac9befa2f65df7c03749b477a43efbff2ee69e5eb2f4e64188dd5907f5acebd37a6ed31ed002cfc1ec1e62fdac3"},
}

func TestPythonAlgoVectors(t *testing.T) {
	for _, v := range pyAlgoCBCVectors {
		t.Run(v.name, func(t *testing.T) {
			payload, nh := checkPyCBCVector(t, v)
			if !bytes.Equal(payload, pyPayload(45)) || nh != 4 {
				t.Fatalf("payload %x nh %d", payload, nh)
			}
		})
	}
	for _, v := range pyAlgoAEADVectors {
		t.Run(v.name, func(t *testing.T) {
			tr, packet := checkPyAEADVector(t, v)
			bad := bytes.Clone(packet)
			bad[len(bad)/2] ^= 0x40
			if _, _, err := tr.Open(bad, v.seq, v.esn); err != ErrICV {
				t.Fatalf("flipped bit: %v", err)
			}
		})
	}
}
