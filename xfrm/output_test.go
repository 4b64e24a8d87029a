package xfrm

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// Independent packet builders for the output tests: they share nothing
// with ParseFlow or the output path.

var (
	o4A = netip.MustParseAddr("192.0.2.1")
	o4B = netip.MustParseAddr("192.0.2.2")
	o4G = netip.MustParseAddr("198.51.100.1") // tunnel endpoints
	o4H = netip.MustParseAddr("198.51.100.2")
)

// ipv4UDP is an IPv4 UDP datagram of total length n (n >= 28) from o4A to o4B,
// ports 1000 -> 2000, with the given flags/fragment-offset word.
func ipv4UDP(n int, fragWord uint16) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	binary.BigEndian.PutUint16(p[4:], 0x1234)
	binary.BigEndian.PutUint16(p[6:], fragWord)
	p[8], p[9] = 64, 17
	a, b := o4A.As4(), o4B.As4()
	copy(p[12:], a[:])
	copy(p[16:], b[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	if fragWord&0x1fff == 0 {
		binary.BigEndian.PutUint16(p[20:], 1000)
		binary.BigEndian.PutUint16(p[22:], 2000)
		binary.BigEndian.PutUint16(p[24:], uint16(n-20))
	}
	return p
}

// frag6 is a non-initial IPv6 fragment bA -> bB carrying UDP data.
func frag6(n int) []byte {
	p := make([]byte, 48+n)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(8+n))
	p[6], p[7] = 44, 64
	a, b := bA.As16(), bB.As16()
	copy(p[8:], a[:])
	copy(p[24:], b[:])
	p[40] = 17
	binary.BigEndian.PutUint16(p[42:], 1448) // offset 181*8, M clear
	binary.BigEndian.PutUint32(p[44:], 7)
	return p
}

func espSA(spi uint32, src, dst netip.Addr, mode Mode) SAConfig {
	return SAConfig{Proto: ProtoESP, SPI: spi, Src: src, Dst: dst, Mode: mode, ReplayWindow: 64,
		AEAD: Algorithm{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{1}, 20)}}
}

