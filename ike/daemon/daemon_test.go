package daemon

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/internal/leakcheck"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/link/memlink"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

var (
	addrA4 = netip.MustParseAddr("192.0.2.1")
	addrB4 = netip.MustParseAddr("192.0.2.2")
	addrA6 = netip.MustParseAddr("2001:db8::1")
	addrB6 = netip.MustParseAddr("2001:db8::2")
)

// bed is two stacks on a memlink, each with a daemon, and a leak
// detector on each side's output.
type bed struct {
	a, b       *stack.Stack
	da, db     *Daemon
	leakA      *leakcheck.Checker
	leakB      *leakcheck.Checker
	mu         sync.Mutex
	ikeFrames  int
	keyLines   []string
	cancel     context.CancelFunc
	linkA      *memlink.Endpoint
	closeOnce  sync.Once
	closeFuncs []func()
}

// Suites both sides configure first (the daemon takes the first
// transform of each type until multi-proposal lands): strongSwan's
// default IKE proposal and AES-GCM-128 ESP.
func ikeProposal() []message.Proposal {
	return []message.Proposal{{Num: 1, Protocol: message.ProtoIKE, Transforms: []message.Transform{
		{Type: message.TransformENCR, ID: message.ENCR_AES_CBC, Attributes: []message.Attribute{message.KeyLengthAttr(128)}},
		{Type: message.TransformINTEG, ID: message.AUTH_HMAC_SHA2_256_128},
		{Type: message.TransformPRF, ID: message.PRF_HMAC_SHA2_256},
		{Type: message.TransformKE, ID: message.KE_CURVE25519},
	}}}
}

func espProposal() []message.Proposal {
	return []message.Proposal{{Num: 1, Protocol: message.ProtoESP, Transforms: []message.Transform{
		{Type: message.TransformENCR, ID: message.ENCR_AES_GCM_16, Attributes: []message.Attribute{message.KeyLengthAttr(128)}},
		{Type: message.TransformESN, ID: message.ESN_NO},
	}}}
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// connConfig is one side's configuration: a connection "peer" with one
// child "net" between the two hosts.
func connConfig(local, remote netip.Addr, localID, remoteID string, mode xfrm.Mode, start config.StartAction) *config.Config {
	c := &config.Connection{Name: "peer", LocalAddrs: []netip.Prefix{host(local)}, RemoteAddrs: []netip.Prefix{host(remote)},
		Proposals: ikeProposal(),
		Local:     []*config.Auth{{Method: config.AuthPSK, ID: exchange.FQDN(localID)}},
		Remote:    []*config.Auth{{Method: config.AuthPSK, ID: exchange.FQDN(remoteID)}},
		Children: []*config.Child{{Name: "net", Mode: mode, Proposals: espProposal(), StartAction: start,
			RekeyTime: time.Hour, LifeTime: 66 * time.Minute}}}
	return &config.Config{Connections: []*config.Connection{c},
		Secrets: []*config.Secret{{Type: "ike", IDs: []exchange.Identity{exchange.FQDN(localID), exchange.FQDN(remoteID)}, Data: []byte("a shared key, 32 bytes or so....")}}}
}

func testLogger(t testing.TB, name string) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", name)
	}
	return nil
}

// newBed builds the stacks and daemons; cfgA and cfgB are the two sides'
// configurations. Protected flows for the leak detector: everything
// between A and B but IKE (UDP 500/4500) and neighbour discovery.
func newBed(t testing.TB, fam int, cfgA, cfgB *config.Config) *bed {
	t.Helper()
	return newBedWith(t, fam, cfgA, cfgB, nil, nil)
}

