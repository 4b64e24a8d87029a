package exchange

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// sad is a test model of what a daemon installs from the events of one
// side: SAs by SPI and direction, and the outbound SA in use per CHILD
// SA ID. It checks the events' contract (nothing removed that was not
// installed, nothing installed twice).
type sad struct {
	t   *testing.T
	who string
	in  map[uint32]xfrm.SAConfig
	out map[uint32]xfrm.SAConfig
	use map[int]uint32 // CHILD SA ID -> outbound SPI in use
	ev  []Event
}

func newSAD(t *testing.T, who string, r *Result) *sad {
	d := &sad{t: t, who: who, in: map[uint32]xfrm.SAConfig{}, out: map[uint32]xfrm.SAConfig{}, use: map[int]uint32{}}
	d.in[r.In.SPI], d.out[r.Out.SPI], d.use[1] = r.In, r.Out, r.Out.SPI
	return d
}

func (d *sad) addIn(c xfrm.SAConfig) {
	if _, ok := d.in[c.SPI]; ok {
		d.t.Errorf("%s: inbound SA %08x installed twice", d.who, c.SPI)
	}
	d.in[c.SPI] = c
}

func (d *sad) addOut(id int, c xfrm.SAConfig) {
	if _, ok := d.out[c.SPI]; ok {
		d.t.Errorf("%s: outbound SA %08x installed twice", d.who, c.SPI)
	}
	d.out[c.SPI] = c
	d.use[id] = c.SPI
}

func (d *sad) apply(evs []Event) {
	for _, e := range evs {
		d.ev = append(d.ev, e)
		switch e := e.(type) {
		case ChildAdded:
			d.addIn(e.Child.In)
			d.addOut(e.Child.ID, e.Child.Out)
		case ChildRekeyed:
			if _, ok := d.in[e.Old.In.SPI]; !ok {
				d.t.Errorf("%s: rekey of SA %08x that is not installed", d.who, e.Old.In.SPI)
			}
			d.addIn(e.New.In)
			if e.Outbound {
				d.addOut(e.New.ID, e.New.Out)
			}
		case ChildOutbound:
			d.addOut(e.Child.ID, e.Child.Out)
		case ChildDeleted:
			if _, ok := d.in[e.Child.In.SPI]; !ok {
				d.t.Errorf("%s: delete of inbound SA %08x that is not installed", d.who, e.Child.In.SPI)
			}
			delete(d.in, e.Child.In.SPI)
			delete(d.out, e.Child.Out.SPI)
			if d.use[e.Child.ID] == e.Child.Out.SPI {
				delete(d.use, e.Child.ID)
			}
		}
	}
}

func (d *sad) count(f func(Event) bool) int {
	n := 0
	for _, e := range d.ev {
		if f(e) {
			n++
		}
	}
	return n
}

// net is an in-memory network between two IKESAs with a clock. Messages
// wait in a queue per direction until delivered.
type simnet struct {
	t      *testing.T
	a, b   *IKESA
	da, db *sad
	ab, ba [][]byte // in flight a->b, b->a
	now    time.Time
}

// establish runs IKE_AUTH between ci and cr and returns both IKE SAs.
func establish(t *testing.T, ci, cr Config, oa, ob SAOptions) *simnet {
	t.Helper()
	i, r, err := run(t, ci, cr)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewIKESA(i.Result(), oa)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewIKESA(r.Result(), ob)
	if err != nil {
		t.Fatal(err)
	}
	return &simnet{t: t, a: a, b: b, da: newSAD(t, "A", i.Result()), db: newSAD(t, "B", r.Result()), now: time.Unix(1e9, 0)}
}

func (n *simnet) tick() {
	out, ev := n.a.Tick(n.now)
	n.ab = append(n.ab, out...)
	n.da.apply(ev)
	out, ev = n.b.Tick(n.now)
	n.ba = append(n.ba, out...)
	n.db.apply(ev)
}

// toB delivers the first message in flight from A to B.
func (n *simnet) toB() {
	m := n.ab[0]
	n.ab = n.ab[1:]
	out, ev := n.b.Handle(m, n.now)
	n.ba = append(n.ba, out...)
	n.db.apply(ev)
}

func (n *simnet) toA() {
	m := n.ba[0]
	n.ba = n.ba[1:]
	out, ev := n.a.Handle(m, n.now)
	n.ab = append(n.ab, out...)
	n.da.apply(ev)
}

// settle delivers everything, advancing the clock past retry delays,
// until nothing is in flight or queued.
func (n *simnet) settle() {
	n.t.Helper()
	for k := 0; k < 200; k++ {
		n.tick()
		switch {
		case len(n.ab) > 0:
			n.toB()
		case len(n.ba) > 0:
			n.toA()
		default:
			next := n.a.NextTimeout()
			if t := n.b.NextTimeout(); next.IsZero() || (!t.IsZero() && t.Before(next)) {
				next = t
			}
			if next.IsZero() {
				return
			}
			n.now = next
		}
	}
	n.t.Fatal("the exchanges did not settle")
}

