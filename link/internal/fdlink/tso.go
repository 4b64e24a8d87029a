package fdlink

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// virtio_net_hdr gso_type values of TCP segmentation offload: a frame
// holding one TCP segment of up to 64 KiB, to be cut into segments of
// gso_size payload bytes.
const (
	vnetGSOTCPv4 = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	vnetGSOTCPv6 = 4 // VIRTIO_NET_HDR_GSO_TCPV6
)

// tcpFlow describes the headers of a received TSO frame: an unfragmented
// IPv4 packet (options allowed) or an IPv6 packet without extension
// headers, holding one TCP segment.
type tcpFlow struct {
	l2, ipLen, tcpLen int // link, IP and TCP header lengths
}

// hdrsLen is the length of all of f's headers, the link's included.
func (f tcpFlow) hdrsLen() int { return f.l2 + f.ipLen + f.tcpLen }

// parseTCPFrame reports whether the frame whose first bytes are head (all
// of its headers at least) and whose length is size is a TCP segment a
// TSO frame may hold, after l2 bytes of link header, and its shape.
func parseTCPFrame(head []byte, size, l2 int) (tcpFlow, bool) {
	if len(head) < l2+header.IPv4MinimumSize {
		return tcpFlow{}, false
	}
	ipb := head[l2:]
	f := tcpFlow{l2: l2}
	switch ipb[0] >> 4 {
	case 4:
		ip := header.IPv4(ipb)
		f.ipLen = int(ip.HeaderLength())
		if f.ipLen < header.IPv4MinimumSize || ip.Protocol() != uint8(header.TCPProtocolNumber) ||
			ip.More() || ip.FragmentOffset() != 0 || int(ip.TotalLength()) != size-l2 {
			return tcpFlow{}, false
		}
	case 6:
		if len(ipb) < header.IPv6MinimumSize {
			return tcpFlow{}, false
		}
		ip := header.IPv6(ipb)
		f.ipLen = header.IPv6MinimumSize
		if ip.NextHeader() != uint8(header.TCPProtocolNumber) || int(ip.PayloadLength()) != size-l2-f.ipLen {
			return tcpFlow{}, false
		}
	default:
		return tcpFlow{}, false
	}
	if len(head) < l2+f.ipLen+header.TCPMinimumSize {
		return tcpFlow{}, false
	}
	f.tcpLen = int(header.TCP(head[l2+f.ipLen:]).DataOffset())
	if f.tcpLen < header.TCPMinimumSize || len(head) < f.hdrsLen() || size <= f.hdrsLen() {
		return tcpFlow{}, false
	}
	return f, true
}

// tcpSegmentHeaders rewrites hdrs, a copy of the headers of a TSO frame of
// shape f, into those of its segment that starts off payload bytes into
// the frame and holds n of them (last: the frame's last segment), as the
// kernel's tcp_gso_segment and inet_gso_segment do: the sequence number
// advanced by off; FIN and PSH on the last segment only, CWR on the first
// only; the IP length, an IPv4 ID advanced by the segment's index and the
// IPv4 header checksum rewritten. The TCP checksum is the caller's
// (tcpSegmentChecksum), once the payload is in place.
func tcpSegmentHeaders(hdrs []byte, f tcpFlow, off, index, n int, last bool) {
	ipb := hdrs[f.l2:]
	tcp := header.TCP(ipb[f.ipLen:])
	tcp.SetSequenceNumber(tcp.SequenceNumber() + uint32(off))
	flags := tcp.Flags()
	if !last {
		flags &^= header.TCPFlagFin | header.TCPFlagPsh
	}
	if index > 0 {
		flags &^= header.TCPFlagCwr
	}
	tcp.SetFlags(uint8(flags))
	if f.ipLen >= header.IPv4MinimumSize && ipb[0]>>4 == 4 {
		ip := header.IPv4(ipb)
		ip.SetTotalLength(uint16(f.ipLen + f.tcpLen + n))
		ip.SetID(ip.ID() + uint16(index))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return
	}
	header.IPv6(ipb).SetPayloadLength(uint16(f.tcpLen + n))
}

// tcpSegmentChecksum writes the TCP checksum of seg, a whole segment
// (link header included) of shape f: pseudo-header, TCP header and
// payload.
func tcpSegmentChecksum(seg []byte, f tcpFlow) {
	ipb := seg[f.l2:]
	l4 := ipb[f.ipLen:]
	binary.BigEndian.PutUint16(l4[16:], 0)
	binary.BigEndian.PutUint16(l4[16:], ^checksum.Checksum(l4, tcpPseudoSum(ipb, len(l4))))
}

// tcpPseudoSum is the pseudo-header checksum of a TCP segment of l4len
// bytes after the IPv4 or IPv6 header ip.
func tcpPseudoSum(ip []byte, l4len int) uint16 {
	if ip[0]>>4 == 4 {
		h := header.IPv4(ip)
		return header.PseudoHeaderChecksum(header.TCPProtocolNumber, h.SourceAddress(), h.DestinationAddress(), uint16(l4len))
	}
	h := header.IPv6(ip)
	return header.PseudoHeaderChecksum(header.TCPProtocolNumber, h.SourceAddress(), h.DestinationAddress(), uint16(l4len))
}
