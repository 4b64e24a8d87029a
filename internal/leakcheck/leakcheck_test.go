package leakcheck

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// Hand-built packets: every header below is laid out from its RFC, with
// no code shared with the stack under test. Checksums are left zero: the
// checker, like a wire observer, does not verify them.

var (
	a6 = netip.MustParseAddr("2001:db8::1")
	b6 = netip.MustParseAddr("2001:db8::2")
	a4 = netip.MustParseAddr("192.0.2.1")
	b4 = netip.MustParseAddr("192.0.2.2")
	x4 = netip.MustParseAddr("198.51.100.1")
	y4 = netip.MustParseAddr("198.51.100.2")
)

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// ip6 is an IPv6 header (RFC 8200 §3) with next header nh before payload.
func ip6(src, dst netip.Addr, nh uint8, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6], b[7] = nh, 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, payload...)
}

// ip4 is an IPv4 header (RFC 791 §3.1) with options opts (a multiple of
// 4 bytes), identification id and fragment offset off (bytes) and MF.
func ip4(src, dst netip.Addr, proto uint8, id uint16, off int, more bool, opts, payload []byte) []byte {
	hl := 20 + len(opts)
	b := make([]byte, hl, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(payload)))
	binary.BigEndian.PutUint16(b[4:], id)
	fo := uint16(off / 8)
	if more {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], fo)
	b[8], b[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], opts)
	return append(b, payload...)
}

// udp is a UDP header (RFC 768) and payload.
func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// frag6 is an IPv6 Fragment header (RFC 8200 §4.5) and fragment data.
func frag6(nh uint8, off int, more bool, id uint32, data []byte) []byte {
	b := make([]byte, 8, 8+len(data))
	b[0] = nh
	fo := uint16(off)
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[2:], fo)
	binary.BigEndian.PutUint32(b[4:], id)
	return append(b, data...)
}

// ext is a uniform-format extension header (RFC 6564 / RFC 8200 §4.3,
// §4.6): next header, length in 8-octet units beyond the first, and PadN
// filling the rest.
func ext(nh uint8, units int, rest []byte) []byte {
	b := make([]byte, (units+1)*8)
	b[0], b[1] = nh, byte(units)
	b[2], b[3] = 1, byte(len(b)-4) // PadN
	return append(b, rest...)
}

// esp is an ESP header (RFC 4303 §2) with random-looking ciphertext.
func esp(spi uint32, n int) []byte {
	b := make([]byte, 8+n)
	binary.BigEndian.PutUint32(b, spi)
	binary.BigEndian.PutUint32(b[4:], 1)
	for i := 8; i < len(b); i++ {
		b[i] = byte(i*131 + 7)
	}
	return b
}

// icmp is an ICMP or ICMPv6 header: type, code, checksum, 4 more bytes.
func icmp(typ, code uint8, rest []byte) []byte {
	return append([]byte{typ, code, 0, 0, 0, 0, 0, 0}, rest...)
}

// fragment6 splits the fragmentable part of an IPv6 datagram (starting
// with header nh) into fragments of at most n bytes (a multiple of 8).
func fragment6(src, dst netip.Addr, nh uint8, id uint32, part []byte, n int) [][]byte {
	var out [][]byte
	for off := 0; off < len(part); off += n {
		end := min(off+n, len(part))
		out = append(out, ip6(src, dst, 44, frag6(nh, off, end < len(part), id, part[off:end])))
	}
	return out
}

func eth(et uint16, ip []byte) []byte {
	f := make([]byte, 14, 14+len(ip))
	copy(f, "\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01")
	binary.BigEndian.PutUint16(f[12:], et)
	return append(f, ip...)
}

// Flows of the vectors: UDP to port 7 from A to B is protected (and its
// answers when Both).
var (
	udp7v6  = Flow{Name: "udp7-v6", Src: host(a6), Dst: host(b6), Proto: protoUDP, DstPort: Exactly(7)}
	udp7v4  = Flow{Name: "udp7-v4", Src: host(a4), Dst: host(b4), Proto: protoUDP, DstPort: Exactly(7)}
	allAB6  = Flow{Name: "all-v6", Src: host(a6), Dst: host(b6), Both: true}
	allAB4  = Flow{Name: "all-v4", Src: host(a4), Dst: host(b4), Both: true}
	ndpPass = Flow{Name: "ndp", Family: 6, Proto: protoICMPv6, ICMPType: Between(133, 137), Clear: true}
)

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + 1)
	}
	return b
}