// newBedWith is newBed with A's link wrapped (a NAT) and both daemons'
// options adjusted.
func newBedWith(t testing.TB, fam int, cfgA, cfgB *config.Config, wrapA func(gstack.LinkEndpoint) gstack.LinkEndpoint, opt func(*Options)) *bed {
	t.Helper()
	la, lb := memlink.NewPairWithOptions("\x02\x00\x00\x00\x00\x01", "\x02\x00\x00\x00\x00\x02", memlink.Options{MTU: 1500, QueueLen: 4096})
	mk := func(l gstack.LinkEndpoint, a4, a6 netip.Addr) *stack.Stack {
		// No TxQueue: concurrent senders write through the IPsec
		// wrapper themselves, which keeps ESP sequence numbers in order
		// on the link (stack.Endpoint.WritePackets) for the 32-packet
		// replay windows of these SAs.
		s, err := stack.New(stack.Config{Link: l, Addrs: []netip.Prefix{netip.PrefixFrom(a4, 24), netip.PrefixFrom(a6, 64)}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var linkA gstack.LinkEndpoint = la
	if wrapA != nil {
		linkA = wrapA(la)
	}
	b := &bed{a: mk(linkA, addrA4, addrA6), b: mk(lb, addrB4, addrB6), linkA: la}
	t.Cleanup(b.close)
	A, B := addrA4, addrB4
	if fam == 6 {
		A, B = addrA6, addrB6
	}
	flows := []leakcheck.Flow{
		{Name: "ike", Proto: 17, SrcPort: leakcheck.Between(500, 500), Both: true, Clear: true},
		{Name: "ike-natt", Proto: 17, SrcPort: leakcheck.Between(4500, 4500), Both: true, Clear: true},
		{Name: "ndp", Proto: 58, ICMPType: leakcheck.Between(133, 137), Clear: true},
		{Name: "a<->b", Src: host(A), Dst: host(B), Both: true},
	}
	b.leakA = leakcheck.New(leakcheck.Config{Flows: flows})
	b.leakB = leakcheck.New(leakcheck.Config{Flows: flows})
	la.SetTap(func(dir memlink.Direction, f []byte) {
		if dir == memlink.Out {
			b.leakA.Frame(f)
		}
	})
	lb.SetTap(func(dir memlink.Direction, f []byte) {
		if dir == memlink.Out {
			b.leakB.Frame(f)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	rt := exchange.Retransmit{Timeout: 500 * time.Millisecond, Tries: 3}
	var err error
	oa := Options{Stack: b.a, Addrs: []netip.Addr{addrA4, addrA6}, Config: cfgA, Log: testLogger(t, "A"), Retransmit: rt,
		KeyLog: func(l string) { b.mu.Lock(); b.keyLines = append(b.keyLines, l); b.mu.Unlock() }}
	ob := Options{Stack: b.b, Addrs: []netip.Addr{addrB4, addrB6}, Config: cfgB, Log: testLogger(t, "B"), Retransmit: rt}
	if opt != nil {
		opt(&oa)
		opt(&ob)
	}
	b.da, err = New(oa)
	if err != nil {
		t.Fatal(err)
	}
	b.db, err = New(ob)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.db.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.da.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := testbed.ServeSink(ctx, b.b, testbed.TCPSinkPort); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *bed) close() {
	b.closeOnce.Do(func() {
		if b.da != nil {
			b.da.Close()
		}
		if b.db != nil {
			b.db.Close()
		}
		if b.cancel != nil {
			b.cancel()
		}
		b.a.Close()
		b.b.Close()
	})
}

func (b *bed) checkLeaks(t *testing.T) {
	t.Helper()
	for name, c := range map[string]*leakcheck.Checker{"A": b.leakA, "B": b.leakB} {
		c.Flush()
		if err := c.Err(false); err != nil {
			t.Errorf("side %s: %v", name, err)
		}
		if st := c.Stats(); st.Protected == 0 {
			t.Errorf("side %s sent no IPsec frame", name)
		}
	}
}

// espSAs counts the ESP SAs in an engine.
func espSAs(e *xfrm.Engine) int {
	n := 0
	e.SAD.Walk(func(sa *xfrm.SA) bool {
		if sa.Config.Proto == xfrm.ProtoESP {
			n++
		}
		return true
	})
	return n
}

// tcpQuiet waits until the finished transfers' TCP connections at the
// sink stack s are closed (gVisor's CurrentConnected back to 0: the sink
// closes last, LAST-ACK to CLOSED, after the client's final ACK was sent),
// so that a test's delete does not race their FIN and ACK: a side without
// trap policies sends those in clear once its policies are gone, as Linux
// does.
func tcpQuiet(t *testing.T, s *stack.Stack) {
	t.Helper()
	waitFor(t, "the sink's TCP connections closed", 10*time.Second, func() bool {
		return s.Stats().TCP.CurrentConnected.Value() == 0
	})
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTwoStacks: two stacks key each other with PSK through their daemons
// (A initiates on command, B responds), in tunnel and transport mode over
// IPv4 and IPv6; a 1 MiB TCP transfer goes over the negotiated SAs with
// the leak detector seeing no cleartext; `ike list` shows the SAs;
// terminate removes the SAs on both sides.
func TestTwoStacks(t *testing.T) {
	for _, mode := range []xfrm.Mode{xfrm.ModeTunnel, xfrm.ModeTransport} {
		for _, fam := range []int{4, 6} {
			t.Run(fmt.Sprintf("%v/ipv%d", mode, fam), func(t *testing.T) {
				A, B := addrA4, addrB4
				if fam == 6 {
					A, B = addrA6, addrB6
				}
				b := newBed(t, fam,
					connConfig(A, B, "a.test", "b.test", mode, config.StartNone),
					connConfig(B, A, "b.test", "a.test", mode, config.StartNone))
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := b.da.Initiate(ctx, "peer"); err != nil {
					t.Fatal(err)
				}
				if n := espSAs(b.a.Engine); n != 2 {
					t.Fatalf("A has %d ESP SAs, want 2", n)
				}
				waitFor(t, "B's CHILD SA", 5*time.Second, func() bool { return espSAs(b.b.Engine) == 2 })
				if _, err := testbed.TCPTransfer(ctx, b.a, B, 1<<20); err != nil {
					t.Fatal(err)
				}
				la, lb := b.da.List(), b.db.List()
				if len(la.SAs) != 1 || len(lb.SAs) != 1 || len(la.SAs[0].Children) != 1 || len(lb.SAs[0].Children) != 1 {
					t.Fatalf("listings:\n%s\n%s", la.Format(), lb.Format())
				}
				ca, cb := la.SAs[0].Children[0], lb.SAs[0].Children[0]
				if ca.SPIIn != cb.SPIOut || ca.SPIOut != cb.SPIIn || ca.BytesOut == 0 || cb.BytesIn == 0 {
					t.Errorf("CHILD SAs do not pair up or carried nothing:\n%s\n%s", la.Format(), lb.Format())
				}
				if s := la.SAs[0]; s.State != "ESTABLISHED" || s.Role != "initiator" || s.SPIi != lb.SAs[0].SPIi || ca.Mode != mode.String() {
					t.Errorf("A's listing:\n%s", la.Format())
				}
				if !strings.Contains(la.Format(), "net: "+mode.String()) {
					t.Errorf("listing lacks the child:\n%s", la.Format())
				}
				b.mu.Lock()
				keys := len(b.keyLines)
				b.mu.Unlock()
				if keys != 1 {
					t.Errorf("%d key log lines, want 1", keys)
				}
				tcpQuiet(t, b.b)
				if err := b.da.Terminate(ctx, "peer"); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "SAs removed on both sides", 5*time.Second, func() bool {
					return espSAs(b.a.Engine) == 0 && espSAs(b.b.Engine) == 0 && len(b.db.List().SAs) == 0 && len(b.da.List().SAs) == 0
				})
				if n := b.a.Engine.SPD.Len(); n != 0 && fam == 4 {
					t.Errorf("A holds %d policies after terminate", n)
				}
				b.checkLeaks(t)
			})
		}
	}
}

// TestTrap: A's child has start_action=trap: its policies are in place
// before any IKE SA, the first TCP packet's ACQUIRE starts the initiator,
// the packets meanwhile are dropped (none in clear) and the connection
// then completes over the negotiated SAs. Deleting from the responder
// side removes the SAs on both sides and leaves A's trap in place, so the
// next packet brings the child up again.
func TestTrap(t *testing.T) {
	for _, fam := range []int{4, 6} {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			A, B := addrA4, addrB4
			if fam == 6 {
				A, B = addrA6, addrB6
			}
			b := newBed(t, fam,
				connConfig(A, B, "a.test", "b.test", xfrm.ModeTunnel, config.StartTrap),
				connConfig(B, A, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone))
			if n := b.a.Engine.SPD.Len(); n == 0 {
				t.Fatal("no trap policies on A")
			}
			if l := b.da.List(); len(l.Traps) != 1 || len(l.SAs) != 0 {
				t.Fatalf("A's listing before traffic:\n%s", l.Format())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := testbed.TCPTransfer(ctx, b.a, B, 64<<10); err != nil {
				t.Fatal(err)
			}
			if b.da.Stats.Acquires.Load() == 0 {
				t.Error("no ACQUIRE reached the daemon")
			}
			// The SYN that raised the ACQUIRE was dropped, and counted.
			if n := b.a.Engine.Stats.OutNoStates.Load(); n == 0 {
				t.Error("no packet counted as dropped for want of an SA (XfrmOutNoStates)")
			}
			if n := espSAs(b.a.Engine); n != 2 {
				t.Fatalf("A has %d ESP SAs, want 2", n)
			}
			// B deletes; both sides lose the SAs, A keeps its trap.
			tcpQuiet(t, b.b)
			if err := b.db.Terminate(ctx, "peer"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "SAs removed on both sides", 5*time.Second, func() bool {
				return espSAs(b.a.Engine) == 0 && espSAs(b.b.Engine) == 0
			})
			if n := b.a.Engine.SPD.Len(); n == 0 {
				t.Fatal("A's trap policies went with the SAs")
			}
			waitFor(t, "A's IKE SA gone", 5*time.Second, func() bool { return len(b.da.List().SAs) == 0 })
			if _, err := testbed.TCPTransfer(ctx, b.a, B, 64<<10); err != nil {
				t.Fatalf("after the delete, the trap did not bring the child back: %v", err)
			}
			if got := b.da.Stats.IKEEstablished.Load(); got != 2 {
				t.Errorf("%d IKE SAs established by A, want 2", got)
			}
			b.checkLeaks(t)
		})
	}
}

// TestCookieAndHalfOpen: with a half-open budget of 1, a stranger's
// IKE_SA_INIT (from a port that never continues) takes the one slot and
// a second stranger's is dropped and counted, B keeping no state for it;
// with the budget raised and a cookie threshold of 1, B answers A's
// IKE_SA_INIT with a COOKIE (RFC 7296 §2.6), which A returns and so gets
// its IKE SA.
func TestCookieAndHalfOpen(t *testing.T) {
	cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone)
	cfgB := connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone)
	b := newBed(t, 4, cfgA, cfgB)
	b.db.SetHalfOpenLimits(1, 1)
	xcfg := exchange.Config{Local: netip.AddrPortFrom(addrA4, 600), Remote: netip.AddrPortFrom(addrB4, 500),
		LocalID: exchange.FQDN("x"), RemoteID: exchange.FQDN("y"), PSK: []byte("k"),
		IKE:     exchange.IKESuite{Encr: message.ENCR_AES_CBC, KeyBits: 128, Integ: message.AUTH_HMAC_SHA2_256_128, PRF: message.PRF_HMAC_SHA2_256, KE: message.KE_CURVE25519},
		ESP:     exchange.ESPSuite{Encr: message.ENCR_AES_GCM_16, KeyBits: 128},
		LocalTS: []message.TrafficSelector{hostTS(addrA4)}, RemoteTS: []message.TrafficSelector{hostTS(addrB4)}}
	u, err := gonet.DialUDP(b.a.Stack, &tcpip.FullAddress{Addr: tcpip.AddrFrom4(addrA4.As4()), Port: 600}, nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	stranger := func() {
		x, err := exchange.NewInitiator(xcfg)
		if err != nil {
			t.Fatal(err)
		}
		req, err := x.Start()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.WriteTo(req, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addrB4, 500))); err != nil {
			t.Fatal(err)
		}
	}
	stranger()
	waitFor(t, "B's half-open SA", 5*time.Second, func() bool { return snap(b.db, "IKESAsHalfOpen") == 1 })
	stranger()
	waitFor(t, "the refused IKE_SA_INIT", 5*time.Second, func() bool { return b.db.Stats.HalfOpenRefused.Load() == 1 })
	if n := snap(b.db, "IKESAsHalfOpen"); n != 1 {
		t.Errorf("%d half-open SAs, want 1", n)
	}
	b.db.SetHalfOpenLimits(1, DefaultHalfOpenMax)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	if n := b.db.Stats.CookiesSent.Load(); n != 1 {
		t.Errorf("B sent %d cookies, want 1", n)
	}
}

func snap(d *Daemon, name string) uint64 {
	for _, s := range d.Snapshot() {
		if s.Name == name {
			return s.Value
		}
	}
	return 0
}

// dpdBed is the bed of the liveness tests: A, with dpd_delay 1 s, has
// initiated an IKE SA with B (tunnel, IPv4). ctx ends with the test.
func dpdBed(t *testing.T) (*bed, context.Context) {
	t.Helper()
	cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone)
	cfgA.Connections[0].DPDDelay = time.Second
	cfgB := connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone)
	b := newBed(t, 4, cfgA, cfgB)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	return b, ctx
}

