package esp

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// config is one algorithm combination for the property tests.
type config struct {
	name                  string
	aead                  string
	aeadKey               int
	aeadICV               int
	enc                   string
	encKey                int
	auth                  string
	authKey               int
	authICV               int
	noIntegrity           bool
	wantIV, wantICV, algn int
}

func (c config) new(t testing.TB) *Transform {
	t.Helper()
	key := func(n int, seed byte) []byte {
		k := make([]byte, n)
		for i := range k {
			k[i] = seed + byte(i)
		}
		return k
	}
	tr, err := New(c.aead, key(c.aeadKey, 1), c.aeadICV, c.enc, key(c.encKey, 50), c.auth, key(c.authKey, 100), c.authICV)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	return tr
}

var configs = func() []config {
	var cs []config
	for _, k := range []int{16, 24, 32} {
		for _, icv := range []int{64, 96, 128} {
			cs = append(cs, config{name: fmt.Sprintf("gcm-%d-icv%d", k*8, icv), aead: "rfc4106(gcm(aes))", aeadKey: k + 4, aeadICV: icv, wantIV: 8, wantICV: icv / 8, algn: 4})
		}
	}
	cs = append(cs,
		config{name: "aes-gcm-16", aead: "aes-gcm-16", aeadKey: 20, wantIV: 8, wantICV: 16, algn: 4},
		config{name: "aes-gcm-12", aead: "aes-gcm-12", aeadKey: 36, wantIV: 8, wantICV: 12, algn: 4},
		config{name: "aes-gcm-8", aead: "aes-gcm-8", aeadKey: 28, wantIV: 8, wantICV: 8, algn: 4},
		config{name: "chacha20-poly1305", aead: "rfc7539esp(chacha20,poly1305)", aeadKey: 36, wantIV: 8, wantICV: 16, algn: 4},
		config{name: "chacha20-poly1305-setkey", aead: "chacha20-poly1305", aeadKey: 36, wantIV: 8, wantICV: 16, algn: 4},
	)
	auths := []struct {
		name    string
		key, ic int
	}{{"hmac(sha1)", 20, 12}, {"hmac-sha256", 32, 16}, {"hmac(sha384)", 48, 24}, {"hmac-sha512", 64, 32}}
	for _, k := range []int{16, 24, 32} {
		for _, a := range auths {
			cs = append(cs, config{name: fmt.Sprintf("cbc-%d+%s", k*8, a.name), enc: "cbc(aes)", encKey: k, auth: a.name, authKey: a.key, wantIV: 16, wantICV: a.ic, algn: 16})
		}
	}
	for _, a := range auths {
		cs = append(cs, config{name: "null+" + a.name, enc: "null", auth: a.name, authKey: a.key, wantICV: a.ic, algn: 4})
	}
	cs = append(cs,
		config{name: "rijndael-cbc+sha256/96", enc: "rijndael-cbc", encKey: 16, auth: "hmac(sha256)", authKey: 32, authICV: 96, wantIV: 16, wantICV: 12, algn: 16},
		config{name: "integrity-only", auth: "hmac-sha1", authKey: 20, wantICV: 12, algn: 4},
		config{name: "aes-cbc-only", enc: "aes-cbc", encKey: 32, noIntegrity: true, wantIV: 16, algn: 16},
	)
	// The algorithms of the algorithms issue.
	for _, k := range []int{16, 24, 32} {
		for _, icv := range []int{64, 96, 128} {
			cs = append(cs, config{name: fmt.Sprintf("ccm-%d-icv%d", k*8, icv), aead: "rfc4309(ccm(aes))", aeadKey: k + 3, aeadICV: icv, wantIV: 8, wantICV: icv / 8, algn: 4})
		}
		cs = append(cs,
			config{name: fmt.Sprintf("gmac-%d", k*8), aead: "rfc4543(gcm(aes))", aeadKey: k + 4, wantIV: 8, wantICV: 16, algn: 4},
			config{name: fmt.Sprintf("ctr-%d+xcbc", k*8), enc: "rfc3686(ctr(aes))", encKey: k + 4, auth: "xcbc(aes)", authKey: 16, wantIV: 8, wantICV: 12, algn: 4},
		)
	}
	cs = append(cs,
		config{name: "aes-ccm-8", aead: "aes-ccm-8", aeadKey: 19, wantIV: 8, wantICV: 8, algn: 4},
		config{name: "null-aes-gmac", aead: "null-aes-gmac", aeadKey: 20, wantIV: 8, wantICV: 16, algn: 4},
		config{name: "3des+md5", enc: "3des-cbc", encKey: 24, auth: "hmac-md5", authKey: 16, wantIV: 8, wantICV: 12, algn: 8},
		config{name: "des+sha1", enc: "des-cbc", encKey: 8, auth: "hmac(sha1)", authKey: 20, wantIV: 8, wantICV: 12, algn: 8},
		config{name: "aes-cbc-192+cmac", enc: "aes-cbc", encKey: 24, auth: "cmac(aes)", authKey: 16, wantIV: 16, wantICV: 12, algn: 16},
		config{name: "null+xcbc-128", enc: "null", auth: "aes-xcbc-mac", authKey: 16, authICV: 128, wantICV: 16, algn: 4},
		config{name: "ctr-only", enc: "aes-ctr", encKey: 20, noIntegrity: true, wantIV: 8, algn: 4},
	)
	return cs
}()

