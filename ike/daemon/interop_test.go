package daemon

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/link/afpacket"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

const charonPath = "/usr/lib/ipsec/charon"

const charonPSK = "daemon-interop-psk-0123456789abcdef"

// charonPeer is strongSwan 5.9.8's charon (kernel-libipsec: UDP-
// encapsulated tunnel mode) in namespace ns at 10.55.0.1, protecting
// 10.56.1.0/24 (10.56.1.1 on its lo) to 10.56.2.0/24, with its default
// proposals; our stack owns the veth end in nsG as 10.55.0.2 with
// 10.56.2.1.
type charonPeer struct {
	swanctl func(args ...string) (string, error)
	ns, nsG string
	ifG     string
	dir     string
}

// inNetns runs fn on a thread in namespace ns; what fn creates (sockets)
// stays in it. The thread is never returned to the scheduler's pool.
func inNetns(t *testing.T, ns string, fn func() error) {
	t.Helper()
	errc := make(chan error)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
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
	if err := <-errc; err != nil {
		t.Fatalf("in %s: %v", ns, err)
	}
}

func startCharon(t *testing.T) *charonPeer {
	t.Helper()
	if _, err := os.Stat(charonPath); err != nil {
		t.Skip("strongSwan charon not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"ip", "swanctl", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found", tool)
		}
	}
	dir := t.TempDir()
	id := os.Getpid() % 100000
	p := &charonPeer{ns: fmt.Sprintf("ikdc%d", id), nsG: fmt.Sprintf("ikdg%d", id), ifG: fmt.Sprintf("vkg%d", id), dir: dir}
	ifC := fmt.Sprintf("vkc%d", id)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", p.ns).Run()
		exec.Command("ip", "netns", "del", p.nsG).Run()
	})
	sh("ip", "netns", "add", p.ns)
	sh("ip", "netns", "add", p.nsG)
	sh("ip", "link", "add", ifC, "netns", p.ns, "type", "veth", "peer", "name", p.ifG, "netns", p.nsG)
	for _, c := range [][]string{
		{"ip", "-n", p.ns, "link", "set", "lo", "up"}, {"ip", "-n", p.nsG, "link", "set", "lo", "up"},
		{"ip", "netns", "exec", p.nsG, "sysctl", "-qw", "net.ipv6.conf." + p.ifG + ".disable_ipv6=1"},
		{"ip", "-n", p.ns, "link", "set", ifC, "up"}, {"ip", "-n", p.nsG, "link", "set", p.ifG, "up"},
		{"ip", "-n", p.ns, "addr", "add", "10.55.0.1/24", "dev", ifC},
		{"ip", "-n", p.ns, "addr", "add", "10.56.1.1/32", "dev", "lo"},
	} {
		sh(c...)
	}
	vici := filepath.Join(dir, "charon.vici")
	os.Mkdir(filepath.Join(dir, "run"), 0o755)
	conf := fmt.Sprintf(`charon {
  port = 500
  port_nat_t = 4500
  load_modular = no
  load = random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 pubkey x509 kernel-libipsec kernel-netlink socket-default vici
  syslog { daemon { default = -1 } }
  filelog { main { path = %s/charon.log
                   default = 1
                   flush_line = yes
                   ike = 2 } }
  plugins { vici { socket = unix://%s } }
}
`, dir, vici)
	swan := fmt.Sprintf(`connections {
  gw {
    version = 2
    local_addrs = 10.55.0.1
    remote_addrs = 10.55.0.2
    proposals = default
    local { auth = psk
            id = charon@ike.test }
    remote { auth = psk
             id = goike@ike.test }
    children { net { local_ts = 10.56.1.0/24
                     remote_ts = 10.56.2.0/24
                     esp_proposals = default } }
  }
}
secrets { ike-gw { id-a = charon@ike.test
                   id-b = goike@ike.test
                   secret = "%s" } }
`, charonPSK)
	os.WriteFile(filepath.Join(dir, "strongswan.conf"), []byte(conf), 0o644)
	os.WriteFile(filepath.Join(dir, "swanctl.conf"), []byte(swan), 0o644)
	charon := exec.Command("ip", "netns", "exec", p.ns, "unshare", "-m", "--propagation", "private", "sh", "-c",
		fmt.Sprintf("mount --bind %s/run /run && exec env STRONGSWAN_CONF=%s/strongswan.conf %s", dir, dir, charonPath))
	if err := charon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		charon.Process.Signal(unix.SIGTERM)
		done := make(chan struct{})
		go func() { charon.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			charon.Process.Kill()
		}
	})
	p.swanctl = func(args ...string) (string, error) {
		out, err := exec.Command("swanctl", append(args, "--uri", "unix://"+vici)...).CombinedOutput()
		var keep []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.Contains(l, "plugin '") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n"), err
	}
	var err error
	for n := 0; n < 50; n++ {
		if _, err = p.swanctl("--stats"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("charon did not come up: %v", err)
	}
	if out, err := p.swanctl("--load-all", "--file", filepath.Join(dir, "swanctl.conf")); err != nil {
		t.Fatalf("swanctl --load-all: %v\n%s", err, out)
	}
	return p
}

