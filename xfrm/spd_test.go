package xfrm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

func mustAdd(t testing.TB, s *SPD, p *Policy) *Policy {
	t.Helper()
	id, err := s.Add(p)
	if err != nil {
		t.Fatalf("Add(%v): %v", p.Sel, err)
	}
	return s.Get(id)
}

func flow4(src, dst string, proto uint8, sp, dp uint16) *Flow {
	return &Flow{Src: addr(src), Dst: addr(dst), Proto: proto, SrcPort: sp, DstPort: dp}
}

func TestSPDPriorityAndTieBreak(t *testing.T) {
	s := NewSPD()
	all4 := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{Src: pfx("0.0.0.0/0"), Dst: pfx("0.0.0.0/0")}, Priority: 1000, Action: ActionProtect})
	exact := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{Src: pfx("10.0.0.1/32"), Dst: pfx("10.0.0.2/32")}, Priority: 500})
	net24 := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{Dst: pfx("10.0.0.0/24")}, Priority: 500})
	web := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{Dst: pfx("10.0.0.0/24"), Proto: ProtoTCP, DstPorts: PortRange{Lo: 443, Hi: 443}}, Priority: 100, Action: ActionBypass})
	in := mustAdd(t, s, &Policy{Dir: DirIn, Sel: Selector{}, Priority: 0, Action: ActionDiscard})

	tests := []struct {
		name string
		dir  Dir
		f    *Flow
		want *Policy
	}{
		{"equal priority: older wins", DirOut, flow4("10.0.0.1", "10.0.0.2", ProtoUDP, 1, 2), exact},
		{"prefix only", DirOut, flow4("10.0.0.9", "10.0.0.2", ProtoUDP, 1, 2), net24},
		{"lower priority value wins over exact", DirOut, flow4("10.0.0.1", "10.0.0.2", ProtoTCP, 1, 443), web},
		{"ports must match", DirOut, flow4("10.0.0.1", "10.0.0.2", ProtoTCP, 1, 80), exact},
		{"fallback", DirOut, flow4("192.0.2.1", "192.0.2.2", ProtoTCP, 1, 80), all4},
		{"v6 not matched by v4 /0", DirOut, &Flow{Src: addr("2001:db8::1"), Dst: addr("2001:db8::2")}, nil},
		{"dir in", DirIn, flow4("10.0.0.1", "10.0.0.2", ProtoTCP, 1, 443), in},
		{"dir fwd empty", DirFwd, flow4("10.0.0.1", "10.0.0.2", ProtoTCP, 1, 443), nil},
		{"bad dir", Dir(7), flow4("10.0.0.1", "10.0.0.2", ProtoTCP, 1, 443), nil},
	}
	for _, tt := range tests {
		if got := s.Lookup(tt.dir, tt.f); got != tt.want {
			t.Errorf("%s: Lookup(%v, %v) = %v, want %v", tt.name, tt.dir, tt.f, polStr(got), polStr(tt.want))
		}
	}

	// A newer policy of equal priority does not displace the older one,
	// whichever tuple it lands in.
	mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{Src: pfx("10.0.0.0/8")}, Priority: 500})
	if got := s.Lookup(DirOut, flow4("10.0.0.9", "10.0.0.2", ProtoUDP, 1, 2)); got != net24 {
		t.Errorf("newer equal-priority policy won: %v", polStr(got))
	}
	// An even better one does.
	better := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{Src: pfx("10.0.0.0/8"), Proto: ProtoUDP}, Priority: 499})
	if got := s.Lookup(DirOut, flow4("10.0.0.9", "10.0.0.2", ProtoUDP, 1, 2)); got != better {
		t.Errorf("better policy lost: %v", polStr(got))
	}
}

func polStr(p *Policy) string {
	if p == nil {
		return "<nil>"
	}
	return fmt.Sprintf("#%d %v %v prio %d", p.ID, p.Dir, p.Sel, p.Priority)
}