var payloadSizes = func() []int {
	var s []int
	for n := 0; n <= 300; n++ {
		s = append(s, n)
	}
	return append(s, 1400, 8000)
}()

func TestRoundTrip(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			tr := c.new(t)
			if tr.IVLen() != c.wantIV || tr.ICVLen() != c.wantICV || tr.BlockAlign() != c.algn {
				t.Fatalf("IVLen %d ICVLen %d align %d, want %d %d %d", tr.IVLen(), tr.ICVLen(), tr.BlockAlign(), c.wantIV, c.wantICV, c.algn)
			}
			for _, esn := range []bool{false, true} {
				seq := uint64(1)
				if esn {
					seq = 1<<32 - 150 // crosses 2^32 during the sizes loop
				}
				for _, n := range payloadSizes {
					seq++
					roundTrip(t, tr, n, seq, esn)
				}
			}
		})
	}
}

func roundTrip(t *testing.T, tr *Transform, n int, seq uint64, esn bool) {
	t.Helper()
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = byte(i ^ n)
	}
	size := tr.SealedLen(n)
	if over := size - n; over > tr.MaxOverhead() || over < HeaderLen+tr.IVLen()+TrailerLen+tr.ICVLen() {
		t.Fatalf("n %d: overhead %d, MaxOverhead %d", n, over, tr.MaxOverhead())
	}
	if ct := size - HeaderLen - tr.IVLen() - tr.ICVLen(); ct%tr.BlockAlign() != 0 {
		t.Fatalf("n %d: ciphertext %d not aligned to %d", n, ct, tr.BlockAlign())
	}
	// Separate buffers.
	out := tr.Seal(make([]byte, size), 0xc0ffee, seq, esn, payload, 41)
	if len(out) != size {
		t.Fatalf("n %d: sealed %d bytes, SealedLen %d", n, len(out), size)
	}
	if n > 16 && bytes.Contains(out, payload) && tr.ivLen > 0 && !strings.HasPrefix(tr.name, "rfc4543") {
		t.Fatalf("n %d: payload in clear", n)
	}
	got, nh, err := tr.Open(bytes.Clone(out), seq, esn)
	if err != nil || nh != 41 || !bytes.Equal(got, payload) {
		t.Fatalf("n %d seq %#x esn %v: Open = %d bytes nh %d err %v", n, seq, esn, len(got), nh, err)
	}
	// In place: the payload already sits after header and IV.
	buf := make([]byte, size+7)
	off := HeaderLen + tr.IVLen()
	copy(buf[off:], payload)
	out2 := tr.Seal(buf, 0xc0ffee, seq, esn, buf[off:off+n], 41)
	if &out2[0] != &buf[0] {
		t.Fatalf("n %d: in-place Seal reallocated", n)
	}
	if e, ok := tr.eng.(*cbcEngine); !(ok && e.ivs != nil) && !bytes.Equal(out2, out) { // CBC IVs are random
		t.Fatalf("n %d: in-place Seal differs", n)
	}
	got, nh, err = tr.Open(out2, seq, esn)
	if err != nil || nh != 41 || !bytes.Equal(got, payload) {
		t.Fatalf("n %d: in-place Open: nh %d err %v", n, nh, err)
	}
	if n > 0 && &got[0] != &buf[off] {
		t.Fatalf("n %d: Open did not decrypt in place", n)
	}
	// The wrong high half of an ESN sequence number fails integrity.
	if esn && !(tr.icvLen == 0) {
		if _, _, err := tr.Open(bytes.Clone(out), seq+1<<32, true); err != ErrICV {
			t.Fatalf("n %d: wrong ESN high half: %v", n, err)
		}
	}
}

