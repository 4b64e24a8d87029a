package exchange

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

const charonPath = "/usr/lib/ipsec/charon"

// TestStrongSwanResponder runs our initiator against a real strongSwan
// charon (5.9.8, kernel-libipsec) in a network namespace, with charon's
// default proposals: IKE_SA_INIT on port 500, IKE_AUTH with PSK on port
// 4500 (charon's libipsec always asks for UDP encapsulation through its
// NAT-D), and checks that charon reports the IKE SA and the CHILD SA up
// with the SPIs our Result holds.
func TestStrongSwanResponder(t *testing.T) {
	for _, s := range []struct {
		name string
		ike  IKESuite
		esp  ESPSuite
	}{
		{"charon's first proposals: AES-CBC-128/SHA2-256/X25519, ESP AES-GCM-16-128",
			IKESuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA2_256_128, message.PRF_HMAC_SHA2_256, message.KE_CURVE25519},
			ESPSuite{message.ENCR_AES_GCM_16, 128, message.AUTH_NONE, false}},
		{"AES-GCM-16-128/SHA2-256/MODP-2048, ESP AES-CBC-128/SHA2-256-128",
			IKESuite{message.ENCR_AES_GCM_16, 128, message.AUTH_NONE, message.PRF_HMAC_SHA2_256, message.KE_MODP2048},
			ESPSuite{message.ENCR_AES_CBC, 128, message.AUTH_HMAC_SHA2_256_128, false}},
	} {
		t.Run(s.name, func(t *testing.T) { testStrongSwanResponder(t, s.ike, s.esp) })
	}
}

// TestStrongSwanMultiProposal offers charon two proposals, the first
// AES-GCM with MODP-2048 (our KE payload's group), the second AES-CBC
// with ECP-256 and X25519. charon picks in its own order (its first
// default proposal is the AES-CBC one, X25519 its first group), so it
// answers INVALID_KE_PAYLOAD asking for X25519, and we retry with it.
func TestStrongSwanMultiProposal(t *testing.T) {
	pc := startCharon(t)
	local := netip.MustParseAddrPort("10.55.0.2:500")
	remote := netip.MustParseAddrPort("10.55.0.1:500")
	c500, c4500 := udpInNetns(t, pc.ns, local), udpInNetns(t, pc.ns, netip.AddrPortFrom(local.Addr(), NATTPort))
	ikeProps := []message.Proposal{
		IKESuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, message.PRF_HMAC_SHA2_384, message.KE_MODP2048}.Proposal(),
		{Protocol: message.ProtoIKE, Transforms: []message.Transform{
			encrTransform(message.ENCR_AES_CBC, 256),
			{Type: message.TransformINTEG, ID: message.AUTH_HMAC_SHA2_512_256},
			{Type: message.TransformPRF, ID: message.PRF_HMAC_SHA2_512},
			{Type: message.TransformKE, ID: message.KE_ECP256}, {Type: message.TransformKE, ID: message.KE_CURVE25519},
		}},
	}
	cfg := Config{
		Local: local, Remote: remote,
		LocalID: Email("goike@ike.test"), RemoteID: Email("charon@ike.test"), PSK: []byte(charonPSK),
		IKEProposals: ikeProps,
		ESPProposals: []message.Proposal{ESPSuite{message.ENCR_CHACHA20_POLY1305, 0, message.AUTH_NONE, false}.Proposal(),
			ESPSuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, false}.Proposal()},
		LocalTS:  []message.TrafficSelector{prefixTS("10.56.2.0/24")},
		RemoteTS: []message.TrafficSelector{prefixTS("10.56.1.0/24")},
		Mode:     xfrm.ModeTunnel,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := Initiate(ctx, cfg, &udpTransport{c500: c500, c4500: c4500, peer: remote.Addr()}, Retransmit{Timeout: time.Second})
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(pc.dir, "charon.log"))
		t.Fatalf("%v\ncharon log:\n%s", err, log)
	}
	log, _ := os.ReadFile(filepath.Join(pc.dir, "charon.log"))
	wantESP := ESPSuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, false} // charon has no ChaCha20 in its default ESP
	wantIKE := IKESuite{message.ENCR_AES_CBC, 256, message.AUTH_HMAC_SHA2_512_256, message.PRF_HMAC_SHA2_512, message.KE_CURVE25519}
	if r.ESP != wantESP || r.IKE != wantIKE {
		t.Errorf("negotiated %+v %+v, want %+v %+v", r.IKE, r.ESP, wantIKE, wantESP)
	}
	if !strings.Contains(string(log), "N(INVAL_KE)") {
		t.Errorf("charon did not ask for another group:\n%s", log)
	}
}