func TestSPDExactAndPrefixBothFamilies(t *testing.T) {
	s := NewSPD()
	type c struct {
		sel  Selector
		hit  *Flow
		miss *Flow
	}
	cases := []c{
		{Selector{Src: pfx("192.0.2.1/32"), Dst: pfx("198.51.100.1/32")},
			flow4("192.0.2.1", "198.51.100.1", 6, 1, 2), flow4("192.0.2.1", "198.51.100.2", 6, 1, 2)},
		{Selector{Src: pfx("192.0.2.0/24"), Dst: pfx("203.0.113.0/25")},
			flow4("192.0.2.77", "203.0.113.127", 6, 1, 2), flow4("192.0.2.77", "203.0.113.128", 6, 1, 2)},
		{Selector{Src: pfx("2001:db8:1::1/128"), Dst: pfx("2001:db8:2::1/128")},
			&Flow{Src: addr("2001:db8:1::1"), Dst: addr("2001:db8:2::1")}, &Flow{Src: addr("2001:db8:1::1"), Dst: addr("2001:db8:2::2")}},
		{Selector{Src: pfx("2001:db8:3::/48"), Dst: pfx("2001:db8:4::/63")},
			&Flow{Src: addr("2001:db8:3:ffff::1"), Dst: addr("2001:db8:4:1::9")}, &Flow{Src: addr("2001:db8:3::1"), Dst: addr("2001:db8:4:2::1")}},
		{Selector{Dst: pfx("::ffff:10.0.0.0/104")},
			&Flow{Src: addr("::1"), Dst: addr("::ffff:10.1.2.3")}, flow4("10.1.2.3", "10.1.2.3", 0, 0, 0)},
		{Selector{Dst: pfx("10.0.0.0/8")},
			flow4("10.1.2.3", "10.1.2.3", 0, 0, 0), &Flow{Src: addr("::1"), Dst: addr("::ffff:10.1.2.3")}},
		{Selector{Src: pfx("fe80::/10")},
			&Flow{Src: addr("fe80::1%eth0"), Dst: addr("ff02::1")}, &Flow{Src: addr("fec0::1"), Dst: addr("ff02::1")}},
	}
	for i, c := range cases {
		s.Flush()
		p := mustAdd(t, s, &Policy{Dir: DirOut, Sel: c.sel, Priority: uint32(i)})
		if got := s.Lookup(DirOut, c.hit); got != p {
			t.Errorf("%v: Lookup(%v) = %v, want it", c.sel, c.hit, polStr(got))
		}
		if got := s.Lookup(DirOut, c.miss); got != nil {
			t.Errorf("%v: Lookup(%v) = %v, want nil", c.sel, c.miss, polStr(got))
		}
	}
}

