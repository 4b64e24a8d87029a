package setkey

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/pfkey"
)

// Apply applies statements to engine all-or-nothing: every SA is built
// (keys validated) before anything changes, then the statements run in
// order; if one fails, the ones already applied are undone in reverse and
// the SAD and SPD are left as they were (an SA that was deleted and put
// back keeps its configuration and outbound sequence number, not its
// counters or replay window). Output of get, dump and spddump is
// discarded; use ApplyTo to see it.
func Apply(engine *xfrm.Engine, stmts []Statement) error {
	return ApplyTo(engine, stmts, io.Discard, "")
}

type undo func()

// ApplyTo is Apply writing get/dump/spddump output to out; file names the
// input in errors.
func ApplyTo(engine *xfrm.Engine, stmts []Statement, out io.Writer, file string) error {
	sas := make([]*xfrm.SA, len(stmts))
	fail := func(st *Statement, err error) error {
		for _, sa := range sas {
			if sa != nil {
				xfrm.DiscardSA(sa)
			}
		}
		return &Error{file, st.Pos, err.Error()}
	}
	for i := range stmts {
		if stmts[i].Cmd == "add" {
			sa, err := xfrm.NewSA(stmts[i].SA)
			if err != nil {
				return fail(&stmts[i], err)
			}
			sas[i] = sa
		}
	}
	var undos []undo
	for i := range stmts {
		st := &stmts[i]
		u, err := applyOne(engine, st, sas[i], out)
		if err != nil {
			for j := len(undos) - 1; j >= 0; j-- {
				undos[j]()
			}
			sas[i] = nil // consumed or to discard below
			return fail(st, err)
		}
		sas[i] = nil
		if u != nil {
			undos = append(undos, u)
		}
	}
	return nil
}

// snapshot copies an SA's configuration with its keys and sequence
// number, so it can be rebuilt after a delete.
func snapshot(sa *xfrm.SA) xfrm.SAConfig {
	c := sa.Config
	c.AEAD.Key = slices.Clone(c.AEAD.Key)
	c.Enc.Key = slices.Clone(c.Enc.Key)
	c.Auth.Key = slices.Clone(c.Auth.Key)
	c.Seq = sa.LastSeq()
	return c
}

func restoreSAs(e *xfrm.Engine, cfgs []xfrm.SAConfig) undo {
	return func() {
		for _, c := range cfgs {
			if sa, err := xfrm.NewSA(c); err == nil {
				if e.SAD.Add(sa) != nil {
					xfrm.DiscardSA(sa)
				}
			}
		}
	}
}

func restorePolicies(e *xfrm.Engine, ps []*xfrm.Policy) undo {
	return func() {
		for _, p := range ps {
			e.SPD.Add(p)
		}
	}
}

func applyOne(e *xfrm.Engine, st *Statement, sa *xfrm.SA, out io.Writer) (undo, error) {
	switch st.Cmd {
	case "add":
		if err := e.SAD.Add(sa); err != nil {
			xfrm.DiscardSA(sa)
			return nil, err
		}
		c := sa.Config
		return func() { e.SAD.Delete(c.Dst, c.Proto, c.SPI) }, nil
	case "get":
		sa := e.SAD.Lookup(st.Dst, st.Proto, st.SPI)
		if sa == nil || sa.Config.Src != st.Src {
			return nil, fmt.Errorf("no SA %s spi %#x %v->%v", st.Proto, st.SPI, st.Src, st.Dst)
		}
		PrintSA(out, pfkey.StateMsg(sa, true))
		return nil, nil
	case "delete":
		sa := e.SAD.Lookup(st.Dst, st.Proto, st.SPI)
		if sa == nil || sa.Config.Src != st.Src {
			return nil, fmt.Errorf("no SA %s spi %#x %v->%v", st.Proto, st.SPI, st.Src, st.Dst)
		}
		cfg := snapshot(sa)
		if _, err := e.SAD.Delete(st.Dst, st.Proto, st.SPI); err != nil {
			return nil, err
		}
		return restoreSAs(e, []xfrm.SAConfig{cfg}), nil
	case "deleteall", "flush":
		var victims []*xfrm.SA
		e.SAD.Walk(func(sa *xfrm.SA) bool {
			c := &sa.Config
			if st.Cmd == "flush" {
				if st.Proto == 0 || c.Proto == st.Proto {
					victims = append(victims, sa)
				}
			} else if c.Proto == st.Proto && c.Src == st.Src && c.Dst == st.Dst {
				victims = append(victims, sa)
			}
			return true
		})
		var cfgs []xfrm.SAConfig
		for _, sa := range victims {
			if sa.State() == xfrm.StateLarval {
				continue
			}
			cfgs = append(cfgs, snapshot(sa))
		}
		for _, sa := range victims {
			e.SAD.Delete(sa.Config.Dst, sa.Config.Proto, sa.Config.SPI)
		}
		return restoreSAs(e, cfgs), nil
	case "dump":
		DumpSAD(out, e, st.Proto)
		return nil, nil
	case "spdadd":
		p := st.Policy
		id, err := e.SPD.Add(&p)
		if err != nil {
			return nil, err
		}
		return func() { e.SPD.DeleteByID(id) }, nil
	case "spdupdate":
		var old *xfrm.Policy
		probe := st.Policy
		e.SPD.Walk(func(q *xfrm.Policy) bool {
			if q.Dir == probe.Dir && q.Sel.Equal(probe.Sel) {
				old = q
				return false
			}
			return true
		})
		p := st.Policy
		id, err := e.SPD.Update(&p)
		if err != nil {
			return nil, err
		}
		if old != nil {
			o := *old
			return func() { e.SPD.Update(&o) }, nil
		}
		return func() { e.SPD.DeleteByID(id) }, nil
	case "spddelete":
		p, err := e.SPD.Delete(st.Policy.Dir, st.Policy.Sel)
		if err != nil {
			return nil, err
		}
		return restorePolicies(e, []*xfrm.Policy{p}), nil
	case "spdflush":
		var ps []*xfrm.Policy
		e.SPD.Walk(func(p *xfrm.Policy) bool {
			ps = append(ps, p)
			return true
		})
		e.SPD.Flush()
		return restorePolicies(e, ps), nil
	case "spddump":
		DumpSPD(out, e)
		return nil, nil
	}
	return nil, errors.New("unknown command " + st.Cmd)
}

// DumpSAD prints the SAs of proto (0 = all) as `setkey -D` does.
func DumpSAD(w io.Writer, e *xfrm.Engine, proto xfrm.Proto) {
	ms := pfkey.StateMsgs(e.SAD, proto)
	if len(ms) == 0 {
		fmt.Fprintln(w, "No SAD entries.")
		return
	}
	for _, m := range ms {
		PrintSA(w, m)
	}
}

// DumpSPD prints the policies as `setkey -DP` does.
func DumpSPD(w io.Writer, e *xfrm.Engine) {
	n := 0
	e.SPD.Walk(func(p *xfrm.Policy) bool {
		PrintPolicy(w, p)
		n++
		return true
	})
	if n == 0 {
		fmt.Fprintln(w, "No SPD entries.")
	}
}