func (p *charonPeer) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "charon.log"))
	return string(b)
}

// sinkIn serves the TCP sink protocol (read to EOF, answer the SHA-256)
// on addr inside namespace ns.
func sinkIn(t *testing.T, ns string, addr string) {
	var ln net.Listener
	inNetns(t, ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				h := sha256.New()
				if _, err := io.Copy(h, c); err == nil {
					c.Write(h.Sum(nil))
				}
			}()
		}
	}()
}

// TestStrongSwan: the daemon in a gVisor stack on AF_PACKET against a
// real charon with its default proposals (and kernel-libipsec's forced
// UDP encapsulation): we initiate, ping and a 4 MiB TCP transfer go
// through the negotiated tunnel, charon's --list-sas shows our SPIs;
// charon deletes the IKE SA and our side removes its SAs; then charon
// initiates to our responder and the tunnel carries traffic again; our
// terminate makes charon drop its SAs.
func TestStrongSwan(t *testing.T) {
	p := startCharon(t)
	sinkIn(t, p.ns, "10.56.1.1:9000")
	var link interface{ Close() }
	var st *stack.Stack
	inNetns(t, p.nsG, func() error {
		l, err := afpacket.Open(p.ifG, afpacket.Options{RXChecksumOffload: true})
		if err != nil {
			return err
		}
		st, err = stack.New(stack.Config{Link: l,
			Addrs:  []netip.Prefix{netip.MustParsePrefix("10.55.0.2/24"), netip.MustParsePrefix("10.56.2.1/32")},
			Routes: []stack.Route{{Dst: netip.MustParsePrefix("10.56.1.0/24"), Gateway: netip.MustParseAddr("10.55.0.1")}}})
		link = l
		return err
	})
	_ = link
	defer st.Close()
	// Traffic to the protected net leaves from our inner address.
	rt := st.GetRouteTable()
	for i := range rt {
		if rt[i].Destination.ID() == tcpip.AddrFrom4([4]byte{10, 56, 1, 0}) {
			rt[i].SourceHint = tcpip.AddrFrom4([4]byte{10, 56, 2, 1})
		}
	}
	st.SetRouteTable(rt)

	ts := func(p string) message.TrafficSelector {
		pf := netip.MustParsePrefix(p)
		return message.TrafficSelector{TSType: message.TS_IPV4_ADDR_RANGE, Start: pf.Addr(), End: lastAddr(pf), EndPort: 65535}
	}
	cfg := &config.Config{
		Connections: []*config.Connection{{Name: "gw",
			LocalAddrs: []netip.Prefix{netip.MustParsePrefix("10.55.0.2/32")}, RemoteAddrs: []netip.Prefix{netip.MustParsePrefix("10.55.0.1/32")},
			Proposals: ikeProposal(),
			Local:     []*config.Auth{{Method: config.AuthPSK, ID: exchange.Email("goike@ike.test")}},
			Remote:    []*config.Auth{{Method: config.AuthPSK, ID: exchange.Email("charon@ike.test")}},
			DPDDelay:  30 * time.Second,
			Children: []*config.Child{{Name: "net", Mode: xfrm.ModeTunnel, Proposals: espProposal(),
				LocalTS: []message.TrafficSelector{ts("10.56.2.0/24")}, RemoteTS: []message.TrafficSelector{ts("10.56.1.0/24")}}}}},
		Secrets: []*config.Secret{{Type: "ike", Data: []byte(charonPSK)}},
	}
	var lines []string
	d, err := New(Options{Stack: st, Addrs: []netip.Addr{netip.MustParseAddr("10.55.0.2")}, Config: cfg, Log: testLogger(t, "ours"),
		Retransmit: exchange.Retransmit{Timeout: time.Second, Tries: 3}, KeyLog: func(l string) { lines = append(lines, l) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	traffic := func(what string) {
		t.Helper()
		inner := netip.MustParseAddr("10.56.1.1")
		var err error
		for i := 0; i < 5; i++ {
			pctx, c := context.WithTimeout(ctx, time.Second)
			_, err = st.Ping(pctx, inner, uint16(i), 56)
			c()
			if err == nil {
				break
			}
		}
		if err != nil {
			var stats []string
			for _, v := range st.Engine.Stats.Snapshot() {
				if v.Value != 0 {
					stats = append(stats, fmt.Sprintf("%s=%d", v.Name, v.Value))
				}
			}
			es := &st.Endpoint.Stats
			stats = append(stats, fmt.Sprintf("link out_protected=%d in_ipsec=%d in_dropped=%d out_dropped=%d", es.OutProtected.Load(), es.InIPsec.Load(), es.InDropped.Load(), es.OutDropped.Load()))
			routes, _ := exec.Command("ip", "-n", p.ns, "route", "show", "table", "all").CombinedOutput()
			links, _ := exec.Command("ip", "-n", p.ns, "-s", "link").CombinedOutput()
			sas, _ := p.swanctl("--list-sas")
			t.Fatalf("%s: ping through the tunnel: %v\nours: %v\ncharon's routes:\n%s\nlinks:\n%s\nSAs:\n%s", what, err, stats, routes, links, sas)
		}
		rate, err := testbed.TCPTransferFrom(ctx, st, netip.MustParseAddr("10.56.2.1"), inner, 9000, 4<<20)
		if err != nil {
			t.Fatalf("%s: TCP through the tunnel: %v", what, err)
		}
		t.Logf("%s: 4 MiB TCP at %.1f MB/s", what, rate/1e6)
	}

	// 1. We initiate.
	if err := d.Initiate(ctx, "gw"); err != nil {
		t.Fatalf("initiate: %v\n%s", err, p.log())
	}
	l := d.List()
	if len(l.SAs) != 1 || len(l.SAs[0].Children) != 1 || !l.SAs[0].NATT {
		t.Fatalf("our listing:\n%s", l.Format())
	}
	c := l.SAs[0].Children[0]
	sas, _ := p.swanctl("--list-sas")
	if !strings.Contains(sas, "ESTABLISHED") || !strings.Contains(sas, "in  "+c.SPIOut) || !strings.Contains(sas, "out "+c.SPIIn) {
		t.Fatalf("charon's SAs do not match ours (in %s out %s):\n%s", c.SPIIn, c.SPIOut, sas)
	}
	traffic("we initiated")
	if len(lines) != 1 {
		t.Errorf("%d key log lines, want 1", len(lines))
	}

	// 2. charon deletes the IKE SA; our SAs go.
	if out, err := p.swanctl("--terminate", "--ike", "gw", "--timeout", "5"); err != nil {
		t.Fatalf("swanctl --terminate: %v\n%s", err, out)
	}
	waitFor(t, "our SAs removed after charon's delete", 5*time.Second, func() bool {
		return len(d.List().SAs) == 0 && espSAs(st.Engine) == 0
	})

	// 3. charon initiates; our responder answers.
	if out, err := p.swanctl("--initiate", "--child", "net", "--timeout", "10"); err != nil {
		t.Fatalf("swanctl --initiate: %v\n%s\n%s", err, out, p.log())
	}
	waitFor(t, "our responder's CHILD SA", 5*time.Second, func() bool { return espSAs(st.Engine) == 2 })
	if l := d.List(); len(l.SAs) != 1 || l.SAs[0].Role != "responder" {
		t.Fatalf("our listing:\n%s", l.Format())
	}
	traffic("charon initiated")
	// charon rekeys the CHILD SA and the IKE SA; our side follows
	// (make-before-break) and the tunnel carries traffic after.
	for _, args := range [][]string{{"--rekey", "--child", "net"}, {"--rekey", "--ike", "gw"}} {
		if out, err := p.swanctl(args...); err != nil {
			t.Fatalf("swanctl %v: %v\n%s", args, err, out)
		}
	}
	waitFor(t, "charon's rekeys applied", 10*time.Second, func() bool {
		return d.Stats.ChildRekeys.Load() >= 1 && d.Stats.IKERekeys.Load() >= 1
	})
	traffic("after charon's rekeys")

	// 4. We terminate; charon drops its SAs.
	if err := d.Terminate(ctx, "gw"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "charon's SAs gone", 5*time.Second, func() bool {
		sas, _ := p.swanctl("--list-sas")
		return !strings.Contains(sas, "ESTABLISHED")
	})
	if espSAs(st.Engine) != 0 {
		t.Error("our SAs remain after terminate")
	}
}
