// This file adapts ike/exchange's IKE SA state machine (exchange.IKESA:
// CREATE_CHILD_SA, INFORMATIONAL, rekeying with collisions) to the
// daemon's Session.

package daemon

import (
	"fmt"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
)

// newSession makes the Session of an IKE SA that IKE_AUTH established;
// it owns res.Keys from here. A variable, so tests can wrap it.
var newSession = func(sa *ikeSA, res *exchange.Result, now time.Time) (Session, error) {
	c := sa.conn.c
	ch := c.Children[sa.child]
	opts := exchange.SAOptions{Retransmit: sa.d.opts.Retransmit}
	for _, cc := range c.Children {
		cfg, err := exchangeConfig(sa.d.opts.Config, c, cc, sa.xcfg.Local, sa.xcfg.Remote)
		if err != nil {
			continue
		}
		if chc, err := childConfig(cfg, cc); err == nil {
			opts.Children = append(opts.Children, chc)
			if cc == ch {
				// IKE_AUTH negotiates no KE: the PFS groups of the
				// child's proposal apply from its first rekey on (as
				// charon's), and its ESN choice.
				opts.PFS, opts.ESN = chc.PFS, chc.ESN
			}
		}
	}
	s, err := exchange.NewIKESA(res, opts)
	if err != nil {
		res.Keys.Wipe()
		return nil, err
	}
	a := &ikesaSession{s: s, sa: sa, suite: res.IKE, dpd: c.DPDDelay, ids: map[uint32]int{}, names: map[int]string{1: ch.Name}}
	a.schedule(now)
	return a, nil
}

// ikesaSession is a Session over exchange.IKESA. It adds the timers the
// state machine leaves to its caller: liveness after dpd_delay of
// silence, and the IKE SA's rekey_time and hard lifetime.
type ikesaSession struct {
	s     *exchange.IKESA
	sa    *ikeSA
	suite exchange.IKESuite
	dpd   time.Duration
	// rekeyAt is when the IKE SA is rekeyed; deleteAt, when it is
	// deleted if its rekeys keep failing (zero: never).
	rekeyAt, deleteAt time.Time
	// expired: the IKE SA reached deleteAt and its Delete is under way.
	expired bool
	// rekeying is when our rekey of the IKE SA started (zero: none is
	// under way).
	rekeying time.Time
	// retry maps the IDs of CHILD SAs whose rekey failed to when it is
	// tried again.
	retry map[int]time.Time
	// ids maps our inbound SPI to the CHILD SA's ID (a rekey keeps the
	// ID); names maps IDs to the configured child.
	ids   map[uint32]int
	names map[int]string
	// espPackets is the inbound packet count of the CHILD SAs at the
	// last Tick; espSeen is when it last moved. Inbound ESP is a sign of
	// life as much as an IKE message (swanctl.conf(5) dpd_delay: "only
	// enforced if no IKE or ESP/AH packet has been received"), so a busy
	// tunnel sends no liveness checks.
	espPackets uint64
	espSeen    time.Time
}

// schedule sets the timers of an IKE SA established (or rekeyed) at
// now, as charon's ike_sa.c set_state does: the rekey at rekey_time less
// up to rand_time, and the delete (its hard lifetime) over_time after
// that rekey time; without rekey_time, neither.
func (a *ikesaSession) schedule(now time.Time) {
	a.rekeyAt, a.deleteAt = time.Time{}, time.Time{}
	if c := a.sa.conn.c; c.RekeyTime > 0 {
		r := jitter(c.RekeyTime, c.RandTime)
		a.rekeyAt, a.deleteAt = now.Add(r), now.Add(r+c.OverTime)
	}
}

func (a *ikesaSession) AddChild(inSPI, outSPI uint32) {
	if _, ok := a.ids[inSPI]; !ok {
		a.ids[inSPI] = 1 // the IKE_AUTH CHILD SA
	}
}

func (a *ikesaSession) Handle(msg []byte, now time.Time) ([][]byte, []SessionEvent, error) {
	out, evs := a.s.Handle(msg, now)
	return out, a.events(evs), nil
}

// expiryPatience bounds how long an IKE SA past its hard lifetime waits
// for its rekey under way (charon's IKE rekey fails at the first
// TEMPORARY_FAILURE and retries in 6-15 s; ours retries within the
// exchange every 2-4 s).
const expiryPatience = 30 * time.Second

