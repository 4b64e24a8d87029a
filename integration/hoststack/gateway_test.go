package hoststack

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
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipsecstack/ipsecstack/internal/leakcheck"
)

// The security-gateway tests: `ipsecstack run` with --link (the WAN) and
// --lan (a protected network), site to site between two daemons, plain
// Linux hosts behind them:
//
//	L1 (kernel) --lan-- G1 (ipsecstack) ==WAN veth, ESP== G2 (ipsecstack) --lan-- L2 (kernel)
//
// Four tunnels at once, one per family combination, each between its own
// pair of subnets with its own SA pair (unique reqid): 4-in-4, 4-in-6,
// 6-in-6, 6-in-4. The WAN has an MTU of 1400 while the LANs have 1500, so
// every full-size packet from a host needs the gateways' path MTU answers
// (Fragmentation Needed, Packet Too Big).

// gwTunnel is one tunnel of the topology.
type gwTunnel struct {
	name         string
	inner, outer int       // address families
	site         [2]string // the protected prefixes of site 1 and 2
	host         [2]string // the LAN host's address in it (L1, L2)
	gw           [2]string // the gateway's --lan-addr in it (with prefix)
	spi          uint32    // site 1 -> 2; 2 -> 1 is spi+1
	reqid        int
}

var gwTunnels = []gwTunnel{
	{"4-in-4", 4, 4, [2]string{"10.1.0.0/16", "10.2.0.0/16"}, [2]string{"10.1.0.2", "10.2.0.2"}, [2]string{"10.1.0.1/24", "10.2.0.1/24"}, 0x4401, 1},
	{"4-in-6", 4, 6, [2]string{"10.11.0.0/24", "10.12.0.0/24"}, [2]string{"10.11.0.2", "10.12.0.2"}, [2]string{"10.11.0.1/24", "10.12.0.1/24"}, 0x4601, 2},
	{"6-in-6", 6, 6, [2]string{"fd00:a::/64", "fd00:b::/64"}, [2]string{"fd00:a::2", "fd00:b::2"}, [2]string{"fd00:a::1/64", "fd00:b::1/64"}, 0x6601, 3},
	{"6-in-4", 6, 4, [2]string{"fd00:a1::/64", "fd00:b1::/64"}, [2]string{"fd00:a1::2", "fd00:b1::2"}, [2]string{"fd00:a1::1/64", "fd00:b1::1/64"}, 0x6401, 4},
}

// The WAN addresses of G1 and G2, and the rest of the plan.
var (
	gwWAN4 = [2]string{"192.0.2.1", "192.0.2.2"}
	gwWAN6 = [2]string{"fd00:1::1", "fd00:1::2"}
	// gwBlocked is an address of L2 inside site 2's 4-in-4 prefix that
	// G2's fwd discard policy blocks after decapsulation.
	gwBlocked = "10.2.0.200"
	// gwTunHost is the host side of G1's --tun device, gwTunStack the
	// stack's --tun-addr; the prefix is inside site 1's 4-in-4 prefix.
	gwTunHost  = "10.1.5.1"
	gwTunStack = "10.1.5.254/24"
)

const gwWANMTU = 1400

func (tn gwTunnel) wan(i int) string {
	if tn.outer == 4 {
		return gwWAN4[i]
	}
	return gwWAN6[i]
}

// gwSetkey is gateway me's (0 or 1) setkey file: every tunnel's SAs
// (AES-GCM-16, so the oracle below knows the overhead) and its out, in
// and fwd policies; G2 also discards what is forwarded to gwBlocked.
func gwSetkey(me int) string {
	peer := 1 - me
	var b strings.Builder
	b.WriteString("# integration/hoststack gateway test\nflush;\nspdflush;\n")
	for _, tn := range gwTunnels {
		fmt.Fprintf(&b, "add %s %s esp 0x%x -m tunnel -u %d -r 64 -E aes-gcm-16 %s;\n", tn.wan(0), tn.wan(1), tn.spi, tn.reqid, keyHex(20, byte(tn.spi)))
		fmt.Fprintf(&b, "add %s %s esp 0x%x -m tunnel -u %d -r 64 -E aes-gcm-16 %s;\n", tn.wan(1), tn.wan(0), tn.spi+1, tn.reqid, keyHex(20, byte(tn.spi+1)))
		tmpl := func(from, to int) string {
			return fmt.Sprintf("esp/tunnel/%s-%s/unique:%d", tn.wan(from), tn.wan(to), tn.reqid)
		}
		fmt.Fprintf(&b, "spdadd %s %s any -P out ipsec %s;\n", tn.site[me], tn.site[peer], tmpl(me, peer))
		fmt.Fprintf(&b, "spdadd %s %s any -P in ipsec %s;\n", tn.site[peer], tn.site[me], tmpl(peer, me))
		fmt.Fprintf(&b, "spdadd %s %s any -P fwd ipsec %s;\n", tn.site[peer], tn.site[me], tmpl(peer, me))
	}
	if me == 1 {
		fmt.Fprintf(&b, "spdadd %s %s/32 any -P fwd prio 100 discard;\n", gwTunnels[0].site[0], gwBlocked)
	}
	return b.String()
}

