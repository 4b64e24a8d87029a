package xfrm

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// Regression tests of the input path (issue 10 findings 5 and 8). The
// packets are sealed with the SA's own ESP transform, as the peer holding
// the keys would, so what is checked is what Input does after a valid
// decryption.

var (
	tunPeer = netip.MustParseAddr("192.0.2.1") // the tunnel's far end
	tunUs   = netip.MustParseAddr("192.0.2.2")
)

const tunSPI = 0x5000

// tunnelEngine is a receiver with one inbound ESP tunnel SA from tunPeer
// and an inbound policy that authorises 10.1.0.0/16 -> 10.2.0.0/16
// through it, and nothing else.
func tunnelEngine(t *testing.T) *Engine {
	t.Helper()
	e := NewEngine()
	t.Cleanup(e.Close)
	if _, err := e.AddSA(SAConfig{Proto: ProtoESP, SPI: tunSPI, Src: tunPeer, Dst: tunUs, Mode: ModeTunnel,
		ReplayWindow: 64, AEAD: Algorithm{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{7}, 20)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.AddPolicy(&Policy{Dir: DirIn, Action: ActionProtect,
		Sel:       Selector{Src: pfx("10.1.0.0/16"), Dst: pfx("10.2.0.0/16")},
		Templates: []Template{{Proto: ProtoESP, Mode: ModeTunnel, Src: tunPeer, Dst: tunUs, Level: LevelRequire}}}); err != nil {
		t.Fatal(err)
	}
	return e
}

// outer4 is the outer IPv4 header of a packet from tunPeer to tunUs with
// the given TOS byte and protocol, as the IP layer hands it to Input.
func outer4(tos, proto uint8) []byte {
	h := make([]byte, 20)
	h[0], h[1], h[8], h[9] = 0x45, tos, 64, proto
	s, d := tunPeer.As4(), tunUs.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return h
}

// sealTunnel seals inner (next header nh) as the peer does under the SA.
func sealTunnel(t *testing.T, e *Engine, seq uint64, nh uint8, inner []byte) []byte {
	t.Helper()
	sa := e.SAD.Lookup(tunUs, ProtoESP, tunSPI)
	out := make([]byte, sa.esp.SealedLen(len(inner)))
	return sa.esp.Seal(out, tunSPI, seq, sa.Config.ESN, inner, nh)
}

// inner4 is a UDP datagram src -> dst with the TOS byte tos and a valid
// header checksum.
func inner4(src, dst string, tos uint8) []byte {
	p := ipv4Pkt(src, dst, ProtoUDP, 0, nil, udpHdr(1000, 2000))
	p[1] = tos
	binary.BigEndian.PutUint16(p[10:], ipv4Checksum(p[:20]))
	return p
}

// TestTunnelWithoutPolicyIsNoPols is issue 10 finding 5: a peer
// authorised for 10.1.0.0/16 sends inner source 192.168.7.7 through its
// tunnel SA. No inbound policy matches the inner packet, and it came out
// of a tunnel: Linux's __xfrm_policy_check rejects it and counts
// XfrmInNoPols (secpath_has_nontransport with no policy).
func TestTunnelWithoutPolicyIsNoPols(t *testing.T) {
	e := tunnelEngine(t)
	ok := inner4("10.1.0.5", "10.2.0.1", 0)
	if got := e.Input(outer4(0, 50), ProtoESP, sealTunnel(t, e, 1, innerIPv4, ok), HeapAllocator{}); !bytes.Equal(got, ok) {
		t.Fatalf("authorised inner packet: got %x, stats %v", got, e.Stats.Snapshot())
	}
	spoof := inner4("192.168.7.7", "10.2.0.1", 0)
	if got := e.Input(outer4(0, 50), ProtoESP, sealTunnel(t, e, 2, innerIPv4, spoof), HeapAllocator{}); got != nil {
		t.Fatalf("inner source 192.168.7.7 outside the tunnel's policy accepted: %x", got)
	}
	if n := e.Stats.InNoPols.Load(); n != 1 {
		t.Errorf("XfrmInNoPols = %d, want 1 (stats %v)", n, e.Stats.Snapshot())
	}
	// Cleartext with no policy is still accepted: only a tunnel's
	// output needs a policy (Linux returns 1 for an empty secpath).
	f := flow4("192.168.7.7", "10.2.0.1", ProtoUDP, 1000, 2000)
	if !e.CheckInbound(f, nil) {
		t.Errorf("cleartext without policy rejected")
	}
	// A transport-mode secpath without policy is accepted too.
	tr, err := NewSA(SAConfig{Proto: ProtoESP, SPI: 0x5001, Src: tunPeer, Dst: tunUs,
		AEAD: Algorithm{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{7}, 20)}})
	if err != nil {
		t.Fatal(err)
	}
	defer DiscardSA(tr)
	if !e.CheckInbound(flow4("192.0.2.1", "192.0.2.2", ProtoUDP, 1, 2), []*SA{tr}) {
		t.Errorf("transport secpath without policy rejected")
	}
}

// ECN codepoints as RFC 3168 §5 numbers them, spelled out here rather
// than taken from the code under test.
const (
	tNotECT = 0
	tECT1   = 1
	tECT0   = 2
	tCE     = 3
)

// TestTunnelDecapECN is issue 10 finding 8 (outer ECN lost on tunnel
// decapsulation): the full table of RFC 6040 §4.2 (normal mode, Figure 4),
// for IPv4 and IPv6 inner packets. A CE mark set by a router on the outer
// header reaches the inner packet; ECT(1) outer over ECT(0) inner gives
// ECT(1); Not-ECT inner under CE outer is dropped (the congestion signal
// cannot be passed on) and counted XfrmInStateModeError. The IPv4 header
// checksum is verified independently after a change.
func TestTunnelDecapECN(t *testing.T) {
	drop := -1
	// want[inner][outer], RFC 6040 Figure 4.
	want := [4][4]int{
		tNotECT: {tNotECT: tNotECT, tECT0: tNotECT, tECT1: tNotECT, tCE: drop},
		tECT0:   {tNotECT: tECT0, tECT0: tECT0, tECT1: tECT1, tCE: tCE},
		tECT1:   {tNotECT: tECT1, tECT0: tECT1, tECT1: tECT1, tCE: tCE},
		tCE:     {tNotECT: tCE, tECT0: tCE, tECT1: tCE, tCE: tCE},
	}
	names := [4]string{"Not-ECT", "ECT(1)", "ECT(0)", "CE"}
	for _, v6 := range []bool{false, true} {
		e := tunnelEngine(t)
		if v6 {
			if _, err := e.AddPolicy(&Policy{Dir: DirIn, Action: ActionProtect,
				Sel:       Selector{Src: pfx("2001:db8:1::/48"), Dst: pfx("2001:db8:2::/48")},
				Templates: []Template{{Proto: ProtoESP, Mode: ModeTunnel, Src: tunPeer, Dst: tunUs, Level: LevelRequire}}}); err != nil {
				t.Fatal(err)
			}
		}
		seq := uint64(0)
		for in := 0; in < 4; in++ {
			for out := 0; out < 4; out++ {
				seq++
				const dscp = 0x28 << 2 // AF11: the DSCP bits must survive
				var pkt []byte
				nh := uint8(innerIPv4)
				if v6 {
					pkt = ipv6Pkt("2001:db8:1::1", "2001:db8:2::1", ProtoUDP, udpHdr(1, 2))
					tc := uint8(dscp | in)
					pkt[0], pkt[1] = 0x60|tc>>4, tc<<4
					nh = innerIPv6
				} else {
					pkt = inner4("10.1.0.5", "10.2.0.1", uint8(dscp|in))
				}
				before := e.Stats.InStateModeError.Load()
				got := e.Input(outer4(uint8(out), 50), ProtoESP, sealTunnel(t, e, seq, nh, bytes.Clone(pkt)), HeapAllocator{})
				name := names[in] + " inner, " + names[out] + " outer"
				if v6 {
					name += " (IPv6)"
				}
				w := want[in][out]
				if w == drop {
					if got != nil || e.Stats.InStateModeError.Load() != before+1 {
						t.Errorf("%s: got %x, XfrmInStateModeError +%d; want a counted drop", name, got, e.Stats.InStateModeError.Load()-before)
					}
					continue
				}
				if got == nil {
					t.Errorf("%s: dropped (stats %v)", name, e.Stats.Snapshot())
					continue
				}
				var tos int
				if v6 {
					tos = int(got[0]&0x0f)<<4 | int(got[1]>>4)
				} else {
					tos = int(got[1])
					var sum uint32
					for i := 0; i < 20; i += 2 {
						sum += uint32(got[i])<<8 | uint32(got[i+1])
					}
					for sum > 0xffff {
						sum = sum&0xffff + sum>>16
					}
					if sum != 0xffff {
						t.Errorf("%s: inner IPv4 header checksum wrong: %x", name, got[:20])
					}
				}
				if tos != dscp|w {
					t.Errorf("%s: inner TOS %#x, want %#x (%s)", name, tos, dscp|w, names[w])
				}
				// Nothing else in the packet changes.
				pkt2 := bytes.Clone(got)
				if v6 {
					pkt2[1] = pkt[1]
				} else {
					pkt2[1], pkt2[10], pkt2[11] = pkt[1], pkt[10], pkt[11]
				}
				if !bytes.Equal(pkt2, pkt) {
					t.Errorf("%s: packet changed beyond ECN:\n got %x\nwant %x", name, got, pkt)
				}
			}
		}
	}
}

// TestDummyPacketsDroppedQuietly is issue 10 finding 8: a dummy packet
// (next header 59, RFC 4303 §2.6, sent for traffic flow confidentiality)
// is valid: it is authenticated, takes its place in the replay window, and
// is discarded without any error counter, in tunnel mode as in transport
// mode. (Linux counts the tunnel-mode one as XfrmInStateModeError, since
// xfrm4_remove_tunnel_encap wants IPIP; RFC 4303 says to discard it.)
func TestDummyPacketsDroppedQuietly(t *testing.T) {
	tun := tunnelEngine(t)
	tr := fuzzEngine(t)
	trSA := tr.SAD.Lookup(netip.MustParseAddr("2001:db8::2"), ProtoESP, 0x1001)
	sealTr := func(seq uint64, payload []byte) []byte {
		out := make([]byte, trSA.esp.SealedLen(len(payload)))
		return trSA.esp.Seal(out, 0x1001, seq, trSA.Config.ESN, payload, innerNone)
	}
	for i, c := range []struct {
		name   string
		e      *Engine
		hdr    []byte
		packet func(seq uint64) []byte
	}{
		{"tunnel", tun, outer4(0, 50), func(seq uint64) []byte { return sealTunnel(t, tun, seq, innerNone, make([]byte, 37)) }},
		{"tunnel, empty", tun, outer4(0, 50), func(seq uint64) []byte { return sealTunnel(t, tun, seq, innerNone, nil) }},
		{"transport", tr, fuzzHeader(), func(seq uint64) []byte { return sealTr(seq, make([]byte, 100)) }},
	} {
		before := total(c.e)
		base := uint64(100 + 10*i)
		for seq := base; seq < base+3; seq++ {
			if got := c.e.Input(c.hdr, ProtoESP, c.packet(seq), HeapAllocator{}); got != nil {
				t.Fatalf("%s: dummy packet delivered: %x", c.name, got)
			}
		}
		if n := total(c.e); n != before {
			t.Errorf("%s: dummy packets counted as errors: %v", c.name, c.e.Stats.Snapshot())
		}
		// They were authenticated and entered the replay window.
		seqErr := c.e.Stats.InStateSeqError.Load()
		if got := c.e.Input(c.hdr, ProtoESP, c.packet(base), HeapAllocator{}); got != nil || c.e.Stats.InStateSeqError.Load() != seqErr+1 {
			t.Errorf("%s: a replayed dummy: delivered %v, XfrmInStateSeqError +%d", c.name, got != nil, c.e.Stats.InStateSeqError.Load()-seqErr)
		}
	}
}

// TestIPCompTunnelLookupIsConstant is issue 10 finding 8: an IP-in-IP
// packet under a transport SA made ipcompTunnel copy the whole SAD to find
// the IPComp tunnel SA of its endpoints, so each such packet from a peer
// cost time and memory in proportion to the SAD. The lookup goes through
// the SAD's endpoint index now: with 20,000 unrelated SAs it must not
// allocate at all (a walk always takes a snapshot of every SA).
func TestIPCompTunnelLookupIsConstant(t *testing.T) {
	e := NewEngine()
	defer e.Close()
	gwA, gwB := netip.MustParseAddr("2001:db8:f::1"), netip.MustParseAddr("2001:db8:f::2")
	ipc, err := e.AddSA(SAConfig{Proto: ProtoIPComp, SPI: 0x600, Src: gwA, Dst: gwB, Mode: ModeTunnel})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20000; i++ {
		if _, err := e.AddSA(SAConfig{Proto: ProtoIPComp, SPI: uint32(0x1000 + i%0xe000), Src: gwA,
			Dst: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}), Mode: ModeTunnel}); err != nil {
			t.Fatal(err)
		}
	}
	var sp SecPath
	if !e.ipcompTunnel(gwA, gwB, &sp) || sp.n != 1 || sp.sas[0] != ipc {
		t.Fatalf("IPComp tunnel SA not found: %v", sp.SAs())
	}
	sp.release()
	if e.ipcompTunnel(gwB, gwA, &sp) || sp.n != 0 {
		t.Fatalf("found an IPComp tunnel SA for the reverse direction")
	}
	allocs := testing.AllocsPerRun(100, func() {
		if !e.ipcompTunnel(gwA, gwB, &sp) {
			t.Fatal("lookup failed")
		}
		sp.release()
	})
	if allocs != 0 {
		t.Errorf("ipcompTunnel allocates %.0f times per packet with %d SAs: it walks the SAD", allocs, e.SAD.Len())
	}
	// A dead SA is not taken.
	if _, err := e.SAD.Delete(gwB, ProtoIPComp, 0x600); err != nil {
		t.Fatal(err)
	}
	if e.ipcompTunnel(gwA, gwB, &sp) {
		t.Errorf("deleted IPComp tunnel SA still found")
	}
}