// TestDPD: A checks liveness after 1 s of silence; B's daemon dies
// without a word (its IKE SAs vanish, its sockets stay, so A's requests
// meet nothing that answers). A declares B dead after its
// retransmissions (0.5 s growing by 1.8, 3 tries: about 6 s) and removes
// the SAs; the failure is counted as "dead".
func TestDPD(t *testing.T) {
	b, _ := dpdBed(t)
	// While B lives, liveness checks are answered.
	time.Sleep(2500 * time.Millisecond)
	if l := b.da.List(); len(l.SAs) != 1 {
		t.Fatalf("A lost its IKE SA while B answered:\n%s", l.Format())
	}
	start := time.Now()
	b.db.mu.Lock()
	for sa := range b.db.sas {
		sa.cancel()
	}
	b.db.mu.Unlock()
	waitFor(t, "A to declare B dead", 15*time.Second, func() bool { return espSAs(b.a.Engine) == 0 && len(b.da.List().SAs) == 0 })
	took := time.Since(start)
	if took > 10*time.Second {
		t.Errorf("dead after %v", took)
	}
	if n := snap2(b.da, "IKEFailures", "dead"); n != 1 {
		t.Errorf("%d dead-peer failures counted, want 1", n)
	}
	t.Logf("peer declared dead after %v", took)
}

