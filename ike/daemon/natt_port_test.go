package daemon

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// floatPeer is an IKE initiator on stack A that behaves as charon does
// with NAT traversal available: IKE_SA_INIT on port 500, then everything
// from and to port 4500 (with the non-ESP marker, RFC 3948 §2.2) whether
// or not a NAT was detected. It counts what reaches its port 500 after
// IKE_SA_INIT.
type floatPeer struct {
	c500, c4500 *gonet.UDPConn
	peer        netip.Addr
	in          chan inMsg
	late500     atomic.Int32 // messages on port 500 after IKE_SA_INIT
	initDone    atomic.Bool
}

func newFloatPeer(t *testing.T, s *stack.Stack, local, peer netip.Addr) *floatPeer {
	t.Helper()
	f := &floatPeer{peer: peer, in: make(chan inMsg, 64)}
	for _, p := range []struct {
		port uint16
		c    **gonet.UDPConn
	}{{IKEPort, &f.c500}, {NATTPort, &f.c4500}} {
		c, err := gonet.DialUDP(s.Stack, &tcpip.FullAddress{Addr: tcpip.AddrFrom4(local.As4()), Port: p.port}, nil, ipv4.ProtocolNumber)
		if err != nil {
			t.Fatal(err)
		}
		*p.c = c
		t.Cleanup(func() { c.Close() })
		go f.read(c, p.port == NATTPort)
	}
	return f
}

func (f *floatPeer) read(c *gonet.UDPConn, natt bool) {
	buf := make([]byte, 65536)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		b := append([]byte(nil), buf[:n]...)
		if natt {
			if len(b) < 4 || b[0]|b[1]|b[2]|b[3] != 0 {
				continue
			}
			b = b[4:]
		} else if f.initDone.Load() {
			f.late500.Add(1)
		}
		f.in <- inMsg{b: b, natt: natt}
	}
}

// Send implements exchange.Transport: IKE_SA_INIT to port 500, the rest
// to 4500.
func (f *floatPeer) Send(msg []byte, _ bool) error {
	h, err := message.DecodeHeader(msg)
	if err != nil {
		return err
	}
	if h.Exchange == message.IKE_SA_INIT {
		_, err = f.c500.WriteTo(msg, net.UDPAddrFromAddrPort(netip.AddrPortFrom(f.peer, IKEPort)))
		return err
	}
	f.initDone.Store(true)
	_, err = f.c4500.WriteTo(append(make([]byte, 4), msg...), net.UDPAddrFromAddrPort(netip.AddrPortFrom(f.peer, NATTPort)))
	return err
}