func outEngine(t *testing.T, sa SAConfig, pols ...*Policy) *Engine {
	t.Helper()
	e := NewEngine()
	t.Cleanup(e.Close)
	if _, err := e.AddSA(sa); err != nil {
		t.Fatal(err)
	}
	for _, p := range pols {
		if _, err := e.AddPolicy(p); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// TestOutputLengthLimit: a protected packet whose length field cannot hold
// it is dropped and counted (XfrmOutError), never sent with its length
// taken modulo 2^16 (issue 10, finding 3).
func TestOutputLengthLimit(t *testing.T) {
	sel4 := Selector{Src: netip.PrefixFrom(o4A, 32), Dst: netip.PrefixFrom(o4B, 32)}
	cases := []struct {
		name string
		mode Mode
		pkt  []byte
		drop bool
	}{
		{"tunnel/65535", ModeTunnel, ipv4UDP(65535, 0), true},
		{"transport/65535", ModeTransport, ipv4UDP(65535, 0), true},
		{"tunnel/65400", ModeTunnel, ipv4UDP(65400, 0), false},
		{"transport/65400", ModeTransport, ipv4UDP(65400, 0), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, dst := o4A, o4B
			tmpl := Template{Proto: ProtoESP, Mode: c.mode, Level: LevelRequire}
			if c.mode == ModeTunnel {
				src, dst = o4G, o4H
				tmpl.Src, tmpl.Dst = src, dst
			}
			e := outEngine(t, espSA(0x1000, src, dst, c.mode),
				&Policy{Dir: DirOut, Sel: sel4, Action: ActionProtect, Templates: []Template{tmpl}})
			v, out := e.Output(c.pkt, HeapAllocator{})
			if c.drop {
				if v != VerdictDrop {
					t.Fatalf("verdict %v (length field %d for %d bytes), want drop", v, binary.BigEndian.Uint16(out[2:]), len(out))
				}
				if e.Stats.OutError.Load() != 1 {
					t.Errorf("XfrmOutError = %d, want 1", e.Stats.OutError.Load())
				}
				return
			}
			if v != VerdictProtected {
				t.Fatalf("verdict %v, want protected", v)
			}
			if got := int(binary.BigEndian.Uint16(out[2:])); got != len(out) {
				t.Errorf("total length %d, packet %d bytes", got, len(out))
			}
		})
	}
}

// TestOutputFragments: transport mode is never applied to a fragment
// (RFC 4301 §7), and a fragment whose ports are OPAQUE is not sent in clear
// when a port-specific protect policy for its addresses and protocol is
// preferred to what it matched (issue 10, finding 3).
func TestOutputFragments(t *testing.T) {
	sel := Selector{Src: netip.PrefixFrom(bA, 128), Dst: netip.PrefixFrom(bB, 128), Proto: ProtoUDP}
	portSel := sel
	portSel.DstPorts = PortRange{Lo: 2000, Hi: 2000}
	tmpl := []Template{{Proto: ProtoESP, Mode: ModeTransport, Level: LevelRequire}}
	sa := espSA(0x1000, bA, bB, ModeTransport)

	t.Run("opaque/port-policy", func(t *testing.T) {
		e := outEngine(t, sa, &Policy{Dir: DirOut, Sel: portSel, Action: ActionProtect, Templates: tmpl})
		if v, _ := e.Output(frag6(64), HeapAllocator{}); v != VerdictDrop {
			t.Fatalf("verdict %v for a fragment a port-specific policy may cover, want drop", v)
		}
		if e.Stats.OutPolError.Load() != 1 {
			t.Errorf("XfrmOutPolError = %d, want 1", e.Stats.OutPolError.Load())
		}
	})
	t.Run("opaque/port-policy-behind-bypass", func(t *testing.T) {
		// A bypass preferred to the port policy decides for every port:
		// the fragment may go in clear.
		e := outEngine(t, sa,
			&Policy{Dir: DirOut, Sel: sel, Priority: 10, Action: ActionBypass},
			&Policy{Dir: DirOut, Sel: portSel, Priority: 20, Action: ActionProtect, Templates: tmpl})
		if v, _ := e.Output(frag6(64), HeapAllocator{}); v != VerdictPass {
			t.Fatalf("verdict %v, want pass", v)
		}
	})
	t.Run("opaque/other-proto", func(t *testing.T) {
		e := outEngine(t, sa, &Policy{Dir: DirOut, Sel: Selector{Src: sel.Src, Dst: sel.Dst, Proto: ProtoTCP, DstPorts: portSel.DstPorts},
			Action: ActionProtect, Templates: tmpl})
		if v, _ := e.Output(frag6(64), HeapAllocator{}); v != VerdictPass {
			t.Fatalf("verdict %v, want pass", v)
		}
	})
	t.Run("transport/fragment", func(t *testing.T) {
		e := outEngine(t, sa, &Policy{Dir: DirOut, Sel: sel, Action: ActionProtect, Templates: tmpl})
		if v, _ := e.Output(frag6(64), HeapAllocator{}); v != VerdictDrop {
			t.Fatalf("verdict %v: transport mode applied to a fragment", v)
		}
		if e.Stats.OutStateModeError.Load() != 1 {
			t.Errorf("XfrmOutStateModeError = %d, want 1", e.Stats.OutStateModeError.Load())
		}
	})
	t.Run("transport/initial-fragment-v4", func(t *testing.T) {
		sel4 := Selector{Src: netip.PrefixFrom(o4A, 32), Dst: netip.PrefixFrom(o4B, 32)}
		e := outEngine(t, espSA(0x1000, o4A, o4B, ModeTransport),
			&Policy{Dir: DirOut, Sel: sel4, Action: ActionProtect, Templates: tmpl})
		if v, _ := e.Output(ipv4UDP(600, 0x2000), HeapAllocator{}); v != VerdictDrop {
			t.Fatalf("verdict %v: transport mode applied to an initial fragment", v)
		}
	})
	t.Run("tunnel/fragment", func(t *testing.T) {
		// Tunnel mode carries fragments (RFC 4301 §7.1).
		ttmpl := []Template{{Proto: ProtoESP, Mode: ModeTunnel, Level: LevelRequire, Src: bA, Dst: bB}}
		e := outEngine(t, espSA(0x1000, bA, bB, ModeTunnel), &Policy{Dir: DirOut, Sel: sel, Action: ActionProtect, Templates: ttmpl})
		if v, _ := e.Output(frag6(64), HeapAllocator{}); v != VerdictProtected {
			t.Fatalf("verdict %v, want protected", v)
		}
	})
}

// TestTunnelDF: an IPv4 outer header copies DF from an IPv4 inner header
// and sets it for an IPv6 inner packet (RFC 4301 §8.1; issue 10, finding 7c).
func TestTunnelDF(t *testing.T) {
	for _, c := range []struct {
		name   string
		pkt    []byte
		sel    Selector
		wantDF bool
	}{
		{"v4-df", ipv4UDP(200, 0x4000), Selector{Src: netip.PrefixFrom(o4A, 32), Dst: netip.PrefixFrom(o4B, 32)}, true},
		{"v4-nodf", ipv4UDP(200, 0), Selector{Src: netip.PrefixFrom(o4A, 32), Dst: netip.PrefixFrom(o4B, 32)}, false},
		{"v6", udpPacket6(100), Selector{Src: netip.PrefixFrom(bA, 128), Dst: netip.PrefixFrom(bB, 128)}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmpl := []Template{{Proto: ProtoESP, Mode: ModeTunnel, Level: LevelRequire, Src: o4G, Dst: o4H}}
			e := outEngine(t, espSA(0x1000, o4G, o4H, ModeTunnel), &Policy{Dir: DirOut, Sel: c.sel, Action: ActionProtect, Templates: tmpl})
			v, out := e.Output(c.pkt, HeapAllocator{})
			if v != VerdictProtected {
				t.Fatalf("verdict %v", v)
			}
			if df := out[6]&0x40 != 0; df != c.wantDF {
				t.Errorf("outer DF %v, want %v", df, c.wantDF)
			}
		})
	}
}

