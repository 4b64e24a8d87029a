package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/daemon"
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
// our IKE key manager (ike/daemon.Daemon, its configuration built in Go)
// runs on the host in the gVisor stack on the guest's TAP, with its UDP
// sockets 500 and 4500 in that stack, and installs the CHILD SAs and
// their policies in the stack's engine itself. Each case negotiates one
// IKE SA and CHILD SA with charon's default proposals (charon's side is
// not tuned; ours offers one suite) and sends ping and 1 MiB TCP both
// ways. It checks: our daemon lists one IKE SA and one CHILD SA in the
// wanted mode, without NAT-T or encapsulation; charon reports the IKE SA
// ESTABLISHED with the daemon's SPIs and the CHILD SA INSTALLED in the
// mode with the daemon's ESP SPIs reversed and without UDP
// encapsulation; the guest kernel has the two ESP states in that mode
// with no encap, and their packet counters rose; the capture holds plain
// ESP (protocol 50) between the outer addresses both ways and nothing in
// clear but IKE; no xfrm_stat counter moved and no stack xfrm counter is
// set.
//
// Cases: transport and tunnel mode, IPv4 and IPv6, each with charon as
// responder (Daemon.Initiate) and as initiator (swanctl --initiate, our
// daemon responding). Then lifecycle, in transport mode over IPv4:
// CHILD and IKE rekeys started by charon (swanctl --rekey) and by our
// daemon (rekey_time 3 s and 4 s), with ping and TCP running across and
// nothing lost; deletes each way (swanctl --terminate, Daemon.Terminate);
// DPD: charon killed, our daemon removes the IKE SA within dpd_delay and
// its retransmissions.
//
// NAT traversal: with no NAT, both NAT_DETECTION hashes match. charon as
// initiator still floats IKE_AUTH to port 4500 (its habit, see
// ../shared/peers/strongswan), and our daemon answers on the port the
// request came on; our initiator stays on port 500 (it floats only on a
// detected NAT, RFC 7296 §2.23), which charon accepts. Either way
// neither side encapsulates ESP: the guest's states have no encap, and
// charon lists the CHILD SA without "-in-UDP".
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
	t.Run("lifecycle", func(t *testing.T) { runCharonLifecycle(ctx, t, vm) })
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

// charonEnv is one case's set-up: charon in the guest, and on the host
// the stack on the guest's TAP with our IKE daemon keying it.
type charonEnv struct {
	t              *testing.T
	vm             *linuxvm.VM
	c              charonCase
	ch             *linuxvm.Charon
	cs             *caseStack
	st             *stack.Stack
	d              *daemon.Daemon
	sA, gA, sO, gO netip.Addr
	guestBefore    map[string]uint64
	// keySPIs are the IKE SPIs of the daemon's last KeyLog line: the
	// IKE SA its session runs, told apart from List (see oursRekeying).
	keyMu   sync.Mutex
	keySPIs [2]uint64
	noted   map[string]bool
	// charonRekeyedIKE: the IKE SA in use is the one charon's rekey
	// created, so charon is its initiator (RFC 7296 §2.18).
	charonRekeyedIKE bool
}

// note logs a daemon discrepancy once per case.
func (e *charonEnv) note(key, format string, args ...any) {
	if e.noted[key] {
		return
	}
	e.noted[key] = true
	e.t.Logf("note (ike/daemon): "+format, args...)
}

// daemonTuning adjusts our daemon's connection and options for a case
// (rekey times, DPD, retransmission schedule).
type daemonTuning func(*config.Connection, *daemon.Options)

