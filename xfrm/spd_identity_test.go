package xfrm

import (
	"errors"
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