func TestSPDAddErrorsAndIDs(t *testing.T) {
	s := NewSPD()
	sel := Selector{Src: pfx("10.0.0.0/24"), Dst: pfx("10.0.1.0/24"), Proto: ProtoTCP}
	id1, err := s.Add(&Policy{Dir: DirOut, Sel: sel, Priority: 10})
	if err != nil {
		t.Fatal(err)
	}
	if id1&7 != uint32(DirOut) || id1>>3 == 0 {
		t.Errorf("ID %d not of Linux form (counter<<3)|dir", id1)
	}
	// Same dir and selector (even spelled differently): EEXIST, at any
	// priority.
	same := sel
	same.Src = pfx("10.0.0.99/24")
	same.SrcPorts = AnyPorts
	for _, prio := range []uint32{10, 11} {
		if _, err := s.Add(&Policy{Dir: DirOut, Sel: same, Priority: prio}); !errors.Is(err, ErrExist) {
			t.Errorf("duplicate Add at priority %d err = %v, want ErrExist", prio, err)
		}
	}
	// Another selector or direction is a different policy.
	other := sel
	other.Proto = ProtoUDP
	id2, err := s.Add(&Policy{Dir: DirOut, Sel: other, Priority: 11})
	if err != nil {
		t.Fatal(err)
	}
	id3, err := s.Add(&Policy{Dir: DirIn, Sel: sel, Priority: 10})
	if err != nil {
		t.Fatal(err)
	}
	if id3&7 != uint32(DirIn) || id1 == id2 || id2 == id3 || id1 == id3 {
		t.Errorf("IDs %d %d %d", id1, id2, id3)
	}
	// Explicit IDs.
	if _, err := s.Add(&Policy{ID: 8<<3 | uint32(DirIn), Dir: DirOut, Sel: Selector{}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("wrong-direction ID err = %v, want ErrInvalid", err)
	}
	if _, err := s.Add(&Policy{ID: id1, Dir: DirOut, Sel: Selector{}}); !errors.Is(err, ErrExist) {
		t.Errorf("used ID err = %v, want ErrExist", err)
	}
	want := uint32(1000<<3 | uint32(DirFwd))
	if id, err := s.Add(&Policy{ID: want, Dir: DirFwd, Sel: Selector{}}); err != nil || id != want {
		t.Errorf("explicit ID: %d, %v", id, err)
	}
	// Invalid input.
	bad := []*Policy{
		nil,
		{Dir: 3},
		{Dir: DirOut, Sel: Selector{Src: pfx("10.0.0.0/8"), Dst: pfx("::/0")}},
		{Dir: DirOut, Sel: Selector{DstPorts: PortRange{Lo: 9, Hi: 8}}},
	}
	for _, p := range bad {
		if _, err := s.Add(p); !errors.Is(err, ErrInvalid) {
			t.Errorf("Add(%+v) err = %v, want ErrInvalid", p, err)
		}
	}
	if s.Len() != 4 {
		t.Errorf("Len = %d, want 4", s.Len())
	}
}

func TestSPDAddCopies(t *testing.T) {
	s := NewSPD()
	p := &Policy{Dir: DirOut, Sel: Selector{Dst: pfx("10.0.0.0/8")}, Action: ActionProtect,
		Templates: []Template{{Proto: ProtoESP, ReqID: 1}}}
	id, _ := s.Add(p)
	if p.ID != 0 {
		t.Errorf("Add wrote into the caller's policy")
	}
	p.Templates[0].ReqID = 2
	p.Sel.Dst = pfx("11.0.0.0/8")
	got := s.Get(id)
	if got == p || got.Templates[0].ReqID != 1 || got.Sel.Dst != pfx("10.0.0.0/8") {
		t.Errorf("SPD shares the caller's policy: %+v", got)
	}
}

func TestSPDUpdate(t *testing.T) {
	s := NewSPD()
	sel := Selector{Dst: pfx("10.0.0.0/24")}
	a := mustAdd(t, s, &Policy{Dir: DirOut, Sel: sel, Priority: 5, Action: ActionDiscard})
	b := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{Dst: pfx("10.0.0.0/16")}, Priority: 5, Action: ActionBypass})
	f := flow4("1.1.1.1", "10.0.0.1", ProtoUDP, 1, 2)
	if got := s.Lookup(DirOut, f); got != a {
		t.Fatalf("Lookup = %v", polStr(got))
	}
	id, err := s.Update(&Policy{Dir: DirOut, Sel: sel, Priority: 5, Action: ActionProtect, Templates: []Template{{Proto: ProtoESP}}})
	if err != nil {
		t.Fatal(err)
	}
	if id != a.ID {
		t.Errorf("Update changed the ID %d -> %d", a.ID, id)
	}
	got := s.Lookup(DirOut, f)
	if got == a || got.Action != ActionProtect || got.ID != a.ID {
		t.Errorf("after Update Lookup = %v action %v (stale cache?)", polStr(got), got.Action)
	}
	// The replacement keeps its place ahead of the equal-priority b.
	if got == b {
		t.Errorf("replacement lost its tie-break position")
	}
	if s.Len() != 2 {
		t.Errorf("Len = %d", s.Len())
	}
	// Update of a missing policy adds it.
	sel2 := Selector{Dst: pfx("10.0.0.0/24"), Proto: ProtoTCP}
	id2, err := s.Update(&Policy{Dir: DirOut, Sel: sel2, Priority: 6})
	if err != nil || id2 == a.ID || s.Len() != 3 {
		t.Errorf("Update-as-add: id %d err %v len %d", id2, err, s.Len())
	}
	sel = sel2
	// Update may move the policy to a new, unused ID of its direction.
	id3, err := s.Update(&Policy{ID: 4096<<3 | uint32(DirOut), Dir: DirOut, Sel: sel, Priority: 6})
	if err != nil || id3 != 4096<<3|uint32(DirOut) || s.Get(id2) != nil || s.Len() != 3 {
		t.Errorf("Update with new ID: %d %v, old still there: %v", id3, err, s.Get(id2) != nil)
	}
	// But not to one another policy uses.
	if _, err := s.Update(&Policy{ID: b.ID, Dir: DirOut, Sel: sel, Priority: 6}); !errors.Is(err, ErrExist) {
		t.Errorf("Update onto a used ID: %v", err)
	}
}

