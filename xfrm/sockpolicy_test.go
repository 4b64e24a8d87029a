package xfrm

import (
	"net/netip"
	"testing"
)

func TestSocketPolicyPrecedence(t *testing.T) {
	e := NewEngine()
	defer e.Close()
	// SPD: everything from 192.0.2.1 bypasses.
	if _, err := e.AddPolicy(&Policy{Dir: DirOut, Action: ActionBypass, Sel: Selector{Src: netip.MustParsePrefix("192.0.2.1/32")}}); err != nil {
		t.Fatal(err)
	}
	udp := func(sport, dport uint16) []byte {
		return []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
			byte(sport >> 8), byte(sport), byte(dport >> 8), byte(dport), 0, 8, 0, 0}
	}
	local := netip.MustParseAddrPort("192.0.2.1:4000")
	remote := netip.MustParseAddrPort("192.0.2.2:53")
	if err := e.SetSocketPolicy(SocketKey{Proto: 17, Local: local, Remote: remote}, &Policy{Dir: DirOut, Action: ActionDiscard}); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.Output(udp(4000, 53), HeapAllocator{}); v != VerdictDrop {
		t.Fatalf("socket flow: %v", v)
	}
	if v, _ := e.Output(udp(4000, 54), HeapAllocator{}); v != VerdictPass {
		t.Fatalf("other remote port: %v", v)
	}
	// A bound, unconnected socket key matches any remote.
	e.SetSocketPolicy(SocketKey{Proto: 17, Local: local}, &Policy{Dir: DirOut, Action: ActionProtect,
		Templates: []Template{{Proto: ProtoESP, Level: LevelRequire}}})
	if v, _ := e.Output(udp(4000, 54), HeapAllocator{}); v != VerdictDrop || e.Stats.OutNoStates.Load() != 1 {
		t.Fatalf("wildcard remote: %v", v)
	}
	e.ClearSocketPolicy(SocketKey{Proto: 17, Local: local, Remote: remote})
	e.ClearSocketPolicy(SocketKey{Proto: 17, Local: local})
	if v, _ := e.Output(udp(4000, 53), HeapAllocator{}); v != VerdictPass {
		t.Fatalf("after clear: %v", v)
	}
	if err := e.SetSocketPolicy(SocketKey{Proto: 17, Local: local}, &Policy{Dir: DirFwd}); err == nil {
		t.Fatal("forward socket policy accepted")
	}
}

// TestSocketPolicyInbound: an inbound socket policy decides for packets
// arriving at that socket, ahead of the SPD, and only for that socket.
func TestSocketPolicyInbound(t *testing.T) {
	e := NewEngine()
	defer e.Close()
	local := netip.MustParseAddrPort("192.0.2.1:4000")
	peer := netip.MustParseAddr("192.0.2.2")
	in := func(dport uint16) *Flow {
		return &Flow{Src: peer, Dst: local.Addr(), Proto: 17, SrcPort: 53, DstPort: dport}
	}
	// The SPD lets everything in; the socket requires ESP.
	if err := e.SetSocketPolicy(SocketKey{Proto: 17, Local: local}, &Policy{Dir: DirIn, Action: ActionProtect,
		Templates: []Template{{Proto: ProtoESP, Level: LevelRequire}}}); err != nil {
		t.Fatal(err)
	}
	if e.CheckInbound(in(4000), nil) {
		t.Fatal("cleartext accepted by a socket that requires ESP")
	}
	if got, _ := e.Stats.Get("XfrmInTmplMismatch"); got != 1 {
		t.Fatalf("XfrmInTmplMismatch = %d, want 1", got)
	}
	if !e.CheckInbound(in(4001), nil) {
		t.Fatal("another socket's cleartext was refused")
	}
	// And the other way: the SPD requires ESP, the socket bypasses.
	e.ClearSocketPolicy(SocketKey{Proto: 17, Local: local})
	if _, err := e.AddPolicy(&Policy{Dir: DirIn, Action: ActionProtect, Templates: []Template{{Proto: ProtoESP, Level: LevelRequire}}}); err != nil {
		t.Fatal(err)
	}
	if err := e.SetSocketPolicy(SocketKey{Proto: 17, Local: local}, &Policy{Dir: DirIn, Action: ActionBypass}); err != nil {
		t.Fatal(err)
	}
	if !e.CheckInbound(in(4000), nil) {
		t.Fatal("bypass socket policy did not override the SPD")
	}
	if e.CheckInbound(in(4001), nil) {
		t.Fatal("SPD no longer applies to other sockets")
	}
}
