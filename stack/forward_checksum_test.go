package stack

import (
	"encoding/binary"
	"testing"
)

// rfc1071 is the Internet checksum computed the plain way (RFC 1071
// §4.1), independent of gVisor's checksum package.
func rfc1071(parts ...[]byte) uint16 {
	var sum uint32
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// ipv4Packet builds an IPv4 datagram (IHL 5) carrying l4 with protocol
// proto, from 10.1.0.2 to 10.2.0.2, with the given flags/offset word.
func ipv4Packet(proto byte, fragWord uint16, l4 []byte) []byte {
	ip := make([]byte, 20+len(l4))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[6:], fragWord)
	ip[8], ip[9] = 64, proto
	copy(ip[12:], []byte{10, 1, 0, 2, 10, 2, 0, 2})
	copy(ip[20:], l4)
	return ip
}

// TestFillTransportChecksum4: a TCP or UDP segment forwarded with the
// checksum a veth left to offload (only the pseudo-header sum, Linux's
// CHECKSUM_PARTIAL) leaves with its full checksum, as the Linux 6.1
// guest of TestLinuxGateway requires (it dropped every TCP segment
// before); fragments and UDP without a checksum are left alone.
func TestFillTransportChecksum4(t *testing.T) {
	payload := []byte("forwarded by a gateway whose host left the checksum to offload")
	tcp := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5001)
	tcp[12], tcp[13] = 5<<4, 0x18
	copy(tcp[20:], payload)
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 5001)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	pseudo := func(proto byte, n int) []byte {
		return []byte{10, 1, 0, 2, 10, 2, 0, 2, 0, proto, byte(n >> 8), byte(n)}
	}
	for _, tc := range []struct {
		name     string
		proto    byte
		l4       []byte
		sumAt    int
		fragWord uint16
		partial  uint16 // what the host left in the field
		want     func(l4 []byte) uint16
	}{
		{"tcp partial", 6, tcp, 16, 0x4000, 0x1234, func(l4 []byte) uint16 {
			c := append([]byte(nil), l4...)
			c[16], c[17] = 0, 0
			return rfc1071(pseudo(6, len(c)), c)
		}},
		{"udp partial", 17, udp, 6, 0, 0x4321, func(l4 []byte) uint16 {
			c := append([]byte(nil), l4...)
			c[6], c[7] = 0, 0
			return rfc1071(pseudo(17, len(c)), c)
		}},
		{"udp without checksum", 17, udp, 6, 0, 0, func([]byte) uint16 { return 0 }},
		{"first fragment", 6, tcp, 16, 0x2000, 0x1234, func([]byte) uint16 { return 0x1234 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l4 := append([]byte(nil), tc.l4...)
			binary.BigEndian.PutUint16(l4[tc.sumAt:], tc.partial)
			ip := ipv4Packet(tc.proto, tc.fragWord, l4)
			fillTransportChecksum4(ip)
			got := binary.BigEndian.Uint16(ip[20+tc.sumAt:])
			if want := tc.want(l4); got != want {
				t.Fatalf("checksum %#04x, want %#04x", got, want)
			}
		})
	}
}
