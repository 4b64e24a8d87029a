package ikecrypto

import (
	"crypto/rand"
	"math/big"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// modpGroup is a finite-field Diffie-Hellman group (RFC 3526).
type modpGroup struct {
	method uint16
	p      *big.Int
	g      *big.Int
	size   int // length of p in bytes: KE data and g^ir are padded to it
}

// modp2048 is the 2048-bit MODP group 14 of RFC 3526 §3, generator 2:
// p = 2^2048 - 2^1984 - 1 + 2^64 * ( [2^1918 pi] + 124476 ).
var modp2048 = func() *modpGroup {
	p, _ := new(big.Int).SetString(
		"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"+
			"29024E088A67CC74020BBEA63B139B22514A08798E3404DD"+
			"EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"+
			"E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"+
			"EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"+
			"C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"+
			"83655D23DCA3AD961C62F356208552BB9ED529077096966D"+
			"670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"+
			"E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9"+
			"DE2BCBF6955817183995497CEA956AE515D2261898FA0510"+
			"15728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)
	return &modpGroup{method: message.KE_MODP2048, p: p, g: big.NewInt(2), size: 256}
}()

// modpKE is one private value of a MODP group. math/big is not constant
// time; a MODP group is offered for interoperability with peers that know
// nothing better, the ECP and Curve25519 groups are preferred.
type modpKE struct {
	grp *modpGroup
	x   *big.Int
	pub []byte
}

func newMODP(grp *modpGroup) (*modpKE, error) {
	// x uniform in [1, p-2]; a full-length exponent costs a few ms and
	// avoids arguing about short-exponent security.
	max := new(big.Int).Sub(grp.p, big.NewInt(2))
	x, err := rand.Int(rand.Reader, max)
	if err != nil {
		return nil, err
	}
	x.Add(x, big.NewInt(1))
	y := new(big.Int).Exp(grp.g, x, grp.p)
	return &modpKE{grp: grp, x: x, pub: y.FillBytes(make([]byte, grp.size))}, nil
}

func (k *modpKE) Method() uint16 { return k.grp.method }

func (k *modpKE) Public() []byte { return k.pub }

// SharedSecret checks 1 < y < p-1 (RFC 6989 §2.1: rejects the values of
// order 1 and 2) and returns y^x mod p padded to the length of p, as
// RFC 7296 §2.14 specifies g^ir.
func (k *modpKE) SharedSecret(peer []byte) ([]byte, error) {
	if len(peer) != k.grp.size {
		return nil, invalidPublic(k.grp.method, "%d bytes, want %d", len(peer), k.grp.size)
	}
	y := new(big.Int).SetBytes(peer)
	pm1 := new(big.Int).Sub(k.grp.p, big.NewInt(1))
	if y.Cmp(big.NewInt(1)) <= 0 || y.Cmp(pm1) >= 0 {
		return nil, invalidPublic(k.grp.method, "value outside 2..p-2")
	}
	z := new(big.Int).Exp(y, k.x, k.grp.p)
	out := z.FillBytes(make([]byte, k.grp.size))
	z.SetInt64(0)
	return out, nil
}

func (k *modpKE) Wipe() {
	if k.x != nil {
		k.x.SetInt64(0) // math/big may keep copies; this is best effort
	}
}
