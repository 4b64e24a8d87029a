package stack_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/esp"
)

// udp6 builds an IPv6/UDP packet from A to B's echo port with a valid
// checksum.
func udp6(payload []byte) []byte {
	p := make([]byte, 40+8+len(payload))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(8+len(payload)))
	p[6] = 17
	p[7] = 64
	a, b := testbed.A6.As16(), testbed.B6.As16()
	copy(p[8:], a[:])
	copy(p[24:], b[:])
	u := p[40:]
	binary.BigEndian.PutUint16(u[0:], 5555)
	binary.BigEndian.PutUint16(u[2:], testbed.EchoPort)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(u[8:], payload)
	binary.BigEndian.PutUint16(u[6:], l4sum(p[8:40], 17, u))
	return p
}

// tcpSYN6 builds an IPv6 TCP SYN from A to B's sink port.
func tcpSYN6() []byte {
	p := make([]byte, 40+20)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], 20)
	p[6] = 6
	p[7] = 64
	a, b := testbed.A6.As16(), testbed.B6.As16()
	copy(p[8:], a[:])
	copy(p[24:], b[:])
	t := p[40:]
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], testbed.TCPSinkPort)
	binary.BigEndian.PutUint32(t[4:], 12345)
	t[12] = 5 << 4
	t[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(t[14:], 65535)
	binary.BigEndian.PutUint16(t[16:], l4sum(p[8:40], 6, t))
	return p
}