// check verifies that both sides hold matching CHILD SAs: each side's
// outbound SA in use is installed inbound at the other with the same
// keys, and nothing else is installed than what Children reports.
func (n *simnet) check(wantChildren int) {
	n.t.Helper()
	for _, x := range []struct {
		name   string
		s      *IKESA
		d, o   *sad
		closed bool
	}{{"A", n.a, n.da, n.db, n.a.Closed()}, {"B", n.b, n.db, n.da, n.b.Closed()}} {
		if len(x.d.use) != wantChildren {
			n.t.Errorf("%s: %d CHILD SAs in use, want %d: %v", x.name, len(x.d.use), wantChildren, x.d.use)
		}
		for id, spi := range x.d.use {
			out := x.d.out[spi]
			in, ok := x.o.in[spi]
			if !ok {
				n.t.Errorf("%s: CHILD SA %d sends with %08x, which the peer has not installed", x.name, id, spi)
				continue
			}
			if !bytes.Equal(in.AEAD.Key, out.AEAD.Key) || !bytes.Equal(in.Enc.Key, out.Enc.Key) || !bytes.Equal(in.Auth.Key, out.Auth.Key) ||
				in.ESN != out.ESN || in.Mode != out.Mode {
				n.t.Errorf("%s: SA %08x differs between the two sides", x.name, spi)
			}
		}
		if len(x.d.in) != len(x.s.Children()) || len(x.d.in) != wantChildren {
			n.t.Errorf("%s: %d inbound SAs installed, %d CHILD SAs, want %d", x.name, len(x.d.in), len(x.s.Children()), wantChildren)
		}
		for _, c := range x.s.Children() {
			if _, ok := x.d.in[c.In.SPI]; !ok {
				n.t.Errorf("%s: CHILD SA %08x not installed", x.name, c.In.SPI)
			}
		}
	}
	if !n.a.Closed() && !n.b.Closed() {
		sa, sb := n.a.SPIs(), n.b.SPIs()
		if len(sa) != 1 || len(sb) != 1 || sa[0] != sb[0] {
			n.t.Errorf("IKE SAs: A %x, B %x", sa, sb)
		}
	}
}

var (
	suiteCBC = suites[0]
	ecp256   = []uint16{message.KE_ECP256}
)

func pairConfigs() (Config, Config) { return configs(suiteCBC.ike, suiteCBC.esp) }

// sides runs f with A as the original initiator and, swapped, as the
// original responder: every exchange must work in both roles.
func sides(t *testing.T, oa, ob SAOptions, f func(t *testing.T, n *simnet, swapped bool)) {
	for _, swapped := range []bool{false, true} {
		name := "initiator starts"
		if swapped {
			name = "responder starts"
		}
		t.Run(name, func(t *testing.T) {
			ci, cr := pairConfigs()
			n := establish(t, ci, cr, oa, ob)
			if swapped {
				n.a, n.b, n.da, n.db = n.b, n.a, n.db, n.da
				n.da.who, n.db.who = "A", "B"
			}
			f(t, n, swapped)
		})
	}
}

func extraChild(mode xfrm.Mode, pfs []uint16, esn ESNMode) ChildConfig {
	return ChildConfig{ESP: ESPSuite{Encr: message.ENCR_AES_CBC, KeyBits: 256, Integ: message.AUTH_HMAC_SHA2_256_128}, PFS: pfs, ESN: esn, Mode: mode,
		LocalTS: []message.TrafficSelector{prefixTS("10.1.5.0/24")}, RemoteTS: []message.TrafficSelector{prefixTS("10.2.5.0/24")}}
}

func mirror(c ChildConfig) ChildConfig {
	c.LocalTS, c.RemoteTS = c.RemoteTS, c.LocalTS
	return c
}

