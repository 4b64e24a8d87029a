package stack

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// countingDispatcher is the stack above the wrapper: it counts what goes
// up and keeps nothing, so that it allocates nothing itself.
type countingDispatcher struct{ n int }

func (d *countingDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	d.n++
}

func (d *countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestInboundAllocFree: receiving an ESP packet (transport, tunnel,
// UDP-encapsulated), from its frame to the stack above, allocates
// nothing, alone or in a batch through GRO: it is decrypted in the
// received buffer and that packet goes up.
func TestInboundAllocFree(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers")
	}
	us, peer := inboundUs, inboundPeer
	for _, c := range inboundCases {
		t.Run(c.name, func(t *testing.T) {
			s, sender := newInboundESP(t, c.mode, c.encap)
			up := &countingDispatcher{}
			e := s.Endpoint
			e.dispatcher.Store(&dispatcherRef{up})

			// The frames, built beforehand: each carries its own
			// sequence number, which the replay window takes once.
			const single, batches, batch = 50, 25, 4
			frames := make([]*stack.PacketBuffer, single+1+(batches+1)*batch)
			for i := range frames {
				v, wire := sender.Output(inPlaceUDP(peer, us, 1200), xfrm.HeapAllocator{})
				if v != xfrm.VerdictProtected {
					t.Fatalf("sender verdict %v", v)
				}
				f := make([]byte, header.EthernetMinimumSize, header.EthernetMinimumSize+len(wire))
				binary.BigEndian.PutUint16(f[12:], uint16(header.IPv4ProtocolNumber))
				f = append(f, wire...)
				frames[i] = stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(f)})
				frames[i].LinkHeader().Consume(header.EthernetMinimumSize)
				frames[i].NetworkProtocolNumber = header.IPv4ProtocolNumber
				defer frames[i].DecRef()
			}
			next := frames
			if n := testing.AllocsPerRun(single, func() {
				e.DeliverNetworkPacket(header.IPv4ProtocolNumber, next[0])
				next = next[1:]
			}); n != 0 {
				t.Errorf("%v allocations per packet delivered alone", n)
			}
			if n := testing.AllocsPerRun(batches, func() {
				e.DeliverNetworkPackets(next[:batch])
				next = next[batch:]
			}); n != 0 {
				t.Errorf("%v allocations per batch of %d packets", n, batch)
			}
			if up.n != len(frames) {
				t.Errorf("%d packets went up, want %d (stats %v)", up.n, len(frames), s.Engine.Stats.Snapshot())
			}
		})
	}
}