// icmp6Err is an ICMPv6 error of type typ from src to dst quoting quote.
func icmp6Err(src, dst netip.Addr, typ uint8, quote []byte) []byte {
	p := make([]byte, 48+len(quote))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(8+len(quote)))
	p[6], p[7] = 58, 64
	a, b := src.As16(), dst.As16()
	copy(p[8:], a[:])
	copy(p[24:], b[:])
	p[40] = typ
	copy(p[48:], quote)
	return p
}

// TestICMPErrorReverseFlow: an ICMP error whose own selectors match no
// policy is decided by the reversed flow of the packet it quotes (RFC 4301
// §6.2, Linux's xfrm_decode_session_reverse; issue 10, finding 6).
func TestICMPErrorReverseFlow(t *testing.T) {
	bC := netip.MustParseAddr("2001:db8::3") // a router on the path, sending the error for bA
	// bA sends the error to bB about a packet bB sent it, bB:2000 ->
	// bA:1000; the reversed flow is bA:1000 -> bB:2000, which revSel
	// protects.
	quoted := udpPacket6(64)
	a, b := bA.As16(), bB.As16()
	copy(quoted[8:], b[:])
	copy(quoted[24:], a[:])
	binary.BigEndian.PutUint16(quoted[40:], 2000)
	binary.BigEndian.PutUint16(quoted[42:], 1000)
	revSel := Selector{Src: netip.PrefixFrom(bA, 128), Dst: netip.PrefixFrom(bB, 128), Proto: ProtoUDP,
		SrcPorts: PortRange{Lo: 1000, Hi: 1000}}
	tr := []Template{{Proto: ProtoESP, Mode: ModeTransport, Level: LevelRequire}}
	tun := []Template{{Proto: ProtoESP, Mode: ModeTunnel, Level: LevelRequire, Src: bA, Dst: bB}}
	for _, c := range []struct {
		name  string
		src   netip.Addr
		tmpl  []Template
		sa    SAConfig
		quote []byte
		want  Verdict
		stat  string
	}{
		{"transport", bA, tr, espSA(0x1000, bA, bB, ModeTransport), quoted, VerdictProtected, ""},
		{"transport/truncated-quote", bA, tr, espSA(0x1000, bA, bB, ModeTransport), quoted[:44], VerdictProtected, ""},
		{"tunnel/router", bC, tun, espSA(0x1000, bA, bB, ModeTunnel), quoted, VerdictProtected, ""},
		{"transport/router", bC, tr, espSA(0x1000, bA, bB, ModeTransport), quoted, VerdictDrop, "XfrmOutPolError"},
		{"quote-without-ports", bA, tr, espSA(0x1000, bA, bB, ModeTransport), quoted[:42], VerdictDrop, "XfrmOutPolError"},
		{"quote-without-header", bA, tr, espSA(0x1000, bA, bB, ModeTransport), quoted[:30], VerdictDrop, "XfrmOutPolError"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := outEngine(t, c.sa, &Policy{Dir: DirOut, Sel: revSel, Action: ActionProtect, Templates: c.tmpl})
			v, _ := e.Output(icmp6Err(c.src, bB, 1, c.quote), HeapAllocator{})
			if v != c.want {
				t.Fatalf("verdict %v, want %v", v, c.want)
			}
			if c.stat != "" {
				if n, _ := e.Stats.Get(c.stat); n != 1 {
					t.Errorf("%s = %d, want 1", c.stat, n)
				}
			}
		})
	}
	t.Run("unprotected-quote", func(t *testing.T) {
		e := outEngine(t, espSA(0x1000, bA, bB, ModeTransport), &Policy{Dir: DirOut,
			Sel: Selector{Src: revSel.Src, Dst: revSel.Dst, Proto: ProtoTCP}, Action: ActionProtect, Templates: tr})
		if v, _ := e.Output(icmp6Err(bA, bB, 1, quoted), HeapAllocator{}); v != VerdictPass {
			t.Fatalf("verdict %v, want pass", v)
		}
	})
}