// TestCreateChild: CREATE_CHILD_SA for an extra CHILD SA (RFC 7296
// §1.3.1), with and without PFS, in transport mode, with ESN, from either
// side.
func TestCreateChild(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  ChildConfig
	}{
		{"tunnel, no PFS", extraChild(xfrm.ModeTunnel, nil, ESNNo)},
		{"tunnel, PFS ECP-256", extraChild(xfrm.ModeTunnel, ecp256, ESNNo)},
		{"transport, PFS X25519, ESN", extraChild(xfrm.ModeTransport, []uint16{message.KE_CURVE25519}, ESNYes)},
		{"ESN either", extraChild(xfrm.ModeTunnel, nil, ESNEither)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca, _ := pairConfigs()
			_ = ca
			sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
				n.b.opts.Children = append(n.b.opts.Children, mirror(tt.cfg))
				if err := n.a.CreateChild(tt.cfg); err != nil {
					t.Fatal(err)
				}
				n.settle()
				n.check(2)
				var got ChildSA
				for _, c := range n.a.Children() {
					if c.ID != 1 {
						got = c
					}
				}
				if got.Out.Mode != tt.cfg.Mode || got.Out.ESN != (tt.cfg.ESN != ESNNo) || got.Out.Enc.Name != "cbc(aes)" {
					t.Errorf("new CHILD SA: mode %v ESN %v enc %q", got.Out.Mode, got.Out.ESN, got.Out.Enc.Name)
				}
				if n.da.count(func(e Event) bool { _, ok := e.(ChildAdded); return ok }) != 1 {
					t.Errorf("events %v", n.da.ev)
				}
			})
		})
	}
}

// TestCreateChildRefused: the responder's error notifications end the
// exchange with ChildFailed and leave the IKE SA up.
func TestCreateChildRefused(t *testing.T) {
	for _, tt := range []struct {
		name   string
		a, b   ChildConfig
		notify message.NotifyType
	}{
		{"no common proposal", extraChild(xfrm.ModeTunnel, nil, ESNNo), func() ChildConfig {
			c := mirror(extraChild(xfrm.ModeTunnel, nil, ESNNo))
			c.ESP.KeyBits = 128
			return c
		}(), message.NO_PROPOSAL_CHOSEN},
		{"PFS required, none offered", extraChild(xfrm.ModeTunnel, nil, ESNNo), mirror(extraChild(xfrm.ModeTunnel, ecp256, ESNNo)), message.NO_PROPOSAL_CHOSEN},
		{"ESN required, not offered", extraChild(xfrm.ModeTunnel, nil, ESNNo), mirror(extraChild(xfrm.ModeTunnel, nil, ESNYes)), message.NO_PROPOSAL_CHOSEN},
		{"other selectors", extraChild(xfrm.ModeTunnel, nil, ESNNo), func() ChildConfig {
			c := mirror(extraChild(xfrm.ModeTunnel, nil, ESNNo))
			c.LocalTS = []message.TrafficSelector{prefixTS("10.9.9.0/24")}
			return c
		}(), message.TS_UNACCEPTABLE},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sides(t, SAOptions{}, SAOptions{Children: []ChildConfig{tt.b}}, func(t *testing.T, n *simnet, swapped bool) {
				n.b.opts.Children = []ChildConfig{tt.b}
				n.a.CreateChild(tt.a)
				n.settle()
				n.check(1)
				var pe *PeerError
				failed := false
				for _, e := range n.da.ev {
					if f, ok := e.(ChildFailed); ok && errors.As(f.Err, &pe) && pe.Notify == tt.notify {
						failed = true
					}
				}
				if !failed {
					t.Errorf("events %v, want ChildFailed with %v", n.da.ev, tt.notify)
				}
				// The IKE SA still works.
				n.a.Liveness()
				n.settle()
				if n.a.Closed() || n.b.Closed() {
					t.Error("IKE SA closed")
				}
			})
		})
	}
}

// TestInvalidKERetry: the responder wants another PFS group; the
// initiator retries with it (§1.3) and the CHILD SA comes up.
func TestInvalidKERetry(t *testing.T) {
	sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
		a := extraChild(xfrm.ModeTunnel, []uint16{message.KE_ECP256, message.KE_CURVE25519}, ESNNo)
		b := mirror(extraChild(xfrm.ModeTunnel, []uint16{message.KE_CURVE25519}, ESNNo))
		n.b.opts.Children = []ChildConfig{b}
		n.a.CreateChild(a)
		n.settle()
		n.check(2)
		if n.a.Counters.CreateChildOutReq != 2 {
			t.Errorf("%d CREATE_CHILD_SA requests, want 2 (one retry)", n.a.Counters.CreateChildOutReq)
		}
	})
}

