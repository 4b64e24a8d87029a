package xfrm

import (
	"testing"
)

// BenchmarkInput is the engine's share of receiving one ESP packet
// (AES-GCM-128, a 1400-byte payload), decapsulated in place as the
// stack's fast path does: "input" is TryInput, "open" the bare ESP
// transform on the same packet, so that the difference is what the
// engine adds to the cipher (SA lookup, replay window, lifetime
// accounting, rebuilding the packet, the selector and policy checks).
// Both copy the received packet into the buffer first, as a link does.
func BenchmarkInput(b *testing.B) {
	for _, mode := range []Mode{ModeTransport, ModeTunnel} {
		const spi, batch = 0x900, 1024
		out := benchESPEngine(b, spi, mode, DirOut)
		defer out.Close()
		wire := make([][]byte, batch)
		for i := range wire {
			v, w := out.Output(udpPkt(eA4, eB4, 1400), HeapAllocator{})
			if v != VerdictProtected {
				b.Fatalf("output verdict %v", v)
			}
			wire[i] = w
		}
		// receiver returns a fresh receiving engine: a replay window
		// takes each packet once.
		receiver := func() *Engine { return benchESPEngine(b, spi, mode, DirIn) }
		buf := make([]byte, 2048)
		b.Run(mode.String()+"/input", func(b *testing.B) {
			b.SetBytes(1400)
			b.ReportAllocs()
			var in *Engine
			a := &inPlaceAlloc{}
			for i := 0; i < b.N; i++ {
				if i%batch == 0 {
					b.StopTimer()
					if in != nil {
						in.Close()
					}
					in = receiver()
					b.StartTimer()
				}
				p := buf[:copy(buf, wire[i%batch])]
				a.buf = p
				if got, ok := in.TryInput(p[:20], ProtoESP, p[20:], a); !ok || got == nil || &got[0] != &p[0] {
					b.Fatalf("packet %d not decapsulated in place (%v)", i, in.Stats.Snapshot())
				}
			}
			in.Close()
		})
		b.Run(mode.String()+"/open", func(b *testing.B) {
			b.SetBytes(1400)
			b.ReportAllocs()
			in := receiver()
			defer in.Close()
			t := in.SAD.Lookup(eB4, ProtoESP, spi).esp
			for i := 0; i < b.N; i++ {
				p := buf[:copy(buf, wire[i%batch])]
				if _, _, err := t.Open(p[20:], uint64(i%batch+1), false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchESPEngine returns an engine with one ESP AES-GCM-128 SA (spi, eA4
// to eB4, in mode) and a protect policy in dir for the traffic between
// them: one end of the input and output benchmarks.
func benchESPEngine(b *testing.B, spi uint32, mode Mode, dir Dir) *Engine {
	tmpl := []Template{{Proto: ProtoESP, Mode: mode, Level: LevelRequire}}
	if mode == ModeTunnel {
		tmpl[0].Src, tmpl[0].Dst = eA4, eB4
	}
	e := NewEngine()
	if _, err := e.AddSA(espSA(spi, eA4, eB4, mode)); err != nil {
		b.Fatal(err)
	}
	sel := Selector{Src: exactPrefix(eA4), Dst: exactPrefix(eB4)}
	if _, err := e.AddPolicy(&Policy{Dir: dir, Sel: sel, Action: ActionProtect, Templates: tmpl}); err != nil {
		b.Fatal(err)
	}
	return e
}
