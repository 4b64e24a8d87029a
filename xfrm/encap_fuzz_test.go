package xfrm

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// Fuzzing of the UDP-encapsulated input path (RFC 3948 §2.2 and the ESP
// processing behind it).

// Encapsulated SAs of the fuzz receiver, to eB4/bB: transport and tunnel
// for each family, port 4500 at both ends.
const (
	fuzzEncTransport4 = 0x7101
	fuzzEncTunnel4    = 0x7102
	fuzzEncTransport6 = 0x7103
	fuzzEncTunnel6    = 0x7104
)

// encFuzzEngine is the receiver: its SAs, and inbound policies that want
// them for traffic from the peer (and, for the tunnels, any inner flow).
func encFuzzEngine(tb testing.TB) *Engine {
	e := NewEngine()
	tb.Cleanup(e.Close)
	for _, c := range []struct {
		spi      uint32
		src, dst netip.Addr
		mode     Mode
	}{
		{fuzzEncTransport4, eA4, eB4, ModeTransport},
		{fuzzEncTunnel4, eA4, eB4, ModeTunnel},
		{fuzzEncTransport6, bA, bB, ModeTransport},
		{fuzzEncTunnel6, bA, bB, ModeTunnel},
	} {
		cfg := espSA(c.spi, c.src, c.dst, c.mode)
		cfg.Encap = Encap{Type: EncapESPInUDP, SPort: 4500, DPort: 4500}
		if _, err := e.AddSA(cfg); err != nil {
			tb.Fatal(err)
		}
		tmpl := []Template{{Proto: ProtoESP, Mode: c.mode, Level: LevelRequire}}
		sel := Selector{Src: netip.PrefixFrom(c.src, c.src.BitLen()), Dst: netip.PrefixFrom(c.dst, c.dst.BitLen())}
		if c.mode == ModeTunnel {
			tmpl[0].Src, tmpl[0].Dst = c.src, c.dst
			anyAddr := netip.MustParsePrefix("::/0")
			if c.src.Is4() {
				anyAddr = netip.MustParsePrefix("0.0.0.0/0")
			}
			sel = Selector{Src: anyAddr, Dst: anyAddr}
		}
		if _, err := e.AddPolicy(&Policy{Dir: DirIn, Action: ActionProtect, Sel: sel, Templates: tmpl}); err != nil {
			tb.Fatal(err)
		}
	}
	return e
}

// encFuzzHeader is the outer IP header of a datagram from the peer: IPv4
// or IPv6, protocol UDP (the lengths do not matter to InputEncap).
func encFuzzHeader(v4 bool) []byte {
	if v4 {
		h := make([]byte, 20)
		h[0], h[8], h[9] = 0x45, 64, ProtoUDP
		copy(h[12:], eA4.AsSlice())
		copy(h[16:], eB4.AsSlice())
		return h
	}
	h := make([]byte, 40)
	h[0], h[6], h[7] = 0x60, ProtoUDP, 64
	copy(h[8:], bA.AsSlice())
	copy(h[24:], bB.AsSlice())
	return h
}

// encFuzzSeeds are the seeds of the checked-in corpus: a valid datagram
// per SA, keepalive, IKE, and cut or bent variants.
func encFuzzSeeds(tb testing.TB) map[string]struct {
	v4  bool
	udp []byte
} {
	e := encFuzzEngine(tb)
	seal := func(spi uint32, v4 bool, inner []byte) []byte {
		dst := bB
		if v4 {
			dst = eB4
		}
		sa := e.SAD.Lookup(dst, ProtoESP, spi)
		nh := inner[0]
		if sa.Config.Mode == ModeTunnel {
			nh = innerIPv4
			if !v4 {
				nh = innerIPv6
			}
		}
		payload := inner
		if sa.Config.Mode == ModeTransport {
			// transport: the payload after the IP header
			if v4 {
				nh, payload = ProtoUDP, inner[20:]
			} else {
				nh, payload = ProtoUDP, inner[40:]
			}
		}
		out := make([]byte, UDPHeaderLen+sa.esp.SealedLen(len(payload)))
		sa.esp.Seal(out[UDPHeaderLen:], spi, 1, false, payload, nh)
		binary.BigEndian.PutUint16(out[0:], 4500)
		binary.BigEndian.PutUint16(out[2:], 4500)
		binary.BigEndian.PutUint16(out[4:], uint16(len(out)))
		return out
	}
	udp := func(payload ...byte) []byte {
		u := make([]byte, 8+len(payload))
		binary.BigEndian.PutUint16(u[0:], 4500)
		binary.BigEndian.PutUint16(u[2:], 4500)
		binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
		copy(u[8:], payload)
		return u
	}
	t4 := seal(fuzzEncTransport4, true, udpPkt(eA4, eB4, 20))
	seeds := map[string]struct {
		v4  bool
		udp []byte
	}{
		"transport-v4":   {true, t4},
		"tunnel-v4":      {true, seal(fuzzEncTunnel4, true, udpPkt(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 20))},
		"transport-v6":   {false, seal(fuzzEncTransport6, false, udpPkt(bA, bB, 20))},
		"tunnel-v6":      {false, seal(fuzzEncTunnel6, false, udpPkt(netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("2001:db8:1::2"), 20))},
		"floated-v4":     {true, append([]byte{0x7a, 0x69}, t4[2:]...)},
		"truncated-esp":  {true, t4[:20]},
		"keepalive":      {true, udp(0xff)},
		"ike":            {false, udp(append(make([]byte, 4), "ike"...)...)},
		"header-only":    {true, udp()},
		"plain-esp-spi0": {true, udp(0, 0, 0, 0, 0, 0, 0, 1, 2)},
	}
	return seeds
}