// TestRekeyChild: a CHILD SA rekey (§1.3.3) replaces the SA on both
// sides, make-before-break: the new inbound SA is installed before the
// old one goes, and the responder moves outbound only when the old SA is
// deleted.
func TestRekeyChild(t *testing.T) {
	for _, pfs := range [][]uint16{nil, ecp256} {
		t.Run(fmt.Sprintf("PFS %v", pfs), func(t *testing.T) {
			sides(t, SAOptions{PFS: pfs}, SAOptions{PFS: pfs}, func(t *testing.T, n *simnet, _ bool) {
				old := n.a.Children()[0]
				n.a.RekeyChild(1)
				n.tick()
				n.toB() // B answers: new inbound installed, still sends on the old SA
				if n.db.use[1] != old.In.SPI {
					t.Errorf("B moved outbound before the old SA was deleted")
				}
				if len(n.db.in) != 2 {
					t.Errorf("B has %d inbound SAs during the rekey, want 2", len(n.db.in))
				}
				n.toA() // A installs the new pair and sends with it
				if n.da.use[1] == old.Out.SPI || len(n.da.in) != 2 {
					t.Errorf("A: outbound %08x, %d inbound", n.da.use[1], len(n.da.in))
				}
				n.settle()
				n.check(1)
				c := n.a.Children()[0]
				if c.ID != 1 || c.In.SPI == old.In.SPI {
					t.Errorf("after rekey %+v", c)
				}
				if n.a.Counters.ChildRekey != 1 || n.b.Counters.ChildRekey != 1 {
					t.Errorf("child-rekey %d/%d", n.a.Counters.ChildRekey, n.b.Counters.ChildRekey)
				}
			})
		})
	}
}

// TestRekeyIKE: an IKE SA rekey (§1.3.2, §2.18) gives new SPIs and keys
// on both sides, the CHILD SAs move over, the old IKE SA is deleted, and
// the new one carries the next exchanges (here a CHILD rekey whose keys
// come from the new SK_d).
func TestRekeyIKE(t *testing.T) {
	sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
		before := n.a.SPIs()[0]
		n.a.RekeyIKE()
		n.settle()
		n.check(1)
		after := n.a.SPIs()[0]
		if after == before {
			t.Fatal("SPIs unchanged")
		}
		if !bytes.Equal(n.a.cur.keys.D, n.b.cur.keys.D) {
			t.Error("new SK_d differs")
		}
		if n.da.count(func(e Event) bool { _, ok := e.(IKERekeyed); return ok }) != 1 ||
			n.db.count(func(e Event) bool { _, ok := e.(IKERekeyed); return ok }) != 1 {
			t.Errorf("IKERekeyed events: %v / %v", n.da.ev, n.db.ev)
		}
		n.b.RekeyChild(1)
		n.settle()
		n.check(1)
		n.a.RekeyIKE()
		n.settle()
		n.check(1)
		if n.a.Counters.IKERekeyInit != 2 || n.b.Counters.IKERekeyResp != 2 {
			t.Errorf("counters %+v %+v", n.a.Counters, n.b.Counters)
		}
	})
}

// nonceRand makes the nonces (32-byte reads) of one side start with the
// given octets in turn, so a test decides whose exchange has the lowest
// nonce.
type nonceRand struct{ first []byte }

func (r *nonceRand) Read(b []byte) (int, error) {
	n, err := rand.Read(b)
	if len(b) == nonceLen && len(r.first) > 0 {
		b[0], r.first = r.first[0], r.first[1:]
	}
	return n, err
}

// lowNonces gives A's exchange the lowest nonce if lowA, else B's: each
// side's first nonce is its request's, the second its response's.
func lowNonces(n *simnet, lowA bool) {
	lo, hi := []byte{0x10, 0x90}, []byte{0x50, 0x60}
	if !lowA {
		lo, hi = hi, lo
	}
	n.a.rand, n.b.rand = &nonceRand{lo}, &nonceRand{hi}
}

// TestRekeyChildCollision: both sides rekey the same CHILD SA at once
// (§2.8.1). The SA made with the lowest nonce is deleted by the side that
// made it, the survivor's initiator deletes the old one; whichever side
// holds the lowest nonce, one CHILD SA is left and both agree.
func TestRekeyChildCollision(t *testing.T) {
	for _, lowA := range []bool{true, false} {
		t.Run(fmt.Sprintf("A has the lowest nonce: %v", lowA), func(t *testing.T) {
			sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
				lowNonces(n, lowA)
				n.a.RekeyChild(1)
				n.b.RekeyChild(1)
				n.tick() // both requests in flight
				n.toB()  // B answers A's rekey
				n.toA()  // ... and A answers B's: a collision on both sides
				n.settle()
				n.check(1)
				// The survivor was made by the side whose nonces are higher.
				won := func(d *sad) int {
					return d.count(func(e Event) bool { r, ok := e.(ChildRekeyed); return ok && r.Outbound })
				}
				if won(n.da)+won(n.db) != 1 || (won(n.da) == 1) == lowA {
					t.Errorf("the SA of the exchange with the lowest nonce survived: A %v B %v", n.da.ev, n.db.ev)
				}
				if len(n.a.Children()) != 1 || len(n.b.Children()) != 1 {
					t.Errorf("children %d/%d", len(n.a.Children()), len(n.b.Children()))
				}
			})
		})
	}
}

