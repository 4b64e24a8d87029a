//go:build linux

package afpacket_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/afpacket"
	"github.com/ipsecstack/ipsecstack/link/internal/linktest"
	"github.com/ipsecstack/ipsecstack/link/internal/netnstest"
	"github.com/ipsecstack/ipsecstack/link/linkstats"
)

// udpDatagram is one datagram the test sends: its ports, version and
// payload. The frames are built here byte by byte (RFC 791, RFC 8200,
// RFC 768), not with the header package the writer uses.
type udpDatagram struct {
	v6      bool
	dport   uint16
	payload []byte
}

var (
	gsoSrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xaa}
	gsoSrc4   = net.IPv4(192, 0, 2, 2).To4()
	gsoDst4   = net.IPv4(192, 0, 2, 1).To4()
	gsoSrc6   = net.ParseIP("2001:db8::2")
	gsoDst6   = net.ParseIP("2001:db8::1")
)

// frame builds the Ethernet frame of d to dstMAC, with a correct UDP
// checksum (IPv4's optional one included) and IP ID id.
func (d udpDatagram) frame(dstMAC net.HardwareAddr, id uint16) []byte {
	udpLen := 8 + len(d.payload)
	var f []byte
	f = append(f, dstMAC...)
	f = append(f, gsoSrcMAC...)
	var src, dst []byte
	if d.v6 {
		f = append(f, 0x86, 0xdd)
		f = append(f, 0x60, 0, 0, 0)
		f = binary.BigEndian.AppendUint16(f, uint16(udpLen))
		f = append(f, 17, 64)
		src, dst = gsoSrc6, gsoDst6
		f = append(f, src...)
		f = append(f, dst...)
	} else {
		f = append(f, 0x08, 0x00)
		ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0}
		binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
		binary.BigEndian.PutUint16(ip[4:], id)
		ip = append(ip, gsoSrc4...)
		ip = append(ip, gsoDst4...)
		binary.BigEndian.PutUint16(ip[10:], ^linktest.OnesSum(ip, 0))
		f = append(f, ip...)
		src, dst = gsoSrc4, gsoDst4
	}
	u := make([]byte, 8, udpLen)
	binary.BigEndian.PutUint16(u[0:], 4500)
	binary.BigEndian.PutUint16(u[2:], d.dport)
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	u = append(u, d.payload...)
	binary.BigEndian.PutUint16(u[6:], udpChecksum(src, dst, u))
	return append(f, u...)
}

// udpChecksum is the UDP checksum of segment u (its checksum field zero)
// between src and dst (RFC 768, RFC 8200 §8.1).
func udpChecksum(src, dst, u []byte) uint16 {
	var ph []byte
	ph = append(ph, src...)
	ph = append(ph, dst...)
	ph = append(ph, 0, 17)
	ph = binary.BigEndian.AppendUint16(ph, uint16(len(u)))
	s := ^linktest.OnesSum(u, uint32(linktest.OnesSum(ph, 0)))
	if s == 0 {
		s = 0xffff
	}
	return s
}

// frameRecorder is a dispatcher that keeps every IPv4 and IPv6 packet it
// gets (from the IP header on) and whether it came checksum-validated.
type frameRecorder struct {
	mu        sync.Mutex
	pkts      [][]byte
	validated int
}

func (r *frameRecorder) DeliverNetworkPackets(pkts []*stack.PacketBuffer) {
	for _, pkt := range pkts {
		r.DeliverNetworkPacket(pkt.NetworkProtocolNumber, pkt)
	}
}

func (r *frameRecorder) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if proto != 0x0800 && proto != 0x86dd {
		return
	}
	eth := make([]byte, 14)
	binary.BigEndian.PutUint16(eth[12:], uint16(proto))
	if !isTestUDP(append(eth, pkt.Data().AsRange().ToSlice()...)) {
		return // the peer kernel's own IPv6 chatter
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pkts = append(r.pkts, pkt.Data().AsRange().ToSlice())
	if pkt.RXChecksumValidated {
		r.validated++
	}
}
func (*frameRecorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (r *frameRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pkts)
}

// TestUDPSegmentation: with Options.UDPSegmentation, a run of same-sized
// UDP datagrams of one flow (and a shorter last one) leaves as one UDP GSO
// frame, and what arrives is exactly the datagrams sent:
//   - at the Linux kernel's UDP sockets on the other end of the veth,
//     which cut the frame (udp_rcv_segment);
//   - with the veth's checksum offload off (ethtool), cut by the sender's
//     kernel in software with every checksum computed, and verified by the
//     peer kernel, whose veth receive offload is off too;
//   - at our own reader on the other end (PACKET_VNET_HDR), which cuts
//     the frame itself.
//
// Datagrams that may not join a run (another flow, a larger one, IPv4
// vs IPv6) go as frames of their own: a plain capture on the peer counts
// the frames on the wire.
func TestUDPSegmentation(t *testing.T) {
	netnstest.Require(t)
	for _, noOffload := range []bool{false, true} {
		t.Run(fmt.Sprintf("checksum-offload-off=%v", noOffload), func(t *testing.T) {
			testUDPSegmentation(t, noOffload)
		})
	}
}

