package xfrm

import (
	"net/netip"
	"testing"
)

// TestSAHold: a reader holding an SA keeps its keys intact across a
// delete; the release wipes them; a dead SA cannot be held.
func TestSAHold(t *testing.T) {
	d := NewSAD()
	dst := netip.MustParseAddr("192.0.2.2")
	sa, err := NewSA(SAConfig{Proto: ProtoESP, SPI: 0x1000, Src: netip.MustParseAddr("192.0.2.1"), Dst: dst,
		AEAD: Algorithm{Name: "aes-gcm-16", Key: []byte("0123456789abcdefghij")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Add(sa); err != nil {
		t.Fatal(err)
	}
	key := sa.Config.AEAD.Key
	if !sa.Hold() {
		t.Fatal("Hold failed on a live SA")
	}
	if _, err := d.Delete(dst, ProtoESP, 0x1000); err != nil {
		t.Fatal(err)
	}
	if string(key) != "0123456789abcdefghij" {
		t.Fatalf("keys wiped while held: %q", key)
	}
	if sa.Hold() {
		t.Fatal("Hold succeeded on a deleted SA")
	}
	sa.Release()
	for _, b := range key {
		if b != 0 {
			t.Fatalf("keys not wiped after the last release: %q", key)
		}
	}
}