// emitAlloc is a test Emitter: it keeps every packet handed to Emit.
type emitAlloc struct {
	HeapAllocator
	emitted [][]byte
}

func (a *emitAlloc) Emit(p []byte) { a.emitted = append(a.emitted, p) }

// TestTunnelPreFragment: a packet that a tunnel cannot carry whole within
// the outer length field is fragmented before encapsulation, each piece
// protected by the same SA and decapsulated by the peer into fragments
// that reassemble to the packet; with no Emitter, or DF set, it is dropped
// (issue 10, finding 3).
func TestTunnelPreFragment(t *testing.T) {
	v6 := udpPacket6(65535 - 8)
	for _, c := range []struct {
		name   string
		inner  []byte
		sel    Selector
		gw, gh netip.Addr
	}{
		{"v4-in-v4", ipv4UDP(65535, 0), Selector{Src: netip.PrefixFrom(o4A, 32), Dst: netip.PrefixFrom(o4B, 32)}, o4G, o4H},
		{"v6-in-v4", v6, Selector{Src: netip.PrefixFrom(bA, 128), Dst: netip.PrefixFrom(bB, 128)}, o4G, o4H},
		{"v6-in-v6", v6, Selector{Src: netip.PrefixFrom(bA, 128), Dst: netip.PrefixFrom(bB, 128)},
			netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("2001:db8:1::2")},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmpl := []Template{{Proto: ProtoESP, Mode: ModeTunnel, Level: LevelRequire, Src: c.gw, Dst: c.gh}}
			sa := espSA(0x1000, c.gw, c.gh, ModeTunnel)
			out := outEngine(t, sa, &Policy{Dir: DirOut, Sel: c.sel, Action: ActionProtect, Templates: tmpl})
			in := outEngine(t, sa, &Policy{Dir: DirIn, Sel: c.sel, Action: ActionProtect, Templates: tmpl})
			a := &emitAlloc{}
			v, last := out.Output(c.inner, a)
			if v != VerdictProtected {
				t.Fatalf("verdict %v, want protected in pieces (XfrmOutError %d)", v, out.Stats.OutError.Load())
			}
			wire := append(a.emitted, last)
			if len(wire) < 2 {
				t.Fatalf("%d packets, want the inner packet in pieces", len(wire))
			}
			// The peer decapsulates each piece and reassembles the
			// inner fragments (with the SA they came through) before its
			// policy check: only the last piece yields the packet.
			var whole []byte
			for i, w := range wire {
				hl, proto, total := 20, Proto(w[9]), int(binary.BigEndian.Uint16(w[2:]))
				if w[0]>>4 == 6 {
					hl, proto, total = 40, Proto(w[6]), 40+int(binary.BigEndian.Uint16(w[4:]))
				}
				if total != len(w) {
					t.Fatalf("outer length field %d for a %d-byte packet", total, len(w))
				}
				inner := in.Input(w[:hl], proto, bytes.Clone(w[hl:]), HeapAllocator{})
				if inner != nil && i < len(wire)-1 {
					t.Fatalf("piece %d of %d completed the packet", i+1, len(wire))
				}
				whole = inner
			}
			for _, st := range in.Stats.Snapshot() {
				if st.Value != 0 {
					t.Fatalf("peer counted %s = %d", st.Name, st.Value)
				}
			}
			if whole == nil {
				t.Fatalf("peer did not reassemble the pieces (ReasmFails %d)", in.Reasm.Stats.ReasmFails.Load())
			}
			hl := 20
			if c.inner[0]>>4 == 6 {
				hl = 40
			}
			if !bytes.Equal(whole[hl:], c.inner[hl:]) {
				t.Fatalf("reassembled payload differs (%d bytes, want %d)", len(whole)-hl, len(c.inner)-hl)
			}
		})
	}
	t.Run("DF", func(t *testing.T) {
		tmpl := []Template{{Proto: ProtoESP, Mode: ModeTunnel, Level: LevelRequire, Src: o4G, Dst: o4H}}
		e := outEngine(t, espSA(0x1000, o4G, o4H, ModeTunnel), &Policy{Dir: DirOut,
			Sel: Selector{Src: netip.PrefixFrom(o4A, 32), Dst: netip.PrefixFrom(o4B, 32)}, Action: ActionProtect, Templates: tmpl})
		if v, _ := e.Output(ipv4UDP(65535, 0x4000), &emitAlloc{}); v != VerdictDrop {
			t.Fatalf("verdict %v for a DF packet, want drop", v)
		}
	})
}