func testUDPSegmentation(t *testing.T, noOffload bool) {
	gvNS, peerNS, gvIf, peerIf := vethPair(t)
	if noOffload {
		if _, err := exec.LookPath("ethtool"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("ethtool (Debian package ethtool) is needed to turn the veth's offloads off")
			}
			t.Skip("needs ethtool (Debian package ethtool) to turn the veth's offloads off: skipping")
		}
		gvNS.Run(t, "ethtool", "-K", gvIf, "tx", "off")
		peerNS.Run(t, "ethtool", "-K", peerIf, "rx", "off")
	}
	ifc := peerInterface(t, peerNS, peerIf)

	// The datagrams: a run of 20 × 1000 bytes and one of 300, IPv4 to
	// port 7001 (one GSO frame); 3 × 1000 and 2 × 500 to port 7002 (a
	// second flow: the first 500 ends that run as its short last segment;
	// the second goes alone, since the 900 after it is larger); 1 × 900
	// to 7002 (alone); 10 × 1200 IPv6 to 7003 (one frame).
	var sent []udpDatagram
	add := func(v6 bool, port uint16, n, size int) {
		for i := 0; i < n; i++ {
			p := make([]byte, size)
			for j := range p {
				p[j] = byte(len(sent)*7 + j)
			}
			sent = append(sent, udpDatagram{v6: v6, dport: port, payload: p})
		}
	}
	add(false, 7001, 20, 1000)
	add(false, 7001, 1, 300)
	add(false, 7002, 3, 1000)
	add(false, 7002, 2, 500)
	add(false, 7002, 1, 900)
	add(true, 7003, 10, 1200)
	const alone = 2      // frames of one datagram, sent without offload
	const wantFrames = 5 // 7001; 7002 ×1000+500; 7002 500; 7002 900; 7003

	// The peer kernel's sockets, and a plain capture of the frames.
	socks := map[uint16]int{}
	for _, p := range []struct {
		port uint16
		v6   bool
	}{{7001, false}, {7002, false}, {7003, true}} {
		var fd int
		if err := peerNS.Do(func() error {
			var err error
			if p.v6 {
				fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
				if err == nil {
					err = unix.Bind(fd, &unix.SockaddrInet6{Port: int(p.port), Addr: [16]byte(gsoDst6.To16())})
				}
			} else {
				fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
				if err == nil {
					err = unix.Bind(fd, &unix.SockaddrInet4{Port: int(p.port), Addr: [4]byte(gsoDst4)})
				}
			}
			if err == nil {
				err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		socks[p.port] = fd
	}
	capture := openCapture(t, peerNS, ifc.Index)

	// Our reader on the peer's side of the veth (it sees the frames as the
	// kernel there does).
	rec := &frameRecorder{}
	peerEP := open(t, peerNS, peerIf, afpacket.Options{})
	peerEP.Attach(rec)
	defer peerEP.Close()

	ep := open(t, gvNS, gvIf, afpacket.Options{UDPSegmentation: true})
	defer ep.Close()
	var pkts stack.PacketBufferList
	for i, d := range sent {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(d.frame(ifc.HardwareAddr, uint16(100+i)))})
		pkts.PushBack(pkt)
	}
	n, err := ep.WritePackets(pkts)
	pkts.DecRef()
	if err != nil || n != len(sent) {
		t.Fatalf("WritePackets = %d, %v; want %d, nil", n, err, len(sent))
	}

	// The kernel's sockets get every datagram, in order, intact.
	for _, port := range []uint16{7001, 7002, 7003} {
		var want [][]byte
		for _, d := range sent {
			if d.dport == port {
				want = append(want, d.payload)
			}
		}
		buf := make([]byte, 65536)
		for i, w := range want {
			tv := unix.Timeval{Sec: 5}
			unix.SetsockoptTimeval(socks[port], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			m, _, err := unix.Recvfrom(socks[port], buf, 0)
			if err != nil {
				t.Fatalf("port %d: datagram %d of %d: %v (checksum errors dropped it?)", port, i+1, len(want), err)
			}
			if !bytes.Equal(buf[:m], w) {
				t.Fatalf("port %d: datagram %d: got %d bytes, want %d, or other bytes", port, i+1, m, len(w))
			}
		}
	}

	// On the wire: whole GSO frames, or with the offload off, the
	// datagrams the sender's kernel cut, each with a checksum the test
	// verifies itself.
	frames := capture.read(t, 2*time.Second)
	if noOffload {
		if len(frames) != len(sent) {
			t.Fatalf("%d frames on the wire with offload off, want %d (cut by the sender's kernel)", len(frames), len(sent))
		}
		for i, f := range frames {
			if err := checkUDPFrame(f); err != nil {
				t.Errorf("frame %d: %v", i+1, err)
			}
		}
	} else if len(frames) != wantFrames {
		t.Fatalf("%d frames on the wire, want %d", len(frames), wantFrames)
	}

	// Our reader cut the frames into the datagrams sent: same IP and UDP
	// headers but for the IP ID and checksums, same payload.
	deadline := time.Now().Add(5 * time.Second)
	for rec.count() < len(sent) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.pkts) != len(sent) {
		t.Fatalf("our reader delivered %d packets, want %d", len(rec.pkts), len(sent))
	}
	for i, got := range rec.pkts {
		want := sent[i].frame(ifc.HardwareAddr, 0)[14:]
		if err := sameDatagram(got, want); err != nil {
			t.Fatalf("packet %d from our reader: %v", i+1, err)
		}
	}
	// The counters: three GSO frames of all but the lone datagrams, on
	// both ends (with the offload off, the sender's kernel cut them
	// before our reader saw them).
	want := linkstats.GSOCounters{TxFrames: wantFrames - alone, TxDatagrams: uint64(len(sent) - alone),
		RxFrames: wantFrames - alone, RxDatagrams: uint64(len(sent) - alone)}
	if noOffload {
		want.RxFrames, want.RxDatagrams = 0, 0
	}
	tx, rx := ep.(*afpacket.Endpoint).GSOCounters(), peerEP.(*afpacket.Endpoint).GSOCounters()
	if got := (linkstats.GSOCounters{TxFrames: tx.TxFrames, TxDatagrams: tx.TxDatagrams, RxFrames: rx.RxFrames, RxDatagrams: rx.RxDatagrams}); got != want {
		t.Errorf("GSO counters (sender's tx, receiver's rx) %+v, want %+v", got, want)
	}
	if want := len(sent) - alone; !noOffload && rec.validated != want {
		t.Errorf("%d of %d packets delivered checksum-validated, want %d: those cut from GSO frames, whose checksums are partial", rec.validated, len(sent), want)
	}
}