func snap2(d *Daemon, name, label string) uint64 {
	for _, s := range d.Snapshot() {
		if s.Name == name && s.Label == label {
			return s.Value
		}
	}
	return 0
}

// napt is a port-translating NAT in front of stack A for IPv4 UDP from
// A's ports 500 and 4500: outgoing, their source port becomes +10000;
// incoming, datagrams to those ports come back to 500 and 4500. The
// checksums are updated for the new ports. The NAT-D hashes then tell A
// that it is behind a NAT (its source port changed), so both sides use
// UDP encapsulation and A sends the keepalives.
type napt struct {
	nested.Endpoint
	lower gstack.LinkEndpoint
}

func newNAPT(lower gstack.LinkEndpoint) *napt {
	n := &napt{lower: lower}
	n.Endpoint.Init(lower, n)
	return n
}

func udpOf(pkt *gstack.PacketBuffer) header.UDP {
	if pkt.NetworkProtocolNumber != header.IPv4ProtocolNumber {
		return nil
	}
	if nh := pkt.NetworkHeader().Slice(); len(nh) != 0 {
		// A datagram of the stack's own sockets: headers in their views.
		if len(nh) < header.IPv4MinimumSize || nh[9] != 17 || binary.BigEndian.Uint16(nh[6:])&0x1fff != 0 {
			return nil
		}
		if th := pkt.TransportHeader().Slice(); len(th) >= header.UDPMinimumSize {
			return header.UDP(th)
		}
		return nil
	}
	ip, ok := pkt.Data().PullUp(min(pkt.Data().Size(), header.IPv4MinimumSize+header.UDPMinimumSize))
	if !ok || len(ip) < header.IPv4MinimumSize+header.UDPMinimumSize || ip[0] != 0x45 || ip[9] != 17 ||
		binary.BigEndian.Uint16(ip[6:])&0x1fff != 0 {
		return nil
	}
	return header.UDP(ip[header.IPv4MinimumSize:])
}