func (a *ikesaSession) Tick(now time.Time) ([][]byte, []SessionEvent) {
	// Liveness after dpd_delay of silence; before the first Tick the
	// state machine has no time of its own yet (IKE_AUTH just ended), so
	// there is no silence to speak of.
	if n := a.sa.inboundPackets(); n != a.espPackets {
		a.espPackets, a.espSeen = n, now
	}
	if last := a.s.LastReceived(); a.dpd > 0 && !last.IsZero() && now.Sub(last) >= a.dpd && now.Sub(a.espSeen) >= a.dpd && !a.s.Closed() {
		a.s.Liveness()
	}
	if !a.rekeyAt.IsZero() && now.After(a.rekeyAt) {
		a.rekeyAt = time.Time{}
		if a.s.RekeyIKE() == nil {
			a.rekeying = now
		}
	}
	for id, at := range a.retry {
		if !now.Before(at) {
			delete(a.retry, id)
			a.s.RekeyChild(id) // an error: deleted meanwhile
		}
	}
	// At its hard lifetime an IKE SA whose rekeys failed goes, with its
	// CHILD SAs, by a Delete (charon's delete_ike_sa_job). A rekey under
	// way gets its chance first, as charon's Delete waits behind it and
	// then only ends the replaced SA: the new one lives on (and over_time
	// = 0 does not end a connection that rekeys in time). A rekey the peer
	// keeps answering with TEMPORARY_FAILURE waits no longer than
	// expiryPatience.
	hard := !a.deleteAt.IsZero() && !now.Before(a.deleteAt)
	if hard && !a.s.Closed() && (a.rekeying.IsZero() || now.Sub(a.rekeying) >= expiryPatience) {
		a.rekeyAt, a.deleteAt = time.Time{}, time.Time{}
		if a.s.Delete() == nil {
			a.expired = true
			a.sa.d.log.Info("ike expired", a.sa.logger().args("over_time", a.sa.conn.c.OverTime.String())...)
		}
	}
	out, evs := a.s.Tick(now)
	return out, a.events(evs)
}

func (a *ikesaSession) id(inSPI uint32) (int, error) {
	id, ok := a.ids[inSPI]
	if !ok {
		return 0, fmt.Errorf("no CHILD SA with inbound SPI 0x%08x", inSPI)
	}
	return id, nil
}

func (a *ikesaSession) DeleteChild(inSPI uint32, now time.Time) ([][]byte, error) {
	id, err := a.id(inSPI)
	if err != nil {
		return nil, err
	}
	if err := a.s.DeleteChild(id); err != nil {
		return nil, err
	}
	out, _ := a.s.Tick(now) // events come with the answer
	return out, nil
}

func (a *ikesaSession) RekeyChild(inSPI uint32, now time.Time) ([][]byte, error) {
	id, err := a.id(inSPI)
	if err != nil {
		return nil, err
	}
	if err := a.s.RekeyChild(id); err != nil {
		return nil, err
	}
	out, _ := a.s.Tick(now)
	return out, nil
}

func (a *ikesaSession) CreateChild(name string, now time.Time) ([][]byte, error) {
	ci := a.sa.childIndex(name)
	if ci < 0 {
		return nil, fmt.Errorf("no child %q in connection %s", name, a.sa.conn.c.Name)
	}
	c := a.sa.conn.c
	cfg, err := exchangeConfig(a.sa.d.opts.Config, c, c.Children[ci], a.sa.xcfg.Local, a.sa.xcfg.Remote)
	if err != nil {
		return nil, err
	}
	chc, err := childConfig(cfg, c.Children[ci])
	if err != nil {
		return nil, err
	}
	if err := a.s.CreateChild(chc); err != nil {
		return nil, err
	}
	out, _ := a.s.Tick(now)
	return out, nil
}

func (a *ikesaSession) Delete(now time.Time) ([][]byte, error) {
	if err := a.s.Delete(); err != nil {
		return nil, err
	}
	out, _ := a.s.Tick(now)
	return out, nil
}