// sameDatagram compares IP packets got and want but for the IPv4 ID and
// header checksum and the UDP checksum, which a segmenter rewrites.
func sameDatagram(got, want []byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d bytes, want %d", len(got), len(want))
	}
	g, w := bytes.Clone(got), bytes.Clone(want)
	udp := 40
	if w[0]>>4 == 4 {
		udp = 20
		for _, b := range [][]byte{g, w} {
			copy(b[4:6], []byte{0, 0})
			copy(b[10:12], []byte{0, 0})
		}
	}
	for _, b := range [][]byte{g, w} {
		copy(b[udp+6:udp+8], []byte{0, 0})
	}
	if !bytes.Equal(g, w) {
		return fmt.Errorf("bytes differ:\n got %x\nwant %x", g[:min(len(g), 64)], w[:min(len(w), 64)])
	}
	return nil
}

// checkUDPFrame verifies an Ethernet frame's IPv4 header checksum and its
// UDP checksum with the test's own sums.
func checkUDPFrame(f []byte) error {
	f = f[14:]
	var src, dst, u []byte
	if f[0]>>4 == 4 {
		if linktest.OnesSum(f[:20], 0) != 0xffff {
			return fmt.Errorf("bad IPv4 header checksum")
		}
		src, dst, u = f[12:16], f[16:20], f[20:binary.BigEndian.Uint16(f[2:])]
	} else {
		src, dst, u = f[8:24], f[24:40], f[40:40+binary.BigEndian.Uint16(f[4:])]
	}
	c := bytes.Clone(u)
	got := binary.BigEndian.Uint16(c[6:])
	c[6], c[7] = 0, 0
	if want := udpChecksum(src, dst, c); got != want {
		return fmt.Errorf("UDP checksum %#04x, want %#04x", got, want)
	}
	return nil
}

// peerInterface looks the peer's interface up inside its namespace.
func peerInterface(t *testing.T, ns *netnstest.NS, name string) *net.Interface {
	var ifc *net.Interface
	if err := ns.Do(func() (err error) {
		ifc, err = net.InterfaceByName(name)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ifc
}

// capture is a plain packet socket (no PACKET_VNET_HDR) on an interface,
// as tcpdump opens one: it sees a GSO frame whole.
type capture struct{ fd int }

func openCapture(t *testing.T, ns *netnstest.NS, ifindex int) *capture {
	c := &capture{}
	if err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP))<<0)
		if err != nil {
			return err
		}
		c.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex})
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(c.fd) })
	return c
}

// read returns the IPv4 and IPv6 frames received until quiet for wait.
func (c *capture) read(t *testing.T, wait time.Duration) [][]byte {
	var frames [][]byte
	buf := make([]byte, 1<<17)
	tv := unix.NsecToTimeval(wait.Nanoseconds())
	unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	for {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			return frames
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if isTestUDP(buf[:n]) {
			frames = append(frames, bytes.Clone(buf[:n]))
		}
	}
}

// isTestUDP reports whether frame f is a UDP datagram to the test's
// ports 7001-7003 (not the peer kernel's own IPv6 chatter).
func isTestUDP(f []byte) bool {
	if len(f) < 14+40+8 {
		return false
	}
	var port uint16
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		if f[14+9] != 17 {
			return false
		}
		port = binary.BigEndian.Uint16(f[14+20+2:])
	case 0x86dd:
		if f[14+6] != 17 {
			return false
		}
		port = binary.BigEndian.Uint16(f[14+40+2:])
	default:
		return false
	}
	return port >= 7001 && port <= 7003
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
