package integration

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/ipsecstack/ipsecstack/integration/linuxvm"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/link/afpacket"
	"github.com/ipsecstack/ipsecstack/link/pcap"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Addressing. The link carries the outer (transport-mode) addresses; each
// side also has an inner address behind the other, reached through the
// tunnel in tunnel mode.
var (
	stack4 = netip.MustParseAddr("192.0.2.1")
	guest4 = netip.MustParseAddr("192.0.2.2")
	stack6 = netip.MustParseAddr("2001:db8:1::1")
	guest6 = netip.MustParseAddr("2001:db8:1::2")

	stackIn4 = netip.MustParseAddr("198.51.100.1")
	guestIn4 = netip.MustParseAddr("203.0.113.2")
	stackIn6 = netip.MustParseAddr("2001:db8:100::1")
	guestIn6 = netip.MustParseAddr("2001:db8:200::2")
)

// syncWriter serialises writes to a file from qemu's two pipes.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// addrs returns the traffic and tunnel endpoints of a case.
func (c linuxCase) addrs() (stackA, guestA, stackO, guestO netip.Addr) {
	pick := func(fam int, a4, a6 netip.Addr) netip.Addr {
		if fam == 4 {
			return a4
		}
		return a6
	}
	if c.Mode == xfrm.ModeTransport {
		s, g := pick(c.Inner, stack4, stack6), pick(c.Inner, guest4, guest6)
		return s, g, s, g
	}
	return pick(c.Inner, stackIn4, stackIn6), pick(c.Inner, guestIn4, guestIn6),
		pick(c.Outer, stack4, stack6), pick(c.Outer, guest4, guest6)
}

const (
	prioNDP  = 100
	prioMain = 1000
	// scapyPort is the stack's UDP port that collects scapy's datagrams.
	scapyPort = 9999
	// extPort is the stack's source port of the crafted extension-header
	// datagrams (the guest echoes them back to it).
	extPort = 40007
)

var ndpRange = netip.MustParsePrefix("ff02::1:ff00:0/104")

