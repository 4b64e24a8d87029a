package xfrm

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// Tests of UDP-encapsulated ESP (RFC 3948).

var (
	eA4 = netip.MustParseAddr("198.51.100.1")
	eB4 = netip.MustParseAddr("198.51.100.2")
	// eNAT is what a NAT in front of A rewrites A's source to.
	eNAT4 = netip.MustParseAddr("203.0.113.9")
)

// Ports of the encapsulated SA A -> B: A sends from encSPort to B's
// encDPort. They differ so that a swap shows.
const (
	encSPort = 4500
	encDPort = 4501
	encSPI   = 0x7000
)

// encSA is the encapsulated ESP SA src -> dst.
func encSA(src, dst netip.Addr, mode Mode) SAConfig {
	c := espSA(encSPI, src, dst, mode)
	c.Encap = Encap{Type: EncapESPInUDP, SPort: encSPort, DPort: encDPort}
	return c
}

// udpPkt is an IP/UDP packet src -> dst (ports 1000 -> 2000) with n bytes
// of payload and a valid UDP checksum, computed by refChecksum.
func udpPkt(src, dst netip.Addr, n int) []byte {
	hl := 40
	if src.Is4() {
		hl = 20
	}
	p := make([]byte, hl+8+n)
	if src.Is4() {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[8], p[9] = 64, ProtoUDP
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		binary.BigEndian.PutUint16(p[10:], refFold(refSum(p[:20])))
	} else {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(8+n))
		p[6], p[7] = ProtoUDP, 64
		s, d := src.As16(), dst.As16()
		copy(p[8:], s[:])
		copy(p[24:], d[:])
	}
	u := p[hl:]
	binary.BigEndian.PutUint16(u[0:], 1000)
	binary.BigEndian.PutUint16(u[2:], 2000)
	binary.BigEndian.PutUint16(u[4:], uint16(8+n))
	for i := range n {
		u[8+i] = byte(i*7 + 1)
	}
	binary.BigEndian.PutUint16(u[6:], refL4Checksum(p, hl))
	return p
}

// refSum is a byte-at-a-time one's complement sum (RFC 1071), written
// independently of the engine's.
func refSum(b []byte) uint32 {
	var s uint32
	for i := range b {
		if i%2 == 0 {
			s += uint32(b[i]) << 8
		} else {
			s += uint32(b[i])
		}
	}
	return s
}

func refFold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// refL4Checksum computes the TCP/UDP checksum of the segment at hl in the
// IP packet p (checksum field taken as zero) with its pseudo-header.
func refL4Checksum(p []byte, hl int) uint16 {
	seg := bytes.Clone(p[hl:])
	var proto byte
	var s uint32
	if p[0]>>4 == 4 {
		proto = p[9]
		s = refSum(p[12:20])
	} else {
		proto = p[6]
		s = refSum(p[8:40])
	}
	off := 6
	if proto == ProtoTCP {
		off = 16
	}
	seg[off], seg[off+1] = 0, 0
	s += uint32(proto) + uint32(len(seg)) + refSum(seg)
	c := refFold(s)
	if c == 0 && proto == ProtoUDP {
		c = 0xffff
	}
	return c
}

