package xfrm

import (
	"fmt"
	"strings"
	"testing"
)

// TestKeysNotFormatted: printing an SA config in any fmt verb must not
// reveal its keys.
func TestKeysNotFormatted(t *testing.T) {
	key := []byte{0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04}
	c := SAConfig{SPI: 0x1234, AEAD: Algorithm{Name: "rfc4106(gcm(aes))", Key: key}, Auth: Algorithm{Name: "hmac(sha1)", Key: key}}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, c)
		for _, leak := range []string{"deadbeef", "222 173 190 239", "0xde", "[222"} {
			if strings.Contains(out, leak) {
				t.Errorf("%s prints the key: %s", verb, out)
			}
		}
	}
}
