package xfrm

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// outSPI sends one IPv6 UDP packet through e and returns the SPI of the
// transport-mode ESP packet that left, or 0 when none did.
func outSPI(t *testing.T, e *Engine) uint32 {
	t.Helper()
	v, out := e.Output(udpPacket6(100), HeapAllocator{})
	if v != VerdictProtected {
		if v == VerdictPass {
			t.Fatal("a protected flow left in clear")
		}
		return 0
	}
	if len(out) < 48 || out[6] != byte(ProtoESP) {
		t.Fatalf("not an ESP packet: %x", out)
	}
	return binary.BigEndian.Uint32(out[40:44])
}

// cachedOutBundle returns the SA bundle the flow cache holds for the test
// flow, nil if none.
func cachedOutBundle(e *Engine) []*SA {
	var f Flow
	if _, err := ParseFlow(udpPacket6(100), &f); err != nil {
		panic(err)
	}
	var o outLookup
	e.SPD.lookupOut(&f, &o)
	return o.bundle
}

// TestBundleCacheFollowsSAChanges: the output path caches a flow's SA
// bundle in the SPD's flow cache, and every change that would make
// SAD.FindOutbound choose differently must show on the next packet: a
// newer SA, the chosen SA going past its soft lifetime (a mature one is
// preferred), deleting it, and no SA at all (dropped, ACQUIRE counted,
// never in clear). A dying SA is used when it is the only one but never
// cached, and a socket policy's bundle never enters the SPD's cache.
func TestBundleCacheFollowsSAChanges(t *testing.T) {
	e, sa1 := allTrafficSender(t, bundleSA(t, ProtoESP, 0x100, bA, bB, ModeTransport))
	for i := 0; i < 3; i++ {
		if spi := outSPI(t, e); spi != 0x100 {
			t.Fatalf("packet %d: spi %#x, want 0x100", i, spi)
		}
	}
	if b := cachedOutBundle(e); len(b) != 1 || b[0] != sa1 {
		t.Fatalf("cached bundle %v, want the one SA", b)
	}

	sa2, err := e.AddSA(bundleSA(t, ProtoESP, 0x200, bA, bB, ModeTransport))
	if err != nil {
		t.Fatal(err)
	}
	if spi := outSPI(t, e); spi != 0x200 {
		t.Fatalf("after adding a newer SA: spi %#x, want 0x200", spi)
	}

	sa2.expire(false) // soft lifetime: dying, the older mature SA wins
	if sa2.State() != StateDying {
		t.Fatalf("state %v after a soft expiry", sa2.State())
	}
	for i := 0; i < 2; i++ {
		if spi := outSPI(t, e); spi != 0x100 {
			t.Fatalf("newer SA dying, packet %d: spi %#x, want the mature 0x100", i, spi)
		}
	}
	if b := cachedOutBundle(e); len(b) != 1 || b[0] != sa1 {
		t.Fatalf("cached bundle %v, want the mature SA", b)
	}

	if _, err := e.SAD.Delete(bB, ProtoESP, 0x100); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if spi := outSPI(t, e); spi != 0x200 {
			t.Fatalf("only a dying SA left, packet %d: spi %#x, want 0x200", i, spi)
		}
	}
	if b := cachedOutBundle(e); b != nil {
		t.Fatalf("a dying SA was cached: %v", b)
	}

	if _, err := e.SAD.Delete(bB, ProtoESP, 0x200); err != nil {
		t.Fatal(err)
	}
	before := e.Stats.OutNoStates.Load()
	if spi := outSPI(t, e); spi != 0 {
		t.Fatalf("no SA left, but spi %#x went out", spi)
	}
	if e.Stats.OutNoStates.Load() != before+1 {
		t.Fatal("a packet without an SA was not counted as XfrmOutNoStates")
	}

	if _, err := e.AddSA(bundleSA(t, ProtoESP, 0x300, bA, bB, ModeTransport)); err != nil {
		t.Fatal(err)
	}
	if spi := outSPI(t, e); spi != 0x300 {
		t.Fatalf("after a new SA: spi %#x, want 0x300", spi)
	}

	// A socket policy for the flow: its bundle stays out of the SPD's cache.
	if _, err := e.AddSA(bundleSA(t, ProtoESP, 0x400, bA, bB, ModeTransport)); err != nil {
		t.Fatal(err)
	}
	k := SocketKey{Proto: 17, Local: netip.AddrPortFrom(bA, 1000), Remote: netip.AddrPortFrom(bB, 2000)}
	sp := &Policy{Dir: DirOut, Action: ActionProtect, Templates: []Template{{Proto: ProtoESP, Mode: ModeTransport, SPI: 0x300, Level: LevelRequire}}}
	if err := e.SetSocketPolicy(k, sp); err != nil {
		t.Fatal(err)
	}
	if spi := outSPI(t, e); spi != 0x300 {
		t.Fatalf("socket policy pinned to 0x300: spi %#x", spi)
	}
	e.ClearSocketPolicy(k)
	if spi := outSPI(t, e); spi != 0x400 {
		t.Fatalf("socket policy cleared: spi %#x, want the SPD's newest 0x400", spi)
	}
}