// bigUDP6 is the fragmentable part of a UDP datagram of more than 64 KiB
// (65508 bytes of IPv6 payload, 65548 on the wire unfragmented).
var bigUDP6 = udp(40000, 7, payload(65500))

func TestClassify(t *testing.T) {
	// Tiny first fragment (RFC 8200 §4.5 allows it; RFC 7112 wants the
	// whole header chain in the first fragment, which this breaks): a
	// Destination Options header is all the first fragment holds, the
	// UDP header comes in the second.
	tinyFirst := ip6(a6, b6, 44, frag6(protoDstOpts, 0, true, 77, ext(protoUDP, 0, nil)))
	tinySecond := func(dport uint16) []byte {
		return ip6(a6, b6, 44, frag6(protoDstOpts, 8, false, 77, udp(40000, dport, payload(40))))
	}
	// The >64 KiB datagram whose first fragment went under ESP (the
	// transport-mode-on-fragments bug, issue 10 finding 3) but whose tail
	// fragments left in clear.
	bigClear := fragment6(a6, b6, protoUDP, 5, bigUDP6, 1232)
	bigMixed := append([][]byte{ip6(a6, b6, 44, frag6(protoESP, 0, true, 5, esp(0x1001, 1224)))}, bigClear[1:]...)
	// The same datagram under ESP, fragmented after ESP (RFC 4301 §7):
	// every fragment carries next header ESP.
	bigESP := fragment6(a6, b6, protoESP, 6, esp(0x1001, len(bigUDP6)), 1232)
	// Router alert (RFC 2113): a 4-byte IPv4 option.
	ra := []byte{0x94, 0x04, 0, 0}
	// The inner IPv4 header of IP-in-IP split over two outer fragments.
	inner := ip4(a4, b4, protoUDP, 9, 0, false, nil, udp(40000, 7, payload(20)))
	innerClear := ip4(a4, b4, protoUDP, 9, 0, false, nil, udp(40000, 9, payload(20)))
	ipip := func(in []byte, id uint16) [][]byte {
		return [][]byte{
			ip4(x4, y4, protoIPIP, id, 0, true, ra, in[:8]),
			ip4(x4, y4, protoIPIP, id, 8, false, ra, in[8:]),
		}
	}
	v4udp := udp(40000, 9, payload(40))
	v4udp7 := udp(40000, 7, payload(40))
	// What B's stack would send after decrypting A's UDP to port 7 with
	// no listener: Port Unreachable quoting the plaintext (RFC 4443 §3.1,
	// RFC 792).
	quoted6 := ip6(a6, b6, protoUDP, udp(40000, 7, payload(100)))
	quoted4 := ip4(a4, b4, protoUDP, 3, 0, false, nil, udp(40000, 7, payload(100)))

	for _, c := range []struct {
		name    string
		flows   []Flow
		packets [][]byte
		flush   bool
		want    []Verdict // per packet
		leaks   int       // findings after Flush (when flush)
		unclass int
	}{
		{name: "udp to a protected port in clear", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(a6, b6, protoUDP, udp(40000, 7, payload(10)))}, want: []Verdict{Leak}, leaks: 1},
		{name: "udp to another port", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(a6, b6, protoUDP, udp(40000, 9, payload(10)))}, want: []Verdict{Clear}},
		{name: "udp in the reverse direction needs Both", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(b6, a6, protoUDP, udp(7, 40000, payload(10)))}, want: []Verdict{Clear}},
		{name: "udp in the reverse direction with Both", flows: []Flow{{Src: host(a6), Dst: host(b6), Proto: protoUDP, DstPort: Exactly(7), Both: true}},
			packets: [][]byte{ip6(b6, a6, protoUDP, udp(7, 40000, payload(10)))}, want: []Verdict{Leak}, leaks: 1},

		// RFC 4303 ESP, RFC 4302 AH, RFC 3173 IPComp, RFC 3948 ESP in UDP.
		{name: "ESP over IPv6", flows: []Flow{allAB6},
			packets: [][]byte{ip6(a6, b6, protoESP, esp(0x1001, 64))}, want: []Verdict{Protected}},
		{name: "ESP over IPv4", flows: []Flow{allAB4},
			packets: [][]byte{ip4(a4, b4, protoESP, 1, 0, false, nil, esp(0x1001, 64))}, want: []Verdict{Protected}},
		{name: "AH after a destination options header", flows: []Flow{allAB6},
			packets: [][]byte{ip6(a6, b6, protoDstOpts, ext(protoAH, 0, payload(40)))}, want: []Verdict{Protected}},
		{name: "IPComp", flows: []Flow{allAB4},
			packets: [][]byte{ip4(a4, b4, protoIPComp, 1, 0, false, nil, payload(40))}, want: []Verdict{Protected}},
		{name: "ESP in UDP 4500", flows: []Flow{allAB4},
			packets: [][]byte{ip4(a4, b4, protoUDP, 1, 0, false, nil, udp(4500, 4500, esp(0x1001, 64)))}, want: []Verdict{Protected}},
		{name: "NAT keepalive on 4500 (RFC 3948 §2.3) carries no flow", flows: []Flow{allAB4},
			packets: [][]byte{ip4(a4, b4, protoUDP, 1, 0, false, nil, udp(4500, 4500, []byte{0xff}))}, want: []Verdict{Protected}},
		{name: "one byte 0xFF on another port is UDP", flows: []Flow{allAB4},
			packets: [][]byte{ip4(a4, b4, protoUDP, 1, 0, false, nil, udp(4501, 4501, []byte{0xff}))}, want: []Verdict{Leak}, leaks: 1},
		{name: "IKE on 4500 (non-ESP marker) is UDP", flows: []Flow{allAB4},
			packets: [][]byte{ip4(a4, b4, protoUDP, 1, 0, false, nil, udp(4500, 4500, make([]byte, 40)))}, want: []Verdict{Leak}, leaks: 1},
		{name: "cleartext ICMP between protected hosts", flows: []Flow{allAB4},
			packets: [][]byte{ip4(b4, a4, protoICMP, 1, 0, false, nil, icmp(0, 0, payload(56)))}, want: []Verdict{Leak}, leaks: 1},

		// Tiny first fragment (issue 10 finding 2).
		{name: "tiny first fragment, UDP header in the second", flows: []Flow{udp7v6},
			packets: [][]byte{tinyFirst, tinySecond(7)}, want: []Verdict{Pending, Leak}, leaks: 1},
		{name: "tiny first fragment, second first", flows: []Flow{udp7v6},
			packets: [][]byte{tinySecond(7), tinyFirst}, want: []Verdict{Pending, Leak}, leaks: 1},
		{name: "tiny first fragment to another port", flows: []Flow{udp7v6},
			packets: [][]byte{tinyFirst, tinySecond(9)}, want: []Verdict{Pending, Clear}},
		{name: "tiny first fragment never completed", flows: []Flow{udp7v6}, flush: true,
			packets: [][]byte{tinyFirst}, want: []Verdict{Pending}, leaks: 1},
		{name: "fragments that cannot be of a protected flow", flows: []Flow{udp7v6}, flush: true,
			packets: [][]byte{ip6(b6, a6, 44, frag6(protoUDP, 8, false, 3, payload(16)))}, want: []Verdict{Pending}},

		// Next header 253 (RFC 4727; issue 10 finding 2).
		{name: "next header 253 as gVisor reads it (8 bytes)", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(a6, b6, protoExp1, append([]byte{protoUDP, 0, 0, 0, 0, 0, 0, 0}, udp(40000, 7, payload(10))...))},
			want:    []Verdict{Leak}, leaks: 1},
		{name: "next header 253 in the uniform format (16 bytes)", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(a6, b6, protoExp1, ext(protoUDP, 1, udp(40000, 7, payload(10))))}, want: []Verdict{Leak}, leaks: 1},
		{name: "next header 254 in the uniform format", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(a6, b6, protoExp2, ext(protoUDP, 0, udp(40000, 7, payload(10))))}, want: []Verdict{Leak}, leaks: 1},
		{name: "next header 253 before an unprotected port", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(a6, b6, protoExp1, ext(protoUDP, 0, udp(40000, 9, payload(10))))}, want: []Verdict{Clear}},
		{name: "next header 253 as an upper layer between protected hosts", flows: []Flow{allAB6},
			packets: [][]byte{ip6(a6, b6, protoExp1, payload(3))}, want: []Verdict{Leak}, leaks: 1},

		// >64 KiB datagrams (issue 10 finding 3).
		{name: "65 KB datagram fragmented in clear", flows: []Flow{udp7v6},
			packets: bigClear, want: verdicts(len(bigClear), Leak, Pending, Leak), leaks: 1},
		{name: "65 KB datagram between protected hosts, reported once", flows: []Flow{allAB6},
			packets: bigClear, want: verdicts(len(bigClear), Leak, Leak, Leak), leaks: 1},
		{name: "65 KB datagram: first fragment ESP, tail fragments in clear", flows: []Flow{udp7v6}, flush: true,
			packets: bigMixed, want: verdicts(len(bigMixed), Pending, Pending, Pending), leaks: 1},
		{name: "65 KB ESP packet fragmented after ESP", flows: []Flow{allAB6},
			packets: bigESP, want: verdicts(len(bigESP), Pending, Pending, Protected)},

		// ICMP errors quoting plaintext (RFC 4301 §6.2; issue 10 finding 6).
		{name: "ICMPv6 port unreachable quoting a protected UDP packet", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(b6, a6, protoICMPv6, icmp(1, 4, quoted6))}, want: []Verdict{Leak}, leaks: 1},
		{name: "ICMPv6 port unreachable quoting another port", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(b6, a6, protoICMPv6, icmp(1, 4, ip6(a6, b6, protoUDP, udp(40000, 9, nil))))}, want: []Verdict{Clear}},
		{name: "ICMPv6 error quoting ESP", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(b6, a6, protoICMPv6, icmp(2, 0, ip6(a6, b6, protoESP, esp(0x1001, 64))))}, want: []Verdict{Clear}},
		{name: "ICMPv6 error quoting a truncated protected packet", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(b6, a6, protoICMPv6, icmp(1, 4, quoted6[:44]))}, want: []Verdict{Leak}, leaks: 1},
		{name: "ICMPv4 port unreachable quoting a protected UDP packet", flows: []Flow{udp7v4},
			packets: [][]byte{ip4(b4, a4, protoICMP, 1, 0, false, nil, icmp(3, 3, quoted4[:28]))}, want: []Verdict{Leak}, leaks: 1},
		{name: "ICMPv4 echo reply is not an error", flows: []Flow{udp7v4},
			packets: [][]byte{ip4(b4, a4, protoICMP, 1, 0, false, nil, icmp(0, 0, quoted4[:28]))}, want: []Verdict{Clear}},

		// IPv4 fragments with options (RFC 791).
		{name: "IPv4 fragments with options, last first", flows: []Flow{udp7v4},
			packets: [][]byte{
				ip4(a4, b4, protoUDP, 4, 16, false, ra, v4udp[16:]),
				ip4(a4, b4, protoUDP, 4, 0, true, ra, v4udp[:16]),
			}, want: []Verdict{Pending, Clear}},
		{name: "IPv4 fragments with options to a protected port", flows: []Flow{udp7v4},
			packets: [][]byte{
				ip4(a4, b4, protoUDP, 4, 0, true, ra, v4udp7[:16]),
				ip4(a4, b4, protoUDP, 4, 16, false, ra, v4udp7[16:]),
			}, want: []Verdict{Leak, Leak}, leaks: 1},
		{name: "IP-in-IP, inner header across fragments with options", flows: []Flow{udp7v4},
			packets: ipip(inner, 11), want: []Verdict{Pending, Leak}, leaks: 1},
		{name: "IP-in-IP, inner flow unprotected", flows: []Flow{udp7v4},
			packets: ipip(innerClear, 12), want: []Verdict{Pending, Clear}},
		{name: "IPv4 malformed option", flows: []Flow{udp7v4},
			packets: [][]byte{ip4(a4, b4, protoUDP, 4, 0, false, []byte{0x94, 0x09, 0, 0}, udp(1, 2, nil))}, want: []Verdict{Unclassifiable}, unclass: 1},

		// Overlapping fragments (RFC 5722): the copy that wins decides.
		{name: "overlapping fragments rewriting the port", flows: []Flow{udp7v6},
			packets: [][]byte{
				ip6(a6, b6, 44, frag6(protoDstOpts, 8, false, 77, udp(40000, 9, payload(8)))),
				ip6(a6, b6, 44, frag6(protoDstOpts, 8, false, 77, udp(40000, 7, payload(8)))),
				tinyFirst,
			}, want: []Verdict{Pending, Pending, Leak}, leaks: 1},

		// Bypasses: first match wins.
		{name: "neighbour solicitation bypassed", flows: []Flow{ndpPass, allAB6},
			packets: [][]byte{ip6(a6, b6, protoICMPv6, icmp(135, 0, payload(16)))}, want: []Verdict{Clear}},
		{name: "echo request not bypassed", flows: []Flow{ndpPass, allAB6},
			packets: [][]byte{ip6(a6, b6, protoICMPv6, icmp(128, 0, payload(16)))}, want: []Verdict{Leak}, leaks: 1},
		{name: "a bypass that may apply to a fragment", flows: []Flow{ndpPass, allAB6}, flush: true,
			packets: [][]byte{ip6(a6, b6, 44, frag6(protoICMPv6, 8, false, 9, payload(16)))}, want: []Verdict{Pending}, leaks: 1},

		// Malformed.
		{name: "truncated IPv6 header", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(a6, b6, protoUDP, nil)[:30]}, want: []Verdict{Unclassifiable}, unclass: 1},
		{name: "payload length beyond the frame", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(a6, b6, protoUDP, udp(1, 9, payload(20)))[:50]}, want: []Verdict{Unclassifiable}, unclass: 1},
		{name: "hop-by-hop not first", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(a6, b6, protoDstOpts, ext(protoHopByHop, 0, ext(protoUDP, 0, udp(1, 9, nil))))}, want: []Verdict{Unclassifiable}, unclass: 1},
		{name: "UDP header cut short may be protected", flows: []Flow{udp7v6},
			packets: [][]byte{ip6(a6, b6, protoUDP, []byte{0x9c, 0x40, 0})}, want: []Verdict{Leak}, leaks: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			ck := New(Config{Flows: c.flows})
			for i, p := range c.packets {
				if got := ck.Packet(p); got != c.want[i] {
					t.Errorf("packet %d of %d: %v, want %v (%s)", i+1, len(c.packets), got, c.want[i], first(ck))
				}
			}
			if c.flush {
				ck.Flush()
			}
			st := ck.Stats()
			if st.Leaks != c.leaks || st.Unclassifiable != c.unclass {
				t.Errorf("%d leaks and %d unclassifiable, want %d and %d (%s)", st.Leaks, st.Unclassifiable, c.leaks, c.unclass, first(ck))
			}
			if err := ck.Err(false); (err != nil) != (c.leaks > 0) {
				t.Errorf("Err(false) = %v", err)
			}
			if err := ck.Err(true); (err != nil) != (c.leaks+c.unclass > 0) {
				t.Errorf("Err(true) = %v", err)
			}
		})
	}
}

