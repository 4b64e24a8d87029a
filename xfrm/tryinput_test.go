package xfrm

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
)

// TestTryInput: TryInput leaves to its caller, counting nothing, a
// packet whose outermost IPsec header is truncated or names no SA, and
// is Input for every other one: what the SA decapsulates comes back (the
// oracle is the sender's cleartext), and what it rejects is dropped and
// counted as Input counts it.
func TestTryInput(t *testing.T) {
	sel := Selector{Src: exactPrefix(eA4), Dst: exactPrefix(eB4)}
	tmpl := []Template{{Proto: ProtoESP, Mode: ModeTransport, Level: LevelRequire}}
	const spi = 0x800
	cases := []struct {
		name    string
		mangle  func(wire []byte) []byte // the received packet, from the sent one
		handled bool
		want    bool   // the cleartext comes back
		counter string // the Linux counter that counts it, "" for none
	}{
		{name: "ours", mangle: func(w []byte) []byte { return w }, handled: true, want: true},
		{name: "unknown spi", mangle: func(w []byte) []byte {
			binary.BigEndian.PutUint32(w[20:], spi+1)
			return w
		}},
		{name: "esp header truncated", mangle: func(w []byte) []byte { return w[:20+7] }},
		{name: "icv mismatch", mangle: func(w []byte) []byte {
			w[len(w)-1] ^= 1
			return w
		}, handled: true, counter: "XfrmInStateProtoError"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, in, _ := inPlaceEngines(t, sel, tmpl, espSA(spi, eA4, eB4, ModeTransport))
			cleartext := udpPkt(eA4, eB4, 100)
			v, wire := out.Output(cleartext, HeapAllocator{})
			if v != VerdictProtected {
				t.Fatalf("output verdict %v", v)
			}
			b := c.mangle(bytes.Clone(wire))
			before := in.Stats.Snapshot()
			got, handled := in.TryInput(b[:20], ProtoESP, b[20:], HeapAllocator{})
			if handled != c.handled {
				t.Fatalf("handled %v, want %v", handled, c.handled)
			}
			if c.want != bytes.Equal(got, cleartext) || (!c.want && got != nil) {
				t.Errorf("got %x, want the cleartext: %v", got, c.want)
			}
			after := in.Stats.Snapshot()
			for i := range after {
				want := uint64(0)
				if after[i].Name == c.counter {
					want = 1
				}
				if d := after[i].Value - before[i].Value; d != want {
					t.Errorf("%s counted %d, want %d", after[i].Name, d, want)
				}
			}
			if c.counter != "" && !slices.ContainsFunc(after, func(s Stat) bool { return s.Name == c.counter }) {
				t.Fatalf("no counter %s", c.counter)
			}
		})
	}
}