func TestSPDDeleteFlushWalk(t *testing.T) {
	s := NewSPD()
	sel := Selector{Src: pfx("10.0.0.0/24"), Proto: ProtoUDP, DstPorts: PortRange{Lo: 500, Hi: 500}}
	sel7 := Selector{Src: pfx("10.0.0.0/16"), Proto: ProtoUDP, DstPorts: PortRange{Lo: 500, Hi: 500}}
	p7 := mustAdd(t, s, &Policy{Dir: DirOut, Sel: sel7, Priority: 7})
	p3 := mustAdd(t, s, &Policy{Dir: DirOut, Sel: sel, Priority: 3})
	pin := mustAdd(t, s, &Policy{Dir: DirIn, Sel: sel, Priority: 9})
	pall := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{}, Priority: 3})
	fwd := mustAdd(t, s, &Policy{Dir: DirFwd, Sel: Selector{}, Priority: 1})

	var order []*Policy
	s.Walk(func(p *Policy) bool { order = append(order, p); return true })
	want := []*Policy{pin, p3, pall, p7, fwd}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("Walk order:\n got %v\nwant %v", order, want)
	}
	n := 0
	s.Walk(func(p *Policy) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("Walk did not stop: %d", n)
	}
	// Walk's callback may modify the SPD.
	s.Walk(func(p *Policy) bool {
		if p.Dir == DirFwd {
			if _, err := s.DeleteByID(p.ID); err != nil {
				t.Error(err)
			}
		}
		return true
	})
	if s.Get(fwd.ID) != nil {
		t.Errorf("fwd policy not deleted")
	}

	f := flow4("10.0.0.5", "10.9.9.9", ProtoUDP, 500, 500)
	if got := s.Lookup(DirOut, f); got != p3 {
		t.Fatalf("Lookup = %v", polStr(got))
	}
	// Delete by selector (spelled differently).
	same := sel
	same.Src = pfx("10.0.0.200/24")
	got, err := s.Delete(DirOut, same)
	if err != nil || got != p3 {
		t.Fatalf("Delete = %v, %v", polStr(got), err)
	}
	if got := s.Lookup(DirOut, f); got != pall {
		t.Errorf("after Delete Lookup = %v, want the catch-all", polStr(got))
	}
	if _, err := s.Delete(DirOut, sel); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete err = %v", err)
	}
	if got, err := s.Delete(DirOut, sel7); err != nil || got != p7 {
		t.Errorf("Delete of the /16 = %v, %v", polStr(got), err)
	}
	if _, err := s.Delete(DirOut, sel7); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete missing err = %v", err)
	}
	if _, err := s.Delete(Dir(9), sel); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete bad dir err = %v", err)
	}
	if _, err := s.DeleteByID(p7.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteByID missing err = %v", err)
	}
	if got, err := s.DeleteByID(pall.ID); err != nil || got != pall {
		t.Errorf("DeleteByID = %v, %v", polStr(got), err)
	}
	if got := s.Lookup(DirOut, f); got != nil {
		t.Errorf("empty out dir Lookup = %v", polStr(got))
	}
	if s.Len() != 1 || s.Get(pin.ID) != pin {
		t.Errorf("Len %d", s.Len())
	}
	// Deleted selectors can be added again.
	mustAdd(t, s, &Policy{Dir: DirOut, Sel: sel, Priority: 3})
	if n := s.Flush(); n != 2 || s.Len() != 0 || s.Get(pin.ID) != nil {
		t.Errorf("Flush = %d, Len %d", n, s.Len())
	}
	if got := s.Lookup(DirIn, f); got != nil {
		t.Errorf("Lookup after Flush = %v", polStr(got))
	}
	s.Walk(func(p *Policy) bool { t.Errorf("Walk after Flush: %v", p); return true })
}