// events translates the state machine's events.
func (a *ikesaSession) events(evs []exchange.Event) []SessionEvent {
	var out []SessionEvent
	for _, ev := range evs {
		switch e := ev.(type) {
		case exchange.ChildAdded:
			name := a.nameFor(e.Child)
			a.names[e.Child.ID] = name
			a.ids[e.Child.In.SPI] = e.Child.ID
			out = append(out, SessionEvent{Kind: ChildAdded, Child: name, In: e.Child.In, Out: e.Child.Out,
				LocalTS: e.Child.LocalTS, RemoteTS: e.Child.RemoteTS})
		case exchange.ChildRekeyed:
			a.ids[e.New.In.SPI] = e.New.ID
			se := SessionEvent{Kind: ChildRekeyed, OldInSPI: e.Old.In.SPI, In: e.New.In,
				LocalTS: e.New.LocalTS, RemoteTS: e.New.RemoteTS}
			if e.Outbound {
				se.Out = e.New.Out
			}
			out = append(out, se)
		case exchange.ChildOutbound:
			out = append(out, SessionEvent{Kind: ChildOutbound, OldInSPI: e.Child.In.SPI, Out: e.Child.Out})
		case exchange.ChildDeleted:
			delete(a.ids, e.Child.In.SPI)
			out = append(out, SessionEvent{Kind: ChildDeleted, OldInSPI: e.Child.In.SPI})
		case exchange.ChildFailed:
			a.sa.d.Stats.fail(failReason(e.Err))
			if e.ID == 0 || a.expired {
				a.sa.d.log.Warn("child negotiation failed", a.sa.logger().args("id", e.ID, "err", fmt.Sprint(e.Err))...)
				continue
			}
			// A refused rekey keeps the CHILD SA (nothing was replaced):
			// try again, as charon does (child_rekey.c
			// schedule_delayed_rekey), until its hard lifetime.
			d := a.sa.d.rekeyRetry()
			if a.retry == nil {
				a.retry = map[int]time.Time{}
			}
			a.retry[e.ID] = time.Now().Add(d)
			a.sa.d.log.Warn("child rekey failed", a.sa.logger().args("id", e.ID, "err", fmt.Sprint(e.Err), "retry_in", d.String())...)
		case exchange.IKERekeyed:
			line, _ := KeyLogLine(&e.Suite, &exchange.Result{SPIi: e.SPIi, SPIr: e.SPIr, Keys: e.Keys})
			a.suite = e.Suite
			a.rekeying = time.Time{}
			if !a.expired {
				a.schedule(time.Now()) // the new IKE SA's own lifetime
			}
			out = append(out, SessionEvent{Kind: IKERekeyed, SPIi: e.SPIi, SPIr: e.SPIr, Initiator: e.Initiator, KeyLog: line})
		case exchange.IKEDeleted:
			out = append(out, SessionEvent{Kind: IKEDeleted, ByPeer: e.ByPeer})
		case exchange.Dead:
			out = append(out, SessionEvent{Kind: Dead})
		case exchange.IKERekeyFailed:
			a.sa.d.Stats.fail(failReason(e.Err))
			a.sa.d.log.Warn("ike rekey failed", a.sa.logger().args("err", fmt.Sprint(e.Err))...)
			a.rekeying = time.Time{}
			// Try again as charon does (ike_rekey.c schedule_delayed_rekey:
			// RETRY_INTERVAL 15 s less up to RETRY_JITTER 10 s, ike_sa.h);
			// deleteAt, the hard lifetime, ends the IKE SA if no rekey
			// succeeds before.
			if !a.expired {
				a.rekeyAt = time.Now().Add(a.sa.d.rekeyRetry())
			}
		}
	}
	return out
}

// nameFor finds the configured child a CHILD SA belongs to: the one
// named for its ID, else the first whose selectors contain the agreed
// ones.
func (a *ikesaSession) nameFor(c exchange.ChildSA) string {
	if n, ok := a.names[c.ID]; ok {
		return n
	}
	cs := a.sa.conn.c
	for _, ch := range cs.Children {
		l, r := childTS(ch, a.sa.local.Addr(), a.sa.remote.Addr())
		if covers(l, c.LocalTS) && covers(r, c.RemoteTS) {
			return ch.Name
		}
	}
	return cs.Children[0].Name
}

// childConfig is what IKESA offers and accepts in CREATE_CHILD_SA for the
// configured child cc (x is its exchange configuration). IKESA offers one
// proposal: the first transform of each type of cc's first ESP proposal,
// with that proposal's key exchange methods as PFS groups and its ESN
// choice.
func childConfig(x exchange.Config, cc *config.Child) (exchange.ChildConfig, error) {
	esp, err := espSuiteOf(cc.Proposals)
	if err != nil {
		return exchange.ChildConfig{}, fmt.Errorf("%s: child %s: %v", cc.Pos, cc.Name, err)
	}
	var pfs []uint16
	var esnYes, esnNo bool
	for _, t := range cc.Proposals[0].Transforms {
		switch t.Type {
		case message.TransformKE:
			if t.ID != message.KE_NONE {
				pfs = append(pfs, t.ID)
			}
		case message.TransformESN:
			esnYes, esnNo = esnYes || t.ID == message.ESN_YES, esnNo || t.ID == message.ESN_NO
		}
	}
	esn := exchange.ESNNo
	switch {
	case esnYes && esnNo:
		esn = exchange.ESNEither
	case esnYes:
		esn = exchange.ESNYes
	}
	return exchange.ChildConfig{ESP: esp, PFS: pfs, ESN: esn, LocalTS: x.LocalTS, RemoteTS: x.RemoteTS,
		Mode: cc.Mode, ReplayWindow: cc.ReplayWindow}, nil
}
