package xfrm

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

var (
	bA = netip.MustParseAddr("2001:db8::1")
	bB = netip.MustParseAddr("2001:db8::2")
)

func bundleSA(t testing.TB, proto Proto, spi uint32, src, dst netip.Addr, mode Mode) SAConfig {
	t.Helper()
	c := SAConfig{Proto: proto, SPI: spi, Src: src, Dst: dst, Mode: mode, ReplayWindow: 64, ESN: true}
	switch proto {
	case ProtoESP:
		c.AEAD = Algorithm{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{1}, 20)}
	case ProtoAH:
		c.Auth = Algorithm{Name: "hmac(sha256)", Key: bytes.Repeat([]byte{2}, 32)}
	}
	return c
}

// udpPacket6 is an IPv6 UDP packet from bA to bB with n payload bytes of
// text (compressible).
func udpPacket6(n int) []byte {
	p := make([]byte, 48+n)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(8+n))
	p[6], p[7] = 17, 64
	a, b := bA.As16(), bB.As16()
	copy(p[8:], a[:])
	copy(p[24:], b[:])
	binary.BigEndian.PutUint16(p[40:], 1000)
	binary.BigEndian.PutUint16(p[42:], 2000)
	binary.BigEndian.PutUint16(p[44:], uint16(8+n))
	for i := 0; i < n; i++ {
		p[48+i] = "abcabcabd"[i%9]
	}
	return p
}