// first describes the first finding, without the frame's bytes.
func first(ck *Checker) string {
	f := ck.Findings()
	if len(f) == 0 {
		return "no findings"
	}
	f[0].Hex = ""
	return fmt.Sprintf("%d findings, first %v", len(f), f[0])
}

// verdicts is n verdicts: first, then mid, and last.
func verdicts(n int, first, mid, last Verdict) []Verdict {
	v := make([]Verdict, n)
	for i := range v {
		v[i] = mid
	}
	v[0], v[n-1] = first, last
	return v
}

func TestFrame(t *testing.T) {
	ck := New(Config{Flows: []Flow{allAB4}})
	arp := eth(0x0806, make([]byte, 28))
	vlan := eth(0x8100, append([]byte{0, 5, 0x08, 0x00}, ip4(a4, b4, protoUDP, 1, 0, false, nil, udp(1, 2, nil))...))
	wrong := eth(0x86dd, ip4(a4, b4, protoESP, 1, 0, false, nil, esp(0x1001, 16)))
	for _, c := range []struct {
		frame []byte
		want  Verdict
	}{
		{arp, NotIP},
		{vlan, Leak},
		{eth(0x0800, ip4(a4, b4, protoESP, 1, 0, false, nil, esp(0x1001, 16))), Protected},
		{wrong, Unclassifiable},
		{eth(0x0800, append(ip4(a4, b4, protoESP, 1, 0, false, nil, esp(0x1001, 16)), 0, 0, 0)), Protected}, // link padding
	} {
		if got := ck.Frame(c.frame); got != c.want {
			t.Errorf("frame % x: %v, want %v", c.frame[:min(len(c.frame), 20)], got, c.want)
		}
	}
	f := ck.Findings()
	if len(f) != 2 || f[0].Frame != 2 || !strings.Contains(f[0].Reason, "192.0.2.1->192.0.2.2 proto 17 ports 1->2") || !strings.HasPrefix(f[0].Hex, "02000000000202") {
		t.Errorf("findings %v", f)
	}
}

