package fdlink

import (
	"bytes"
	"net/netip"
	"testing"
	"unsafe"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/frame"
)

// tsoFrame builds a TSO frame as the kernel hands a TUN (no link header)
// or a TAP (Ethernet): one TCP segment of payload bytes, with flags, an
// IPv4 ID of 0x1234, sequence number 1000, a timestamp option, and the
// TCP checksum left partial (the pseudo-header sum), as with
// VIRTIO_NET_HDR_F_NEEDS_CSUM.
func tsoFrame(v6 bool, l2 int, payload []byte, flags header.TCPFlags) []byte {
	src4, dst4 := netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.2.0.1")
	src6, dst6 := netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("2001:db8:2::1")
	const tcpLen = header.TCPMinimumSize + 12
	ipLen := header.IPv4MinimumSize
	if v6 {
		ipLen = header.IPv6MinimumSize
	}
	b := make([]byte, l2+ipLen+tcpLen+len(payload))
	if l2 > 0 {
		typ := header.IPv4ProtocolNumber
		if v6 {
			typ = header.IPv6ProtocolNumber
		}
		header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: "\x02\x00\x00\x00\x00\x02", DstAddr: "\x02\x00\x00\x00\x00\x01", Type: typ})
	}
	var src, dst tcpip.Address
	if v6 {
		src, dst = tcpip.AddrFrom16(src6.As16()), tcpip.AddrFrom16(dst6.As16())
		header.IPv6(b[l2:]).Encode(&header.IPv6Fields{PayloadLength: uint16(tcpLen + len(payload)),
			TransportProtocol: header.TCPProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
	} else {
		src, dst = tcpip.AddrFrom4(src4.As4()), tcpip.AddrFrom4(dst4.As4())
		ip := header.IPv4(b[l2:])
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(ipLen + tcpLen + len(payload)), ID: 0x1234,
			Flags: header.IPv4FlagDontFragment, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	tcp := header.TCP(b[l2+ipLen:])
	tcp.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 5201, SeqNum: 1000, AckNum: 7, DataOffset: tcpLen,
		Flags: flags, WindowSize: 512})
	copy(tcp[header.TCPMinimumSize:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	copy(b[l2+ipLen+tcpLen:], payload)
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+len(payload))))
	return b
}

// slotWith returns a reader with the options opts whose slot 0 holds
// frame, as a read would leave it (its first view, then the overflow),
// and that view; both are released at the test's end.
func slotWith(t *testing.T, opts ReaderOptions, frame []byte) (*reader, *buffer.View) {
	t.Helper()
	r, err := newReader(&Endpoint{}, -1, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.release)
	v := buffer.NewViewSize(r.first)
	t.Cleanup(v.Release)
	n := copy(v.AsSlice(), frame)
	copy(r.overflow, frame[n:])
	return r, v
}