func l4sum(addrs []byte, proto uint8, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(addrs)
	sum += uint32(len(seg)) + uint32(proto)
	add(seg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// espPacket wraps an ESP payload (from the ESP header on) in an IPv6
// header from A to B.
func espPacket(espb []byte) []byte {
	p := make([]byte, 40+len(espb))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(len(espb)))
	p[6] = 50
	p[7] = 64
	a, b := testbed.A6.As16(), testbed.B6.As16()
	copy(p[8:], a[:])
	copy(p[24:], b[:])
	copy(p[40:], espb)
	return p
}

// sealAs builds a transport-mode ESP packet for B's inbound SA at seq,
// with the SA's own keys (as A would).
func sealAs(t *testing.T, sa *xfrm.SA, seq uint64, inner []byte) []byte {
	t.Helper()
	c := &sa.Config
	tr, err := esp.New(c.AEAD.Name, c.AEAD.Key, c.AEAD.ICVBits, c.Enc.Name, c.Enc.Key, c.Auth.Name, c.Auth.Key, c.Auth.ICVBits)
	if err != nil {
		t.Fatal(err)
	}
	payload := inner[40:]
	dst := make([]byte, tr.SealedLen(len(payload)))
	return espPacket(tr.Seal(dst, c.SPI, seq, c.ESN, payload, inner[6]))
}

// badInputPair builds an IPv6 transport pair, starts servers, warms it up
// (NDP and one echo) and captures ESP packets A sends to B.
func badInputPair(t *testing.T, suite testbed.Suite) (*testbed.Pair, func() [][]byte, context.Context) {
	t.Helper()
	p, err := testbed.New(testbed.Config{Suite: suite, Mode: xfrm.ModeTransport, Inner: 6, ReplayWindow: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if err := p.StartServers(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var captured [][]byte
	p.SetTap(func(from string, frame []byte) {
		if from != "A" || len(frame) < 14+40+8 || frame[14+6] != 50 {
			return
		}
		if binary.BigEndian.Uint32(frame[14+40:]) != testbed.SPIAtoB {
			return
		}
		mu.Lock()
		captured = append(captured, append([]byte(nil), frame[14:]...))
		mu.Unlock()
	})
	if err := testbed.UDPEcho(ctx, p.A, p.AddrB, 100); err != nil {
		t.Fatal(err)
	}
	settle(p)
	return p, func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return append([][]byte(nil), captured...)
	}, ctx
}

// settle waits until the link between A and B has gone quiet: every
// packet A sent on its SA to B has been received by B, and nothing moved
// for 300 ms. On a loaded machine a retried datagram, B's echo of it and
// A's ICMP error for the now closed socket can trail the warm-up; any of
// them landing mid-case would move a counter the case does not expect.
func settle(p *testbed.Pair) {
	out := p.A.Engine.SAD.Lookup(testbed.B6, xfrm.ProtoESP, testbed.SPIAtoB)
	last, quiet := uint64(0), 0
	for i := 0; i < 100 && quiet < 6; i++ {
		n := bInbound(p).Counters.Packets.Load() + out.LastSeq()
		if n == last && out.LastSeq() == bInbound(p).ReplayTop() {
			quiet++
		} else {
			last, quiet = n, 0
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// expectOnly checks that exactly counter went up by one on B since before.
func expectOnly(t *testing.T, e *xfrm.Engine, before []xfrm.Stat, counter string) {
	t.Helper()
	after := e.Stats.Snapshot()
	for i, st := range after {
		want := before[i].Value
		if st.Name == counter {
			want++
		}
		if st.Value != want {
			t.Errorf("%s = %d, want %d", st.Name, st.Value, want)
		}
	}
}

// ahead is a sequence number for a crafted packet: well above anything A
// has sent or will send during the case (a retried datagram on a loaded
// machine must not collide with it and turn the case into a replay).
func ahead(sa *xfrm.SA) uint64 { return sa.ReplayTop() + 1000 }

// spiExpiring is the SPI of the hard-expiry case's own SA.
const spiExpiring = 0x5001

func bInbound(p *testbed.Pair) *xfrm.SA {
	return p.B.Engine.SAD.Lookup(testbed.B6, xfrm.ProtoESP, testbed.SPIAtoB)
}

// TestBadInput injects one malformed or unwanted packet per case into B and
// checks that it is dropped, that exactly the matching Linux counter moves
// by one, and that traffic on the SA continues afterwards.
func TestBadInput(t *testing.T) {
	gcm := testbed.Suites[0]
	null, _ := testbed.SuiteByName("null+hmac-sha256")
	cases := []struct {
		name    string
		suite   testbed.Suite
		counter string
		make    func(t *testing.T, p *testbed.Pair, captured [][]byte) []byte
	}{
		{"tampered ICV", gcm, "XfrmInStateProtoError", func(t *testing.T, p *testbed.Pair, _ [][]byte) []byte {
			pkt := sealAs(t, bInbound(p), ahead(bInbound(p)), udp6([]byte("tampered")))
			pkt[len(pkt)-1] ^= 0x01
			return pkt
		}},
		{"truncated ESP (no room for IV and ICV)", gcm, "XfrmInStateProtoError", func(t *testing.T, p *testbed.Pair, _ [][]byte) []byte {
			pkt := sealAs(t, bInbound(p), ahead(bInbound(p)), udp6([]byte("truncated")))
			return espPacket(pkt[40 : 40+12])
		}},
		{"truncated ESP header", gcm, "XfrmInHdrError", func(t *testing.T, p *testbed.Pair, _ [][]byte) []byte {
			return espPacket([]byte{0, 0, 0x10, 0x01, 0, 0})
		}},
		{"bad padding", null, "XfrmInStateProtoError", func(t *testing.T, p *testbed.Pair, _ [][]byte) []byte {
			// NULL encryption with a valid HMAC over padding 1,2,9
			// (RFC 4303 §2.4 requires 1,2,3).
			sa := bInbound(p)
			inner := udp6([]byte("padding!"))[40:]
			body := make([]byte, 8, 8+len(inner)+5)
			binary.BigEndian.PutUint32(body, sa.SPI())
			binary.BigEndian.PutUint32(body[4:], uint32(ahead(sa)))
			body = append(body, inner...)
			body = append(body, 1, 2, 9, 3, 17)
			m := hmac.New(sha256.New, sa.Config.Auth.Key)
			m.Write(body)
			return espPacket(append(body, m.Sum(nil)[:16]...))
		}},
		{"unknown SPI", gcm, "XfrmInNoStates", func(t *testing.T, p *testbed.Pair, _ [][]byte) []byte {
			pkt := sealAs(t, bInbound(p), 1000, udp6([]byte("who?")))
			binary.BigEndian.PutUint32(pkt[40:], 0xdeadbeef)
			return pkt
		}},
		{"replayed sequence number", gcm, "XfrmInStateSeqError", func(t *testing.T, p *testbed.Pair, captured [][]byte) []byte {
			if len(captured) == 0 {
				t.Fatal("no ESP packet captured")
			}
			return captured[len(captured)-1]
		}},
		{"sequence number left of the window", gcm, "XfrmInStateSeqError", func(t *testing.T, p *testbed.Pair, _ [][]byte) []byte {
			// Move the window far ahead with a valid packet, then
			// send one never seen but 100 left of its 64-packet window.
			sa := bInbound(p)
			top := sa.ReplayTop() + 1000
			p.InjectB(sealAs(t, sa, top, udp6([]byte("ahead"))))
			if sa.ReplayTop() != top {
				t.Fatalf("window top %d, want %d", sa.ReplayTop(), top)
			}
			// A follows, as if it had sent the packets in between.
			if err := p.A.Engine.SAD.Lookup(testbed.B6, xfrm.ProtoESP, testbed.SPIAtoB).SetOutSeq(top); err != nil {
				t.Fatal(err)
			}
			return sealAs(t, sa, top-100, udp6([]byte("late")))
		}},
		{"packet after hard expiry", gcm, "XfrmInStateExpired", func(t *testing.T, p *testbed.Pair, _ [][]byte) []byte {
			// An SA of its own (A's traffic never reaches it) whose hard
			// packet limit the next two packets cross.
			cfg := bInbound(p).Config
			cfg.SPI = spiExpiring
			cfg.Hard.Packets = 1
			cfg.Seq = 0
			sa, err := p.B.Engine.AddSA(cfg)
			if err != nil {
				t.Fatal(err)
			}
			p.InjectB(sealAs(t, sa, 1, udp6([]byte("last")))) // the last packet the SA may take
			return sealAs(t, sa, 2, udp6([]byte("expired")))
		}},
		{"cleartext TCP to a protected port", gcm, "XfrmInTmplMismatch", func(t *testing.T, p *testbed.Pair, _ [][]byte) []byte {
			return tcpSYN6()
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, captured, ctx := badInputPair(t, c.suite)
			pkt := c.make(t, p, captured())
			before := p.B.Engine.Stats.Snapshot()
			p.InjectB(pkt)
			expectOnly(t, p.B.Engine, before, c.counter)
			if c.counter == "XfrmInStateExpired" {
				if p.B.Engine.SAD.Lookup(testbed.B6, xfrm.ProtoESP, spiExpiring) != nil {
					t.Fatalf("SA still in the SAD after its hard expiry")
				}
			}
			if err := testbed.UDPEcho(ctx, p.A, p.AddrB, 100); err != nil {
				t.Fatalf("traffic after the bad packet: %v", err)
			}
			if _, err := testbed.TCPTransfer(ctx, p.A, p.AddrB, 64<<10); err != nil {
				t.Fatalf("tcp after the bad packet: %v", err)
			}
		})
	}
}