// fixedAlloc hands out one reusable buffer.
type fixedAlloc struct{ buf []byte }

func (a *fixedAlloc) Alloc(n int) []byte { return a.buf[:n] }

// TestOutputAllocs: the output path, with the checks for fragments, ICMP
// errors and length limits, allocates nothing per packet.
func TestOutputAllocs(t *testing.T) {
	sel := Selector{Src: netip.PrefixFrom(bA, 128), Dst: netip.PrefixFrom(bB, 128)}
	for _, mode := range []Mode{ModeTransport, ModeTunnel} {
		tmpl := []Template{{Proto: ProtoESP, Mode: mode, Level: LevelRequire}}
		if mode == ModeTunnel {
			tmpl[0].Src, tmpl[0].Dst = bA, bB
		}
		for _, encap := range []bool{false, true} {
			c := espSA(0x1000, bA, bB, mode)
			if encap {
				c.Encap = Encap{Type: EncapESPInUDP, SPort: 4500, DPort: 4500}
			}
			e := outEngine(t, c, &Policy{Dir: DirOut, Sel: sel, Action: ActionProtect, Templates: tmpl})
			pkt := udpPacket6(1400)
			a := &fixedAlloc{buf: make([]byte, 2048)}
			if n := testing.AllocsPerRun(100, func() { e.Output(pkt, a) }); n != 0 {
				t.Errorf("%s (encapsulated %v): %v allocations per packet", mode, encap, n)
			}
		}
	}
}

// FuzzOutputICMPError drives the output path with arbitrary ICMPv6 error
// quotes under a port-specific protect policy: it must never panic, and an
// error it lets go in clear must not quote a flow that policy protects.
func FuzzOutputICMPError(f *testing.F) {
	sel := Selector{Src: netip.PrefixFrom(bA, 128), Dst: netip.PrefixFrom(bB, 128), Proto: ProtoUDP,
		SrcPorts: PortRange{Lo: 1000, Hi: 1000}}
	e := NewEngine()
	defer e.Close()
	if _, err := e.AddSA(espSA(0x1000, bA, bB, ModeTransport)); err != nil {
		f.Fatal(err)
	}
	if _, err := e.AddPolicy(&Policy{Dir: DirOut, Sel: sel, Action: ActionProtect,
		Templates: []Template{{Proto: ProtoESP, Mode: ModeTransport, Level: LevelRequire}}}); err != nil {
		f.Fatal(err)
	}
	q := udpPacket6(16)
	a, b := bA.As16(), bB.As16()
	copy(q[8:], b[:])
	copy(q[24:], a[:])
	binary.BigEndian.PutUint16(q[42:], 1000)
	f.Add(uint8(1), q)
	f.Add(uint8(3), q[:44])
	f.Add(uint8(4), frag6(8))
	f.Fuzz(func(t *testing.T, typ uint8, quote []byte) {
		pkt := icmp6Err(bA, bB, typ%128, quote)
		v, _ := e.Output(pkt, HeapAllocator{})
		if v != VerdictPass {
			return
		}
		// Passed in clear: the quoted packet, if it parses with its
		// ports, must not be from bB port 1000... to bA (reversed: the
		// protected flow bA:1000 -> bB).
		if len(quote) >= 44 && quote[0]>>4 == 6 && quote[6] == 17 &&
			bytes.Equal(quote[8:24], b[:]) && bytes.Equal(quote[24:40], a[:]) &&
			binary.BigEndian.Uint16(quote[42:]) == 1000 {
			t.Fatalf("an ICMP error quoting the protected flow went in clear")
		}
	})
}
