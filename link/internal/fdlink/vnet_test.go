package fdlink

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/frame"
)

// udpFrameSpec describes a test frame, built byte by byte (RFC 791, RFC
// 8200, RFC 768).
type udpFrameSpec struct {
	v6      bool
	payload int
	dport   uint16
	tos     byte   // IPv4 TOS / IPv6 traffic class
	ttl     byte   // 0 means 64
	frag    uint16 // IPv4 flags and fragment offset field
	ihl     byte   // IPv4 header length in words; 0 means 5
	proto   byte   // 0 means UDP
	id      uint16
}

func (s udpFrameSpec) build() []byte {
	ttl, proto := s.ttl, s.proto
	if ttl == 0 {
		ttl = 64
	}
	if proto == 0 {
		proto = 17
	}
	f := []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0, 0}
	udp := make([]byte, 8+s.payload)
	binary.BigEndian.PutUint16(udp[0:], 4500)
	binary.BigEndian.PutUint16(udp[2:], s.dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	if s.v6 {
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		ip := make([]byte, 40)
		ip[0], ip[1] = 0x60|s.tos>>4, s.tos<<4
		binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
		ip[6], ip[7] = proto, ttl
		ip[8], ip[23] = 0x20, 2
		ip[24], ip[39] = 0x20, 1
		return append(append(f, ip...), udp...)
	}
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ihl := s.ihl
	if ihl == 0 {
		ihl = 5
	}
	ip := make([]byte, int(ihl)*4)
	ip[0], ip[1] = 0x40|ihl, s.tos
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(udp)))
	binary.BigEndian.PutUint16(ip[4:], s.id)
	binary.BigEndian.PutUint16(ip[6:], s.frag)
	ip[8], ip[9] = ttl, proto
	copy(ip[12:], []byte{192, 0, 2, 2, 192, 0, 2, 1})
	return append(append(f, ip...), udp...)
}

func (s udpFrameSpec) pkt() *stack.PacketBuffer {
	return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(s.build())})
}

