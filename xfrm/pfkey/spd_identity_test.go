package pfkey

import (
	"net/netip"
	"syscall"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestSPDIdentityThroughPFKey is issue 10 finding 4 through PF_KEY
// messages, as Linux's af_key answers them: X_SPDADD of a selector and
// direction already present is EEXIST whatever the priority, X_SPDUPDATE
// replaces the policy and its priority, X_SPDDELETE matches by selector
// and direction and ignores the priority it carries.
func TestSPDIdentityThroughPFKey(t *testing.T) {
	e, s := newServer(t)
	var snk sink
	k := s.Open(snk.send)
	defer k.Close()
	msg := func(typ uint8, prio uint32, action xfrm.Action) *Msg {
		p := &xfrm.Policy{Dir: xfrm.DirOut, Priority: prio, Action: action,
			Sel: xfrm.Selector{Src: netip.MustParsePrefix("10.1.0.0/16"), Dst: netip.MustParsePrefix("10.2.0.0/16")}}
		if action == xfrm.ActionProtect {
			p.Templates = []xfrm.Template{{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTransport, Level: xfrm.LevelRequire}}
		}
		m, err := PolicyMsg(p)
		if err != nil {
			t.Fatal(err)
		}
		m.Type = typ
		return m
	}
	f := &xfrm.Flow{Src: netip.MustParseAddr("10.1.0.1"), Dst: netip.MustParseAddr("10.2.0.1"), Proto: xfrm.ProtoUDP}

	r := one(t, k, &snk, msg(MsgXSPDAdd, 100, xfrm.ActionBypass))
	if r.Errno != 0 {
		t.Fatalf("spdadd errno %d", r.Errno)
	}
	id := r.Policy.ID
	if r = one(t, k, &snk, msg(MsgXSPDAdd, 50, xfrm.ActionProtect)); r.Errno != uint8(syscall.EEXIST) {
		t.Fatalf("spdadd of the same selector at another priority: errno %d, want EEXIST", r.Errno)
	}
	if r = one(t, k, &snk, msg(MsgXSPDUpdate, 50, xfrm.ActionProtect)); r.Errno != 0 || r.Policy.ID != id || r.Policy.Priority != 50 {
		t.Fatalf("spdupdate: errno %d policy %+v", r.Errno, r.Policy)
	}
	if p := e.SPD.Lookup(xfrm.DirOut, f); e.SPD.Len() != 1 || p == nil || p.Action != xfrm.ActionProtect || p.Priority != 50 {
		t.Fatalf("after spdupdate: %d policies, Lookup %v", e.SPD.Len(), p)
	}
	if r = one(t, k, &snk, msg(MsgXSPDDelete, 7, xfrm.ActionBypass)); r.Errno != 0 || e.SPD.Len() != 0 {
		t.Fatalf("spddelete with another priority: errno %d, %d policies left", r.Errno, e.SPD.Len())
	}
}