// encPair builds sender and receiver engines holding the encapsulated SA
// src -> dst, with policies protecting everything between the endpoints
// (or the tunnel's inner traffic) in that direction.
func encPair(t *testing.T, src, dst netip.Addr, mode Mode) (out, in *Engine) {
	t.Helper()
	tmpl := []Template{{Proto: ProtoESP, Mode: mode, Level: LevelRequire}}
	if mode == ModeTunnel {
		tmpl[0].Src, tmpl[0].Dst = src, dst
	}
	sel := Selector{Src: netip.PrefixFrom(src, src.BitLen()), Dst: netip.PrefixFrom(dst, dst.BitLen())}
	out, in = NewEngine(), NewEngine()
	for _, e := range []*Engine{out, in} {
		t.Cleanup(e.Close)
		if _, err := e.AddSA(encSA(src, dst, mode)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := out.AddPolicy(&Policy{Dir: DirOut, Sel: sel, Action: ActionProtect, Templates: tmpl}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.AddPolicy(&Policy{Dir: DirIn, Sel: sel, Action: ActionProtect, Templates: tmpl}); err != nil {
		t.Fatal(err)
	}
	return out, in
}

// splitUDP returns the IP header and the UDP datagram of an encapsulated
// packet (no IPv6 extension headers), checking the IP protocol.
func splitUDP(t *testing.T, p []byte) (hdr, udp []byte) {
	t.Helper()
	if p[0]>>4 == 4 {
		if p[9] != ProtoUDP {
			t.Fatalf("IPv4 protocol %d, want UDP", p[9])
		}
		return p[:20], p[20:]
	}
	if p[6] != ProtoUDP {
		t.Fatalf("IPv6 next header %d, want UDP", p[6])
	}
	return p[:40], p[40:]
}

// TestEncapRoundTrip: an encapsulated SA sends ESP right after a UDP
// header from SPort to DPort (RFC 3948 §2.1), with UDP checksum zero over
// IPv4 and a valid one over IPv6 (RFC 8200 §8.1); its overhead counts the
// 8 bytes; the receiver's InputEncap returns the original packet.
func TestEncapRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
		mode     Mode
	}{
		{"v4-transport", eA4, eB4, ModeTransport},
		{"v4-tunnel", eA4, eB4, ModeTunnel},
		{"v6-transport", bA, bB, ModeTransport},
		{"v6-tunnel", bA, bB, ModeTunnel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, in := encPair(t, tc.src, tc.dst, tc.mode)
			pkt := udpPkt(tc.src, tc.dst, 333)
			v, wire := out.Output(pkt, HeapAllocator{})
			if v != VerdictProtected {
				t.Fatalf("verdict %v", v)
			}
			sa := out.SAD.Lookup(tc.dst, ProtoESP, encSPI)
			if grow := len(wire) - len(pkt); grow > sa.Overhead(len(pkt)) {
				t.Errorf("packet grew %d bytes, Overhead says at most %d", grow, sa.Overhead(len(pkt)))
			}
			plain := espSA(encSPI, tc.src, tc.dst, tc.mode)
			ps, _ := NewSA(plain)
			if d := sa.Overhead(len(pkt)) - ps.Overhead(len(pkt)); d != 8 {
				t.Errorf("encapsulation adds %d bytes of overhead, want 8", d)
			}
			hdr, udp := splitUDP(t, wire)
			if sp, dp := binary.BigEndian.Uint16(udp), binary.BigEndian.Uint16(udp[2:]); sp != encSPort || dp != encDPort {
				t.Errorf("UDP ports %d -> %d, want %d -> %d", sp, dp, encSPort, encDPort)
			}
			if l := binary.BigEndian.Uint16(udp[4:]); int(l) != len(udp) {
				t.Errorf("UDP length %d, datagram is %d", l, len(udp))
			}
			ck := binary.BigEndian.Uint16(udp[6:])
			if tc.src.Is4() {
				if ck != 0 {
					t.Errorf("IPv4 UDP checksum %#04x, want 0 (RFC 3948 §2.1)", ck)
				}
				if refFold(refSum(hdr)) != 0 {
					t.Error("bad IPv4 header checksum")
				}
			} else if want := refL4Checksum(wire, 40); ck != want {
				t.Errorf("IPv6 UDP checksum %#04x, want %#04x", ck, want)
			}
			if spi := binary.BigEndian.Uint32(udp[8:]); spi != encSPI {
				t.Errorf("SPI after the UDP header %#x, want %#x", spi, encSPI)
			}
			got := in.InputEncap(bytes.Clone(hdr), bytes.Clone(udp), HeapAllocator{})
			if !bytes.Equal(got, pkt) {
				t.Fatalf("decapsulated\n%x\nwant\n%x\nstats %v", got, pkt, nonZero(&in.Stats))
			}
		})
	}
}

// nonZero lists the counters that are not zero, for failure messages.
func nonZero(s *Stats) []Stat {
	var r []Stat
	for _, st := range s.Snapshot() {
		if st.Value != 0 {
			r = append(r, st)
		}
	}
	return r
}