var updateEncapSeeds = flag.Bool("update-encap-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzEncapInput seeds")

// TestEncapFuzzSeedCorpus checks that the checked-in FuzzEncapInput
// corpus holds every seed of encFuzzSeeds; run with
// -update-encap-fuzz-seeds to rewrite it. Only presence is checked: an
// SA's IVs are not reproducible from run to run (the nonce salt is
// random), so a sealed seed differs each time it is made, and a checked-in
// one stays valid under the fixed keys (TestEncapFuzzSeedsValid replays
// them).
func TestEncapFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzEncapInput")
	for name, s := range encFuzzSeeds(t) {
		path := filepath.Join(dir, name)
		if *updateEncapSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("go test fuzz v1\nbool(%v)\n[]byte(%q)\n", s.v4, s.udp)
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := readEncapSeed(path); err != nil {
			t.Errorf("seed %s: %v (run go test -run TestEncapFuzzSeedCorpus -update-encap-fuzz-seeds)", name, err)
		}
	}
}

// readEncapSeed parses a checked-in corpus file of FuzzEncapInput.
func readEncapSeed(path string) (s struct {
	v4  bool
	udp []byte
}, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	var udp string
	if _, err := fmt.Sscanf(string(b), "go test fuzz v1\nbool(%t)\n[]byte(%q)\n", &s.v4, &udp); err != nil {
		return s, fmt.Errorf("unparsable: %v", err)
	}
	s.udp = []byte(udp)
	return s, nil
}

// TestEncapFuzzSeedsValid: the sealed seeds, as made now and as checked
// in, are accepted, so the fuzzer starts from packets that reach every
// stage.
func TestEncapFuzzSeedsValid(t *testing.T) {
	seeds := encFuzzSeeds(t)
	for _, name := range []string{"transport-v4", "tunnel-v4", "transport-v6", "tunnel-v6"} {
		in, err := readEncapSeed(filepath.Join("testdata", "fuzz", "FuzzEncapInput", name))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []struct {
			v4  bool
			udp []byte
		}{seeds[name], in} {
			e := encFuzzEngine(t)
			if ClassifyEncap(s.udp[8:]) != EncapKindESP {
				t.Fatalf("%s: not classified as ESP", name)
			}
			if e.InputEncap(encFuzzHeader(s.v4), bytes.Clone(s.udp), HeapAllocator{}) == nil {
				t.Errorf("%s: refused: %v", name, nonZero(&e.Stats))
			}
		}
	}
}

// FuzzEncapInput feeds arbitrary UDP datagrams (header and payload) from
// the peer to a receiver with encapsulated transport and tunnel SAs, as
// the stack does: ClassifyEncap first, InputEncap for ESP. It must never
// panic; every ESP datagram dropped must be counted; a decapsulated
// transport-mode UDP datagram carries a checksum that is valid for the
// addresses it arrived with (RFC 3948 §3.1.2).
func FuzzEncapInput(f *testing.F) {
	for _, s := range encFuzzSeeds(f) {
		f.Add(s.v4, s.udp)
	}
	f.Fuzz(func(t *testing.T, v4 bool, udp []byte) {
		if len(udp) < UDPHeaderLen {
			return // the stack counts it (XfrmInHdrError) before classifying
		}
		if ClassifyEncap(udp[UDPHeaderLen:]) != EncapKindESP {
			return
		}
		e := encFuzzEngine(t)
		before := total(e)
		hdr := encFuzzHeader(v4)
		out := e.InputEncap(hdr, bytes.Clone(udp), HeapAllocator{})
		if out == nil {
			if total(e) == before {
				t.Fatalf("datagram dropped without a counter: %x", udp)
			}
			return
		}
		hl := 40
		if out[0]>>4 == 4 {
			hl = int(out[0]&0xf) * 4
		}
		proto := out[6]
		if out[0]>>4 == 4 {
			proto = out[9]
		}
		if proto == ProtoUDP && len(out) >= hl+8 && !(out[0]>>4 == 4 && out[hl+6] == 0 && out[hl+7] == 0) {
			if got, want := binary.BigEndian.Uint16(out[hl+6:]), refL4Checksum(out, hl); got != want {
				t.Fatalf("decapsulated UDP checksum %#04x, want %#04x", got, want)
			}
		}
	})
}
