package xfrm

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// TestSPDIdentityIsSelectorAndDir is issue 10 finding 4. Linux keys a
// policy by (selector, direction) (xfrm_policy_insert's selector_cmp;
// priority is not part of the key): SPDADD of the same selector and
// direction with another priority is EEXIST, SPDUPDATE replaces the policy
// together with its priority and re-sorts it, and SPDDELETE by selector
// ignores the priority it is given.
func TestSPDIdentityIsSelectorAndDir(t *testing.T) {
	s := NewSPD()
	sel := Selector{Src: pfx("10.0.0.0/24"), Dst: pfx("10.0.1.0/24"), Proto: ProtoUDP}
	f := flow4("10.0.0.5", "10.0.1.5", ProtoUDP, 4000, 53)
	// A catch-all protect policy between the two priorities: the bypass
	// at 100 is preferred to it; at 200 it is not.
	catch := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{}, Priority: 150, Action: ActionDiscard})
	bypass := mustAdd(t, s, &Policy{Dir: DirOut, Sel: sel, Priority: 100, Action: ActionBypass})
	if got := s.Lookup(DirOut, f); got != bypass {
		t.Fatalf("Lookup = %v, want the bypass", polStr(got))
	}

	// SPDADD with the same selector and direction, another priority.
	if _, err := s.Add(&Policy{Dir: DirOut, Sel: sel, Priority: 50, Action: ActionProtect,
		Templates: []Template{{Proto: ProtoESP, Level: LevelRequire}}}); !errors.Is(err, ErrExist) {
		t.Fatalf("Add of the same selector at another priority: err %v, want ErrExist", err)
	}
	if s.Len() != 2 {
		t.Fatalf("Len = %d after a refused Add", s.Len())
	}

	// SPDUPDATE to require ESP at 50: the bypass is gone, ESP protects.
	id, err := s.Update(&Policy{Dir: DirOut, Sel: sel, Priority: 50, Action: ActionProtect,
		Templates: []Template{{Proto: ProtoESP, Level: LevelRequire}}})
	if err != nil {
		t.Fatal(err)
	}
	if id != bypass.ID {
		t.Errorf("Update changed the index %d -> %d", bypass.ID, id)
	}
	if s.Len() != 2 {
		t.Errorf("Len = %d after Update, want 2 (the old policy replaced)", s.Len())
	}
	got := s.Lookup(DirOut, f)
	if got == nil || got.Action != ActionProtect || got.Priority != 50 {
		t.Fatalf("after Update Lookup = %v, want the ESP policy at 50", polStr(got))
	}
	var n int
	s.Walk(func(p *Policy) bool {
		if p.Sel.Equal(sel) {
			n++
		}
		return true
	})
	if n != 1 {
		t.Errorf("%d policies with the selector after Update, want 1", n)
	}

	// Re-sorted: an update to a priority behind the catch-all loses to it.
	if _, err := s.Update(&Policy{Dir: DirOut, Sel: sel, Priority: 200, Action: ActionBypass}); err != nil {
		t.Fatal(err)
	}
	if got := s.Lookup(DirOut, f); got != catch {
		t.Errorf("after Update to 200 Lookup = %v, want the catch-all at 150", polStr(got))
	}

	// SPDDELETE by selector: the priority plays no part.
	old, err := s.Delete(DirOut, sel)
	if err != nil || old.Priority != 200 {
		t.Fatalf("Delete = %v, %v", polStr(old), err)
	}
	if _, err := s.Delete(DirOut, sel); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete err = %v, want ErrNotFound", err)
	}
	if s.Len() != 1 || s.Lookup(DirOut, f) != catch {
		t.Errorf("after Delete: Len %d, Lookup %v", s.Len(), polStr(s.Lookup(DirOut, f)))
	}

	// The direction is part of the key.
	if _, err := s.Add(&Policy{Dir: DirIn, Sel: sel, Priority: 100}); err != nil {
		t.Errorf("same selector, other direction: %v", err)
	}
	if _, err := s.Add(&Policy{Dir: DirFwd, Sel: sel, Priority: 100}); err != nil {
		t.Errorf("same selector, fwd: %v", err)
	}
}

// TestSPDUpdateSamePriorityKeepsPlace: an update that keeps the priority
// keeps the policy's place among equal priorities; one that changes it
// goes behind the policies of its new priority (xfrm_policy_insert_list).
func TestSPDUpdateSamePriorityKeepsPlace(t *testing.T) {
	s := NewSPD()
	selA := Selector{Dst: pfx("10.0.0.0/24")}
	selB := Selector{Dst: pfx("10.0.0.0/16")}
	f := flow4("1.1.1.1", "10.0.0.1", ProtoUDP, 1, 2)
	mustAdd(t, s, &Policy{Dir: DirOut, Sel: selA, Priority: 5, Action: ActionDiscard})
	b := mustAdd(t, s, &Policy{Dir: DirOut, Sel: selB, Priority: 7, Action: ActionBypass})
	// Moving a to 7 puts it behind b (inserted later at that priority).
	if _, err := s.Update(&Policy{Dir: DirOut, Sel: selA, Priority: 7, Action: ActionDiscard}); err != nil {
		t.Fatal(err)
	}
	if got := s.Lookup(DirOut, f); got != b {
		t.Errorf("after moving to b's priority Lookup = %v, want b", polStr(got))
	}
	// Moving b in place (same priority, new action) keeps it ahead.
	if _, err := s.Update(&Policy{Dir: DirOut, Sel: selB, Priority: 7, Action: ActionDiscard}); err != nil {
		t.Fatal(err)
	}
	if got := s.Lookup(DirOut, f); got == nil || !got.Sel.Equal(selB) {
		t.Errorf("after in-place update Lookup = %v, want b's replacement", polStr(got))
	}
}