// TestEncapMismatch: as Linux's xfrm_input (x->encap's type against the
// packet's), plain ESP for an encapsulated SA and ESP-in-UDP for a plain
// SA are dropped as XfrmInStateMismatch, and so is ESP-in-UDP to a port
// the SA does not receive on.
func TestEncapMismatch(t *testing.T) {
	out, in := encPair(t, eA4, eB4, ModeTransport)
	pkt := udpPkt(eA4, eB4, 64)
	_, wire := out.Output(pkt, HeapAllocator{})
	hdr, udp := splitUDP(t, wire)

	// Plain ESP for the encapsulated SA: take the UDP header out.
	h := bytes.Clone(hdr)
	h[9] = uint8(ProtoESP)
	if in.Input(h, ProtoESP, bytes.Clone(udp[8:]), HeapAllocator{}) != nil {
		t.Error("plain ESP accepted on an encapsulated SA")
	}
	if n := in.Stats.InStateMismatch.Load(); n != 1 {
		t.Errorf("XfrmInStateMismatch %d, want 1", n)
	}

	// ESP-in-UDP to another port.
	u := bytes.Clone(udp)
	binary.BigEndian.PutUint16(u[2:], 4999)
	if in.InputEncap(bytes.Clone(hdr), u, HeapAllocator{}) != nil {
		t.Error("ESP-in-UDP accepted on a port the SA does not use")
	}
	if n := in.Stats.InStateMismatch.Load(); n != 2 {
		t.Errorf("XfrmInStateMismatch %d, want 2", n)
	}

	// ESP-in-UDP for a plain SA.
	plainIn := NewEngine()
	defer plainIn.Close()
	if _, err := plainIn.AddSA(espSA(encSPI, eA4, eB4, ModeTransport)); err != nil {
		t.Fatal(err)
	}
	if plainIn.InputEncap(bytes.Clone(hdr), bytes.Clone(udp), HeapAllocator{}) != nil {
		t.Error("ESP-in-UDP accepted on a plain SA")
	}
	if n := plainIn.Stats.InStateMismatch.Load(); n != 1 {
		t.Errorf("plain SA: XfrmInStateMismatch %d, want 1", n)
	}

	// The packet itself is good: the right SA and port take it.
	if in.InputEncap(bytes.Clone(hdr), bytes.Clone(udp), HeapAllocator{}) == nil {
		t.Errorf("valid packet refused: %v", nonZero(&in.Stats))
	}
}

// TestEncapUnknownSPI: ESP-in-UDP with an SPI we do not hold is
// XfrmInNoStates (xfrm_input's lookup fails before any encap check).
func TestEncapUnknownSPI(t *testing.T) {
	out, in := encPair(t, eA4, eB4, ModeTransport)
	_, wire := out.Output(udpPkt(eA4, eB4, 64), HeapAllocator{})
	hdr, udp := splitUDP(t, wire)
	u := bytes.Clone(udp)
	binary.BigEndian.PutUint32(u[8:], encSPI+1)
	if in.InputEncap(bytes.Clone(hdr), u, HeapAllocator{}) != nil {
		t.Fatal("unknown SPI accepted")
	}
	if n := in.Stats.InNoStates.Load(); n != 1 {
		t.Errorf("XfrmInNoStates %d, want 1", n)
	}
}

// natRewrite rewrites the outer source address and UDP source port of an
// encapsulated IPv4 packet as a NAT does (IP checksum updated; the UDP
// checksum is zero, so nothing else changes).
func natRewrite(p []byte, src netip.Addr, sport uint16) []byte {
	p = bytes.Clone(p)
	s := src.As4()
	copy(p[12:16], s[:])
	p[10], p[11] = 0, 0
	binary.BigEndian.PutUint16(p[10:], refFold(refSum(p[:20])))
	binary.BigEndian.PutUint16(p[20:], sport)
	return p
}

