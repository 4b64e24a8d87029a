package stack

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// upRecorder is the stack above an rxBatch: it keeps a copy of the data
// of every packet it receives.
type upRecorder struct{ pkts [][]byte }

func (u *upRecorder) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	b := pkt.Data().ToBuffer()
	u.pkts = append(u.pkts, b.Flatten())
	b.Release()
}

func (u *upRecorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// refOnesSum is an RFC 1071 one's complement sum, a byte at a time,
// sharing nothing with gVisor's checksum package.
func refOnesSum(sum uint32, b []byte) uint32 {
	for i, c := range b {
		if i%2 == 0 {
			sum += uint32(c) << 8
		} else {
			sum += uint32(c)
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return sum
}

// refTCPv4Valid checks the TCP checksum of the IPv4 packet p (20-byte
// header) with refOnesSum.
func refTCPv4Valid(p []byte) bool {
	l4 := p[20:]
	var ph [12]byte
	copy(ph[:8], p[12:20])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(l4)))
	return refOnesSum(refOnesSum(0, ph[:]), l4) == 0xffff
}

// tcpFrame is an Ethernet frame holding an IPv4 TCP segment 10.0.0.1:1000
// -> 10.0.0.2:2000 (ACK) with sequence number seq and n payload bytes,
// checksums set by refOnesSum; bad spoils the TCP checksum.
func tcpFrame(seq uint32, n int, bad bool) []byte {
	f := make([]byte, 14+20+20+n)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	p := f[14:]
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 6
	copy(p[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	binary.BigEndian.PutUint16(p[10:], ^uint16(refOnesSum(0, p[:20])))
	t := p[20:]
	binary.BigEndian.PutUint16(t[0:], 1000)
	binary.BigEndian.PutUint16(t[2:], 2000)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], 1)
	t[12], t[13] = 5<<4, uint8(header.TCPFlagAck)
	binary.BigEndian.PutUint16(t[14:], 0xffff)
	for i := range n {
		t[20+i] = byte(seq) + byte(i*7)
	}
	var ph [12]byte
	copy(ph[:8], p[12:20])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(t)))
	binary.BigEndian.PutUint16(t[16:], ^uint16(refOnesSum(refOnesSum(0, ph[:]), t)))
	if bad {
		t[16] ^= 0x5a
	}
	return f
}

// TestGROChecksumOffsets: TCP segments from the link, whose link header
// the link consumed so their data does not start their buffer, are
// coalesced by the batch's GRO, and the merged segment leaves with a right
// TCP checksum (checked by an independent sum). gVisor's GRO checks a
// checksum with PacketData.ChecksumAtOffset, whose offset counts from the
// buffer's start, passing an offset into the data: it summed the wrong
// bytes, and not one segment from the link was ever merged (the fix
// TCP's checksum of a merged segment in DeliverNetworkPacket had the same
// error). A segment with a bad checksum in the run goes up on its own,
// unchanged, for TCP to drop: it is neither merged nor given a fresh
// checksum.
func TestGROChecksumOffsets(t *testing.T) {
	const mss = 1000
	up := &upRecorder{}
	rx := rxBatchPool.Get().(*rxBatch)
	rx.up, rx.fixTCP = up, true
	defer func() { rx.up = nil; rxBatchPool.Put(rx) }()
	var frames [][]byte
	for i := range 4 {
		frames = append(frames, tcpFrame(uint32(1+i*mss), mss, false))
	}
	frames = append(frames, tcpFrame(uint32(1+4*mss), mss, true))
	for _, f := range frames {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(f)})
		if _, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize); !ok {
			t.Fatal("no link header")
		}
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		rx.enqueue(pkt)
		pkt.DecRef()
	}
	rx.gro.Flush()
	if len(up.pkts) != 2 {
		t.Fatalf("%d packets went up, want 2 (the 4 good segments merged, the bad one alone)", len(up.pkts))
	}
	var merged, bad []byte
	for _, p := range up.pkts {
		if len(p) == 40+4*mss {
			merged = p
		} else {
			bad = p
		}
	}
	if merged == nil {
		t.Fatalf("no merged segment of %d bytes: got lengths %d and %d", 40+4*mss, len(up.pkts[0]), len(up.pkts[1]))
	}
	if !refTCPv4Valid(merged) {
		t.Errorf("merged segment's TCP checksum is wrong")
	}
	if want := frames[4][14:]; string(bad) != string(want) {
		t.Errorf("segment with a bad checksum went up changed:\n got %x\nwant %x", bad, want)
	}
}