func TestSPDFlowCache(t *testing.T) {
	s := NewSPD()
	f := flow4("10.0.0.1", "10.0.0.2", ProtoTCP, 1000, 22)
	if s.Lookup(DirOut, f) != nil {
		t.Fatal("empty SPD matched")
	}
	g0 := s.Generation()
	a := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{}, Priority: 10})
	if s.Generation() == g0 {
		t.Error("Add did not bump the generation")
	}
	if got := s.Lookup(DirOut, f); got != a {
		t.Fatalf("cached nil survived Add: %v", polStr(got))
	}
	if got := s.Lookup(DirOut, f); got != a { // hit
		t.Fatalf("hit = %v", polStr(got))
	}
	b := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{Proto: ProtoTCP}, Priority: 1})
	if got := s.Lookup(DirOut, f); got != b {
		t.Fatalf("after Add = %v", polStr(got))
	}
	if got := s.Lookup(DirIn, f); got != nil {
		t.Fatalf("cache mixed up directions: %v", polStr(got))
	}
	s.DeleteByID(b.ID)
	if got := s.Lookup(DirOut, f); got != a {
		t.Fatalf("after Delete = %v", polStr(got))
	}
	g := s.Generation()
	s.Invalidate()
	if s.Generation() == g {
		t.Error("Invalidate did not bump the generation")
	}
	// Flows differing in one field each are cached apart.
	variants := []Flow{*f, *f, *f, *f, *f, *f}
	variants[1].SrcPort++
	variants[2].DstPort++
	variants[3].Proto = ProtoUDP
	variants[4].Opaque = true
	variants[5].Dst = addr("::ffff:10.0.0.2")
	c := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{Dst: pfx("10.0.0.2/32"), Proto: ProtoTCP, SrcPorts: PortRange{Lo: 1000, Hi: 1000}, DstPorts: PortRange{Lo: 22, Hi: 22}}, Priority: 0})
	for i := range variants {
		want := a
		if i == 0 {
			want = c
		}
		for range 2 {
			if got := s.Lookup(DirOut, &variants[i]); got != want {
				t.Errorf("variant %d %v: %v, want %v", i, variants[i], polStr(got), polStr(want))
			}
		}
	}
	// The hit path allocates nothing.
	if n := testing.AllocsPerRun(100, func() { s.Lookup(DirOut, f) }); n != 0 {
		t.Errorf("cache hit allocates %v", n)
	}
}

