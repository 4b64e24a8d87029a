//go:build linux

package tap_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/internal/linktest"
	"github.com/ipsecstack/ipsecstack/link/internal/netnstest"
	"github.com/ipsecstack/ipsecstack/link/tap"
	"net/netip"
)

// TestUDPSegmentation: UDP GSO through a TAP both ways, against the
// Linux kernel on the device's other side.
//   - In: a kernel UDP socket with UDP_SEGMENT (udp(7)) sends 10 × 1000
//     bytes and a last 300 in one sendmsg, to the stack over IPv4 and
//     IPv6. The TAP (TUNSETOFFLOAD with USO) hands the frame over whole;
//     the reader cuts it, and the stack's UDP sockets get each datagram
//     intact (the stack verifies IPv6 UDP checksums: the reader computed
//     them).
//   - Out: with Options.UDPSegmentation, 8 equal datagrams the endpoint
//     writes leave as one GSO frame, and the kernel's socket reads them
//     one by one.
func TestUDPSegmentation(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t)
	name := netnstest.UniqueName("tp")
	mac := tcpip.LinkAddress("\x02\x11\x22\x33\x44\x56")
	ep := openIn(t, ns, name, tap.Options{Address: mac, UDPSegmentation: true})
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", name)
	ns.Run(t, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", name, "nodad")
	s := linktest.NewStack(t, ep, netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8::2/64"))
	tp := ep.(*tap.Endpoint)

	sizes := []int{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 300}
	var gso bytes.Buffer
	for i, n := range sizes {
		gso.Write(bytes.Repeat([]byte{byte(i + 1)}, n))
	}
	for _, c := range []struct {
		name   string
		stack  netip.Addr
		kernel string
		proto  tcpip.NetworkProtocolNumber
	}{
		{"ipv4", netip.MustParseAddr("192.0.2.2"), "192.0.2.1", ipv4.ProtocolNumber},
		{"ipv6", netip.MustParseAddr("2001:db8::2"), "2001:db8::1", ipv6.ProtocolNumber},
	} {
		t.Run("in/"+c.name, func(t *testing.T) {
			before := tp.GSOCounters()
			conn, err := gonet.DialUDP(s, &tcpip.FullAddress{Addr: linktest.Addr(c.stack), Port: 7100}, nil, c.proto)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := ns.Do(func() error {
				u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(c.kernel)})
				if err != nil {
					return err
				}
				defer u.Close()
				raw, err := u.SyscallConn()
				if err != nil {
					return err
				}
				var serr error
				raw.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 1000)
				})
				if serr != nil {
					return serr
				}
				_, err = u.WriteToUDP(gso.Bytes(), &net.UDPAddr{IP: c.stack.AsSlice(), Port: 7100})
				return err
			}); err != nil {
				t.Fatalf("kernel UDP_SEGMENT send: %v", err)
			}
			buf := make([]byte, 2000)
			for i, n := range sizes {
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				m, err := conn.Read(buf)
				if err != nil {
					t.Fatalf("datagram %d of %d: %v", i+1, len(sizes), err)
				}
				if !bytes.Equal(buf[:m], bytes.Repeat([]byte{byte(i + 1)}, n)) {
					t.Fatalf("datagram %d: %d bytes, want %d of %d", i+1, m, n, i+1)
				}
			}
			after := tp.GSOCounters()
			if after.RxFrames == before.RxFrames || after.RxDatagrams-before.RxDatagrams != uint64(len(sizes)) {
				t.Errorf("GSO counters %+v -> %+v: want one frame of %d datagrams cut by the reader", before, after, len(sizes))
			}
		})
	}

	t.Run("out", func(t *testing.T) {
		var kernelMAC net.HardwareAddr
		var fd int
		if err := ns.Do(func() error {
			ifc, err := net.InterfaceByName(name)
			if err != nil {
				return err
			}
			kernelMAC = ifc.HardwareAddr
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			return unix.Bind(fd, &unix.SockaddrInet4{Port: 7200, Addr: [4]byte{192, 0, 2, 1}})
		}); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		before := tp.GSOCounters()
		var pkts stack.PacketBufferList
		for i := 0; i < 8; i++ {
			pkts.PushBack(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(udp4Frame(kernelMAC, mac, uint16(i), bytes.Repeat([]byte{byte(0x40 + i)}, 900)))}))
		}
		n, err := tp.WritePackets(pkts)
		pkts.DecRef()
		if err != nil || n != 8 {
			t.Fatalf("WritePackets = %d, %v", n, err)
		}
		buf := make([]byte, 2000)
		tv := unix.Timeval{Sec: 5}
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		for i := 0; i < 8; i++ {
			m, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				t.Fatalf("kernel socket: datagram %d of 8: %v", i+1, err)
			}
			if !bytes.Equal(buf[:m], bytes.Repeat([]byte{byte(0x40 + i)}, 900)) {
				t.Fatalf("kernel socket: datagram %d: %d bytes, or other bytes", i+1, m)
			}
		}
		if after := tp.GSOCounters(); after.TxFrames-before.TxFrames != 1 || after.TxDatagrams-before.TxDatagrams != 8 {
			t.Errorf("GSO counters %+v -> %+v: want one frame of 8 datagrams", before, after)
		}
	})
}

// udp4Frame builds an Ethernet frame of a UDP datagram from 192.0.2.2:7201
// to 192.0.2.1:7200 with IP ID id and no UDP checksum (RFC 768, RFC 791),
// byte by byte.
func udp4Frame(dst net.HardwareAddr, src tcpip.LinkAddress, id uint16, payload []byte) []byte {
	f := append(append([]byte{}, dst...), src...)
	f = append(f, 0x08, 0x00)
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 2, 192, 0, 2, 1}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], id)
	binary.BigEndian.PutUint16(ip[10:], ^linktest.OnesSum(ip, 0))
	u := []byte{0x1c, 0x21, 0x1c, 0x20, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	return append(append(append(f, ip...), u...), payload...)
}
