package stack_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// fragment6 splits an IPv6 packet without extension headers into an
// initial fragment carrying the first n payload bytes and the rest.
func fragment6(p []byte, n int) (first, rest []byte) {
	payload := p[40:]
	mk := func(off int, part []byte, more bool) []byte {
		f := make([]byte, 48+len(part))
		copy(f, p[:40])
		f[6] = 44
		binary.BigEndian.PutUint16(f[4:], uint16(8+len(part)))
		f[40] = p[6]
		fo := uint16(off)
		if more {
			fo |= 1
		}
		binary.BigEndian.PutUint16(f[42:], fo)
		binary.BigEndian.PutUint32(f[44:], 0xabcd)
		copy(f[48:], part)
		return f
	}
	return mk(0, payload[:n], true), mk(n, payload[n:], false)
}

// TestInboundCleartextFragments: fragments of a cleartext datagram that
// policy says must be protected are held until the datagram is whole (no
// counter moves for the first), then the datagram is dropped by the inbound
// check and counted once as XfrmInTmplMismatch.
func TestInboundCleartextFragments(t *testing.T) {
	p, _, ctx := badInputPair(t, testbed.Suites[0])
	first, rest := fragment6(udp6(make([]byte, 2000)), 1024)
	before := p.B.Engine.Stats.Snapshot()
	p.InjectB(first)
	expectOnly(t, p.B.Engine, before, "")
	p.InjectB(rest)
	expectOnly(t, p.B.Engine, before, "XfrmInTmplMismatch")
	if err := testbed.UDPEcho(ctx, p.A, p.AddrB, 3000); err != nil {
		t.Fatalf("protected traffic after the fragments: %v", err)
	}
}

// TestOutputNoSA: a protect policy whose SA is missing drops the packet
// (never cleartext), counts XfrmOutNoStates and raises ACQUIRE for the key
// manager, rate-limited per policy template.
func TestOutputNoSA(t *testing.T) {
	p, err := testbed.New(testbed.Config{Suite: testbed.Suites[0], Mode: xfrm.ModeTransport, Inner: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	acquires := make(chan xfrm.Event, 16)
	p.A.Engine.Subscribe(func(ev xfrm.Event) {
		if ev.Type == xfrm.EventAcquire {
			acquires <- ev
		}
	})
	if _, err := p.A.Engine.SAD.Delete(testbed.B4, xfrm.ProtoESP, testbed.SPIAtoB); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := p.A.Ping(ctx, testbed.B4, 1, 56); err == nil {
		t.Fatal("ping succeeded without an outbound SA")
	}
	select {
	case ev := <-acquires:
		if ev.Policy == nil || ev.Template == nil || ev.Template.Proto != xfrm.ProtoESP || ev.Flow.Dst != testbed.B4 {
			t.Errorf("ACQUIRE %+v does not name the policy, template and flow", ev)
		}
	default:
		t.Fatal("no ACQUIRE event")
	}
	if n := len(acquires); n > 0 {
		t.Errorf("%d more ACQUIREs within the rate limit", n)
	}
	if v, _ := p.A.Engine.Stats.Get("XfrmOutNoStates"); v == 0 {
		t.Error("XfrmOutNoStates did not move")
	}
	if leaks, _ := p.Leaks(); len(leaks) > 0 {
		t.Errorf("cleartext sent while the SA was missing: %v", leaks)
	}
}