// randomPolicy draws selectors from a small address space so that policies
// overlap and flows hit them.
func randomSelector(r *rand.Rand) Selector {
	var sel Selector
	v6 := r.IntN(2) == 0
	pick := func() netip.Prefix {
		if r.IntN(4) == 0 {
			return netip.Prefix{} // ANY
		}
		a := randomAddr(r, v6)
		var bits int
		if v6 {
			bits = []int{0, 16, 32, 48, 64, 120, 125, 127, 128, 128}[r.IntN(10)]
		} else {
			bits = []int{0, 8, 16, 24, 29, 30, 31, 32, 32}[r.IntN(9)]
		}
		return netip.PrefixFrom(a, bits)
	}
	sel.Src, sel.Dst = pick(), pick()
	sel.Proto = []uint8{ProtoAny, ProtoAny, ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6}[r.IntN(6)]
	rng := func() PortRange {
		if r.IntN(2) == 0 {
			return PortRange{}
		}
		lo := uint16(r.IntN(8))
		// Specified makes {0, 0} the single port 0 (ICMP echo reply).
		return PortRange{Lo: lo, Hi: lo + uint16(r.IntN(4)), Specified: r.IntN(2) == 0}
	}
	sel.SrcPorts, sel.DstPorts = rng(), rng()
	return sel
}

func randomAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		if r.IntN(8) == 0 {
			b[0], b[1] = 0xfe, 0x80
		}
		b[5] = byte(r.IntN(3))
		b[15] = byte(r.IntN(8))
		if r.IntN(10) == 0 { // IPv4-mapped
			b = [16]byte{10: 0xff, 11: 0xff, 12: 10, 15: byte(r.IntN(8))}
		}
		return netip.AddrFrom16(b)
	}
	return netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(3)), byte(r.IntN(8))})
}

func randomFlow(r *rand.Rand) Flow {
	v6 := r.IntN(2) == 0
	f := Flow{Src: randomAddr(r, v6), Dst: randomAddr(r, v6)}
	if r.IntN(20) == 0 { // mixed families: impossible on the wire, still must agree
		f.Dst = randomAddr(r, !v6)
	}
	if r.IntN(30) == 0 {
		f.Src = netip.Addr{}
	}
	f.Proto = []uint8{ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6, 50}[r.IntN(5)]
	if r.IntN(10) == 0 {
		f.Opaque = true
	} else {
		f.SrcPort, f.DstPort = uint16(r.IntN(12)), uint16(r.IntN(12))
	}
	return f
}

// bruteLookup is the specification: the matching policy with the lowest
// (Priority, insertion), by a linear scan.
func bruteLookup(ps []*Policy, dir Dir, f *Flow) *Policy {
	var best *Policy
	for _, p := range ps {
		if p.Dir == dir && p.Sel.Match(f) && (best == nil || comparePolicies(p, best) < 0) {
			best = p
		}
	}
	return best
}

func snapshot(s *SPD) []*Policy {
	var ps []*Policy
	s.Walk(func(p *Policy) bool { ps = append(ps, p); return true })
	return ps
}

func TestSPDLookupMatchesBruteForce(t *testing.T) {
	seeds := uint64(20)
	if testing.Short() {
		seeds = 4
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		r := rand.New(rand.NewPCG(seed, 42))
		s := NewSPD()
		for round := 0; round < 6; round++ {
			// Grow, then churn: adds, updates and deletes.
			for i := 0; i < 40; i++ {
				p := &Policy{Dir: Dir(r.IntN(2)), Sel: randomSelector(r), Priority: uint32(r.IntN(6))}
				var err error
				if r.IntN(4) == 0 {
					_, err = s.Update(p)
				} else {
					_, err = s.Add(p)
				}
				if err != nil && !errors.Is(err, ErrExist) {
					t.Fatalf("seed %d: %v", seed, err)
				}
			}
			ps := snapshot(s)
			for i := 0; i < 10 && len(ps) > 0; i++ {
				p := ps[r.IntN(len(ps))]
				if r.IntN(2) == 0 {
					s.DeleteByID(p.ID)
				} else {
					s.Delete(p.Dir, p.Sel)
				}
			}
			ps = snapshot(s)
			if len(ps) != s.Len() {
				t.Fatalf("Walk saw %d of %d", len(ps), s.Len())
			}
			for i := 0; i < 3000; i++ {
				f := randomFlow(r)
				dir := Dir(r.IntN(2))
				want := bruteLookup(ps, dir, &f)
				if got := s.lookupUncached(dir, &f); got != want {
					t.Fatalf("seed %d round %d: Lookup(%v, %v) = %v, want %v", seed, round, dir, f, polStr(got), polStr(want))
				}
				if got := s.Lookup(dir, &f); got != want {
					t.Fatalf("seed %d round %d: cached Lookup(%v, %v) = %v, want %v", seed, round, dir, f, polStr(got), polStr(want))
				}
			}
		}
	}
}

