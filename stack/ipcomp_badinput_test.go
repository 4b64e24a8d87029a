package stack_test

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// ipcomp6 wraps body (an IPComp header's payload, already deflated) in an
// IPv6 packet from A to B with an IPComp header naming cpi.
func ipcomp6(cpi uint16, nh uint8, body []byte) []byte {
	p := make([]byte, 40+4+len(body))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(4+len(body)))
	p[6] = uint8(xfrm.ProtoIPComp)
	p[7] = 64
	a, b := testbed.A6.As16(), testbed.B6.As16()
	copy(p[8:], a[:])
	copy(p[24:], b[:])
	p[40] = nh
	binary.BigEndian.PutUint16(p[42:], cpi)
	copy(p[44:], body)
	return p
}

func deflate(t *testing.T, data []byte) []byte {
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

func waitCounter(t *testing.T, e *xfrm.Engine, name string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, _ := e.Stats.Get(name)
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d, want %d", name, v, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIPCompBadInput: an IPComp packet with an unknown CPI is dropped and
// counted as XfrmInNoStates; a decompression bomb (1 MiB of zeros in about
// 1 KiB) under the right CPI is dropped at the size cap and counted as
// XfrmInStateProtoError (Linux counts a failed decompression there) and on
// the SA; corrupt deflate data likewise. Nothing else moves.
func TestIPCompBadInput(t *testing.T) {
	p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: xfrm.ModeTransport, Inner: 6,
		Bundle: []xfrm.Proto{xfrm.ProtoIPComp, xfrm.ProtoESP}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	e := p.B.Engine
	body := deflate(t, bytes.Repeat([]byte("hello "), 100))
	p.InjectB(ipcomp6(0x7777, 17, body))
	waitCounter(t, e, "XfrmInNoStates", 1)

	bomb := deflate(t, make([]byte, 1<<20))
	if len(bomb) > 2000 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	p.InjectB(ipcomp6(testbed.SPIAtoB, 17, bomb))
	waitCounter(t, e, "XfrmInStateProtoError", 1)
	sa := e.SAD.Lookup(testbed.B6, xfrm.ProtoIPComp, testbed.SPIAtoB)
	if sa == nil || sa.Counters.DecompressionBombs.Load() != 1 {
		t.Fatalf("SA %v: bombs not counted", sa)
	}
	p.InjectB(ipcomp6(testbed.SPIAtoB, 17, []byte{0xff, 0xff, 0xff, 0xff}))
	waitCounter(t, e, "XfrmInStateProtoError", 2)
	if sa.Counters.DecompressionBombs.Load() != 1 {
		t.Fatal("corrupt data counted as a bomb")
	}
	// A well-formed compressed packet under the right CPI but without the
	// ESP the policy requires fails the template check (IPComp is
	// optional only on top of the rest of the bundle).
	p.InjectB(ipcomp6(testbed.SPIAtoB, 17, deflate(t, udpPayload(200))))
	waitCounter(t, e, "XfrmInTmplMismatch", 1)
	for _, st := range e.Stats.Snapshot() {
		switch st.Name {
		case "XfrmInNoStates", "XfrmInTmplMismatch":
			if st.Value != 1 {
				t.Errorf("%s = %d", st.Name, st.Value)
			}
		case "XfrmInStateProtoError":
			if st.Value != 2 {
				t.Errorf("%s = %d", st.Name, st.Value)
			}
		default:
			if st.Value != 0 {
				t.Errorf("%s = %d, want 0", st.Name, st.Value)
			}
		}
	}
}

// udpPayload is a UDP header (A:5555 -> B:echo, no checksum) and n bytes.
func udpPayload(n int) []byte {
	u := make([]byte, 8+n)
	binary.BigEndian.PutUint16(u[0:], 5555)
	binary.BigEndian.PutUint16(u[2:], testbed.EchoPort)
	binary.BigEndian.PutUint16(u[4:], uint16(8+n))
	return u
}
