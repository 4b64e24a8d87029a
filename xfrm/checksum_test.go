package xfrm

import (
	"math/rand/v2"
	"testing"
)

// TestIPv4Checksum checks ipv4Checksum against RFC 1071's definition,
// summed one 16-bit word at a time, on random headers of every length up
// to 60 bytes and on the all-0xff and all-zero edge cases, and on the
// example header of RFC 1071 §3 (the words 0001 f203 f4f5 f6f7: sum ddf2).
func TestIPv4Checksum(t *testing.T) {
	ref := func(h []byte) uint16 {
		var sum uint32
		for i := 0; i < len(h); i += 2 {
			w := uint32(h[i]) << 8
			if i+1 < len(h) {
				w |= uint32(h[i+1])
			}
			sum += w
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		return ^uint16(sum)
	}
	if got := ipv4Checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != ^uint16(0xddf2) {
		t.Fatalf("RFC 1071 example: %#04x, want %#04x", got, ^uint16(0xddf2))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 60; n++ {
		for _, fill := range []int{-1, 0, 0xff} {
			for k := 0; k < 50; k++ {
				h := make([]byte, n)
				for i := range h {
					if fill < 0 {
						h[i] = byte(r.Uint32())
					} else {
						h[i] = byte(fill)
					}
				}
				if got, want := ipv4Checksum(h), ref(h); got != want {
					t.Fatalf("%x: %#04x, want %#04x", h, got, want)
				}
			}
		}
	}
}