// TestEncapNATChecksumAndFloat: behind a NAT that rewrote A's address and
// port, B accepts A's transport-mode UDP with a checksum that is right for
// the addresses it arrived with (RFC 3948 §3.1.2: the sender's was over
// A's own address); the move is reported once as EventNewMapping, and B's
// SA back to A now sends to the NAT's address and port (RFC 3948 §4).
func TestEncapNATChecksumAndFloat(t *testing.T) {
	out, in := encPair(t, eA4, eB4, ModeTransport)
	// B's SA back to A, and the policy that uses it.
	back := encSA(eB4, eA4, ModeTransport)
	back.SPI = encSPI + 1
	back.Encap.SPort, back.Encap.DPort = encDPort, encSPort
	if _, err := in.AddSA(back); err != nil {
		t.Fatal(err)
	}
	var events []Event
	in.Subscribe(func(ev Event) { events = append(events, ev) })
	// B's policies, as B's key manager would write them after NAT
	// detection, name A by the NAT's address.
	in.SPD.Flush()
	if _, err := in.AddPolicy(&Policy{Dir: DirIn, Action: ActionProtect,
		Sel:       Selector{Src: netip.PrefixFrom(eNAT4, 32), Dst: netip.PrefixFrom(eB4, 32)},
		Templates: []Template{{Proto: ProtoESP, Mode: ModeTransport, Level: LevelRequire}}}); err != nil {
		t.Fatal(err)
	}
	pkt := udpPkt(eA4, eB4, 100)
	for i := range 3 {
		_, wire := out.Output(pkt, HeapAllocator{})
		hdr, udp := splitUDP(t, natRewrite(wire, eNAT4, 31000))
		got := in.InputEncap(hdr, udp, HeapAllocator{})
		if got == nil {
			t.Fatalf("packet %d dropped: %v", i, nonZero(&in.Stats))
		}
		if !bytes.Equal(got[12:16], eNAT4.AsSlice()) {
			t.Fatalf("source %v, want the NAT's", got[12:16])
		}
		if ck, want := binary.BigEndian.Uint16(got[26:]), refL4Checksum(got, 20); ck != want {
			t.Errorf("packet %d: UDP checksum %#04x, want %#04x (over the addresses it arrived with)", i, ck, want)
		}
	}
	if len(events) != 1 || events[0].Type != EventNewMapping {
		t.Fatalf("events %v, want one new-mapping", events)
	}
	ev := events[0]
	if ev.OldPeer != (EncapPeer{eA4, encSPort}) || ev.NewPeer != (EncapPeer{eNAT4, 31000}) || ev.SA.SPI() != encSPI {
		t.Errorf("event %v %v -> %v", ev.SA, ev.OldPeer, ev.NewPeer)
	}
	bsa := in.SAD.Lookup(eA4, ProtoESP, encSPI+1)
	if p, _ := bsa.OutPeer(); p != (EncapPeer{eNAT4, 31000}) {
		t.Errorf("B's outbound SA sends to %v, want the NAT's mapping", p)
	}
	// And B's output really goes there.
	if _, err := in.AddPolicy(&Policy{Dir: DirOut, Action: ActionProtect,
		Sel:       Selector{Src: netip.PrefixFrom(eB4, 32), Dst: netip.PrefixFrom(eA4, 32)},
		Templates: []Template{{Proto: ProtoESP, Mode: ModeTransport, Level: LevelRequire}}}); err != nil {
		t.Fatal(err)
	}
	v, wire := in.Output(udpPkt(eB4, eA4, 10), HeapAllocator{})
	if v != VerdictProtected {
		t.Fatalf("verdict %v", v)
	}
	if !bytes.Equal(wire[16:20], eNAT4.AsSlice()) || binary.BigEndian.Uint16(wire[22:]) != 31000 || binary.BigEndian.Uint16(wire[20:]) != encDPort {
		t.Errorf("reply goes to %v port %d from port %d", wire[16:20], binary.BigEndian.Uint16(wire[22:]), binary.BigEndian.Uint16(wire[20:]))
	}
	if refFold(refSum(wire[:20])) != 0 {
		t.Error("bad IPv4 header checksum after the destination moved")
	}
}

// TestEncapForgedSourceDoesNotFloat: a packet that fails its ICV from a
// new address moves nothing (RFC 3948 §4: only authenticated packets).
func TestEncapForgedSourceDoesNotFloat(t *testing.T) {
	out, in := encPair(t, eA4, eB4, ModeTransport)
	var events int
	in.Subscribe(func(Event) { events++ })
	_, wire := out.Output(udpPkt(eA4, eB4, 100), HeapAllocator{})
	w := natRewrite(wire, eNAT4, 31000)
	w[len(w)-1] ^= 1
	hdr, udp := splitUDP(t, w)
	if in.InputEncap(hdr, udp, HeapAllocator{}) != nil {
		t.Fatal("forged packet accepted")
	}
	sa := in.SAD.Lookup(eB4, ProtoESP, encSPI)
	if p, _ := sa.InPeer(); p != (EncapPeer{eA4, encSPort}) || events != 0 {
		t.Errorf("peer %v after a forged packet, %d events", p, events)
	}
}

