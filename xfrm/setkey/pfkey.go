package setkey

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"syscall"

	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/pfkey"
)

// Conn is a PF_KEY connection: control.Client satisfies it.
type Conn interface {
	Send(msg []byte) error
	Recv() ([]byte, error)
}

// Messages turns one statement into the PF_KEY request that carries it
// (the first one, for statements that take several), checking that PF_KEY
// can express it: a port range, an ICMP type 0 ("icmp 0", the echo
// reply: PF_KEY's port 0 means any, and sending it would widen the
// selector to all of ICMP) or an algorithm without a PF_KEY number cannot
// be sent. Such files apply with `run --setkey`, which needs no PF_KEY.
// An ICMP code 0 ("icmp6 135,0") is sent as PF_KEY's 0, any code of the
// type, as KAME and Linux's af_key have always read it; `run --setkey`
// keeps it exact.
func Messages(st *Statement) (*pfkey.Msg, error) {
	switch st.Cmd {
	case "add":
		m, err := pfkey.SAMsg(&st.SA, true)
		if err != nil {
			return nil, err
		}
		m.Type = pfkey.MsgAdd
		return m, nil
	case "get", "delete":
		t := uint8(pfkey.MsgGet)
		if st.Cmd == "delete" {
			t = pfkey.MsgDelete
		}
		return saRefMsg(t, st.Proto, st.Src, st.Dst, st.SPI), nil
	case "deleteall", "dump":
		return &pfkey.Msg{Type: pfkey.MsgDump, SAType: pfkey.SATypeOf(st.Proto)}, nil
	case "flush":
		return &pfkey.Msg{Type: pfkey.MsgFlush, SAType: pfkey.SATypeOf(st.Proto)}, nil
	case "spdadd", "spdupdate", "spddelete":
		p := st.Policy
		if st.Cmd == "spddelete" {
			p.Action, p.Templates = xfrm.ActionBypass, nil
		}
		m, err := pfkey.PolicyMsg(&p)
		if err != nil {
			return nil, err
		}
		switch st.Cmd {
		case "spdadd":
			m.Type = pfkey.MsgXSPDAdd
		case "spdupdate":
			m.Type = pfkey.MsgXSPDUpdate
		default:
			m.Type = pfkey.MsgXSPDDelete
			m.Policy.Type = pfkey.PolicyIPsec
		}
		return m, nil
	case "spdflush":
		return &pfkey.Msg{Type: pfkey.MsgXSPDFlush}, nil
	case "spddump":
		return &pfkey.Msg{Type: pfkey.MsgXSPDDump}, nil
	}
	return nil, fmt.Errorf("unknown command %s", st.Cmd)
}

func saRefMsg(t uint8, proto xfrm.Proto, src, dst netip.Addr, spi uint32) *pfkey.Msg {
	return &pfkey.Msg{Type: t, SAType: pfkey.SATypeOf(proto), SA: &pfkey.SA{SPI: spi},
		Src: &pfkey.Address{PrefixLen: uint8(src.BitLen()), Sockaddr: pfkey.Sockaddr{Addr: src}},
		Dst: &pfkey.Address{PrefixLen: uint8(dst.BitLen()), Sockaddr: pfkey.Sockaddr{Addr: dst}}}
}

type client struct {
	c   Conn
	pid uint32
	seq uint32
}

// ErrnoError is a PF_KEY request the server refused.
type ErrnoError struct {
	Type  uint8
	Errno syscall.Errno
}

// Error implements error.
func (e *ErrnoError) Error() string {
	return fmt.Sprintf("%s: %s", pfkey.MsgName(e.Type), e.Errno.Error())
}

// Unwrap returns the underlying error, for errors.Is and errors.As.
func (e *ErrnoError) Unwrap() error { return e.Errno }

