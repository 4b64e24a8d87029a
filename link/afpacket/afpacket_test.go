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

// sendFrame transmits one broadcast frame of EtherType 0x88b5 on ifname
// from a packet socket of its own.
func sendFrame(ifname string) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	frame := make([]byte, 60)
	copy(frame, "\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x01\x88\xb5")
	sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	return unix.Sendto(fd, frame, 0, sa)
}
