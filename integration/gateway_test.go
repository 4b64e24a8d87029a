package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/integration/linuxvm"
	"github.com/ipsecstack/ipsecstack/link/afpacket"
	"github.com/ipsecstack/ipsecstack/link/pcap"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/setkey"
)

// TestLinuxGateway: site to site between an ipsecstack security gateway
// (a stack with a WAN NIC on the guest's TAP and a LAN NIC on a veth to a
// Linux host in a network namespace, forwarding) and the Linux 6.1 kernel
// in qemu as the other gateway, its protected prefixes on its loopback.
// Four ESP tunnels at once (rfc4106(gcm(aes)) 128, one SA pair each, the
// guest's configured with ip xfrm, out/in/fwd policies on both sides):
// 4-in-4, 6-in-6, 4-in-6, 6-in-4. Per tunnel, from the host behind the
// stack (the host kernel's ping, TCP and UDP through the gateway): ping,
// 2 MiB TCP to the guest's sink (SHA-256 checked), UDP echo of 8000 bytes;
// and from the guest: ping and 1 MiB TCP to a sink on the host. Every SA
// of the guest carries traffic, neither side counts an error, and the
// WAN capture holds nothing in clear between protected prefixes.
func TestLinuxGateway(t *testing.T) {
	linuxvm.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	logf, err := os.CreateTemp("", "ipsecstack-linuxgw-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		logf.Close()
		if !t.Failed() {
			os.Remove(logf.Name())
		} else {
			t.Logf("guest console: %s", logf.Name())
		}
	}()
	img, err := linuxvm.Prepare(ctx, linuxvm.PrepareOptions{Log: &syncWriter{w: logf}})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := linuxvm.Start(ctx, linuxvm.Options{Image: img, Log: &syncWriter{w: logf}})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if _, err := vm.Sh(ctx, lgwGuestSetup+lgwGuestXfrm()); err != nil {
		t.Fatalf("guest set-up: %v", err)
	}

	// The LAN: a veth from a namespace of the gateway's own (whose
	// kernel neither forwards nor has routes, so it leaves the frames to
	// the stack, which reuses the interface's MAC) to a namespace with a
	// plain Linux host.
	gns, ns := newLgwNS(t, "g"), newLgwNS(t, "l")
	lanG, lanL := fmt.Sprintf("lgw%dg", os.Getpid()%100000), fmt.Sprintf("lgw%dl", os.Getpid()%100000)
	lgwSh(t, "ip", "link", "add", lanG, "netns", gns.name, "type", "veth", "peer", "name", lanL, "netns", ns.name)
	gns.sh(t, "sysctl", "-qw", "net.ipv6.conf."+lanG+".disable_ipv6=1")
	gns.sh(t, "ip", "link", "set", lanG, "up")
	ns.sh(t, "ip", "link", "set", lanL, "up")
	// One segment per skb: the host's TSO would otherwise hand the
	// stack's AF_PACKET socket super-packets larger than the MTU.
	ns.sh(t, "ip", "link", "set", lanL, "gso_max_size", "1500")
	for _, tn := range lgwTunnels {
		ns.sh(t, "ip", "addr", "add", tn.host+tn.plen(), "dev", lanL, "nodad")
		ns.sh(t, "ip", "route", "add", tn.far, "via", tn.gw, "src", tn.host)
	}

	st, capPath := newLgwStack(t, vm.TapName, gns, lanG)
	before, _ := vm.XfrmStats()
	defer func() {
		if t.Failed() {
			dumpState(t, vm, st, before)
			t.Logf("WAN capture: %s", capPath)
		}
	}()
	sink := startLgwSink(t, ns)

	for _, tn := range lgwTunnels {
		t.Run(tn.name, func(t *testing.T) {
			var out string
			var err error
			for range 3 { // the first echo may wait for ARP/NDP on both links
				if out, err = ns.try("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", tn.host, tn.guest); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("host ping %s -> %s: %v\n%s", tn.host, tn.guest, err, out)
			}
			if _, err := vm.Sh(ctx, fmt.Sprintf("ping -c 2 -i 0.2 -W 2 -I %s %s", tn.guest, tn.host)); err != nil {
				t.Fatalf("guest ping %s -> %s: %v", tn.guest, tn.host, err)
			}
			if err := ns.tcpToSink(net.JoinHostPort(tn.guest, fmt.Sprint(linuxvm.SinkPort)), 2<<20); err != nil {
				t.Errorf("host TCP 2 MiB to the guest's sink: %v", err)
			}
			if _, err := vm.Sh(ctx, fmt.Sprintf("%s tcpsend %s %d %d", linuxvm.AgentPath, tn.host, sink, 1<<20)); err != nil {
				t.Errorf("guest TCP 1 MiB to the host's sink: %v", err)
			}
			if err := ns.udpEcho(net.JoinHostPort(tn.guest, fmt.Sprint(linuxvm.EchoPort)), 8000); err != nil {
				t.Errorf("host UDP 8000 bytes to the guest's echo: %v", err)
			}
		})
	}

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
	if len(pk) != 2*len(lgwTunnels) {
		t.Errorf("guest has %d SAs with counters, want %d:\n%s", len(pk), 2*len(lgwTunnels), out)
	}
	checkNoXfrmErrors(t, vm, before, st)
	frames, err := readCapture(capPath)
	if err != nil {
		t.Fatal(err)
	}
	var esp, leaks int
	for _, f := range frames {
		src, dst, proto, ok := lgwAddrs(f)
		if !ok {
			continue
		}
		if proto == 50 {
			esp++
		}
		for _, tn := range lgwTunnels {
			a, b := netip.MustParsePrefix(tn.near), netip.MustParsePrefix(tn.far)
			if (a.Contains(src) && b.Contains(dst)) || (b.Contains(src) && a.Contains(dst)) {
				leaks++
				if leaks <= 5 {
					t.Errorf("in clear on the WAN: %v -> %v proto %d (%s)", src, dst, proto, tn.name)
				}
			}
		}
	}
	t.Logf("WAN: %d frames, %d ESP, %d in clear between protected prefixes", len(frames), esp, leaks)
	if esp == 0 {
		t.Error("no ESP on the WAN")
	}
}