// startCharonEnv starts charon with the case's swanctl.conf, builds the
// stack and starts our daemon in it (connection charonConnName, child
// charonChild, start_action none: the case says who initiates).
func startCharonEnv(ctx context.Context, t *testing.T, vm *linuxvm.VM, c charonCase, tune daemonTuning) *charonEnv {
	t.Helper()
	ch, err := vm.StartCharon(ctx, linuxvm.CharonConfig{SwanctlConf: charonSwanctlConf(c)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			lctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			t.Logf("charon's log:\n%s", ch.Log(lctx))
		}
	})
	e := &charonEnv{t: t, vm: vm, c: c, ch: ch, noted: map[string]bool{}}
	e.cs = newStack(t, vm.TapName)
	e.st = e.cs.st
	e.sA, e.gA, e.sO, e.gO = c.addrs()
	cfg := charonDaemonConfig(c)
	var logw bytes.Buffer
	var logmu sync.Mutex
	opts := daemon.Options{Stack: e.st, Addrs: []netip.Addr{e.sO}, Config: cfg,
		Log: slog.New(slog.NewTextHandler(&lockedBuffer{b: &logw, mu: &logmu}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	opts.KeyLog = func(line string) {
		// SPIi,SPIr,keys...: only the SPIs are kept.
		f := strings.SplitN(line, ",", 3)
		if len(f) < 3 {
			return
		}
		i, err1 := strconv.ParseUint(f[0], 16, 64)
		r, err2 := strconv.ParseUint(f[1], 16, 64)
		if err1 == nil && err2 == nil {
			e.keyMu.Lock()
			e.keySPIs = [2]uint64{i, r}
			e.keyMu.Unlock()
		}
	}
	if tune != nil {
		tune(cfg.Connections[0], &opts)
	}
	d, err := daemon.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.d = d
	t.Cleanup(func() {
		d.Close()
		if t.Failed() {
			logmu.Lock()
			t.Logf("our daemon's log:\n%s", logw.String())
			logmu.Unlock()
		}
	})
	if e.guestBefore, err = vm.XfrmStats(); err != nil {
		t.Fatal(err)
	}
	return e
}

// lockedBuffer is a bytes.Buffer written by the daemon's goroutines and
// read by the test.
type lockedBuffer struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// charonDaemonConfig is our side's configuration of a case, built in Go
// as ike/swanctl would from the mirror of charonSwanctlConf: the case's
// one IKE and ESP proposal (charon's defaults contain both), PSK, e-mail
// identities, one child between the traffic addresses.
func charonDaemonConfig(c charonCase) *config.Config {
	sA, gA, sO, gO := c.addrs()
	keyLen := []message.Attribute{message.KeyLengthAttr(c.ike.KeyBits)}
	ike := []message.Transform{{Type: message.TransformENCR, ID: c.ike.Encr, Attributes: keyLen}}
	if c.ike.Integ != message.AUTH_NONE {
		ike = append(ike, message.Transform{Type: message.TransformINTEG, ID: c.ike.Integ})
	}
	ike = append(ike, message.Transform{Type: message.TransformPRF, ID: c.ike.PRF}, message.Transform{Type: message.TransformKE, ID: c.ike.KE})
	esp := []message.Transform{{Type: message.TransformENCR, ID: c.esp.Encr, Attributes: []message.Attribute{message.KeyLengthAttr(c.esp.KeyBits)}}}
	if c.esp.Integ != message.AUTH_NONE {
		esp = append(esp, message.Transform{Type: message.TransformINTEG, ID: c.esp.Integ})
	}
	esp = append(esp, message.Transform{Type: message.TransformESN, ID: message.ESN_NO})
	conn := &config.Connection{Name: charonConnName, LocalAddrs: []netip.Prefix{host(sO)}, RemoteAddrs: []netip.Prefix{host(gO)},
		Proposals: []message.Proposal{{Num: 1, Protocol: message.ProtoIKE, Transforms: ike}},
		Local:     []*config.Auth{{Method: config.AuthPSK, ID: exchange.Email(stackID)}},
		Remote:    []*config.Auth{{Method: config.AuthPSK, ID: exchange.Email(charonID)}},
		Children: []*config.Child{{Name: charonChild, Mode: c.mode, StartAction: config.StartNone,
			Proposals: []message.Proposal{{Num: 1, Protocol: message.ProtoESP, Transforms: esp}},
			LocalTS:   []message.TrafficSelector{hostTS(sA)}, RemoteTS: []message.TrafficSelector{hostTS(gA)},
			RekeyTime: time.Hour, LifeTime: 66 * time.Minute, ReplayWindow: 32}}}
	return &config.Config{Connections: []*config.Connection{conn},
		Secrets: []*config.Secret{{Type: "ike", IDs: []exchange.Identity{exchange.Email(stackID), exchange.Email(charonID)}, Data: []byte(charonPSK)}}}
}

// ourSAs is our daemon's view of its one IKE SA and its CHILD SA.
type ourSAs struct {
	spii, spir    uint64
	in, out       uint32
	local, remote netip.AddrPort
	initiator     bool
	mode          string
	natt, encap   bool
}

// ours reads the daemon's listing; it must hold one established IKE SA
// with one CHILD SA.
func (e *charonEnv) ours() (ourSAs, error) { return e.oursRekeying(false) }

// oursRekeying is ours, where with rekeying a CHILD SA just rekeyed may
// still be listed (our daemon keeps its inbound SA for a grace period):
// the newest, listed last, is taken.
func (e *charonEnv) oursRekeying(rekeying bool) (ourSAs, error) {
	l := e.d.List()
	if len(l.SAs) != 1 || l.SAs[0].State != "ESTABLISHED" || len(l.SAs[0].Children) == 0 ||
		(len(l.SAs[0].Children) != 1 && !rekeying) || len(l.SAs[0].Children) > 2 {
		return ourSAs{}, fmt.Errorf("our daemon lists:\n%s", l.Format())
	}
	sa, chi := l.SAs[0], l.SAs[0].Children[len(l.SAs[0].Children)-1]
	var o ourSAs
	var errs []error
	hex := func(s string, bits int) uint64 {
		v, err := strconv.ParseUint(s, 16, bits)
		errs = append(errs, err)
		return v
	}
	ap := func(s string) netip.AddrPort {
		a, err := netip.ParseAddrPort(s)
		errs = append(errs, err)
		return a
	}
	o.spii, o.spir = hex(sa.SPIi, 64), hex(sa.SPIr, 64)
	o.in, o.out = uint32(hex(chi.SPIIn, 32)), uint32(hex(chi.SPIOut, 32))
	o.local, o.remote = ap(sa.Local), ap(sa.Remote)
	o.initiator, o.mode, o.natt, o.encap = sa.Role == "initiator", chi.Mode, sa.NATT, chi.Encap
	if err := errors.Join(errs...); err != nil {
		return o, err
	}
	// After the peer rekeyed the IKE SA, ike/daemon's List shows the old
	// SPIs again: ikeSA.noteSPIs takes the SPIs of every message the
	// daemon sends, and its answer to the peer's Delete of the old IKE
	// SA carries those. The session's own (the KeyLog line of the
	// rekey) are the ones in use.
	e.keyMu.Lock()
	k := e.keySPIs
	e.keyMu.Unlock()
	if k != [2]uint64{} && k != [2]uint64{o.spii, o.spir} {
		e.note("spis", "List shows IKE SPIs %016x_i %016x_r, the session (KeyLog) runs %016x_i %016x_r", o.spii, o.spir, k[0], k[1])
		o.spii, o.spir = k[0], k[1]
	}
	return o, nil
}

// waitCond polls cond every 50 ms until it holds or timeout passes, and
// returns how long it took.
func waitCond(ctx context.Context, timeout time.Duration, what string, cond func() bool) (time.Duration, error) {
	t0 := time.Now()
	for {
		if cond() {
			return time.Since(t0), nil
		}
		if time.Since(t0) > timeout {
			return time.Since(t0), fmt.Errorf("%s: not after %v", what, timeout)
		}
		select {
		case <-ctx.Done():
			return time.Since(t0), fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// establish brings the case's IKE SA and CHILD SA up: our daemon's
// Initiate, or swanctl --initiate in the guest with our daemon
// responding. It returns our view once the daemon lists both.
func (e *charonEnv) establish(ctx context.Context, charonInitiates bool) ourSAs {
	t := e.t
	t.Helper()
	t0 := time.Now()
	if charonInitiates {
		if out, err := e.ch.Initiate(ctx, charonChild, 20*time.Second); err != nil {
			t.Fatalf("swanctl --initiate: %v\n%s", err, out)
		}
	} else {
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := e.d.Initiate(ictx, charonChild)
		cancel()
		if err != nil {
			t.Fatalf("our daemon's Initiate: %v", err)
		}
	}
	var o ourSAs
	var lerr error
	if _, err := waitCond(ctx, 10*time.Second, "our daemon's CHILD SA", func() bool { o, lerr = e.ours(); return lerr == nil }); err != nil {
		t.Fatalf("%v: %v", err, lerr)
	}
	t.Logf("IKE SA %016x_i %016x_r and CHILD SA in %08x out %08x up in %v (%v ↔ %v, NAT-T %v)",
		o.spii, o.spir, o.in, o.out, time.Since(t0).Round(time.Millisecond), o.local, o.remote, o.natt)
	return o
}

// checkAgree compares charon's view (swanctl --list-sas) and the guest
// kernel's states with ours: same IKE SPIs, roles, endpoints and
// identities, the CHILD SA installed in the case's mode with our SPIs
// reversed, plain ESP on both sides.
func (e *charonEnv) checkAgree(ctx context.Context, o ourSAs, charonInitiated bool) error {
	var bad []string
	if o.natt || o.encap {
		bad = append(bad, fmt.Sprintf("NAT traversal on a link without NAT: NAT-T %v, encap %v", o.natt, o.encap))
	}
	// IKE is on 4500 when charon started the first IKE SA (it floats
	// as initiator); a rekey keeps the ports.
	floated := charonInitiated
	if e.charonRekeyedIKE {
		// ike/daemon's ikeSA.initiator (List's Role) stays that of the
		// first IKE SA.
		charonInitiated = true
		if o.initiator {
			e.note("role", "List shows role initiator for the IKE SA charon's rekey created")
		}
	} else if o.initiator == charonInitiated {
		bad = append(bad, fmt.Sprintf("our daemon's role: initiator %v", o.initiator))
	}
	if o.mode != e.c.mode.String() {
		bad = append(bad, fmt.Sprintf("our CHILD SA is in mode %s, want %v", o.mode, e.c.mode))
	}
	sas, err := e.ch.ListSAs(ctx)
	if err != nil {
		return err
	}
	ourPortsNote(e.t, sas, o)
	if err := checkCharonSAs(sas, e.c, charonInitiated, floated, o); err != nil {
		bad = append(bad, fmt.Sprintf("swanctl --list-sas: %v:\n%s", err, sas))
	}
	// The guest kernel's states (installed by charon through
	// kernel-netlink): ours reversed, in the mode, plain ESP.
	xs, err := e.ch.XfrmState(ctx)
	if err != nil {
		return err
	}
	states := parseGuestStates(xs)
	for _, w := range []struct {
		spi      uint32
		src, dst netip.Addr
	}{{o.out, e.sO, e.gO}, {o.in, e.gO, e.sO}} {
		s, ok := states[w.spi]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("guest has no ESP state with SPI %#08x:\n%s", w.spi, xs))
		case s.src != w.src || s.dst != w.dst || s.mode != e.c.mode.String() || s.encap:
			bad = append(bad, fmt.Sprintf("guest state %#08x: %v -> %v mode %s encap %v; want %v -> %v mode %s, no encap", w.spi, s.src, s.dst, s.mode, s.encap, w.src, w.dst, e.c.mode))
		}
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "\n"))
	}
	return nil
}

// serveSink starts the stack's TCP sink for the guest's tcpsend.
func (e *charonEnv) serveSink(ctx context.Context) {
	if err := testbed.ServeSink(ctx, e.st, linuxvm.SinkPort); err != nil {
		e.t.Fatal(err)
	}
}

// traffic sends ping and 1 MiB TCP each way, one after the other.
func (e *charonEnv) traffic(ctx context.Context) {
	t := e.t
	t.Helper()
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
	step("ping s→k", func(ctx context.Context) error { return pingFrom(ctx, e.st, e.sA, e.gA, 3, 56) })
	step("ping k→s", func(ctx context.Context) error {
		_, err := e.vm.Sh(ctx, fmt.Sprintf("ping -c 3 -i 0.2 -W 2 %s", e.sA))
		return err
	})
	step("tcp s→k", func(ctx context.Context) error {
		_, err := testbed.TCPTransferFrom(ctx, e.st, e.sA, e.gA, linuxvm.SinkPort, 1<<20)
		return err
	})
	step("tcp k→s", func(ctx context.Context) error {
		_, err := e.vm.Sh(ctx, fmt.Sprintf("%s tcpsend %s %d %d", linuxvm.AgentPath, e.sA, linuxvm.SinkPort, 1<<20))
		return err
	})
}

// checkWire checks the capture: plain ESP both ways between the outer
// addresses, no ESP in UDP, nothing in clear but IKE and NDP.
func (e *charonEnv) checkWire() {
	t := e.t
	t.Helper()
	frames, err := readCapture(e.cs.capPath)
	if err != nil {
		t.Fatal(err)
	}
	sO, gO := e.sO, e.gO
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
}

func runCharonCase(ctx context.Context, t *testing.T, vm *linuxvm.VM, c charonCase) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	e := startCharonEnv(ctx, t, vm, c, nil)
	o := e.establish(ctx, c.charonInitiates)
	if err := e.checkAgree(ctx, o, c.charonInitiates); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	e.serveSink(sctx)
	e.traffic(ctx)

	// The guest's counters rose on both states, and charon counts too.
	xs, err := e.ch.XfrmState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pk := guestSAPackets(xs)
	for _, spi := range []uint32{o.in, o.out} {
		if pk[uint64(spi)] == 0 {
			t.Errorf("guest state %#08x carried no packets:\n%s", spi, xs)
		}
	}
	t.Logf("guest states: %#08x (stack→guest) %d packets, %#08x (guest→stack) %d packets",
		o.out, pk[uint64(o.out)], o.in, pk[uint64(o.in)])
	checkNoXfrmErrors(t, vm, e.guestBefore, e.st)
	e.checkWire()
	// Informational: charon's retransmissions (1 s timeout here) show
	// where a message was lost or answered late.
	if n := strings.Count(e.ch.Log(ctx), "retransmit "); n > 0 {
		t.Logf("charon retransmitted %d times", n)
	}
	sas, err := e.ch.ListSAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := linuxvm.ParseSAs(sas); err != nil || len(l) != 1 || len(l[0].Children) != 1 {
		t.Errorf("swanctl --list-sas after the traffic: %v", err)
	} else if cs := l[0].Children[0]; cs.PacketsIn == 0 || cs.PacketsOut == 0 {
		t.Errorf("charon counts %d packets in, %d out", cs.PacketsIn, cs.PacketsOut)
	}
	if t.Failed() {
		t.Logf("swanctl --list-sas:\n%s\nguest xfrm:\n%s", sas, xs)
	} else {
		t.Logf("charon (guest) swanctl --list-sas after the traffic:\n%s", sas)
	}
}

