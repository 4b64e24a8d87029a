package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// softExpire rekeys the CHILD SA of sa as the engine's soft expiry of
// its inbound SA does.
func softExpire(t *testing.T, sa *ikeSA, local netip.Addr) {
	t.Helper()
	sa.mu.Lock()
	var spi uint32
	for _, c := range sa.children {
		if !c.retiring {
			spi = c.inSPI
		}
	}
	sa.mu.Unlock()
	sa.expired(spi, local, false)
}

// rekeyIKE has sa's state machine rekey the IKE SA, as its rekey_time.
func rekeyIKE(sa *ikeSA) {
	sa.do(func(time.Time) { sa.sess.(*ikesaSession).s.RekeyIKE() })
}

// TestCountersAfterRekeys: after CHILD SA rekeys started by either side,
// IKE SA rekeys started by either side, and a CHILD SA rekey in the
// rekeyed IKE SA, each side's listing and counters agree with what is
// really there: in the engines, one ESP SA pair whose SPIs are those
// listed (A's inbound is B's outbound and the reverse); one IKE SA and
// one CHILD SA up; 3 CHILD SA rekeys and 2 IKE SA rekeys counted on
// each side, 4 CHILD SAs installed of which 3 were removed, no failure.
// Right after a rekey, the old SA, kept for the packets still on their
// way, is listed as REKEYED and not counted as up. After the delete,
// everything is counted down.
func TestCountersAfterRekeys(t *testing.T) {
	b := newBed(t, 4,
		connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone),
		connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B's CHILD SA", 5*time.Second, func() bool { return espSAs(b.b.Engine) == 2 })
	saA, saB := oneSA(b.da), oneSA(b.db)
	both := func(what string, f func(d *Daemon) uint64, n uint64) {
		t.Helper()
		waitFor(t, what, 10*time.Second, func() bool { return f(b.da) == n && f(b.db) == n })
		// the old pair's inbound SA goes after the grace period
		waitFor(t, what+": old SAs gone", 5*time.Second, func() bool { return espSAs(b.a.Engine) == 2 && espSAs(b.b.Engine) == 2 })
	}
	childRekeys := func(d *Daemon) uint64 { return d.Stats.ChildRekeys.Load() }
	ikeRekeys := func(d *Daemon) uint64 { return d.Stats.IKERekeys.Load() }
	softExpire(t, saA, addrA4)
	waitFor(t, "the first CHILD SA rekey", 10*time.Second, func() bool { return childRekeys(b.da) == 1 && childRekeys(b.db) == 1 })
	// Within the grace period the old pair's inbound SA is still there:
	// listed as REKEYED, not counted as a CHILD SA up.
	if l := b.da.List(); len(l.SAs) != 1 || len(l.SAs[0].Children) != 2 ||
		l.SAs[0].Children[0].State != "REKEYED" || l.SAs[0].Children[1].State != "INSTALLED" {
		t.Errorf("A's listing right after the rekey:\n%s", l.Format())
	}
	if n := snap(b.da, "IKEChildSAsInstalled"); n != 1 {
		t.Errorf("A counts %d CHILD SAs up right after the rekey, want 1", n)
	}
	both("a CHILD SA rekey by A", childRekeys, 1)
	softExpire(t, saB, addrB4)
	both("a CHILD SA rekey by B", childRekeys, 2)
	rekeyIKE(saA)
	both("an IKE SA rekey by A", ikeRekeys, 1)
	rekeyIKE(saB)
	both("an IKE SA rekey by B", ikeRekeys, 2)
	softExpire(t, saA, addrA4)
	both("a CHILD SA rekey by A in the rekeyed IKE SA", childRekeys, 3)
	if _, err := testbed.TCPTransfer(ctx, b.a, addrB4, 64<<10); err != nil {
		t.Fatal(err)
	}

	// The truth: the SPIs in each engine.
	engineSPIs := func(e *xfrm.Engine, local netip.Addr) (in, out string) {
		e.SAD.Walk(func(x *xfrm.SA) bool {
			if x.Config.Dst == local {
				in = fmt.Sprintf("%08x", x.Config.SPI)
			} else {
				out = fmt.Sprintf("%08x", x.Config.SPI)
			}
			return true
		})
		return in, out
	}
	aIn, aOut := engineSPIs(b.a.Engine, addrA4)
	bIn, bOut := engineSPIs(b.b.Engine, addrB4)
	if aIn != bOut || aOut != bIn {
		t.Fatalf("the engines' SAs do not pair: A in %s out %s, B in %s out %s", aIn, aOut, bIn, bOut)
	}
	la, lb := b.da.List(), b.db.List()
	if len(la.SAs) != 1 || len(lb.SAs) != 1 || la.SAs[0].SPIi != lb.SAs[0].SPIi || la.SAs[0].SPIr != lb.SAs[0].SPIr {
		t.Fatalf("IKE SAs listed:\n%s\n%s", la.Format(), lb.Format())
	}
	for _, c := range []struct {
		side    string
		l       Listing
		in, out string
	}{{"A", la, aIn, aOut}, {"B", lb, bIn, bOut}} {
		if ch := c.l.SAs[0].Children; len(ch) != 1 || ch[0].SPIIn != c.in || ch[0].SPIOut != c.out {
			t.Errorf("%s lists\n%s\nthe engine holds in %s out %s", c.side, c.l.Format(), c.in, c.out)
		}
	}
	want := map[string]uint64{"IKESAsEstablished": 1, "IKEChildSAsInstalled": 1, "IKESAsHalfOpen": 0,
		"IKEEstablishedTotal": 1, "IKEChildInstalledTotal": 4, "IKEChildDeletedTotal": 3, "IKEDeletedTotal": 0,
		"IKEChildRekeysTotal": 3, "IKERekeysTotal": 2}
	check := func(when string) {
		t.Helper()
		for side, d := range map[string]*Daemon{"A": b.da, "B": b.db} {
			for _, s := range d.Snapshot() {
				if w, ok := want[s.Name]; ok && s.Value != w {
					t.Errorf("%s %s: %s = %d, want %d", when, side, s.Name, s.Value, w)
				}
				if s.Name == "IKEFailures" && s.Value != 0 {
					t.Errorf("%s %s: %d failures %q", when, side, s.Value, s.Label)
				}
			}
		}
	}
	check("after the rekeys")
	tcpQuiet(t, b.b)
	if err := b.da.Terminate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both IKE SAs gone", 5*time.Second, func() bool { return len(b.da.List().SAs) == 0 && len(b.db.List().SAs) == 0 })
	want["IKESAsEstablished"], want["IKEChildSAsInstalled"], want["IKEChildDeletedTotal"], want["IKEDeletedTotal"] = 0, 0, 4, 1
	check("after the delete")
}