func TestSealSmallDst(t *testing.T) {
	tr := configs[0].new(t)
	out := tr.Seal(nil, 1, 1, false, []byte("hello"), 17)
	if len(out) != tr.SealedLen(5) {
		t.Fatalf("len %d", len(out))
	}
	if p, nh, err := tr.Open(out, 1, false); err != nil || string(p) != "hello" || nh != 17 {
		t.Fatalf("Open: %q %d %v", p, nh, err)
	}
}

func TestPadding(t *testing.T) {
	tr := config{aead: "aes-gcm-16", aeadKey: 20}.new(t)
	for n := 0; n < 8; n++ {
		out := tr.Seal(nil, 1, 1, false, make([]byte, n), 59)
		pad := (4 - (n+2)%4) % 4
		// Decrypt with the raw engine to see the trailer.
		b := bytes.Clone(out)
		pt, err := tr.eng.open(b, 1, false)
		if err != nil {
			t.Fatal(err)
		}
		want := append(make([]byte, n), append(seqBytes(pad), byte(pad), 59)...)
		if !bytes.Equal(pt, want) {
			t.Fatalf("n %d: plaintext %x, want %x", n, pt, want)
		}
	}
}

func seqBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i + 1)
	}
	return b
}

func integrityConfigs() []config {
	var cs []config
	for _, c := range configs {
		if !c.noIntegrity {
			cs = append(cs, c)
		}
	}
	return cs
}

func TestBitFlips(t *testing.T) {
	for _, c := range integrityConfigs() {
		t.Run(c.name, func(t *testing.T) {
			tr := c.new(t)
			for _, esn := range []bool{false, true} {
				seq := uint64(0x1_0000_0010)
				packet := tr.Seal(nil, 0x1234, seq, esn, []byte("the quick brown fox jumps over the lazy dog"), 6)
				for i := 0; i < len(packet)*8; i++ {
					b := bytes.Clone(packet)
					b[i/8] ^= 1 << (i % 8)
					if _, _, err := tr.Open(b, seq, esn); err != ErrICV {
						t.Fatalf("esn %v: flipping bit %d: err %v, want ErrICV", esn, i, err)
					}
				}
			}
		})
	}
}

func TestTruncation(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			tr := c.new(t)
			packet := tr.Seal(nil, 0x1234, 7, false, bytes.Repeat([]byte{0xaa}, 37), 6)
			for cut := 0; cut < len(packet); cut++ {
				for _, b := range [][]byte{packet[:cut], packet[len(packet)-cut:]} {
					_, _, err := tr.Open(bytes.Clone(b), 7, false)
					if c.noIntegrity {
						continue // garbage may decrypt to a valid trailer; it must only not panic
					}
					if err == nil || (err != ErrTruncated && err != ErrICV) {
						t.Fatalf("%d of %d bytes: err %v", cut, len(packet), err)
					}
				}
			}
			if c.noIntegrity {
				return
			}
			// Growing the packet fails too.
			long := append(bytes.Clone(packet), make([]byte, 16)...)
			if _, _, err := tr.Open(long, 7, false); err == nil {
				t.Fatal("extended packet opened")
			}
		})
	}
}

