package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
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
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/integration/linuxvm"
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

// linuxCase is one row of the interop matrix.
type linuxCase struct {
	Name  string
	Mode  xfrm.Mode
	Inner int // family of the protected traffic
	Outer int // family of the tunnel (tunnel mode)
	// AEAD (Linux name), key length in bytes including the salt, ICV bits.
	AEAD   string
	KeyLen int
	ICV    int
}

var linuxCases = []linuxCase{
	{Name: "esp-transport-v6-aes-gcm-128", Mode: xfrm.ModeTransport, Inner: 6, AEAD: "rfc4106(gcm(aes))", KeyLen: 20, ICV: 128},
	{Name: "esp-transport-v4-aes-gcm-128", Mode: xfrm.ModeTransport, Inner: 4, AEAD: "rfc4106(gcm(aes))", KeyLen: 20, ICV: 128},
	{Name: "esp-tunnel-6in6-aes-gcm-128", Mode: xfrm.ModeTunnel, Inner: 6, Outer: 6, AEAD: "rfc4106(gcm(aes))", KeyLen: 20, ICV: 128},
	{Name: "esp-tunnel-4in4-aes-gcm-128", Mode: xfrm.ModeTunnel, Inner: 4, Outer: 4, AEAD: "rfc4106(gcm(aes))", KeyLen: 20, ICV: 128},
	{Name: "esp-tunnel-4in6-aes-gcm-128", Mode: xfrm.ModeTunnel, Inner: 4, Outer: 6, AEAD: "rfc4106(gcm(aes))", KeyLen: 20, ICV: 128},
	{Name: "esp-tunnel-6in4-aes-gcm-128", Mode: xfrm.ModeTunnel, Inner: 6, Outer: 4, AEAD: "rfc4106(gcm(aes))", KeyLen: 20, ICV: 128},
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
	spiStackToGuest = 0x1001
	spiGuestToStack = 0x2001
	prioNDP         = 100
	prioMain        = 1000
)

func key(n int, seed byte) []byte {
	h := sha256.Sum256([]byte{seed, byte(n)})
	k := bytes.Repeat(h[:], n/32+1)
	return k[:n]
}

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

