package hoststack

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runOnce runs `ipsecstack run args…` in ns (nil: the test's own
// namespace) with an optional credential, and returns stderr and the exit
// code; it must exit on its own within 10 s.
func runOnce(t *testing.T, ns *netns, nobody bool, args ...string) (string, int) {
	t.Helper()
	argv := append([]string{bin, "run"}, args...)
	if nobody {
		// Enter the namespace as root, then drop to nobody.
		argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"}, argv...)
	}
	if ns != nil {
		argv = append([]string{"ip", "netns", "exec", ns.name}, argv...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var se bytes.Buffer
	cmd.Stderr = &se
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("ipsecstack run %v: still running after 10 s", args)
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("ipsecstack run %v: %v", args, err)
	}
	return se.String(), code
}

// TestRunFailures: every failure case of the command-line contract gives
// one line on stderr, the reason, and exit status 2 (usage) or 1
// (runtime), and leaves nothing behind.
func TestRunFailures(t *testing.T) {
	require(t)
	dir := t.TempDir()
	ns := newNS(t)
	ns.sh(t, "ip", "link", "add", "hveth0", "type", "veth", "peer", "name", "hveth1")
	ctl := filepath.Join(dir, "ctl.sock")
	good := []string{"--control", ctl, "--link", "afpacket:hveth0", "--addr", "192.0.2.1/24"}
	with := func(extra ...string) []string { return append(append([]string{}, good...), extra...) }

	badSyntax := filepath.Join(dir, "syntax.conf")
	os.WriteFile(badSyntax, []byte("flush;\nspdflush;\nadd 192.0.2.1 192.0.2.2 esp 0x1001 -E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;\n  bogus statement;\n"), 0o600)
	badKey := filepath.Join(dir, "key.conf")
	os.WriteFile(badKey, []byte("flush;\n\nadd 192.0.2.1 192.0.2.2 esp 0x1001 -E aes-gcm-16 0x0011;\n"), 0o600)

	// Files the daemon must not write: a symlink to a file of ours, a
	// file of another user, the live stream socket of another program.
	target := filepath.Join(dir, "precious")
	os.WriteFile(target, []byte("precious"), 0o600)
	symlink := filepath.Join(dir, "keys-link")
	os.Symlink(target, symlink)
	foreign := filepath.Join(dir, "foreign.pcap")
	os.WriteFile(foreign, []byte("theirs"), 0o644)
	os.Chown(foreign, 65534, 65534)
	otherSock := filepath.Join(dir, "other.sock")
	otherLn, err := net.Listen("unix", otherSock)
	if err != nil {
		t.Fatal(err)
	}
	defer otherLn.Close()

	cases := []struct {
		name string
		args []string
		code int
		want string // regexp on the one stderr line
	}{
		{"keylog symlink", with("--keylog", symlink), 1, `--keylog: .*keys-link is a symbolic link; refusing to write through it`},
		{"pcap foreign file", with("--pcap", foreign), 1, `--pcap: .*foreign.pcap exists and belongs to uid 65534; refusing to reuse it`},
		{"control path of another program", []string{"--control", otherSock, "--link", "afpacket:hveth0", "--addr", "192.0.2.1/24"}, 1, `control socket .*other.sock: in use by another program`},
		{"no flags", nil, 2, `--link is required`},
		{"unknown flag", with("--bogus"), 2, `flag provided but not defined: -bogus`},
		{"extra argument", with("extra"), 2, `unexpected argument "extra"`},
		{"link without kind", []string{"--link", "eth0", "--addr", "192.0.2.1/24"}, 2, `--link "eth0": want afpacket:IFACE or tap:NAME`},
		{"link bad kind", []string{"--link", "tun:x", "--addr", "192.0.2.1/24"}, 2, `want afpacket:IFACE or tap:NAME`},
		{"link name too long", []string{"--link", "tap:abcdefghijklmnopq", "--addr", "192.0.2.1/24"}, 2, `not a valid interface name`},
		{"no addr", []string{"--link", "afpacket:hveth0"}, 2, `at least one --addr CIDR is required`},
		{"addr without prefix", with("--addr", "192.0.2.9"), 2, `--addr "192.0.2.9": want an address with its prefix length`},
		{"addr multicast", with("--addr", "ff02::1/64"), 2, `not a unicast address`},
		{"route without =", with("--route", "10.0.0.0/8"), 2, `--route "10.0.0.0/8": want PREFIX=GATEWAY`},
		{"route bad gateway", with("--route", "10.0.0.0/8=nope"), 2, `bad gateway "nope"`},
		{"route family mix", with("--route", "10.0.0.0/8=fd00::1"), 2, `different families`},
		{"mtu too small", with("--mtu", "100"), 2, `--mtu 100: want 576 to 65535`},
		{"mtu not a number", with("--mtu", "big"), 2, `invalid value "big" for flag -mtu`},
		{"echo bad proto", with("--echo", "sctp:7"), 2, `--echo "sctp:7": want tcp:PORT or udp:PORT`},
		{"echo bad port", with("--echo", "tcp:70000"), 2, `want tcp:PORT or udp:PORT`},
		{"forward without =", with("--forward", "tcp:127.0.0.1:80"), 2, `--forward "tcp:127.0.0.1:80": missing =STACKADDR:PORT`},
		{"forward bad stack addr", with("--forward", "tcp:127.0.0.1:80=192.0.2.2"), 2, `stack address "192.0.2.2": want ADDR:PORT`},
		{"forward bad proto", with("--forward", "sctp:127.0.0.1:80=192.0.2.2:7"), 2, `want tcp:LISTENADDR:PORT=STACKADDR:PORT`},
		{"metrics bad addr", with("--metrics", "nonsense"), 2, `--metrics "nonsense": want HOST:PORT`},
		{"log level", with("--log-level", "loud"), 2, `--log-level "loud": want debug, info, warn or error`},
		{"empty pcap", with("--pcap", ""), 2, `--pcap: empty file name`},
		{"setkey missing", with("--setkey", filepath.Join(dir, "nope.conf")), 1, `--setkey: open .*nope.conf: no such file or directory`},
		{"setkey syntax", with("--setkey", badSyntax), 1, regexp.QuoteMeta(badSyntax) + `:4:3: `},
		{"setkey bad key", with("--setkey", badKey), 1, regexp.QuoteMeta(badKey) + `:3:1: .*key`},
		{"no such interface", []string{"--control", ctl, "--link", "afpacket:hnosuch0", "--addr", "192.0.2.1/24"}, 1, `interface "hnosuch0": no such network interface`},
		{"pcap unwritable", with("--pcap", filepath.Join(dir, "no/dir/x.pcap")), 1, `--pcap: open .*: no such file or directory`},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			stderr, code := runOnce(t, ns, false, c.args...)
			checkOneLine(t, stderr, code, c.code, c.want)
			if _, err := os.Stat(ctl); err == nil {
				t.Errorf("control socket left behind")
			}
		})
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" {
		t.Errorf("the keylog symlink's target was written: %q", b)
	}
	if b, _ := os.ReadFile(foreign); string(b) != "theirs" {
		t.Errorf("another user's file was written: %q", b)
	}
	if c, err := net.Dial("unix", otherSock); err != nil {
		t.Errorf("the other program's socket no longer answers: %v", err)
	} else {
		c.Close()
	}

	t.Run("bad setkey leaves the TAP alone", func(t *testing.T) {
		stderr, code := runOnce(t, ns, false, "--control", ctl, "--link", "tap:hnewtap0", "--addr", "192.0.2.1/24", "--setkey", badSyntax)
		checkOneLine(t, stderr, code, 1, regexp.QuoteMeta(badSyntax)+`:4:3: `)
		if out, err := ns.do2("ip", "link", "show", "hnewtap0"); err == nil {
			t.Errorf("TAP hnewtap0 exists after a rejected setkey file (applied before the link comes up?):\n%s", out)
		}
	})

	// No permission: the same command as nobody.
	for _, c := range []struct{ link, want string }{
		{"afpacket:hveth0", `afpacket: interface "hveth0": AF_PACKET socket: operation not permitted \(needs root or CAP_NET_RAW\)`},
		{"tap:hnewtap1", `tap: device "hnewtap1": (operation not permitted|permission denied) \(needs root or CAP_NET_ADMIN\)`},
	} {
		t.Run("no permission "+c.link, func(t *testing.T) {
			if _, err := exec.LookPath("setpriv"); err != nil {
				t.Skip("needs setpriv (util-linux) to drop privileges")
			}
			stderr, code := runOnce(t, ns, true, "--control", filepath.Join(os.TempDir(), uniq("ctl")+".sock"), "--link", c.link, "--addr", "192.0.2.1/24")
			checkOneLine(t, stderr, code, 1, c.want)
		})
	}

	// Conflicts with a running daemon: its control socket, its --forward
	// and --metrics ports.
	ns.sh(t, "sysctl", "-qw", "net.ipv6.conf.hveth0.disable_ipv6=1")
	ns.sh(t, "ip", "link", "set", "hveth0", "up")
	ns.sh(t, "ip", "link", "set", "hveth1", "up")
	d := startDaemon(t, "running", ns, dir, "--link", "afpacket:hveth0", "--addr", "192.0.2.1/24",
		"--forward", "tcp:127.0.0.1:7400=192.0.2.2:7", "--metrics", "127.0.0.1:9400")
	other := []string{"--link", "afpacket:hveth1", "--addr", "192.0.2.2/24"}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"control socket in use", []string{"--control", d.control}, `control socket .*: in use by a running ipsecstack`},
		{"forward port in use", []string{"--control", filepath.Join(dir, "o1.sock"), "--forward", "tcp:127.0.0.1:7400=192.0.2.1:7"}, `--forward tcp:127.0.0.1:7400=192.0.2.1:7: listen tcp 127.0.0.1:7400: bind: address already in use`},
		{"metrics port in use", []string{"--control", filepath.Join(dir, "o2.sock"), "--metrics", "127.0.0.1:9400"}, `--metrics: listen tcp 127.0.0.1:9400: bind: address already in use`},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			stderr, code := runOnce(t, ns, false, append(append([]string{}, other...), c.args...)...)
			checkOneLine(t, stderr, code, 1, c.want)
		})
	}

	// The client commands.
	ctx := context.Background()
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"stats no daemon", []string{"stats", "--control", filepath.Join(dir, "none.sock")}, 1, `ipsecstack stats: control socket .*none.sock: dial unixpacket .*: connect: no such file or directory`},
		{"stats extra arg", []string{"stats", "x"}, 2, `unexpected argument "x"`},
		{"ping no addr", []string{"ping", "--control", d.control}, 2, `want exactly one ADDR`},
		{"ping bad addr", []string{"ping", "--control", d.control, "example.com"}, 2, `"example.com" is not an IP address`},
		{"ping bad count", []string{"ping", "--control", d.control, "-c", "-1", "192.0.2.2"}, 2, `-c -1: want 0 or more`},
		{"ping no reply", []string{"ping", "--control", d.control, "-c", "2", "-i", "0.1", "-W", "0.3", "192.0.2.77"}, 1, `ipsecstack ping: no reply from 192.0.2.77`},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			_, stderr, code := cli(ctx, c.args...)
			checkOneLine(t, stderr, code, c.code, c.want)
		})
	}
	t.Run("ping no reply summary", func(t *testing.T) {
		out, _, code := cli(ctx, "ping", "--control", d.control, "-c", "1", "-W", "0.2", "192.0.2.77")
		if code != 1 || !strings.Contains(out, "1 packets transmitted, 0 received, 100% packet loss") {
			t.Errorf("exit %d, output:\n%s", code, out)
		}
	})

	// The forward listener answers, the unreachable far side closes it.
	c, err := ns.dial("tcp", "127.0.0.1:7400")
	if err != nil {
		t.Fatalf("forward listener: %v", err)
	}
	c.SetDeadline(time.Now().Add(40 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err == nil {
		t.Errorf("forward to an unreachable stack address: read succeeded")
	}
	c.Close()
	d.stop(t, syscall.SIGTERM)
	if c, err := ns.dial("tcp", "127.0.0.1:7400"); err == nil {
		c.Close()
		t.Errorf("forward listener still open after stop")
	}
	if _, err := net.DialTimeout("tcp", "127.0.0.1:9400", time.Second); err == nil {
		t.Logf("note: something answers on 127.0.0.1:9400 in the root namespace (not ours)")
	}
}

// checkOneLine wants exactly one line on stderr matching want, and code.
func checkOneLine(t *testing.T, stderr string, code, wantCode int, want string) {
	t.Helper()
	s := strings.TrimRight(stderr, "\n")
	if code != wantCode {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, wantCode, stderr)
	}
	if s == "" || strings.Contains(s, "\n") {
		t.Errorf("stderr is not one line:\n%s", stderr)
	}
	if !regexp.MustCompile(want).MatchString(s) {
		t.Errorf("stderr %q does not match %q", s, want)
	}
}

// do2 runs a command inside ns and returns its output and error.
func (ns *netns) do2(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...).CombinedOutput()
	return string(out), err
}
