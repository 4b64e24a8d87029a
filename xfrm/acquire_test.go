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

// TestAcquireFlood: new flows cannot grow the ACQUIRE table without bound.
func TestAcquireFlood(t *testing.T) {
	e := NewEngine()
	defer e.Close()
	if _, err := e.AddPolicy(&Policy{Dir: DirOut, Action: ActionProtect,
		Templates: []Template{{Proto: ProtoESP, Level: LevelRequire}}}); err != nil {
		t.Fatal(err)
	}
	e.Subscribe(func(Event) {})
	a := netip.MustParseAddr("198.51.100.1")
	for i := 0; i < maxAcquires+10; i++ {
		dst := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		e.Output(udp4(a, dst, 1), HeapAllocator{})
	}
	if n := len(e.Acquires()); n != maxAcquires {
		t.Errorf("%d pending acquires, want the cap %d", n, maxAcquires)
	}
	if got, _ := e.Stats.Get("XfrmAcquireError"); got != 10 {
		t.Errorf("XfrmAcquireError = %d, want 10", got)
	}
}
