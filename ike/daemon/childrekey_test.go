package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestChildRekeyRefused: A's child asks for PFS with ECP-256 (its ESP
// proposal holds a KE transform), B's does not. IKE_AUTH carries no KE,
// so the mismatch shows only when A rekeys the CHILD SA: A's
// CREATE_CHILD_SA must offer the PFS group (RFC 7296 §1.3.1; charon
// does) and B refuses it with NO_PROPOSAL_CHOSEN, instead of both
// silently rekeying without PFS. The refusal leaves the old CHILD SA in
// place on both sides (make-before-break: nothing was removed, traffic
// flows), and A tries again later as charon does (child_rekey.c
// schedule_delayed_rekey), here after Options.RekeyRetry.
func TestChildRekeyRefused(t *testing.T) {
	cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone)
	ch := cfgA.Connections[0].Children[0]
	ch.Proposals = espProposal()
	ch.Proposals[0].Transforms = append(ch.Proposals[0].Transforms, message.Transform{Type: message.TransformKE, ID: message.KE_ECP256})
	ch.RekeyTime, ch.LifeTime, ch.RandTime = time.Second, 30*time.Second, 0
	cfgB := connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone)
	b := newBedWith(t, 4, cfgA, cfgB, nil, func(o *Options) { o.RekeyRetry = 500 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	first := b.da.List().SAs[0].Children[0]
	waitFor(t, "A's CHILD SA rekey refused twice", 8*time.Second, func() bool { return snap2(b.da, "IKEFailures", "no_proposal") >= 2 })
	if n := b.da.Stats.ChildRekeys.Load() + b.db.Stats.ChildRekeys.Load(); n != 0 {
		t.Errorf("%d CHILD SA rekeys without the PFS A asks for", n)
	}
	if na, nb := espSAs(b.a.Engine), espSAs(b.b.Engine); na != 2 || nb != 2 {
		t.Errorf("ESP SAs after the refused rekeys: A %d, B %d, want 2 each", na, nb)
	}
	if l := b.da.List(); len(l.SAs) != 1 || len(l.SAs[0].Children) != 1 || l.SAs[0].Children[0].SPIIn != first.SPIIn {
		t.Errorf("A's listing after the refused rekeys:\n%s", l.Format())
	}
	if _, err := testbed.TCPTransfer(ctx, b.a, addrB4, 64<<10); err != nil {
		t.Fatal(err)
	}
	b.checkLeaks(t)
}