// TestSplitTCP cuts TSO frames as a TUN's and a TAP's reader would and
// checks every segment against what the kernel's tcp_gso_segment makes
// of it: valid IP and TCP checksums (gVisor's checks), contiguous
// sequence numbers over the frame's payload in order, FIN and PSH on the
// last segment only, CWR on the first only, an IPv4 ID advanced per
// segment, and every other header byte as the frame's.
func TestSplitTCP(t *testing.T) {
	const mtu = 1500
	payload := make([]byte, 40*1448+333)
	for i := range payload {
		payload[i] = byte(i*7 + i>>9)
	}
	for _, c := range []struct {
		name    string
		v6      bool
		l2      int
		size    int // payload bytes
		segSize int
		flags   header.TCPFlags
	}{
		{"TUN IPv4, 40 × 1448 and a short last, FIN PSH CWR", false, 0, len(payload), 1448, header.TCPFlagAck | header.TCPFlagPsh | header.TCPFlagFin | header.TCPFlagCwr},
		{"TUN IPv6, 3 × 1428", true, 0, 3 * 1428, 1428, header.TCPFlagAck | header.TCPFlagPsh},
		{"TAP IPv4, within the first view", false, header.EthernetMinimumSize, 2 * 600, 600, header.TCPFlagAck},
	} {
		t.Run(c.name, func(t *testing.T) {
			frame := tsoFrame(c.v6, c.l2, payload[:c.size], c.flags)
			r, v := slotWith(t, ReaderOptions{MTU: mtu, L3: c.l2 == 0}, frame)
			if !r.splitTCP(0, v, len(frame), uint16(c.segSize), "\x02\x00\x00\x00\x00\x01") {
				t.Fatal("splitTCP refused a well-formed frame")
			}
			segs := (c.size + c.segSize - 1) / c.segSize
			if len(r.pkts) != segs {
				t.Fatalf("%d segments, want %d", len(r.pkts), segs)
			}
			ipLen := header.IPv4MinimumSize
			if c.v6 {
				ipLen = header.IPv6MinimumSize
			}
			hl := c.l2 + ipLen + header.TCPMinimumSize + 12
			var got []byte
			for i, pkt := range r.pkts {
				seg := pkt.Data().AsRange().ToSlice()
				last := i == segs-1
				if !pkt.RXChecksumValidated {
					t.Errorf("segment %d not checksum-validated", i)
				}
				var src, dst tcpip.Address
				if c.v6 {
					ip := header.IPv6(seg)
					src, dst = ip.SourceAddress(), ip.DestinationAddress()
					if int(ip.PayloadLength()) != len(seg)-ipLen {
						t.Errorf("segment %d: payload length %d of %d bytes", i, ip.PayloadLength(), len(seg))
					}
				} else {
					ip := header.IPv4(seg)
					src, dst = ip.SourceAddress(), ip.DestinationAddress()
					if !ip.IsChecksumValid() || int(ip.TotalLength()) != len(seg) || ip.ID() != 0x1234+uint16(i) {
						t.Errorf("segment %d: IPv4 checksum valid %v, length %d of %d, ID %#x", i, ip.IsChecksumValid(), ip.TotalLength(), len(seg), ip.ID())
					}
				}
				tcp := header.TCP(seg[ipLen:])
				data := tcp.Payload()
				if !tcp.IsChecksumValid(src, dst, checksum.Checksum(data, 0), uint16(len(data))) {
					t.Errorf("segment %d: TCP checksum invalid", i)
				}
				if want := uint32(1000 + len(got)); tcp.SequenceNumber() != want {
					t.Errorf("segment %d: seq %d, want %d", i, tcp.SequenceNumber(), want)
				}
				wantFlags := c.flags
				if !last {
					wantFlags &^= header.TCPFlagFin | header.TCPFlagPsh
				}
				if i > 0 {
					wantFlags &^= header.TCPFlagCwr
				}
				if tcp.Flags() != wantFlags {
					t.Errorf("segment %d: flags %v, want %v", i, tcp.Flags(), wantFlags)
				}
				// Every other header byte is the frame's: addresses,
				// ports, ACK, window, options.
				fh := frame[c.l2:hl]
				sh := append([]byte(nil), seg[:hl-c.l2]...)
				w := append([]byte(nil), fh...)
				for _, r := range [][2]int{{ipLen + 4, ipLen + 8}, {ipLen + 13, ipLen + 14}, {ipLen + 16, ipLen + 18}} {
					copy(w[r[0]:r[1]], sh[r[0]:r[1]]) // seq, flags, checksum
				}
				if c.v6 {
					copy(w[4:6], sh[4:6])
				} else {
					copy(w[2:6], sh[2:6])
					copy(w[10:12], sh[10:12])
				}
				if !bytes.Equal(sh, w) {
					t.Errorf("segment %d headers %x, want the frame's %x", i, sh, w)
				}
				got = append(got, data...)
				pkt.DecRef()
			}
			if !bytes.Equal(got, payload[:c.size]) {
				t.Errorf("the segments' payloads differ from the frame's")
			}
			if g := r.e.gso.RxTSOFrames.Load(); g != 1 || r.e.gso.RxTSOSegments.Load() != uint64(segs) {
				t.Errorf("counted %d frames, %d segments; want 1, %d", g, r.e.gso.RxTSOSegments.Load(), segs)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		for _, bad := range []struct {
			name  string
			frame []byte
		}{
			{"UDP", func() []byte {
				b := tsoFrame(false, 0, payload[:3000], header.TCPFlagAck)
				b[9] = uint8(header.UDPProtocolNumber)
				return b
			}()},
			{"IP length beyond the frame", tsoFrame(false, 0, payload[:3000], header.TCPFlagAck)[:2000]},
			{"TCP data offset beyond the frame", func() []byte {
				b := tsoFrame(true, 0, payload[:100], header.TCPFlagAck)[:header.IPv6MinimumSize+30]
				header.IPv6(b).SetPayloadLength(30)
				b[header.IPv6MinimumSize+12] = 0xf0 // 60 bytes of TCP header
				return b
			}()},
		} {
			r, v := slotWith(t, ReaderOptions{MTU: mtu, L3: true}, bad.frame)
			if r.splitTCP(0, v, len(bad.frame), 1448, "") || len(r.pkts) != 0 {
				t.Errorf("%s: splitTCP took it", bad.name)
			}
		}
	})
}

// tcpSegs cuts a TSO frame (no link header) into the segments the kernel
// would send, each with its checksums: the writer's test input.
func tcpSegs(t *testing.T, v6 bool, payload []byte, segSize int, flags header.TCPFlags) [][]byte {
	t.Helper()
	frame := tsoFrame(v6, 0, payload, flags)
	r, v := slotWith(t, ReaderOptions{MTU: 1500, L3: true}, frame)
	if !r.splitTCP(0, v, len(frame), uint16(segSize), "") {
		t.Fatal("splitTCP refused the frame")
	}
	var out [][]byte
	for _, pkt := range r.pkts {
		out = append(out, pkt.Data().AsRange().ToSlice())
		pkt.DecRef()
	}
	return out
}

// TestTCPRun checks which runs of TCP segments the TUN writer merges into
// one TSO frame (Linux GRO's rules, tcp_gro_receive), and that a merged
// frame is the run: cut again as the host would (splitTCP), it gives back
// every segment byte for byte.
func TestTCPRun(t *testing.T) {
	payload := make([]byte, 50*1448)
	for i := range payload {
		payload[i] = byte(i*13 + i>>8)
	}
	ack := header.TCPFlagAck
	edit := func(segs [][]byte, i int, f func(ip, tcp []byte)) [][]byte {
		out := make([][]byte, len(segs))
		for k := range segs {
			out[k] = append([]byte(nil), segs[k]...)
		}
		ipLen := header.IPv4MinimumSize
		if out[i][0]>>4 == 6 {
			ipLen = header.IPv6MinimumSize
		}
		f(out[i][:ipLen], out[i][ipLen:])
		return out
	}
	// resum rewrites a segment's TCP checksum after an edit.
	resum := func(ip, tcp []byte) {
		fl := tcpFlow{ipLen: len(ip), tcpLen: int(header.TCP(tcp).DataOffset())}
		seg := append(append([]byte(nil), ip...), tcp...)
		tcpSegmentChecksum(seg, fl)
		copy(tcp, seg[len(ip):])
	}
	six := tcpSegs(t, false, payload[:6*1448], 1448, ack)
	for _, c := range []struct {
		name string
		segs [][]byte
		want int
	}{
		{"six in order", six, 6},
		{"IPv6, four", tcpSegs(t, true, payload[:4*1428], 1428, ack), 4},
		{"alone", six[:1], 1},
		{"PSH on the third ends the run with it", tcpSegs(t, false, payload[:3*1448], 1448, ack|header.TCPFlagPsh), 3},
		{"short third ends the run", tcpSegs(t, false, payload[:2*1448+500], 1448, ack), 3},
		{"first with PSH goes alone", tcpSegs(t, false, payload[:1448], 1448, ack|header.TCPFlagPsh), 1},
		{"FIN goes alone", edit(six, 2, func(ip, tcp []byte) { tcp[13] |= uint8(header.TCPFlagFin); resum(ip, tcp) }), 2},
		{"a gap in sequence ends the run", edit(six, 3, func(ip, tcp []byte) {
			header.TCP(tcp).SetSequenceNumber(header.TCP(tcp).SequenceNumber() + 1)
			resum(ip, tcp)
		}), 3},
		{"another ACK ends the run", edit(six, 2, func(ip, tcp []byte) { header.TCP(tcp).SetAckNumber(8); resum(ip, tcp) }), 2},
		{"another window ends the run", edit(six, 4, func(ip, tcp []byte) { header.TCP(tcp).SetWindowSize(9); resum(ip, tcp) }), 4},
		{"another timestamp ends the run", edit(six, 1, func(ip, tcp []byte) { tcp[27] = 9; resum(ip, tcp) }), 1},
		{"another TTL ends the run", edit(six, 3, func(ip, tcp []byte) {
			ip[8] = 9
			header.IPv4(ip).SetChecksum(0)
			header.IPv4(ip).SetChecksum(^header.IPv4(ip).CalculateChecksum())
		}), 3},
		{"a bad checksum ends the run", edit(six, 2, func(ip, tcp []byte) { tcp[len(tcp)-1] ^= 1 }), 2},
		{"a bad first checksum: alone", edit(six, 0, func(ip, tcp []byte) { tcp[len(tcp)-1] ^= 1 }), 1},
		{"at most an IP length", func() [][]byte {
			// 50 segments, from two TSO frames: the second's sequence
			// numbers continue the first's.
			segs := tcpSegs(t, false, payload[:25*1448], 1448, ack)
			more := tcpSegs(t, false, payload[25*1448:50*1448], 1448, ack)
			for i := range more {
				more = edit(more, i, func(ip, tcp []byte) {
					header.TCP(tcp).SetSequenceNumber(header.TCP(tcp).SequenceNumber() + 25*1448)
					header.IPv4(ip).SetID(header.IPv4(ip).ID() + 25)
					header.IPv4(ip).SetChecksum(0)
					header.IPv4(ip).SetChecksum(^header.IPv4(ip).CalculateChecksum())
					resum(ip, tcp)
				})
			}
			return append(segs, more...)
		}(), 45},
	} {
		// Each run as frames in the caller's bytes and as PacketBuffers
		// with headroom before the packet (as a forwarded one has): the
		// checksum is read both ways.
		for _, kind := range []string{"bytes", "packets"} {
			t.Run(c.name+"/"+kind, func(t *testing.T) {
				frames := make([]frame.Frame, len(c.segs))
				for i, s := range c.segs {
					if kind == "bytes" {
						frames[i] = frame.Frame{Bytes: s}
						continue
					}
					pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 16, Payload: buffer.MakeWithData(s)})
					defer pkt.DecRef()
					frames[i] = frame.Frame{Packet: pkt}
				}
				b := txBatchPool.Get().(*txBatch)
				defer txBatchPool.Put(b)
				b.reset()
				n, s := b.tcpRun(frames)
				if n != c.want {
					t.Fatalf("run of %d, want %d", n, c.want)
				}
				if n == 1 {
					return
				}
				b.addTSOFrame(frames[:n], s)
				// The frame: its virtio_net_hdr, then the iovecs.
				var vh vnetHdr
				vh.decode(b.vnet[0][:])
				var merged []byte
				for _, iov := range b.iovs[1:] {
					merged = append(merged, unsafe.Slice(iov.Base, iov.Len)...)
				}
				wantType := uint8(vnetGSOTCPv4)
				if merged[0]>>4 == 6 {
					wantType = vnetGSOTCPv6
				}
				if vh.gsoType != wantType || vh.flags != vnetNeedsCsum || int(vh.gsoSize) != s.payload || int(vh.hdrLen) != s.f.hdrsLen() ||
					int(vh.csumStart) != s.f.ipLen || vh.csumOffset != 16 || b.pkts[0] != n {
					t.Fatalf("virtio_net_hdr %+v for a run of %d of %d-byte segments", vh, n, s.payload)
				}
				// Cut again as the host would; the segments must come back.
				r, v := slotWith(t, ReaderOptions{MTU: 1500, L3: true}, merged)
				if !r.splitTCP(0, v, len(merged), vh.gsoSize, "") || len(r.pkts) != n {
					t.Fatalf("the merged frame cuts into %d segments, want %d", len(r.pkts), n)
				}
				for i, pkt := range r.pkts {
					if got := pkt.Data().AsRange().ToSlice(); !bytes.Equal(got, c.segs[i]) {
						t.Errorf("segment %d differs after the round trip:\n got %x\nwant %x", i, got[:60], c.segs[i][:60])
					}
					pkt.DecRef()
				}
			})
		}
	}
}