// TestRekeyIKECollision: both sides rekey the IKE SA at once (§2.8.2);
// one new IKE SA survives on both sides, the other two are deleted.
func TestRekeyIKECollision(t *testing.T) {
	for _, lowA := range []bool{true, false} {
		t.Run(fmt.Sprintf("A has the lowest nonce: %v", lowA), func(t *testing.T) {
			sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
				lowNonces(n, lowA)
				n.a.RekeyIKE()
				n.b.RekeyIKE()
				n.tick()
				n.toB()
				n.toA()
				n.settle()
				n.check(1)
				if n.a.Closed() || n.b.Closed() {
					t.Fatal("closed")
				}
				if !bytes.Equal(n.a.cur.keys.D, n.b.cur.keys.D) {
					t.Error("the surviving IKE SAs differ")
				}
				if n.a.cur.ni[0] == 0x10 || n.a.cur.nr[0] == 0x10 {
					t.Error("the IKE SA of the exchange with the lowest nonce survived")
				}
				// And the survivor works.
				n.b.RekeyChild(1)
				n.settle()
				n.check(1)
			})
		})
	}
}

// TestRekeyDeleteCollision: one side rekeys a CHILD SA while the other
// deletes it (§2.25.1); in either delivery order the CHILD SA is gone on
// both sides and nothing is left installed.
func TestRekeyDeleteCollision(t *testing.T) {
	for _, order := range []string{"delete first", "rekey first"} {
		t.Run(order, func(t *testing.T) {
			sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
				n.a.RekeyChild(1)
				n.b.DeleteChild(1)
				n.tick()
				if order == "delete first" {
					n.toA()
					n.toB()
				} else {
					n.toB()
					n.toA()
				}
				n.settle()
				n.check(0)
			})
		})
	}
}

// TestTemporaryFailure: a CHILD SA request crossing an IKE SA rekey is
// refused with TEMPORARY_FAILURE, and so is the IKE SA rekey (§2.25.2);
// both are retried after random delays and succeed (two requests each).
func TestTemporaryFailure(t *testing.T) {
	sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
		n.b.opts.Children = append(n.b.opts.Children, mirror(extraChild(xfrm.ModeTunnel, nil, ESNNo)))
		n.a.opts.Children = append(n.a.opts.Children, extraChild(xfrm.ModeTunnel, nil, ESNNo))
		n.a.RekeyIKE()
		n.b.CreateChild(mirror(extraChild(xfrm.ModeTunnel, nil, ESNNo)))
		n.tick()
		start := n.now
		n.toB()
		n.toA()
		n.settle()
		n.check(2)
		if n.b.Counters.CreateChildOutReq+n.a.Counters.CreateChildOutReq != 4 || !n.now.After(start) {
			t.Errorf("CREATE_CHILD_SA sent %d+%d times, clock moved %v", n.a.Counters.CreateChildOutReq, n.b.Counters.CreateChildOutReq, n.now.Sub(start))
		}
	})
}

// TestDeleteChild: Delete of a CHILD SA from either side, and both at
// once (crossing Deletes are not answered with Deletes, §1.4.1).
func TestDeleteChild(t *testing.T) {
	sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
		n.a.DeleteChild(1)
		n.settle()
		n.check(0)
	})
	sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
		n.a.DeleteChild(1)
		n.b.DeleteChild(1)
		n.tick()
		n.toB()
		n.toA()
		n.settle()
		n.check(0)
	})
}

// TestDeleteIKE: Delete of the IKE SA from either side ends it on both,
// each CHILD SA deleted first.
func TestDeleteIKE(t *testing.T) {
	sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
		n.a.Delete()
		n.settle()
		n.check(0)
		if !n.a.Closed() || !n.b.Closed() {
			t.Fatal("not closed")
		}
		last := func(d *sad) Event { return d.ev[len(d.ev)-1] }
		if e, ok := last(n.da).(IKEDeleted); !ok || e.ByPeer {
			t.Errorf("A: %v", last(n.da))
		}
		if e, ok := last(n.db).(IKEDeleted); !ok || !e.ByPeer {
			t.Errorf("B: %v", last(n.db))
		}
	})
}