// gwNet is the running topology.
type gwNet struct {
	dir      string
	L, G     [2]*netns
	d        [2]*daemon
	wan      [2]string // the WAN veth ends, in G1 and G2
	lanG     [2]string // the gateways' LAN veth ends
	lanL     [2]string // the hosts' LAN veth ends
	tun      string    // G1's TUN device
	leak     *capture  // on G1's WAN veth
	blockedL string    // L2 holds gwBlocked
}

func newGwNet(t *testing.T) *gwNet {
	t.Helper()
	n := &gwNet{dir: t.TempDir(), tun: uniq("gwt")}
	for i := range 2 {
		n.L[i], n.G[i] = newNS(t), newNS(t)
		n.lanG[i], n.lanL[i] = uniq(fmt.Sprintf("g%dl", i+1)), uniq(fmt.Sprintf("l%dg", i+1))
		n.wan[i] = uniq(fmt.Sprintf("g%dw", i+1))
	}
	vethPair(t, n.G[0], n.wan[0], n.G[1], n.wan[1])
	for i := range 2 {
		n.G[i].sh(t, "ip", "link", "set", n.wan[i], "mtu", strconv.Itoa(gwWANMTU))
		// The LAN: the gateway's end owned by the stack, the host's a
		// plain kernel interface with an address in every tunnel's
		// site prefix and routes to the far sites via the gateway.
		sh(t, "ip", "link", "add", n.lanG[i], "netns", n.G[i].name, "type", "veth", "peer", "name", n.lanL[i], "netns", n.L[i].name)
		n.G[i].ownedByStack(t, n.lanG[i])
		L, dev := n.L[i], n.lanL[i]
		L.sh(t, "ip", "link", "set", dev, "up")
		// A host on a real LAN puts frames of at most the MTU on the
		// wire; over veth, its kernel's TSO would hand the gateway's
		// AF_PACKET socket unsegmented super-packets of up to 64 KiB,
		// which a gateway (as the Linux kernel's forwarding would not)
		// answers with Fragmentation Needed. One segment per skb keeps
		// the veth a wire.
		L.sh(t, "ip", "link", "set", dev, "gso_max_size", "1500")
		for _, tn := range gwTunnels {
			plen := "/24"
			if tn.inner == 6 {
				plen = "/64"
			}
			L.sh(t, "ip", "addr", "add", tn.host[i]+plen, "dev", dev, "nodad")
			gw, _, _ := strings.Cut(tn.gw[i], "/")
			L.sh(t, "ip", "route", "add", tn.site[1-i], "via", gw, "src", tn.host[i])
		}
	}
	n.L[1].sh(t, "ip", "addr", "add", gwBlocked+"/24", "dev", n.lanL[1])

	for i := range 2 {
		conf := filepath.Join(n.dir, fmt.Sprintf("G%d.conf", i+1))
		if err := os.WriteFile(conf, []byte(gwSetkey(i)), 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"--link", "afpacket:" + n.wan[i],
			"--addr", gwWAN4[i] + "/24", "--addr", gwWAN6[i] + "/64",
			"--lan", "afpacket:" + n.lanG[i], "--setkey", conf, "--log-level", "debug"}
		for _, tn := range gwTunnels {
			args = append(args, "--lan-addr", tn.gw[i])
			gw := gwWAN4[1-i]
			if tn.inner == 6 {
				gw = gwWAN6[1-i]
			}
			// The inner family's route; its gateway is the peer's WAN
			// address of that family (the tunnel takes the other).
			args = append(args, "--route", tn.site[1-i]+"="+gw)
		}
		if i == 0 {
			args = append(args, "--tun", n.tun, "--tun-addr", gwTunStack)
		}
		n.d[i] = startDaemon(t, fmt.Sprintf("G%d", i+1), n.G[i], n.dir, args...)
	}
	// The host side of G1's TUN: its own address, and the far 4-in-4
	// site through the TUN device.
	n.G[0].sh(t, "ip", "addr", "add", gwTunHost+"/24", "dev", n.tun)
	n.G[0].sh(t, "ip", "route", "add", gwTunnels[0].site[1], "dev", n.tun, "src", gwTunHost)
	return n
}