// checkCharonSAs compares charon's swanctl --list-sas with our daemon's
// view.
func checkCharonSAs(text string, c charonCase, charonInitiated, floated bool, o ourSAs) error {
	sas, err := linuxvm.ParseSAs(text)
	if err != nil {
		return err
	}
	// A CHILD SA charon rekeyed stays listed (REKEYED, DELETED) until
	// its delete_rekeyed_delay passes; the installed one is compared.
	var installed []linuxvm.ChildSA
	for _, ch := range sas[0].Children {
		if ch.State == "INSTALLED" {
			installed = append(installed, ch)
		}
	}
	if len(sas) != 1 || len(installed) != 1 {
		return fmt.Errorf("%d IKE SAs, want one with one installed CHILD SA", len(sas))
	}
	ike, ch := sas[0], installed[0]
	var bad []string
	check := func(what string, got, want any) {
		if got != want {
			bad = append(bad, fmt.Sprintf("%s %v, want %v", what, got, want))
		}
	}
	check("IKE SA state", ike.State, "ESTABLISHED")
	check("SPIi", fmt.Sprintf("%016x", ike.SPIi), fmt.Sprintf("%016x", o.spii))
	check("SPIr", fmt.Sprintf("%016x", ike.SPIr), fmt.Sprintf("%016x", o.spir))
	check("charon initiated", ike.LocalInitiator, charonInitiated)
	// charon floats IKE_AUTH to 4500 as initiator, even without a NAT;
	// our daemon lists the ports of its Result's NATT (500 here), not
	// those the IKE SA moved to (see ourPortsNote), so the addresses are
	// compared with ours and the ports with charon's habit.
	port := uint16(500)
	if floated {
		port = exchange.NATTPort
	}
	check("local", ike.Local, netip.AddrPortFrom(o.remote.Addr(), port))
	check("remote", ike.Remote, netip.AddrPortFrom(o.local.Addr(), port))
	check("local ID", ike.LocalID, charonID)
	check("remote ID", ike.RemoteID, stackID)
	check("CHILD SA state", ch.State, "INSTALLED")
	check("mode", ch.Mode, strings.ToUpper(c.mode.String()))
	check("ESP in UDP", ch.Encap, false)
	check("protocol", ch.Protocol, "ESP")
	check("inbound SPI", fmt.Sprintf("%08x", ch.SPIIn), fmt.Sprintf("%08x", o.out))
	check("outbound SPI", fmt.Sprintf("%08x", ch.SPIOut), fmt.Sprintf("%08x", o.in))
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// ourPortsNote logs where our daemon's listing of the IKE SA's ports
// differs from charon's: when charon initiates, IKE moves to port 4500
// (RFC 7296 §2.23 allows the move without a NAT, and then both sides
// stay there), but ike/daemon's ikeSA.finish resets its natt flag from
// the Result's NATT (false: no NAT detected), so List shows 500 and the
// daemon's own later requests (INFORMATIONAL, CREATE_CHILD_SA) leave
// from port 500 to charon's 500; charon accepts them there. Logged, not
// failed: a defect of ike/daemon left to its owner.
func ourPortsNote(t *testing.T, text string, o ourSAs) {
	sas, err := linuxvm.ParseSAs(text)
	if err != nil || len(sas) != 1 {
		return
	}
	if sas[0].Local != o.remote || sas[0].Remote != o.local {
		t.Logf("note: our daemon lists the IKE SA on %v ↔ %v, charon on %v ↔ %v", o.local, o.remote, sas[0].Remote, sas[0].Local)
	}
}

// hostTS is the traffic selector of one address, all protocols and ports.
func hostTS(a netip.Addr) message.TrafficSelector {
	ts := message.TrafficSelector{TSType: message.TS_IPV4_ADDR_RANGE, EndPort: 65535, Start: a, End: a}
	if a.Is6() {
		ts.TSType = message.TS_IPV6_ADDR_RANGE
	}
	return ts
}

// stackESPSAs counts the ESP SAs in the stack's SAD.
func stackESPSAs(st *stack.Stack) int {
	n := 0
	st.Engine.SAD.Walk(func(sa *xfrm.SA) bool {
		if sa.Config.Proto == xfrm.ProtoESP {
			n++
		}
		return true
	})
	return n
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

// charonLifecycleCase is the case the lifecycle subtests run in:
// transport mode over IPv4, charon's first proposals.
func charonLifecycleCase() charonCase {
	c := charonCases()[0]
	return c
}

// runCharonLifecycle runs the IKE SA's life after IKE_AUTH against the
// guest's charon, each in a fresh charon and stack: rekeys of the CHILD
// SA and of the IKE SA started by charon (swanctl --rekey) and by our
// daemon (short rekey_time), with ping and TCP running across; deletes
// each way; DPD with charon killed.
func runCharonLifecycle(ctx context.Context, t *testing.T, vm *linuxvm.VM) {
	c := charonLifecycleCase()
	t.Run("rekey-by-charon", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		e := startCharonEnv(ctx, t, vm, c, nil)
		e.rekeys(ctx, func(o ourSAs) {
			var lerr error
			time.Sleep(500 * time.Millisecond)
			if out, err := e.ch.Swanctl(ctx, "--rekey", "--child", charonChild); err != nil {
				t.Fatalf("swanctl --rekey --child: %v\n%s", err, out)
			}
			d, err := waitCond(ctx, 10*time.Second, "our daemon's CHILD SA rekeyed", func() bool {
				n, err := e.ours()
				lerr = err
				return err == nil && n.in != o.in && e.d.Stats.ChildRekeys.Load() >= 1
			})
			if err != nil {
				t.Fatalf("%v: %v", err, lerr)
			}
			t.Logf("CHILD SA rekeyed by charon: %v until our daemon lists only the new one (%d s of grace for the old inbound SA included)", d.Round(time.Millisecond), 2)
			if out, err := e.ch.Swanctl(ctx, "--rekey", "--ike", charonConnName); err != nil {
				t.Fatalf("swanctl --rekey --ike: %v\n%s", err, out)
			}
			d, err = waitCond(ctx, 10*time.Second, "our daemon's IKE SA rekeyed", func() bool {
				e.charonRekeyedIKE = true
				n, err := e.ours()
				lerr = err
				if err == nil && n.spii == o.spii {
					lerr = fmt.Errorf("IKE SA %016x_i %016x_r still", n.spii, n.spir)
				}
				return err == nil && n.spii != o.spii && e.d.Stats.IKERekeys.Load() >= 1
			})
			if err != nil {
				t.Fatalf("%v: %v", err, lerr)
			}
			t.Logf("IKE SA rekeyed by charon: %v", d.Round(time.Millisecond))
		})
	})
	t.Run("rekey-by-stack", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		// The CHILD SA's soft lifetime at 3 s (no jitter: the default
		// rand_time, life - rekey, is longer), the IKE SA's rekey at 4 s.
		e := startCharonEnv(ctx, t, vm, c, func(conn *config.Connection, _ *daemon.Options) {
			conn.RekeyTime, conn.RandTime, conn.OverTime = 4*time.Second, 0, time.Minute
			ch := conn.Children[0]
			ch.RekeyTime, ch.LifeTime = 3*time.Second, time.Minute
		})
		e.rekeys(ctx, func(o ourSAs) {
			d, err := waitCond(ctx, 10*time.Second, "our daemon's rekeys", func() bool {
				return e.d.Stats.ChildRekeys.Load() >= 1 && e.d.Stats.IKERekeys.Load() >= 1
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("our daemon rekeyed the CHILD SA and the IKE SA within %v of establishing", d.Round(time.Millisecond))
		})
	})
	t.Run("delete", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		e := startCharonEnv(ctx, t, vm, c, nil)
		e.establish(ctx, false)
		// charon deletes the CHILD SA: the IKE SA stays, the stack's ESP
		// SAs go.
		if out, err := e.ch.Swanctl(ctx, "--terminate", "--child", charonChild, "--timeout", "10"); err != nil {
			t.Fatalf("swanctl --terminate --child: %v\n%s", err, out)
		}
		d, err := waitCond(ctx, 5*time.Second, "our CHILD SA deleted", func() bool {
			l := e.d.List()
			return len(l.SAs) == 1 && len(l.SAs[0].Children) == 0 && stackESPSAs(e.st) == 0
		})
		if err != nil {
			t.Fatalf("%v:\n%s", err, e.d.List().Format())
		}
		t.Logf("swanctl --terminate --child: our daemon removed the CHILD SA's SAs %v after swanctl returned", d.Round(time.Millisecond))
		// charon deletes the IKE SA.
		if out, err := e.ch.Swanctl(ctx, "--terminate", "--ike", charonConnName, "--timeout", "10"); err != nil {
			t.Fatalf("swanctl --terminate --ike: %v\n%s", err, out)
		}
		if d, err = waitCond(ctx, 5*time.Second, "our IKE SA deleted", func() bool { return len(e.d.List().SAs) == 0 }); err != nil {
			t.Fatalf("%v:\n%s", err, e.d.List().Format())
		}
		t.Logf("swanctl --terminate --ike: our daemon dropped the IKE SA %v after swanctl returned", d.Round(time.Millisecond))
		// charon initiates again; our daemon deletes the IKE SA.
		e.establish(ctx, true)
		t0 := time.Now()
		if err := e.d.Terminate(ctx, charonConnName); err != nil {
			t.Fatalf("our daemon's Terminate: %v", err)
		}
		took := time.Since(t0)
		if d, err = waitCond(ctx, 5*time.Second, "charon's IKE SA and the guest's states deleted", func() bool {
			sas, err := e.ch.SAs(ctx)
			if err != nil || len(sas) != 0 {
				return false
			}
			xs, err := e.ch.XfrmState(ctx)
			return err == nil && len(parseGuestStates(xs)) == 0
		}); err != nil {
			sas, _ := e.ch.ListSAs(ctx)
			xs, _ := e.ch.XfrmState(ctx)
			t.Fatalf("%v:\n%s\n%s", err, sas, xs)
		}
		if n := stackESPSAs(e.st); n != 0 {
			t.Errorf("the stack keeps %d ESP SAs after Terminate", n)
		}
		t.Logf("our Terminate took %v; charon and the guest kernel clean %v later", took.Round(time.Millisecond), d.Round(time.Millisecond))
		checkNoXfrmErrors(t, vm, e.guestBefore, e.st)
	})
	t.Run("dpd", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		const dpd = time.Second
		rt := exchange.Retransmit{Timeout: 500 * time.Millisecond, Base: 1.8, Tries: 3}
		e := startCharonEnv(ctx, t, vm, c, func(conn *config.Connection, o *daemon.Options) {
			conn.DPDDelay = dpd
			o.Retransmit = rt
		})
		e.establish(ctx, false)
		// One liveness check answered by the live charon first.
		outBefore := e.d.Stats.OutMessages.Load()
		if _, err := waitCond(ctx, 5*time.Second, "a liveness check", func() bool { return e.d.Stats.InMessages.Load() > 0 && e.d.Stats.OutMessages.Load() > outBefore }); err != nil {
			t.Fatal(err)
		}
		time.Sleep(dpd / 2)
		if l := e.d.List(); len(l.SAs) != 1 {
			t.Fatalf("the IKE SA did not survive the live peer's liveness checks:\n%s", l.Format())
		}
		if _, err := vm.Sh(ctx, "kill -9 $(cat /run/charon.pid)"); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		// The bound: dpd_delay of silence, then the liveness request and
		// its retransmissions (Tries+1 timeouts growing by Base); the
		// daemon's timers run on its tick, so each of these Tries+2
		// deadlines may be seen up to a tick late.
		bound, to := dpd+time.Duration(rt.Tries+2)*daemon.DefaultTick, rt.Timeout
		for i := 0; i <= rt.Tries; i++ {
			bound += to
			to = time.Duration(float64(to) * rt.Base)
		}
		d, err := waitCond(ctx, 2*bound, "our daemon to declare charon dead", func() bool {
			return len(e.d.List().SAs) == 0 && stackESPSAs(e.st) == 0
		})
		if err != nil {
			t.Fatalf("%v:\n%s", err, e.d.List().Format())
		}
		var dead uint64
		for _, s := range e.d.Snapshot() {
			if s.Name == "IKEFailures" && s.Label == "dead" {
				dead = s.Value
			}
		}
		t.Logf("charon killed: our daemon removed the IKE SA and its CHILD SA %v later (dpd_delay %v, retransmissions %v x%.1f, %d tries; bound %v); failures{dead} = %d",
			time.Since(t0).Round(time.Millisecond), dpd, rt.Timeout, rt.Base, rt.Tries, bound, dead)
		if d > bound {
			t.Errorf("declared dead after %v, more than dpd_delay and the retransmissions (%v)", d.Round(time.Millisecond), bound)
		}
		if dead != 1 {
			t.Errorf("failures{dead} = %d, want 1", dead)
		}
	})
}