// TestUDPRun: which packets at the head of a batch the writer merges into
// one UDP GSO frame. The kernel gives every segment the first one's
// headers and cuts the payload at gso_size, so a run may only hold
// datagrams of one flow (every header field but those it rewrites
// equal), all of the first's size but a shorter last one, unfragmented,
// without IPv4 options, and at most udpGSOMaxSegs of them in one IP
// length.
func TestUDPRun(t *testing.T) {
	d := udpFrameSpec{payload: 1000, dport: 7000}
	d6 := udpFrameSpec{v6: true, payload: 1000, dport: 7000}
	with := func(s udpFrameSpec, f func(*udpFrameSpec)) udpFrameSpec { f(&s); return s }
	many := func(s udpFrameSpec, n int) []udpFrameSpec {
		out := make([]udpFrameSpec, n)
		for i := range out {
			out[i] = with(s, func(x *udpFrameSpec) { x.id = uint16(i) })
		}
		return out
	}
	cat := func(parts ...[]udpFrameSpec) []udpFrameSpec {
		var out []udpFrameSpec
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	one := func(s udpFrameSpec) []udpFrameSpec { return []udpFrameSpec{s} }
	for _, c := range []struct {
		name  string
		pkts  []udpFrameSpec
		want  int
		total int // payload bytes of the run, when want > 1
	}{
		{"alone", one(d), 1, 0},
		{"equal run, IP IDs differ", many(d, 5), 5, 5000},
		{"IPv6 run", many(d6, 4), 4, 4000},
		{"short last ends the run", cat(many(d, 3), one(with(d, func(s *udpFrameSpec) { s.payload = 10 })), many(d, 2)), 4, 3010},
		{"larger one ends the run before it", cat(many(d, 3), one(with(d, func(s *udpFrameSpec) { s.payload = 1001 }))), 3, 3000},
		{"other port", cat(many(d, 2), one(with(d, func(s *udpFrameSpec) { s.dport = 7001 }))), 2, 2000},
		{"other TOS", cat(many(d, 2), one(with(d, func(s *udpFrameSpec) { s.tos = 0x10 }))), 2, 2000},
		{"other TTL", cat(many(d, 2), one(with(d, func(s *udpFrameSpec) { s.ttl = 9 }))), 2, 2000},
		{"IPv6 other traffic class", cat(many(d6, 2), one(with(d6, func(s *udpFrameSpec) { s.tos = 0x20 }))), 2, 2000},
		{"IPv4 then IPv6", cat(many(d, 2), many(d6, 2)), 2, 2000},
		{"first is a fragment", cat(one(with(d, func(s *udpFrameSpec) { s.frag = 0x2000 })), many(d, 2)), 1, 0},
		{"a fragment ends the run", cat(many(d, 2), one(with(d, func(s *udpFrameSpec) { s.frag = 0x0010 }))), 2, 2000},
		{"DF set throughout", many(with(d, func(s *udpFrameSpec) { s.frag = 0x4000 }), 3), 3, 3000},
		{"IPv4 options", many(with(d, func(s *udpFrameSpec) { s.ihl = 6 }), 3), 1, 0},
		{"not UDP", many(with(d, func(s *udpFrameSpec) { s.proto = 50 }), 3), 1, 0},
		{"at most udpGSOMaxSegs", many(with(d, func(s *udpFrameSpec) { s.payload = 100 }), udpGSOMaxSegs+5), udpGSOMaxSegs, udpGSOMaxSegs * 100},
		{"at most an IP length of payload", many(with(d, func(s *udpFrameSpec) { s.payload = 1400 }), 50), 46, 46 * 1400},
	} {
		// Each run as PacketBuffers and as frames in the caller's bytes
		// (frame.Frame.Bytes, the IPsec wrapper's sealed packets).
		for _, kind := range []string{"packets", "bytes"} {
			t.Run(c.name+"/"+kind, func(t *testing.T) {
				var frames []frame.Frame
				for _, s := range c.pkts {
					if kind == "bytes" {
						frames = append(frames, frame.Frame{Bytes: s.build()})
					} else {
						frames = append(frames, frame.Frame{Packet: s.pkt()})
					}
				}
				defer func() {
					for _, f := range frames {
						if f.Packet != nil {
							f.Packet.DecRef()
						}
					}
				}()
				b := &txBatch{}
				n, f := b.udpRun(frames)
				if n != c.want {
					t.Fatalf("run of %d, want %d", n, c.want)
				}
				if n == 1 {
					return
				}
				total := 0
				for i := range frames[:n] {
					total += frames[i].Size() - f.udpHdrsLen()
				}
				if total != c.total || f.payload != c.pkts[0].payload {
					t.Fatalf("run payload %d, segment %d; want %d, %d", total, f.payload, c.total, c.pkts[0].payload)
				}
			})
		}
	}
}

// TestGSOHeaders: the headers of a GSO frame and the virtio_net_hdr that
// goes with it, against values worked out by hand from RFC 791 and RFC
// 768 and virtio_net.h; and the headers the reader gives each segment.
func TestGSOHeaders(t *testing.T) {
	s := udpFrameSpec{payload: 1000, dport: 4500, id: 0x1234, frag: 0x4000}
	hdrs := s.build()[:14+20+8]
	f, ok := parseUDPFrame(s.build(), 14+20+8+1000)
	if !ok {
		t.Fatal("parseUDPFrame refused a plain IPv4 UDP frame")
	}
	vh := gsoHeaders(hdrs, f, 2500, 1000)
	if vh != (vnetHdr{flags: vnetNeedsCsum, gsoType: vnetGSOUDPL4, hdrLen: 42, gsoSize: 1000, csumStart: 34, csumOffset: 6}) {
		t.Fatalf("virtio_net_hdr %+v", vh)
	}
	ip := hdrs[14:34]
	if got := binary.BigEndian.Uint16(ip[2:]); got != 20+8+2500 {
		t.Errorf("IP total length %d, want %d", got, 20+8+2500)
	}
	// Header checksum, by hand: the one's complement sum of the header
	// with the checksum field in must be 0xffff.
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	if sum != 0xffff {
		t.Errorf("IP header checksum does not verify (sum %#x)", sum)
	}
	udp := hdrs[34:]
	if got := binary.BigEndian.Uint16(udp[4:]); got != 8+2500 {
		t.Errorf("UDP length %d, want %d", got, 8+2500)
	}
	// Pseudo-header sum, uncomplemented, as a device finishing the
	// checksum expects: 192.0.2.2 + 192.0.2.1 + 17 + 2508.
	want := uint32(0xc000+0x0202+0xc000+0x0201) + 17 + 2508
	for want > 0xffff {
		want = want>>16 + want&0xffff
	}
	if got := binary.BigEndian.Uint16(udp[6:]); uint32(got) != want {
		t.Errorf("UDP checksum field %#04x, want the pseudo-header sum %#04x", got, want)
	}

	segmentHeaders(hdrs, 20, 500)
	if binary.BigEndian.Uint16(ip[2:]) != 20+8+500 || binary.BigEndian.Uint16(udp[4:]) != 8+500 {
		t.Errorf("segment lengths: IP %d, UDP %d", binary.BigEndian.Uint16(ip[2:]), binary.BigEndian.Uint16(udp[4:]))
	}
	sum = 0
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	if sum != 0xffff {
		t.Errorf("segment's IP header checksum does not verify")
	}
}

// TestSplitUDP: the reader cuts a UDP GSO frame that came in through a
// slot (its first bytes in the slot's view, the rest in the overflow)
// into datagrams equal to those merged, and leaves a frame it cannot cut
// safely whole: not UDP, no payload, or cut finer than UDP_MAX_SEGMENTS.
func TestSplitUDP(t *testing.T) {
	const mtu = 1500
	build := func(sizes []int, v6 bool) (frame []byte, want [][]byte) {
		var f udpFlow
		var hdrs []byte
		for i, n := range sizes {
			d := udpFrameSpec{v6: v6, payload: n, dport: 4500, id: uint16(i)}.build()
			for j := range d[len(d)-n:] {
				d[len(d)-n+j] = byte(i + j)
			}
			want = append(want, d[14:])
			if i == 0 {
				f, _ = parseUDPFrame(d, len(d))
				hdrs = append([]byte(nil), d[:f.udpHdrsLen()]...)
			}
			frame = append(frame, d[f.udpHdrsLen():]...)
		}
		gsoHeaders(hdrs, f, len(frame), sizes[0])
		return append(hdrs, frame...), want
	}
	for _, c := range []struct {
		name  string
		sizes []int
		v6    bool
	}{
		{"IPv4, 40 × 1400 and a short last", append(make40(1400), 333), false},
		{"IPv6, 3 × 1000", []int{1000, 1000, 1000}, true},
		{"within the first view", []int{500, 500}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			frame, want := build(c.sizes, c.v6)
			r, v := slotWith(t, ReaderOptions{MTU: mtu}, frame)
			if !r.splitUDP(0, v, len(frame), uint16(c.sizes[0]), "\x02\x00\x00\x00\x00\x01") {
				t.Fatal("splitUDP refused a well-formed frame")
			}
			if len(r.pkts) != len(want) {
				t.Fatalf("%d datagrams, want %d", len(r.pkts), len(want))
			}
			// The datagrams share chunks: writing all over one (as the
			// IPsec wrapper's in-place decapsulation does inside it)
			// must leave the others as they are.
			first := r.pkts[0].Data().AsRange().ToSlice()
			if b, ok := r.pkts[0].Data().PullUp(len(first)); ok {
				for i := range b {
					b[i] = 0xee
				}
			}
			for i, pkt := range r.pkts {
				got := pkt.Data().AsRange().ToSlice()
				if i == 0 {
					got = first
				}
				// The IPv4 ID is the first's, and the checksums differ.
				w := append([]byte(nil), want[i]...)
				g := append([]byte(nil), got...)
				u := 40
				if !c.v6 {
					u = 20
					copy(w[4:6], g[4:6])
					copy(w[10:12], g[10:12])
				}
				copy(w[u+6:u+8], g[u+6:u+8])
				if string(g) != string(w) || !pkt.RXChecksumValidated {
					t.Fatalf("datagram %d differs (or not checksum-validated):\n got %x\nwant %x", i, g[:64], w[:64])
				}
				pkt.DecRef()
			}
			r.pkts = r.pkts[:0]
		})
	}
	t.Run("refused", func(t *testing.T) {
		frame, _ := build([]int{2000, 2000}, false)
		tcp := udpFrameSpec{payload: 100, proto: 6}.build()
		for _, x := range []struct {
			name  string
			frame []byte
			seg   uint16
		}{
			{"segments of one byte", frame, 1},
			{"not UDP", tcp, 10},
			{"headers only", frame[:42], 10},
		} {
			r, v := slotWith(t, ReaderOptions{MTU: mtu}, x.frame)
			if r.splitUDP(0, v, len(x.frame), x.seg, "\x02\x00\x00\x00\x00\x01") || len(r.pkts) != 0 {
				t.Errorf("%s: cut into %d datagrams, want the frame left whole", x.name, len(r.pkts))
			}
		}
	})
}

func make40(n int) []int {
	s := make([]int, 40)
	for i := range s {
		s[i] = n
	}
	return s
}