// call sends m and returns the replies addressed to it: one, or for DUMP
// and SPDDUMP every message up to the one with sequence 0.
func (k *client) call(m *pfkey.Msg) ([]*pfkey.Msg, error) {
	k.seq++
	m.Seq, m.PID, m.Errno = k.seq, k.pid, 0
	b, err := m.Encode()
	if err != nil {
		return nil, err
	}
	if err := k.c.Send(b); err != nil {
		return nil, err
	}
	dump := m.Type == pfkey.MsgDump || m.Type == pfkey.MsgXSPDDump
	var out []*pfkey.Msg
	for {
		rb, err := k.c.Recv()
		if err != nil {
			return nil, err
		}
		if len(rb) == 0 || rb[0] != pfkey.Version {
			continue
		}
		r, err := pfkey.Decode(rb)
		if err != nil {
			if len(rb) >= 16 && rb[1] == m.Type && binary.NativeEndian.Uint32(rb[12:]) == k.pid && rb[2] != 0 {
				return nil, &ErrnoError{m.Type, syscall.Errno(rb[2])}
			}
			continue
		}
		if r.Type != m.Type || r.PID != k.pid {
			continue
		}
		if r.Errno != 0 {
			if r.Seq != m.Seq {
				continue
			}
			return nil, &ErrnoError{m.Type, syscall.Errno(r.Errno)}
		}
		if !dump {
			if r.Seq != m.Seq {
				continue
			}
			return []*pfkey.Msg{r}, nil
		}
		out = append(out, r)
		if r.Seq == 0 {
			return out, nil
		}
	}
}

// dump returns a DUMP's or SPDDUMP's entries; an empty database is no error.
func (k *client) dump(m *pfkey.Msg) ([]*pfkey.Msg, error) {
	rs, err := k.call(m)
	var ee *ErrnoError
	if errors.As(err, &ee) && ee.Errno == syscall.ENOENT {
		return nil, nil
	}
	return rs, err
}

// asAdd turns a GET or DUMP reply back into the ADD that recreates it.
func asAdd(r *pfkey.Msg) *pfkey.Msg {
	a := *r
	a.Type = pfkey.MsgAdd
	a.LifetimeCurrent = nil
	a.Order = nil
	sa := *r.SA
	sa.State = pfkey.SAStateMature
	a.SA = &sa
	return &a
}

func asPolicy(r *pfkey.Msg, t uint8) *pfkey.Msg {
	a := *r
	a.Type = t
	a.Order = nil
	a.LifetimeCurrent = nil
	return &a
}

