//go:build linux

package netnstest

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/internal/linktest"
)

// CheckPeer proves that the gVisor stack s (holding gv) and the Linux stack
// in peer (holding lx) talk over the link: the Linux ping command reaches
// gv, a gVisor ping reaches lx, and 1 MiB of TCP goes each way (which checks
// that checksums on received frames are handled: veth hands us partial
// ones). gv and lx must be the same family.
func CheckPeer(t *testing.T, s *stack.Stack, peer *NS, gv, lx netip.Addr) {
	t.Helper()
	fam := "-4"
	if gv.Is6() {
		fam = "-6"
	}
	// The first echo may wait for ARP/NDP; ping -c 2 must get both.
	var out string
	var err error
	for i := 0; i < 3; i++ {
		if out, err = peer.Try("ping", fam, "-c", "2", "-i", "0.2", "-W", "2", gv.String()); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("Linux ping %v: %v\n%s", gv, err, out)
	}
	if err := linktest.Ping(s, lx, 5*time.Second); err != nil {
		t.Fatalf("gVisor ping %v: %v", lx, err)
	}

	// Linux → gVisor.
	gln, err := gonet.ListenTCP(s, tcpip.FullAddress{NIC: linktest.NICID, Addr: linktest.Addr(gv), Port: 7001}, linktest.Proto(gv))
	if err != nil {
		t.Fatalf("gVisor listen: %v", err)
	}
	linktest.Transfer(t, gln, func(ctx context.Context) (net.Conn, error) {
		var c net.Conn
		err := peer.Do(func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, "tcp", net.JoinHostPort(gv.String(), "7001"))
			return err
		})
		return c, err
	}, 1<<20)

	// gVisor → Linux.
	var lln net.Listener
	if err := peer.Do(func() error {
		var err error
		lln, err = net.Listen("tcp", net.JoinHostPort(lx.String(), strconv.Itoa(7002)))
		return err
	}); err != nil {
		t.Fatalf("Linux listen: %v", err)
	}
	linktest.Transfer(t, lln, func(ctx context.Context) (net.Conn, error) {
		return gonet.DialContextTCP(ctx, s, tcpip.FullAddress{NIC: linktest.NICID, Addr: linktest.Addr(lx), Port: 7002}, linktest.Proto(lx))
	}, 1<<20)
}