// TestEviction: the oldest train is judged incomplete when too many are
// open, so a flood of first fragments cannot grow memory without bound.
func TestEviction(t *testing.T) {
	ck := New(Config{Flows: []Flow{udp7v6}, MaxTrains: 4})
	for id := uint32(0); id < 10; id++ {
		ck.Packet(ip6(a6, b6, 44, frag6(protoUDP, 0, true, id, udp(40000, 9, payload(8)))))
	}
	if st := ck.Stats(); st.Incomplete != 6 || st.Leaks != 0 {
		t.Errorf("stats %+v", st)
	}
	ck.Packet(ip6(a6, b6, 44, frag6(protoUDP, 16, false, 9, payload(8))))
	if st := ck.Stats(); st.Reassembled != 1 || st.Clear != 1 {
		t.Errorf("stats %+v", st)
	}
}

func FuzzPacket(f *testing.F) {
	f.Add(ip6(a6, b6, 44, frag6(protoDstOpts, 0, true, 77, ext(protoUDP, 0, nil))))
	f.Add(ip6(a6, b6, protoExp1, ext(protoUDP, 1, udp(40000, 7, payload(10)))))
	f.Add(ip6(b6, a6, protoICMPv6, icmp(1, 4, ip6(a6, b6, protoUDP, udp(40000, 7, nil)))))
	f.Add(ip4(x4, y4, protoIPIP, 3, 0, true, []byte{0x94, 0x04, 0, 0}, ip4(a4, b4, protoUDP, 9, 0, false, nil, udp(1, 7, nil))[:8]))
	f.Add(ip4(b4, a4, protoICMP, 1, 0, false, nil, icmp(3, 3, ip4(a4, b4, protoUDP, 3, 0, false, nil, udp(40000, 7, nil)))))
	f.Fuzz(func(t *testing.T, b []byte) {
		ck := New(Config{Flows: []Flow{ndpPass, udp7v6, udp7v4}, MaxTrains: 8})
		// The packet, then its halves as two "fragments" of a train.
		ck.Packet(b)
		ck.Packet(bytes.Clone(b))
		if len(b) > 48 && b[0]>>4 == 6 {
			ck.Packet(ip6(a6, b6, 44, frag6(b[6], 0, true, 1, b[40:40+(len(b)-40)/16*8])))
			ck.Packet(ip6(a6, b6, 44, frag6(b[6], (len(b)-40)/16*8, false, 1, b[40+(len(b)-40)/16*8:])))
		}
		ck.Flush()
		ck.Err(true)
	})
}

// BenchmarkFrame: the cost per captured frame in the test bed's common
// cases (ESP, a bypassed NS), which must not slow the suite.
func BenchmarkFrame(b *testing.B) {
	ck := New(Config{Flows: []Flow{ndpPass, allAB6}})
	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"esp", eth(0x86dd, ip6(a6, b6, protoESP, esp(0x1001, 1400)))},
		{"ns", eth(0x86dd, ip6(a6, b6, protoICMPv6, icmp(135, 0, payload(16))))},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ck.Frame(c.frame)
			}
		})
	}
}
