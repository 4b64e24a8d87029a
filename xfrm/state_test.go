package xfrm

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

// allTrafficSender is a sender with one ESP SA (AES-GCM, a fixed key) from bA to
// bB under a protect policy for all traffic between them.
func allTrafficSender(t *testing.T, cfg SAConfig) (*Engine, *SA) {
	t.Helper()
	e := NewEngine()
	t.Cleanup(e.Close)
	sa, err := e.AddSA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := Template{Proto: ProtoESP, Mode: cfg.Mode, Level: LevelRequire}
	if cfg.Mode == ModeTunnel {
		tmpl.Src, tmpl.Dst = cfg.Src, cfg.Dst
	}
	sel := Selector{Src: netip.PrefixFrom(bA, 128), Dst: netip.PrefixFrom(bB, 128)}
	if _, err := e.AddPolicy(&Policy{Dir: DirOut, Sel: sel, Action: ActionProtect, Templates: []Template{tmpl}}); err != nil {
		t.Fatal(err)
	}
	return e, sa
}

// espIV returns the 8-byte explicit IV of an IPv6 transport-mode ESP
// packet (IPv6 header, SPI, sequence number, IV), read as a capture would.
func espIV(t *testing.T, pkt []byte) [8]byte {
	t.Helper()
	if len(pkt) < 56 || pkt[6] != byte(ProtoESP) {
		t.Fatalf("not an IPv6 ESP packet: %x", pkt)
	}
	var iv [8]byte
	copy(iv[:], pkt[48:56])
	return iv
}

// TestNoNonceRepeatAcrossSequenceRestarts (hardening finding 1): every way
// the outbound counter can start again under the same key — a daemon
// restarted with the same static keys (a new engine), the SA deleted and
// added again, SetOutSeq moved back — must not send an AES-GCM IV (nonce)
// twice under that key.
func TestNoNonceRepeatAcrossSequenceRestarts(t *testing.T) {
	const n = 32
	cfg := bundleSA(t, ProtoESP, 0x1234, bA, bB, ModeTransport)
	send := func(t *testing.T, e *Engine, seen map[[8]byte]string, label string) {
		t.Helper()
		for i := 0; i < n; i++ {
			v, out := e.Output(udpPacket6(20), HeapAllocator{})
			if v != VerdictProtected {
				t.Fatalf("%s packet %d: verdict %d", label, i, v)
			}
			iv := espIV(t, out)
			if prev, dup := seen[iv]; dup {
				t.Fatalf("%s packet %d: IV %x already sent as %s under the same key", label, i, iv, prev)
			}
			seen[iv] = fmt.Sprintf("%s packet %d", label, i)
		}
	}
	cases := []struct {
		name    string
		restart func(t *testing.T, e *Engine, sa *SA) *Engine
	}{
		{"daemon restart with the same keys", func(t *testing.T, _ *Engine, _ *SA) *Engine {
			e, _ := allTrafficSender(t, cfg)
			return e
		}},
		{"SA deleted and added again", func(t *testing.T, e *Engine, _ *SA) *Engine {
			if _, err := e.SAD.Delete(cfg.Dst, cfg.Proto, cfg.SPI); err != nil {
				t.Fatal(err)
			}
			if _, err := e.AddSA(cfg); err != nil {
				t.Fatal(err)
			}
			return e
		}},
		{"SetOutSeq backwards", func(t *testing.T, e *Engine, sa *SA) *Engine {
			if err := sa.SetOutSeq(0); !errors.Is(err, ErrSeqBackwards) {
				t.Fatalf("SetOutSeq(0) after %d packets: %v, want ErrSeqBackwards", n, err)
			}
			if sa.LastSeq() != n {
				t.Fatalf("counter at %d after a refused SetOutSeq, want %d", sa.LastSeq(), n)
			}
			return e
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seen := map[[8]byte]string{}
			e, sa := allTrafficSender(t, cfg)
			send(t, e, seen, "before")
			send(t, c.restart(t, e, sa), seen, "after")
		})
	}
}

// TestSetOutSeqForward: moving the counter forward (an SA taken over from
// another host) is allowed, and the next packet uses the number after it.
func TestSetOutSeqForward(t *testing.T) {
	e, sa := allTrafficSender(t, bundleSA(t, ProtoESP, 0x1234, bA, bB, ModeTransport))
	for _, seq := range []uint64{0, 1000, 1000} {
		if err := sa.SetOutSeq(seq); err != nil {
			t.Fatalf("SetOutSeq(%d): %v", seq, err)
		}
	}
	if v, _ := e.Output(udpPacket6(20), HeapAllocator{}); v != VerdictProtected || sa.LastSeq() != 1001 {
		t.Fatalf("verdict %d, last seq %d, want protected at 1001", v, sa.LastSeq())
	}
}

// TestExpiredPacketConsumesNoSeq (hardening finding 8): a packet refused
// because it would pass the SA's hard lifetime must not take a sequence
// number, as in Linux's xfrm_output_one (expiry checked before the replay
// overflow hook); in transport and tunnel mode, for the packet and byte
// limits.
func TestExpiredPacketConsumesNoSeq(t *testing.T) {
	for _, mode := range []Mode{ModeTransport, ModeTunnel} {
		for _, lim := range []struct {
			name string
			hard Lifetime
		}{
			{"packets", Lifetime{Packets: 2}},
			{"bytes", Lifetime{Bytes: 2 * 200}}, // each packet charges < 200 bytes
		} {
			t.Run(fmt.Sprintf("%s/%s", mode, lim.name), func(t *testing.T) {
				cfg := bundleSA(t, ProtoESP, 0x1234, bA, bB, mode)
				cfg.Hard = lim.hard
				e, sa := allTrafficSender(t, cfg)
				sent := 0
				for i := 0; i < 5; i++ {
					if v, _ := e.Output(udpPacket6(100), HeapAllocator{}); v == VerdictProtected {
						sent++
					}
				}
				if sent == 0 || e.Stats.OutStateExpired.Load() == 0 {
					t.Fatalf("sent %d, XfrmOutStateExpired %d: the limit was not reached", sent, e.Stats.OutStateExpired.Load())
				}
				if got := sa.LastSeq(); got != uint64(sent) {
					t.Fatalf("%d packets sent but the counter is at %d", sent, got)
				}
			})
		}
	}
}
