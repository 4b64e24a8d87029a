//go:build linux

package tap_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/internal/linktest"
	"github.com/ipsecstack/ipsecstack/link/internal/netnstest"
	"github.com/ipsecstack/ipsecstack/link/tap"
)

func TestBadName(t *testing.T) {
	for _, name := range []string{"", "tap%d", "a-name-that-is-far-too-long"} {
		if _, err := tap.Open(name, tap.Options{}); err == nil || !strings.Contains(err.Error(), "invalid device name") {
			t.Errorf("Open(%q) error = %v", name, err)
		}
	}
}

func openIn(t *testing.T, ns *netnstest.NS, name string, opts tap.Options) stack.LinkEndpoint {
	t.Helper()
	var ep stack.LinkEndpoint
	if err := ns.Do(func() (err error) {
		ep, err = tap.Open(name, opts)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ep
}

// TestLinuxPeer runs a gVisor stack on a TAP device whose kernel side holds
// the peer addresses, in a namespace of its own; see netnstest.CheckPeer for
// what is proven. Before the checks, the kernel sends a unicast frame for a
// MAC that is not ours into the TAP: the TX filter must keep it from
// stopping fdbased's reader.
func TestLinuxPeer(t *testing.T) {
	netnstest.Require(t, "ping")
	ns := netnstest.New(t)
	name := netnstest.UniqueName("tp")
	mac := tcpip.LinkAddress("\x02\x11\x22\x33\x44\x55")
	ep := openIn(t, ns, name, tap.Options{MTU: 1400, Address: mac})
	if ep.MTU() != 1400 || ep.LinkAddress() != mac {
		t.Errorf("MTU %d, MAC %v", ep.MTU(), ep.LinkAddress())
	}
	if out := ns.Run(t, "ip", "link", "show", name); !strings.Contains(out, "mtu 1400") || !strings.Contains(out, ",UP") {
		t.Errorf("kernel side not up with mtu 1400: %s", out)
	}
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", name)
	ns.Run(t, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", name, "nodad")
	s := linktest.NewStack(t, ep, netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8::2/64"))

	if err := ns.Do(func() error { return sendUnicast(name, "\x02\x99\x99\x99\x99\x99") }); err != nil {
		t.Fatal(err)
	}
	netnstest.CheckPeer(t, s, ns, netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.1"))
	netnstest.CheckPeer(t, s, ns, netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::1"))
}

// TestRandomMACAndCleanup checks the generated MAC is unicast and locally
// administered, and that closing the endpoint removes the device it made.
func TestRandomMACAndCleanup(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t)
	name := netnstest.UniqueName("tp")
	ep := openIn(t, ns, name, tap.Options{})
	mac := ep.LinkAddress()
	if len(mac) != 6 || mac[0]&1 != 0 || mac[0]&2 == 0 {
		t.Errorf("generated MAC %v: want unicast, locally administered", mac)
	}
	if ep.MTU() != 1500 {
		t.Errorf("MTU %d, want the new TAP's 1500", ep.MTU())
	}
	ep.Close()
	ep.Wait()
	if out, err := ns.Try("ip", "link", "show", name); err == nil {
		t.Errorf("device still there after Close: %s", out)
	}
}

// sendUnicast transmits a frame for dst on ifname, as a stale neighbour
// entry or a bridge flooding would.
func sendUnicast(ifname string, dst string) error {
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
	copy(frame, dst)
	copy(frame[6:], ifi.HardwareAddr)
	copy(frame[12:], "\x88\xb5")
	sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
	copy(sa.Addr[:], dst)
	return unix.Sendto(fd, frame, 0, sa)
}

// TestKernelDropsCounted checks that frames the kernel drops on their way
// to the stack (the TAP's queue full: here nobody reads it) are counted,
// never silent.
func TestKernelDropsCounted(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t)
	name := netnstest.UniqueName("tp")
	mac := tcpip.LinkAddress("\x02\x11\x22\x33\x44\x55")
	ep := openIn(t, ns, name, tap.Options{Address: mac}).(*tap.Endpoint)
	defer ep.Close()
	if out := ns.Run(t, "ip", "link", "show", name); !strings.Contains(out, fmt.Sprintf("qlen %d", tap.DefaultTxQueueLen)) {
		t.Errorf("txqueuelen not raised to %d: %s", tap.DefaultTxQueueLen, out)
	}
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", name)
	ns.Run(t, "ip", "neigh", "replace", "192.0.2.2", "lladdr", "02:11:22:33:44:55", "dev", name, "nud", "permanent")
	if n := ep.KernelDrops(); n != 0 {
		t.Fatalf("%d drops before any traffic", n)
	}
	const burst = 3 * tap.DefaultTxQueueLen // the TAP queues DefaultTxQueueLen frames
	if err := ns.Do(func() error {
		c, err := net.Dial("udp", "192.0.2.2:9")
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < burst; i++ {
			c.Write([]byte("x"))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := ep.KernelDrops(); n < burst/2 || n > burst {
		t.Errorf("KernelDrops %d after %d frames into an unread TAP, want most of them", n, burst)
		t.Log(ns.Run(t, "ip", "-s", "link", "show", name))
	}
}
