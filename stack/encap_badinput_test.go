package stack_test

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// spiEncap is the SPI of an encapsulated SA A -> B added for the cases
// below, which makes B6:4500 a port that receives ESP in UDP.
const spiEncap = 0x6001

// udpTo6 is an IPv6/UDP packet from A to B, ports sport -> dport, with a
// valid checksum.
func udpTo6(sport, dport uint16, payload []byte) []byte {
	p := udp6(payload)
	u := p[40:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	u[6], u[7] = 0, 0
	binary.BigEndian.PutUint16(u[6:], l4sum(p[8:40], 17, u))
	return p
}

// addEncapSA gives B an encapsulated inbound SA from A (keys and reqid of
// the main one) and returns it.
func addEncapSA(t *testing.T, p *testbed.Pair) *xfrm.SA {
	t.Helper()
	cfg := bInbound(p).Config
	cfg.SPI = spiEncap
	cfg.Seq = 0
	cfg.Encap = xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4500}
	sa, err := p.B.Engine.AddSA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

// TestEncapBadInput injects one malformed or unwanted UDP-encapsulated
// packet per case into B, which holds an encapsulated SA on port 4500 next
// to its plain ones, and checks that exactly the expected Linux counter
// moves by one (none for a keepalive, which the link stats count) and
// that traffic continues. A keepalive or IKE datagram to a port no SA
// uses is nothing special: cleartext UDP, here refused by the policy that
// protects all traffic from A (XfrmInTmplMismatch), as is IKE on the
// encapsulation port itself (Linux's key managers hold a socket policy
// that bypasses IPsec for it; RFC 3948 §2.2 hands it to the socket).
func TestEncapBadInput(t *testing.T) {
	gcm := testbed.Suites[0]
	esp := func(t *testing.T, sa *xfrm.SA, p *testbed.Pair) []byte {
		return sealAs(t, sa, ahead(sa), udp6([]byte("encapsulated")))[40:]
	}
	cases := []struct {
		name      string
		counter   string
		keepalive uint64 // InNATKeepalive increase
		ike       uint64 // InNATIKE increase
		make      func(t *testing.T, p *testbed.Pair, enc *xfrm.SA) []byte
	}{
		{"truncated UDP header", "XfrmInHdrError", 0, 0, func(t *testing.T, p *testbed.Pair, _ *xfrm.SA) []byte {
			pkt := udpTo6(5555, 4500, nil)[:40+6]
			binary.BigEndian.PutUint16(pkt[4:], 6)
			return pkt
		}},
		{"UDP length beyond the packet", "XfrmInHdrError", 0, 0, func(t *testing.T, p *testbed.Pair, enc *xfrm.SA) []byte {
			pkt := udpTo6(4500, 4500, esp(t, enc, p))
			binary.BigEndian.PutUint16(pkt[44:], uint16(len(pkt)-40+100))
			return pkt
		}},
		{"UDP length below the header", "XfrmInHdrError", 0, 0, func(t *testing.T, p *testbed.Pair, enc *xfrm.SA) []byte {
			pkt := udpTo6(4500, 4500, esp(t, enc, p))
			binary.BigEndian.PutUint16(pkt[44:], 4)
			return pkt
		}},
		{"wrong UDP checksum (IPv6)", "XfrmInHdrError", 0, 0, func(t *testing.T, p *testbed.Pair, enc *xfrm.SA) []byte {
			pkt := udpTo6(4500, 4500, esp(t, enc, p))
			pkt[46] ^= 0x55
			return pkt
		}},
		{"zero UDP checksum (IPv6)", "XfrmInHdrError", 0, 0, func(t *testing.T, p *testbed.Pair, enc *xfrm.SA) []byte {
			pkt := udpTo6(4500, 4500, esp(t, enc, p))
			pkt[46], pkt[47] = 0, 0
			return pkt
		}},
		{"ESP-in-UDP for an SA that is not encapsulated", "XfrmInStateMismatch", 0, 0, func(t *testing.T, p *testbed.Pair, _ *xfrm.SA) []byte {
			return udpTo6(4500, 4500, esp(t, bInbound(p), p))
		}},
		{"plain ESP for an encapsulated SA", "XfrmInStateMismatch", 0, 0, func(t *testing.T, p *testbed.Pair, enc *xfrm.SA) []byte {
			return espPacket(esp(t, enc, p))
		}},
		{"ESP-in-UDP with an unknown SPI", "XfrmInNoStates", 0, 0, func(t *testing.T, p *testbed.Pair, enc *xfrm.SA) []byte {
			b := esp(t, enc, p)
			binary.BigEndian.PutUint32(b, 0xdeadbeef)
			return udpTo6(4500, 4500, b)
		}},
		{"valid ESP-in-UDP (the harness's control)", "", 0, 0, func(t *testing.T, p *testbed.Pair, enc *xfrm.SA) []byte {
			return udpTo6(4500, 4500, esp(t, enc, p))
		}},
		{"keepalive", "", 1, 0, func(t *testing.T, p *testbed.Pair, _ *xfrm.SA) []byte {
			return udpTo6(4500, 4500, []byte{0xff})
		}},
		{"keepalive on an unknown port", "XfrmInTmplMismatch", 0, 0, func(t *testing.T, p *testbed.Pair, _ *xfrm.SA) []byte {
			return udpTo6(4500, 4999, []byte{0xff})
		}},
		{"IKE (non-ESP marker) under an all-traffic policy", "XfrmInTmplMismatch", 0, 1, func(t *testing.T, p *testbed.Pair, _ *xfrm.SA) []byte {
			return udpTo6(4500, 4500, append(make([]byte, 4), "IKE_SA_INIT..."...))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, _, ctx := badInputPair(t, gcm)
			enc := addEncapSA(t, p)
			pkt := c.make(t, p, enc)
			before := p.B.Engine.Stats.Snapshot()
			ka, ike := p.B.Endpoint.Stats.InNATKeepalive.Load(), p.B.Endpoint.Stats.InNATIKE.Load()
			p.InjectB(pkt)
			expectOnly(t, p.B.Engine, before, c.counter)
			if d := p.B.Endpoint.Stats.InNATKeepalive.Load() - ka; d != c.keepalive {
				t.Errorf("InNATKeepalive moved by %d, want %d", d, c.keepalive)
			}
			if d := p.B.Endpoint.Stats.InNATIKE.Load() - ike; d != c.ike {
				t.Errorf("InNATIKE moved by %d, want %d", d, c.ike)
			}
			if c.counter == "" && c.keepalive == 0 && enc.Counters.Packets.Load() != 1 {
				t.Errorf("the encapsulated SA took %d packets, want 1", enc.Counters.Packets.Load())
			}
			if err := testbed.UDPEcho(ctx, p.A, p.AddrB, 100); err != nil {
				t.Fatalf("traffic after the bad packet: %v", err)
			}
		})
	}
}

// TestEncapChecksumOffloaded: ESP in UDP whose UDP checksum the link
// has already verified (gVisor's RXChecksumValidated: AF_PACKET on a veth
// with RX checksum offload, where the peer kernel's frames carry only the
// partial pseudo-header sum, CHECKSUM_PARTIAL) is decapsulated, not
// dropped as XfrmInHdrError, as Linux's UDP layer trusts
// CHECKSUM_UNNECESSARY. Found with strongSwan's kernel-libipsec over a
// veth: every ESP-in-UDP reply was dropped.
func TestEncapChecksumOffloaded(t *testing.T) {
	p, _, _ := badInputPair(t, testbed.Suites[0])
	enc := addEncapSA(t, p)
	pkt := udpTo6(4500, 4500, sealAs(t, enc, ahead(enc), udp6([]byte("encapsulated")))[40:])
	pkt[46], pkt[47] = 0x12, 0x34 // what CHECKSUM_PARTIAL leaves: not the full sum
	before := p.B.Engine.Stats.Snapshot()
	buf := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	buf.RXChecksumValidated = true
	p.B.Endpoint.DeliverNetworkPacket(header.IPv6ProtocolNumber, buf)
	buf.DecRef()
	expectOnly(t, p.B.Engine, before, "")
	if n := enc.Counters.Packets.Load(); n != 1 {
		t.Errorf("the encapsulated SA took %d packets, want 1", n)
	}
}
