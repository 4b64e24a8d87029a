package fdlink

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// A packet socket with PACKET_VNET_HDR carries a struct virtio_net_hdr
// (include/uapi/linux/virtio_net.h) before every frame, both ways. On
// send it lets one frame stand for many (segmentation offload: the
// kernel, or the device, cuts it); on receive it says how a super-frame
// that arrived whole (a GSO frame of a local sender, a GRO merge) is to
// be cut. Packet sockets use the host's byte order for it (vio_le(): the
// legacy virtio rule, little-endian on every host we build for).
const vnetHdrLen = 10

// virtio_net_hdr flags and gso_type values.
const (
	vnetNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum at csum_start+csum_offset not yet computed
	vnetDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID: checksum verified

	vnetGSOUDPL4 = 5 // VIRTIO_NET_HDR_GSO_UDP_L4: gso_size-byte UDP payloads, one datagram each
	vnetGSOECN   = 0x80
)

// vnetHdr is a decoded virtio_net_hdr.
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	h.flags, h.gsoType = b[0], b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h *vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// udpGSOMaxSegs is the most datagrams one GSO frame carries. The kernel
// refuses more than UDP_MAX_SEGMENTS (64 before 6.3, 128 since); 64 also
// keeps a frame of 1.4 KiB datagrams under the 64 KiB an IP length holds.
const udpGSOMaxSegs = 64

// udpFlow describes the headers of an Ethernet frame holding one UDP
// datagram in an unfragmented IPv4 packet without options or an IPv6
// packet without extension headers: the frames the writer may merge.
type udpFlow struct {
	ipLen   int // IP header length: 20 or 40
	payload int // UDP payload bytes
}

// udpHdrsLen is the length of the Ethernet, IP and UDP headers of f.
func (f udpFlow) udpHdrsLen() int {
	return header.EthernetMinimumSize + f.ipLen + header.UDPMinimumSize
}

// parseUDPFrame reports whether the frame whose first bytes are head (at
// least udpHeadMax of them, or the whole frame) and whose length is size
// is a UDP datagram the writer may merge, and its shape.
func parseUDPFrame(head []byte, size int) (udpFlow, bool) {
	const eth = header.EthernetMinimumSize
	if len(head) < eth+header.IPv4MinimumSize+header.UDPMinimumSize {
		return udpFlow{}, false
	}
	switch header.Ethernet(head).Type() {
	case header.IPv4ProtocolNumber:
		ip := header.IPv4(head[eth:])
		if ip[0] != 0x45 || ip.Protocol() != uint8(header.UDPProtocolNumber) ||
			ip.More() || ip.FragmentOffset() != 0 || int(ip.TotalLength()) != size-eth {
			return udpFlow{}, false
		}
		u := header.UDP(head[eth+header.IPv4MinimumSize:])
		if int(u.Length()) != size-eth-header.IPv4MinimumSize || u.Length() <= header.UDPMinimumSize {
			return udpFlow{}, false
		}
		return udpFlow{ipLen: header.IPv4MinimumSize, payload: int(u.Length()) - header.UDPMinimumSize}, true
	case header.IPv6ProtocolNumber:
		if len(head) < eth+header.IPv6MinimumSize+header.UDPMinimumSize {
			return udpFlow{}, false
		}
		ip := header.IPv6(head[eth:])
		if ip[0]>>4 != 6 || ip.NextHeader() != uint8(header.UDPProtocolNumber) ||
			int(ip.PayloadLength()) != size-eth-header.IPv6MinimumSize {
			return udpFlow{}, false
		}
		u := header.UDP(head[eth+header.IPv6MinimumSize:])
		if int(u.Length()) != int(ip.PayloadLength()) || u.Length() <= header.UDPMinimumSize {
			return udpFlow{}, false
		}
		return udpFlow{ipLen: header.IPv6MinimumSize, payload: int(u.Length()) - header.UDPMinimumSize}, true
	}
	return udpFlow{}, false
}

// udpHeadMax is the most header bytes parseUDPFrame and sameUDPFlow read.
const udpHeadMax = header.EthernetMinimumSize + header.IPv6MinimumSize + header.UDPMinimumSize