func testStrongSwanResponder(t *testing.T, ike IKESuite, esp ESPSuite) {
	pc := startCharon(t)
	swanctl, nsG, dir := pc.swanctl, pc.ns, pc.dir
	psk := charonPSK
	local := netip.MustParseAddrPort("10.55.0.2:500")
	remote := netip.MustParseAddrPort("10.55.0.1:500")
	c500, c4500 := udpInNetns(t, nsG, local), udpInNetns(t, nsG, netip.AddrPortFrom(local.Addr(), NATTPort))
	cfg := Config{
		Local: local, Remote: remote,
		LocalID: Email("goike@ike.test"), RemoteID: Email("charon@ike.test"), PSK: []byte(psk),
		IKE:      ike,
		ESP:      esp,
		LocalTS:  []message.TrafficSelector{prefixTS("10.56.2.0/24")},
		RemoteTS: []message.TrafficSelector{prefixTS("10.56.1.0/24")},
		Mode:     xfrm.ModeTunnel,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := Initiate(ctx, cfg, &udpTransport{c500: c500, c4500: c4500, peer: remote.Addr()}, Retransmit{Timeout: time.Second})
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "charon.log"))
		t.Fatalf("%v\ncharon log:\n%s", err, log)
	}
	sas, _ := swanctl("--list-sas")
	wantIKE := fmt.Sprintf("%016x_i %016x_r*", r.SPIi, r.SPIr)
	if !strings.Contains(sas, "ESTABLISHED") || !strings.Contains(sas, wantIKE) ||
		!strings.Contains(sas, fmt.Sprintf("in  %08x", r.Out.SPI)) || !strings.Contains(sas, fmt.Sprintf("out %08x", r.In.SPI)) {
		t.Errorf("charon's view does not match ours (IKE %s, our in %08x out %08x):\n%s", wantIKE, r.In.SPI, r.Out.SPI, sas)
	}
	if !r.NATT || r.Out.Encap.Type != xfrm.EncapESPInUDP {
		t.Errorf("expected NAT-T with charon's kernel-libipsec: NATT %v encap %+v", r.NATT, r.Out.Encap)
	}
	t.Logf("IKE SA %016x/%016x, CHILD SA in %08x out %08x, NAT-T %v; charon:\n%s", r.SPIi, r.SPIr, r.In.SPI, r.Out.SPI, r.NATT, sas)
}

// udpInNetns opens a UDP socket bound to addr inside network namespace
// ns. The socket keeps the namespace it was created in; the thread that
// entered the namespace is locked and dies with its goroutine, so no
// other goroutine ever runs in it.
func udpInNetns(t *testing.T, ns string, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	type res struct {
		c   *net.UDPConn
		err error
	}
	ch := make(chan res)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{err: err}
			return
		}
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		ch <- res{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("UDP socket in %s: %v", ns, r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c
}

// udpTransport is a Transport over two UDP sockets, ports 500 and 4500;
// on 4500 it adds and strips the non-ESP marker (RFC 3948 §2.2) and skips
// NAT keepalives and ESP.
type udpTransport struct {
	c500, c4500 *net.UDPConn
	peer        netip.Addr
	natt        bool // the port of the last send, where the answer comes
}

func (u *udpTransport) Send(b []byte, natt bool) error {
	u.natt = natt
	c, port := u.c500, uint16(500)
	if natt {
		c, port, b = u.c4500, NATTPort, append([]byte{0, 0, 0, 0}, b...)
	}
	_, err := c.WriteToUDPAddrPort(b, netip.AddrPortFrom(u.peer, port))
	return err
}

func (u *udpTransport) Recv(ctx context.Context) ([]byte, bool, error) {
	c := u.c500
	if u.natt {
		c = u.c4500
	}
	if d, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(d)
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			return nil, false, err
		}
		b := buf[:n]
		if from.Addr().Unmap() != u.peer {
			continue
		}
		if u.natt {
			if n <= 4 || !bytes.Equal(b[:4], []byte{0, 0, 0, 0}) {
				continue // a NAT keepalive or ESP
			}
			b = b[4:]
		}
		return append([]byte(nil), b...), u.natt, nil
	}
}

