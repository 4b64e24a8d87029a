package ikecrypto

import (
	"bytes"
	"errors"
	"math/big"
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// TestECDHVectors: RFC 5903 §8.1 and §8.2 (ECP groups 19 and 20: the KE
// data is x | y, the shared secret the x coordinate) and RFC 7748 §6.1
// (X25519, as RFC 8031 uses it for group 31).
func TestECDHVectors(t *testing.T) {
	tests := []struct {
		source          string
		method          uint16
		priv, pub, peer string
		shared          string
	}{
		{"RFC 5903 8.1", message.KE_ECP256,
			"C88F01F5 10D9AC3F 70A292DA A2316DE5 44E9AAB8 AFE84049 C62A9C57 862D1433",
			`DAD0B653 94221CF9 B051E1FE CA5787D0 98DFE637 FC90B9EF 945D0C37 72581180
			 5271A046 1CDB8252 D61F1C45 6FA3E59A B1F45B33 ACCF5F58 389E0577 B8990BB3`,
			`D12DFB52 89C8D4F8 1208B702 70398C34 2296970A 0BCCB74C 736FC755 4494BF63
			 56FBF3CA 366CC23E 8157854C 13C58D6A AC23F046 ADA30F83 53E74F33 039872AB`,
			"D6840F6B 42F6EDAF D13116E0 E1256520 2FEF8E9E CE7DCE03 812464D0 4B9442DE"},
		{"RFC 5903 8.2", message.KE_ECP384,
			`099F3C70 34D4A2C6 99884D73 A375A67F 7624EF7C 6B3C0F16 0647B674 14DCE655
			 E35B5380 41E649EE 3FAEF896 783AB194`,
			`667842D7 D180AC2C DE6F74F3 7551F557 55C7645C 20EF73E3 1634FE72 B4C55EE6
			 DE3AC808 ACB4BDB4 C88732AE E95F41AA 9482ED1F C0EEB9CA FC498462 5CCFC23F
			 65032149 E0E144AD A0241815 35A0F38E EB9FCFF3 C2C947DA E69B4C63 4573A81C`,
			`E558DBEF 53EECDE3 D3FCCFC1 AEA08A89 A987475D 12FD950D 83CFA417 32BC509D
			 0D1AC43A 0336DEF9 6FDA41D0 774A3571 DCFBEC7A ACF31964 72169E83 8430367F
			 66EEBE3C 6E70C416 DD5F0C68 759DD1FF F83FA401 42209DFF 5EAAD96D B9E6386C`,
			`11187331 C279962D 93D60424 3FD592CB 9D0A926F 422E4718 7521287E 7156C5C4
			 D6031355 69B9E9D0 9CF5D4A2 70F59746`},
		{"RFC 7748 6.1 Alice", message.KE_CURVE25519,
			"77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
			"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
			"de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
			"4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"},
		{"RFC 7748 6.1 Bob", message.KE_CURVE25519,
			"5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
			"de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
			"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
			"4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"},
	}
	for _, tt := range tests {
		k, err := newECDH(tt.method, x(t, tt.priv))
		if err != nil {
			t.Fatalf("%s: %v", tt.source, err)
		}
		if !bytes.Equal(k.Public(), x(t, tt.pub)) {
			t.Errorf("%s: KE data %x", tt.source, k.Public())
		}
		s, err := k.SharedSecret(x(t, tt.peer))
		if err != nil || !bytes.Equal(s, x(t, tt.shared)) {
			t.Errorf("%s: shared %x, %v", tt.source, s, err)
		}
		// Off-by-one lengths (e.g. SEC 1's 0x04 prefix) are refused.
		peer := x(t, tt.peer)
		for _, bad := range [][]byte{append([]byte{4}, peer...), peer[1:], nil} {
			if _, err := k.SharedSecret(bad); !errors.Is(err, ErrInvalidPublic) {
				t.Errorf("%s: %d-byte peer value: %v", tt.source, len(bad), err)
			}
		}
	}
}

// TestInvalidPeerValues: values that are not group elements, or that
// force a degenerate secret, are refused.
func TestInvalidPeerValues(t *testing.T) {
	p := modp2048.p
	pm1 := new(big.Int).Sub(p, big.NewInt(1)).FillBytes(make([]byte, 256))
	one := big.NewInt(1).FillBytes(make([]byte, 256))
	offCurve := bytes.Repeat([]byte{0xaa}, 64)
	tests := []struct {
		name   string
		method uint16
		peer   []byte
	}{
		{"MODP y = 1 (RFC 6989)", message.KE_MODP2048, one},
		{"MODP y = p-1 (RFC 6989)", message.KE_MODP2048, pm1},
		{"MODP y = p", message.KE_MODP2048, p.FillBytes(make([]byte, 256))},
		{"MODP short", message.KE_MODP2048, one[1:]},
		{"ECP-256 point not on the curve", message.KE_ECP256, offCurve},
		// RFC 7748 §6.1 / RFC 8031 §2: the all-zero shared secret from a
		// low-order point (here u = 0) must be refused.
		{"X25519 low-order point u=0", message.KE_CURVE25519, make([]byte, 32)},
		{"ML-KEM-768 ciphertext of wrong size", message.KE_MLKEM768, make([]byte, 10)},
	}
	for _, tt := range tests {
		k, err := NewKeyExchange(tt.method)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.SharedSecret(tt.peer); !errors.Is(err, ErrInvalidPublic) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	if _, _, err := Respond(message.KE_MLKEM1024, make([]byte, 100)); !errors.Is(err, ErrInvalidPublic) {
		t.Errorf("ML-KEM-1024 short encapsulation key: %v", err)
	}
}

// TestKeyExchangeAgreement runs both halves of every method and checks
// that they agree and that the KE data has the length RFC 7296 §3.4,
// RFC 5903 §7, RFC 8031 §2 and FIPS 203 prescribe.
func TestKeyExchangeAgreement(t *testing.T) {
	tests := []struct {
		method          uint16
		pubLen, respLen int
	}{
		{message.KE_MODP2048, 256, 256},
		{message.KE_ECP256, 64, 64},
		{message.KE_ECP384, 96, 96},
		{message.KE_CURVE25519, 32, 32},
		{message.KE_MLKEM768, 1184, 1088},
		{message.KE_MLKEM1024, 1568, 1568},
	}
	for _, tt := range tests {
		if !Supported(tt.method) {
			t.Errorf("method %d not supported", tt.method)
		}
		i, err := NewKeyExchange(tt.method)
		if err != nil {
			t.Fatal(err)
		}
		if len(i.Public()) != tt.pubLen {
			t.Errorf("method %d: KEi of %d bytes, want %d", tt.method, len(i.Public()), tt.pubLen)
		}
		rpub, rs, err := Respond(tt.method, i.Public())
		if err != nil {
			t.Fatalf("method %d: %v", tt.method, err)
		}
		if len(rpub) != tt.respLen {
			t.Errorf("method %d: KEr of %d bytes, want %d", tt.method, len(rpub), tt.respLen)
		}
		is, err := i.SharedSecret(rpub)
		if err != nil || !bytes.Equal(is, rs) {
			t.Errorf("method %d: shared secrets differ (%v)", tt.method, err)
		}
		i.Wipe()
	}
	if _, err := NewKeyExchange(message.KE_MODP3072); err == nil {
		t.Error("unsupported group 15 accepted")
	}
}

// TestMODP2048Prime derives group 14's prime from its definition in RFC
// 3526 §3, p = 2^2048 - 2^1984 - 1 + 2^64 * ( [2^1918 pi] + 124476 ),
// computing pi here (Machin's formula), so a typo in the hex constant
// cannot hide; and checks it is a safe prime.
func TestMODP2048Prime(t *testing.T) {
	const bits = 1918 + 64 // working precision: 64 guard bits
	one := new(big.Int).Lsh(big.NewInt(1), bits)
	atanInv := func(n int64) *big.Int { // atan(1/n) * 2^bits
		sum := new(big.Int)
		nn := big.NewInt(n * n)
		term := new(big.Int).Div(one, big.NewInt(n))
		for k := int64(0); term.Sign() != 0; k++ {
			q := new(big.Int).Div(term, big.NewInt(2*k+1))
			if k%2 == 0 {
				sum.Add(sum, q)
			} else {
				sum.Sub(sum, q)
			}
			term.Div(term, nn)
		}
		return sum
	}
	pi := new(big.Int).Mul(atanInv(5), big.NewInt(16))
	pi.Sub(pi, new(big.Int).Mul(atanInv(239), big.NewInt(4)))
	floor := new(big.Int).Rsh(pi, 64) // [2^1918 pi]
	p := new(big.Int).Lsh(big.NewInt(1), 2048)
	p.Sub(p, new(big.Int).Lsh(big.NewInt(1), 1984))
	p.Sub(p, big.NewInt(1))
	p.Add(p, new(big.Int).Lsh(floor.Add(floor, big.NewInt(124476)), 64))
	if p.Cmp(modp2048.p) != 0 {
		t.Fatalf("group 14 prime differs from RFC 3526's definition")
	}
	q := new(big.Int).Rsh(p, 1)
	if !p.ProbablyPrime(4) || !q.ProbablyPrime(4) {
		t.Error("group 14 prime is not a safe prime")
	}
}
