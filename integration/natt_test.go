package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ipsecstack/ipsecstack/integration/linuxvm"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// NAT traversal against Linux (issue 12): the ESP SAs of both sides go
// inside UDP 4500 (RFC 3948), Linux's `encap espinudp 4500 4500`. The guest
// agent holds a UDP_ENCAP_ESPINUDP socket on 4500 per family, without which
// the kernel would not decapsulate. The cases run in TestLinuxXFRM's matrix
// (group "natt") with its traffic and checks, plus "udpencap": every IPsec
// packet on the wire is ESP in UDP from 4500 to 4500 with a correct UDP
// length and checksum, and tshark dissects every packet of the SAs as
// UDP-encapsulated ESP (udpencap) and checks its ICV.
//
//	go test -count=1 -v -run 'TestLinuxXFRM/natt/' ./integration/

// encapCases are AES-GCM-128 in transport and tunnel mode, IPv4 and IPv6.
func encapCases() []linuxCase {
	var cs []linuxCase
	for _, mf := range []modeFam{transportV4, transportV6, tunnel4in4, tunnel6in6} {
		c := mk("natt", mf, espX(sGCM128))
		c.Encap = true
		cs = append(cs, c)
	}
	return cs
}

// guestEncap is the ip xfrm state's encapsulation of an SA whose outer
// source is src: ESP in UDP 4500 to 4500, no NAT-OA.
func guestEncap(src netip.Addr) string {
	oa := "0.0.0.0"
	if src.Is6() {
		oa = "::"
	}
	return fmt.Sprintf(" encap espinudp %d %d %s", linuxvm.NATTPort, linuxvm.NATTPort, oa)
}

// encapCheck: every IPsec packet between the case's outer addresses, both
// ways, is ESP in UDP 4500 -> 4500 (no plain ESP), each unfragmented one
// with a UDP length matching its IP payload and a correct UDP checksum (or
// zero over IPv4, RFC 3948 §2.1; over IPv6 a zero checksum is refused,
// RFC 8200 §8.1); and tshark dissects each packet of the case's SAs as
// UDP-encapsulated ESP.
func encapCheck(ctx context.Context, tl tools, frames [][]byte, capPath string, c linuxCase) error {
	_, _, sO, gO := c.addrs()
	var n [2]int
	for i, fr := range frames {
		fi, ok := parseFrame(fr)
		if !ok || !(fi.src == sO && fi.dst == gO || fi.src == gO && fi.dst == sO) {
			continue
		}
		switch {
		case fi.proto == uint8(xfrm.ProtoESP):
			return fmt.Errorf("frame %d: plain ESP (SPI %#x) from %v to %v, want ESP in UDP", i+1, fi.spi, fi.src, fi.dst)
		case fi.frag:
			continue // fragments of a UDP datagram (checked whole by tshark)
		case fi.proto != 17:
			continue // NDP/MLD in clear is clearFrames' business
		}
		if !fi.encap || fi.sport != linuxvm.NATTPort || fi.dport != linuxvm.NATTPort {
			return fmt.Errorf("frame %d: UDP %d -> %d from %v (encap %v), want ESP in UDP 4500 -> 4500", i+1, fi.sport, fi.dport, fi.src, fi.encap)
		}
		if err := checkUDP(fr[14:]); err != nil {
			return fmt.Errorf("frame %d from %v: %v", i+1, fi.src, err)
		}
		if fi.src == sO {
			n[0]++
		} else {
			n[1]++
		}
	}
	if n[0] < 10 || n[1] < 10 {
		return fmt.Errorf("only %d (stack -> guest) and %d (guest -> stack) ESP-in-UDP packets", n[0], n[1])
	}
	if tl.tshark == "" {
		return nil
	}
	// tshark dissects UDP 4500 as udpencap; ask it for the protocol stack
	// of every packet with an ESP SPI of the case.
	args := []string{"-n", "-r", capPath, "-Y", "esp", "-T", "fields", "-E", "separator=|",
		"-e", "frame.number", "-e", "frame.protocols", "-e", "esp.spi"}
	cmd := exec.CommandContext(ctx, tl.tshark, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("tshark: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	spis := map[string]bool{
		fmt.Sprintf("0x%08x", spiOut(xfrm.ProtoESP)): true,
		fmt.Sprintf("0x%08x", spiIn(xfrm.ProtoESP)):  true,
	}
	total := 0
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(l, "|")
		if len(f) != 3 || !spis[f[2]] {
			continue
		}
		total++
		if !strings.Contains(f[1], ":udp:udpencap:esp") {
			return fmt.Errorf("tshark: frame %s (SPI %s) dissected as %s, want …:udp:udpencap:esp", f[0], f[2], f[1])
		}
	}
	if total < 20 {
		return fmt.Errorf("tshark saw only %d ESP-in-UDP packets of the case's SAs", total)
	}
	return nil
}