func TestPrioSet(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	var ps prioSet
	counts := map[uint32]int{}
	for i := 0; i < 20000; i++ {
		p := uint32(r.IntN(50))
		if counts[p] > 0 && r.IntN(2) == 0 {
			counts[p]--
			ps.remove(p)
		} else {
			counts[p]++
			ps.add(p)
		}
		min, ok := uint32(0), false
		for q, c := range counts {
			if c > 0 && (!ok || q < min) {
				min, ok = q, true
			}
		}
		if ok && ps.min() != min {
			t.Fatalf("step %d: min %d, want %d", i, ps.min(), min)
		}
		if len(ps.heap) > 2*len(ps.counts)+17+1 {
			t.Fatalf("heap grew to %d for %d priorities", len(ps.heap), len(ps.counts))
		}
	}
}

// TestSPDConcurrent runs lookups against concurrent writers; run it with
// -race. A catch-all policy that never goes away bounds every answer.
func TestSPDConcurrent(t *testing.T) {
	s := NewSPD()
	catchAll := mustAdd(t, s, &Policy{Dir: DirOut, Sel: Selector{}, Priority: 1 << 30})
	stop := make(chan struct{})
	var readers, writers sync.WaitGroup
	var lookups atomic.Int64
	for w := 0; w < 4; w++ {
		readers.Add(1)
		go func(seed uint64) {
			defer readers.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				f := randomFlow(r)
				p := s.Lookup(DirOut, &f)
				if p == nil || !p.Sel.Match(&f) || comparePolicies(p, catchAll) > 0 {
					t.Errorf("Lookup(%v) = %v", f, polStr(p))
					return
				}
				lookups.Add(1)
			}
		}(uint64(w))
	}
	for w := 0; w < 2; w++ {
		writers.Add(1)
		go func(seed uint64) {
			defer writers.Done()
			r := rand.New(rand.NewPCG(seed, 2))
			var mine []uint32
			for i := 0; i < 3000; i++ {
				switch {
				case len(mine) > 0 && r.IntN(3) == 0:
					j := r.IntN(len(mine))
					if _, err := s.DeleteByID(mine[j]); err != nil {
						t.Error(err)
					}
					mine = append(mine[:j], mine[j+1:]...)
				case r.IntN(10) == 0:
					s.Invalidate()
				default:
					id, err := s.Add(&Policy{Dir: DirOut, Sel: randomSelector(r), Priority: uint32(r.IntN(100))})
					if err == nil {
						mine = append(mine, id)
					}
				}
				if i%64 == 0 {
					s.Walk(func(*Policy) bool { return true })
				}
			}
		}(uint64(w))
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	if lookups.Load() == 0 {
		t.Error("no lookups ran")
	}
}