// charonPSK is the key charon and our side share in the interop tests.
const charonPSK = "interop-psk-0123456789abcdef"

type peerCharon struct {
	proc    *exec.Cmd
	swanctl func(args ...string) (string, error)
	ns      string // the namespace for our side, 10.55.0.2
	dir     string
}

// startCharon starts charon in a namespace at 10.55.0.1 with strongSwan's
// default proposals and a PSK connection to 10.55.0.2, and returns the
// other namespace for our side; it skips the test when charon or root is
// missing.
func startCharon(t *testing.T) peerCharon {
	t.Helper()
	return startCharonWith(t, "", nil)
}

// startCharonWith is startCharon with more swanctl.conf connections
// (sections inside connections { }) and files in swanctl's directory
// (private/NAME for keys: swanctl.conf's secrets only hold their
// passphrases).
func startCharonWith(t *testing.T, conns string, files map[string][]byte) peerCharon {
	t.Helper()
	if _, err := os.Stat(charonPath); err != nil {
		t.Skip("strongSwan charon not installed (apt-get install strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins)")
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
	nsC, nsG := fmt.Sprintf("ikec%d", id), fmt.Sprintf("ikeg%d", id)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", nsC).Run()
		exec.Command("ip", "netns", "del", nsG).Run()
	})
	sh("ip", "netns", "add", nsC)
	sh("ip", "netns", "add", nsG)
	sh("ip", "link", "add", "vc"+fmt.Sprint(id), "netns", nsC, "type", "veth", "peer", "name", "vg"+fmt.Sprint(id), "netns", nsG)
	for _, c := range [][]string{
		{"ip", "-n", nsC, "link", "set", "lo", "up"}, {"ip", "-n", nsG, "link", "set", "lo", "up"},
		{"ip", "-n", nsC, "link", "set", "vc" + fmt.Sprint(id), "up"}, {"ip", "-n", nsG, "link", "set", "vg" + fmt.Sprint(id), "up"},
		{"ip", "-n", nsC, "addr", "add", "10.55.0.1/24", "dev", "vc" + fmt.Sprint(id)},
		{"ip", "-n", nsG, "addr", "add", "10.55.0.2/24", "dev", "vg" + fmt.Sprint(id)},
		{"ip", "-n", nsC, "addr", "add", "10.56.1.1/32", "dev", "lo"},
		{"ip", "-n", nsC, "addr", "add", "10.56.3.1/32", "dev", "lo"},
	} {
		sh(c...)
	}

	psk := charonPSK
	vici := filepath.Join(dir, "charon.vici")
	os.Mkdir(filepath.Join(dir, "run"), 0o755)
	conf := fmt.Sprintf(`charon {
  port = 500
  port_nat_t = 4500
  load_modular = no
  load = random nonce openssl aes sha1 sha2 hmac gcm kdf mgf1 pem pkcs1 pkcs8 pubkey x509 constraints kernel-libipsec kernel-netlink socket-default vici
  syslog { daemon { default = -1 } }
  filelog { main { path = %s/charon.log
                   default = 1
                   flush_line = yes
                   ike = 2
                   chd = 4 } }
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
    dpd_delay = 2s
    children { net { local_ts = 10.56.1.0/24
                     remote_ts = 10.56.2.0/24
                     esp_proposals = default }
               net2 { local_ts = 10.56.3.0/24
                      remote_ts = 10.56.4.0/24
                      esp_proposals = aes256-sha256-ecp256 } }
  }
%s
}
secrets { ike-gw { id-a = charon@ike.test
                   id-b = goike@ike.test
                   secret = "%s" }
}
`, conns, psk)
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "strongswan.conf"), []byte(conf), 0o644)
	os.WriteFile(filepath.Join(dir, "swanctl.conf"), []byte(swan), 0o644)
	charon := exec.Command("ip", "netns", "exec", nsC, "unshare", "-m", "--propagation", "private", "sh", "-c",
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
		case <-time.After(time.Second): // charon may wait for DELETE answers nobody sends
			charon.Process.Kill()
		}
	})
	swanctl := func(args ...string) (string, error) {
		out, err := exec.Command("swanctl", append(args, "--uri", "unix://"+vici)...).CombinedOutput()
		var keep []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.Contains(l, "plugin '") { // swanctl's plugin-loading noise
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n"), err
	}
	var err error
	for n := 0; n < 50; n++ {
		if _, err = swanctl("--stats"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("charon did not come up: %v", err)
	}
	if out, err := swanctl("--load-all", "--file", filepath.Join(dir, "swanctl.conf")); err != nil {
		t.Fatalf("swanctl --load-all: %v\n%s", err, out)
	}

	return peerCharon{proc: charon, swanctl: swanctl, ns: nsG, dir: dir}
}

// TestStrongSwanInitiator runs our responder against charon as initiator
// (swanctl --initiate), with charon's default proposals: several IKE and
// ESP proposals to choose from, IKE_AUTH moved to port 4500.
func TestStrongSwanInitiator(t *testing.T) {
	pc := startCharon(t)
	local := netip.MustParseAddrPort("10.55.0.2:500")
	remote := netip.MustParseAddrPort("10.55.0.1:500")
	c500, c4500 := udpInNetns(t, pc.ns, local), udpInNetns(t, pc.ns, netip.AddrPortFrom(local.Addr(), NATTPort))
	r, err := NewResponder(Config{
		Local: local, Remote: remote,
		LocalID: Email("goike@ike.test"), RemoteID: Email("charon@ike.test"), PSK: []byte(charonPSK),
		IKE:      IKESuite{message.ENCR_AES_GCM_16, 256, message.AUTH_NONE, message.PRF_HMAC_SHA2_384, message.KE_ECP384},
		ESP:      ESPSuite{message.ENCR_AES_CBC, 256, message.AUTH_HMAC_SHA2_256_128, false},
		LocalTS:  []message.TrafficSelector{prefixTS("10.56.2.0/24")},
		RemoteTS: []message.TrafficSelector{prefixTS("10.56.1.0/24")},
		Mode:     xfrm.ModeTunnel,
	})
	if err != nil {
		t.Fatal(err)
	}
	type dgram struct {
		b    []byte
		from netip.AddrPort
		natt bool
	}
	in := make(chan dgram, 8)
	for _, c := range []*net.UDPConn{c500, c4500} {
		go func(c *net.UDPConn, natt bool) {
			buf := make([]byte, 65536)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return // closed by Cleanup
				}
				in <- dgram{append([]byte(nil), buf[:n]...), from, natt}
			}
		}(c, c == c4500)
	}
	initiated := make(chan string, 1)
	go func() {
		out, err := pc.swanctl("--initiate", "--child", "net", "--timeout", "10")
		if err != nil {
			out += "\n" + err.Error()
		}
		initiated <- out
	}()
	deadline := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case d := <-in:
			b := d.b
			if d.natt {
				if len(b) <= 4 || !bytes.Equal(b[:4], []byte{0, 0, 0, 0}) {
					continue // ESP or a keepalive, not IKE
				}
				b = b[4:]
			}
			resp, fin, err := r.Handle(b)
			if errors.Is(err, ErrUnexpected) {
				// Dropped, or answered with a notification that lets the
				// exchange go on: INVALID_KE_PAYLOAD, since charon's first
				// KE is Curve25519 and we ask for ECP-384.
				t.Logf("responder: %v", err)
			} else if err != nil {
				log, _ := os.ReadFile(filepath.Join(pc.dir, "charon.log"))
				t.Fatalf("responder: %v\ncharon log:\n%s", err, log)
			}
			for _, out := range resp {
				c := c500
				if d.natt {
					c, out = c4500, append([]byte{0, 0, 0, 0}, out...)
				}
				if _, err := c.WriteToUDPAddrPort(out, d.from); err != nil {
					t.Fatal(err)
				}
			}
			done = fin
		case <-deadline:
			t.Fatal("charon did not complete the exchange")
		}
	}
	out := <-initiated
	res := r.Result()
	if !strings.Contains(out, "established") || !strings.Contains(out, fmt.Sprintf("%08x_i %08x_o", res.Out.SPI, res.In.SPI)) {
		t.Errorf("charon's initiate output does not show our CHILD SA (in %08x out %08x):\n%s", res.In.SPI, res.Out.SPI, out)
	}
	t.Logf("charon:\n%s", out)
}