// checkUDP checks the UDP header of an unfragmented IPv4 or IPv6 packet
// without extension headers: its length is the IP payload's, and its
// checksum verifies (RFC 768, RFC 8200 §8.1 pseudo-header), zero allowed
// over IPv4 only. Written here from the RFCs, not shared with the stack.
func checkUDP(ip []byte) error {
	var pseudo []byte
	var udp []byte
	switch ip[0] >> 4 {
	case 4:
		ihl := int(ip[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		if tot > len(ip) || ihl+8 > tot {
			return fmt.Errorf("IPv4 total length %d of %d bytes", tot, len(ip))
		}
		udp = ip[ihl:tot]
		pseudo = append(append([]byte{}, ip[12:20]...), 0, 17, byte(len(udp)>>8), byte(len(udp)))
	case 6:
		pl := int(binary.BigEndian.Uint16(ip[4:]))
		if 40+pl > len(ip) || ip[6] != 17 || pl < 8 {
			return fmt.Errorf("IPv6 payload length %d of %d bytes, next header %d", pl, len(ip), ip[6])
		}
		udp = ip[40 : 40+pl]
		pseudo = append(append([]byte{}, ip[8:40]...), 0, 0, byte(len(udp)>>8), byte(len(udp)), 0, 0, 0, 17)
	}
	if ul := int(binary.BigEndian.Uint16(udp[4:])); ul != len(udp) {
		return fmt.Errorf("UDP length %d, IP payload %d", ul, len(udp))
	}
	ck := binary.BigEndian.Uint16(udp[6:])
	if ck == 0 {
		if ip[0]>>4 == 6 {
			return fmt.Errorf("UDP checksum zero over IPv6")
		}
		return nil
	}
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(pseudo)
	add(udp)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		return fmt.Errorf("UDP checksum %#04x does not verify (sum %#04x), header %x", ck, sum, udp[:8])
	}
	return nil
}

// TestCheckUDP: encapCheck's UDP check against packets whose checksum
// gVisor's header package computes (a second implementation of RFC 768),
// and their corruptions.
func TestCheckUDP(t *testing.T) {
	build := func(v6 bool, payload []byte, zeroSum bool) []byte {
		src, dst := stack4, guest4
		if v6 {
			src, dst = stack6, guest6
		}
		ulen := header.UDPMinimumSize + len(payload)
		var ip []byte
		if v6 {
			ip = make([]byte, header.IPv6MinimumSize+ulen)
			header.IPv6(ip).Encode(&header.IPv6Fields{PayloadLength: uint16(ulen), TransportProtocol: header.UDPProtocolNumber,
				HopLimit: 64, SrcAddr: tcpip.AddrFrom16(src.As16()), DstAddr: tcpip.AddrFrom16(dst.As16())})
		} else {
			ip = make([]byte, header.IPv4MinimumSize+ulen)
			header.IPv4(ip).Encode(&header.IPv4Fields{TotalLength: uint16(len(ip)), Protocol: uint8(header.UDPProtocolNumber),
				TTL: 64, SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
		}
		u := header.UDP(ip[len(ip)-ulen:])
		u.Encode(&header.UDPFields{SrcPort: 4500, DstPort: 4500, Length: uint16(ulen)})
		copy(u.Payload(), payload)
		if !zeroSum {
			x := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpip.AddrFromSlice(src.AsSlice()), tcpip.AddrFromSlice(dst.AsSlice()), uint16(ulen))
			x = checksum.Checksum(payload, x)
			u.SetChecksum(^u.CalculateChecksum(x))
		}
		return ip
	}
	esp := []byte{0, 0, 0x10, 0x32, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0x55}
	for _, c := range []struct {
		name string
		ip   []byte
		ok   bool
	}{
		{"IPv4 with checksum", build(false, esp, false), true},
		{"IPv4 zero checksum", build(false, esp, true), true},
		{"IPv6 with checksum", build(true, esp, false), true},
		{"IPv6 zero checksum", build(true, esp, true), false},
		{"IPv6 corrupted payload", func() []byte { b := build(true, esp, false); b[len(b)-1] ^= 1; return b }(), false},
		{"IPv4 corrupted payload", func() []byte { b := build(false, esp, false); b[len(b)-2] ^= 0x80; return b }(), false},
		{"IPv4 UDP length short", func() []byte {
			b := build(false, esp, true)
			binary.BigEndian.PutUint16(b[24:], 8+4)
			return b
		}(), false},
	} {
		if err := checkUDP(c.ip); (err == nil) != c.ok {
			t.Errorf("%s: checkUDP = %v, want ok %v", c.name, err, c.ok)
		}
	}
}