// Recv implements exchange.Transport.
func (f *floatPeer) Recv(ctx context.Context) ([]byte, bool, error) {
	select {
	case m := <-f.in:
		return m.b, m.natt, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// TestIKEStaysOn4500WithoutNAT: an initiator that floats IKE to port
// 4500 without a NAT (charon always moves IKE_AUTH there) keeps the IKE
// SA on 4500 at the responder (RFC 7296 §2.23: once on 4500, the IKE SA
// stays there): the listing shows port 4500 on both ends, the
// responder's own later request (its Delete) goes to the peer's port
// 4500 and none to 500; and, no NAT being detected, the CHILD SAs are
// not UDP-encapsulated.
func TestIKEStaysOn4500WithoutNAT(t *testing.T) {
	cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone)
	cfgB := connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone)
	b := newBed(t, 4, cfgA, cfgB)
	b.da.Close() // A's ports are the scripted initiator's
	f := newFloatPeer(t, b.a, addrA4, addrB4)
	conn := cfgA.Connections[0]
	xcfg, err := exchangeConfig(cfgA, conn, conn.Children[0], netip.AddrPortFrom(addrA4, IKEPort), netip.AddrPortFrom(addrB4, IKEPort))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := exchange.Initiate(ctx, xcfg, f, exchange.Retransmit{Timeout: 500 * time.Millisecond, Tries: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.NATT {
		t.Fatal("the initiator detected a NAT where there is none")
	}
	s, err := exchange.NewIKESA(res, exchange.SAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B's CHILD SA", 5*time.Second, func() bool { return espSAs(b.b.Engine) == 2 })
	l := b.db.List()
	if len(l.SAs) != 1 {
		t.Fatalf("B's listing:\n%s", l.Format())
	}
	sa := l.SAs[0]
	if sa.Local != netip.AddrPortFrom(addrB4, NATTPort).String() || sa.Remote != netip.AddrPortFrom(addrA4, NATTPort).String() {
		t.Errorf("B lists its IKE SA on %s...%s, want both ends on port 4500", sa.Local, sa.Remote)
	}
	if sa.NATT || len(sa.Children) != 1 || sa.Children[0].Encap {
		t.Errorf("B encapsulates ESP without a NAT:\n%s", l.Format())
	}
	b.b.Engine.SAD.Walk(func(x *xfrm.SA) bool {
		if x.Config.Encap.Type != 0 {
			t.Errorf("B's SA 0x%08x is UDP-encapsulated", x.Config.SPI)
		}
		return true
	})
	// A answers what B sends on 4500 (B's Delete), as charon would.
	deleted := make(chan struct{})
	go func() {
		for {
			select {
			case m := <-f.in:
				if !m.natt {
					continue
				}
				out, evs := s.Handle(m.b, time.Now())
				for _, o := range out {
					f.Send(o, true)
				}
				for _, ev := range evs {
					if _, ok := ev.(exchange.IKEDeleted); ok {
						close(deleted)
						return
					}
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	if err := b.db.Terminate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-deleted:
	case <-time.After(5 * time.Second):
		t.Error("B's Delete never reached A's port 4500")
	}
	if n := f.late500.Load(); n != 0 {
		t.Errorf("B sent %d messages to A's port 500 after IKE moved to 4500", n)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("B's Delete took %v: it was not answered at once", d)
	}
}

// TestForceEncap: with swanctl's encap = yes on A and no NAT between the
// two, A fakes its NAT_DETECTION_SOURCE_IP (as charon does), so both
// sides move IKE to port 4500 and UDP-encapsulate the CHILD SAs; neither
// believes itself behind a NAT (no keepalives), and traffic flows.
func TestForceEncap(t *testing.T) {
	cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone)
	cfgA.Connections[0].Encap = true
	cfgB := connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone)
	b := newBed(t, 4, cfgA, cfgB)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B's CHILD SA", 5*time.Second, func() bool { return espSAs(b.b.Engine) == 2 })
	for side, d := range map[string]*Daemon{"A": b.da, "B": b.db} {
		l := d.List()
		if len(l.SAs) != 1 {
			t.Fatalf("%s's listing:\n%s", side, l.Format())
		}
		sa := l.SAs[0]
		if !sa.NATT || sa.LocalNAT || len(sa.Children) != 1 || !sa.Children[0].Encap {
			t.Errorf("%s: want UDP encapsulation forced, no NAT here:\n%s", side, l.Format())
		}
		if a, err := netip.ParseAddrPort(sa.Local); err != nil || a.Port() != NATTPort {
			t.Errorf("%s's IKE SA is on %s, want port 4500", side, sa.Local)
		}
	}
	for side, e := range map[string]*xfrm.Engine{"A": b.a.Engine, "B": b.b.Engine} {
		e.SAD.Walk(func(x *xfrm.SA) bool {
			if x.Config.Encap.Type != xfrm.EncapESPInUDP {
				t.Errorf("%s's SA 0x%08x is not UDP-encapsulated", side, x.Config.SPI)
			}
			return true
		})
	}
	if _, err := testbed.TCPTransfer(ctx, b.a, addrB4, 64<<10); err != nil {
		t.Fatal(err)
	}
	b.checkLeaks(t)
}
