package xfrm

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// udp4 builds an IPv4/UDP packet (checksums are not checked on output).
func udp4(src, dst netip.Addr, sport uint16) []byte {
	p := make([]byte, 28)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], 28)
	p[8] = 64
	p[9] = ProtoUDP
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], 53)
	binary.BigEndian.PutUint16(p[24:], 8)
	return p
}

// TestAcquireLarval: a protect policy without an SA creates one larval
// "acquire" SA per (proto, mode, addresses, reqid) and sends ACQUIRE once
// while it lives; adding the SA retires it; it times out like Linux's
// XFRM_ACQ_EXPIRES and the next packet asks again.
func TestAcquireLarval(t *testing.T) {
	e := NewEngine()
	defer e.Close()
	e.SAD.SetLarvalTimeout(300 * time.Millisecond)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if _, err := e.AddPolicy(&Policy{Dir: DirOut, Action: ActionProtect,
		Templates: []Template{{Proto: ProtoESP, Level: LevelRequire, ReqID: 7}}}); err != nil {
		t.Fatal(err)
	}
	var events []Event
	e.Subscribe(func(ev Event) {
		if ev.Type == EventAcquire {
			events = append(events, ev)
		}
	})
	send := func(dst netip.Addr, sport uint16) Verdict {
		v, _ := e.Output(udp4(a, dst, sport), HeapAllocator{})
		return v
	}
	for i := 0; i < 10; i++ {
		if v := send(b, uint16(1000+i)); v != VerdictDrop {
			t.Fatalf("packet %d: verdict %d, want drop", i, v)
		}
	}
	if len(events) != 1 {
		t.Fatalf("%d ACQUIREs for one flow, want 1", len(events))
	}
	ev := events[0]
	if ev.SA == nil || ev.SA.State() != StateLarval || ev.SA.SPI() != 0 || ev.SA.Config.ReqID != 7 ||
		ev.SA.Config.Src != a || ev.SA.Config.Dst != b || ev.SA.AcquireSeq() == 0 {
		t.Fatalf("ACQUIRE larval SA %v", ev.SA)
	}
	if n := len(e.Acquires()); n != 1 {
		t.Fatalf("%d pending acquires, want 1", n)
	}
	// Another destination is another ACQUIRE.
	send(netip.MustParseAddr("192.0.2.3"), 1)
	if len(events) != 2 {
		t.Fatalf("%d ACQUIREs after a second destination, want 2", len(events))
	}
	// The key manager answers for b: the larval state goes, traffic flows.
	key := make([]byte, 20)
	if _, err := e.AddSA(SAConfig{Proto: ProtoESP, SPI: 0x500, Src: a, Dst: b, ReqID: 7, AEAD: Algorithm{Name: "rfc4106(gcm(aes))", Key: key}}); err != nil {
		t.Fatal(err)
	}
	if n := len(e.Acquires()); n != 1 {
		t.Fatalf("%d pending acquires after the SA was added, want 1", n)
	}
	if v := send(b, 1); v != VerdictProtected {
		t.Fatalf("verdict %d with the SA in place", v)
	}
	// The other one times out; the next packet asks again.
	time.Sleep(700 * time.Millisecond)
	if n := len(e.Acquires()); n != 0 {
		t.Fatalf("%d pending acquires after the timeout, want 0", n)
	}
	send(netip.MustParseAddr("192.0.2.3"), 1)
	if len(events) != 3 {
		t.Fatalf("%d ACQUIREs after the larval timeout, want 3", len(events))
	}
	if got, _ := e.Stats.Get("XfrmOutNoStates"); got != 12 {
		t.Errorf("XfrmOutNoStates = %d, want 12", got)
	}
}