// TestLiveness: an empty INFORMATIONAL is answered (§1.4); a peer that
// stops answering is Dead after strongSwan's schedule: sent at 0, 4,
// 11.2, 24.16, 47.49, 89.48 s, given up at 165.06 s.
func TestLiveness(t *testing.T) {
	sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
		n.a.Liveness()
		n.settle()
		if n.b.Counters.InfoInReq != 1 || n.a.Counters.InfoInResp != 1 {
			t.Errorf("counters %+v / %+v", n.a.Counters, n.b.Counters)
		}
		n.a.Liveness()
		start := n.now
		var sent []time.Duration
		for k := 0; k < 20 && !n.a.Closed(); k++ {
			out, ev := n.a.Tick(n.now)
			if len(out) > 0 {
				sent = append(sent, n.now.Sub(start))
			}
			n.da.apply(ev)
			if !n.a.Closed() {
				n.now = n.a.NextTimeout()
			}
		}
		want := []time.Duration{0, 4 * time.Second, 11200 * time.Millisecond, 24160 * time.Millisecond, 47488 * time.Millisecond, 89478400 * time.Microsecond}
		if fmt.Sprint(sent) != fmt.Sprint(want) {
			t.Errorf("sent at %v, want %v", sent, want)
		}
		d, ok := n.da.ev[len(n.da.ev)-1].(Dead)
		if !ok || !errors.Is(d.Err, ErrTimeout) {
			t.Fatalf("last event %v", n.da.ev[len(n.da.ev)-1])
		}
		if got := n.da.ev[len(n.da.ev)-1]; n.now.Sub(start) < 165*time.Second || n.now.Sub(start) > 166*time.Second {
			t.Errorf("dead after %v (%v)", n.now.Sub(start), got)
		}
		if len(n.da.in) != 0 || len(n.da.use) != 0 {
			t.Errorf("SAs left after Dead: %v %v", n.da.in, n.da.use)
		}
	})
}

// TestWindow: a repeated request gets the cached response (§2.1), a
// request outside the window and a forged one are dropped and counted,
// as are messages for other SPIs and garbage.
func TestWindow(t *testing.T) {
	ci, cr := pairConfigs()
	n := establish(t, ci, cr, SAOptions{}, SAOptions{})
	n.a.Liveness()
	n.tick()
	req := n.ab[0]
	n.toB()
	resp := n.ba[0]
	out, _ := n.b.Handle(req, n.now)
	if len(out) != 1 || !bytes.Equal(out[0], resp) || n.b.Counters.ResponsesResent != 1 {
		t.Fatalf("repeated request: %d messages, counters %+v", len(out), n.b.Counters)
	}
	forged := append([]byte(nil), req...)
	forged[len(forged)-1] ^= 1
	if out, _ := n.b.Handle(forged, n.now); len(out) != 0 {
		t.Error("forged repeat answered")
	}
	m, _ := message.Decode(req)
	future := append([]byte(nil), req...)
	future[23]++ // message ID + 1 is still in the window; + 2 is not
	future[23]++
	if out, _ := n.b.Handle(future, n.now); len(out) != 0 || n.b.Counters.InvalidMessageID != 2 {
		t.Errorf("out-of-window request: %d answers, counters %+v", len(out), n.b.Counters)
	}
	_ = m
	other := append([]byte(nil), req...)
	other[0] ^= 0xff
	n.b.Handle(other, n.now)
	n.b.Handle([]byte("garbage"), n.now)
	if n.b.Counters.InvalidSPI != 1 || n.b.Counters.Invalid != 1 {
		t.Errorf("counters %+v", n.b.Counters)
	}
	// A request with the next message ID but a bad ICV: dropped unanswered.
	next := append([]byte(nil), req...)
	next[23]++
	if out, _ := n.b.Handle(next, n.now); len(out) != 0 || n.b.Counters.IntegrityFailed != 1 {
		t.Errorf("tampered request: %d answers, counters %+v", len(out), n.b.Counters)
	}
	// A response to nothing.
	n.toA()
	n.a.Handle(resp, n.now)
	if n.a.Counters.InvalidMessageID != 1 {
		t.Errorf("stale response: counters %+v", n.a.Counters)
	}
}

// TestIKEAuthRetransmit: the responder's IKESA still answers a repeated
// IKE_AUTH request (its response was lost) with the cached response.
func TestIKEAuthRetransmit(t *testing.T) {
	ci, cr := pairConfigs()
	i, _ := NewInitiator(ci)
	r, _ := NewResponder(cr)
	req, _ := i.Start()
	resp, _, _ := r.Handle(req)
	auth, _, _ := i.Handle(resp[0])
	authResp, done, err := r.Handle(auth[0])
	if err != nil || !done {
		t.Fatal(err)
	}
	s, err := NewIKESA(r.Result(), SAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := s.Handle(auth[0], time.Now())
	if len(out) != 1 || !bytes.Equal(out[0], authResp[0]) {
		t.Errorf("repeated IKE_AUTH: %d answers", len(out))
	}
}

var _ io.Reader = &nonceRand{}

// TestDeleteAfterAnsweredRekey: a Delete queued while the peer's rekey
// of the same CHILD SA is answered deletes the new SA too: DeleteChild
// names the CHILD SA, not the SA it had when called.
func TestDeleteAfterAnsweredRekey(t *testing.T) {
	sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
		n.a.Liveness()
		n.tick() // A's liveness check is outstanding: its Delete must wait
		n.b.RekeyChild(1)
		n.tick()
		n.a.DeleteChild(1)
		n.toA() // A answers B's rekey before its Delete goes out
		n.settle()
		n.check(0)
	})
}