// TestSPDUniqueGetsReqID is issue 10 finding 8 (unique without reqid): a
// unique template without a reqid gets one of its own from the SPD, as
// Linux's af_key does (parse_ipsecrequest: gen_reqid above
// IPSEC_MANUAL_REQID_MAX, unused by any policy), so the policy binds only
// SAs made for it and never one a "require" policy would take.
func TestSPDUniqueGetsReqID(t *testing.T) {
	e := NewEngine()
	defer e.Close()
	a, b := addr("192.0.2.1"), addr("192.0.2.2")
	tmpl := []Template{{Proto: ProtoESP, Mode: ModeTransport, Level: LevelUnique}}
	manual := mustAdd(t, e.SPD, &Policy{Dir: DirOut, Sel: Selector{Dst: pfx("192.0.2.2/32"), Proto: ProtoTCP}, Action: ActionProtect,
		Templates: []Template{{Proto: ProtoESP, Mode: ModeTransport, Level: LevelUnique, ReqID: 0x4000}}})
	p1 := mustAdd(t, e.SPD, &Policy{Dir: DirOut, Sel: Selector{Dst: pfx("192.0.2.2/32"), Proto: ProtoUDP}, Action: ActionProtect, Templates: tmpl})
	p2 := mustAdd(t, e.SPD, &Policy{Dir: DirOut, Sel: Selector{Dst: pfx("192.0.2.2/32"), Proto: ProtoICMP}, Action: ActionProtect, Templates: tmpl})
	r1, r2 := p1.Templates[0].ReqID, p2.Templates[0].ReqID
	if r1 <= MaxManualReqID || r2 <= MaxManualReqID || r1 == r2 || r1 == manual.Templates[0].ReqID || r2 == manual.Templates[0].ReqID {
		t.Fatalf("assigned reqids %#x %#x (a manual policy holds %#x): want distinct, unused, above %#x",
			r1, r2, manual.Templates[0].ReqID, MaxManualReqID)
	}
	if tmpl[0].ReqID != 0 {
		t.Fatalf("the caller's template was modified")
	}
	// An SA without the reqid (what "require" would take) is not used.
	key := Algorithm{Name: "rfc4106(gcm(aes))", Key: make([]byte, 20)}
	if _, err := e.AddSA(SAConfig{Proto: ProtoESP, SPI: 0x100, Src: a, Dst: b, AEAD: key}); err != nil {
		t.Fatal(err)
	}
	pkt := udp4(a, b, 1000)
	if v, _ := e.Output(pkt, HeapAllocator{}); v != VerdictDrop || e.Stats.OutNoStates.Load() != 1 {
		t.Fatalf("unique policy used an SA not bound to it: verdict %v, OutNoStates %d", v, e.Stats.OutNoStates.Load())
	}
	// Its own SA (the reqid an ACQUIRE carries) is.
	if _, err := e.AddSA(SAConfig{Proto: ProtoESP, SPI: 0x101, Src: a, Dst: b, ReqID: r1, AEAD: key}); err != nil {
		t.Fatal(err)
	}
	v, wire := e.Output(pkt, HeapAllocator{})
	if v != VerdictProtected || binary.BigEndian.Uint32(wire[20:]) != 0x101 {
		t.Fatalf("unique policy did not use its own SA: verdict %v", v)
	}
	// An update keeps the reqid (the SAs made for the policy stay
	// bound), a new policy never reuses a live one.
	id, err := e.SPD.Update(&Policy{Dir: DirOut, Sel: p1.Sel, Priority: 9, Action: ActionProtect, Templates: tmpl})
	if err != nil || e.SPD.Get(id).Templates[0].ReqID != r1 {
		t.Fatalf("update: %v, reqid %#x, want %#x", err, e.SPD.Get(id).Templates[0].ReqID, r1)
	}
	// A manual reqid the update leaves out is not kept.
	five := mustAdd(t, e.SPD, &Policy{Dir: DirFwd, Sel: p1.Sel, Action: ActionProtect,
		Templates: []Template{{Proto: ProtoESP, Mode: ModeTransport, Level: LevelUnique, ReqID: 5}}})
	id, err = e.SPD.Update(&Policy{Dir: DirFwd, Sel: five.Sel, Action: ActionProtect, Templates: tmpl})
	if r := e.SPD.Get(id).Templates[0].ReqID; err != nil || r <= MaxManualReqID {
		t.Fatalf("update dropping unique:5 kept reqid %#x (%v)", r, err)
	}
	seen := map[uint32]bool{}
	for i := 0; i < 100; i++ {
		p := mustAdd(t, e.SPD, &Policy{Dir: DirIn, Sel: Selector{Dst: netip.PrefixFrom(addr("10.0.0.0"), 8), Proto: uint8(i)}, Action: ActionProtect, Templates: tmpl})
		r := p.Templates[0].ReqID
		if seen[r] || r == r1 || r == r2 {
			t.Fatalf("reqid %#x handed out twice", r)
		}
		seen[r] = true
	}
}