// gwFlows are the protected subnet pairs, for the leak check.
func gwFlows() []leakcheck.Flow {
	var fl []leakcheck.Flow
	for _, tn := range gwTunnels {
		fl = append(fl, leakcheck.Flow{Name: tn.name + " " + tn.site[0] + "<->" + tn.site[1],
			Src: netip.MustParsePrefix(tn.site[0]), Dst: netip.MustParsePrefix(tn.site[1]), Both: true})
	}
	return fl
}

// TestGatewaySiteToSite: two `ipsecstack run` security gateways between
// two Linux hosts (four namespaces), with ESP tunnels 4-in-4, 4-in-6,
// 6-in-6 and 6-in-4 between subnets and a WAN MTU of 1400 under LANs of
// 1500. Per tunnel: the kernel's ping, 16 MiB of kernel TCP each way at
// once (SHA-256 checked; the hosts' 1500-byte segments need the gateways'
// Fragmentation Needed / Packet Too Big), UDP datagrams of 8000 bytes
// (fragmented by the host) echoed back. Then: a DF ping of 1472 bytes
// (IPv4) and an IPv6 ping of 1452 get Frag Needed / Packet Too Big with the
// tunnel MTU; G2's fwd discard policy blocks one address and `ipsecstack
// stats` counts it as XfrmInPolBlock; a host program in G1's namespace
// reaches L2 through --tun with no port forward; and an AF_PACKET capture
// of the whole run on G1's WAN veth holds ESP and no cleartext packet of a
// protected subnet pair.
func TestGatewaySiteToSite(t *testing.T) {
	require(t, "ping")
	n := newGwNet(t)
	n.leak = startCapture(t, n.G[0], n.wan[0], gwFlows())
	srv := startGwServers(t, n.L[1])

	for _, tn := range gwTunnels {
		t.Run(tn.name, func(t *testing.T) {
			src, dst := tn.host[0], tn.host[1]
			n.pingOK(t, n.L[0], src, dst)
			n.pingOK(t, n.L[1], dst, src)
			start := time.Now()
			tcpBothWays(t, n.L[0], net.JoinHostPort(dst, strconv.Itoa(srv.tcpPort)), 16<<20)
			t.Logf("16 MiB each way over %s: %v", tn.name, time.Since(start).Round(time.Millisecond))
			udpEchoKernel(t, n.L[0], net.JoinHostPort(dst, strconv.Itoa(srv.udpPort)), []int{100, 1400, 8000})
		})
	}

	t.Run("PathMTU", func(t *testing.T) {
		for _, tn := range gwTunnels {
			want := espTunnelMTU(gwWANMTU, tn.outer)
			size := 1472 // 1500 bytes on the LAN with IPv4's 20 + ICMP's 8
			if tn.inner == 6 {
				size = 1452 // IPv6's 40 + ICMPv6's 8
			}
			// A fresh host route cache: the earlier TCP taught L1 the
			// path MTU already, and ping would then fail locally.
			n.L[0].sh(t, "ip", "route", "flush", "cache")
			if tn.inner == 6 {
				n.L[0].sh(t, "ip", "-6", "route", "flush", "cache")
			}
			got := n.pingTooBig(t, tn, size)
			if got != want {
				t.Errorf("%s: the gateway reports MTU %d for a %d-byte packet, want the tunnel MTU %d (%d less outer IPv%d, ESP header, IV, pad, trailer, ICV)", tn.name, got, size+28, want, gwWANMTU, tn.outer)
			}
			// What the gateway says fits must fit: a DF ping of
			// exactly the reported size goes through.
			hdrs := 28 // IPv4 and ICMP headers
			if tn.inner == 6 {
				hdrs = 48
			}
			n.pingSizeOK(t, n.L[0], tn.host[0], tn.host[1], got-hdrs)
		}
	})

	t.Run("FwdDiscard", func(t *testing.T) {
		before := xfrmStat(t, n.d[1], "XfrmInPolBlock")
		out, err := n.L[0].try("ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", gwTunnels[0].host[0], gwBlocked)
		if err == nil {
			t.Fatalf("ping %s went through G2's fwd discard policy:\n%s", gwBlocked, out)
		}
		after := xfrmStat(t, n.d[1], "XfrmInPolBlock")
		if after < before+2 {
			t.Errorf("XfrmInPolBlock %d -> %d: want the 2 blocked echoes counted", before, after)
		}
		// The rest of the subnet still passes.
		n.pingOK(t, n.L[0], gwTunnels[0].host[0], gwTunnels[0].host[1])
	})

	t.Run("Tun", func(t *testing.T) {
		// The kernel's ping and a TCP connection of a host program in
		// G1's namespace: the TUN, G1's stack, ESP, G2, L2.
		n.pingOK(t, n.G[0], gwTunHost, gwTunnels[0].host[1])
		tcpBothWays(t, n.G[0], net.JoinHostPort(gwTunnels[0].host[1], strconv.Itoa(srv.tcpPort)), 4<<20)
		udpEchoKernel(t, n.G[0], net.JoinHostPort(gwTunnels[0].host[1], strconv.Itoa(srv.udpPort)), []int{100, 3000})
	})

	st := n.leak.stop(t)
	t.Logf("WAN capture: %d frames, %d IP, %d ESP, %d clear, %d fragments; %d dropped by the kernel", st.Frames, st.IP, st.Protected, st.Clear, st.Fragments, n.leak.drops)
	if st.Protected == 0 {
		t.Errorf("no ESP seen on the WAN: the capture saw nothing of the tests")
	}
}