func TestNotBlockMultiple(t *testing.T) {
	tr := config{enc: "aes-cbc", encKey: 16, auth: "hmac-sha1", authKey: 20}.new(t)
	packet := tr.Seal(nil, 1, 1, false, make([]byte, 30), 4)
	// Remove 4 ciphertext bytes: still long enough, no longer blocks.
	b := append(bytes.Clone(packet[:24+16]), packet[24+20:]...)
	if _, _, err := tr.Open(b, 1, false); err != ErrTruncated {
		t.Fatalf("err %v, want ErrTruncated", err)
	}
}

// TestBadPadding seals trailers that Seal would never produce, with a
// valid ICV, through the engine directly.
func TestBadPadding(t *testing.T) {
	cases := []struct {
		name    string
		trailer []byte // after a 5-byte payload
	}{
		{"wrong pad bytes", []byte{1, 2, 4, 3, 4}},
		{"zero pad byte", []byte{0, 2, 3, 3, 4}},
		{"pad longer than packet", []byte{1, 2, 3, 200, 4}},
		{"pad covers everything but one", []byte{1, 2, 3, 6, 4}},
	}
	for _, c := range integrityConfigs() {
		tr := c.new(t)
		for _, pc := range cases {
			t.Run(c.name+"/"+pc.name, func(t *testing.T) {
				pt := append([]byte{9, 9, 9, 9, 9}, pc.trailer...)
				for len(pt)%tr.align != 0 {
					pt = append([]byte{9}, pt...)
				}
				off := HeaderLen + tr.ivLen
				b := make([]byte, off+len(pt)+tr.icvLen)
				copy(b[off:], pt)
				b[3] = 1
				b[7] = 1
				tr.eng.seal(b, 1, false, nil)
				if _, _, err := tr.Open(b, 1, false); err != ErrPadding {
					t.Fatalf("err %v, want ErrPadding", err)
				}
			})
		}
	}
}