// rekeys establishes the IKE SA (our daemon initiating), runs traffic
// both ways while do rekeys, and checks that nothing was lost: every
// guest ping answered, every stack ping and TCP transfer complete, no
// xfrm error counter moved on either side, charon and our daemon agree
// on the new SAs (with plain ESP), and the wire shows no clear text.
func (e *charonEnv) rekeys(ctx context.Context, do func(o ourSAs)) {
	t := e.t
	o := e.establish(ctx, false)
	if err := e.checkAgree(ctx, o, false); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	e.serveSink(sctx)
	bg := e.background(sctx, 5*time.Second)
	do(o)
	bg.wait(t)
	childRekeys, ikeRekeys := e.d.Stats.ChildRekeys.Load(), e.d.Stats.IKERekeys.Load()
	// Agreement once no rekey is in progress (the old inbound SA stays
	// for a grace period on our side, and charon lists its rekeyed SAs
	// a moment).
	var n ourSAs
	var lerr error
	if _, err := waitCond(ctx, 6*time.Second, "charon and our daemon to agree", func() bool {
		if n, lerr = e.oursRekeying(true); lerr != nil {
			return false
		}
		lerr = e.checkAgree(ctx, n, false)
		return lerr == nil
	}); err != nil {
		t.Fatalf("%v: %v", err, lerr)
	}
	if n.spii == o.spii || n.in == o.in || n.out == o.out {
		t.Errorf("SPIs after the rekeys: IKE %016x (was %016x), CHILD in %08x out %08x (were %08x %08x): want all new", n.spii, o.spii, n.in, n.out, o.in, o.out)
	}
	t.Logf("after the rekeys (ours: %d CHILD, %d IKE): IKE SA %016x_i %016x_r, CHILD SA in %08x out %08x", childRekeys, ikeRekeys, n.spii, n.spir, n.in, n.out)
	e.checkWire()
	// Our stack's ESP leaves in sequence-number order (the wrapper
	// hands packets to the link in the order it sealed them, whatever
	// the number of senders): none may reach the wire beyond charon's
	// replay window of 32. Before it did, one packet was seen 62 numbers
	// late under -race, and the guest dropped it as XfrmInStateSeqError.
	frames, err := readCapture(e.cs.capPath)
	if err != nil {
		t.Fatal(err)
	}
	if late, worst := espLateBeyondWindow(frames, e.sO, 32); late > 0 {
		t.Errorf("%d of our ESP packets left more than 32 sequence numbers behind the highest sent on their SA (worst %d)", late, worst)
	}
	after, err := e.vm.XfrmStats()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range after {
		if d := v - e.guestBefore[k]; d != 0 {
			t.Errorf("guest %s went from %d to %d", k, e.guestBefore[k], v)
		}
	}
	for _, st := range e.st.Engine.Stats.Snapshot() {
		if st.Value != 0 {
			t.Errorf("stack %s = %d", st.Name, st.Value)
		}
	}
	// The rekeyed IKE SA is the one our daemon drives: its Delete there
	// ends charon's.
	if err := e.d.Terminate(ctx, charonConnName); err != nil {
		t.Fatalf("our daemon's Terminate after the rekeys: %v", err)
	}
	if _, err := waitCond(ctx, 5*time.Second, "charon's IKE SA deleted after our Terminate", func() bool {
		sas, err := e.ch.SAs(ctx)
		return err == nil && len(sas) == 0
	}); err != nil {
		sas, _ := e.ch.ListSAs(ctx)
		t.Errorf("%v:\n%s", err, sas)
	}
}