// pingOK runs the kernel's ping in ns from src to dst and wants replies.
func (n *gwNet) pingOK(t *testing.T, ns *netns, src, dst string) {
	t.Helper()
	n.pingSizeOK(t, ns, src, dst, 56)
}

func (n *gwNet) pingSizeOK(t *testing.T, ns *netns, src, dst string, size int) {
	t.Helper()
	var out string
	var err error
	// The first echo may wait for ARP/NDP on three links.
	for range 3 {
		if out, err = ns.try("ping", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", strconv.Itoa(size), "-I", src, dst); err == nil {
			return
		}
	}
	t.Fatalf("ping -s %d %s -> %s in %s: %v\n%s", size, src, dst, ns.name, err, out)
}

// mtuRE matches what iputils ping prints for Frag Needed / Packet Too Big
// ("Frag needed and DF set (mtu = 1346)", "Packet too big: mtu=1326") and
// for a path MTU the kernel learnt from one ("message too long, mtu=1346").
var mtuRE = regexp.MustCompile(`(?i)(?:frag needed and DF set \(mtu = |packet too big: mtu=|message too long, mtu=)(\d+)`)

// pingTooBig sends a full-size DF ping over tn from L1 and returns the MTU
// of the ICMP error the gateway answered with, as the kernel's ping
// prints it.
func (n *gwNet) pingTooBig(t *testing.T, tn gwTunnel, size int) int {
	t.Helper()
	out, err := n.L[0].try("ping", "-c", "2", "-i", "0.3", "-W", "2", "-M", "do", "-s", strconv.Itoa(size), "-I", tn.host[0], tn.host[1])
	if err == nil {
		t.Fatalf("%s: a %d-byte DF ping crossed a %d-byte WAN:\n%s", tn.name, size, gwWANMTU, out)
	}
	m := mtuRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s: ping -M do -s %d printed no Frag Needed / Packet Too Big:\n%s", tn.name, size, out)
	}
	mtu, _ := strconv.Atoi(m[1])
	t.Logf("%s: %q", tn.name, m[0])
	return mtu
}

// espTunnelMTU is the largest inner packet an AES-GCM-16 ESP tunnel SA
// carries in one wire packet of mtu bytes, from RFC 4303 and RFC 4106 by
// hand: outer IP header, SPI and sequence number (8), IV (8), the payload
// plus pad length and next header (2) padded to 4 bytes, ICV (16).
func espTunnelMTU(mtu, outer int) int {
	hdr := 20
	if outer == 6 {
		hdr = 40
	}
	room := mtu - hdr - 8 - 8 - 16 // for payload + padding + 2
	return room/4*4 - 2
}

// xfrmStat reads one counter from `ipsecstack stats`.
func xfrmStat(t *testing.T, d *daemon, name string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, serr, code := cli(ctx, "stats", "--control", d.control)
	if code != 0 {
		t.Fatalf("%s: ipsecstack stats: exit %d: %s", d.name, code, serr)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == name {
			v, err := strconv.ParseUint(f[len(f)-1], 10, 64)
			if err == nil {
				return v
			}
		}
	}
	t.Fatalf("%s: no %s in ipsecstack stats:\n%s", d.name, name, out)
	return 0
}

// try runs a command in ns and returns its output and error.
func (ns *netns) try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...).CombinedOutput()
	return string(out), err
}

// gwServers are Go services on L2's kernel stack: a TCP peer that reads
// to EOF while it sends its own 16 MiB, and a UDP echo.
type gwServers struct{ tcpPort, udpPort int }