// TestClassifyEncap: RFC 3948 §2.2 and Linux's xfrm4_udp_encap_rcv.
func TestClassifyEncap(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
		want EncapKind
	}{
		{"keepalive", []byte{0xff}, EncapKindKeepalive},
		{"one other byte", []byte{0xfe}, EncapKindIKE},
		{"empty", nil, EncapKindIKE},
		{"non-ESP marker", append(make([]byte, 4), bytes.Repeat([]byte{1}, 28)...), EncapKindIKE},
		{"ESP header only (8 bytes)", []byte{0, 0, 1, 0, 0, 0, 0, 1}, EncapKindIKE},
		{"ESP", []byte{0, 0, 1, 0, 0, 0, 0, 1, 9}, EncapKindESP},
		{"two bytes 0xff", []byte{0xff, 0xff}, EncapKindIKE},
	} {
		if got := ClassifyEncap(tc.p); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestEncapValidation: NewSA refuses encapsulations it cannot honour.
func TestEncapValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*SAConfig)
	}{
		{"unknown type", func(c *SAConfig) { c.Encap.Type = 1 }},
		{"no sport", func(c *SAConfig) { c.Encap.SPort = 0 }},
		{"no dport", func(c *SAConfig) { c.Encap.DPort = 0 }},
		{"ports without type", func(c *SAConfig) { c.Encap.Type = EncapNone }},
		{"negative keepalive", func(c *SAConfig) { c.Encap.Keepalive = -1 }},
		{"OA of other family", func(c *SAConfig) { c.Encap.OA = bA }},
		{"AH", func(c *SAConfig) {
			*c = bundleSA(t, ProtoAH, encSPI, eA4, eB4, ModeTransport)
			c.Encap = encSA(eA4, eB4, ModeTransport).Encap
		}},
	} {
		c := encSA(eA4, eB4, ModeTransport)
		tc.mod(&c)
		if _, err := NewSA(c); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// TestEncapPortIndex: the SAD knows the (address, port) pairs that
// receive ESP-in-UDP while, and only while, an SA uses them.
func TestEncapPortIndex(t *testing.T) {
	e := NewEngine()
	defer e.Close()
	if e.SAD.IsEncapPort(eB4, encDPort) {
		t.Fatal("port known before any SA")
	}
	if _, err := e.AddSA(encSA(eA4, eB4, ModeTransport)); err != nil {
		t.Fatal(err)
	}
	if !e.SAD.IsEncapPort(eB4, encDPort) || e.SAD.IsEncapPort(eA4, encDPort) || e.SAD.IsEncapPort(eB4, encSPort) {
		t.Error("index does not hold exactly (dst, DPort)")
	}
	if _, err := e.SAD.Delete(eB4, ProtoESP, encSPI); err != nil {
		t.Fatal(err)
	}
	if e.SAD.IsEncapPort(eB4, encDPort) {
		t.Error("port still known after the SA was deleted")
	}
}

// TestEncapRouteReserve: the route-MTU reserve of a protect policy grows
// by the UDP header when its SA is encapsulated.
func TestEncapRouteReserve(t *testing.T) {
	for _, mode := range []Mode{ModeTransport, ModeTunnel} {
		plain, _ := encPair(t, eA4, eB4, mode)
		enc, _ := encPair(t, eA4, eB4, mode)
		plain.SAD.Flush(0)
		if _, err := plain.AddSA(espSA(encSPI, eA4, eB4, mode)); err != nil {
			t.Fatal(err)
		}
		if d := enc.MaxOutboundOverhead() - plain.MaxOutboundOverhead(); d != UDPHeaderLen {
			t.Errorf("%s: encapsulated reserve exceeds the plain one by %d, want %d", mode, d, UDPHeaderLen)
		}
	}
}

// TestEncapUpdate: an UPDATE of a mature encapsulated SA moves its ports
// in place, as Linux's xfrm_state_update copies x->encap: output uses the
// new ports, input expects the new destination port, the port index
// follows. Changing the encapsulation type is refused (Linux fails it
// too).
func TestEncapUpdate(t *testing.T) {
	out, in := encPair(t, eA4, eB4, ModeTransport)
	for _, e := range []*Engine{out, in} {
		c := encSA(eA4, eB4, ModeTransport)
		c.Encap.SPort, c.Encap.DPort = 31000, 4600
		sa, err := NewSA(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.SAD.Update(sa); err != nil {
			t.Fatal(err)
		}
	}
	sa := in.SAD.Lookup(eB4, ProtoESP, encSPI)
	if sp, dp := sa.EncapPorts(); sp != 31000 || dp != 4600 {
		t.Fatalf("ports %d, %d after the UPDATE", sp, dp)
	}
	if in.SAD.IsEncapPort(eB4, encDPort) || !in.SAD.IsEncapPort(eB4, 4600) {
		t.Error("the port index did not follow the UPDATE")
	}
	_, wire := out.Output(udpPkt(eA4, eB4, 10), HeapAllocator{})
	hdr, udp := splitUDP(t, wire)
	if sp, dp := binary.BigEndian.Uint16(udp), binary.BigEndian.Uint16(udp[2:]); sp != 31000 || dp != 4600 {
		t.Errorf("sent from %d to %d", sp, dp)
	}
	var events int
	in.Subscribe(func(Event) { events++ })
	if in.InputEncap(hdr, udp, HeapAllocator{}) == nil {
		t.Errorf("refused after the UPDATE: %v", nonZero(&in.Stats))
	}
	if events != 0 {
		t.Errorf("%d events: an UPDATE's ports are no new mapping", events)
	}
	plain, _ := NewSA(espSA(encSPI, eA4, eB4, ModeTransport))
	if _, err := in.SAD.Update(plain); err == nil {
		t.Error("UPDATE dropping the encapsulation accepted")
	}
}

// TestKeepaliveTick: an encapsulated SA with a keepalive interval has one
// sent at once and then once per interval, from its source and port to
// its peer; none once it is deleted.
func TestKeepaliveTick(t *testing.T) {
	e := NewEngine()
	e.Close() // no timer: the test ticks with times of its own
	c := encSA(eA4, eB4, ModeTransport)
	c.Encap.Keepalive = time.Second
	if _, err := e.AddSA(c); err != nil {
		t.Fatal(err)
	}
	quiet := encSA(eB4, eA4, ModeTransport) // no interval: no keepalives
	quiet.SPI++
	if _, err := e.AddSA(quiet); err != nil {
		t.Fatal(err)
	}
	var got []Keepalive
	e.SetKeepaliveSender(func(k Keepalive) { got = append(got, k) })
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		at   time.Duration
		want int
	}{{0, 1}, {500 * time.Millisecond, 1}, {time.Second, 2}, {1999 * time.Millisecond, 2}, {2 * time.Second, 3}} {
		e.keepaliveTick(t0.Add(tc.at))
		if len(got) != tc.want {
			t.Fatalf("at %v: %d keepalives, want %d", tc.at, len(got), tc.want)
		}
	}
	if want := (Keepalive{Src: eA4, SPort: encSPort, Dst: EncapPeer{eB4, encDPort}}); got[0] != want {
		t.Errorf("keepalive %+v, want %+v", got[0], want)
	}
	if _, err := e.SAD.Delete(eB4, ProtoESP, encSPI); err != nil {
		t.Fatal(err)
	}
	if e.SAD.keepalives.Load() != 0 {
		t.Errorf("%d SAs with keepalives counted after the delete", e.SAD.keepalives.Load())
	}
	e.keepaliveTick(t0.Add(10 * time.Second))
	if len(got) != 3 {
		t.Errorf("keepalive sent for a deleted SA")
	}
}

// TestInputEncapAllocs: the encapsulated input path (the floating check
// included) allocates nothing beyond the Allocator's buffers.
func TestInputEncapAllocs(t *testing.T) {
	for _, mode := range []Mode{ModeTransport, ModeTunnel} {
		out, in := encPair(t, eA4, eB4, mode)
		const n = 120
		pkts := make([][]byte, n)
		for i := range pkts {
			_, w := out.Output(udpPkt(eA4, eB4, 200), HeapAllocator{})
			pkts[i] = w
		}
		a := &fixedAlloc{buf: make([]byte, 2048)}
		i := 0
		allocs := testing.AllocsPerRun(100, func() {
			p := pkts[i]
			i++
			if in.InputEncap(p[:20], p[20:], a) == nil {
				t.Fatalf("%s: packet %d refused: %v", mode, i, nonZero(&in.Stats))
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per packet", mode, allocs)
		}
	}
}
