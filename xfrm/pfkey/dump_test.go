package pfkey

import (
	"syscall"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// stepOutput is a transport whose dump the test drives by hand.
type stepOutput struct {
	sink
	next func() ([]byte, bool)
}

func (o *stepOutput) Reply(b []byte)       { o.send(b) }
func (o *stepOutput) Notify(b []byte) bool { o.send(b); return true }
func (o *stepOutput) Stream(next func() ([]byte, bool)) bool {
	if o.next != nil {
		return false
	}
	o.next = next
	return true
}

// TestDumpStream: a DUMP is produced one message per pull. SAs deleted
// before their turn are left out (their keys are never read) and the last
// message sent still has sequence 0; a second DUMP while one runs is
// EBUSY (as af_key's pfkey_dump); a dump whose every SA died ends with
// ENOENT.
func TestDumpStream(t *testing.T) {
	e, s := newServer(t)
	out := &stepOutput{}
	k := s.OpenOutput(out)
	defer k.Close()
	for spi := uint32(0x1000); spi < 0x1005; spi++ {
		if r := one(t, k, &out.sink, addMsg(spi)); r.Errno != 0 {
			t.Fatalf("add %#x: errno %d", spi, r.Errno)
		}
	}
	k.Handle((&Msg{Type: MsgDump, Seq: 9, PID: 5}).MustEncode())
	if out.next == nil {
		t.Fatal("DUMP did not start a stream")
	}
	if r := one(t, k, &out.sink, &Msg{Type: MsgDump, Seq: 10}); r.Errno != uint8(syscall.EBUSY) {
		t.Fatalf("second DUMP: errno %d, want EBUSY", r.Errno)
	}
	var got []*Msg
	pull := func() bool {
		b, last := out.next()
		if b == nil {
			return false
		}
		if m, _ := Decode(b); m != nil && (m.Seq == 0) != last {
			t.Fatalf("message with sequence %d: last = %v", m.Seq, last)
		}
		m, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
		return true
	}
	pull() // 0x1000 (0x1001 is held back to know whether it is the last)
	for _, spi := range []uint32{0x1002, 0x1004} {
		if _, err := e.SAD.Delete(b4, xfrm.ProtoESP, spi); err != nil {
			t.Fatal(err)
		}
	}
	for pull() {
	}
	var spis []uint32
	for _, m := range got {
		spis = append(spis, m.SA.SPI)
		if m.Type != MsgDump || m.PID != 5 || m.KeyEncrypt == nil {
			t.Errorf("dump message %+v", m)
		}
	}
	if len(got) != 3 || spis[0] != 0x1000 || spis[1] != 0x1001 || spis[2] != 0x1003 || got[2].Seq != 0 || got[0].Seq == 0 || got[1].Seq == 0 {
		t.Fatalf("dumped SPIs %#x, last seq %d", spis, got[len(got)-1].Seq)
	}

	// Every SA gone before the first pull: ENOENT, as for an empty SAD.
	out.next = nil
	k.Handle((&Msg{Type: MsgDump, Seq: 11, PID: 5}).MustEncode())
	e.SAD.Flush(0)
	b, last := out.next()
	if after, _ := out.next(); len(b) != msgLen || b[2] != uint8(syscall.ENOENT) || !last || after != nil {
		t.Fatalf("dump of a flushed SAD: %x", b)
	}
}
