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

// AlgoSuites are the ESP suites of the algorithms issue, beyond Suites:
// every further encryption, AEAD and integrity algorithm at least once.
// Names are setkey names where the ICV length matters.
var AlgoSuites = []Suite{
	{Name: "aes-gcm-8", AEAD: "aes-gcm-8", AEADKeyLen: 20},
	{Name: "aes-gcm-12-192", AEAD: "aes-gcm-12", AEADKeyLen: 28},
	{Name: "aes-ccm-8", AEAD: "aes-ccm-8", AEADKeyLen: 19},
	{Name: "aes-ccm-12-192", AEAD: "aes-ccm-12", AEADKeyLen: 27},
	{Name: "aes-ccm-16-256", AEAD: "rfc4309(ccm(aes))", AEADKeyLen: 35},
	{Name: "aes-gmac-128", AEAD: "rfc4543(gcm(aes))", AEADKeyLen: 20},
	{Name: "aes-gmac-256", AEAD: "null-aes-gmac", AEADKeyLen: 36},
	{Name: "aes-cbc-192+hmac-sha256", Enc: "cbc(aes)", EncKeyLen: 24, Auth: "hmac(sha256)", AuthKeyLen: 32},
	{Name: "aes-ctr-128+hmac-sha1", Enc: "rfc3686(ctr(aes))", EncKeyLen: 20, Auth: "hmac(sha1)", AuthKeyLen: 20},
	{Name: "aes-ctr-256+aes-xcbc", Enc: "aes-ctr", EncKeyLen: 36, Auth: "xcbc(aes)", AuthKeyLen: 16},
	{Name: "3des-cbc+hmac-md5", Enc: "cbc(des3_ede)", EncKeyLen: 24, Auth: "hmac(md5)", AuthKeyLen: 16},
	{Name: "des-cbc+hmac-sha1", Enc: "des-cbc", EncKeyLen: 8, Auth: "hmac-sha1", AuthKeyLen: 20},
	{Name: "aes-cbc-128+aes-cmac", Enc: "aes-cbc", EncKeyLen: 16, Auth: "cmac(aes)", AuthKeyLen: 16},
	{Name: "null+aes-xcbc", Enc: "ecb(cipher_null)", Auth: "aes-xcbc-mac", AuthKeyLen: 16},
}

// AHSuites are the AH integrity algorithms (only Auth is used).
var AHSuites = []Suite{
	{Name: "hmac-md5", Auth: "hmac(md5)", AuthKeyLen: 16},
	{Name: "hmac-sha1", Auth: "hmac(sha1)", AuthKeyLen: 20},
	{Name: "hmac-sha256", Auth: "hmac(sha256)", AuthKeyLen: 32},
	{Name: "hmac-sha384", Auth: "hmac-sha384", AuthKeyLen: 48},
	{Name: "hmac-sha512", Auth: "hmac(sha512)", AuthKeyLen: 64},
	{Name: "aes-xcbc-mac", Auth: "xcbc(aes)", AuthKeyLen: 16},
	{Name: "aes-cmac", Auth: "cmac(aes)", AuthKeyLen: 16},
}

// SuiteByName finds a suite.
func SuiteByName(name string) (Suite, bool) {
	for _, s := range append(append(append([]Suite(nil), Suites...), AlgoSuites...), AHSuites...) {
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

// keyedAH fills an AH SAConfig's integrity algorithm from the suite's Auth.
func (s Suite) keyedAH(c *xfrm.SAConfig, seed byte) {
	k := make([]byte, s.AuthKeyLen)
	for i := range k {
		k[i] = seed*31 + 5 + byte(i*7)
	}
	c.Auth = xfrm.Algorithm{Name: s.Auth, Key: k}
}
