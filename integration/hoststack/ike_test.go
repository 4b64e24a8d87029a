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

	"github.com/ipsecstack/ipsecstack/internal/charontest"
)

// TestIKEStrongSwan: `ipsecstack run --ike swanctl.conf` keys itself
// with a real strongSwan 5.9.8 charon (kernel-libipsec, default
// proposals, PSK) in another namespace: `ipsecstack ike initiate`
// brings the tunnel up (UDP-encapsulated, as libipsec wants), ping and a
// TCP transfer through a --forward go through it, `ike list` shows it,
// tshark decrypts the captured IKE with the --keylog's
// ikev2_decryption_table line, and `ike terminate` makes charon drop its
// SAs. Skipped while the swanctl.conf parser (ike/swanctl) is not in the
// build, and without charon (a failure with CI=true).
func TestIKEStrongSwan(t *testing.T) {
	require(t, "tshark")
	charontest.Require(t)
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
	// charon: a PSK connection gw to 10.55.0.2 with the default proposals.
	charon := charontest.Start(t, charontest.Options{Netns: nc.name, SwanctlConf: `connections {
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
`})
	charontest.Sink(t, nc.name, "10.56.1.1:9000")

	keylog, capFile := filepath.Join(dir, "keys"), filepath.Join(dir, "wire.pcap")
	d := startDaemon(t, "ours", na, dir, "--link", "afpacket:"+ifA, "--addr", "10.55.0.2/24", "--addr", "10.56.2.1/32",
		"--route", "10.56.1.0/24=10.55.0.1,src=10.56.2.1", "--ike", conf, "--keylog", keylog, "--pcap", capFile,
		"--forward", "tcp:127.0.0.1:9100=10.56.1.1:9000")
	charon.Ours = func() string { return ikeList(d) }
	if out, serr, code := cli(ctx, "ike", "--control", d.control, "initiate", "gw"); code != 0 {
		t.Fatalf("ike initiate: %d %s %s\n%s", code, out, serr, charon.Report())
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
	sas, _ := charon.ListSAs()
	if !strings.Contains(sas, "ESTABLISHED") || !strings.Contains(sas, "TUNNEL-in-UDP") {
		t.Fatalf("charon's SAs:\n%s", sas)
	}
	if _, serr, code := cli(ctx, "ike", "--control", d.control, "terminate", "gw"); code != 0 {
		t.Fatalf("ike terminate: %d %s", code, serr)
	}
	charon.WaitSAs(t, "charon to drop its SAs after our terminate", 5*time.Second, func(sas string) bool {
		return !strings.Contains(sas, "ESTABLISHED")
	})
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

// ikeList is our daemon's `ike list` for a report; it never fails the
// test.
func ikeList(d *daemon) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, serr, code := cli(ctx, "ike", "--control", d.control, "list")
	if code != 0 {
		return fmt.Sprintf("(ike list: exit %d: %s)", code, serr)
	}
	if strings.TrimSpace(out) == "" {
		return "(ike list: no SAs)"
	}
	return out
}
