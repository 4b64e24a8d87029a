package daemon

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// failIKERekeys makes the IKE SAs of daemon *d offer only ECP-256 when
// they rekey, which a peer that negotiated Curve25519 refuses with
// NO_PROPOSAL_CHOSEN: every IKE rekey of theirs fails.
func failIKERekeys(t *testing.T, d *atomic.Pointer[Daemon]) {
	orig := newSession
	t.Cleanup(func() { newSession = orig })
	newSession = func(sa *ikeSA, res *exchange.Result, now time.Time) (Session, error) {
		s, err := orig(sa, res, now)
		if err != nil || sa.d != d.Load() {
			return s, err
		}
		x, err := exchange.NewIKESA(res, exchange.SAOptions{Retransmit: sa.d.opts.Retransmit, RekeyKE: []uint16{message.KE_ECP256}})
		if err != nil {
			return nil, err
		}
		s.(*ikesaSession).s = x
		return s, nil
	}
}

// TestIKEHardLifetime: A's IKE SA has rekey_time 1 s, rand_time 0 and
// over_time 2 s, and each of its rekeys is refused. strongSwan (ike_sa.c
// set_state: the delete job at the rekey time plus over_time;
// delete_ike_sa_job; ike_sa.c delete_) deletes such an IKE SA, and its
// CHILD SAs, with the peer at its hard lifetime, about 3 s; as an IKE SA
// this side deleted it is not reestablished, even with close_action =
// restart (charon reestablishes after the peer's Delete, ike_delete.c
// process_r, or a dead peer, not after its own).
func TestIKEHardLifetime(t *testing.T) {
	var target atomic.Pointer[Daemon]
	failIKERekeys(t, &target)
	cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone)
	conn := cfgA.Connections[0]
	conn.RekeyTime, conn.RandTime, conn.OverTime = time.Second, 0, 2*time.Second
	conn.Children[0].CloseAction = config.ActionRestart
	cfgB := connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone)
	b := newBed(t, 4, cfgA, cfgB)
	target.Store(b.da)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a refused IKE rekey", 5*time.Second, func() bool { return snap2(b.da, "IKEFailures", "no_proposal") > 0 })
	waitFor(t, "the IKE SA deleted at its hard lifetime", 10*time.Second, func() bool {
		return len(b.da.List().SAs) == 0 && len(b.db.List().SAs) == 0 && espSAs(b.a.Engine) == 0 && espSAs(b.b.Engine) == 0
	})
	took := time.Since(start)
	if took < 2500*time.Millisecond {
		t.Errorf("IKE SA gone after %v, before rekey_time + over_time (3 s)", took)
	}
	if n := b.da.Stats.IKEDeleted.Load(); n != 1 {
		t.Errorf("A counted %d IKE deletes, want 1", n)
	}
	time.Sleep(2 * time.Second)
	if n := b.da.Stats.IKEEstablished.Load(); n != 1 || len(b.da.List().SAs) != 0 {
		t.Errorf("A established %d IKE SAs (listing:\n%s), want 1: an expired IKE SA is not restarted", n, b.da.List().Format())
	}
	t.Logf("IKE SA deleted %v after it was initiated", took)
}

// TestCloseActionRestart: with close_action = restart, A reestablishes
// its IKE SA when the peer deletes it (charon: ike_delete.c process_r,
// reestablish), but not when A itself deletes it (a terminate command).
func TestCloseActionRestart(t *testing.T) {
	cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone)
	cfgA.Connections[0].Children[0].CloseAction = config.ActionRestart
	cfgB := connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone)
	b := newBed(t, 4, cfgA, cfgB)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B's IKE SA", 5*time.Second, func() bool { return len(b.db.List().SAs) == 1 })
	if err := b.db.Terminate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A's restart after B's Delete", 5*time.Second, func() bool {
		return b.da.Stats.IKEEstablished.Load() == 2 && espSAs(b.b.Engine) == 2
	})
	if err := b.da.Terminate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if n := b.da.Stats.IKEEstablished.Load(); n != 2 || len(b.da.List().SAs) != 0 {
		t.Errorf("A established %d IKE SAs after its own terminate (listing:\n%s), want no restart", n, b.da.List().Format())
	}
}

// TestNoLivenessRightAfterAuth: with dpd_delay 1 s, the IKE SA sends no
// liveness check before 1 s of silence has passed: none right after
// IKE_AUTH (the first tick used to see a zero time of the last message
// and sent one at once, winning the race against the peer's own DPD).
func TestNoLivenessRightAfterAuth(t *testing.T) {
	b, _ := dpdBed(t)
	time.Sleep(700 * time.Millisecond)
	if n := b.da.Stats.OutMessages.Load(); n != 2 {
		t.Errorf("A sent %d IKE messages within 0.7 s, want 2 (IKE_SA_INIT, IKE_AUTH): no liveness check yet", n)
	}
	waitFor(t, "A's liveness check after 1 s of silence", 3*time.Second, func() bool { return b.da.Stats.OutMessages.Load() == 3 })
}

// TestNoLivenessWhileESPFlows: inbound ESP is a sign of life, as for
// charon (swanctl.conf(5) dpd_delay: active checks only when no IKE or
// ESP packet came for dpd_delay): A sends no liveness check while B's
// packets arrive on the CHILD SA for longer than dpd_delay, and sends
// one once they stop.
func TestNoLivenessWhileESPFlows(t *testing.T) {
	b, ctx := dpdBed(t)
	// B pings A every 200 ms for 2.5 s: A's inbound SA keeps counting.
	// A ping that times out on a loaded run only thins the flow; what
	// counts is that ESP kept arriving.
	got := 0
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); {
		pctx, c := context.WithTimeout(ctx, 400*time.Millisecond)
		if _, err := testbed.Ping(pctx, b.b, addrA4, 1, 56); err == nil {
			got++
		}
		c()
		time.Sleep(200 * time.Millisecond)
	}
	if got < 5 {
		t.Fatalf("%d pings from B to A answered in 2.5 s: too little ESP to test with", got)
	}
	if n := b.da.Stats.OutMessages.Load(); n != 2 {
		t.Errorf("A sent %d IKE messages while ESP arrived for 2.5 s, want 2 (IKE_SA_INIT, IKE_AUTH): no liveness check", n)
	}
	waitFor(t, "A's liveness check after 1 s without IKE or ESP", 3*time.Second, func() bool { return b.da.Stats.OutMessages.Load() >= 3 })
}
