package esp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// aeadVector is a published ESP packet for an AEAD transform. plain is the
// decrypted ESP payload with its trailer, as the sources print it. The IVs
// of these vectors are arbitrary rather than the sequence number, so Seal
// is checked through the testIV hook.
type aeadVector struct {
	name    string // source
	alg     string
	key     string // key || salt
	spi     uint32
	seq     uint64
	esn     bool
	iv      string
	plain   string
	packet  string
	icvBits int
}

var aeadVectors = []aeadVector{
	// draft-mcgrew-gcm-test-01 §4 ("Test Cases for the use of GCM and GMAC
	// in IPsec ESP"), AES-GCM cases 1-14 in document order, transcribed
	// via the AES-GCM-ESP test cases of a public benchmark suite that
	// quotes the draft. Salt = first 4 nonce bytes, IV = last 8; a 12-byte
	// AAD in the draft means ESN (SPI || seq hi || seq lo).
	{"draft-mcgrew-gcm-test-01 case 1 (AES-128, ESN)", "rfc4106(gcm(aes))",
		"4c80cdefbb5d10da906ac73c3613a634 2e443b68", 0x00004321, 0x8765432100000000, true, "4956ed7e3b244cfe",
		`45000048699a000080114db7c0a80102 c0a801010a9bf15638d3010000010000 00000000045f736970045f7564700373
		 69700963796265726369747902646b00 0021000101020201`,
		`00004321000000004956ed7e3b244cfe fecf537e729d5b07dc30df528dd22b76 8d1b98736696a6fd348509fa13ceac34
		 cfa2436f14a3f3cf65925bf1f4a13c5d 15b21e1884f5ff6247aeabb786b93bce 61bc17d768fd9732459018148f6cbe72
		 2fd04796562dfdb4`, 128},
	{"draft-mcgrew-gcm-test-01 case 2 (AES-128)", "rfc4106(gcm(aes))",
		"feffe9928665731c6d6a8f9467308308 cafebabe", 0x0000a5f8, 0x0a, false, "facedbaddecaf888",
		`4500003e698f000080114dccc0a80102 c0a801010a980035002a2343b2d00100 00010000000000000373697009637962
		 65726369747902646b00000100010001`,
		`0000a5f80000000afacedbaddecaf888 deb22cd9b07c72c16e3a65beeb8df304 a5a5897d33ae530f1ba76d5d114d2a5c
		 3de81827c10e9a4f51330d0eec416642 cfbb85a5b47e48a4ec3b9ba95d918bd1 83b70d3aa8bc6ee4c309e9d85a41ad4a`, 128},
	{"draft-mcgrew-gcm-test-01 case 3 (AES-256)", "aes-gcm-16",
		"abbccddef00112233445566778899aababbccddef00112233445566778899aab 11223344", 0x4a2cbfe3, 2, false, "0102030405060708",
		`4500003069a6400080062690c0a80102 9389155e0a9e008b2dc57ee000000000 7002400020bf0000020405b401010402 01020201`,
		`4a2cbfe3000000020102030405060708 ff425c9b724599df7a3bcd510194e00d 6a78107f1b0b1cbf06efae9d65a5d763
		 748a637985771d347f0545659f14e99d ef842d8eb335f4eecfdbf831824b4c49 15956c96`, 128},
	{"draft-mcgrew-gcm-test-01 case 4 (AES-128, zero key)", "rfc4106(gcm(aes))",
		"00000000000000000000000000000000 00000000", 0, 1, false, "0000000000000000",
		`4500003c99c500008001cb7a40679318 010101010800075c0200440061626364 65666768696a6b6c6d6e6f7071727374
		 75767761626364656667686901020201`,
		`00000000000000010000000000000000 4688daf2f973a392732909c331d56d60 f694abaa414b5e7ff5fdcdfff5e9a284
		 456476492719ffb64de7d9dca1e1d894 bc3bd57873ed4d181d19d4d5c8c18af3 f821d496eeb096e98ad2b69e4799c71d`, 128},
	{"draft-mcgrew-gcm-test-01 case 5 (AES-128, ESN)", "rfc4106(gcm(aes))",
		"3de09874b388e6491988d0c3607eae1f 57690e43", 0x42f67e3f, 0x1010101010101010, true, "4e280000a2fca1a3",
		`4500003c99c300008001cb7c40679318 010101010800085c0200430061626364 65666768696a6b6c6d6e6f7071727374
		 75767761626364656667686901020201`,
		`42f67e3f101010104e280000a2fca1a3 fba2caa4853cf9f0f22cb10d86dd83b0 fec75691cf1a04b00d1138ec9c357917
		 65acbd8701ad79845bf9fe3fba487bc9 1755e6662b4c8d0d1f5e22739530320a e0d731cc978ecafaeae88f00e80d6e48`, 128},
	{"draft-mcgrew-gcm-test-01 case 6 (AES-128, ESN)", "rfc4106(gcm(aes))",
		"3de09874b388e6491988d0c3607eae1f 57690e43", 0x42f67e3f, 0x1010101010101010, true, "4e280000a2fca1a3",
		`4500001c42a200008001441f406793b6 e00000020a00f5ff01020201`,
		`42f67e3f101010104e280000a2fca1a3 fba2ca845e5df9f0f22c3e6e86dd831e 1fc65792cd1af9130e1379ed369f071f
		 35e034be95f112e4e7d05d35`, 128},
	{"draft-mcgrew-gcm-test-01 case 7 (AES-192)", "rfc4106(gcm(aes))",
		"feffe9928665731c6d6a8f9467308308feffe9928665731c cafebabe", 0x0000a5f8, 0x0a, false, "facedbaddecaf888",
		`45000028a4ad4000400678800a01038f 0a010612802306b8cb712602dd6bb03e 501016d075680001`,
		`0000a5f80000000afacedbaddecaf888 a5b1f8066029aea40e598b8122de0242 0938b3ab33f828e687b8858b5bfbdbd0
		 315b27452144cc7795457b9652037f53 18027b5b4cd7a636`, 128},
	{"draft-mcgrew-gcm-test-01 case 8 (AES-128, ESN)", "rfc4106(gcm(aes))",
		"abbccddef00112233445566778899aab decaf888", 0x100, 1, true, "cafedebaceface74",
		`4500004933ba00007f119106c3fb1d10 c2b1d326c02831ce0035dd7b800302d5 00004e20001e8c18d75b81dc91baa047
		 6b91b924b280389d92c963bac046ec95 9b6266c04722b14923010101`,
		`0000010000000001cafedebaceface74 18a6fd42f72cbf4ab2a2ea901f73d814 e3e7f243d95412e1c349c1d2fbec168f
		 9190feebaf2cb01984e65863965d7472 b79da345e0e780191f0d2f0e0f496c22 6f2127b27db35724e7845d68651f57e6
		 5f354f75ff17015769623436`, 128},
	{"draft-mcgrew-gcm-test-01 case 9 (AES-256, ESN)", "rfc4106(gcm(aes))",
		"abbccddef00112233445566778899aababbccddef00112233445566778899aab 73616c74", 0x17405e67, 0x156f3126dd0db99b, true, "616e640169766563",
		`45080028732c00004006e9f90a010612 0a01038f06b88023dd6bafbecb712602 50101f646d540001`,
		`17405e67dd0db99b616e640169766563 f2d69ecdbd5a0d5b8d5ef38bad4da58d 1f278fde98ef67549d524a3018d9a57f
		 f4d3a31ce673119e451626c2415771e3 b7eebca614c89b35`, 128},
	{"draft-mcgrew-gcm-test-01 case 10 (AES-128, ESN)", "rfc4106(gcm(aes))",
		"3de09874b388e6491988d0c3607eae1f 57690e43", 0x42f67e3f, 0x1010101010101010, true, "4e280000a2fca1a3",
		`45000049333e00007f119182c3fb1d10 c2b1d326c02831ce0035cb458003025b 000001e0001e8c18d65759d52284a035
		 2c71475c8880391c764d6e5ee0496b32 5ae270c03899493915010101`,
		`42f67e3f101010104e280000a2fca1a3 fba2cad12fc1f9f00d3cebf305410db8 3d7784b607323d220f24b0a97d541828
		 00cadb0f68d99ef0e0c0c89ae9bea888 4e52d65bc1afd0740f742444747b5b39 ab533163aad4550ee5160975cdb608c5
		 769189609763b8e18caa81e2`, 128},
	{"draft-mcgrew-gcm-test-01 case 11 (AES-256, ESN)", "rfc4106(gcm(aes))",
		"abbccddef00112233445566778899aababbccddef00112233445566778899aab 73616c74", 0x17405e67, 0x156f3126dd0db99b, true, "616e640169766563",
		`636973636f0172756c65730174686501 6e6574776501646566696e6501746865 746563686e6f6c6f6769657301746861
		 7477696c6c01646566696e65746f6d6f 72726f7701020201`,
		`17405e67dd0db99b616e640169766563 d4b7ed86a1777f2ea13d6973d324c69e 7b43f826fb56831226508bebd2dceb18
		 d0a6df10e5487df074113e14c641024e 3e6773d91a62ee429b043a10e3efe6b0 12a49363412364f8c0cac587f249e56b
		 11e24f30e44ccc76`, 128},
	{"draft-mcgrew-gcm-test-01 case 12 (AES-128, empty payload)", "rfc4106(gcm(aes))",
		"7d773d00c144c525ac619d18c84a3f47 d9664267", 0x335467ae, 0xffffffff, false, "43457e9182443bc6",
		`01020201`,
		`335467aeffffffff43457e9182443bc6 437f866bcb3f699fe9b0822bac961c45 04bef270`, 128},
	{"draft-mcgrew-gcm-test-01 case 13 (AES-128, ESN)", "rfc4106(gcm(aes))",
		"abbccddef00112233445566778899aab decaf888", 0x100, 1, true, "cafedebaceface74",
		`746f016265016f72016e6f7401746f01 62650001`,
		`0000010000000001cafedebaceface74 29c9fc69a197d038ccdd14e2ddfcaa05 43332164412503524303ed3c6c5f2838
		 43af8c3e`, 128},
	{"draft-mcgrew-gcm-test-01 case 14 (AES-256, ESN seq 2^64-1)", "rfc4106(gcm(aes))",
		"6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961 7475726e", 0x796b6963, 0xffffffffffffffff, true, "333021696765746d",
		`45000030da3a00008001df3bc0a80005 c0a800010800c6cd0200070061626364 65666768696a6b6c6d6e6f7071727374 01020201`,
		`796b6963ffffffff333021696765746d f97ab2aa356d8edce17644ac8c78e25d d24dedbb29ebf1b64a274b39b49c3a86
		 4cd3d78ca4ae68a32b42458fb57dbe82 1dcc63b9d0937ba2945f669368661a32 9fb4c053`, 128},

	// RFC 7634 Appendix A ("ESP Example"): ChaCha20-Poly1305, SPI
	// 0x01020304, sequence number 5, IV 0x1011121314151617.
	{"RFC 7634 Appendix A", "rfc7539esp(chacha20,poly1305)",
		"808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f a0a1a2a3", 0x01020304, 5, false, "1011121314151617",
		`45000054a6f200004001e778c6336405 c000020508005b7a3a080000553bec10 0007362708090a0b0c0d0e0f10111213
		 1415161718191a1b1c1d1e1f20212223 2425262728292a2b2c2d2e2f30313233 3435363701020204`,
		`0102030400000005 1011121314151617
		 24039428b97f417e3c13753a4f05087b 67c352e6a7fab1b982d466ef407ae5c6 14ee8099d52844eb61aa95dfab4c02f7
		 2aa71e7c4c4f64c9befe2facc638e8f3 cbec163fac469b502773f6fb94e664da 9165b82829f641e0
		 76aaa8266b7fb0f7b11b369907e1ad43`, 128},
}