func TestNewErrors(t *testing.T) {
	k := func(n int) []byte { return make([]byte, n) }
	cases := []struct {
		name    string
		aead    string
		aeadKey []byte
		aeadICV int
		enc     string
		encKey  []byte
		auth    string
		authKey []byte
		authICV int
		want    string
	}{
		{"gcm key", "rfc4106(gcm(aes))", k(17), 0, "", nil, "", nil, 0, "esp: rfc4106(gcm(aes)): key is 17 bytes, want 20, 28 or 36 (key + 4-byte salt)"},
		{"gcm icv", "rfc4106(gcm(aes))", k(20), 100, "", nil, "", nil, 0, "esp: rfc4106(gcm(aes)): ICV is 100 bits, want 64, 96 or 128"},
		{"setkey icv mismatch", "aes-gcm-12", k(20), 128, "", nil, "", nil, 0, "esp: aes-gcm-12: ICV is 128 bits, want 96"},
		{"chacha key", "chacha20-poly1305", k(32), 0, "", nil, "", nil, 0, "esp: chacha20-poly1305: key is 32 bytes, want 36 (key + 4-byte salt)"},
		{"chacha icv", "rfc7539esp(chacha20,poly1305)", k(36), 96, "", nil, "", nil, 0, "esp: rfc7539esp(chacha20,poly1305): ICV is 96 bits, want 128"},
		{"unknown aead", "aes-ocb", k(20), 0, "", nil, "", nil, 0, `esp: unknown aead algorithm "aes-ocb"`},
		{"unknown enc", "", nil, 0, "twofish-cbc", k(16), "hmac-sha1", k(20), 0, `esp: unknown encryption algorithm "twofish-cbc"`},
		{"unknown auth", "", nil, 0, "aes-cbc", k(16), "hmac-ripemd160", k(20), 0, `esp: unknown integrity algorithm "hmac-ripemd160"`},
		{"ccm key", "rfc4309(ccm(aes))", k(20), 0, "", nil, "", nil, 0, "esp: rfc4309(ccm(aes)): key is 20 bytes, want 19, 27 or 35 (key + 3-byte salt)"},
		{"ccm icv", "rfc4309(ccm(aes))", k(19), 32, "", nil, "", nil, 0, "esp: rfc4309(ccm(aes)): ICV is 32 bits, want 64, 96 or 128"},
		{"gmac key", "null-aes-gmac", k(16), 0, "", nil, "", nil, 0, "key is 16 bytes, want 20, 28 or 36 (key + 4-byte salt)"},
		{"ctr key", "", nil, 0, "rfc3686(ctr(aes))", k(16), "hmac(sha1)", k(20), 0, "esp: rfc3686(ctr(aes)): key is 16 bytes, want 20, 28 or 36 (key + 4-byte salt)"},
		{"3des key", "", nil, 0, "3des-cbc", k(16), "hmac(sha1)", k(20), 0, "esp: 3des-cbc: key is 16 bytes, want 24"},
		{"des key", "", nil, 0, "des", k(7), "hmac(sha1)", k(20), 0, "esp: des: key is 7 bytes, want 8"},
		{"md5 key", "", nil, 0, "aes-cbc", k(16), "hmac-md5", k(20), 0, "esp: hmac-md5: key is 20 bytes, want 16"},
		{"xcbc key", "", nil, 0, "aes-cbc", k(16), "xcbc(aes)", k(32), 0, "esp: xcbc(aes): key is 32 bytes, want 16"},
		{"cmac icv", "", nil, 0, "aes-cbc", k(16), "aes-cmac", k(16), 64, "esp: aes-cmac: ICV is 64 bits, want 96 or 128"},
		{"cbc key", "", nil, 0, "cbc(aes)", k(20), "hmac(sha1)", k(20), 0, "esp: cbc(aes): key is 20 bytes, want 16, 24 or 32"},
		{"null key", "", nil, 0, "null", k(4), "hmac(sha1)", k(20), 0, "esp: null: key is 4 bytes, want 0"},
		{"sha1 key", "", nil, 0, "aes-cbc", k(16), "hmac-sha1", k(16), 0, "esp: hmac-sha1: key is 16 bytes, want 20"},
		{"sha256 icv", "", nil, 0, "aes-cbc", k(16), "hmac(sha256)", k(32), 80, "esp: hmac(sha256): ICV is 80 bits, want 96, 128, 160, 192, 224 or 256"},
		{"aead and enc", "aes-gcm-16", k(20), 0, "aes-cbc", k(16), "", nil, 0, "esp: aes-gcm-16 is an AEAD algorithm"},
		{"nothing", "", nil, 0, "", nil, "", nil, 0, "esp: no algorithm"},
		{"null alone", "", nil, 0, "null", nil, "", nil, 0, "protects nothing"},
		{"aead as enc", "", nil, 0, "aes-gcm-16", k(20), "hmac-sha1", k(20), 0, `unknown encryption algorithm "aes-gcm-16"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.aead, c.aeadKey, c.aeadICV, c.enc, c.encKey, c.auth, c.authKey, c.authICV)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
}

func TestAlgorithms(t *testing.T) {
	seen := map[string]bool{}
	for _, a := range Algorithms() {
		for _, n := range append(append([]string{}, a.SetkeyNames...), a.Aliases...) {
			if seen[n] {
				t.Errorf("name %q twice", n)
			}
			seen[n] = true
		}
		for _, n := range a.SetkeyNames {
			got, err := Lookup(a.Kind, n, 0)
			if err != nil || got.SADB != a.SADB || got.IKEv2ID != a.IKEv2ID {
				t.Errorf("Lookup(%s) = %+v, %v", n, got, err)
			}
		}
	}
	want := map[string][2]int{ // setkey name: SADB, IKEv2
		"aes-gcm-16": {20, 20}, "aes-gcm-12": {19, 19}, "aes-gcm-8": {18, 18},
		"chacha20-poly1305": {0, 28}, "aes-cbc": {12, 12}, "null": {11, 11},
		"hmac-sha1": {3, 2}, "hmac-sha256": {5, 12}, "hmac-sha384": {6, 13}, "hmac-sha512": {7, 14},
		"aes-ccm-16": {16, 16}, "aes-ccm-12": {15, 15}, "aes-ccm-8": {14, 14}, "null-aes-gmac": {23, 21},
		"aes-ctr": {13, 13}, "3des-cbc": {3, 3}, "des-cbc": {2, 2},
		"hmac-md5": {2, 1}, "aes-xcbc-mac": {9, 5}, "aes-cmac": {0, 8},
	}
	for _, a := range Algorithms() {
		if w, ok := want[a.SetkeyNames[0]]; ok {
			if int(a.SADB) != w[0] || int(a.IKEv2ID) != w[1] {
				t.Errorf("%s: SADB %d IKEv2 %d, want %v", a.SetkeyNames[0], a.SADB, a.IKEv2ID, w)
			}
			delete(want, a.SetkeyNames[0])
		}
	}
	if len(want) != 0 {
		t.Errorf("missing %v", want)
	}
	// A Linux name picks the GCM entry by ICV length.
	if a, err := Lookup(KindAEAD, "rfc4106(gcm(aes))", 96); err != nil || a.SADB != 19 || a.ICVLen != 12 {
		t.Errorf("rfc4106/96 = %+v, %v", a, err)
	}
}

func TestZero(t *testing.T) {
	for _, c := range configs {
		tr := c.new(t)
		packet := tr.Seal(nil, 1, 1, false, []byte("x"), 4)
		switch e := tr.eng.(type) {
		case *aeadEngine:
			g := e.vgcm
			tr.Zero()
			if e.salt != [4]byte{} || e.aead != nil || e.vgcm != nil {
				t.Errorf("%s: salt or cipher survives Zero", c.name)
			}
			if g != nil && !g.Zeroed() {
				t.Errorf("%s: AES-GCM key schedule survives Zero", c.name)
			}
		case *cbcEngine:
			tr.Zero()
			if (e.mac != nil && !bytes.Equal(e.mac.key, make([]byte, len(e.mac.key)))) || e.block != nil || e.nonce != [4]byte{} {
				t.Errorf("%s: keys survive Zero", c.name)
			}
		}
		if out := tr.Seal(nil, 1, 2, false, []byte("x"), 4); out != nil {
			t.Errorf("%s: Seal after Zero", c.name)
		}
		if _, _, err := tr.Open(packet, 1, false); !errors.Is(err, ErrZeroed) {
			t.Errorf("%s: Open after Zero: %v", c.name, err)
		}
		tr.Zero() // idempotent
	}
}

func TestConcurrent(t *testing.T) {
	for _, c := range []config{configs[2], configs[len(configs)-5]} {
		tr := c.new(t)
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					seq := uint64(g*1000 + i + 1)
					roundTrip(t, tr, i, seq, i%2 == 0)
				}
			}(g)
		}
		wg.Wait()
	}
}

func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			tr := c.new(t)
			payload := make([]byte, 1400)
			buf := make([]byte, tr.SealedLen(len(payload)))
			work := make([]byte, len(buf))
			seq := uint64(0)
			for _, esn := range []bool{false, true} {
				allocs := testing.AllocsPerRun(200, func() {
					seq++
					out := tr.Seal(buf, 1, seq, esn, payload, 4)
					copy(work, out)
					if _, _, err := tr.Open(work, seq, esn); err != nil {
						t.Fatal(err)
					}
				})
				if allocs != 0 {
					t.Errorf("esn %v: %v allocations per Seal+Open", esn, allocs)
				}
			}
		})
	}
}
