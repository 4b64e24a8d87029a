package hoststack

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const charonPath = "/usr/lib/ipsec/charon"

// TestIKEStrongSwan: `ipsecstack run --ike swanctl.conf` keys itself
// with a real strongSwan 5.9.8 charon (kernel-libipsec, default
// proposals, PSK) in another namespace: `ipsecstack ike initiate`
// brings the tunnel up (UDP-encapsulated, as libipsec wants), ping and a
// TCP transfer through a --forward go through it, `ike list` shows it,
// tshark decrypts the captured IKE with the --keylog's
// ikev2_decryption_table line, and `ike terminate` makes charon drop its
// SAs. Skipped while the swanctl.conf parser (ike/swanctl) is not in the
// build, and without charon.
func TestIKEStrongSwan(t *testing.T) {
	require(t, "swanctl", "unshare", "tshark")
	if _, err := os.Stat(charonPath); err != nil {
		t.Skip("strongSwan charon not installed")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "swanctl.conf")
	os.WriteFile(conf, []byte(`connections {
  gw {
    local_addrs = 10.55.0.2
    remote_addrs = 10.55.0.1
    proposals = aes128-sha256-x25519
    dpd_delay = 10s
    local {
      auth = psk
      id = goike@ike.test
    }
    remote {
      auth = psk
      id = charon@ike.test
    }
    children {
      net {
        local_ts = 10.56.2.0/24
        remote_ts = 10.56.1.0/24
        esp_proposals = aes128gcm16
      }
    }
  }
}
secrets {
  ike-gw {
    id-a = goike@ike.test
    id-b = charon@ike.test
    secret = "hoststack-ike-psk-0123456789"
  }
}
`), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, serr, code := cli(ctx, "ike", "check", conf); code != 0 {
		t.Skipf("no swanctl.conf parser in this build (ipsecstack ike check: %d %s)", code, strings.TrimSpace(serr))
	}

	na, nc := newNS(t), newNS(t)
	ifA, ifC := uniq("vika"), uniq("vikc")
	sh(t, "ip", "link", "add", ifA, "netns", na.name, "type", "veth", "peer", "name", ifC, "netns", nc.name)
	na.ownedByStack(t, ifA)
	nc.sh(t, "ip", "link", "set", ifC, "up")
	nc.sh(t, "ip", "addr", "add", "10.55.0.1/24", "dev", ifC)
	nc.sh(t, "ip", "addr", "add", "10.56.1.1/32", "dev", "lo")
	swanctl := startCharonIn(t, nc, dir)

	// A sink behind charon: reads to EOF, answers the SHA-256.
	var ln net.Listener
	if err := nc.do(func() (err error) { ln, err = net.Listen("tcp", "10.56.1.1:9000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
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

	keylog, capFile := filepath.Join(dir, "keys"), filepath.Join(dir, "wire.pcap")
	d := startDaemon(t, "ours", na, dir, "--link", "afpacket:"+ifA, "--addr", "10.55.0.2/24", "--addr", "10.56.2.1/32",
		"--route", "10.56.1.0/24=10.55.0.1,src=10.56.2.1", "--ike", conf, "--keylog", keylog, "--pcap", capFile,
		"--forward", "tcp:127.0.0.1:9100=10.56.1.1:9000")
	if out, serr, code := cli(ctx, "ike", "--control", d.control, "initiate", "gw"); code != 0 {
		b, _ := os.ReadFile(filepath.Join(dir, "charon.log"))
		t.Fatalf("ike initiate: %d %s %s\ncharon:\n%s", code, out, serr, b)
	}
	list, serr, code := cli(ctx, "ike", "--control", d.control, "list")
	if code != 0 || !strings.Contains(list, "ESTABLISHED") || !strings.Contains(list, "udp-encapsulated") {
		t.Fatalf("ike list: %d %s\n%s", code, serr, list)
	}
	t.Logf("ike list:\n%s", list)
	if out, serr, code := cli(ctx, "ping", "--control", d.control, "-c", "3", "10.56.1.1"); code != 0 {
		t.Fatalf("ping through the tunnel: %d %s %s", code, out, serr)
	}
	c, err := na.dial("tcp", "127.0.0.1:9100")
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 2<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	sum, err := io.ReadAll(c)
	c.Close()
	if want := sha256.Sum256(data); err != nil || string(sum) != string(want[:]) {
		t.Fatalf("TCP through the tunnel: %v (digest %x)", err, sum)
	}
	sas, _ := swanctl("--list-sas")
	if !strings.Contains(sas, "ESTABLISHED") || !strings.Contains(sas, "TUNNEL-in-UDP") {
		t.Fatalf("charon's SAs:\n%s", sas)
	}
	if _, serr, code := cli(ctx, "ike", "--control", d.control, "terminate", "gw"); code != 0 {
		t.Fatalf("ike terminate: %d %s", code, serr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		sas, _ := swanctl("--list-sas")
		if !strings.Contains(sas, "ESTABLISHED") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("charon keeps its SAs after our terminate:\n%s", sas)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.stop(t, unix.SIGTERM)

	// tshark decrypts our IKE with the keylog's IKE line.
	b, err := os.ReadFile(keylog)
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "# ikev2_decryption_table: "); ok {
			line = v
		}
	}
	if line == "" {
		t.Fatalf("no ikev2_decryption_table line in the keylog:\n%d bytes", len(b))
	}
	out, err := exec.CommandContext(ctx, "tshark", "-r", capFile, "-o", "uat:ikev2_decryption_table:"+line, "-V").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	for _, want := range []string{"Identification - Initiator", "goike@ike.test", "charon@ike.test", "Payload: Delete"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("tshark did not decrypt our IKE: %q missing", want)
		}
	}
}

// startCharonIn runs charon (kernel-libipsec) in ns with its own mount
// namespace (charon's pid file path is fixed), a PSK connection gw to
// 10.55.0.2 with the default proposals, and returns a swanctl runner.
func startCharonIn(t *testing.T, ns *netns, dir string) func(args ...string) (string, error) {
	t.Helper()
	vici := filepath.Join(dir, "charon.vici")
	os.Mkdir(filepath.Join(dir, "run"), 0o755)
	os.WriteFile(filepath.Join(dir, "strongswan.conf"), []byte(fmt.Sprintf(`charon {
  load_modular = no
  load = random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 pubkey x509 kernel-libipsec kernel-netlink socket-default vici
  syslog { daemon { default = -1 } }
  filelog { main { path = %s/charon.log
                   default = 1
                   flush_line = yes } }
  plugins { vici { socket = unix://%s } }
}
`, dir, vici)), 0o644)
	os.WriteFile(filepath.Join(dir, "charon-swanctl.conf"), []byte(`connections {
  gw {
    local_addrs = 10.55.0.1
    remote_addrs = 10.55.0.2
    local { auth = psk
            id = charon@ike.test }
    remote { auth = psk
             id = goike@ike.test }
    children { net { local_ts = 10.56.1.0/24
                     remote_ts = 10.56.2.0/24 } }
  }
}
secrets { ike-gw { id-a = charon@ike.test
                   id-b = goike@ike.test
                   secret = "hoststack-ike-psk-0123456789" } }
`), 0o644)
	charon := exec.Command("ip", "netns", "exec", ns.name, "unshare", "-m", "--propagation", "private", "sh", "-c",
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
	swanctl := func(args ...string) (string, error) {
		out, err := exec.Command("swanctl", append(args, "--uri", "unix://"+vici)...).CombinedOutput()
		return string(out), err
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
	if out, err := swanctl("--load-all", "--file", filepath.Join(dir, "charon-swanctl.conf")); err != nil {
		t.Fatalf("swanctl --load-all: %v\n%s", err, out)
	}
	return swanctl
}