// TestLostResponse: a lost CREATE_CHILD_SA response is recovered by the
// initiator's retransmission, answered from the cache (§2.1) without a
// second CHILD SA.
func TestLostResponse(t *testing.T) {
	sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
		n.a.RekeyChild(1)
		n.tick()
		n.toB()
		n.ba = nil // the response is lost
		n.now = n.now.Add(4 * time.Second)
		n.tick()
		if len(n.ab) != 1 || n.a.Counters.Retransmits != 1 {
			t.Fatalf("no retransmission at 4 s: %d in flight, %+v", len(n.ab), n.a.Counters)
		}
		n.settle()
		n.check(1)
		if n.b.Counters.ResponsesResent != 1 || n.b.Counters.ChildRekey != 1 {
			t.Errorf("B: %+v", n.b.Counters)
		}
	})
}

// TestRekeyIKEInvalidKE: the IKE SA rekey offers ECP-256 first, the
// responder takes only X25519 and says so (INVALID_KE_PAYLOAD); the
// retry with X25519 rekeys the IKE SA.
func TestRekeyIKEInvalidKE(t *testing.T) {
	sides(t, SAOptions{RekeyKE: []uint16{message.KE_ECP256, message.KE_CURVE25519}}, SAOptions{RekeyKE: []uint16{message.KE_CURVE25519}},
		func(t *testing.T, n *simnet, swapped bool) {
			if swapped {
				n.a.opts.RekeyKE, n.b.opts.RekeyKE = n.b.opts.RekeyKE, n.a.opts.RekeyKE
			}
			n.a.RekeyIKE()
			n.settle()
			n.check(1)
			if n.a.Counters.CreateChildOutReq != 2 || n.a.cur.suite.KE != message.KE_CURVE25519 || n.a.Counters.IKERekeyInit != 1 {
				t.Errorf("requests %d, KE %d, %+v", n.a.Counters.CreateChildOutReq, n.a.cur.suite.KE, n.a.Counters)
			}
		})
}

// TestRedundantSAExpires: after a simultaneous rekey that this side won,
// the peer is to delete the redundant SA it made. charon does not when
// it saw our Delete of the old IKE SA before our response to its rekey
// (it aborts its rekey: "peer did not notice IKE_SA rekey collision").
// Such a redundant IKE SA is forgotten, and such a CHILD SA deleted by
// us, once the peer's Delete would have run out of retransmissions.
func TestRedundantSAExpires(t *testing.T) {
	for _, what := range []string{"IKE", "CHILD"} {
		t.Run(what, func(t *testing.T) {
			ci, cr := pairConfigs()
			n := establish(t, ci, cr, SAOptions{}, SAOptions{})
			lowNonces(n, false) // B's exchange has the lowest nonce: A wins
			if what == "IKE" {
				n.a.RekeyIKE()
				n.b.RekeyIKE()
			} else {
				n.a.RekeyChild(1)
				n.b.RekeyChild(1)
			}
			n.tick()
			n.toB()
			n.toA()
			n.toB() // A's response: B settles; B lost and deletes its SA
			if len(n.ba) != 2 {
				t.Fatalf("%d messages from B, want its response and its Delete", len(n.ba))
			}
			// B forgets its redundant SA without the Delete, as charon
			// does when it aborts its rekey.
			n.ba = n.ba[:1]
			for _, sa := range append([]*ikeSA(nil), n.b.sas...) {
				if sa.pending != nil {
					sa.pending = nil
					if sa != n.b.cur {
						n.b.dropSA(sa)
					}
				}
			}
			n.toA() // B's response: A settles, won, deletes the old SA
			start := n.now
			n.settle()
			if n.now.Sub(start) < 165*time.Second {
				t.Errorf("gave up on the peer's Delete after %v", n.now.Sub(start))
			}
			n.check(1)
			if len(n.a.SPIs()) != 1 {
				t.Errorf("A accepts %d IKE SAs", len(n.a.SPIs()))
			}
			if len(n.a.Children()) != 1 || len(n.da.in) != 1 {
				t.Errorf("A has %d CHILD SAs, %d installed", len(n.a.Children()), len(n.da.in))
			}
		})
	}
}