func (n *napt) WritePackets(pkts gstack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		if u := udpOf(pkt); u != nil && (u.SourcePort() == 500 || u.SourcePort() == 4500) {
			if u.Checksum() == 0 {
				u.SetSourcePort(u.SourcePort() + 10000)
			} else {
				u.SetSourcePortWithChecksumUpdate(u.SourcePort() + 10000)
			}
		}
	}
	return n.lower.WritePackets(pkts)
}

func (n *napt) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gstack.PacketBuffer) {
	if proto == header.IPv4ProtocolNumber {
		pkt.NetworkProtocolNumber = proto
		if u := udpOf(pkt); u != nil && (u.DestinationPort() == 10500 || u.DestinationPort() == 14500) {
			if u.Checksum() == 0 {
				u.SetDestinationPort(u.DestinationPort() - 10000)
			} else {
				u.SetDestinationPortWithChecksumUpdate(u.DestinationPort() - 10000)
			}
		}
	}
	n.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// TestNATTraversal: A is behind a NAPT. The NAT-D exchange moves IKE to
// port 4500, the CHILD SAs are UDP-encapsulated toward the ports the NAT
// chose (B sends to 14500, not 4500), A (the NATed side) and only A sends
// NAT keepalives, and a TCP transfer goes through.
func TestNATTraversal(t *testing.T) {
	cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone)
	cfgB := connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone)
	b := newBedWith(t, 4, cfgA, cfgB, func(l gstack.LinkEndpoint) gstack.LinkEndpoint { return newNAPT(l) }, func(o *Options) {
		o.NATKeepalive = 300 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B's CHILD SA", 5*time.Second, func() bool { return espSAs(b.b.Engine) == 2 })
	la, lb := b.da.List(), b.db.List()
	if !la.SAs[0].NATT || !la.SAs[0].LocalNAT || !lb.SAs[0].NATT || lb.SAs[0].LocalNAT {
		t.Fatalf("NAT detection:\n%s\n%s", la.Format(), lb.Format())
	}
	var bOut *xfrm.SA
	b.b.Engine.SAD.Walk(func(sa *xfrm.SA) bool {
		if sa.Config.Src == addrB4 {
			bOut = sa
		}
		return true
	})
	if p, ok := bOut.OutPeer(); !ok || p.Port != 14500 {
		t.Errorf("B's outbound SA sends to %v, want the NAT's port 14500", p)
	}
	if _, err := testbed.TCPTransfer(ctx, b.a, addrB4, 256<<10); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if n := b.a.Endpoint.Stats.OutNATKeepalive.Load(); n == 0 {
		t.Error("A, behind the NAT, sent no keepalive")
	}
	if n := b.b.Endpoint.Stats.OutNATKeepalive.Load(); n != 0 {
		t.Errorf("B, not behind a NAT, sent %d keepalives", n)
	}
	b.checkLeaks(t)
}

// TestRekeyMakeBeforeBreak applies the events the IKE SA state machine
// reports for a CHILD SA rekey (ChildRekeyed, and the responder's held
// back ChildOutbound) on both sides during an 8 MiB TCP transfer: each
// new SA is in before anything is sent on it, the transfer completes,
// the new SAs carry the rest of it, the old ones are gone after the
// grace period, no xfrm counter moved (no packet met a missing SA), and
// nothing leaves in clear.
func TestRekeyMakeBeforeBreak(t *testing.T) {
	b := newBed(t, 4,
		connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone),
		connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B's CHILD SA", 5*time.Second, func() bool { return espSAs(b.b.Engine) == 2 })
	one := func(d *Daemon) *ikeSA {
		d.mu.Lock()
		defer d.mu.Unlock()
		for sa := range d.sas {
			return sa
		}
		return nil
	}
	saA, saB := one(b.da), one(b.db)
	oldA := b.da.List().SAs[0].Children[0]
	key := func(seed byte) []byte {
		k := make([]byte, 20)
		for i := range k {
			k[i] = seed + byte(i)
		}
		return k
	}
	pair := func(spi uint32, src, dst netip.Addr, seed byte) xfrm.SAConfig {
		return xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: spi, Src: src, Dst: dst, Mode: xfrm.ModeTunnel, ReplayWindow: 32,
			AEAD: xfrm.Algorithm{Name: "rfc4106(gcm(aes))", Key: key(seed), ICVBits: 128}}
	}
	var oldInA, oldInB uint32
	fmt.Sscanf(oldA.SPIIn, "%x", &oldInA)
	fmt.Sscanf(oldA.SPIOut, "%x", &oldInB)
	done := make(chan error, 1)
	go func() {
		_, err := testbed.TCPTransfer(ctx, b.a, addrB4, 8<<20)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	// As CREATE_CHILD_SA does it: B, the responder, installs its new
	// inbound SA when it answers and keeps sending on the old pair; A
	// installs both on the answer and switches; B's outbound SA follows
	// once A has its new inbound one (strongSwan: when A deletes the old
	// CHILD SA).
	saB.do(func(time.Time) {
		saB.apply([]SessionEvent{{Kind: ChildRekeyed, OldInSPI: oldInB, In: pair(0x7001, addrA4, addrB4, 1)}})
	})
	time.Sleep(20 * time.Millisecond)
	saA.do(func(time.Time) {
		saA.apply([]SessionEvent{{Kind: ChildRekeyed, OldInSPI: oldInA,
			In: pair(0x7002, addrB4, addrA4, 2), Out: pair(0x7001, addrA4, addrB4, 1)}})
	})
	time.Sleep(20 * time.Millisecond)
	saB.do(func(time.Time) {
		saB.apply([]SessionEvent{{Kind: ChildOutbound, OldInSPI: 0x7001, Out: pair(0x7002, addrB4, addrA4, 2)},
			{Kind: ChildDeleted, OldInSPI: oldInB}})
	})
	// A's Delete of the old pair is answered: its inbound SA goes
	// rekeyGrace later.
	saA.do(func(time.Time) {
		saA.apply([]SessionEvent{{Kind: ChildDeleted, OldInSPI: oldInA}})
	})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the old SAs gone after the grace period", 5*time.Second, func() bool {
		return espSAs(b.a.Engine) == 2 && espSAs(b.b.Engine) == 2
	})
	if _, err := testbed.TCPTransfer(ctx, b.a, addrB4, 64<<10); err != nil {
		t.Fatal(err)
	}
	l := b.da.List()
	if c := l.SAs[0].Children; len(c) != 1 || c[0].SPIOut != "00007001" || c[0].BytesOut == 0 {
		t.Errorf("A after the rekey:\n%s", l.Format())
	}
	if n := b.da.Stats.ChildRekeys.Load(); n != 1 {
		t.Errorf("%d child rekeys counted, want 1", n)
	}
	for side, e := range map[string]*xfrm.Engine{"A": b.a.Engine, "B": b.b.Engine} {
		for _, v := range e.Stats.Snapshot() {
			if v.Value != 0 {
				t.Errorf("%s: %s = %d after the rekey", side, v.Name, v.Value)
			}
		}
	}
	if l := b.db.List(); l.SAs[0].Children[0].SPIOut != "00007002" || l.SAs[0].Children[0].BytesOut == 0 {
		t.Errorf("B after the rekey:\n%s", l.Format())
	}
	b.checkLeaks(t)
}