func TestLinuxXFRM(t *testing.T) {
	linuxvm.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
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
	vm, err := linuxvm.Start(ctx, linuxvm.Options{Image: img, Log: &syncWriter{w: logf}})
	if err != nil {
		t.Fatalf("%v (console: %s)", err, logPath)
	}
	defer vm.Close()
	t.Logf("prepare %v, boot %v (%s, tap %s, console log %s)", prep.Round(time.Millisecond), vm.BootTime.Round(time.Millisecond), img.Package, vm.TapName, logPath)

	setup := `
ip addr add 192.0.2.2/24 dev eth0
ip addr add 2001:db8:1::2/64 dev eth0 nodad
ip addr add 203.0.113.2/32 dev eth0
ip addr add 2001:db8:200::2/128 dev eth0 nodad
ip route add 198.51.100.0/24 via 192.0.2.1 src 203.0.113.2
ip -6 route add 2001:db8:100::/64 via 2001:db8:1::1 src 2001:db8:200::2
`
	if _, err := vm.Sh(ctx, setup); err != nil {
		t.Fatal(err)
	}

	type row struct {
		name string
		d    time.Duration
		ok   bool
	}
	var rows []row
	for _, c := range linuxCases {
		start := time.Now()
		ran := false
		ok := t.Run(c.Name, func(t *testing.T) { ran = true; runLinuxCase(ctx, t, vm, c) })
		if ran {
			rows = append(rows, row{c.Name, time.Since(start), ok})
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "boot %v\n", vm.BootTime.Round(time.Millisecond))
	for _, r := range rows {
		res := "PASS"
		if !r.ok {
			res = "FAIL"
		}
		fmt.Fprintf(&b, "%-34s %s %v\n", r.name, res, r.d.Round(time.Millisecond))
	}
	t.Logf("Linux XFRM interop:\n%s", b.String())
}

// newStack builds the gVisor stack on the host side of the TAP.
// It records every frame to a pcap file, kept (and named) when the test
// fails.
func newStack(t *testing.T, tapName string) (*stack.Stack, string) {
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
	st, err := stack.New(stack.Config{
		Link: pcap.NewEndpoint(link, pw),
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
	return st, capf.Name()
}

func mask(p netip.Prefix) []byte {
	m := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// configureStack installs the case's SAs and policies in the stack.
func configureStack(t *testing.T, st *stack.Stack, c linuxCase) {
	t.Helper()
	sA, gA, sO, gO := c.addrs()
	e := st.Engine
	for _, sa := range []xfrm.SAConfig{
		{SPI: spiStackToGuest, Src: sO, Dst: gO},
		{SPI: spiGuestToStack, Src: gO, Dst: sO},
	} {
		sa.Proto, sa.Mode, sa.ReqID, sa.ReplayWindow = xfrm.ProtoESP, c.Mode, 1, 128
		sa.AEAD = xfrm.Algorithm{Name: c.AEAD, Key: key(c.KeyLen, byte(sa.SPI>>8)), ICVBits: c.ICV}
		if _, err := e.AddSA(sa); err != nil {
			t.Fatalf("stack AddSA %#x: %v", sa.SPI, err)
		}
	}
	out := xfrm.Template{Proto: xfrm.ProtoESP, Mode: c.Mode, Level: xfrm.LevelRequire, ReqID: 1}
	in := out
	if c.Mode == xfrm.ModeTunnel {
		out.Src, out.Dst = sO, gO
		in.Src, in.Dst = gO, sO
	}
	ndp := xfrm.Selector{Proto: xfrm.ProtoICMPv6, SrcPorts: xfrm.PortRange{Lo: 133, Hi: 137}}
	for _, p := range []*xfrm.Policy{
		{Dir: xfrm.DirOut, Priority: prioNDP, Action: xfrm.ActionBypass, Sel: ndp},
		{Dir: xfrm.DirIn, Priority: prioNDP, Action: xfrm.ActionBypass, Sel: ndp},
		{Dir: xfrm.DirOut, Priority: prioMain, Action: xfrm.ActionProtect, Templates: []xfrm.Template{out},
			Sel: xfrm.Selector{Src: host(sA), Dst: host(gA)}},
		{Dir: xfrm.DirIn, Priority: prioMain, Action: xfrm.ActionProtect, Templates: []xfrm.Template{in},
			Sel: xfrm.Selector{Src: host(gA), Dst: host(sA)}},
	} {
		if _, err := e.AddPolicy(p); err != nil {
			t.Fatalf("stack AddPolicy %v: %v", p.Sel, err)
		}
	}
}

// guestConfig is the ip xfrm script that mirrors configureStack.
func guestConfig(c linuxCase) string {
	sA, gA, sO, gO := c.addrs()
	mode := "transport"
	if c.Mode == xfrm.ModeTunnel {
		mode = "tunnel"
	}
	var b strings.Builder
	b.WriteString("set -e\nip xfrm state flush\nip xfrm policy flush\n")
	for _, sa := range []struct {
		spi      uint32
		src, dst netip.Addr
	}{{spiStackToGuest, sO, gO}, {spiGuestToStack, gO, sO}} {
		// An SA's selector defaults to its own family, which drops the
		// other family's inner packets of a 4-in-6 or 6-in-4 tunnel.
		sel := ""
		if c.Mode == xfrm.ModeTunnel && c.Inner != c.Outer {
			sel = " sel src ::/0 dst ::/0"
			if c.Inner == 4 {
				sel = " sel src 0.0.0.0/0 dst 0.0.0.0/0"
			}
		}
		fmt.Fprintf(&b, "ip xfrm state add src %s dst %s proto esp spi %#x reqid 1 mode %s replay-window 128 aead '%s' 0x%s %d%s\n",
			sa.src, sa.dst, sa.spi, mode, c.AEAD, hex.EncodeToString(key(c.KeyLen, byte(sa.spi>>8))), c.ICV, sel)
	}
	for _, typ := range []int{133, 134, 135, 136, 137} {
		for _, dir := range []string{"out", "in", "fwd"} {
			fmt.Fprintf(&b, "ip xfrm policy add src ::/0 dst ::/0 proto ipv6-icmp type %d dir %s priority %d\n", typ, dir, prioNDP)
		}
	}
	tmpl := func(src, dst netip.Addr) string {
		if c.Mode == xfrm.ModeTunnel {
			return fmt.Sprintf("tmpl src %s dst %s proto esp mode tunnel reqid 1", src, dst)
		}
		return "tmpl proto esp mode transport reqid 1"
	}
	fmt.Fprintf(&b, "ip xfrm policy add src %s dst %s dir out priority %d %s\n", host(gA), host(sA), prioMain, tmpl(gO, sO))
	fmt.Fprintf(&b, "ip xfrm policy add src %s dst %s dir in priority %d %s\n", host(sA), host(gA), prioMain, tmpl(sO, gO))
	return b.String()
}

func runLinuxCase(ctx context.Context, t *testing.T, vm *linuxvm.VM, c linuxCase) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := vm.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	st, capPath := newStack(t, vm.TapName)
	configureStack(t, st, c)
	if _, err := vm.Sh(ctx, guestConfig(c)); err != nil {
		t.Fatalf("guest config: %v\n%s", err, guestConfig(c))
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := serveSink(sctx, st, linuxvm.SinkPort); err != nil {
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
	sA, gA, _, _ := c.addrs()
	step := func(name string, fn func() error) {
		t.Helper()
		t0 := time.Now()
		if err := fn(); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("%s: %v (case timeout)", name, err)
			}
			t.Errorf("%s: %v", name, err)
			return
		}
		t.Logf("%-22s %v", name, time.Since(t0).Round(time.Millisecond))
	}
	step("ping stack->guest", func() error {
		return pingFrom(ctx, st, sA, gA, 3, 56)
	})
	step("ping guest->stack", func() error {
		_, err := vm.Sh(ctx, fmt.Sprintf("ping -c 3 -i 0.2 -W 2 %s", sA))
		return err
	})
	step("tcp 1MiB stack->guest", func() error {
		return tcpSendFrom(ctx, st, sA, gA, linuxvm.SinkPort, 1<<20)
	})
	step("tcp 1MiB guest->stack", func() error {
		_, err := vm.Sh(ctx, fmt.Sprintf("%s tcpsend %s %d %d", linuxvm.AgentPath, sA, linuxvm.SinkPort, 1<<20))
		return err
	})
	step("udp 8000 stack->guest", func() error {
		return udpEchoFrom(ctx, st, sA, gA, linuxvm.EchoPort, 8000)
	})
	step("udp 8000 guest->stack", func() error {
		_, err := vm.Sh(ctx, fmt.Sprintf("%s udpsend %s %d 8000 3", linuxvm.AgentPath, sA, linuxvm.EchoPort))
		return err
	})
	// Both guest SAs carried traffic, and the guest saw no errors.
	out, err := vm.Sh(ctx, "ip -s xfrm state")
	if err != nil {
		t.Fatal(err)
	}
	for spi, pk := range guestSAPackets(out) {
		if pk == 0 {
			t.Errorf("guest SA %#x carried no packets", spi)
		}
	}
	if n := len(guestSAPackets(out)); n != 2 {
		t.Errorf("guest has %d SAs with counters, want 2:\n%s", n, out)
	}
	after, err := vm.XfrmStats()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range after {
		if v != guestBefore[k] {
			t.Errorf("guest %s went from %d to %d", k, guestBefore[k], v)
		}
	}
	for _, s := range st.Engine.Stats.Snapshot() {
		if s.Value != 0 {
			t.Errorf("stack %s = %d", s.Name, s.Value)
		}
	}
	// Nothing but NDP/MLD (bypassed) and IPsec on the wire.
	b, err := os.ReadFile(capPath)
	if err != nil {
		t.Fatal(err)
	}
	_, frames, err := pcap.ReadAll(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("reading the capture: %v", err)
	}
	if bad := clearFrames(frames); len(bad) > 0 {
		t.Errorf("%d of %d frames in clear, e.g. %v", len(bad), len(frames), bad[:min(len(bad), 5)])
	} else {
		t.Logf("%d frames on the wire, all IPsec or NDP/MLD", len(frames))
	}
}

var (
	saHeadRE = regexp.MustCompile(`proto esp spi (0x[0-9a-f]+)`)
	saPktsRE = regexp.MustCompile(`(\d+)\(bytes\), (\d+)\(packets\)`)
)

// guestSAPackets maps SPI to packet count from `ip -s xfrm state`.
func guestSAPackets(out string) map[uint64]uint64 {
	m := map[uint64]uint64{}
	var spi uint64
	for _, l := range strings.Split(out, "\n") {
		if s := saHeadRE.FindStringSubmatch(l); s != nil {
			spi, _ = strconv.ParseUint(s[1], 0, 64)
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

// serveSink serves the TCP sink protocol (read to EOF, answer SHA-256) on
// the stack, as the guest agent does.
func serveSink(ctx context.Context, st *stack.Stack, port uint16) error {
	l, err := gonet.ListenTCP(st.Stack, st.FullAddress(netip.IPv6Unspecified(), port), stack.Proto(netip.IPv6Unspecified()))
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					return
				}
				c.Write(h.Sum(nil))
			}()
		}
	}()
	return nil
}