func startGwServers(t *testing.T, ns *netns) gwServers {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	if err := ns.do(func() (err error) {
		if ln, err = net.Listen("tcp", ":0"); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", ":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveTCPBothWays(c)
		}
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			m, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:m], from)
		}
	}()
	return gwServers{ln.Addr().(*net.TCPAddr).Port, pc.LocalAddr().(*net.UDPAddr).Port}
}

// serveTCPBothWays is the server side of tcpBothWays: the client sends an
// 8-byte length n, then n bytes; the server at the same time sends n
// bytes of its own followed by the SHA-256 of what it read and the
// SHA-256 of what it sent.
func serveTCPBothWays(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	size, err := strconv.ParseInt(string(hdr[:]), 16, 64)
	if err != nil {
		return
	}
	sent := sha256.New()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.CopyN(io.MultiWriter(c, sent), rand.Reader, size)
	}()
	got := sha256.New()
	_, err = io.CopyN(got, c, size)
	wg.Wait()
	if err != nil {
		return
	}
	c.Write(got.Sum(nil))
	c.Write(sent.Sum(nil))
}

// tcpBothWays connects from ns to addr and sends size random bytes while
// it receives size bytes, both checked by SHA-256.
func tcpBothWays(t *testing.T, ns *netns, addr string, size int64) {
	t.Helper()
	c, err := ns.dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		if _, err := fmt.Fprintf(c, "%08x", size); err != nil {
			werr <- err
			return
		}
		_, err := io.CopyN(io.MultiWriter(c, sent), rand.Reader, size)
		werr <- err
	}()
	got := sha256.New()
	if _, err := io.CopyN(got, c, size); err != nil {
		t.Fatalf("TCP %s: reading the server's %d bytes: %v", addr, size, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("TCP %s: sending %d bytes: %v", addr, size, err)
	}
	var sums [64]byte
	if _, err := io.ReadFull(c, sums[:]); err != nil {
		t.Fatalf("TCP %s: reading the checksums: %v", addr, err)
	}
	if !bytes.Equal(sums[:32], sent.Sum(nil)) {
		t.Errorf("TCP %s: the server read other bytes than were sent", addr)
	}
	if !bytes.Equal(sums[32:], got.Sum(nil)) {
		t.Errorf("TCP %s: received other bytes than the server sent", addr)
	}
}

// udpEchoKernel sends datagrams of the given sizes from ns to an echo at addr
// and wants each back intact (retrying a lost one).
func udpEchoKernel(t *testing.T, ns *netns, addr string, sizes []int) {
	t.Helper()
	c, err := ns.dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 65536)
	for _, size := range sizes {
		msg := make([]byte, size)
		rand.Read(msg)
		ok := false
		for try := 0; try < 5 && !ok; try++ {
			if _, err := c.Write(msg); err != nil {
				t.Fatalf("UDP %d bytes to %s: %v", size, addr, err)
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				m, err := c.Read(buf)
				if err != nil {
					break
				}
				if bytes.Equal(buf[:m], msg) {
					ok = true
					break
				}
			}
		}
		if !ok {
			t.Errorf("UDP %d bytes to %s: no echo", size, addr)
		}
	}
}

// capture reads every frame on an interface (both directions) with an
// AF_PACKET socket of its own, independent of the daemons', into a leak
// checker.
type capture struct {
	fd      int
	lc      *leakcheck.Checker
	stopped chan struct{}
	done    chan struct{}
	drops   uint32
	once    sync.Once
}

func startCapture(t *testing.T, ns *netns, ifname string, flows []leakcheck.Flow) *capture {
	t.Helper()
	c := &capture{lc: leakcheck.New(leakcheck.Config{Flows: flows}), stopped: make(chan struct{}), done: make(chan struct{})}
	err := ns.do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", ifname, err)
	}
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.stopped:
				return
			default:
			}
			m, _, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				continue // the receive timeout: look at stopped
			}
			c.lc.Frame(buf[:m])
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *capture) close() {
	c.once.Do(func() {
		close(c.stopped)
		<-c.done
		if st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			c.drops = st.Drops
		}
		unix.Close(c.fd)
	})
}

// stop ends the capture, judges what is left and fails t on a leak.
func (c *capture) stop(t *testing.T) leakcheck.Stats {
	t.Helper()
	c.close()
	c.lc.Flush()
	if err := c.lc.Err(false); err != nil {
		t.Errorf("cleartext of a protected subnet pair on the WAN: %v", err)
	}
	return c.lc.Stats()
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
