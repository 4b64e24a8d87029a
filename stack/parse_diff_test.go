package stack_test

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// FuzzParseFlowAgreesWithGVisor: the inbound check classifies a datagram
// with xfrm.ParseFlow, the stack then delivers it by its own walk of the
// IPv6 extension headers. If the two disagree on the upper-layer protocol
// or where it starts, a port-specific policy is checked against something
// other than what the socket receives (issue 10 finding 2: next header
// 253). Wherever gVisor's iterator reaches an upper-layer header,
// ParseFlow must name the same protocol at the same offset, or fail (the
// inbound check drops what ParseFlow cannot parse). Fragments are out of
// scope: they are reassembled before either walk.
func FuzzParseFlowAgreesWithGVisor(f *testing.F) {
	for _, seed := range [][]byte{
		{17, 0, 0, 0, 0, 0, 0, 0, 0},
		{0, 17, 0, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{60, 253, 0, 1, 4, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0, 8, 0, 0},
		{253, 6, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
		{43, 58, 0, 0, 0, 0, 0, 0, 0, 128, 0},
		{254, 1, 2, 3},
		{59},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 || len(in) > 1000 {
			return
		}
		nh, payload := in[0], in[1:]
		pkt := make([]byte, 40+len(payload))
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(payload)))
		pkt[6], pkt[7] = nh, 64
		pkt[8], pkt[23], pkt[24], pkt[39] = 0x20, 1, 0x20, 2
		copy(pkt[40:], payload)

		it := header.MakeIPv6PayloadIterator(header.IPv6ExtensionHeaderIdentifier(nh), buffer.MakeWithData(append([]byte(nil), payload...)))
		defer it.Release()
		var proto uint8
		var off int
		for {
			h, done, err := it.Next()
			if err != nil || done {
				return // gVisor drops it or delivers nothing
			}
			if _, ok := h.(header.IPv6FragmentExtHdr); ok {
				h.Release()
				return
			}
			if raw, ok := h.(header.IPv6RawPayloadHeader); ok {
				proto = uint8(raw.Identifier)
				off = 40 + len(payload) - int(raw.Buf.Size())
				raw.Release()
				break
			}
			h.Release()
		}
		var fl xfrm.Flow
		l4off, err := xfrm.ParseFlow(pkt, &fl)
		if err != nil {
			return // dropped by the inbound check: fail closed
		}
		if fl.Proto != proto || l4off != off {
			t.Fatalf("ParseFlow: protocol %d at %d; gVisor delivers protocol %d at %d", fl.Proto, l4off, proto, off)
		}
	})
}
