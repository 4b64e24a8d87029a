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