// lgwTunnel is one tunnel: the near (stack's LAN) and far (guest's
// loopback) prefixes, the host's and the guest's addresses in them, the
// stack's LAN address (the host's gateway) and the outer family.
type lgwTunnel struct {
	name            string
	near, far       string
	host, guest, gw string
	outer           int
	spi             uint32 // stack -> guest; guest -> stack is spi+1
	reqid           int
}

func (tn lgwTunnel) plen() string {
	if strings.Contains(tn.host, ":") {
		return "/64"
	}
	return "/24"
}

func (tn lgwTunnel) wan() (stackAddr, guestAddr string) {
	if tn.outer == 4 {
		return "192.0.2.1", "192.0.2.2"
	}
	return "2001:db8:1::1", "2001:db8:1::2"
}

var lgwTunnels = []lgwTunnel{
	{"4-in-4", "10.10.0.0/24", "10.20.0.0/24", "10.10.0.2", "10.20.0.1", "10.10.0.1", 4, 0x7401, 11},
	{"6-in-6", "2001:db8:10::/64", "2001:db8:20::/64", "2001:db8:10::2", "2001:db8:20::1", "2001:db8:10::1", 6, 0x7601, 12},
	{"4-in-6", "10.11.0.0/24", "10.21.0.0/24", "10.11.0.2", "10.21.0.1", "10.11.0.1", 6, 0x7801, 13},
	{"6-in-4", "2001:db8:11::/64", "2001:db8:21::/64", "2001:db8:11::2", "2001:db8:21::1", "2001:db8:11::1", 4, 0x7a01, 14},
}

// lgwKey is an SA's AES-GCM key and salt (20 bytes), hex.
func lgwKey(spi uint32) string {
	var b strings.Builder
	for i := range 20 {
		fmt.Fprintf(&b, "%02x", byte(i*13)+byte(spi))
	}
	return "0x" + b.String()
}

// lgwGuestSetup: the guest's WAN addresses, its protected prefixes on
// loopback, forwarding on (it is a gateway), and routes back to the
// stack's LAN prefixes via the stack's WAN address of the inner family.
const lgwGuestSetup = `
ip addr add 192.0.2.2/24 dev eth0
ip addr add 2001:db8:1::2/64 dev eth0 nodad
ip addr add 10.20.0.1/32 dev lo
ip addr add 10.21.0.1/32 dev lo
ip addr add 2001:db8:20::1/128 dev lo
ip addr add 2001:db8:21::1/128 dev lo
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.ipv6.conf.all.forwarding=1
ip route add 10.10.0.0/24 via 192.0.2.1 src 10.20.0.1
ip route add 10.11.0.0/24 via 192.0.2.1 src 10.21.0.1
ip -6 route add 2001:db8:10::/64 via 2001:db8:1::1 src 2001:db8:20::1
ip -6 route add 2001:db8:11::/64 via 2001:db8:1::1 src 2001:db8:21::1
`

