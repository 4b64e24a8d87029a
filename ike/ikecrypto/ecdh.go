package ikecrypto

import (
	"crypto/ecdh"
	"crypto/rand"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// ecdhKE is a private key of an ECP group (RFC 5903) or of Curve25519
// (RFC 8031), both through crypto/ecdh.
type ecdhKE struct {
	method uint16
	curve  ecdh.Curve
	priv   *ecdh.PrivateKey
	pub    []byte
}

func curveOf(method uint16) ecdh.Curve {
	switch method {
	case message.KE_ECP256:
		return ecdh.P256()
	case message.KE_ECP384:
		return ecdh.P384()
	}
	return ecdh.X25519()
}

// newECDH generates a key, or when priv is set (tests with RFC vectors)
// takes that scalar.
func newECDH(method uint16, priv []byte) (*ecdhKE, error) {
	c := curveOf(method)
	var k *ecdh.PrivateKey
	var err error
	if priv != nil {
		k, err = c.NewPrivateKey(priv)
	} else {
		k, err = c.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	pub := k.PublicKey().Bytes()
	if method != message.KE_CURVE25519 {
		// RFC 5903 §7: the KE data is x | y, without SEC 1's 0x04 prefix.
		pub = pub[1:]
	}
	return &ecdhKE{method: method, curve: c, priv: k, pub: pub}, nil
}

func (k *ecdhKE) Method() uint16 { return k.method }

func (k *ecdhKE) Public() []byte { return k.pub }

// SharedSecret returns the x coordinate of the common point for ECP (RFC
// 5903 §7) or the X25519 output (RFC 8031 §2). crypto/ecdh checks that the
// point is on the curve and refuses an all-zero X25519 result, the check
// RFC 8031 §2 requires against low-order points.
func (k *ecdhKE) SharedSecret(peer []byte) ([]byte, error) {
	want := len(k.pub)
	if len(peer) != want {
		return nil, invalidPublic(k.method, "%d bytes, want %d", len(peer), want)
	}
	raw := peer
	if k.method != message.KE_CURVE25519 {
		raw = append([]byte{4}, peer...)
	}
	pk, err := k.curve.NewPublicKey(raw)
	if err != nil {
		return nil, invalidPublic(k.method, "not a point of the group")
	}
	s, err := k.priv.ECDH(pk)
	if err != nil {
		return nil, invalidPublic(k.method, "shared secret refused (low-order point)")
	}
	return s, nil
}

func (k *ecdhKE) Wipe() { k.priv = nil } // crypto/ecdh keeps the scalar private; drop the reference