// sameUDPFlow reports whether frames a and b (both passed parseUDPFrame
// with the IP header length ipLen) may be one GSO frame: the kernel gives
// every segment the first one's headers, so everything but the fields it
// rewrites per segment (IP length, ID and checksum; UDP length and
// checksum) must be equal.
func sameUDPFlow(a, b []byte, ipLen int) bool {
	const eth = header.EthernetMinimumSize
	if string(a[:eth]) != string(b[:eth]) {
		return false
	}
	ia, ib := a[eth:eth+ipLen], b[eth:eth+ipLen]
	if ipLen == header.IPv4MinimumSize {
		// Version/IHL and TOS; flags and fragment offset; TTL and
		// protocol; addresses.
		if ia[0] != ib[0] || ia[1] != ib[1] || string(ia[6:10]) != string(ib[6:10]) || string(ia[12:20]) != string(ib[12:20]) {
			return false
		}
	} else if string(ia[0:4]) != string(ib[0:4]) || string(ia[6:40]) != string(ib[6:40]) {
		// Version, traffic class and flow label; next header, hop
		// limit and addresses.
		return false
	}
	ua, ub := a[eth+ipLen:], b[eth+ipLen:]
	return string(ua[0:4]) == string(ub[0:4]) // ports
}

// gsoHeaders rewrites hdrs, a copy of the first datagram's Ethernet, IP
// and UDP headers, into the headers of a GSO frame of total UDP payload
// bytes, and returns its virtio_net_hdr: UDP_L4 with segments of segSize
// bytes and the UDP checksum left to the kernel (NEEDS_CSUM, the field
// holding the pseudo-header sum as a device expects it). The kernel
// writes each segment's IP length, ID and checksum and UDP length and
// checksum itself (__udp_gso_segment, inet_gso_segment).
func gsoHeaders(hdrs []byte, f udpFlow, total, segSize int) vnetHdr {
	const eth = header.EthernetMinimumSize
	setUDPLengths(hdrs, f.ipLen, total)
	u := header.UDP(hdrs[eth+f.ipLen:])
	var src, dst tcpip.Address
	if f.ipLen == header.IPv4MinimumSize {
		ip := header.IPv4(hdrs[eth:])
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	} else {
		ip := header.IPv6(hdrs[eth:])
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	}
	u.SetChecksum(header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, u.Length()))
	return vnetHdr{
		flags:      vnetNeedsCsum,
		gsoType:    vnetGSOUDPL4,
		hdrLen:     uint16(f.udpHdrsLen()),
		gsoSize:    uint16(segSize),
		csumStart:  uint16(eth + f.ipLen),
		csumOffset: 6, // offsetof(struct udphdr, check)
	}
}

// segmentHeaders rewrites hdrs, the Ethernet, IP and UDP headers of a
// received UDP GSO frame, into those of one of its segments, of payload
// bytes. An IPv4 segment gets no UDP checksum (0, RFC 768); an IPv6
// one's is left as it came (partial) for the caller to finish or not: a
// GSO frame comes from a local sender that left the sums to the device.
func segmentHeaders(hdrs []byte, ipLen, payload int) {
	setUDPLengths(hdrs, ipLen, payload)
	if ipLen == header.IPv4MinimumSize {
		header.UDP(hdrs[header.EthernetMinimumSize+ipLen:]).SetChecksum(0)
	}
}

// setUDPLengths sets the UDP and IP lengths in hdrs, the Ethernet, IP
// (header length ipLen) and UDP headers of a datagram of payload bytes,
// and an IPv4 header's checksum.
func setUDPLengths(hdrs []byte, ipLen, payload int) {
	const eth = header.EthernetMinimumSize
	udpLen := uint16(header.UDPMinimumSize + payload)
	header.UDP(hdrs[eth+ipLen:]).SetLength(udpLen)
	if ipLen == header.IPv4MinimumSize {
		ip := header.IPv4(hdrs[eth:])
		ip.SetTotalLength(uint16(ipLen) + udpLen)
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return
	}
	header.IPv6(hdrs[eth:]).SetPayloadLength(udpLen)
}
