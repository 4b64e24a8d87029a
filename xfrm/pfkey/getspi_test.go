package pfkey

import (
	"syscall"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestGetSPIRange (control-plane finding 1): GETSPI validates its SPI
// range as Linux's pfkey_getspi/verify_spi_info: an IPComp CPI is 16 bits
// (RFC 3173 §2.1), so an IPComp range past 0xffff — and the default range,
// when none is given — is EINVAL; an empty range is EINVAL; otherwise the
// SPI comes from the range. The first case divided by zero and took the
// daemon down.
func TestGetSPIRange(t *testing.T) {
	cases := []struct {
		name     string
		satype   uint8
		rng      *SPIRange
		errno    syscall.Errno
		min, max uint32
	}{
		{"IPComp full 32-bit range", SATypeIPComp, &SPIRange{Min: 0, Max: 0xffffffff}, syscall.EINVAL, 0, 0},
		{"IPComp without a range", SATypeIPComp, nil, syscall.EINVAL, 0, 0},
		{"IPComp range above 16 bits", SATypeIPComp, &SPIRange{Min: 0x10000, Max: 0x20000}, syscall.EINVAL, 0, 0},
		{"IPComp 16-bit range", SATypeIPComp, &SPIRange{Min: 0x100, Max: 0xffff}, 0, 0x100, 0xffff},
		{"IPComp whole 16-bit range", SATypeIPComp, &SPIRange{Min: 0, Max: 0xffff}, 0, 1, 0xffff},
		{"IPComp CPI 0 only", SATypeIPComp, &SPIRange{Min: 0, Max: 0}, syscall.EINVAL, 0, 0},
		{"empty range", SATypeESP, &SPIRange{Min: 0x2000, Max: 0x1fff}, syscall.EINVAL, 0, 0},
		{"ESP full 32-bit range", SATypeESP, &SPIRange{Min: 0, Max: 0xffffffff}, 0, 0x100, 0xffffffff},
		{"ESP without a range", SATypeESP, nil, 0, 0x100, 0x0fffffff},
		{"AH reserved range", SATypeAH, &SPIRange{Min: 0, Max: 0xff}, syscall.EINVAL, 0, 0},
	}
	e, s := newServer(t)
	var snk sink
	k := s.Open(snk.send)
	defer k.Close()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := e.SAD.Len()
			r := one(t, k, &snk, &Msg{Type: MsgGetSPI, SAType: c.satype, Src: hostAddr(a4, 0), Dst: hostAddr(b4, 0), SPIRange: c.rng})
			if r.Errno != uint8(c.errno) {
				t.Fatalf("errno %d, want %d", r.Errno, c.errno)
			}
			if c.errno != 0 {
				if e.SAD.Len() != n {
					t.Fatal("a refused GETSPI left a larval SA")
				}
				return
			}
			if r.SA == nil || r.SA.SPI < c.min || r.SA.SPI > c.max {
				t.Fatalf("SPI %+v, want within %#x-%#x", r.SA, c.min, c.max)
			}
		})
	}
	if s.Stats.HandlerPanics.Load() != 0 {
		t.Fatalf("%d handler panics", s.Stats.HandlerPanics.Load())
	}
	// The CPI handed out can be completed by UPDATE.
	r := one(t, k, &snk, &Msg{Type: MsgGetSPI, SAType: SATypeIPComp, Src: hostAddr(a4, 0), Dst: hostAddr(b4, 0), SPIRange: &SPIRange{Min: 0x4000, Max: 0x4fff}})
	u := &Msg{Type: MsgUpdate, SAType: SATypeIPComp, SA: &SA{SPI: r.SA.SPI, State: SAStateMature, Encrypt: CAlgDeflate},
		Src: hostAddr(a4, 0), Dst: hostAddr(b4, 0)}
	if r2 := one(t, k, &snk, u); r2.Errno != 0 {
		t.Fatalf("UPDATE of CPI %#x: errno %d", r.SA.SPI, r2.Errno)
	}
	if sa := e.SAD.Lookup(b4, xfrm.ProtoIPComp, r.SA.SPI); sa == nil || sa.State() != xfrm.StateMature {
		t.Fatalf("CPI %#x not mature after UPDATE", r.SA.SPI)
	}
}

// TestHandlerPanicIsContained (control-plane "Build"): a handler that
// panics answers its message with EINVAL, is counted, and the server and
// the socket go on answering.
func TestHandlerPanicIsContained(t *testing.T) {
	_, s := newServer(t)
	var snk sink
	k := s.Open(snk.send)
	defer k.Close()
	testHookDispatch = func(m *Msg) {
		if m.Type == MsgFlush {
			panic("injected handler failure")
		}
	}
	t.Cleanup(func() { testHookDispatch = nil })
	r := one(t, k, &snk, &Msg{Type: MsgFlush, Seq: 7})
	if r.Errno != uint8(syscall.EINVAL) || r.Type != MsgFlush || r.Seq != 7 {
		t.Fatalf("reply to the failing message: %+v, want its header with EINVAL", r)
	}
	if n := s.Stats.HandlerPanics.Load(); n != 1 {
		t.Fatalf("HandlerPanics %d, want 1", n)
	}
	if r = one(t, k, &snk, addMsg(0x5000)); r.Errno != 0 {
		t.Fatalf("next message after the failure: errno %d", r.Errno)
	}
}
