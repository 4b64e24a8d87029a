package esp

import (
	"bytes"
	"testing"
)

// fuzzConfigs are the transforms FuzzOpen picks from with its alg byte.
var fuzzConfigs = []config{
	{name: "gcm16", aead: "aes-gcm-16", aeadKey: 20},
	{name: "gcm8", aead: "aes-gcm-8", aeadKey: 20},
	{name: "chacha", aead: "chacha20-poly1305", aeadKey: 36},
	{name: "cbc+sha256", enc: "aes-cbc", encKey: 16, auth: "hmac-sha256", authKey: 32},
	{name: "null+sha1", enc: "null", auth: "hmac-sha1", authKey: 20},
	{name: "cbc-only", enc: "aes-cbc", encKey: 16, noIntegrity: true},
}

// FuzzOpen feeds arbitrary packets to Open (which must never panic, and
// must authenticate whatever it accepts) and arbitrary payloads through
// Seal and Open (which must round-trip). The checked-in corpus in
// testdata/fuzz/FuzzOpen holds valid packets of each transform.
func FuzzOpen(f *testing.F) {
	trs := make([]*Transform, len(fuzzConfigs))
	for i, c := range fuzzConfigs {
		trs[i] = c.new(f)
	}
	f.Add([]byte{}, uint8(0), uint64(1), false)
	f.Add(trs[0].Seal(nil, 7, 3, false, []byte("seed"), 4), uint8(0), uint64(3), false)
	f.Fuzz(func(t *testing.T, data []byte, alg uint8, seq uint64, esn bool) {
		c := fuzzConfigs[int(alg)%len(trs)]
		tr := trs[int(alg)%len(trs)]

		b := bytes.Clone(data)
		payload, nh, err := tr.Open(b, seq, esn)
		if err == nil {
			if len(payload) > len(data) {
				t.Fatalf("payload %d bytes from %d", len(payload), len(data))
			}
			if !c.noIntegrity && tr.ivLen != 16 {
				// It authenticated, so it must be exactly what Seal makes
				// from the same payload when the IV is the one it carried.
				tr2 := *tr
				tr2.testIV = data[HeaderLen : HeaderLen+tr.ivLen]
				spi := uint32(data[0])<<24 | uint32(data[1])<<16 | uint32(data[2])<<8 | uint32(data[3])
				seqLo := uint32(data[4])<<24 | uint32(data[5])<<16 | uint32(data[6])<<8 | uint32(data[7])
				full := seq&^0xffffffff | uint64(seqLo)
				if !esn {
					full = uint64(seqLo)
				}
				if again := tr2.Seal(nil, spi, full, esn, payload, nh); len(again) == len(data) && !bytes.Equal(again, data) {
					t.Fatalf("accepted packet differs from its reseal")
				}
			}
		}

		// Round trip of the data as a payload.
		if seq == 0 {
			seq = 1
		}
		out := tr.Seal(nil, 0x99, seq, esn, data, 17)
		got, nh, err := tr.Open(out, seq, esn)
		if err != nil || nh != 17 || !bytes.Equal(got, data) {
			t.Fatalf("round trip: nh %d err %v", nh, err)
		}
	})
}