// bundlePair builds sender and receiver engines with the same SAs and the
// policy templates tmpl (output order) both ways.
func bundlePair(t testing.TB, tmpl []Template, sas []SAConfig) (out, in *Engine) {
	t.Helper()
	out, in = NewEngine(), NewEngine()
	t.Cleanup(out.Close)
	t.Cleanup(in.Close)
	for _, e := range []*Engine{out, in} {
		for _, c := range sas {
			if _, err := e.AddSA(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	sel := Selector{Src: netip.PrefixFrom(bA, 128), Dst: netip.PrefixFrom(bB, 128)}
	if _, err := out.AddPolicy(&Policy{Dir: DirOut, Sel: sel, Action: ActionProtect, Templates: tmpl}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.AddPolicy(&Policy{Dir: DirIn, Sel: sel, Action: ActionProtect, Templates: tmpl}); err != nil {
		t.Fatal(err)
	}
	return out, in
}

// deliver runs a protected packet through the receiver's input path the
// way the stack does: IP header, protocol, payload.
func deliver(in *Engine, pkt []byte) []byte {
	hdr := pkt[:40]
	return in.Input(hdr, Proto(pkt[6]), bytes.Clone(pkt[40:]), HeapAllocator{})
}

// TestBundleOrder: IPComp -> ESP -> AH as listed; the wire shows AH
// outermost, then ESP; the receiver peels them and accepts.
func TestBundleOrder(t *testing.T) {
	tmpl := []Template{
		{Proto: ProtoIPComp, Mode: ModeTransport, Level: LevelRequire},
		{Proto: ProtoESP, Mode: ModeTransport, Level: LevelRequire},
		{Proto: ProtoAH, Mode: ModeTransport, Level: LevelRequire},
	}
	out, in := bundlePair(t, tmpl, []SAConfig{
		bundleSA(t, ProtoIPComp, 0x300, bA, bB, ModeTransport),
		bundleSA(t, ProtoESP, 0x301, bA, bB, ModeTransport),
		bundleSA(t, ProtoAH, 0x302, bA, bB, ModeTransport),
	})
	for _, n := range []int{20, 1000} {
		pkt := udpPacket6(n)
		v, wire := out.Output(pkt, HeapAllocator{})
		if v != VerdictProtected {
			t.Fatalf("n %d: verdict %v", n, v)
		}
		if wire[6] != uint8(ProtoAH) || wire[40] != uint8(ProtoESP) {
			t.Fatalf("n %d: next headers %d / AH nh %d, want AH then ESP", n, wire[6], wire[40])
		}
		if n == 1000 && len(wire) >= len(pkt) {
			t.Fatalf("compressible 1000 bytes: wire %d bytes, clear %d", len(wire), len(pkt))
		}
		got := deliver(in, wire)
		if !bytes.Equal(got, pkt) {
			t.Fatalf("n %d: received %x\nwant %x (stats %v)", n, got, pkt, in.Stats.Snapshot())
		}
	}
	ipc := out.SAD.Lookup(bB, ProtoIPComp, 0x300)
	if ipc.Counters.Uncompressed.Load() != 1 || ipc.Counters.Packets.Load() != 2 {
		t.Fatalf("IPComp SA: %d uncompressed of %d", ipc.Counters.Uncompressed.Load(), ipc.Counters.Packets.Load())
	}
}

// TestCheckInboundBundles: the template walk of Linux's
// __xfrm_policy_check over a bundle, with levels.
func TestCheckInboundBundles(t *testing.T) {
	mk := func(proto Proto, spi uint32, mode Mode) *SA {
		sa, err := NewSA(bundleSA(t, proto, spi, bA, bB, mode))
		if err != nil {
			t.Fatal(err)
		}
		return sa
	}
	ipc, esp, ah := mk(ProtoIPComp, 0x400, ModeTransport), mk(ProtoESP, 0x401, ModeTransport), mk(ProtoAH, 0x402, ModeTransport)
	espTun := mk(ProtoESP, 0x403, ModeTunnel)
	tm := func(p Proto, l Level) Template { return Template{Proto: p, Mode: ModeTransport, Level: l} }
	f := Flow{Src: bA, Dst: bB, Proto: 17, SrcPort: 1000, DstPort: 2000}
	cases := []struct {
		name string
		tmpl []Template
		sp   []*SA
		ok   bool
	}{
		{"full bundle", []Template{tm(ProtoIPComp, LevelRequire), tm(ProtoESP, LevelRequire), tm(ProtoAH, LevelRequire)}, []*SA{ah, esp, ipc}, true},
		{"uncompressed: IPComp optional", []Template{tm(ProtoIPComp, LevelRequire), tm(ProtoESP, LevelRequire), tm(ProtoAH, LevelRequire)}, []*SA{ah, esp}, true},
		{"AH missing", []Template{tm(ProtoIPComp, LevelRequire), tm(ProtoESP, LevelRequire), tm(ProtoAH, LevelRequire)}, []*SA{esp, ipc}, false},
		{"wrong order", []Template{tm(ProtoESP, LevelRequire), tm(ProtoAH, LevelRequire)}, []*SA{esp, ah}, false},
		{"AH use, absent", []Template{tm(ProtoESP, LevelRequire), tm(ProtoAH, LevelUse)}, []*SA{esp}, true},
		{"AH use, present", []Template{tm(ProtoESP, LevelRequire), tm(ProtoAH, LevelUse)}, []*SA{ah, esp}, true},
		{"ESP use, cleartext", []Template{tm(ProtoESP, LevelUse)}, nil, true},
		{"ESP require, cleartext", []Template{tm(ProtoESP, LevelRequire)}, nil, false},
		{"IPComp require, cleartext", []Template{tm(ProtoIPComp, LevelRequire)}, nil, false},
		{"unexpected tunnel SA", []Template{tm(ProtoAH, LevelRequire)}, []*SA{ah, espTun}, false},
		{"extra transport SA", []Template{tm(ProtoESP, LevelRequire)}, []*SA{ah, esp}, true},
	}
	for _, c := range cases {
		e := NewEngine()
		sel := Selector{Src: netip.PrefixFrom(bA, 128), Dst: netip.PrefixFrom(bB, 128)}
		if _, err := e.AddPolicy(&Policy{Dir: DirIn, Sel: sel, Action: ActionProtect, Templates: c.tmpl}); err != nil {
			t.Fatal(err)
		}
		got := e.CheckInbound(&f, c.sp)
		mism, _ := e.Stats.Get("XfrmInTmplMismatch")
		if got != c.ok || (mism == 1) == c.ok {
			t.Errorf("%s: CheckInbound = %v (XfrmInTmplMismatch %d), want %v", c.name, got, mism, c.ok)
		}
		e.Close()
	}
}

// TestUseLevelOutput: a "use" AH template without an SA is skipped on
// output; ESP still applies.
func TestUseLevelOutput(t *testing.T) {
	tmpl := []Template{{Proto: ProtoESP, Mode: ModeTransport, Level: LevelRequire}, {Proto: ProtoAH, Mode: ModeTransport, Level: LevelUse}}
	out, in := bundlePair(t, tmpl, []SAConfig{bundleSA(t, ProtoESP, 0x501, bA, bB, ModeTransport)})
	pkt := udpPacket6(50)
	v, wire := out.Output(pkt, HeapAllocator{})
	if v != VerdictProtected || wire[6] != uint8(ProtoESP) {
		t.Fatalf("verdict %v nh %d", v, wire[6])
	}
	if got := deliver(in, wire); !bytes.Equal(got, pkt) {
		t.Fatalf("not accepted: %v", in.Stats.Snapshot())
	}
}

// TestIPCompTunnelUncompressed: an IPComp tunnel under ESP transport sends
// small packets as IP-in-IP; the receiver attributes them to the IPComp
// SA and the bundle check passes.
func TestIPCompTunnelUncompressed(t *testing.T) {
	gwA, gwB := netip.MustParseAddr("2001:db8:f::1"), netip.MustParseAddr("2001:db8:f::2")
	tmpl := []Template{
		{Proto: ProtoIPComp, Mode: ModeTunnel, Src: gwA, Dst: gwB, Level: LevelRequire},
		{Proto: ProtoESP, Mode: ModeTransport, Level: LevelRequire},
	}
	out, in := bundlePair(t, tmpl, []SAConfig{
		bundleSA(t, ProtoIPComp, 0x600, gwA, gwB, ModeTunnel),
		bundleSA(t, ProtoESP, 0x601, gwA, gwB, ModeTransport),
	})
	for _, n := range []int{10, 2000} {
		pkt := udpPacket6(n)
		v, wire := out.Output(pkt, HeapAllocator{})
		if v != VerdictProtected || wire[6] != uint8(ProtoESP) {
			t.Fatalf("n %d: verdict %v nh %d", n, v, wire[6])
		}
		if got := deliver(in, wire); !bytes.Equal(got, pkt) {
			t.Fatalf("n %d: not accepted: %v", n, in.Stats.Snapshot())
		}
	}
}

// TestSAValidation: AH and IPComp SA configuration errors.
func TestSAValidation(t *testing.T) {
	bad := []SAConfig{
		{Proto: ProtoAH, SPI: 0x1000, Src: bA, Dst: bB},
		{Proto: ProtoAH, SPI: 0x1000, Src: bA, Dst: bB, Auth: Algorithm{Name: "hmac(sha1)", Key: make([]byte, 20)}, Enc: Algorithm{Name: "aes-cbc", Key: make([]byte, 16)}},
		{Proto: ProtoAH, SPI: 0x1000, Src: bA, Dst: bB, Auth: Algorithm{Name: "hmac(sha1)", Key: make([]byte, 19)}},
		{Proto: ProtoIPComp, SPI: 0x10000, Src: bA, Dst: bB},
		{Proto: ProtoIPComp, SPI: 0, Src: bA, Dst: bB},
		{Proto: ProtoIPComp, SPI: 0x100, Src: bA, Dst: bB, Comp: Algorithm{Name: "lzs"}},
		{Proto: ProtoESP, SPI: 0x1000, Src: bA, Dst: bB, AEAD: Algorithm{Name: "aes-gcm-16", Key: make([]byte, 20)}, ReplayWindow: MaxReplayWindow + 1},
	}
	for i, c := range bad {
		if _, err := NewSA(c); err == nil {
			t.Errorf("case %d (%s) accepted", i, c.Proto)
		}
	}
	for _, w := range []uint32{0, 4096, 1 << 16} {
		c := bundleSA(t, ProtoAH, 0x1000, bA, bB, ModeTransport)
		c.ReplayWindow = w
		if _, err := NewSA(c); err != nil {
			t.Errorf("window %d: %v", w, err)
		}
	}
	if sa, err := NewSA(SAConfig{Proto: ProtoIPComp, SPI: 2, Src: bA, Dst: bB, ReplayWindow: 32, ESN: true}); err != nil || sa.IPComp() == nil || sa.Config.ReplayWindow != 0 {
		t.Errorf("IPComp with the default deflate: %v %v", sa, err)
	}
}
