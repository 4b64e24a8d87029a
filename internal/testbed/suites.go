// Package testbed builds two IPsec stacks joined by an in-memory Ethernet
// link, with SAs and policies for a chosen suite, mode and address
// families, and drives traffic between them. The demo, the end-to-end tests
// and the benchmarks share it.
package testbed

import "github.com/ipsecstack/ipsecstack/xfrm"

// Suite is an ESP algorithm combination with its key lengths.
type Suite struct {
	Name string
	// AEAD or Enc+Auth, by Linux xfrm name.
	AEAD       string
	AEADKeyLen int // including the 4-byte salt
	Enc        string
	EncKeyLen  int
	Auth       string
	AuthKeyLen int
}

// Suites are the ESP suites of the data-plane issue, with their keys sized
// as RFC 4106, 7634, 3602, 2404, 4868 and 2410 require.
var Suites = []Suite{
	{Name: "aes-gcm-128", AEAD: "rfc4106(gcm(aes))", AEADKeyLen: 20},
	{Name: "aes-gcm-256", AEAD: "rfc4106(gcm(aes))", AEADKeyLen: 36},
	{Name: "chacha20-poly1305", AEAD: "rfc7539esp(chacha20,poly1305)", AEADKeyLen: 36},
	{Name: "aes-cbc-128+hmac-sha1", Enc: "cbc(aes)", EncKeyLen: 16, Auth: "hmac(sha1)", AuthKeyLen: 20},
	{Name: "aes-cbc-256+hmac-sha1", Enc: "cbc(aes)", EncKeyLen: 32, Auth: "hmac(sha1)", AuthKeyLen: 20},
	{Name: "aes-cbc-128+hmac-sha256", Enc: "cbc(aes)", EncKeyLen: 16, Auth: "hmac(sha256)", AuthKeyLen: 32},
	{Name: "aes-cbc-256+hmac-sha384", Enc: "cbc(aes)", EncKeyLen: 32, Auth: "hmac(sha384)", AuthKeyLen: 48},
	{Name: "aes-cbc-256+hmac-sha512", Enc: "cbc(aes)", EncKeyLen: 32, Auth: "hmac(sha512)", AuthKeyLen: 64},
	{Name: "null+hmac-sha256", Enc: "ecb(cipher_null)", EncKeyLen: 0, Auth: "hmac(sha256)", AuthKeyLen: 32},
}

// SuiteByName finds a suite.
func SuiteByName(name string) (Suite, bool) {
	for _, s := range Suites {
		if s.Name == name {
			return s, true
		}
	}
	return Suite{}, false
}

// keyed fills an SAConfig's algorithms with keys derived from seed, so
// both ends of a pair agree and every SA has different keys.
func (s Suite) keyed(c *xfrm.SAConfig, seed byte) {
	k := func(n int, salt byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed*31 + salt + byte(i*7)
		}
		return b
	}
	if s.AEAD != "" {
		c.AEAD = xfrm.Algorithm{Name: s.AEAD, Key: k(s.AEADKeyLen, 1)}
		return
	}
	c.Enc = xfrm.Algorithm{Name: s.Enc, Key: k(s.EncKeyLen, 2)}
	c.Auth = xfrm.Algorithm{Name: s.Auth, Key: k(s.AuthKeyLen, 3)}
}