// lgwGuestXfrm is the guest's half of the tunnels, with ip xfrm.
func lgwGuestXfrm() string {
	var b strings.Builder
	b.WriteString("set -e\nip xfrm state flush\nip xfrm policy flush\n")
	for _, tn := range lgwTunnels {
		s, g := tn.wan()
		// An SA's selector defaults to its own (outer) family, which
		// drops the inner packets of a 4-in-6 or 6-in-4 tunnel
		// (XfrmInStateMismatch): give it the tunnel's inner prefixes.
		for _, sa := range []struct {
			src, dst string
			spi      uint32
			sel      string
		}{{s, g, tn.spi, "sel src " + tn.near + " dst " + tn.far}, {g, s, tn.spi + 1, "sel src " + tn.far + " dst " + tn.near}} {
			fmt.Fprintf(&b, "ip xfrm state add src %s dst %s proto esp spi 0x%x mode tunnel reqid %d replay-window 64 aead 'rfc4106(gcm(aes))' %s 128 %s\n",
				sa.src, sa.dst, sa.spi, tn.reqid, lgwKey(sa.spi), sa.sel)
		}
		fmt.Fprintf(&b, "ip xfrm policy add src %s dst %s dir out tmpl src %s dst %s proto esp mode tunnel reqid %d\n", tn.far, tn.near, g, s, tn.reqid)
		for _, dir := range []string{"in", "fwd"} {
			fmt.Fprintf(&b, "ip xfrm policy add src %s dst %s dir %s tmpl src %s dst %s proto esp mode tunnel reqid %d\n", tn.near, tn.far, dir, s, g, tn.reqid)
		}
	}
	return b.String()
}

// lgwSetkey is the stack's half, in setkey syntax.
func lgwSetkey() string {
	var b strings.Builder
	b.WriteString("flush;\nspdflush;\n")
	for _, tn := range lgwTunnels {
		s, g := tn.wan()
		fmt.Fprintf(&b, "add %s %s esp 0x%x -m tunnel -u %d -r 64 -E aes-gcm-16 %s;\n", s, g, tn.spi, tn.reqid, lgwKey(tn.spi))
		fmt.Fprintf(&b, "add %s %s esp 0x%x -m tunnel -u %d -r 64 -E aes-gcm-16 %s;\n", g, s, tn.spi+1, tn.reqid, lgwKey(tn.spi+1))
		fmt.Fprintf(&b, "spdadd %s %s any -P out ipsec esp/tunnel/%s-%s/unique:%d;\n", tn.near, tn.far, s, g, tn.reqid)
		fmt.Fprintf(&b, "spdadd %s %s any -P in ipsec esp/tunnel/%s-%s/unique:%d;\n", tn.far, tn.near, g, s, tn.reqid)
		fmt.Fprintf(&b, "spdadd %s %s any -P fwd ipsec esp/tunnel/%s-%s/unique:%d;\n", tn.far, tn.near, g, s, tn.reqid)
	}
	return b.String()
}

