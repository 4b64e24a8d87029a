package stack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// pktRecorder is the stack above the wrapper: it keeps every packet it is
// given (a reference) and a copy of its data.
type pktRecorder struct {
	pkts  []*stack.PacketBuffer
	datas [][]byte
	proto []tcpip.NetworkProtocolNumber
}

func (r *pktRecorder) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	b := pkt.Data().ToBuffer()
	r.pkts = append(r.pkts, pkt.IncRef())
	r.datas = append(r.datas, b.Flatten())
	r.proto = append(r.proto, proto)
	b.Release()
}

func (r *pktRecorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (r *pktRecorder) release() {
	for _, p := range r.pkts {
		p.DecRef()
	}
	*r = pktRecorder{}
}

// inPlaceUDP is an IPv4 UDP datagram src -> dst (1000 -> 2000) with n
// payload bytes and a valid header checksum.
func inPlaceUDP(src, dst netip.Addr, n int) []byte {
	p := make([]byte, 28+n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(p[i])<<8 | uint32(p[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], 1000)
	binary.BigEndian.PutUint16(p[22:], 2000)
	binary.BigEndian.PutUint16(p[24:], uint16(8+n))
	for i := range n {
		p[28+i] = byte(i*5 + n)
	}
	return p
}

// TestInboundInPlace: an ESP packet from the link (transport, tunnel, and
// UDP-encapsulated) is decrypted in the received buffer and the received
// packet itself goes up, its data exactly the inner packet the peer sent:
// the ESP header, IV, padding, trailer and ICV, and the link padding
// after them, are not in it, whether the frame came in a batch (through
// GRO) or alone. A packet after a larger one in the same batch shows
// nothing of it.
func TestInboundInPlace(t *testing.T) {
	us, peer := inboundUs, inboundPeer
	for _, c := range inboundCases {
		t.Run(c.name, func(t *testing.T) {
			s, sender := newInboundESP(t, c.mode, c.encap)
			rec := &pktRecorder{}
			defer rec.release()
			e := s.Endpoint
			e.dispatcher.Store(&dispatcherRef{rec})

			frame := func(inner []byte) *stack.PacketBuffer {
				v, wire := sender.Output(inner, xfrm.HeapAllocator{})
				if v != xfrm.VerdictProtected {
					t.Fatalf("sender verdict %v", v)
				}
				f := make([]byte, 14, 14+len(wire)+18)
				binary.BigEndian.PutUint16(f[12:], 0x0800)
				f = append(f, wire...)
				f = append(f, bytes.Repeat([]byte{0xee}, 18)...) // link padding
				pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(f)})
				pkt.LinkHeader().Consume(header.EthernetMinimumSize)
				pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
				return pkt
			}
			var want [][]byte
			var sent []*stack.PacketBuffer
			for _, n := range []int{1200, 7} {
				want = append(want, inPlaceUDP(peer, us, n))
				sent = append(sent, frame(want[len(want)-1]))
			}
			e.DeliverNetworkPackets(sent)
			want = append(want, inPlaceUDP(peer, us, 300))
			sent = append(sent, frame(want[2]))
			e.DeliverNetworkPacket(header.IPv4ProtocolNumber, sent[2])
			for _, p := range sent {
				defer p.DecRef()
			}
			if len(rec.pkts) != len(want) {
				t.Fatalf("%d packets went up, want %d (stats %v)", len(rec.pkts), len(want), s.Engine.Stats.Snapshot())
			}
			for i := range want {
				if !bytes.Equal(rec.datas[i], want[i]) {
					t.Errorf("packet %d went up as\n%x\nwant\n%x", i, rec.datas[i], want[i])
				}
				if rec.pkts[i] != sent[i] {
					t.Errorf("packet %d: a new packet went up, not the received one decrypted in place", i)
				}
				if rec.proto[i] != header.IPv4ProtocolNumber || rec.pkts[i].NetworkProtocolNumber != header.IPv4ProtocolNumber {
					t.Errorf("packet %d went up as protocol %d", i, rec.proto[i])
				}
			}
			if n := e.Stats.Reinjected.Load(); n != uint64(len(want)) {
				t.Errorf("Reinjected = %d, want %d", n, len(want))
			}
		})
	}
}

// The receiving stack's and its peer's addresses in the inbound tests.
var inboundUs, inboundPeer = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")

// inboundCases are the SA kinds the inbound tests receive with.
var inboundCases = []struct {
	name  string
	mode  xfrm.Mode
	encap bool
}{
	{"transport", xfrm.ModeTransport, false},
	{"tunnel", xfrm.ModeTunnel, false},
	{"esp-in-udp transport", xfrm.ModeTransport, true},
}

// newInboundESP returns a stack at inboundUs on a channel link that
// requires ESP (mode, UDP-encapsulated with encap) from inboundPeer, and
// the peer: an engine of its own with the same SA outbound.
func newInboundESP(t *testing.T, mode xfrm.Mode, encap bool) (*Stack, *xfrm.Engine) {
	t.Helper()
	us, peer := inboundUs, inboundPeer
	key := xfrm.Algorithm{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{9}, 20)}
	ch := channel.New(16, 1500, "\x02\x00\x00\x00\x00\x01")
	t.Cleanup(ch.Close)
	s, err := New(Config{Link: ethernet.New(ch), Addrs: []netip.Prefix{netip.PrefixFrom(us, 24)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	sa := xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: 0x1234, Src: peer, Dst: us, Mode: mode, ReplayWindow: 64, AEAD: key}
	if encap {
		sa.Encap = xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: 4500, DPort: 4500}
	}
	tmpl := xfrm.Template{Proto: xfrm.ProtoESP, Mode: mode, Level: xfrm.LevelRequire}
	if mode == xfrm.ModeTunnel {
		tmpl.Src, tmpl.Dst = peer, us
	}
	sel := xfrm.Selector{Src: netip.PrefixFrom(peer, 32), Dst: netip.PrefixFrom(us, 32)}
	sender := xfrm.NewEngine()
	t.Cleanup(sender.Close)
	for _, e := range []*xfrm.Engine{s.Engine, sender} {
		if _, err := e.AddSA(sa); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Engine.AddPolicy(&xfrm.Policy{Dir: xfrm.DirIn, Sel: sel, Action: xfrm.ActionProtect, Templates: []xfrm.Template{tmpl}}); err != nil {
		t.Fatal(err)
	}
	if _, err := sender.AddPolicy(&xfrm.Policy{Dir: xfrm.DirOut, Sel: sel, Action: xfrm.ActionProtect, Templates: []xfrm.Template{tmpl}}); err != nil {
		t.Fatal(err)
	}
	return s, sender
}