// Execute sends statements over a PF_KEY connection as one transaction,
// as `ipsecstack setkey -f` does. The file is checked locally first (it
// has been parsed, with every SA built once to validate its keys, and here
// every statement is converted to PF_KEY), so nothing is sent for a file
// that cannot apply. Then each request waits for its reply; before a
// destructive request the client reads what it removes (GET, DUMP,
// SPDDUMP) and records the inverse request. If a request fails, the
// inverses are sent in reverse order: SAs and policies that were added are
// deleted, removed ones re-added with the same keys, policy index and
// templates (counters, sequence numbers and replay windows are not
// restored). Output of get, dump and spddump goes to out.
func Execute(c Conn, stmts []Statement, out io.Writer, file string) error {
	for i := range stmts {
		if _, err := Messages(&stmts[i]); err != nil {
			return &Error{file, stmts[i].Pos, err.Error()}
		}
	}
	var rb [4]byte
	rand.Read(rb[:])
	k := &client{c: c, pid: binary.NativeEndian.Uint32(rb[:]) | 0x80000000}
	// undo holds the inverse of each statement applied, as requests to
	// send in order; the statements are undone last first.
	var undo [][]*pfkey.Msg
	var cur []*pfkey.Msg
	rollback := func(st *Statement, err error) error {
		failed := 0
		if len(cur) > 0 {
			undo = append(undo, cur)
		}
		steps := 0
		for i := len(undo) - 1; i >= 0; i-- {
			for _, m := range undo[i] {
				steps++
				if _, e := k.call(m); e != nil {
					failed++
				}
			}
		}
		msg := err.Error()
		if failed > 0 {
			msg += fmt.Sprintf(" (and %d of %d rollback steps failed)", failed, steps)
		}
		return &Error{file, st.Pos, msg}
	}
	for i := range stmts {
		st := &stmts[i]
		m, _ := Messages(st)
		if len(cur) > 0 {
			undo = append(undo, cur)
		}
		cur = nil
		switch st.Cmd {
		case "add":
			if _, err := k.call(m); err != nil {
				return rollback(st, err)
			}
			cur = append(cur, saRefMsg(pfkey.MsgDelete, st.SA.Proto, st.SA.Src, st.SA.Dst, st.SA.SPI))
		case "get":
			rs, err := k.call(m)
			if err != nil {
				return rollback(st, err)
			}
			PrintSA(out, rs[0])
		case "delete":
			rs, err := k.call(saRefMsg(pfkey.MsgGet, st.Proto, st.Src, st.Dst, st.SPI))
			if err != nil {
				return rollback(st, err)
			}
			if _, err := k.call(m); err != nil {
				return rollback(st, err)
			}
			if rs[0].SA.State != pfkey.SAStateLarval {
				cur = append(cur, asAdd(rs[0]))
			}
		case "deleteall", "flush", "dump":
			rs, err := k.dump(&pfkey.Msg{Type: pfkey.MsgDump, SAType: pfkey.SATypeOf(st.Proto)})
			if err != nil {
				return rollback(st, err)
			}
			switch st.Cmd {
			case "dump":
				if len(rs) == 0 {
					fmt.Fprintln(out, "No SAD entries.")
				}
				for _, r := range rs {
					PrintSA(out, r)
				}
			case "flush":
				if _, err := k.call(m); err != nil {
					return rollback(st, err)
				}
				for _, r := range rs {
					if r.SA.State != pfkey.SAStateLarval {
						cur = append(cur, asAdd(r))
					}
				}
			case "deleteall":
				for _, r := range rs {
					if r.Src.Addr != st.Src || r.Dst.Addr != st.Dst {
						continue
					}
					if _, err := k.call(saRefMsg(pfkey.MsgDelete, st.Proto, st.Src, st.Dst, r.SA.SPI)); err != nil {
						return rollback(st, err)
					}
					if r.SA.State != pfkey.SAStateLarval {
						cur = append(cur, asAdd(r))
					}
				}
			}
		case "spdadd":
			rs, err := k.call(m)
			if err != nil {
				return rollback(st, err)
			}
			cur = append(cur, &pfkey.Msg{Type: pfkey.MsgXSPDDelete2, Policy: &pfkey.Policy{Dir: rs[0].Policy.Dir, ID: rs[0].Policy.ID}})
		case "spdupdate":
			olds, err := k.dump(&pfkey.Msg{Type: pfkey.MsgXSPDDump})
			if err != nil {
				return rollback(st, err)
			}
			var old *pfkey.Msg
			for _, o := range olds {
				p, err := pfkey.PolicyFromMsg(o)
				if err == nil && p.Dir == st.Policy.Dir && p.Sel.Equal(st.Policy.Sel) {
					old = o
					break
				}
			}
			rs, err := k.call(m)
			if err != nil {
				return rollback(st, err)
			}
			if old != nil {
				cur = append(cur, asPolicy(old, pfkey.MsgXSPDUpdate))
			} else {
				cur = append(cur, &pfkey.Msg{Type: pfkey.MsgXSPDDelete2, Policy: &pfkey.Policy{Dir: rs[0].Policy.Dir, ID: rs[0].Policy.ID}})
			}
		case "spddelete":
			rs, err := k.call(m)
			if err != nil {
				return rollback(st, err)
			}
			cur = append(cur, asPolicy(rs[0], pfkey.MsgXSPDAdd))
		case "spdflush", "spddump":
			rs, err := k.dump(&pfkey.Msg{Type: pfkey.MsgXSPDDump})
			if err != nil {
				return rollback(st, err)
			}
			if st.Cmd == "spddump" {
				if len(rs) == 0 {
					fmt.Fprintln(out, "No SPD entries.")
				}
				for _, r := range rs {
					PrintPolicyMsg(out, r)
				}
				continue
			}
			if _, err := k.call(m); err != nil {
				return rollback(st, err)
			}
			for _, r := range rs {
				cur = append(cur, asPolicy(r, pfkey.MsgXSPDAdd))
			}
		}
	}
	return nil
}
