package xfrm

import (
	"testing"
)

// BenchmarkOutput is the engine's share of sending one ESP packet
// (AES-GCM-128, a 1400-byte UDP datagram, transport and tunnel mode),
// sealed in place around the packet as the stack's frame path does:
// "output" is Engine.Output, "seal" the bare ESP transform on the same
// payload, so that the difference is what the engine adds to the cipher
// (flow parsing, policy and SA lookups, building the headers, sequence
// number and lifetime accounting).
func BenchmarkOutput(b *testing.B) {
	for _, mode := range []Mode{ModeTransport, ModeTunnel} {
		const spi = 0x900
		e := benchESPEngine(b, spi, mode, DirOut)
		defer e.Close()
		src := udpPkt(eA4, eB4, 1400)
		const head = 128
		buf := make([]byte, head+len(src)+64)
		b.Run(mode.String()+"/output", func(b *testing.B) {
			b.SetBytes(1400)
			b.ReportAllocs()
			a := &outPlaceAlloc{buf: buf, off: head}
			for i := 0; i < b.N; i++ {
				p := buf[head : head+copy(buf[head:], src)]
				if v, _ := e.Output(p, a); v != VerdictProtected {
					b.Fatalf("verdict %v", v)
				}
			}
		})
		b.Run(mode.String()+"/seal", func(b *testing.B) {
			b.SetBytes(1400)
			b.ReportAllocs()
			t := e.SAD.Lookup(eB4, ProtoESP, spi).esp
			for i := 0; i < b.N; i++ {
				copy(buf[head:], src)
				// In place, as Output seals: ESP header and IV (16 bytes)
				// before the payload.
				t.Seal(buf[head+4:], spi, uint64(i+1), false, buf[head+20:head+len(src)], 17)
			}
		})
	}
}