func TestLinuxXFRM(t *testing.T) {
	linuxvm.Require(t)
	// Stop starting cases shortly before go test's own deadline (10 min by
	// default), so that the report is still printed.
	end := time.Now().Add(19 * time.Minute)
	if dl, ok := t.Deadline(); ok && dl.Add(-30*time.Second).Before(end) {
		end = dl.Add(-30 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()

	logf, err := os.CreateTemp("", "ipsecstack-linuxvm-*.log")
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
	t0 := time.Now()
	img, err := linuxvm.Prepare(ctx, linuxvm.PrepareOptions{Log: &syncWriter{w: logf}})
	if err != nil {
		t.Fatal(err)
	}
	prep := time.Since(t0)
	tools := findTools(t)
	var vm *linuxvm.VM
	boot := func() {
		var err error
		vm, err = linuxvm.Start(ctx, linuxvm.Options{Image: img, Log: &syncWriter{w: logf}})
		if err != nil {
			t.Fatalf("%v (console: %s)", err, logPath)
		}
		if _, err := vm.Sh(ctx, guestSetup); err != nil {
			t.Fatal(err)
		}
		t.Logf("prepare %v, boot %v (%s, tap %s, console log %s)", prep.Round(time.Millisecond), vm.BootTime.Round(time.Millisecond), img.Package, vm.TapName, logPath)
	}
	boot()
	defer func() { vm.Close() }()

	rep := &report{Boot: vm.BootTime, Start: time.Now(), Tools: tools.describe()}
	group := ""
	for _, c := range matrix() {
		if ctx.Err() != nil {
			break
		}
		if c.Group != group {
			group = c.Group
			rep.groupStart(group)
		}
		// A guest that died (kernel oops) takes the rest with it: boot
		// a new one.
		select {
		case <-vm.Exited():
			t.Errorf("guest died before %s (console: %s); rebooting", c.Name(), logPath)
			vm.Close()
			boot()
		default:
		}
		r := &caseResult{Case: c, Cells: map[string]string{}}
		start := time.Now()
		ran := false
		r.Pass = t.Run(c.Name(), func(t *testing.T) {
			ran = true
			if miss := c.missing(); miss != "" {
				r.Skip = "not in our algorithm table: " + miss
				if linuxvm.InCI() {
					t.Fatalf("%s (CI=true)", r.Skip)
				}
				t.Skip(r.Skip)
			}
			runLinuxCase(ctx, t, vm, tools, c, r)
		})
		r.Dur = time.Since(start)
		if ran { // -run may select a part of the matrix
			rep.add(r)
		}
	}
	rep.Total = time.Since(rep.Start)
	table := rep.markdown()
	t.Logf("Linux XFRM interop matrix:\n%s", table)
	if *updateReport {
		if err := os.WriteFile("REPORT.md", []byte(rep.document(table)), 0o644); err != nil {
			t.Error(err)
		} else {
			t.Logf("wrote REPORT.md")
		}
	}
}

const guestSetup = `
ip addr add 192.0.2.2/24 dev eth0
ip addr add 2001:db8:1::2/64 dev eth0 nodad
ip addr add 203.0.113.2/32 dev eth0
ip addr add 2001:db8:200::2/128 dev eth0 nodad
ip route add 198.51.100.0/24 via 192.0.2.1 src 203.0.113.2
ip -6 route add 2001:db8:100::/64 via 2001:db8:1::1 src 2001:db8:200::2
`

// caseStack is the ipsecstack side of one case.
type caseStack struct {
	st      *stack.Stack
	inj     *injector
	raw     *rawSender
	mac     tcpip.LinkAddress // the stack NIC's
	capPath string
}

// newStack builds the gVisor stack on the host side of the TAP.
// It records every frame to a pcap file, kept (and named) when the test
// fails.
func newStack(t *testing.T, tapName string) *caseStack {
	t.Helper()
	link, err := afpacket.Open(tapName, afpacket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	capf, err := os.CreateTemp("", "ipsecstack-linuxvm-*.pcap")
	if err != nil {
		t.Fatal(err)
	}
	pw, err := pcap.NewWriter(capf, 65535)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		capf.Close()
		if t.Failed() {
			t.Logf("capture: %s", capf.Name())
		} else {
			os.Remove(capf.Name())
		}
	})
	raw, err := newRawSender(tapName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(raw.Close)
	inj := newInjector(link)
	st, err := stack.New(stack.Config{
		Link: pcap.NewEndpoint(inj, pw),
		Addrs: []netip.Prefix{
			netip.PrefixFrom(stack4, 24), netip.PrefixFrom(stack6, 64),
			netip.PrefixFrom(stackIn4, 24), netip.PrefixFrom(stackIn6, 64),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The guest's inner addresses are behind it; use the inner addresses
	// as sources towards them.
	rt := st.GetRouteTable()
	for _, r := range []struct {
		dst    netip.Prefix
		gw, sr netip.Addr
	}{
		{netip.MustParsePrefix("203.0.113.0/24"), guest4, stackIn4},
		{netip.MustParsePrefix("2001:db8:200::/64"), guest6, stackIn6},
	} {
		sub, err := tcpip.NewSubnet(tcpip.AddrFromSlice(r.dst.Addr().AsSlice()), tcpip.MaskFromBytes(mask(r.dst)))
		if err != nil {
			t.Fatal(err)
		}
		rt = append([]tcpip.Route{{Destination: sub, Gateway: tcpip.AddrFromSlice(r.gw.AsSlice()), NIC: st.NIC,
			SourceHint: tcpip.AddrFromSlice(r.sr.AsSlice()), MTU: rt[0].MTU}}, rt...)
	}
	st.SetRouteTable(rt)
	t.Cleanup(st.Close)
	return &caseStack{st: st, inj: inj, raw: raw, mac: link.LinkAddress(), capPath: capf.Name()}
}

func mask(p netip.Prefix) []byte {
	m := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// saConfig is our side's SA of one transform of the case.
func (c linuxCase) saConfig(x xform, spi uint32, src, dst netip.Addr, reqid uint32) xfrm.SAConfig {
	sa := xfrm.SAConfig{Proto: x.Proto, SPI: spi, Src: src, Dst: dst, Mode: c.Mode, ReqID: reqid}
	if x.Proto == xfrm.ProtoIPComp {
		sa.Comp = xfrm.Algorithm{Name: "deflate"}
		return sa
	}
	sa.ReplayWindow, sa.ESN = c.window(), c.ESN
	if c.Encap && x.Proto == xfrm.ProtoESP {
		sa.Encap = xfrm.Encap{Type: xfrm.EncapESPInUDP, SPort: linuxvm.NATTPort, DPort: linuxvm.NATTPort}
	}
	s := x.S
	aead, enc, auth := s.keys(spi)
	if s.AEAD.Name != "" {
		sa.AEAD = xfrm.Algorithm{Name: s.AEAD.Name, Key: aead, ICVBits: s.AEAD.ICV}
	} else {
		if x.Proto == xfrm.ProtoESP {
			sa.Enc = xfrm.Algorithm{Name: s.Enc.Name, Key: enc}
		}
		sa.Auth = xfrm.Algorithm{Name: s.Auth.Name, Key: auth, ICVBits: s.Auth.ICV}
	}
	return sa
}

// configureStack installs the case's SAs and policies in the stack.
func configureStack(t *testing.T, st *stack.Stack, c linuxCase) {
	t.Helper()
	sA, gA, sO, gO := c.addrs()
	e := st.Engine
	var out, in []xfrm.Template
	for _, x := range c.X {
		for _, sa := range []xfrm.SAConfig{
			c.saConfig(x, spiOut(x.Proto), sO, gO, 1),
			c.saConfig(x, spiIn(x.Proto), gO, sO, 1),
		} {
			if _, err := e.AddSA(sa); err != nil {
				t.Fatalf("stack AddSA %s %#x: %v", sa.Proto, sa.SPI, err)
			}
		}
		o := xfrm.Template{Proto: x.Proto, Mode: c.Mode, Level: xfrm.LevelRequire, ReqID: 1}
		i := o
		if x.Proto == xfrm.ProtoIPComp {
			i.Level = xfrm.LevelUse // small packets travel uncompressed
		}
		if c.Mode == xfrm.ModeTunnel {
			o.Src, o.Dst = sO, gO
			i.Src, i.Dst = gO, sO
		}
		out, in = append(out, o), append(in, i)
	}
	pols := []*xfrm.Policy{
		{Dir: xfrm.DirOut, Priority: prioMain, Action: xfrm.ActionProtect, Templates: out,
			Sel: xfrm.Selector{Src: host(sA), Dst: host(gA)}},
		{Dir: xfrm.DirIn, Priority: prioMain, Action: xfrm.ActionProtect, Templates: in,
			Sel: xfrm.Selector{Src: host(gA), Dst: host(sA)}},
	}
	if c.NDP {
		// NS to the solicited-node address under ESP multicast SAs (as
		// internal/testbed does); unicast NS/NA fall under the main
		// policies.
		x := c.X[0]
		for _, sa := range []xfrm.SAConfig{
			c.saConfig(x, spiNDPStack, sA, solicitedNode(gA), 2),
			c.saConfig(x, spiNDPGuest, gA, solicitedNode(sA), 2),
		} {
			sa.Mode = xfrm.ModeTransport
			if _, err := e.AddSA(sa); err != nil {
				t.Fatalf("stack AddSA NDP %#x: %v", sa.SPI, err)
			}
		}
		tm := []xfrm.Template{{Proto: xfrm.ProtoESP, Mode: xfrm.ModeTransport, Level: xfrm.LevelRequire, ReqID: 2}}
		ns := xfrm.PortRange{Lo: 135, Hi: 135}
		pols = append(pols,
			&xfrm.Policy{Dir: xfrm.DirOut, Priority: prioNDP, Action: xfrm.ActionProtect, Templates: tm,
				Sel: xfrm.Selector{Src: host(sA), Dst: ndpRange, Proto: xfrm.ProtoICMPv6, SrcPorts: ns}},
			&xfrm.Policy{Dir: xfrm.DirIn, Priority: prioNDP, Action: xfrm.ActionProtect, Templates: tm,
				Sel: xfrm.Selector{Src: host(gA), Dst: ndpRange, Proto: xfrm.ProtoICMPv6, SrcPorts: ns}})
	} else {
		ndp := xfrm.Selector{Proto: xfrm.ProtoICMPv6, SrcPorts: xfrm.PortRange{Lo: 133, Hi: 137}}
		pols = append(pols,
			&xfrm.Policy{Dir: xfrm.DirOut, Priority: prioNDP, Action: xfrm.ActionBypass, Sel: ndp},
			&xfrm.Policy{Dir: xfrm.DirIn, Priority: prioNDP, Action: xfrm.ActionBypass, Sel: ndp})
	}
	for _, p := range pols {
		if _, err := e.AddPolicy(p); err != nil {
			t.Fatalf("stack AddPolicy %v: %v", p.Sel, err)
		}
	}
}

// guestAlgs is the ip xfrm state's algorithm part for one transform.
func guestAlgs(x xform, spi uint32) string {
	if x.Proto == xfrm.ProtoIPComp {
		return "comp deflate"
	}
	s := x.S
	aead, enc, auth := s.keys(spi)
	hx := func(b []byte) string {
		if len(b) == 0 {
			return `""`
		}
		return "0x" + hex.EncodeToString(b)
	}
	if s.AEAD.Name != "" {
		return fmt.Sprintf("aead '%s' %s %d", s.AEAD.Name, hx(aead), s.AEAD.ICV)
	}
	a := fmt.Sprintf("auth-trunc '%s' %s %d", s.Auth.Name, hx(auth), s.Auth.ICV)
	if x.Proto == xfrm.ProtoAH {
		return a
	}
	return fmt.Sprintf("enc '%s' %s %s", s.Enc.Name, hx(enc), a)
}

func protoWord(p xfrm.Proto) string {
	if p == xfrm.ProtoIPComp {
		return "comp"
	}
	return p.String()
}

// guestConfig is the ip xfrm script that mirrors configureStack.
func guestConfig(c linuxCase) string {
	sA, gA, sO, gO := c.addrs()
	mode := c.Mode.String()
	var b strings.Builder
	b.WriteString("set -e\nip xfrm state flush\nip xfrm policy flush\n")
	state := func(x xform, spi uint32, src, dst netip.Addr, reqid int, mode, sel string) {
		extra := ""
		if x.Proto != xfrm.ProtoIPComp {
			if c.ESN {
				extra = " flag esn"
			}
			extra += fmt.Sprintf(" replay-window %d", c.window())
		}
		if c.Encap && x.Proto == xfrm.ProtoESP {
			extra += guestEncap(src)
		}
		fmt.Fprintf(&b, "ip xfrm state add src %s dst %s proto %s spi %#x reqid %d mode %s%s %s%s\n",
			src, dst, protoWord(x.Proto), spi, reqid, mode, extra, guestAlgs(x, spi), sel)
	}
	for _, x := range c.X {
		// An SA's selector defaults to its own family, which drops the
		// other family's inner packets of a 4-in-6 or 6-in-4 tunnel.
		sel := ""
		if c.Mode == xfrm.ModeTunnel && c.Inner != c.Outer {
			sel = " sel src ::/0 dst ::/0"
			if c.Inner == 4 {
				sel = " sel src 0.0.0.0/0 dst 0.0.0.0/0"
			}
		}
		state(x, spiOut(x.Proto), sO, gO, 1, mode, sel)
		state(x, spiIn(x.Proto), gO, sO, 1, mode, sel)
	}
	if c.NDP {
		x := c.X[0]
		state(x, spiNDPStack, sA, solicitedNode(gA), 2, "transport", "")
		state(x, spiNDPGuest, gA, solicitedNode(sA), 2, "transport", "")
		fmt.Fprintf(&b, "ip xfrm policy add src %s dst %s proto ipv6-icmp type 135 dir out priority %d tmpl proto esp mode transport reqid 2\n", host(gA), ndpRange, prioNDP)
		fmt.Fprintf(&b, "ip xfrm policy add src %s dst %s proto ipv6-icmp type 135 dir in priority %d tmpl proto esp mode transport reqid 2\n", host(sA), ndpRange, prioNDP)
	} else {
		for _, typ := range []int{133, 134, 135, 136, 137} {
			for _, dir := range []string{"out", "in", "fwd"} {
				fmt.Fprintf(&b, "ip xfrm policy add src ::/0 dst ::/0 proto ipv6-icmp type %d dir %s priority %d\n", typ, dir, prioNDP)
			}
		}
	}
	tmpl := func(src, dst netip.Addr, in bool) string {
		var t []string
		for _, x := range c.X {
			s := fmt.Sprintf("tmpl proto %s mode %s reqid 1", protoWord(x.Proto), mode)
			if c.Mode == xfrm.ModeTunnel {
				s = fmt.Sprintf("tmpl src %s dst %s proto %s mode tunnel reqid 1", src, dst, protoWord(x.Proto))
			}
			if in && x.Proto == xfrm.ProtoIPComp {
				s += " level use"
			}
			t = append(t, s)
		}
		return strings.Join(t, " ")
	}
	fmt.Fprintf(&b, "ip xfrm policy add src %s dst %s dir out priority %d %s\n", host(gA), host(sA), prioMain, tmpl(gO, sO, false))
	fmt.Fprintf(&b, "ip xfrm policy add src %s dst %s dir in priority %d %s\n", host(sA), host(gA), prioMain, tmpl(sO, gO, true))
	return b.String()
}

// Columns of the report: traffic and direction. "s→k": ipsecstack
// initiates (or sends), "k→s": the Linux kernel does.
var columns = []string{
	"ping s→k", "ping k→s", "tcp s→k", "tcp k→s", "udp s→k", "udp k→s",
	"exthdr s→k", "exthdr k→s", "ndp s→k", "ndp k→s",
	"replay →k", "replay →s", "scapy →s", "scapy ←s", "tshark", "udpencap",
}

func runLinuxCase(ctx context.Context, t *testing.T, vm *linuxvm.VM, tools tools, c linuxCase, r *caseResult) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := vm.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Encap {
		if err := vm.ESPInUDP(ctx, true); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := vm.ESPInUDP(cctx, false); err != nil {
				t.Errorf("closing the guest's ESP-in-UDP sockets: %v", err)
			}
		}()
	}
	cs := newStack(t, vm.TapName)
	st := cs.st
	configureStack(t, st, c)
	if _, err := vm.Sh(ctx, guestConfig(c)); err != nil {
		t.Fatalf("guest config: %v\n%s", err, guestConfig(c))
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := testbed.ServeSink(sctx, st, linuxvm.SinkPort); err != nil {
		t.Fatal(err)
	}
	if err := serveUDPEcho(sctx, st, linuxvm.EchoPort, stack4, stack6, stackIn4, stackIn6); err != nil {
		t.Fatal(err)
	}
	guestBefore, _ := vm.XfrmStats()
	defer func() {
		if t.Failed() {
			dumpState(t, vm, st, guestBefore)
		}
	}()
	sA, gA, sO, gO := c.addrs()
	// Each step has its own deadline, so that a broken SA costs seconds,
	// not the whole case's budget.
	step := func(col string, fn func(ctx context.Context) error) bool {
		t.Helper()
		t0 := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := fn(sctx); err != nil {
			r.Cells[col] = "FAIL"
			if ctx.Err() != nil {
				t.Fatalf("%s: %v (case timeout)", col, err)
			}
			t.Errorf("%s: %v", col, err)
			return false
		}
		r.Cells[col] = "ok"
		t.Logf("%-12s %v", col, time.Since(t0).Round(time.Millisecond))
		return true
	}
	if c.NDP {
		// Neither side knows the other's MAC: the stack's first ping
		// solicits under ESP; then the guest forgets and solicits.
		if _, err := vm.Sh(ctx, "ip -6 neigh flush dev eth0"); err != nil {
			t.Fatal(err)
		}
	}
	step("ping s→k", func(ctx context.Context) error { return pingFrom(ctx, st, sA, gA, 3, 56) })
	if c.NDP {
		step("ndp s→k", func(ctx context.Context) error { return ndpUnderESP(cs.capPath, sA, gA) })
		if _, err := vm.Sh(ctx, "ip -6 neigh flush dev eth0"); err != nil {
			t.Fatal(err)
		}
	}
	step("ping k→s", func(ctx context.Context) error {
		_, err := vm.Sh(ctx, fmt.Sprintf("ping -c 3 -i 0.2 -W 2 %s", sA))
		return err
	})
	if c.NDP {
		step("ndp k→s", func(ctx context.Context) error { return ndpUnderESP(cs.capPath, gA, sA) })
	}
	step("tcp s→k", func(ctx context.Context) error {
		_, err := testbed.TCPTransferFrom(ctx, st, sA, gA, linuxvm.SinkPort, 1<<20)
		return err
	})
	step("tcp k→s", func(ctx context.Context) error {
		_, err := vm.Sh(ctx, fmt.Sprintf("%s tcpsend %s %d %d", linuxvm.AgentPath, sA, linuxvm.SinkPort, 1<<20))
		return err
	})
	step("udp s→k", func(ctx context.Context) error { return testbed.UDPEchoFrom(ctx, st, sA, gA, linuxvm.EchoPort, 8000) })
	step("udp k→s", func(ctx context.Context) error {
		_, err := vm.Sh(ctx, fmt.Sprintf("%s udpsend %s %d 8000 3", linuxvm.AgentPath, sA, linuxvm.EchoPort))
		return err
	})
	if c.ExtHdrs {
		step("exthdr s→k", func(ctx context.Context) error { return extHdrFrom(ctx, cs, vm, sA, gA) })
		step("exthdr k→s", func(ctx context.Context) error {
			_, err := vm.Sh(ctx, fmt.Sprintf("%s udpopts %s %d 1200 3 && %[1]s udpopts %[2]s %[3]d 4000 1", linuxvm.AgentPath, sA, linuxvm.EchoPort))
			return err
		})
	}
	// Every guest SA carried traffic, and neither side counted an error.
	out, err := vm.Sh(ctx, "ip -s xfrm state")
	if err != nil {
		t.Fatal(err)
	}
	pk := guestSAPackets(out)
	for spi, n := range pk {
		if n == 0 {
			t.Errorf("guest SA %#x carried no packets", spi)
		}
	}
	if want := 2 * len(c.X); len(pk) < want {
		t.Errorf("guest has %d SAs with counters, want %d:\n%s", len(pk), want, out)
	}
	checkNoXfrmErrors(t, vm, guestBefore, st)
	// Nothing but NDP/MLD (bypassed) and IPsec on the wire.
	frames, err := readCapture(cs.capPath)
	if err != nil {
		t.Fatal(err)
	}
	if bad := clearFrames(frames, c.NDP); len(bad) > 0 {
		t.Errorf("%d of %d frames in clear, e.g. %v", len(bad), len(frames), bad[:min(len(bad), 5)])
	} else {
		t.Logf("%d frames on the wire, all IPsec or MLD/bypassed NDP", len(frames))
	}

	step("replay →k", func(ctx context.Context) error { return replayToGuest(ctx, vm, cs, frames, c, sO, gO) })
	step("replay →s", func(ctx context.Context) error { return replayToStack(ctx, cs, frames, c, gO, sO) })

	if scapyApplies(c) && tools.scapy != "" {
		step("scapy →s", func(ctx context.Context) error { return scapyInto(ctx, tools, cs, vm, c) })
		step("scapy ←s", func(ctx context.Context) error { return scapyDecrypt(ctx, tools, cs, c) })
	}
	if tsharkApplies(c) && tools.tshark != "" {
		step("tshark", func(ctx context.Context) error { return tsharkCheck(ctx, tools, cs.capPath, c) })
	}
	if c.Encap {
		step("udpencap", func(ctx context.Context) error { return encapCheck(ctx, tools, frames, cs.capPath, c) })
	}
}

var (
	saHeadRE = regexp.MustCompile(`proto (esp|ah|comp) spi (0x[0-9a-f]+)`)
	saPktsRE = regexp.MustCompile(`(\d+)\(bytes\), (\d+)\(packets\)`)
)

// guestSAPackets maps SPI to packet count from `ip -s xfrm state`.
func guestSAPackets(out string) map[uint64]uint64 {
	m := map[uint64]uint64{}
	var spi uint64
	for _, l := range strings.Split(out, "\n") {
		if s := saHeadRE.FindStringSubmatch(l); s != nil {
			spi, _ = strconv.ParseUint(s[2], 0, 64)
			continue
		}
		if strings.Contains(l, "(packets)") && spi != 0 {
			if s := saPktsRE.FindStringSubmatch(l); s != nil {
				n, _ := strconv.ParseUint(s[2], 10, 64)
				if _, seen := m[spi]; !seen {
					m[spi] = n
				}
			}
		}
	}
	return m
}

func dumpState(t *testing.T, vm *linuxvm.VM, st *stack.Stack, before map[string]uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if after, err := vm.XfrmStats(); err == nil {
		var nz []string
		for k, v := range after {
			if v != 0 {
				nz = append(nz, fmt.Sprintf("%s=%d(was %d)", k, v, before[k]))
			}
		}
		t.Logf("guest xfrm_stat non-zero: %v", nz)
	}
	out, _ := vm.Sh(ctx, "ip -s xfrm state; ip xfrm policy; ip addr; ip -6 neigh; ip neigh")
	t.Logf("guest state:\n%s", out)
	var nz []string
	for _, s := range st.Engine.Stats.Snapshot() {
		if s.Value != 0 {
			nz = append(nz, fmt.Sprintf("%s=%d", s.Name, s.Value))
		}
	}
	t.Logf("stack xfrm stats non-zero: %v", nz)
}

func readCapture(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	_, frames, err := pcap.ReadAll(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("reading the capture: %w", err)
	}
	return frames, nil
}

// checkNoXfrmErrors fails t if any of the guest's xfrm_stat counters moved
// since before, or any of the stack's is not zero: a case passes only if
// neither side dropped or refused anything.
func checkNoXfrmErrors(t *testing.T, vm *linuxvm.VM, before map[string]uint64, st *stack.Stack) {
	t.Helper()
	after, err := vm.XfrmStats()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range after {
		if v != before[k] {
			t.Errorf("guest %s went from %d to %d", k, before[k], v)
		}
	}
	for _, s := range st.Engine.Stats.Snapshot() {
		if s.Value != 0 {
			t.Errorf("stack %s = %d", s.Name, s.Value)
		}
	}
}
