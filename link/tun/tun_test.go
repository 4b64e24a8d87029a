//go:build linux

package tun_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/internal/linktest"
	"github.com/ipsecstack/ipsecstack/link/internal/netnstest"
	"github.com/ipsecstack/ipsecstack/link/tun"
)

func TestBadName(t *testing.T) {
	for _, name := range []string{"", "tun%d", "a/b", "a-name-that-is-far-too-long"} {
		if _, err := tun.Open(name, tun.Options{}); err == nil || !strings.Contains(err.Error(), "invalid device name") {
			t.Errorf("Open(%q) error = %v", name, err)
		}
	}
}

func openIn(t *testing.T, ns *netnstest.NS, name string, opts tun.Options) stack.LinkEndpoint {
	t.Helper()
	var ep stack.LinkEndpoint
	if err := ns.Do(func() (err error) {
		ep, err = tun.Open(name, opts)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ep
}

// TestLinuxPeer runs a gVisor stack on a TUN device whose kernel side holds
// the peer addresses, in a namespace of its own: the link is L3 (no link
// address, no ARP or NDP: the stack reaches the kernel without resolving
// anything) and carries IPv4 and IPv6 both ways; see netnstest.CheckPeer
// for what is proven.
func TestLinuxPeer(t *testing.T) {
	netnstest.Require(t, "ping")
	ns := netnstest.New(t)
	name := netnstest.UniqueName("tn")
	ep := openIn(t, ns, name, tun.Options{MTU: 1400})
	if ep.MTU() != 1400 || ep.LinkAddress() != "" || ep.MaxHeaderLength() != 0 {
		t.Errorf("MTU %d, link address %q, header %d: want 1400, none, 0", ep.MTU(), ep.LinkAddress(), ep.MaxHeaderLength())
	}
	if ep.Capabilities()&stack.CapabilityResolutionRequired != 0 {
		t.Errorf("capabilities %#x ask for neighbour resolution on an L3 link", ep.Capabilities())
	}
	if out := ns.Run(t, "ip", "link", "show", name); !strings.Contains(out, "mtu 1400") || !strings.Contains(out, ",UP") || !strings.Contains(out, "link/none") {
		t.Errorf("kernel side not an L3 device up with mtu 1400: %s", out)
	} else if want := fmt.Sprintf("qlen %d", tun.DefaultTxQueueLen); !strings.Contains(out, want) {
		t.Errorf("kernel side without %s (DefaultTxQueueLen): %s", want, out)
	}
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", name)
	ns.Run(t, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", name, "nodad")
	s := linktest.NewStack(t, ep, netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8::2/64"))
	netnstest.CheckPeer(t, s, ns, netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.1"))
	netnstest.CheckPeer(t, s, ns, netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::1"))
	g := ep.(*tun.Endpoint).GSOCounters()
	t.Logf("TSO: %d frames cut into %d segments; %d frames written, merging %d", g.RxTSOFrames, g.RxTSOSegments, g.TxTSOFrames, g.TxTSOSegments)
}

// TestCleanup checks that closing the endpoint removes the device it made.
func TestCleanup(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t)
	name := netnstest.UniqueName("tn")
	ep := openIn(t, ns, name, tun.Options{})
	if ep.MTU() != 1500 {
		t.Errorf("MTU %d, want the new TUN's 1500", ep.MTU())
	}
	ep.Close()
	ep.Wait()
	if out, err := ns.Try("ip", "link", "show", name); err == nil {
		t.Errorf("device still there after Close: %s", out)
	}
}

// TestKernelDropsCounted: packets the kernel could not queue to a TUN
// nobody reads (its txqueuelen is full) show in KernelDrops, which the
// daemon reports as LinkRxKernelDrops: a drop on the --tun side is never
// silent (issue 11).
func TestKernelDropsCounted(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t)
	name := netnstest.UniqueName("tn")
	ep := openIn(t, ns, name, tun.Options{TxQueueLen: 500}).(*tun.Endpoint)
	defer ep.Close()
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", name)
	if n := ep.KernelDrops(); n != 0 {
		t.Fatalf("%d drops before any traffic", n)
	}
	const burst = 2000 // the TUN queues 500 (txqueuelen) packets
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
		t.Errorf("KernelDrops %d after %d packets into an unread TUN, want most of them", n, burst)
		t.Log(ns.Run(t, "ip", "-s", "link", "show", name))
	}
}
