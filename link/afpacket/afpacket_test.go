//go:build linux

package afpacket_test

import (
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/afpacket"
	"github.com/ipsecstack/ipsecstack/link/internal/linktest"
	"github.com/ipsecstack/ipsecstack/link/internal/netnstest"
)

func TestMissingInterface(t *testing.T) {
	_, err := afpacket.Open("nosuchif0", afpacket.Options{})
	if err == nil || err.Error() != `afpacket: interface "nosuchif0": no such network interface` {
		t.Fatalf("Open(nosuchif0) error = %v", err)
	}
	_, err = afpacket.Open("lo", afpacket.Options{})
	if err == nil || !strings.Contains(err.Error(), "not an Ethernet interface") {
		// lo has an all-zero 6-byte address on Linux: accept either
		// outcome, but a permission error must say so.
		if err != nil && !strings.Contains(err.Error(), "needs root") {
			t.Logf("Open(lo): %v", err)
		}
	}
}

// vethPair creates gvNS (the gVisor side, no kernel addresses, IPv6 off) and
// peerNS (Linux with 192.0.2.1/24 and 2001:db8::1/64), joined by a veth pair.
func vethPair(t *testing.T) (gvNS, peerNS *netnstest.NS, gvIf, peerIf string) {
	gvNS, peerNS = netnstest.New(t), netnstest.New(t)
	gvIf, peerIf = netnstest.UniqueName("vg"), netnstest.UniqueName("vp")
	netnstest.Run(t, "ip", "link", "add", gvIf, "netns", gvNS.Name, "type", "veth", "peer", "name", peerIf, "netns", peerNS.Name)
	gvNS.Run(t, "sysctl", "-qw", "net.ipv6.conf."+gvIf+".disable_ipv6=1")
	gvNS.Run(t, "ip", "link", "set", gvIf, "up")
	peerNS.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", peerIf)
	peerNS.Run(t, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", peerIf, "nodad")
	peerNS.Run(t, "ip", "link", "set", peerIf, "up")
	return
}

func open(t *testing.T, ns *netnstest.NS, ifname string, opts afpacket.Options) stack.LinkEndpoint {
	t.Helper()
	var ep stack.LinkEndpoint
	if err := ns.Do(func() (err error) {
		ep, err = afpacket.Open(ifname, opts)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ep
}

// TestVethLinuxPeer runs a gVisor stack on one end of a veth pair and the
// Linux stack on the other; see netnstest.CheckPeer for what is proven.
func TestVethLinuxPeer(t *testing.T) {
	netnstest.Require(t, "ping")
	for _, sockets := range []int{1, 2} {
		gvNS, peerNS, gvIf, _ := vethPair(t)
		ep := open(t, gvNS, gvIf, afpacket.Options{RXChecksumOffload: true, Sockets: sockets})
		if ep.MTU() != 1500 || ep.Capabilities()&stack.CapabilityResolutionRequired == 0 {
			t.Errorf("MTU %d, caps %v", ep.MTU(), ep.Capabilities())
		}
		s := linktest.NewStack(t, ep, netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8::2/64"))
		netnstest.CheckPeer(t, s, peerNS, netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.1"))
		netnstest.CheckPeer(t, s, peerNS, netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::1"))
	}
}

type counter struct{ n, own atomic.Int32 }

func (c *counter) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.n.Add(1)
	if string(pkt.LinkHeader().Slice()[12:14]) == "\x88\xb5" { // IEEE local experimental
		c.own.Add(1)
	}
}
func (*counter) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestIgnoresOutgoing checks that frames the host transmits on the
// interface (here from another packet socket) are not read as received,
// while frames arriving from the wire are.
func TestIgnoresOutgoing(t *testing.T) {
	netnstest.Require(t)
	for _, sockets := range []int{1, 2} {
		gvNS, peerNS, gvIf, peerIf := vethPair(t)
		ep := open(t, gvNS, gvIf, afpacket.Options{Sockets: sockets})
		var c counter
		ep.Attach(&c)
		defer ep.Close()

		sendBroadcast := func(ns *netnstest.NS, ifname string) {
			t.Helper()
			if err := ns.Do(func() error {
				return sendFrame(ifname)
			}); err != nil {
				t.Fatal(err)
			}
		}
		sendBroadcast(gvNS, gvIf) // outgoing on our interface: must be ignored
		time.Sleep(200 * time.Millisecond)
		if got := c.own.Load(); got != 0 {
			t.Fatalf("sockets=%d: read %d of the host's own outgoing frames", sockets, got)
		}
		sendBroadcast(peerNS, peerIf) // arrives on our interface: must be seen
		deadline := time.Now().Add(5 * time.Second)
		for c.own.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := c.own.Load(); got != 1 {
			t.Fatalf("sockets=%d: received %d incoming test frames, want 1", sockets, got)
		}
	}
}

// TestKernelDropsCounted checks that frames the kernel drops for a full
// socket receive buffer are counted (PACKET_STATISTICS), never silent, and
// that the default buffer holds a burst the kernel's default (208 KiB)
// does not. The endpoint is left unattached, so no reader drains it and
// the burst must fit in the buffer.
func TestKernelDropsCounted(t *testing.T) {
	netnstest.Require(t)
	const burst = 1000 // 1000 frames of 60 bytes take some 700 KB of truesize: > 208 KiB
	for _, tc := range []struct {
		name      string
		rcvbuf    int
		wantDrops bool
	}{
		{"tiny buffer", 1, true}, // the kernel's minimum, a few frames
		{"default buffer", 0, false},
	} {
		gvNS, peerNS, gvIf, peerIf := vethPair(t)
		ep := open(t, gvNS, gvIf, afpacket.Options{RcvBuf: tc.rcvbuf}).(*afpacket.Endpoint)
		if err := peerNS.Do(func() error { return sendFrames(peerIf, burst) }); err != nil {
			t.Fatal(err)
		}
		var st afpacket.Stats
		deadline := time.Now().Add(5 * time.Second)
		for {
			st = ep.Stats()
			if st.Received >= burst || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if st.Received < burst {
			t.Errorf("%s: kernel counted %d frames received, want %d", tc.name, st.Received, burst)
		}
		if tc.wantDrops && (st.Dropped == 0 || st.Dropped > st.Received) {
			t.Errorf("%s: %+v, want drops counted", tc.name, st)
		}
		if !tc.wantDrops && st.Dropped != 0 {
			t.Errorf("%s: %+v, want no drops", tc.name, st)
		}
		if got := ep.KernelDrops(); got != st.Dropped {
			t.Errorf("%s: KernelDrops %d, Stats.Dropped %d", tc.name, got, st.Dropped)
		}
		ep.Close()
		if got := ep.Stats(); got != st {
			t.Errorf("%s: after Close: %+v, want the last counters %+v", tc.name, got, st)
		}
	}
}

// viewCounter records how many buffer views the test frames arrive in.
type viewCounter struct{ views chan int }

func (c *viewCounter) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if string(pkt.LinkHeader().Slice()[12:14]) == "\x88\xb5" {
		c.views <- len(pkt.AsSlices())
	}
}
func (*viewCounter) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestFullFrameOneView checks that a full-size frame is received into one
// buffer view, so that the IPsec wrapper's PullUp of the datagram costs
// no copy. With fdbased's default buffer shape (128, 256, 256, 512, ...)
// a 1514-byte frame came in five views.
func TestFullFrameOneView(t *testing.T) {
	netnstest.Require(t)
	gvNS, peerNS, gvIf, peerIf := vethPair(t)
	ep := open(t, gvNS, gvIf, afpacket.Options{})
	c := &viewCounter{views: make(chan int, 1)}
	ep.Attach(c)
	defer ep.Close()
	if err := peerNS.Do(func() error { return sendFramesOfSize(peerIf, 1, 1514) }); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-c.views:
		if n != 1 {
			t.Errorf("a 1514-byte frame arrived in %d views, want 1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("frame not received")
	}
}

// sendFrame transmits one broadcast frame of EtherType 0x88b5 on ifname
// from a packet socket of its own.
func sendFrame(ifname string) error { return sendFrames(ifname, 1) }

// sendFrames transmits n broadcast frames of EtherType 0x88b5 on ifname.
func sendFrames(ifname string, n int) error { return sendFramesOfSize(ifname, n, 60) }

// sendFramesOfSize transmits n broadcast frames of size bytes, EtherType
// 0x88b5, on ifname.
func sendFramesOfSize(ifname string, n, size int) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	frame := make([]byte, size)
	copy(frame, "\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x01\x88\xb5")
	sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	for i := 0; i < n; i++ {
		if err := unix.Sendto(fd, frame, 0, sa); err != nil {
			return err
		}
	}
	return nil
}