func TestAEADVectors(t *testing.T) {
	for _, v := range aeadVectors {
		t.Run(v.name, func(t *testing.T) {
			tr, err := New(v.alg, unhex(t, v.key), v.icvBits, "", nil, "", nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			plain := unhex(t, v.plain)
			packet := unhex(t, v.packet)
			n := len(plain)
			wantNH := plain[n-1]
			wantPayload := plain[:n-2-int(plain[n-2])]

			// Open.
			b := bytes.Clone(packet)
			payload, nh, err := tr.Open(b, v.seq, v.esn)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(payload, wantPayload) || nh != wantNH {
				t.Fatalf("Open = %x nh %d, want %x nh %d", payload, nh, wantPayload, wantNH)
			}

			// Seal with the vector's IV gives the packet byte for byte.
			tr.testIV = unhex(t, v.iv)
			out := tr.Seal(make([]byte, tr.SealedLen(len(wantPayload))), v.spi, v.seq, v.esn, wantPayload, wantNH)
			if !bytes.Equal(out, packet) {
				t.Fatalf("Seal:\n got %x\nwant %x", out, packet)
			}
		})
	}
}

// cbcVector is a published ESP packet for AES-CBC without integrity.
type cbcVector struct {
	name    string
	key     string
	spi     uint32
	seq     uint64
	iv      string
	payload string
	nh      uint8
	packet  string
}

// RFC 3602 §4 ("Test Vectors") cases #5-#8: AES-128-CBC ESP packets (the
// RFC gives them without authentication), transcribed via the RFC 3602
// test of a public IPsec state-machine-learning tool.
var cbcVectors = []cbcVector{
	{"RFC 3602 case #5 (48 bytes ICMP, transport)", "90d382b410eeba7ad938c46cec1a82bf", 0x4321, 1,
		"e96e8c08ab465763fd098d45dd3ff893",
		`08000ebda70a00008e9c083db95b0700 08090a0b0c0d0e0f1011121314151617 18191a1b1c1d1e1f2021222324252627
		 28292a2b2c2d2e2f3031323334353637`, 1,
		`0000432100000001e96e8c08ab465763fd098d45dd3ff893 f663c25d325c18c6a9453e194e120849 a4870b66cc6b9965330013b4898dc856
		 a4699e523a55db080b59ec3a8e4b7e52 775b07d1db34ed9c538ab50c551b874a a269add047ad2d5913ac19b7cfbad4a6`},
	{"RFC 3602 case #6 (28 bytes ICMP, transport)", "90d382b410eeba7ad938c46cec1a82bf", 0x4321, 8,
		"69d08df7d203329db093fc4924e5bd80",
		`0800b5e8a80a0500a69c083d0b660e00777777777777777777777777`, 1,
		`000043210000000869d08df7d203329db093fc4924e5bd80 f51995881ec4e0c4488987ce742e8109 689bb379d2d750c0d915dca346a89f75`},
	{"RFC 3602 case #7 (tunnel, 64-byte payload)", "0123456789abcdef0123456789abcdef", 0x8765, 2,
		"f4e765244f6407adf13dc1380f673f37",
		`45000054090400004001f988c0a87b03 c0a87bc808009f76a90a0100b49c083d 02a2040008090a0b0c0d0e0f10111213
		 1415161718191a1b1c1d1e1f20212223 2425262728292a2b2c2d2e2f30313233 34353637`, 4,
		`0000876500000002f4e765244f6407adf13dc1380f673f37 773b5241a4c449225e4f3ce5ed611b0c 237ca96cf74a93013c1b0ea1a0cf70f8
		 e4ecaec78ac53aad7a0f022b859243c6 47752e94a859352b8a4d4d2decd136e5 c177f132ad3fbfb2201ac9904c74ee0a
		 109e0ca1e4dfe9d5a100b842f1c22f0d`},
	{"RFC 3602 case #8 (tunnel, 0xff payload)", "0123456789abcdef0123456789abcdef", 0x8765, 5,
		"85d47224b5f3dd5d2101d4ea8dffab22",
		`45000044090c00004001f990c0a87b03 c0a87bc80800d63caa0a0200c69c083d a3de0300ffffffffffffffffffffffff
		 ffffffffffffffffffffffffffffffff ffffffff`, 4,
		`000087650000000585d47224b5f3dd5d2101d4ea8dffab22 15b92683819596a8047232cc00f7048f e45318e11f8a0f62ede3c3fc61203bb5
		 0f980a08c9843fd3a1b06d5c07ff9639 b7eb7dfb3512e5de435e7207ed971ef3 d2726d9b5ef6affc6d17a0decbb13892`},
}

func TestCBCVectors(t *testing.T) {
	for _, v := range cbcVectors {
		t.Run(v.name, func(t *testing.T) {
			tr, err := New("", nil, 0, "aes-cbc", unhex(t, v.key), "", nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			want := unhex(t, v.payload)
			packet := unhex(t, v.packet)
			payload, nh, err := tr.Open(bytes.Clone(packet), v.seq, false)
			if err != nil || !bytes.Equal(payload, want) || nh != v.nh {
				t.Fatalf("Open = %x nh %d err %v, want %x nh %d", payload, nh, err, want, v.nh)
			}
			tr.testIV = unhex(t, v.iv)
			out := tr.Seal(nil, v.spi, v.seq, false, want, v.nh)
			if !bytes.Equal(out, packet) {
				t.Fatalf("Seal:\n got %x\nwant %x", out, packet)
			}
		})
	}
}

// TestHMACKnownAnswers checks the MAC entries, untruncated and truncated,
// against RFC 2202 §3 test case 2 (HMAC-SHA-1) and RFC 4231 §4.3 test case
// 2 (HMAC-SHA-256/384/512): key "Jefe", data "what do ya want for
// nothing?". The engine is built directly because "Jefe" is shorter than
// the key lengths ESP requires.
func TestHMACKnownAnswers(t *testing.T) {
	cases := []struct {
		alg, digest string
	}{
		{"hmac(sha1)", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"},
		{"hmac(md5)", "750c783e6ab0b503eaa86e310a5db738"}, // RFC 2202 §2 test case 2
		{"hmac(sha256)", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
		{"hmac(sha384)", "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649"},
		{"hmac(sha512)", "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"},
	}
	for _, c := range cases {
		auth, icvLen, err := lookup(KindIntegrity, c.alg, 0)
		if err != nil {
			t.Fatal(err)
		}
		digest := unhex(t, c.digest)
		for _, n := range []int{icvLen, len(digest)} {
			m, err := newMAC(auth, []byte("Jefe"), n)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, n)
			m.Compute(got, 0, false, []byte("what do ya want for nothing?"))
			if !bytes.Equal(got, digest[:n]) {
				t.Errorf("%s/%d: got %x, want %x", c.alg, n*8, got, digest[:n])
			}
		}
	}
}

// pyVector is a packet made by testdata/gen_vectors.py with pyca/cryptography
// (an independent implementation), covering what the published vectors do
// not: HMAC ICVs over whole packets, ESN high bits in the ICV, the default
// IV-from-sequence-number of the AEADs, and truncated GCM ICVs.
type pyCBCVector struct {
	name, enc, encKey, auth, authKey string
	icvBits                          int
	spi                              uint32
	seq                              uint64
	esn                              bool
	iv, packet                       string
	length                           int
}

type pyAEADVector struct {
	name, alg, key string
	icvBits        int
	spi            uint32
	seq            uint64
	esn            bool
	packet         string
}

// Output of: /usr/bin/python3 xfrm/esp/testdata/gen_vectors.py
var pyCBCVectors = []pyCBCVector{
	{"cbc(aes)/16+hmac(sha256)", "cbc(aes)", "000102030405060708090a0b0c0d0e0f", "hmac(sha256)", "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f", 0, 0x1020304, 0x100000007, true, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf", "0102030400000007a0a1a2a3a4a5a6a7a8a9aaabacadaeaf43b9c056cc9c709a426c2b4267f87ffd2c7125f02eae1dcf959cf1f87dca8f3d3a128f68ee969ff8f90f5141c0978d833e59686a15169e318af827be7e756c8b", 88},
	{"cbc(aes)/32+hmac(sha1)", "cbc(aes)", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "hmac(sha1)", "6465666768696a6b6c6d6e6f7071727374757677", 0, 0xabcd, 0x2a, false, "101112131415161718191a1b1c1d1e1f", "0000abcd0000002a101112131415161718191a1b1c1d1e1fdf1bcdaa93713df65ab3380b982b0d18de1d74b1c6abe7027b2cf84f5be38616eae693bec964bb8fe16eb4bf0339aa5fe208dea7d8768860a49af4f8", 84},
	{"cbc(aes)/24+hmac(sha512)", "cbc(aes)", "000102030405060708090a0b0c0d0e0f1011121314151617", "hmac(sha512)", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f", 0, 0xdeadbeef, 0xffffffff, false, "00000000000000000000000000000000", "deadbeefffffffff00000000000000000000000000000000a1bab2d6743bd61cf67d53009f117f28e5e3cf7efbbb5111b46b9d1318fea8db2644784a5aa1d8537aece32270030767", 72},
	{"null+hmac(sha384)", "ecb(cipher_null)", "", "hmac(sha384)", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f", 0, 0x100, 0x200000001, true, "", "0000010000000001030a11181f262d343b420006da6ba98c72f7de8dfe5e5ea27ce1eb427d08a1a4094ff899", 44},
	{"null+hmac(sha256)/96", "ecb(cipher_null)", "", "hmac(sha256)", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 96, 0x100, 0x3, false, "", "0000010000000003030a11181f262d0102030306b1660fc04c777fb392596149", 32},
}

var pyAEADVectors = []pyAEADVector{
	{"rfc4106(gcm(aes))/16 esn", "rfc4106(gcm(aes))", "000102030405060708090a0b0c0d0e0f01020304", 128, 0x11223344, 0x500000009, true, "11223344000000090000000500000009bd2c4ac4b67d512da875c8f4d2afd66c7b54945466480cc9d987e275e6e78fdb29430c2e93cf825f32eb64c9dd617befc0429e2864bb7816fd99bc6abdbf5271"},
	{"rfc4106(gcm(aes))/32 12", "rfc4106(gcm(aes))", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fcafebabe", 96, 0x11223344, 0x4d, false, "112233440000004d000000000000004d2a7a6ee3d280f9e5b94c7c23b3e7604a6a5f2fdb5f018465c9e35a260e65c0731a5632c6dbd5961ff60e6bf642630658934e9ce8541249670b03c433"},
	{"rfc4106(gcm(aes))/24 8", "rfc4106(gcm(aes))", "000102030405060708090a0b0c0d0e0f1011121314151617decaf888", 64, 0x55, 0x100000000, true, "0000005500000000000000010000000097da15c0f9f18cc7649a63fb192fe92e7b1710f6d4cf3887feaa99233cadbf4e3eca350f162dd8963decb22fbacfa14998ddde422115d7a9"},
	{"rfc7539esp esn", "rfc7539esp(chacha20,poly1305)", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa0a1a2a3", 128, 0x1020304, 0x7ffffffff, true, "01020304ffffffff00000007ffffffffb831c83cecc6dc38f69839887d7e35062ab638e77d22c8c69c8028ec9d62819a9c03567eeaca6e3601051eca0c1fb2439233f78644f9703aecbe8c9ff81ca385"},
}

// pyPayload is the payload gen_vectors.py seals: (i*7+3) & 0xff.
func pyPayload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + 3)
	}
	return p
}

func TestPythonVectors(t *testing.T) {
	for _, v := range pyCBCVectors {
		t.Run(v.name, func(t *testing.T) {
			payload, _ := checkPyCBCVector(t, v)
			if !bytes.Equal(payload, pyPayload(len(payload))) {
				t.Fatalf("payload %x", payload)
			}
		})
	}
	for _, v := range pyAEADVectors {
		t.Run(v.name, func(t *testing.T) { checkPyAEADVector(t, v) })
	}
}

// checkPyCBCVector opens v's packet, reseals the payload (with v's IV, if
// it gives one) and checks that the packet comes back byte for byte. It
// returns the payload and next header.
func checkPyCBCVector(t *testing.T, v pyCBCVector) ([]byte, uint8) {
	t.Helper()
	tr, err := New("", nil, 0, v.enc, unhex(t, v.encKey), v.auth, unhex(t, v.authKey), v.icvBits)
	if err != nil {
		t.Fatal(err)
	}
	packet := unhex(t, v.packet)
	payload, nh, err := tr.Open(bytes.Clone(packet), v.seq, v.esn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if v.iv != "" {
		tr.testIV = unhex(t, v.iv)
	} else if tr.ivLen > 0 {
		// Counter mode: the vector's IV is its sequence number, ours
		// is salted (seqIV); seal with the IV the vector carries.
		tr.testIV = packet[HeaderLen : HeaderLen+tr.ivLen]
	}
	if out := tr.Seal(nil, v.spi, v.seq, v.esn, payload, nh); !bytes.Equal(out, packet) {
		t.Fatalf("Seal:\n got %x\nwant %x", out, packet)
	}
	return payload, nh
}

// checkPyAEADVector seals pyPayload(45) with next header 4 and the
// sequence number as IV, checks that it gives v's packet, and opens the
// packet back. It returns the transform and the packet.
func checkPyAEADVector(t *testing.T, v pyAEADVector) (*Transform, []byte) {
	t.Helper()
	tr, err := New(v.alg, unhex(t, v.key), v.icvBits, "", nil, "", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	packet := unhex(t, v.packet)
	want := pyPayload(45)
	// The vectors were made with the sequence number as the IV; the
	// transform's own IV is seqIV's salted one.
	tr.testIV = binary.BigEndian.AppendUint64(nil, v.seq)
	if out := tr.Seal(nil, v.spi, v.seq, v.esn, want, 4); !bytes.Equal(out, packet) {
		t.Fatalf("Seal:\n got %x\nwant %x", out, packet)
	}
	payload, nh, err := tr.Open(bytes.Clone(packet), v.seq, v.esn)
	if err != nil || !bytes.Equal(payload, want) || nh != 4 {
		t.Fatalf("Open = %x nh %d err %v", payload, nh, err)
	}
	return tr, packet
}
