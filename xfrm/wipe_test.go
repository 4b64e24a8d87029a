package xfrm

import (
	"bytes"
	"net/netip"
	"testing"
)

// TestKeysWipedOnDelete: deleting an SA wipes its key bytes, but only once
// the last packet holding it is done; a packet in flight keeps working.
func TestKeysWipedOnDelete(t *testing.T) {
	e := NewEngine()
	defer e.Close()
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	key := bytes.Repeat([]byte{0xa5}, 20)
	auth := bytes.Repeat([]byte{0x5a}, 32)
	sa, err := e.AddSA(SAConfig{Proto: ProtoESP, SPI: 0x700, Src: a, Dst: b, AEAD: Algorithm{Name: "rfc4106(gcm(aes))", Key: key}})
	if err != nil {
		t.Fatal(err)
	}
	cbc, err := e.AddSA(SAConfig{Proto: ProtoESP, SPI: 0x701, Src: a, Dst: b,
		Enc: Algorithm{Name: "cbc(aes)", Key: key[:16]}, Auth: Algorithm{Name: "hmac(sha256)", Key: auth}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sa.Config.AEAD.Key, key) {
		t.Fatal("the SA does not hold its own copy of the key")
	}
	key[0] = 0 // the caller's buffer is not the SA's
	if sa.Config.AEAD.Key[0] != 0xa5 {
		t.Fatal("the SA aliases the caller's key buffer")
	}
	// A packet in flight holds the SA across its deletion.
	if !sa.tryGet() {
		t.Fatal("tryGet on a live SA failed")
	}
	if _, err := e.SAD.Delete(b, ProtoESP, 0x700); err != nil {
		t.Fatal(err)
	}
	if sa.tryGet() {
		t.Fatal("a new packet took a deleted SA")
	}
	if allZero(sa.Config.AEAD.Key) {
		t.Fatal("keys wiped while a packet still uses the SA")
	}
	sa.put()
	if !allZero(sa.Config.AEAD.Key) {
		t.Fatalf("keys not wiped after the last packet: %x", sa.Config.AEAD.Key)
	}
	// Flush wipes too, encryption and integrity keys alike.
	e.SAD.Flush(0)
	if !allZero(cbc.Config.Enc.Key) || !allZero(cbc.Config.Auth.Key) {
		t.Fatal("flush left key bytes behind")
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return len(b) > 0
}
