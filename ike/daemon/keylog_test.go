package daemon

import (
	"testing"

	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
)

// TestKeyLogLine: the ikev2_decryption_table entry has Wireshark's eight
// fields, hex without prefix, and the algorithm names of its
// packet-isakmp.c (vs_ikev2_encr_algs, vs_ikev2_auth_algs), written out
// here by hand; suites Wireshark cannot decrypt give no line.
func TestKeyLogLine(t *testing.T) {
	r := &exchange.Result{SPIi: 0x0102030405060708, SPIr: 0xa1a2a3a4a5a6a7a8, Keys: &ikecrypto.IKEKeys{
		Ei: []byte{0xe1, 0x01}, Er: []byte{0xe2, 0x02}, Ai: []byte{0xa1}, Ar: []byte{0xa2}}}
	for _, c := range []struct {
		suite exchange.IKESuite
		want  string
	}{
		{exchange.IKESuite{Encr: message.ENCR_AES_CBC, KeyBits: 128, Integ: message.AUTH_HMAC_SHA2_256_128},
			`0102030405060708,a1a2a3a4a5a6a7a8,e101,e202,"AES-CBC-128 [RFC3602]",a1,a2,"HMAC_SHA2_256_128 [RFC4868]"`},
		{exchange.IKESuite{Encr: message.ENCR_AES_GCM_16, KeyBits: 256, Integ: message.AUTH_NONE},
			`0102030405060708,a1a2a3a4a5a6a7a8,e101,e202,"AES-GCM-256 with 16 octet ICV [RFC5282]",a1,a2,"NONE [RFC4306]"`},
		{exchange.IKESuite{Encr: message.ENCR_AES_CBC, KeyBits: 256, Integ: message.AUTH_HMAC_SHA1_96},
			`0102030405060708,a1a2a3a4a5a6a7a8,e101,e202,"AES-CBC-256 [RFC3602]",a1,a2,"HMAC_SHA1_96 [RFC2404]"`},
	} {
		got, err := KeyLogLine(&c.suite, r)
		if err != nil || got != c.want {
			t.Errorf("%+v:\n got %s (%v)\nwant %s", c.suite, got, err, c.want)
		}
	}
	if _, err := KeyLogLine(&exchange.IKESuite{Encr: message.ENCR_CHACHA20_POLY1305}, r); err == nil {
		t.Error("ChaCha20-Poly1305 gave a line Wireshark cannot use")
	}
}
