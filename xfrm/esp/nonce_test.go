package esp

import (
	"bytes"
	"fmt"
	"testing"
)

// TestNonceNotReusedAcrossTransforms: two transforms made from one key —
// what a daemon restarted with the same static keys, or an SA deleted and
// added again, builds — seal sequence numbers 1..n each. For every
// counter-based mode (IV = f(seq)) no IV may appear twice: a repeated
// (key, nonce) pair breaks GCM's authentication and CTR's confidentiality
// (RFC 4106 §3, RFC 3686 §3.1, RFC 7634 §2). The IVs are read from the
// packets, as a peer or capture would see them.
func TestNonceNotReusedAcrossTransforms(t *testing.T) {
	const n = 64
	cases := []struct {
		name            string
		aead            string
		enc, auth       string
		keyLen, authLen int
	}{
		{name: "AES-GCM (RFC 4106)", aead: "rfc4106(gcm(aes))", keyLen: 20},
		{name: "AES-CCM (RFC 4309)", aead: "rfc4309(ccm(aes))", keyLen: 19},
		{name: "AES-GMAC (RFC 4543)", aead: "rfc4543(gcm(aes))", keyLen: 20},
		{name: "ChaCha20-Poly1305 (RFC 7634)", aead: "rfc7539esp(chacha20,poly1305)", keyLen: 36},
		{name: "AES-CTR (RFC 3686)", enc: "rfc3686(ctr(aes))", auth: "hmac(sha256)", keyLen: 20, authLen: 32},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key := bytes.Repeat([]byte{0x5a}, c.keyLen)
			authKey := bytes.Repeat([]byte{0xa5}, c.authLen)
			seen := map[[8]byte]string{}
			for run := 0; run < 2; run++ {
				var tr *Transform
				var err error
				if c.aead != "" {
					tr, err = New(c.aead, key, 0, "", nil, "", nil, 0)
				} else {
					tr, err = New("", nil, 0, c.enc, key, c.auth, authKey, 0)
				}
				if err != nil {
					t.Fatal(err)
				}
				for seq := uint64(1); seq <= n; seq++ {
					pkt := tr.Seal(nil, 0x1000, seq, false, []byte("payload"), 17)
					var iv [8]byte
					copy(iv[:], pkt[HeaderLen:HeaderLen+8])
					if prev, dup := seen[iv]; dup {
						t.Fatalf("IV %x of run %d seq %d repeats that of %s under the same key", iv, run, seq, prev)
					}
					seen[iv] = fmt.Sprintf("run %d seq %d", run, seq)
				}
			}
		})
	}
}