// benchPolicies builds n policies: mostly exact host pairs of both families
// (/32 and /128, as IKE daemons install), a tenth v4 and v6 prefix
// policies of a few lengths, and a catch-all bypass. Its flows are half
// exact hits, a quarter prefix hits (which must also probe the exact
// tuples) and a quarter falling through to the catch-all (which probe
// every tuple), whatever n is.
func benchPolicies(n int) (ps []*Policy, flows []Flow) {
	r := rand.New(rand.NewPCG(1, 2))
	v4 := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	v6 := func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
	}
	var exact, prefix []Flow
	ps = append(ps, &Policy{Dir: DirOut, Sel: Selector{}, Priority: 1 << 20, Action: ActionBypass})
	for i := 1; len(ps) < n; i++ {
		var sel Selector
		prio := uint32(100)
		j := i / 10 // distinct per prefix policy
		switch k := i % 10; {
		case k < 4:
			sel = Selector{Src: netip.PrefixFrom(v4(i), 32), Dst: netip.PrefixFrom(v4(i+1<<20), 32)}
			exact = append(exact, Flow{Src: v4(i), Dst: v4(i + 1<<20), Proto: ProtoUDP, SrcPort: 4500, DstPort: 4500})
		case k < 8:
			sel = Selector{Src: netip.PrefixFrom(v6(i), 128), Dst: netip.PrefixFrom(v6(i+1<<28), 128), Proto: ProtoTCP}
			exact = append(exact, Flow{Src: v6(i), Dst: v6(i + 1<<28), Proto: ProtoTCP, SrcPort: 40000, DstPort: 443})
		case k == 8:
			var a [4]byte
			bits := []int{16, 20, 24}[r.IntN(3)]
			switch bits {
			case 16:
				a = [4]byte{byte(100 + j>>8), byte(j), 0, 0}
			case 20:
				a = [4]byte{byte(150 + j>>12), byte(j >> 4), byte(j << 4), 0}
			default:
				a = [4]byte{11, byte(j >> 8), byte(j), 0}
			}
			net := netip.AddrFrom4(a)
			sel = Selector{Dst: netip.PrefixFrom(net, bits), Proto: ProtoUDP, DstPorts: PortRange{Lo: 53, Hi: 53}}
			prio = uint32(200 + bits)
			prefix = append(prefix, Flow{Src: v4(i), Dst: net.Next(), Proto: ProtoUDP, SrcPort: 3000, DstPort: 53})
		default:
			bits := []int{32, 48, 64}[r.IntN(3)]
			net := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(j >> 24), byte(j >> 16), byte(j >> 8), byte(j)})
			sel = Selector{Src: netip.PrefixFrom(net, bits).Masked(), Dst: netip.PrefixFrom(net, 64)}
			prio = uint32(200 + bits)
			prefix = append(prefix, Flow{Src: net.Next(), Dst: net.Next().Next(), Proto: ProtoTCP, SrcPort: 3000, DstPort: 22})
		}
		ps = append(ps, &Policy{Dir: DirOut, Sel: sel, Priority: prio, Action: ActionProtect,
			Templates: []Template{{Proto: ProtoESP, Level: LevelRequire}}})
	}
	const nf = 1 << 14
	for i := 0; len(flows) < nf; i++ {
		switch {
		case i%4 < 2 && len(exact) > 0:
			flows = append(flows, exact[r.IntN(len(exact))])
		case i%4 == 2 && len(prefix) > 0:
			flows = append(flows, prefix[r.IntN(len(prefix))])
		default:
			flows = append(flows, Flow{Src: v4(i), Dst: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), Proto: ProtoUDP, SrcPort: 1, DstPort: uint16(i)})
		}
	}
	return ps, flows
}

func BenchmarkSPDLookup(b *testing.B) {
	for _, n := range []int{10, 1000, 10000, 100000} {
		ps, flows := benchPolicies(n)
		s := NewSPD()
		for _, p := range ps {
			if _, err := s.Add(p); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("n=%d/hit", n), func(b *testing.B) {
			hot := flows[:256] // fits the flow cache
			for i := range hot {
				s.Lookup(DirOut, &hot[i])
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if s.Lookup(DirOut, &hot[i&255]) == nil {
					b.Fatal("no policy")
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("n=%d/miss", n), func(b *testing.B) {
			// The table search alone, as on every flow-cache miss.
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if s.lookupUncached(DirOut, &flows[i&(1<<14-1)]) == nil {
					b.Fatal("no policy")
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("n=%d/hit-parallel", n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					s.Lookup(DirOut, &flows[i&255])
					i++
				}
			})
		})
	}
}

func BenchmarkSPDInsert(b *testing.B) {
	const n = 100000
	ps, _ := benchPolicies(n)
	b.ReportAllocs()
	for b.Loop() {
		s := NewSPD()
		for _, p := range ps {
			if _, err := s.Add(p); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/policy")
}
