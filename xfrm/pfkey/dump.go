package pfkey

import (
	"cmp"
	"slices"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Output is where a socket's messages go: the transport behind a PF_KEY
// socket (the control socket's connection). It separates the three ways a
// message reaches a reader, because each needs its own flow control:
//
//   - Reply answers the socket's own request. It may block until the
//     reader has made room: a client that does not read its replies stops
//     being served, and the server's memory stays bounded.
//   - Notify is an asynchronous message (ACQUIRE, EXPIRE, another
//     socket's SA or policy change). It runs on the packet path or on
//     another client's request and must never block: when the reader is
//     too slow it returns false and the message is lost for that reader,
//     as a full sk_rcvbuf makes Linux's pfkey_broadcast_one drop it.
//   - Stream starts a DUMP. next produces the dump's messages one at a
//     time, called by the transport as the reader drains its socket (the
//     way af_key resumes pfkey_do_dump from recvmsg), so a dump of any
//     size costs one message of buffer and loses nothing. It reports
//     last with the final message (or a nil one): the transport must end
//     the dump before it sends that message, because a client that has
//     read it may start the next dump at once. Stream reports false when
//     a dump is already running on the socket (Linux answers EBUSY).
type Output interface {
	Reply(msg []byte)
	Notify(msg []byte) bool
	Stream(next func() (msg []byte, last bool)) bool
}

// funcOutput adapts a non-blocking send function (Server.Open): replies
// and notifications go straight to it and a dump is produced at once.
type funcOutput func([]byte)

func (f funcOutput) Reply(msg []byte)       { f(msg) }
func (f funcOutput) Notify(msg []byte) bool { f(msg); return true }
func (f funcOutput) Stream(next func() (msg []byte, last bool)) bool {
	for {
		b, last := next()
		if b != nil {
			f(b)
		}
		if last || b == nil {
			return true
		}
	}
}

// sortedSAs returns the SAs of proto (0: every protocol) in the order DUMP
// lists them: by destination, then SPI. It copies pointers only: keys are
// read later, under a reference (xfrm.SA.Hold).
func sortedSAs(sad *xfrm.SAD, proto xfrm.Proto) []*xfrm.SA {
	var sas []*xfrm.SA
	sad.Walk(func(sa *xfrm.SA) bool {
		if proto == 0 || sa.Config.Proto == proto {
			sas = append(sas, sa)
		}
		return true
	})
	slices.SortStableFunc(sas, func(a, b *xfrm.SA) int {
		if c := a.Config.Dst.Compare(b.Config.Dst); c != 0 {
			return c
		}
		return cmp.Compare(a.Config.SPI, b.Config.SPI)
	})
	return sas
}

// heldStateMsg describes sa, keys included, while holding a reference on
// it, so a concurrent DELETE cannot wipe the keys halfway through the copy.
// It returns nil for an SA that died since it was listed.
func heldStateMsg(sa *xfrm.SA) *Msg {
	if !sa.Hold() {
		return nil
	}
	defer sa.Release()
	return StateMsg(sa, true)
}

// dumpStream turns a snapshot of n entries into DUMP replies produced one
// at a time. msg(i) builds entry i's message (nil to skip an entry that
// vanished meanwhile). Sequence numbers count down and the last message
// sent has 0, as setkey expects: one message is held back, so that a
// skipped tail still ends the dump with sequence 0. empty is sent when no
// entry at all could be sent.
type dumpStream struct {
	n       int
	i       int
	msg     func(i int) *Msg
	typ     uint8
	pid     uint32
	held    *Msg
	empty   []byte
	emitted bool
	done    bool
}

// next returns the next encoded message, and last with the final one
// (nil after it).
func (d *dumpStream) next() (msg []byte, last bool) {
	if d.done {
		return nil, true
	}
	for d.i < d.n {
		m := d.msg(d.i)
		d.i++
		if m == nil {
			continue
		}
		prev := d.held
		d.held = m
		if prev != nil {
			// More may follow: a non-zero sequence, the number of
			// snapshot entries still to come (at least this one).
			return d.encode(prev, uint32(d.n-d.i+1)), false
		}
	}
	d.done = true
	if d.held != nil {
		m := d.held
		d.held = nil
		return d.encode(m, 0), true
	}
	if !d.emitted {
		return d.empty, true
	}
	return nil, true
}

func (d *dumpStream) encode(m *Msg, seq uint32) []byte {
	m.Type, m.PID, m.Seq = d.typ, d.pid, seq
	d.emitted = true
	return m.MustEncode()
}

// StateMsgs describes the SAs of proto (0: every protocol), keys
// included, in the order DUMP lists them: by destination, then SPI. Each
// SA's keys are copied under a reference; SAs deleted meanwhile are left
// out. The caller sets Type, Seq and PID.
func StateMsgs(sad *xfrm.SAD, proto xfrm.Proto) []*Msg {
	var ms []*Msg
	for _, sa := range sortedSAs(sad, proto) {
		if m := heldStateMsg(sa); m != nil {
			ms = append(ms, m)
		}
	}
	return ms
}