// newLgwStack builds the gateway: WAN NIC on the TAP (captured to a pcap
// file), LAN NIC on lan, forwarding, and the setkey configuration.
func newLgwStack(t *testing.T, tapName string, lanNS *lgwNS, lan string) (*stack.Stack, string) {
	t.Helper()
	eng := xfrm.NewEngine()
	stmts, err := setkey.Parse("gateway.conf", lgwSetkey())
	if err != nil {
		t.Fatal(err)
	}
	if err := setkey.ApplyTo(eng, stmts, io.Discard, "gateway.conf"); err != nil {
		t.Fatal(err)
	}
	wan, err := afpacket.Open(tapName, afpacket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The socket stays in the namespace it was opened in.
	var lanEP gstack.LinkEndpoint
	if err := lanNS.do(func() (err error) {
		lanEP, err = afpacket.Open(lan, afpacket.Options{RXChecksumOffload: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	capf, err := os.CreateTemp("", "ipsecstack-linuxgw-*.pcap")
	if err != nil {
		t.Fatal(err)
	}
	pw, err := pcap.NewWriter(capf, 65535)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stack.Config{
		Link:       pcap.NewEndpoint(wan, pw),
		Addrs:      []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8:1::1/64")},
		Engine:     eng,
		LANs:       []stack.NIC{{Link: lanEP}},
		Routes:     nil,
		Forwarding: true,
	}
	for _, tn := range lgwTunnels {
		cfg.LANs[0].Addrs = append(cfg.LANs[0].Addrs, netip.MustParsePrefix(tn.gw+tn.plen()))
		gw := "192.0.2.2"
		if strings.Contains(tn.far, ":") {
			gw = "2001:db8:1::2"
		}
		cfg.Routes = append(cfg.Routes, stack.Route{Dst: netip.MustParsePrefix(tn.far), Gateway: netip.MustParseAddr(gw)})
	}
	st, err := stack.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		eng.Close()
		capf.Close()
		if !t.Failed() {
			os.Remove(capf.Name())
		}
	})
	return st, capf.Name()
}

// lgwAddrs reads an Ethernet frame's IP addresses and protocol (the
// first header after IPv6's fixed one is enough here: nothing on this
// WAN carries extension headers).
func lgwAddrs(f []byte) (src, dst netip.Addr, proto uint8, ok bool) {
	if len(f) < 14 {
		return
	}
	ip := f[14:]
	switch {
	case f[12] == 0x08 && f[13] == 0x00 && len(ip) >= 20:
		src, _ = netip.AddrFromSlice(ip[12:16])
		dst, _ = netip.AddrFromSlice(ip[16:20])
		return src, dst, ip[9], true
	case f[12] == 0x86 && f[13] == 0xdd && len(ip) >= 40:
		src, _ = netip.AddrFromSlice(ip[8:24])
		dst, _ = netip.AddrFromSlice(ip[24:40])
		return src, dst, ip[6], true
	}
	return
}

// lgwNS is a network namespace for the LAN host.
type lgwNS struct{ name string }

func newLgwNS(t *testing.T, tag string) *lgwNS {
	t.Helper()
	ns := &lgwNS{fmt.Sprintf("lgw%s%d", tag, os.Getpid())}
	lgwSh(t, "ip", "netns", "add", ns.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns.name).Run() })
	ns.sh(t, "ip", "link", "set", "lo", "up")
	return ns
}

func lgwSh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (ns *lgwNS) sh(t *testing.T, args ...string) string {
	t.Helper()
	return lgwSh(t, append([]string{"ip", "netns", "exec", ns.name}, args...)...)
}

func (ns *lgwNS) try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...).CombinedOutput()
	return string(out), err
}

// do runs fn on an OS thread inside ns (Go discards the thread after).
func (ns *lgwNS) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns.name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// tcpToSink sends n random bytes to the agent's sink from ns and checks
// the SHA-256 it answers.
func (ns *lgwNS) tcpToSink(addr string, n int64) error {
	var c net.Conn
	if err := ns.do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(c, h), rand.Reader, n); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, h.Sum(nil)) {
		return fmt.Errorf("sink answered %x, want the SHA-256 %x", got, h.Sum(nil))
	}
	return nil
}

// udpEcho sends one datagram of size bytes from ns and wants it back.
func (ns *lgwNS) udpEcho(addr string, size int) error {
	var c net.Conn
	if err := ns.do(func() (err error) {
		c, err = net.Dial("udp", addr)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	msg := make([]byte, size)
	rand.Read(msg)
	buf := make([]byte, 65536)
	for range 5 {
		c.Write(msg)
		c.SetReadDeadline(time.Now().Add(time.Second))
		if m, err := c.Read(buf); err == nil && bytes.Equal(buf[:m], msg) {
			return nil
		}
	}
	return fmt.Errorf("no echo of %d bytes", size)
}

// startLgwSink serves the agent's tcpsend in ns: it reads to EOF and
// answers with the SHA-256 of what it read, as the guest's sink does.
func startLgwSink(t *testing.T, ns *lgwNS) int {
	t.Helper()
	var ln net.Listener
	if err := ns.do(func() (err error) {
		ln, err = net.Listen("tcp", ":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				h := sha256.New()
				if _, err := io.Copy(h, c); err == nil {
					c.Write(h.Sum(nil))
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