// TestRestartedPeerReplaces: A loses its IKE SA without a word (a
// restart) and initiates again; B, the responder, replaces its old IKE SA
// with the new one (swanctl's unique = no) instead of keeping both until
// a liveness check, and traffic flows over the new CHILD SA.
func TestRestartedPeerReplaces(t *testing.T) {
	b := newBed(t, 4,
		connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone),
		connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B's IKE SA", 5*time.Second, func() bool { return len(b.db.List().SAs) == 1 })
	first := b.db.List().SAs[0].SPIi
	b.da.mu.Lock()
	for sa := range b.da.sas {
		sa.cancel()
	}
	b.da.mu.Unlock()
	waitFor(t, "A's IKE SA gone", 5*time.Second, func() bool { return len(b.da.List().SAs) == 0 })
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B left with the new IKE SA only", 5*time.Second, func() bool {
		l := b.db.List()
		return len(l.SAs) == 1 && l.SAs[0].SPIi != first && espSAs(b.b.Engine) == 2
	})
	if _, err := testbed.TCPTransfer(ctx, b.a, addrB4, 64<<10); err != nil {
		t.Fatal(err)
	}
}

// TestStartActionAndHardExpiry: a child with start_action=start comes up
// when the daemon starts, without a command; with rekey_time 1 s and
// life_time 2 s the soft expiry rekeys it and the CHILD SA lives on
// (traffic after); with no rekey_time, its hard expiry after life_time
// deletes it with the peer: both sides end with no ESP SA.
func TestStartActionAndHardExpiry(t *testing.T) {
	for _, rekey := range []bool{true, false} {
		t.Run(fmt.Sprintf("rekey=%v", rekey), func(t *testing.T) {
			cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartStart)
			ch := cfgA.Connections[0].Children[0]
			ch.RekeyTime, ch.LifeTime, ch.RandTime = time.Second, 2*time.Second, 0
			if !rekey {
				ch.RekeyTime = 0
			}
			b := newBed(t, 4, cfgA, connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone))
			waitFor(t, "the started CHILD SA on both sides", 5*time.Second, func() bool {
				return espSAs(b.a.Engine) == 2 && espSAs(b.b.Engine) == 2
			})
			if !rekey {
				waitFor(t, "the expired SAs gone on both sides", 10*time.Second, func() bool {
					return espSAs(b.a.Engine) == 0 && espSAs(b.b.Engine) == 0
				})
				return
			}
			waitFor(t, "a CHILD SA rekey", 10*time.Second, func() bool { return b.da.Stats.ChildRekeys.Load() > 0 })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := testbed.TCPTransfer(ctx, b.a, addrB4, 64<<10); err != nil {
				t.Fatal(err)
			}
		})
	}
}
