package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// injector sits between the AF_PACKET link and the capture: Inject hands
// an Ethernet frame to the stack as if it had arrived on the wire (and the
// capture records it). Replays and scapy's packets enter this way.
type injector struct {
	nested.Endpoint
	mu sync.Mutex
	d  gstack.NetworkDispatcher
}

func newInjector(lower gstack.LinkEndpoint) *injector {
	i := &injector{}
	i.Endpoint.Init(lower, i)
	return i
}

// Attach implements stack.LinkEndpoint.
func (i *injector) Attach(d gstack.NetworkDispatcher) {
	i.mu.Lock()
	i.d = d
	i.mu.Unlock()
	i.Endpoint.Attach(d)
}

// Inject delivers frame (Ethernet) upwards.
func (i *injector) Inject(frame []byte) error {
	i.mu.Lock()
	d := i.d
	i.mu.Unlock()
	if d == nil {
		return errors.New("inject: not attached")
	}
	if len(frame) < header.EthernetMinimumSize {
		return errors.New("inject: short frame")
	}
	proto := header.Ethernet(frame).Type()
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(append([]byte(nil), frame...))})
	defer pkt.DecRef()
	if _, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize); !ok {
		return errors.New("inject: cannot consume the Ethernet header")
	}
	pkt.NetworkProtocolNumber = proto
	d.DeliverNetworkPacket(proto, pkt)
	return nil
}

// rawSender writes frames on the TAP towards the guest (an AF_PACKET
// socket that receives nothing).
type rawSender struct{ fd int }

func newRawSender(ifname string) (*rawSender, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("AF_PACKET bind %s: %w", ifname, err)
	}
	return &rawSender{fd: fd}, nil
}

func (r *rawSender) Send(frame []byte) error {
	_, err := unix.Write(r.fd, frame)
	return err
}

func (r *rawSender) Close() { unix.Close(r.fd) }

// ethFrame prepends an Ethernet header to an IP packet.
func ethFrame(dst, src tcpip.LinkAddress, ip []byte) []byte {
	f := make([]byte, header.EthernetMinimumSize+len(ip))
	et := header.IPv6ProtocolNumber
	if ip[0]>>4 == 4 {
		et = header.IPv4ProtocolNumber
	}
	header.Ethernet(f).Encode(&header.EthernetFields{SrcAddr: src, DstAddr: dst, Type: et})
	copy(f[header.EthernetMinimumSize:], ip)
	return f
}

// frameInfo is what the checks need of a captured frame.
type frameInfo struct {
	src, dst netip.Addr
	// proto is the first upper-layer protocol after hop-by-hop and
	// destination options (ESP, AH, ICMPv6, ...); frag marks a fragment.
	proto uint8
	frag  bool
	// icmpType is the ICMPv6 type when proto is ICMPv6.
	icmpType uint8
	// spi of ESP/AH.
	spi uint32
	// encap marks ESP in UDP (RFC 3948: UDP from or to port 4500 whose
	// first four bytes, the SPI, are not zero); spi is then ESP's.
	encap bool
	// sport and dport are the UDP ports.
	sport, dport uint16
}

// parseFrame parses the IP part of an Ethernet frame; ok is false for
// non-IP frames.
func parseFrame(fr []byte) (fi frameInfo, ok bool) {
	if len(fr) < 14 {
		return fi, false
	}
	ip := fr[14:]
	var off int
	switch binary.BigEndian.Uint16(fr[12:]) {
	case 0x0800:
		if len(ip) < 20 {
			return fi, false
		}
		fi.src, _ = netip.AddrFromSlice(ip[12:16])
		fi.dst, _ = netip.AddrFromSlice(ip[16:20])
		fi.proto = ip[9]
		fo := binary.BigEndian.Uint16(ip[6:])
		fi.frag = fo&0x3fff != 0
		off = int(ip[0]&0xf) * 4
	case 0x86dd:
		if len(ip) < 40 {
			return fi, false
		}
		fi.src, _ = netip.AddrFromSlice(ip[8:24])
		fi.dst, _ = netip.AddrFromSlice(ip[24:40])
		nh := ip[6]
		off = 40
		for (nh == 0 || nh == 60 || nh == 44) && off+8 <= len(ip) {
			if nh == 44 {
				fi.frag = true
				break
			}
			nh, off = ip[off], off+(int(ip[off+1])+1)*8
		}
		fi.proto = nh
	default:
		return fi, false
	}
	if off+8 <= len(ip) && !fi.frag {
		switch fi.proto {
		case uint8(xfrm.ProtoESP):
			fi.spi = binary.BigEndian.Uint32(ip[off:])
		case uint8(xfrm.ProtoAH):
			fi.spi = binary.BigEndian.Uint32(ip[off+4:])
		case xfrm.ProtoICMPv6:
			fi.icmpType = ip[off]
		case 17: // UDP
			fi.sport, fi.dport = binary.BigEndian.Uint16(ip[off:]), binary.BigEndian.Uint16(ip[off+2:])
			if (fi.sport == 4500 || fi.dport == 4500) && off+16 <= len(ip) {
				if spi := binary.BigEndian.Uint32(ip[off+8:]); spi != 0 {
					fi.encap, fi.spi = true, spi
				}
			}
		}
	}
	return fi, true
}

// extOpts mirrors the guest agent's options header: an immutable option
// (0x1e), a mutable one (0x3e: AH covers it as zeros) and PadN.
func extOpts(next, tag byte) []byte {
	return []byte{next, 1, 0x1e, 2, tag, 0xbb, 0x3e, 4, 0xcc, 0xdd, 0xee, tag, 1, 2, 0, 0}
}

// udp6WithOpts builds IPv6 | hop-by-hop | destination options | UDP.
func udp6WithOpts(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	udpLen := 8 + len(payload)
	b := make([]byte, 40, 40+32+udpLen)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(32+udpLen))
	b[6], b[7] = 0, 64 // next header hop-by-hop
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	b = append(b, extOpts(60, 0xb1)...)
	b = append(b, extOpts(17, 0xb2)...)
	u := make([]byte, udpLen)
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	copy(u[8:], payload)
	// Checksum over the pseudo-header (addresses, length, next header 17).
	var sum uint32
	add := func(p []byte) {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(p[i:]))
		}
		if len(p)%2 == 1 {
			sum += uint32(p[len(p)-1]) << 8
		}
	}
	add(s[:])
	add(d[:])
	add([]byte{0, 0, byte(udpLen >> 8), byte(udpLen), 0, 0, 0, 17})
	add(u)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	cs := ^uint16(sum)
	if cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], cs)
	return append(b, u...)
}
