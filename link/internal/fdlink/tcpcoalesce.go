package fdlink

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ipsecstack/ipsecstack/link/frame"
)

// The writer of an L3 link (a TUN gateway's) sends each run of
// consecutive in-order TCP segments of one flow as one TSO frame
// (VIRTIO_NET_HDR_GSO_TCPV4/6): the host's TCP then takes one segment of
// up to 64 KiB instead of some forty, as if its GRO had merged them. The
// run follows the rules of Linux's tcp_gro_receive, so that the host
// sees the bytes, order and flags it would have seen: one flow (the same
// IP header but for length, ID and checksum; the same ports, ACK, window
// and options), sequence numbers that continue one another, segments of
// the first one's size but the last, which may be shorter, and only ACK
// set, PSH allowed on the last. Every segment's TCP checksum is verified
// before it joins a run (a forwarded segment's never was), so that the
// merged frame's, left to the host as a device's would be (NEEDS_CSUM),
// covers only data its sender summed.

// tcpHeadMax is the most header bytes tcpRun reads: an IPv4 header with
// options or an IPv6 header, and a TCP header with options.
const tcpHeadMax = 60 + 60

// tcpSeg is what tcpRun reads of one segment.
type tcpSeg struct {
	f       tcpFlow
	payload int
	seq     uint32
	flags   header.TCPFlags
	// last: of the first segment of a run (tcpRun), the flags of the
	// run's last, which the merged frame carries (PSH).
	last header.TCPFlags
}

// readTCPSeg reads the segment in frame fr whose first bytes are head.
func readTCPSeg(head []byte, fr *frame.Frame) (tcpSeg, bool) {
	size := fr.Size()
	f, ok := parseTCPFrame(head, size, 0)
	if !ok {
		return tcpSeg{}, false
	}
	tcp := header.TCP(head[f.ipLen:])
	return tcpSeg{f: f, payload: size - f.hdrsLen(), seq: tcp.SequenceNumber(), flags: tcp.Flags()}, true
}

// sameTCPFlow reports whether the segments whose headers are a and b
// (the same shape f) may be one TSO frame: everything but the IP length,
// ID and checksum, and the TCP sequence number, flags and checksum, is
// equal.
func sameTCPFlow(a, b []byte, f tcpFlow) bool {
	ia, ib := a[:f.ipLen], b[:f.ipLen]
	if f.ipLen == header.IPv6MinimumSize && a[0]>>4 == 6 {
		if string(ia[0:4]) != string(ib[0:4]) || string(ia[6:40]) != string(ib[6:40]) {
			return false
		}
	} else if ia[0] != ib[0] || ia[1] != ib[1] || string(ia[6:10]) != string(ib[6:10]) || string(ia[12:]) != string(ib[12:]) {
		return false
	}
	ta, tb := a[f.ipLen:f.hdrsLen()], b[f.ipLen:f.hdrsLen()]
	return string(ta[0:4]) == string(tb[0:4]) && // ports
		string(ta[8:12]) == string(tb[8:12]) && // ACK
		ta[12] == tb[12] && // data offset
		string(ta[14:16]) == string(tb[14:16]) && // window
		string(ta[18:]) == string(tb[18:]) // urgent pointer, options
}

// mergeableFlags: what a segment of a run may have set; PSH ends the run.
const mergeableFlags = header.TCPFlagAck | header.TCPFlagPsh

// tcpRun returns how many frames from the head of pkts make one TSO
// frame (1: send the first as it is), and the first one's shape, with
// the last one's flags. The first one's head is left in b.first, for
// addTSOFrame.
func (b *txBatch) tcpRun(pkts []frame.Frame) (int, tcpSeg) {
	if len(pkts) < 2 {
		return 1, tcpSeg{}
	}
	first, ok := b.head(0, &pkts[0], tcpHeadMax, header.IPv4MinimumSize+header.TCPMinimumSize)
	if !ok {
		return 1, tcpSeg{}
	}
	s, ok := readTCPSeg(first, &pkts[0])
	if !ok || s.payload == 0 || s.flags != header.TCPFlagAck || !tcpChecksumOK(first, &pkts[0], s.f) {
		return 1, tcpSeg{}
	}
	b.first = first
	s.last = s.flags
	limit := 0xffff - s.f.ipLen - s.f.tcpLen // an IP length field's worth of TCP payload
	total, next, n := s.payload, s.seq+uint32(s.payload), 1
	for n < len(pkts) {
		h, ok := b.head(1, &pkts[n], tcpHeadMax, header.IPv4MinimumSize+header.TCPMinimumSize)
		if !ok {
			break
		}
		g, ok := readTCPSeg(h, &pkts[n])
		if !ok || g.f != s.f || g.seq != next || g.payload == 0 || g.payload > s.payload || total+g.payload > limit ||
			g.flags&^mergeableFlags != 0 || g.flags&header.TCPFlagAck == 0 || !sameTCPFlow(first, h, s.f) || !tcpChecksumOK(h, &pkts[n], g.f) {
			break
		}
		total += g.payload
		next += uint32(g.payload)
		s.last = g.flags
		n++
		if g.payload < s.payload || g.flags&header.TCPFlagPsh != 0 {
			break // a short segment or PSH ends a run, as in GRO
		}
	}
	return n, s
}

// tcpChecksumOK verifies the TCP checksum of the segment in fr (shape
// f, no link header) whose first bytes are head.
func tcpChecksumOK(head []byte, fr *frame.Frame, f tcpFlow) bool {
	var sum uint16
	if fr.Bytes != nil {
		sum = checksum.Checksum(fr.Bytes[f.ipLen:], 0)
	} else {
		// ChecksumAtOffset counts its offset from the start of the
		// packet's buffer, where the packet starts past its headroom.
		sum = fr.Packet.Data().ChecksumAtOffset(fr.Packet.AvailableHeaderBytes() + f.ipLen)
	}
	return checksum.Combine(tcpPseudoSum(head, fr.Size()-f.ipLen), sum) == 0xffff
}

// addTSOFrame adds pkts, a run tcpRun found, as one TSO frame: the first
// segment's headers with the whole run's length and the last one's flags
// (PSH), then every segment's payload in order. The checksum is left to
// the host as to a device: the field holds the pseudo-header sum
// (NEEDS_CSUM).
func (b *txBatch) addTSOFrame(pkts []frame.Frame, s tcpSeg) {
	f := s.f
	hdrs, total := b.mergedHeaders(pkts, f.hdrsLen())
	tcp := header.TCP(hdrs[f.ipLen:])
	tcp.SetFlags(uint8(s.last))
	l4len := f.tcpLen + total
	gsoType := uint8(vnetGSOTCPv6)
	if hdrs[0]>>4 == 4 {
		gsoType = vnetGSOTCPv4
		ip := header.IPv4(hdrs)
		ip.SetTotalLength(uint16(f.ipLen + l4len))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
	} else {
		header.IPv6(hdrs).SetPayloadLength(uint16(l4len))
	}
	binary.BigEndian.PutUint16(tcp[16:], tcpPseudoSum(hdrs, l4len))
	b.addMerged(vnetHdr{flags: vnetNeedsCsum, gsoType: gsoType, hdrLen: uint16(len(hdrs)), gsoSize: uint16(s.payload),
		csumStart: uint16(f.ipLen), csumOffset: 16}, hdrs, pkts)
}