// backgroundTraffic runs while SAs are rekeyed: the guest pings the
// stack every 50 ms, the stack pings the guest every 100 ms and sends
// it 256 KiB TCP transfers back to back, each its own connection.
type backgroundTraffic struct {
	wg                     sync.WaitGroup
	guestOut               string
	guestSent, guestRecv   int
	guestErr               error
	pings, pingErrs        int
	tcp, tcpErrs           int
	firstPingErr, firstTCP error
}

var pingStatsRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

func (e *charonEnv) background(ctx context.Context, dur time.Duration) *backgroundTraffic {
	b := &backgroundTraffic{}
	end := time.Now().Add(dur)
	b.wg.Add(3)
	go func() {
		defer b.wg.Done()
		n := int(dur / (50 * time.Millisecond))
		out, _, err := e.vm.Run(ctx, fmt.Sprintf("ping -c %d -i 0.05 -W 1 %s", n, e.sA))
		b.guestOut, b.guestErr = out, err
		if m := pingStatsRE.FindStringSubmatch(out); m != nil {
			b.guestSent, _ = strconv.Atoi(m[1])
			b.guestRecv, _ = strconv.Atoi(m[2])
		}
	}()
	go func() {
		defer b.wg.Done()
		for time.Now().Before(end) && ctx.Err() == nil {
			b.pings++
			if err := pingFrom(ctx, e.st, e.sA, e.gA, 1, 56); err != nil {
				b.pingErrs++
				if b.firstPingErr == nil {
					b.firstPingErr = err
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	go func() {
		defer b.wg.Done()
		for time.Now().Before(end) && ctx.Err() == nil {
			b.tcp++
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := testbed.TCPTransferFrom(tctx, e.st, e.sA, e.gA, linuxvm.SinkPort, 256<<10)
			cancel()
			if err != nil {
				b.tcpErrs++
				if b.firstTCP == nil {
					b.firstTCP = err
				}
			}
		}
	}()
	return b
}

// wait waits for the traffic to end and checks that none was lost.
func (b *backgroundTraffic) wait(t *testing.T) {
	t.Helper()
	b.wg.Wait()
	t.Logf("traffic across the rekeys: guest pings %d/%d answered, stack pings %d/%d, TCP transfers of 256 KiB %d/%d",
		b.guestRecv, b.guestSent, b.pings-b.pingErrs, b.pings, b.tcp-b.tcpErrs, b.tcp)
	if b.guestErr != nil || b.guestSent == 0 || b.guestRecv != b.guestSent {
		t.Errorf("guest's ping across the rekeys: %v\n%s", b.guestErr, b.guestOut)
	}
	if b.pingErrs > 0 {
		t.Errorf("%d of %d stack pings lost across the rekeys, first: %v", b.pingErrs, b.pings, b.firstPingErr)
	}
	if b.tcp == 0 || b.tcpErrs > 0 {
		t.Errorf("%d of %d TCP transfers failed across the rekeys, first: %v", b.tcpErrs, b.tcp, b.firstTCP)
	}
}

// espLateBeyondWindow counts the ESP packets from src (IPv4, or IPv6
// with ESP as the first next header) whose sequence number is more than
// window below the highest one sent before them on the same SA: those a
// receiver's replay window of that size rejects (RFC 4303 §3.4.3). It
// returns the count and the largest lag seen.
func espLateBeyondWindow(frames [][]byte, src netip.Addr, window uint32) (late int, worst uint32) {
	high := map[uint32]uint32{}
	for _, fr := range frames {
		if len(fr) < 14 {
			continue
		}
		var esp []byte
		switch et := uint16(fr[12])<<8 | uint16(fr[13]); {
		case et == 0x0800 && len(fr) >= 34:
			ihl := int(fr[14]&15) * 4
			a, _ := netip.AddrFromSlice(fr[26:30])
			if fr[23] != 50 || a != src || len(fr) < 14+ihl+8 {
				continue
			}
			esp = fr[14+ihl:]
		case et == 0x86dd && len(fr) >= 62:
			a, _ := netip.AddrFromSlice(fr[22:38])
			if fr[20] != 50 || a != src {
				continue
			}
			esp = fr[54:]
		default:
			continue
		}
		spi := uint32(esp[0])<<24 | uint32(esp[1])<<16 | uint32(esp[2])<<8 | uint32(esp[3])
		seq := uint32(esp[4])<<24 | uint32(esp[5])<<16 | uint32(esp[6])<<8 | uint32(esp[7])
		h := high[spi]
		if seq > h {
			high[spi] = seq
			continue
		}
		if lag := h - seq; lag >= window {
			late++
			worst = max(worst, lag)
		}
	}
	return late, worst
}

// TestESPLateBeyondWindow: the capture reader that tells which of our
// ESP packets a 32-packet replay window drops (RFC 4303 §3.4.3; Linux's
// check: with 40 the highest seen, the window covers 9..40, so 9 passes
// and 8 is dropped).
func TestESPLateBeyondWindow(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.1")
	frame := func(from string, spi, seq uint32) []byte {
		b := make([]byte, 14+20+8)
		b[12], b[13] = 0x08, 0x00
		b[14], b[23] = 0x45, 50
		a := netip.MustParseAddr(from).As4()
		copy(b[26:30], a[:])
		for i := 0; i < 4; i++ {
			b[34+i] = byte(spi >> (24 - 8*i))
			b[38+i] = byte(seq >> (24 - 8*i))
		}
		return b
	}
	frames := [][]byte{
		frame("192.0.2.1", 1, 1), frame("192.0.2.1", 1, 40),
		frame("192.0.2.1", 1, 9),  // lag 31: inside a window of 32
		frame("192.0.2.1", 1, 8),  // lag 32: outside
		frame("192.0.2.1", 2, 3),  // another SA
		frame("192.0.2.2", 1, 1),  // another sender
		frame("192.0.2.1", 1, 41), // in order
	}
	late, worst := espLateBeyondWindow(frames, src, 32)
	if late != 1 || worst != 32 {
		t.Errorf("got %d late, worst %d; want 1, 32", late, worst)
	}
}
