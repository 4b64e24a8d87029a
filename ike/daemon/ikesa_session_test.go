package daemon

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestLiveRekeys runs the IKE SA state machine in the daemon: CHILD SAs
// rekeyed every second and the IKE SA every two (both sides configured so,
// so rekeys collide too) while 16 MiB TCP transfers run back to back for
// 6 s, so every rekey falls inside one: every transfer completes, rekeys of both kinds happen, no xfrm counter
// moves on either side (no packet met a missing SA or failed a check),
// and nothing leaves in clear.
func TestLiveRekeys(t *testing.T) {
	mk := func(l, r, lid, rid string) *config.Config {
		c := connConfig(mustAddr(l), mustAddr(r), lid, rid, xfrm.ModeTunnel, config.StartNone)
		c.Connections[0].RekeyTime, c.Connections[0].RandTime = 2*time.Second, 500*time.Millisecond
		ch := c.Connections[0].Children[0]
		ch.RekeyTime, ch.LifeTime, ch.RandTime = time.Second, 30*time.Second, 300*time.Millisecond
		return c
	}
	b := newBed(t, 4, mk("192.0.2.1", "192.0.2.2", "a.test", "b.test"), mk("192.0.2.2", "192.0.2.1", "b.test", "a.test"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	n, total := 0, 0
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); n++ {
		if _, err := testbed.TCPTransfer(ctx, b.a, addrB4, 16<<20); err != nil {
			t.Fatalf("transfer %d: %v", n, err)
		}
		total += 16 << 20
	}
	cr := b.da.Stats.ChildRekeys.Load() + b.db.Stats.ChildRekeys.Load()
	ir := b.da.Stats.IKERekeys.Load() + b.db.Stats.IKERekeys.Load()
	t.Logf("%d MiB in %d transfers; CHILD rekeys %d, IKE rekeys %d", total>>20, n, cr, ir)
	if cr < 3 || ir < 1 {
		t.Errorf("CHILD rekeys %d, IKE rekeys %d: too few", cr, ir)
	}
	for side, e := range map[string]*xfrm.Engine{"A": b.a.Engine, "B": b.b.Engine} {
		for _, v := range e.Stats.Snapshot() {
			if v.Value != 0 {
				t.Errorf("%s: %s = %d", side, v.Name, v.Value)
			}
		}
	}
	if l := b.da.List(); len(l.SAs) != 1 {
		t.Errorf("A's IKE SAs after the rekeys:\n%s", l.Format())
	}
	b.checkLeaks(t)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestSecondChildByCreateChildSA: a connection with two trapped children
// (TCP and ICMP between the hosts): TCP traffic brings up the IKE SA with
// the TCP child, then a ping's ACQUIRE brings up the ICMP child with
// CREATE_CHILD_SA in the same IKE SA.
func TestSecondChildByCreateChildSA(t *testing.T) {
	mk := func(l, r netip.Addr, lid, rid string, start config.StartAction) *config.Config {
		c := connConfig(l, r, lid, rid, xfrm.ModeTransport, start)
		conn := c.Connections[0]
		tcp := *conn.Children[0]
		tcp.Name = "tcp"
		tcp.LocalTS = []message.TrafficSelector{{TSType: message.TS_IPV4_ADDR_RANGE, IPProto: 6, Start: l, End: l, EndPort: 65535}}
		tcp.RemoteTS = []message.TrafficSelector{{TSType: message.TS_IPV4_ADDR_RANGE, IPProto: 6, Start: r, End: r, EndPort: 65535}}
		icmp := tcp
		icmp.Name = "icmp"
		icmp.LocalTS = []message.TrafficSelector{{TSType: message.TS_IPV4_ADDR_RANGE, IPProto: 1, Start: l, End: l, EndPort: 65535}}
		icmp.RemoteTS = []message.TrafficSelector{{TSType: message.TS_IPV4_ADDR_RANGE, IPProto: 1, Start: r, End: r, EndPort: 65535}}
		conn.Children = []*config.Child{&tcp, &icmp}
		return c
	}
	b := newBed(t, 4, mk(addrA4, addrB4, "a.test", "b.test", config.StartTrap), mk(addrB4, addrA4, "b.test", "a.test", config.StartNone))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := testbed.TCPTransfer(ctx, b.a, addrB4, 64<<10); err != nil {
		t.Fatal(err)
	}
	if _, err := testbed.Ping(ctx, b.a, addrB4, 3, 56); err != nil {
		t.Fatal(err)
	}
	l := b.da.List()
	if len(l.SAs) != 1 || len(l.SAs[0].Children) != 2 {
		t.Fatalf("A's listing:\n%s", l.Format())
	}
	if n := b.da.Stats.IKEEstablished.Load(); n != 1 {
		t.Errorf("%d IKE SAs established, want 1", n)
	}
	b.checkLeaks(t)
}
