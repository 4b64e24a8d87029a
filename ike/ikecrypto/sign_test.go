package ikecrypto

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

var (
	rsaKey, _   = rsa.GenerateKey(rand.Reader, 2048)
	p256Key, _  = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384Key, _  = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521Key, _  = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	_, edKey, _ = ed25519.GenerateKey(rand.Reader)
)

// TestAlgorithmIdentifierVectors compares the AlgorithmIdentifiers we
// send with RFC 7427 Appendix A (A.1 RSA PKCS#1 v1.5, A.3 ECDSA, A.4.3
// RSASSA-PSS with SHA-256) and RFC 8420 §2 (Ed25519), and parses each
// back to the same scheme.
func TestAlgorithmIdentifierVectors(t *testing.T) {
	for _, tt := range []struct {
		src string
		key crypto.PublicKey
		s   Scheme
		der string
	}{
		{"RFC 7427 A.1.1", &rsaKey.PublicKey, Scheme{Hash: HashSHA1}, "30 0d 06 09 2a 86 48 86 f7 0d 01 01 05 05 00"},
		{"RFC 7427 A.1.2", &rsaKey.PublicKey, Scheme{Hash: HashSHA2_256}, "30 0d 06 09 2a 86 48 86 f7 0d 01 01 0b 05 00"},
		{"RFC 7427 A.1.3", &rsaKey.PublicKey, Scheme{Hash: HashSHA2_384}, "30 0d 06 09 2a 86 48 86 f7 0d 01 01 0c 05 00"},
		{"RFC 7427 A.1.4", &rsaKey.PublicKey, Scheme{Hash: HashSHA2_512}, "30 0d 06 09 2a 86 48 86 f7 0d 01 01 0d 05 00"},
		{"RFC 7427 A.3.1", &p256Key.PublicKey, Scheme{Hash: HashSHA2_256}, "30 0a 06 08 2a 86 48 ce 3d 04 03 02"},
		{"RFC 7427 A.3.2", &p384Key.PublicKey, Scheme{Hash: HashSHA2_384}, "30 0a 06 08 2a 86 48 ce 3d 04 03 03"},
		{"RFC 7427 A.3.3", &p521Key.PublicKey, Scheme{Hash: HashSHA2_512}, "30 0a 06 08 2a 86 48 ce 3d 04 03 04"},
		{"RFC 7427 A.4.3", &rsaKey.PublicKey, Scheme{Hash: HashSHA2_256, PSS: true},
			"30 41 06 09 2a 86 48 86 f7 0d 01 01 0a 30 34 a0 0f 30 0d 06 09 60 86 48 01 65 03 04 02 01 05 00" +
				" a1 1c 30 1a 06 09 2a 86 48 86 f7 0d 01 01 08 30 0d 06 09 60 86 48 01 65 03 04 02 01 05 00 a2 03 02 01 20"},
		{"RFC 8420 §2", edKey.Public(), Scheme{Hash: HashIdentity}, "30 05 06 03 2b 65 70"},
	} {
		t.Run(tt.src, func(t *testing.T) {
			tt.s.Method = message.AuthDigitalSignature
			got, err := tt.s.AlgorithmIdentifier(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(tt.der); string(got) != string(want) {
				t.Errorf("got  %x\nwant %x", got, want)
			}
			back, err := parseAlgorithmIdentifier(unhex(tt.der), tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if back.Hash != tt.s.Hash || back.PSS != tt.s.PSS {
				t.Errorf("parsed %v, want %v", back, tt.s)
			}
		})
	}
}

// TestSignVerify signs and verifies with every key type and method, and
// checks that a flipped octet, a wrong key and an unannounced hash fail.
func TestSignVerify(t *testing.T) {
	octets := []byte("RealMessage | Nonce | prf(SK_p, IDx')")
	for _, tt := range []struct {
		name string
		key  crypto.Signer
		s    Scheme
	}{
		{"RSA method 1", rsaKey, Scheme{Method: message.AuthRSASignature, Hash: HashSHA1}},
		{"ECDSA P-256 method 9", p256Key, Scheme{Method: message.AuthECDSA256, Hash: HashSHA2_256}},
		{"ECDSA P-384 method 10", p384Key, Scheme{Method: message.AuthECDSA384, Hash: HashSHA2_384}},
		{"ECDSA P-521 method 11", p521Key, Scheme{Method: message.AuthECDSA521, Hash: HashSHA2_512}},
		{"RSA PKCS#1 SHA-256 method 14", rsaKey, Scheme{Method: message.AuthDigitalSignature, Hash: HashSHA2_256}},
		{"RSA PKCS#1 SHA-512 method 14", rsaKey, Scheme{Method: message.AuthDigitalSignature, Hash: HashSHA2_512}},
		{"RSA PSS SHA-256 method 14", rsaKey, Scheme{Method: message.AuthDigitalSignature, Hash: HashSHA2_256, PSS: true}},
		{"RSA PSS SHA-384 method 14", rsaKey, Scheme{Method: message.AuthDigitalSignature, Hash: HashSHA2_384, PSS: true}},
		{"ECDSA P-256 SHA-256 method 14", p256Key, Scheme{Method: message.AuthDigitalSignature, Hash: HashSHA2_256}},
		{"ECDSA P-384 SHA-512 method 14", p384Key, Scheme{Method: message.AuthDigitalSignature, Hash: HashSHA2_512}},
		{"Ed25519 method 14", edKey, Scheme{Method: message.AuthDigitalSignature, Hash: HashIdentity}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data, err := Sign(tt.key, tt.s, octets)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Verify(tt.key.Public(), tt.s.Method, data, octets, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.Hash != tt.s.Hash || got.PSS != tt.s.PSS {
				t.Errorf("verified as %v, signed as %v", got, tt.s)
			}
			bad := append([]byte(nil), octets...)
			bad[3] ^= 1
			if _, err := Verify(tt.key.Public(), tt.s.Method, data, bad, nil); !errors.Is(err, ErrSignature) {
				t.Errorf("changed octets: %v, want ErrSignature", err)
			}
			other := map[bool]crypto.PublicKey{true: &p256Key.PublicKey, false: &rsaKey.PublicKey}[tt.key == rsaKey]
			if _, err := Verify(other, tt.s.Method, data, octets, nil); err == nil {
				t.Error("verified with another key")
			}
		})
	}
	// SHA-1 under method 14 is refused unless announced (we do not).
	data, err := Sign(rsaKey, Scheme{Method: message.AuthDigitalSignature, Hash: HashSHA1}, octets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(&rsaKey.PublicKey, message.AuthDigitalSignature, data, octets, nil); err == nil {
		t.Error("accepted an RFC 7427 SHA-1 signature we did not announce")
	}
	if _, err := Verify(&rsaKey.PublicKey, message.AuthDigitalSignature, data, octets, []uint16{HashSHA1}); err != nil {
		t.Errorf("SHA-1 when announced: %v", err)
	}
}

// TestVerifyIndependent checks Verify against signatures made with the
// standard library alone: RFC 4754 §7 r‖s for method 9, and a PSS
// signature with a 20-byte salt (not ours) whose parameters say so.
func TestVerifyIndependent(t *testing.T) {
	octets := []byte("octets signed elsewhere")
	d := sha256.Sum256(octets)
	r, s, err := ecdsa.Sign(rand.Reader, p256Key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	rs := make([]byte, 64)
	r.FillBytes(rs[:32])
	s.FillBytes(rs[32:])
	if _, err := Verify(&p256Key.PublicKey, message.AuthECDSA256, rs, octets, nil); err != nil {
		t.Errorf("RFC 4754 r||s: %v", err)
	}
	if _, err := Verify(&p256Key.PublicKey, message.AuthECDSA384, rs, octets, nil); err == nil {
		t.Error("method 10 accepted with a P-256 key")
	}

	d384 := sha512.Sum384(octets)
	sig, err := rsa.SignPSS(rand.Reader, rsaKey, crypto.SHA384, d384[:], &rsa.PSSOptions{SaltLength: 20})
	if err != nil {
		t.Fatal(err)
	}
	// RSASSA-PSS-params: SHA-384, MGF1(SHA-384), salt 20 (the DER default,
	// so absent), written out by hand.
	ai := unhex("30 3c 06 09 2a 86 48 86 f7 0d 01 01 0a 30 2f a0 0f 30 0d 06 09 60 86 48 01 65 03 04 02 02 05 00" +
		" a1 1c 30 1a 06 09 2a 86 48 86 f7 0d 01 01 08 30 0d 06 09 60 86 48 01 65 03 04 02 02 05 00")
	data := append(append([]byte{byte(len(ai))}, ai...), sig...)
	got, err := Verify(&rsaKey.PublicKey, message.AuthDigitalSignature, data, octets, nil)
	if err != nil || !got.PSS || got.Hash != HashSHA2_384 {
		t.Errorf("PSS salt 20: %v %v", got, err)
	}
	if _, err := Verify(&rsaKey.PublicKey, message.AuthDigitalSignature, data[:5], octets, nil); err == nil {
		t.Error("truncated AlgorithmIdentifier accepted")
	}
}

// TestChooseScheme follows strongSwan's choice: RFC 7427 when the peer
// announced hashes, the classic method otherwise, Ed25519 only with the
// Identity hash.
func TestChooseScheme(t *testing.T) {
	for _, tt := range []struct {
		name string
		pub  crypto.PublicKey
		peer []uint16
		want Scheme
		err  bool
	}{
		{"RSA classic", &rsaKey.PublicKey, nil, Scheme{Method: message.AuthRSASignature, Hash: HashSHA1}, false},
		{"RSA 7427", &rsaKey.PublicKey, []uint16{HashSHA2_512, HashSHA2_256}, Scheme{Method: message.AuthDigitalSignature, Hash: HashSHA2_256}, false},
		{"P-384 classic", &p384Key.PublicKey, nil, Scheme{Method: message.AuthECDSA384, Hash: HashSHA2_384}, false},
		{"P-384 7427 curve hash", &p384Key.PublicKey, DefaultHashes, Scheme{Method: message.AuthDigitalSignature, Hash: HashSHA2_384}, false},
		{"Ed25519", edKey.Public(), DefaultHashes, Scheme{Method: message.AuthDigitalSignature, Hash: HashIdentity}, false},
		{"Ed25519 without 7427", edKey.Public(), nil, Scheme{}, true},
		{"no common hash", &rsaKey.PublicKey, []uint16{HashIdentity}, Scheme{}, true},
	} {
		got, err := ChooseScheme(tt.pub, nil, tt.peer, false)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("%s: %v %v, want %v (error %v)", tt.name, got, err, tt.want, tt.err)
		}
	}
}