// TestCollisionPeerDeletesOld: a simultaneous rekey that only this side
// sees as one: the peer never got our request (charon drops it when it
// arrives while it processes our response with the same message ID,
// "ignoring request with ID 2, already processing"), so its rekey
// completes and it deletes the old SA. The peer's new SA must take over
// here too ("peer did not notice IKE_SA rekey collision" in charon's
// words), not the IKE SA end nor the CHILD SA's outbound SA stay
// uninstalled.
func TestCollisionPeerDeletesOld(t *testing.T) {
	for _, what := range []string{"IKE", "CHILD"} {
		t.Run(what, func(t *testing.T) {
			sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
				if what == "IKE" {
					n.a.RekeyIKE()
					n.b.RekeyIKE()
				} else {
					n.a.RekeyChild(1)
					n.b.RekeyChild(1)
				}
				n.tick()
				n.ab = nil // A's request is lost
				n.toA()    // A answers B's request: a collision, for A only
				n.toB()    // B's rekey is done; it deletes the old SA
				n.settle()
				if n.a.Closed() || n.b.Closed() {
					t.Fatal("IKE SA closed")
				}
				n.check(1)
			})
		})
	}
}

// TestOldIKESAExpires: the peer rekeyed the IKE SA but its Delete of the
// old one never comes (lost after all retransmissions, or a peer that
// forgets): the old IKE SA is dropped once that Delete would have run
// out of retransmissions, not kept for ever.
func TestOldIKESAExpires(t *testing.T) {
	sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
		n.b.RekeyIKE()
		n.tick()
		n.toA()
		n.toB() // B's rekey is done; its Delete of the old IKE SA is lost
		n.ab = nil
		n.ba = nil
		n.b.sas[0].pending, n.b.sas[0].wantDelete = nil, false
		n.b.dropSA(n.b.sas[0])
		n.settle()
		n.check(1)
	})
}

// TestOldIKESAOutlivesShortSchedule: with a short local retransmission
// schedule, the old IKE SA of a rekey the peer started still answers
// the peer's retransmitted request on strongSwan's default schedule
// (the response was lost), instead of being forgotten after our own
// schedule ran out.
func TestOldIKESAOutlivesShortSchedule(t *testing.T) {
	short := SAOptions{Retransmit: Retransmit{Timeout: 100 * time.Millisecond, Tries: 1}}
	ci, cr := pairConfigs()
	n := establish(t, ci, cr, short, SAOptions{})
	n.b.RekeyIKE()
	n.tick()
	n.toA()    // A answers and moves to the new IKE SA
	n.ba = nil // the answer is lost
	n.now = n.now.Add(4 * time.Second)
	n.tick() // B retransmits; A's short schedule is long over
	n.toA()
	if n.a.Counters.ResponsesResent != 1 {
		t.Fatalf("A did not answer the retransmission: %+v", n.a.Counters)
	}
	n.settle()
	n.check(1)
}

// TestLastReceived: before any message, LastReceived is the first Tick's
// time (IKE_AUTH just completed), so a DPD timer does not fire at once;
// then it follows authenticated messages only.
func TestLastReceived(t *testing.T) {
	ci, cr := pairConfigs()
	n := establish(t, ci, cr, SAOptions{}, SAOptions{})
	n.tick()
	if !n.a.LastReceived().Equal(n.now) {
		t.Fatalf("LastReceived %v, want %v", n.a.LastReceived(), n.now)
	}
	n.now = n.now.Add(time.Minute)
	n.a.Handle([]byte("garbage"), n.now)
	if n.a.LastReceived().Equal(n.now) {
		t.Error("garbage moved LastReceived")
	}
	n.b.Liveness()
	n.settle()
	if !n.a.LastReceived().Equal(n.now) {
		t.Error("a liveness check did not move LastReceived")
	}
}

// TestAuthFailedNotify: an INFORMATIONAL with AUTHENTICATION_FAILED after
// IKE_AUTH (§2.21.2: the initiator refused the responder's AUTH) ends
// the IKE SA as Dead with ErrAuthFailed, after an empty answer.
func TestAuthFailedNotify(t *testing.T) {
	sides(t, SAOptions{}, SAOptions{}, func(t *testing.T, n *simnet, _ bool) {
		sa, psa := n.a.cur, n.b.cur
		h := message.Header{SPIi: sa.spii, SPIr: sa.spir, Exchange: message.INFORMATIONAL, MessageID: sa.peerNext}
		if psa.initiator {
			h.Flags |= message.FlagInitiator
		}
		pt, _ := message.AppendPayloads(nil, []message.Payload{&message.Notify{NotifyType: message.AUTHENTICATION_FAILED}})
		out, ev := n.a.Handle(sealRaw(psa, h, message.PayloadNotify, pt), n.now)
		n.da.apply(ev)
		if len(out) != 1 || !n.a.Closed() {
			t.Fatalf("%d answers, closed %v", len(out), n.a.Closed())
		}
		if d, ok := ev[len(ev)-1].(Dead); !ok || !errors.Is(d.Err, ErrAuthFailed) {
			t.Errorf("last event %#v", ev[len(ev)-1])
		}
		if len(n.da.in) != 0 {
			t.Error("CHILD SAs left installed")
		}
	})
}