// TestAcquireFlood: new flows cannot grow the ACQUIRE table without bound:
// one policy holds at most its share, the oldest entries making room.
func TestAcquireFlood(t *testing.T) {
	e := NewEngine()
	defer e.Close()
	if _, err := e.AddPolicy(&Policy{Dir: DirOut, Action: ActionProtect,
		Templates: []Template{{Proto: ProtoESP, Level: LevelRequire}}}); err != nil {
		t.Fatal(err)
	}
	e.Subscribe(func(Event) {})
	a := netip.MustParseAddr("198.51.100.1")
	const n = maxAcquires + 10
	for i := 0; i < n; i++ {
		dst := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		e.Output(udp4(a, dst, 1), HeapAllocator{})
	}
	if got := len(e.Acquires()); got != maxAcquiresPerPolicy {
		t.Errorf("%d pending acquires, want the per-policy share %d", got, maxAcquiresPerPolicy)
	}
	if got := e.AcquireStats.Evicted.Load(); got != n-maxAcquiresPerPolicy {
		t.Errorf("%d evicted, want %d", got, n-maxAcquiresPerPolicy)
	}
	if got, _ := e.Stats.Get("XfrmAcquireError"); got != 0 {
		t.Errorf("XfrmAcquireError = %d, want 0 (every ACQUIRE was raised)", got)
	}
}

// TestAcquireNoStarvation (control-plane finding 6): traffic to spoofed
// destinations — replies to spoofed sources under a wide transport-mode
// policy, each destination its own ACQUIRE — must not starve a real flow
// of its ACQUIRE, under another policy or under the same one; the table
// stays bounded. With one global table refusing when full, the real flow
// got no ACQUIRE (and so no SA) for the 30 s larval life.
func TestAcquireNoStarvation(t *testing.T) {
	me := netip.MustParseAddr("192.0.2.1")
	peer := netip.MustParseAddr("192.0.2.2")
	wide := &Policy{Dir: DirOut, Action: ActionProtect, Priority: 20,
		Sel:       Selector{Src: netip.PrefixFrom(me, 32), Dst: netip.MustParsePrefix("10.0.0.0/8")},
		Templates: []Template{{Proto: ProtoESP, Level: LevelRequire, ReqID: 1}}}
	narrow := &Policy{Dir: DirOut, Action: ActionProtect, Priority: 10,
		Sel:       Selector{Src: netip.PrefixFrom(me, 32), Dst: netip.PrefixFrom(peer, 32)},
		Templates: []Template{{Proto: ProtoESP, Level: LevelRequire, ReqID: 2}}}
	for _, c := range []struct {
		name string
		real netip.Addr
	}{
		{"real flow under another policy", peer},
		{"real flow under the flooded policy", netip.MustParseAddr("10.255.0.1")},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := NewEngine()
			defer e.Close()
			for _, p := range []*Policy{wide, narrow} {
				q := *p
				if _, err := e.AddPolicy(&q); err != nil {
					t.Fatal(err)
				}
			}
			var acquired map[netip.Addr]int
			e.Subscribe(func(ev Event) {
				if ev.Type == EventAcquire {
					acquired[ev.Flow.Dst]++
				}
			})
			acquired = map[netip.Addr]int{}
			// Three times the table's size in spoofed destinations.
			for i := 0; i < 3*maxAcquires; i++ {
				dst := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				e.Output(udp4(me, dst, 1), HeapAllocator{})
			}
			if n := len(e.Acquires()); n > maxAcquires {
				t.Fatalf("%d pending ACQUIREs, more than the bound %d", n, maxAcquires)
			}
			if v, _ := e.Output(udp4(me, c.real, 1), HeapAllocator{}); v != VerdictDrop {
				t.Fatalf("verdict %d for the real flow without an SA", v)
			}
			if acquired[c.real] != 1 {
				t.Fatalf("the real flow to %v got %d ACQUIREs after the flood, want 1 at once", c.real, acquired[c.real])
			}
			// Its pending state holds: more packets do not ask again.
			e.Output(udp4(me, c.real, 2), HeapAllocator{})
			if acquired[c.real] != 1 {
				t.Fatalf("%d ACQUIREs for the real flow's second packet", acquired[c.real])
			}
		})
	}
}
