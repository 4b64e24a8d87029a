package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/integration/linuxvm"
	"github.com/ipsecstack/ipsecstack/internal/leakcheck"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestLinuxGuestCharon: strongSwan's charon (5.9.8, the host's Debian
// binaries) runs inside the Linux 6.1 guest with its kernel-netlink
// backend, so the SAs it negotiates are the guest kernel's XFRM states;
// our IKEv2 state machines (ike/exchange) run on the host in the gVisor
// stack on the guest's TAP, over UDP sockets 500 and 4500 of that stack
// with per-socket bypass policies (as charon's own sockets have). Each
// case negotiates one IKE SA and CHILD SA with charon's default proposals
// (charon's side is not tuned), installs our Result's SAs and the
// policies of the agreed traffic selectors in the stack, and sends ping
// and 1 MiB TCP both ways through them. It checks: charon reports the
// IKE SA ESTABLISHED and the CHILD SA INSTALLED in the wanted mode with
// our SPIs and without UDP encapsulation; the guest kernel has the two
// ESP states in that mode with no encap, and their packet counters rose;
// the capture holds plain ESP (protocol 50) between the outer addresses
// both ways and nothing in clear but IKE; no xfrm_stat counter moved and
// no stack xfrm counter is set.
//
// Cases: transport and tunnel mode, each with charon as responder (our
// exchange.Initiate) and as initiator (swanctl --initiate against our
// exchange.Serve).
//
// NAT traversal: with no NAT, both NAT_DETECTION hashes match. charon as
// initiator still floats IKE_AUTH to port 4500 (its habit, see
// ../shared/peers/strongswan), and our responder answers on the port the
// request came on; our initiator stays on port 500 (it floats only on a
// detected NAT, RFC 7296 §2.23), which charon accepts. Either way
// neither side encapsulates ESP: Result.NATT is false, the guest's states
// have no encap, and charon lists the CHILD SA without "-in-UDP".
func TestLinuxGuestCharon(t *testing.T) {
	linuxvm.Require(t)
	if err := linuxvm.CheckCharon(); err != nil {
		if linuxvm.InCI() {
			t.Fatalf("%v (CI=true: a missing prerequisite is a failure)", err)
		}
		t.Skipf("%v (set CI=true to make this a failure)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	logf, err := os.CreateTemp("", "ipsecstack-linuxvm-charon-*.log")
	if err != nil {
		t.Fatal(err)
	}
	logPath := logf.Name()
	defer func() {
		logf.Close()
		if !t.Failed() {
			os.Remove(logPath)
		}
	}()
	img, err := linuxvm.Prepare(ctx, linuxvm.PrepareOptions{Log: &syncWriter{w: logf}, Charon: true})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := linuxvm.Start(ctx, linuxvm.Options{Image: img, Log: &syncWriter{w: logf}})
	if err != nil {
		t.Fatalf("%v (console: %s)", err, logPath)
	}
	defer vm.Close()
	if _, err := vm.Sh(ctx, guestSetup); err != nil {
		t.Fatal(err)
	}
	t.Logf("boot %v (%s, tap %s, console log %s)", vm.BootTime.Round(time.Millisecond), img.Package, vm.TapName, logPath)

	for _, c := range charonCases() {
		t.Run(c.name(), func(t *testing.T) {
			select {
			case <-vm.Exited():
				t.Fatalf("guest died (console: %s)", logPath)
			default:
			}
			t0 := time.Now()
			runCharonCase(ctx, t, vm, c)
			t.Logf("case took %v", time.Since(t0).Round(time.Millisecond))
		})
	}
}

// charonCase is one negotiation with the guest's charon.
type charonCase struct {
	mode xfrm.Mode
	// fam is the address family, inner and outer (4 or 6).
	fam int
	// charonInitiates: swanctl --initiate in the guest, our responder on
	// the host; otherwise our initiator, charon responding.
	charonInitiates bool
	// Our side's one proposal each (charon offers or accepts its
	// defaults, which contain these).
	ike exchange.IKESuite
	esp exchange.ESPSuite
}

func (c charonCase) name() string {
	role := "stack-initiates"
	if c.charonInitiates {
		role = "charon-initiates"
	}
	return fmt.Sprintf("%s-ipv%d/%s", c.mode, c.fam, role)
}

func charonCases() []charonCase {
	// charon's first IKE proposal (AES-CBC-128, HMAC-SHA2-256, X25519)
	// and first ESP proposal (AES-GCM-16-128).
	first := exchange.IKESuite{Encr: message.ENCR_AES_CBC, KeyBits: 128, Integ: message.AUTH_HMAC_SHA2_256_128, PRF: message.PRF_HMAC_SHA2_256, KE: message.KE_CURVE25519}
	gcm := exchange.ESPSuite{Encr: message.ENCR_AES_GCM_16, KeyBits: 128, Integ: message.AUTH_NONE}
	// From the middle of charon's default offer: AES-GCM-16-256 with
	// PRF-HMAC-SHA2-384 and ECP-384 (charon's KE is X25519 first, so this
	// takes an INVALID_KE_PAYLOAD round), ESP AES-CBC-256/HMAC-SHA2-256.
	other := exchange.IKESuite{Encr: message.ENCR_AES_GCM_16, KeyBits: 256, Integ: message.AUTH_NONE, PRF: message.PRF_HMAC_SHA2_384, KE: message.KE_ECP384}
	cbc := exchange.ESPSuite{Encr: message.ENCR_AES_CBC, KeyBits: 256, Integ: message.AUTH_HMAC_SHA2_256_128}
	return []charonCase{
		{mode: xfrm.ModeTransport, fam: 4, ike: first, esp: gcm},
		{mode: xfrm.ModeTransport, fam: 4, charonInitiates: true, ike: other, esp: cbc},
		{mode: xfrm.ModeTunnel, fam: 4, ike: first, esp: cbc},
		{mode: xfrm.ModeTunnel, fam: 4, charonInitiates: true, ike: other, esp: gcm},
		{mode: xfrm.ModeTransport, fam: 6, ike: other, esp: gcm},
		{mode: xfrm.ModeTransport, fam: 6, charonInitiates: true, ike: first, esp: cbc},
		{mode: xfrm.ModeTunnel, fam: 6, ike: other, esp: cbc},
		{mode: xfrm.ModeTunnel, fam: 6, charonInitiates: true, ike: first, esp: gcm},
	}
}

const (
	charonPSK      = "linux-guest-charon-psk-0123456789"
	charonID       = "charon@guest.test"
	stackID        = "ipsecstack@host.test"
	charonChild    = "c"
	charonConnName = "host"
)

// addrs are the case's traffic endpoints and the IKE/ESP endpoints
// (the same in transport mode).
func (c charonCase) addrs() (stackA, guestA, stackO, guestO netip.Addr) {
	return linuxCase{Mode: c.mode, Inner: c.fam, Outer: c.fam}.addrs()
}

// charonSwanctlConf is the guest's swanctl.conf of a case: one
// connection with strongSwan's default proposals, PSK, and one child in
// the case's mode between the case's traffic addresses.
func charonSwanctlConf(c charonCase) string {
	sA, gA, sO, gO := c.addrs()
	return fmt.Sprintf(`connections {
  %s {
    version = 2
    local_addrs = %s
    remote_addrs = %s
    local {
      auth = psk
      id = %s
    }
    remote {
      auth = psk
      id = %s
    }
    children {
      %s {
        mode = %s
        local_ts = %s
        remote_ts = %s
        start_action = none
      }
    }
  }
}
secrets {
  ike-host {
    id-a = %s
    id-b = %s
    secret = "%s"
  }
}
`, charonConnName, gO, sO, charonID, stackID, charonChild, c.mode, host(gA), host(sA), charonID, stackID, charonPSK)
}

func runCharonCase(ctx context.Context, t *testing.T, vm *linuxvm.VM, c charonCase) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	ch, err := vm.StartCharon(ctx, linuxvm.CharonConfig{SwanctlConf: charonSwanctlConf(c)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			lctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			t.Logf("charon's log:\n%s", ch.Log(lctx))
		}
	}()
	cs := newStack(t, vm.TapName)
	st := cs.st
	sA, gA, sO, gO := c.addrs()
	ike, err := newStackIKE(ctx, st, sO, gO)
	if err != nil {
		t.Fatal(err)
	}
	defer ike.Close()

	guestBefore, err := vm.XfrmStats()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	res := negotiateExchange(ctx, t, c, ch, ike)
	t.Logf("IKE SA %016x_i %016x_r and CHILD SA in %08x out %08x up in %v; IKE on 4500: %v, NAT-T: %v",
		res.SPIi, res.SPIr, res.In.SPI, res.Out.SPI, time.Since(t0).Round(time.Millisecond), ike.floated(), res.NATT)
	if res.NATT || res.In.Encap.Type != xfrm.EncapNone || res.Out.Encap.Type != xfrm.EncapNone {
		t.Errorf("NAT traversal on a link without NAT: NATT %v, encap in %+v out %+v", res.NATT, res.In.Encap, res.Out.Encap)
	}
	if got := ike.floated(); got != c.charonInitiates {
		t.Errorf("IKE moved to port 4500: %v; want %v (charon floats as initiator, our initiator does not without a NAT)", got, c.charonInitiates)
	}
	if res.In.Mode != c.mode || res.Out.Mode != c.mode {
		t.Errorf("our CHILD SAs are in mode %v/%v, want %v", res.In.Mode, res.Out.Mode, c.mode)
	}

	// charon's view: one IKE SA with our SPIs, its initiator as the case
	// says, on the ports seen; one CHILD SA installed in our mode, not in
	// UDP, with our SPIs reversed.
	sas, err := ch.ListSAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkCharonSAs(sas, c, res, netip.AddrPortFrom(gO, ike.port()), netip.AddrPortFrom(sO, ike.port())); err != nil {
		t.Errorf("swanctl --list-sas: %v:\n%s", err, sas)
	}

	// The guest kernel's states (installed by charon through
	// kernel-netlink): ours reversed, in the mode, plain ESP.
	xs, err := ch.XfrmState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	states := parseGuestStates(xs)
	for _, w := range []struct {
		spi      uint32
		src, dst netip.Addr
	}{{res.Out.SPI, sO, gO}, {res.In.SPI, gO, sO}} {
		s, ok := states[w.spi]
		switch {
		case !ok:
			t.Errorf("guest has no ESP state with SPI %#08x:\n%s", w.spi, xs)
		case s.src != w.src || s.dst != w.dst || s.mode != c.mode.String() || s.encap:
			t.Errorf("guest state %#08x: %v -> %v mode %s encap %v; want %v -> %v mode %s, no encap", w.spi, s.src, s.dst, s.mode, s.encap, w.src, w.dst, c.mode)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	installStackSAs(t, st, res, c.mode, sO, gO)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := testbed.ServeSink(sctx, st, linuxvm.SinkPort); err != nil {
		t.Fatal(err)
	}
	step := func(what string, fn func(ctx context.Context) error) {
		t.Helper()
		t1 := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := fn(sctx); err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		t.Logf("%-9s %v", what, time.Since(t1).Round(time.Millisecond))
	}
	step("ping s→k", func(ctx context.Context) error { return pingFrom(ctx, st, sA, gA, 3, 56) })
	step("ping k→s", func(ctx context.Context) error {
		_, err := vm.Sh(ctx, fmt.Sprintf("ping -c 3 -i 0.2 -W 2 %s", sA))
		return err
	})
	step("tcp s→k", func(ctx context.Context) error {
		_, err := testbed.TCPTransferFrom(ctx, st, sA, gA, linuxvm.SinkPort, 1<<20)
		return err
	})
	step("tcp k→s", func(ctx context.Context) error {
		_, err := vm.Sh(ctx, fmt.Sprintf("%s tcpsend %s %d %d", linuxvm.AgentPath, sA, linuxvm.SinkPort, 1<<20))
		return err
	})

	// The guest's counters rose on both states, and charon counts too.
	xs, err = ch.XfrmState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pk := guestSAPackets(xs)
	for _, spi := range []uint32{res.In.SPI, res.Out.SPI} {
		if pk[uint64(spi)] == 0 {
			t.Errorf("guest state %#08x carried no packets:\n%s", spi, xs)
		}
	}
	t.Logf("guest states: %#08x (stack→guest) %d packets, %#08x (guest→stack) %d packets",
		res.Out.SPI, pk[uint64(res.Out.SPI)], res.In.SPI, pk[uint64(res.In.SPI)])
	checkNoXfrmErrors(t, vm, guestBefore, st)

	frames, err := readCapture(cs.capPath)
	if err != nil {
		t.Fatal(err)
	}
	if bad := ikeClearFrames(frames, sO, gO); len(bad) > 0 {
		t.Errorf("%d of %d frames in clear besides IKE, e.g. %v", len(bad), len(frames), bad[:min(len(bad), 5)])
	}
	esp := map[[2]netip.Addr]int{}
	udp4500 := 0
	for _, fr := range frames {
		fi, ok := parseFrame(fr)
		if !ok {
			continue
		}
		if fi.proto == uint8(xfrm.ProtoESP) {
			esp[[2]netip.Addr{fi.src, fi.dst}]++
		}
		if fi.encap {
			udp4500++
		}
	}
	if esp[[2]netip.Addr{sO, gO}] == 0 || esp[[2]netip.Addr{gO, sO}] == 0 {
		t.Errorf("plain ESP on the wire: %d packets %v→%v, %d %v→%v; want both", esp[[2]netip.Addr{sO, gO}], sO, gO, esp[[2]netip.Addr{gO, sO}], gO, sO)
	}
	if udp4500 != 0 {
		t.Errorf("%d ESP-in-UDP packets on the wire; want plain ESP only", udp4500)
	}
	t.Logf("wire: %d frames, ESP %d s→k and %d k→s, no ESP in UDP", len(frames), esp[[2]netip.Addr{sO, gO}], esp[[2]netip.Addr{gO, sO}])
	// Informational: charon's retransmissions (1 s timeout here) show
	// where a message was lost or answered late.
	if n := strings.Count(ch.Log(ctx), "retransmit "); n > 0 {
		t.Logf("charon retransmitted %d times", n)
	}
	// charon reads the kernel's counters of its SAs too.
	if after, err := ch.ListSAs(ctx); err != nil {
		t.Error(err)
	} else {
		sas = after
		if l, err := linuxvm.ParseSAs(sas); err != nil || len(l) != 1 || len(l[0].Children) != 1 {
			t.Errorf("swanctl --list-sas after the traffic: %v", err)
		} else if cs := l[0].Children[0]; cs.PacketsIn == 0 || cs.PacketsOut == 0 {
			t.Errorf("charon counts %d packets in, %d out", cs.PacketsIn, cs.PacketsOut)
		}
	}
	if t.Failed() {
		t.Logf("swanctl --list-sas:\n%s\nguest xfrm:\n%s", sas, xs)
	} else {
		t.Logf("charon (guest) swanctl --list-sas after the traffic:\n%s", sas)
	}
}

// negotiateExchange is the host side of the IKE exchange: our
// ike/exchange state machines over the stack's IKE sockets, as initiator
// (exchange.Initiate) or, while swanctl --initiate runs in the guest, as
// responder (exchange.Serve). It is the part the IKE daemon replaces;
// the checks around it need only the Result.
func negotiateExchange(ctx context.Context, t *testing.T, c charonCase, ch *linuxvm.Charon, ike *stackIKE) *exchange.Result {
	t.Helper()
	sA, gA, sO, gO := c.addrs()
	cfg := exchange.Config{
		Local: netip.AddrPortFrom(sO, 500), Remote: netip.AddrPortFrom(gO, 500),
		LocalID: exchange.Email(stackID), RemoteID: exchange.Email(charonID), PSK: []byte(charonPSK),
		IKE: c.ike, ESP: c.esp,
		LocalTS:  []message.TrafficSelector{hostTS(sA)},
		RemoteTS: []message.TrafficSelector{hostTS(gA)},
		Mode:     c.mode,
	}
	var res *exchange.Result
	var err error
	if c.charonInitiates {
		r, err := exchange.NewResponder(cfg)
		if err != nil {
			t.Fatal(err)
		}
		initiated := make(chan error, 1)
		go func() {
			out, err := ch.Initiate(ctx, charonChild, 20*time.Second)
			if err != nil {
				err = fmt.Errorf("%w\n%s", err, out)
			}
			initiated <- err
		}()
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		res, err = exchange.Serve(sctx, r, ike)
		scancel()
		if err != nil {
			t.Fatalf("our responder: %v", err)
		}
		if err := <-initiated; err != nil {
			t.Fatalf("swanctl --initiate: %v", err)
		}
	} else {
		ictx, icancel := context.WithTimeout(ctx, 30*time.Second)
		res, err = exchange.Initiate(ictx, cfg, ike, exchange.Retransmit{Timeout: 2 * time.Second, Tries: 3})
		icancel()
		if err != nil {
			t.Fatalf("our initiator: %v", err)
		}
	}
	return res
}

// checkCharonSAs compares charon's swanctl --list-sas with our Result.
func checkCharonSAs(text string, c charonCase, res *exchange.Result, local, remote netip.AddrPort) error {
	sas, err := linuxvm.ParseSAs(text)
	if err != nil {
		return err
	}
	if len(sas) != 1 || len(sas[0].Children) != 1 {
		return fmt.Errorf("%d IKE SAs, want one with one CHILD SA", len(sas))
	}
	ike, ch := sas[0], sas[0].Children[0]
	var bad []string
	check := func(what string, got, want any) {
		if got != want {
			bad = append(bad, fmt.Sprintf("%s %v, want %v", what, got, want))
		}
	}
	check("IKE SA state", ike.State, "ESTABLISHED")
	check("SPIi", fmt.Sprintf("%016x", ike.SPIi), fmt.Sprintf("%016x", res.SPIi))
	check("SPIr", fmt.Sprintf("%016x", ike.SPIr), fmt.Sprintf("%016x", res.SPIr))
	check("charon initiated", ike.LocalInitiator, c.charonInitiates)
	check("local", ike.Local, local)
	check("remote", ike.Remote, remote)
	check("local ID", ike.LocalID, charonID)
	check("remote ID", ike.RemoteID, stackID)
	check("CHILD SA state", ch.State, "INSTALLED")
	check("mode", ch.Mode, strings.ToUpper(c.mode.String()))
	check("ESP in UDP", ch.Encap, false)
	check("protocol", ch.Protocol, "ESP")
	check("inbound SPI", fmt.Sprintf("%08x", ch.SPIIn), fmt.Sprintf("%08x", res.Out.SPI))
	check("outbound SPI", fmt.Sprintf("%08x", ch.SPIOut), fmt.Sprintf("%08x", res.In.SPI))
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// hostTS is the traffic selector of one address, all protocols and ports.
func hostTS(a netip.Addr) message.TrafficSelector {
	ts := message.TrafficSelector{TSType: message.TS_IPV4_ADDR_RANGE, EndPort: 65535, Start: a, End: a}
	if a.Is6() {
		ts.TSType = message.TS_IPV6_ADDR_RANGE
	}
	return ts
}

// tsPrefix is the prefix a traffic selector covers, when its range is
// one (all the cases' selectors are, any protocol and port).
func tsPrefix(ts message.TrafficSelector) (netip.Prefix, error) {
	for bits := ts.Start.BitLen(); bits >= 0; bits-- {
		p := netip.PrefixFrom(ts.Start, bits)
		if p.Masked().Addr() != ts.Start {
			break
		}
		if lastAddr(p) == ts.End {
			if ts.IPProto != 0 || ts.StartPort != 0 || ts.EndPort != 65535 {
				return netip.Prefix{}, fmt.Errorf("selector %v with protocol %d ports %d-%d: not handled here", p, ts.IPProto, ts.StartPort, ts.EndPort)
			}
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("selector %v-%v is not a prefix", ts.Start, ts.End)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// installStackSAs installs the negotiated CHILD SAs in the stack with
// the policies of the agreed traffic selectors (what the IKE daemon will
// do through the xfrm API).
func installStackSAs(t *testing.T, st *stack.Stack, res *exchange.Result, mode xfrm.Mode, sO, gO netip.Addr) {
	t.Helper()
	const reqid = 7
	for _, sa := range []xfrm.SAConfig{res.Out, res.In} {
		sa.ReqID = reqid
		if _, err := st.Engine.AddSA(sa); err != nil {
			t.Fatalf("stack AddSA %#08x: %v", sa.SPI, err)
		}
	}
	out := xfrm.Template{Proto: xfrm.ProtoESP, Mode: mode, Level: xfrm.LevelRequire, ReqID: reqid}
	in := out
	if mode == xfrm.ModeTunnel {
		out.Src, out.Dst = sO, gO
		in.Src, in.Dst = gO, sO
	}
	for _, l := range res.LocalTS {
		lp, err := tsPrefix(l)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res.RemoteTS {
			rp, err := tsPrefix(r)
			if err != nil {
				t.Fatal(err)
			}
			if lp.Addr().Is4() != rp.Addr().Is4() {
				continue
			}
			for _, p := range []*xfrm.Policy{
				{Dir: xfrm.DirOut, Priority: prioMain, Action: xfrm.ActionProtect, Templates: []xfrm.Template{out}, Sel: xfrm.Selector{Src: lp, Dst: rp}},
				{Dir: xfrm.DirIn, Priority: prioMain, Action: xfrm.ActionProtect, Templates: []xfrm.Template{in}, Sel: xfrm.Selector{Src: rp, Dst: lp}},
			} {
				if _, err := st.Engine.AddPolicy(p); err != nil {
					t.Fatalf("stack AddPolicy %v: %v", p.Sel, err)
				}
			}
		}
	}
}

// stackIKE is an exchange.Transport over UDP sockets 500 and 4500 of the
// stack, bound to local and talking to peer. Both sockets have bypass
// policies in and out (as an IKE daemon's sockets have: the transport
// mode policies between the same two hosts cover IKE's own datagrams).
// Recv takes from either port, stripping the non-ESP marker on 4500;
// Send goes to the peer's port 500, or 4500 with the marker.
type stackIKE struct {
	peer   netip.Addr
	c500   *gonet.UDPConn
	c4500  *gonet.UDPConn
	in     chan ikeDgram
	clear  func()
	on4500 bool // a message came or went on 4500
}

type ikeDgram struct {
	b    []byte
	natt bool
}

func newStackIKE(ctx context.Context, st *stack.Stack, local, peer netip.Addr) (*stackIKE, error) {
	s := &stackIKE{peer: peer, in: make(chan ikeDgram, 16)}
	var keys []xfrm.SocketKey
	s.clear = func() {
		for _, k := range keys {
			st.Engine.ClearSocketPolicy(k)
		}
	}
	for _, port := range []uint16{500, exchange.NATTPort} {
		k := xfrm.SocketKey{Proto: uint8(header.UDPProtocolNumber), Local: netip.AddrPortFrom(local, port)}
		for _, d := range []xfrm.Dir{xfrm.DirOut, xfrm.DirIn} {
			if err := st.Engine.SetSocketPolicy(k, &xfrm.Policy{Dir: d, Action: xfrm.ActionBypass}); err != nil {
				s.clear()
				return nil, err
			}
		}
		keys = append(keys, k)
		la := st.FullAddress(local, port)
		c, err := gonet.DialUDP(st.Stack, &la, nil, stack.Proto(local))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("IKE socket %v: %w", k.Local, err)
		}
		natt := port == exchange.NATTPort
		if natt {
			s.c4500 = c
		} else {
			s.c500 = c
		}
		go func() {
			buf := make([]byte, 65536)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return // closed
				}
				b := buf[:n]
				if ua, ok := from.(*net.UDPAddr); !ok || ua.AddrPort().Addr().Unmap() != peer {
					continue
				}
				if natt {
					if n <= 4 || !bytes.Equal(b[:4], []byte{0, 0, 0, 0}) {
						continue // a NAT keepalive or ESP in UDP: not IKE
					}
					b = b[4:]
				}
				select {
				case s.in <- ikeDgram{append([]byte(nil), b...), natt}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return s, nil
}

// Send implements exchange.Transport.
func (s *stackIKE) Send(msg []byte, natt bool) error {
	c, port := s.c500, uint16(500)
	if natt {
		s.on4500 = true
		c, port, msg = s.c4500, exchange.NATTPort, append([]byte{0, 0, 0, 0}, msg...)
	}
	_, err := c.WriteTo(msg, net.UDPAddrFromAddrPort(netip.AddrPortFrom(s.peer, port)))
	return err
}

// Recv implements exchange.Transport.
func (s *stackIKE) Recv(ctx context.Context) ([]byte, bool, error) {
	select {
	case d := <-s.in:
		if d.natt {
			s.on4500 = true
		}
		return d.b, d.natt, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// floated reports whether IKE used port 4500.
func (s *stackIKE) floated() bool { return s.on4500 }

// port is the IKE port last used.
func (s *stackIKE) port() uint16 {
	if s.on4500 {
		return exchange.NATTPort
	}
	return 500
}

// Close closes the sockets and removes their policies.
func (s *stackIKE) Close() {
	for _, c := range []*gonet.UDPConn{s.c500, s.c4500} {
		if c != nil {
			c.Close()
		}
	}
	s.clear()
}

// guestState is one line group of `ip xfrm state`.
type guestState struct {
	src, dst netip.Addr
	mode     string
	encap    bool
}

var (
	stateHeadRE  = regexp.MustCompile(`^src (\S+) dst (\S+)$`)
	stateProtoRE = regexp.MustCompile(`^\s+proto esp spi (0x[0-9a-f]+)\S* reqid \S+ mode (\S+)`)
)

// parseGuestStates maps SPI to the ESP states of `ip -s xfrm state`; it
// stops at the first empty line (Charon.XfrmState's policies follow,
// whose templates look like states' protocol lines).
func parseGuestStates(out string) map[uint32]guestState {
	m := map[uint32]guestState{}
	var cur guestState
	var spi uint32
	have := false
	flush := func() {
		if have {
			m[spi] = cur
		}
		have, cur = false, guestState{}
	}
	for _, l := range strings.Split(out, "\n") {
		if l == "" {
			break
		}
		if s := stateHeadRE.FindStringSubmatch(l); s != nil {
			flush()
			cur.src, _ = netip.ParseAddr(s[1])
			cur.dst, _ = netip.ParseAddr(s[2])
			continue
		}
		if s := stateProtoRE.FindStringSubmatch(l); s != nil {
			var v uint64
			fmt.Sscanf(s[1], "0x%x", &v)
			spi, cur.mode, have = uint32(v), s[2], true
			continue
		}
		if strings.Contains(l, "encap type") {
			cur.encap = true
		}
	}
	flush()
	return m
}

// ikeClearFrames is clearFrames with IKE (UDP 500 and 4500 between the
// outer addresses, both ways) allowed in clear, and neighbour discovery
// and MLD: the first IKE message over IPv6 needs the neighbour's address
// before any SA or policy exists, and neither side has an NDP bypass
// later (charon installs none), so what NDP follows is under ESP in
// transport mode.
func ikeClearFrames(frames [][]byte, a, b netip.Addr) []string {
	flows := []leakcheck.Flow{{Name: "MLD and NDP", Family: 6, Proto: uint8(header.ICMPv6ProtocolNumber),
		ICMPType: leakcheck.Between(130, 143), Clear: true}}
	for _, p := range []uint16{500, exchange.NATTPort} {
		flows = append(flows, leakcheck.Flow{Name: fmt.Sprintf("IKE on %d", p), Src: host(a), Dst: host(b), Proto: uint8(header.UDPProtocolNumber),
			SrcPort: leakcheck.Between(p, p), DstPort: leakcheck.Between(p, p), Both: true, Clear: true})
	}
	flows = append(flows, leakcheck.Flow{Name: "every test flow"})
	c := leakcheck.New(leakcheck.Config{Flows: flows, MaxFindings: len(frames) + 1})
	for _, fr := range frames {
		c.Frame(fr)
	}
	c.Flush()
	var bad []string
	for _, f := range c.Findings() {
		bad = append(bad, f.String())
	}
	return bad
}

// TestParseGuestStates: the `ip -s xfrm state` reader of
// TestLinuxGuestCharon against output of the Linux 6.1 guest's iproute2
// (6.1, as charon installed the states; keys shortened), followed by
// `ip xfrm policy` whose templates carry "proto esp spi ... mode" lines
// too and must not be read as states.
func TestParseGuestStates(t *testing.T) {
	out := "src 192.0.2.2 dst 192.0.2.1\n" +
		"\tproto esp spi 0xa292d522(2727531810) reqid 1(0x00000001) mode transport\n" +
		"\treplay-window 0 seq 0x00000000 flag  (0x00000000)\n" +
		"\taead rfc4106(gcm(aes)) 0x0895 (160 bits) 128\n" +
		"\tlifetime current:\n" +
		"\t  0(bytes), 0(packets)\n" +
		"src 2001:db8:1::1 dst 2001:db8:1::2\n" +
		"\tproto esp spi 0xcea6bd78(3467033976) reqid 1(0x00000001) mode tunnel\n" +
		"\treplay-window 32 seq 0x00000000 flag  (0x00000000)\n" +
		"\tencap type espinudp sport 4500 dport 4500 addr 0.0.0.0\n" +
		"\t  0(bytes), 0(packets)\n" +
		"\n" +
		"src 192.0.2.2/32 dst 192.0.2.1/32 \n" +
		"\tdir out priority 367231 ptype main \n" +
		"\ttmpl src 0.0.0.0 dst 0.0.0.0\n" +
		"\t\tproto esp spi 0xa292d522 reqid 1 mode tunnel\n"
	got := parseGuestStates(out)
	want := map[uint32]guestState{
		0xa292d522: {src: netip.MustParseAddr("192.0.2.2"), dst: netip.MustParseAddr("192.0.2.1"), mode: "transport"},
		0xcea6bd78: {src: netip.MustParseAddr("2001:db8:1::1"), dst: netip.MustParseAddr("2001:db8:1::2"), mode: "tunnel", encap: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d states, want %d: %+v", len(got), len(want), got)
	}
	for spi, w := range want {
		if got[spi] != w {
			t.Errorf("state %#08x: got %+v, want %+v", spi, got[spi], w)
		}
	}
}

// TestTSPrefix: traffic selectors (RFC 7296 §3.13.1 address ranges) to
// the prefixes installed as policy selectors.
func TestTSPrefix(t *testing.T) {
	ts := func(a, b string, proto uint8, lo, hi uint16) message.TrafficSelector {
		s := message.TrafficSelector{TSType: message.TS_IPV4_ADDR_RANGE, IPProto: proto, StartPort: lo, EndPort: hi,
			Start: netip.MustParseAddr(a), End: netip.MustParseAddr(b)}
		if s.Start.Is6() {
			s.TSType = message.TS_IPV6_ADDR_RANGE
		}
		return s
	}
	for _, c := range []struct {
		ts   message.TrafficSelector
		want string // "" for an error
	}{
		{ts("192.0.2.1", "192.0.2.1", 0, 0, 65535), "192.0.2.1/32"},
		{ts("10.56.1.0", "10.56.1.255", 0, 0, 65535), "10.56.1.0/24"},
		{ts("0.0.0.0", "255.255.255.255", 0, 0, 65535), "0.0.0.0/0"},
		{ts("2001:db8:100::", "2001:db8:100::ffff:ffff:ffff:ffff", 0, 0, 65535), "2001:db8:100::/64"},
		{ts("10.56.1.1", "10.56.1.2", 0, 0, 65535), ""},   // not a prefix
		{ts("10.56.1.0", "10.56.1.255", 6, 0, 65535), ""}, // a protocol
		{ts("10.56.1.0", "10.56.1.255", 0, 80, 80), ""},   // a port
	} {
		p, err := tsPrefix(c.ts)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%v-%v proto %d ports %d-%d: got %v, want an error", c.ts.Start, c.ts.End, c.ts.IPProto, c.ts.StartPort, c.ts.EndPort, p)
		case c.want != "" && (err != nil || p.String() != c.want):
			t.Errorf("%v-%v: got %v, %v; want %s", c.ts.Start, c.ts.End, p, err, c.want)
		}
	}
}
