package stack

import (
	"encoding/binary"
	"testing"

	"github.com/ipsecstack/ipsecstack/link/memlink"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// tcpSum verifies a TCP checksum the long way (RFC 1071, RFC 9293 §3.1),
// for the fuzz target's property.
func tcpSum(ip []byte) (ok, isTCP bool) {
	var pseudo []byte
	var tcp []byte
	switch {
	case len(ip) >= 20 && ip[0]>>4 == 4 && ip[9] == 6 && binary.BigEndian.Uint16(ip[6:8])&0x3fff == 0:
		ihl := int(ip[0]&0xf) * 4
		end := int(binary.BigEndian.Uint16(ip[2:4]))
		if ihl < 20 || end > len(ip) || end < ihl {
			return false, false
		}
		tcp = ip[ihl:end]
		pseudo = append(append([]byte(nil), ip[12:20]...), 0, 6, byte(len(tcp)>>8), byte(len(tcp)))
	case len(ip) >= 40 && ip[0]>>4 == 6 && ip[6] == 6:
		end := 40 + int(binary.BigEndian.Uint16(ip[4:6]))
		if end > len(ip) {
			return false, false
		}
		tcp = ip[40:end]
		pseudo = append(append([]byte(nil), ip[8:40]...), 0, 0, byte(len(tcp)>>8), byte(len(tcp)), 0, 0, 0, 6)
	default:
		return false, false
	}
	var s uint32
	for _, b := range [][]byte{pseudo, tcp} {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			s += uint32(b[len(b)-1]) << 8
		}
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return s == 0xffff, true
}

// FuzzClampMSS: whatever the TCP options of a forwarded packet, MSS
// clamping neither panics, nor breaks a checksum that was right (RFC
// 1624's incremental update), nor changes anything but the checksum and
// the options.
func FuzzClampMSS(f *testing.F) {
	eng := xfrm.NewEngine()
	defer eng.Close()
	l, _ := memlink.NewPair("\x02\x00\x00\x00\x00\x01", "\x02\x00\x00\x00\x00\x02", 1400)
	e := NewEndpoint(l, eng)
	e.fwd = &forwarder{clampMSS: true}
	syn := make([]byte, 20+28)
	syn[0], syn[8], syn[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(syn[2:], uint16(len(syn)))
	copy(syn[12:], []byte{10, 1, 0, 2, 10, 2, 0, 2})
	tcp := syn[20:]
	tcp[12], tcp[13] = 7<<4, 0x02
	copy(tcp[20:], []byte{2, 4, 0x05, 0xb4, 1, 3, 3, 7})
	var s uint32
	for _, b := range [][]byte{syn[12:20], {0, 6, 0, byte(len(tcp))}, tcp} {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	binary.BigEndian.PutUint16(tcp[16:], ^uint16(s))
	f.Add(syn)
	clamped := append([]byte(nil), syn...)
	e.clampMSS(clamped)
	if mss := binary.BigEndian.Uint16(clamped[20+22:]); mss != 1400-40 {
		f.Fatalf("seed: MSS %d after clamping to a 1400-byte path, want 1360", mss)
	}
	f.Fuzz(func(t *testing.T, ip []byte) {
		var fl xfrm.Flow
		if _, err := xfrm.ParseFlow(ip, &fl); err != nil || fl.Proto != xfrm.ProtoTCP || fl.Opaque {
			return
		}
		before, isTCP := tcpSum(ip)
		orig := append([]byte(nil), ip...)
		e.clampMSS(ip)
		if after, _ := tcpSum(ip); isTCP && before && !after {
			t.Fatalf("clamping broke the checksum:\n%x\n%x", orig, ip)
		}
		l4 := 40
		if ip[0]>>4 == 4 {
			l4 = int(ip[0]&0xf) * 4
		}
		// Only the checksum and the options may change.
		if len(ip) < l4+20 {
			if string(ip) != string(orig) {
				t.Fatalf("clamping changed a packet too short for a TCP header")
			}
			return
		}
		if string(ip[:l4+16]) != string(orig[:l4+16]) || string(ip[l4+18:l4+20]) != string(orig[l4+18:l4+20]) {
			t.Fatalf("clamping changed more than the checksum and options:\n%x\n%x", orig, ip)
		}
	})
}
