// Package charontest runs strongSwan's charon (5.9.8, Debian's
// strongswan-charon with kernel-libipsec) as a live IKEv2 peer for the
// interop tests of ike/exchange, ike/daemon and integration/hoststack.
//
// Each Charon runs in a network namespace the test made, in a private
// mount namespace of its own: charon writes its pid file to the fixed path
// /run/charon.pid, so a bind mount of a per-test directory over /run lets
// several charons (and the host's own, if any) coexist. Its
// strongswan.conf, swanctl.conf, log and vici socket live in that
// directory too, and swanctl is pointed at the socket with --uri.
//
// Start skips the test with a message naming what is missing (root,
// charon, swanctl, ...), except under CI=true, where the peers are
// installed and a missing one is a failure, not a silent skip. Every wait
// on charon's state goes through WaitFor, which on timeout reports
// charon's --list-sas, the tail of its log and, where the test has one,
// our side's listing: an interop flake in CI must be diagnosable from its
// output alone.
//
// The package is for tests only: it takes a testing.TB and fails or skips
// it.
package charontest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipsecstack/ipsecstack/internal/pdeath"
)

// Path is charon's binary as Debian's strongswan-charon installs it.
const Path = "/usr/lib/ipsec/charon"

// libipsecPlugin is the kernel-libipsec plugin (libcharon-extra-plugins):
// charon's ESP in userspace. Without it charon would program the host
// kernel's XFRM, which the tests' peers do not expect.
const libipsecPlugin = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"

// Plugins is the plugin list every Charon loads (load_modular = no: the
// test, not /etc/strongswan.d, decides). kernel-libipsec keeps ESP in
// charon and always asks for UDP encapsulation; mgf1, pkcs8 and
// constraints serve the certificate tests (RSA-PSS, PKCS#8 keys, CA
// constraints).
const Plugins = "random nonce openssl aes sha1 sha2 hmac gcm kdf mgf1 pem pkcs1 pkcs8 pubkey x509 constraints kernel-libipsec kernel-netlink socket-default vici"

// TailLines is how many lines of charon.log a Report carries: enough for
// the last few exchanges at the default log levels, short enough to read.
const TailLines = 80

// Options configure one Charon.
type Options struct {
	// Netns is the network namespace (an `ip netns` name) charon runs in.
	// The test creates it, with charon's addresses, before Start, and
	// deletes it after (register its cleanup before calling Start, so that
	// charon stops first).
	Netns string

	// Dir holds strongswan.conf, swanctl.conf, charon.log, the vici socket,
	// the run/ directory mounted over /run, and swanctl's credential
	// directories (private/, x509/, ...). Empty means a new temporary
	// directory, removed at cleanup; not t.TempDir, which names the
	// directory after the (sub)test, and swanctl reads a comma in a path
	// as a list separator.
	Dir string

	// SwanctlConf is the swanctl.conf that charon loads (swanctl
	// --load-all) once its vici socket answers. It is written to
	// Dir/swanctl.conf.
	SwanctlConf string

	// Files are written below Dir before charon starts, by relative name:
	// private keys go in private/, where swanctl --load-all looks for them
	// (swanctl.conf only names their passphrases).
	Files map[string][]byte

	// Settings are extra strongswan.conf lines inside charon { }, such as
	// retransmit_timeout.
	Settings string

	// LogLevels are extra filelog subsystem levels beyond ike = 2, such as
	// "chd = 4" (CHILD SA keys in the log, for extract-keys.py).
	LogLevels string
}

// Charon is one running charon.
type Charon struct {
	// Dir is the directory of Options.Dir: configuration, log, socket.
	Dir string
	// Netns is the network namespace charon runs in.
	Netns string

	// Ours, when set, returns our side's listing of its SAs (an `ike
	// list`, counters): Report and WaitFor's timeout message include it,
	// since a wait usually fails because the two sides disagree. It must
	// not fail the test.
	Ours func() string

	vici   string
	cmd    *exec.Cmd
	done   chan struct{}
	err    error // charon's exit, once done is closed
	killed atomic.Bool
}

// Require skips t unless a live charon can run here: root (namespaces,
// mounts), charon with its kernel-libipsec plugin, and ip, unshare and
// swanctl on PATH, plus any extra commands the test uses. With CI=true it
// fails t instead: CI installs the peers (.ci/packages.txt), so a missing
// one there means the run would silently test less.
func Require(t testing.TB, extra ...string) {
	t.Helper()
	if err := missing(extra...); err != nil {
		skipOrFail(t, err)
	}
}

// missing names the first prerequisite that is not there.
func missing(extra ...string) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network and mount namespaces)")
	}
	for _, f := range []string{Path, libipsecPlugin} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("strongSwan not installed: %v (apt-get install strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins)", err)
		}
	}
	for _, c := range append([]string{"ip", "unshare", "swanctl"}, extra...) {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("needs %s on PATH: %v", c, err)
		}
	}
	return nil
}

// skipOrFail skips t for err, or fails it under CI=true (the convention
// of integration/hoststack's require and linuxvm.Require).
func skipOrFail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI=true: a missing prerequisite is a failure)", err)
	}
	t.Skipf("%v: skipping (set CI=true to make this a failure)", err)
}

// Start runs charon in o.Netns, waits until its vici socket answers and
// loads o.SwanctlConf. It skips t as Require does. At t's cleanup it
// stops charon (SIGTERM, then SIGKILL after 2 s: charon may wait for
// answers to DELETEs nobody sends) and, if t failed, logs charon's whole
// log. charon dies with the test process too (PR_SET_PDEATHSIG), so a
// test killed by -timeout leaves no charon behind.
func Start(t testing.TB, o Options) *Charon {
	t.Helper()
	Require(t)
	if o.Netns == "" {
		t.Fatal("charontest: Options.Netns is empty")
	}
	dir := o.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "charon"); err != nil {
			t.Fatal(err)
		}
		// Registered before the stop below, so it runs after it.
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	c := &Charon{Dir: dir, Netns: o.Netns, vici: filepath.Join(dir, "charon.vici"), done: make(chan struct{})}
	conf := fmt.Sprintf(`charon {
  load_modular = no
  load = %s
  syslog { daemon { default = -1 } }
  filelog { main { path = %s
                   time_format = %%T
                   time_add_ms = yes
                   default = 1
                   flush_line = yes
                   ike = 2
%s } }
  plugins { vici { socket = unix://%s } }
%s
}
`, Plugins, c.LogPath(), o.LogLevels, c.vici, o.Settings)
	files := map[string][]byte{
		"strongswan.conf": []byte(conf),
		"swanctl.conf":    []byte(o.SwanctlConf),
	}
	for name, b := range o.Files {
		files[name] = b
	}
	for _, d := range []string{"run", "private"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// ip netns exec, unshare and sh each exec the next, so the process we
	// start, signal and wait for is charon itself. The paths go in as
	// positional parameters, not spliced into the script.
	c.cmd = exec.Command("ip", "netns", "exec", o.Netns, "unshare", "-m", "--propagation", "private",
		"sh", "-c", `mount --bind "$0" /run && exec "$1"`, filepath.Join(dir, "run"), Path)
	c.cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(dir, "strongswan.conf"))
	// stdout and stderr (what charon says before its log is open, and
	// sh's and mount's complaints) go to a file: an *os.File is handed to
	// the process as is, with no copying goroutine that Wait must drain.
	out, err := os.Create(filepath.Join(dir, "charon.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the child has its own descriptor
	c.cmd.Stdout, c.cmd.Stderr = out, out
	waitc, err := pdeath.Start(c.cmd)
	if err != nil {
		t.Fatalf("starting charon in %s: %v", o.Netns, err)
	}
	go func() { c.err = <-waitc; close(c.done) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("charon's SAs at cleanup:\n%s", c.listSAs())
		}
		c.stop()
		if t.Failed() {
			t.Logf("charon log (%s):\n%s", c.LogPath(), c.Log())
		}
	})

	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.Swanctl("--stats")
		if err == nil {
			break
		}
		select {
		case <-c.done:
			t.Fatalf("charon exited while starting: %v\n%s\ncharon log:\n%s", c.err, c.output(), c.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("charon's vici socket %s not answering after 5 s: %v\n%s\ncharon log:\n%s", c.vici, err, c.output(), c.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := c.Swanctl("--load-all", "--file", filepath.Join(dir, "swanctl.conf")); err != nil {
		t.Fatalf("swanctl --load-all: %v\n%s", err, out)
	}
	return c
}

// LogPath is charon's log file, for tools that read it (extract-keys.py).
func (c *Charon) LogPath() string { return filepath.Join(c.Dir, "charon.log") }

// stop ends charon: SIGTERM, and SIGKILL if it is still there after 2 s.
func (c *Charon) stop() {
	c.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// Kill ends charon at once (SIGKILL) and waits for it: a dead peer, which
// sends no DELETE and answers nothing.
func (c *Charon) Kill() {
	c.killed.Store(true)
	c.cmd.Process.Kill()
	<-c.done
}

// Swanctl runs swanctl with args against this charon and returns its
// output without the lines of swanctl's own plugin loading (noise that
// depends on the host's strongSwan packages). SWANCTL_DIR is Dir, so
// swanctl --load-all takes credentials from there, never from the host's
// /etc/swanctl.
func (c *Charon) Swanctl(args ...string) (string, error) {
	cmd := exec.Command("swanctl", append(args, "--uri", "unix://"+c.vici)...)
	cmd.Env = append(os.Environ(), "SWANCTL_DIR="+c.Dir)
	out, err := cmd.CombinedOutput()
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, "plugin '") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n"), err
}

// ListSAs returns swanctl --list-sas.
func (c *Charon) ListSAs() (string, error) { return c.Swanctl("--list-sas") }

// listSAs is ListSAs for a report: an error goes into the text.
func (c *Charon) listSAs() string {
	select {
	case <-c.done:
		if c.killed.Load() {
			return "(charon was killed by the test)"
		}
		return fmt.Sprintf("(charon exited: %v)\n%s", c.err, c.output())
	default:
	}
	sas, err := c.ListSAs()
	if err != nil {
		return fmt.Sprintf("%s\n(swanctl --list-sas: %v)", sas, err)
	}
	if strings.TrimSpace(sas) == "" {
		return "(no SAs)"
	}
	return sas
}

// output is what charon and its start-up commands wrote to stdout and
// stderr.
func (c *Charon) output() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "charon.out"))
	return string(b)
}

// Log returns charon's whole log so far.
func (c *Charon) Log() string {
	b, _ := os.ReadFile(c.LogPath())
	return string(b)
}

// LogTail returns the last n lines of charon's log.
func (c *Charon) LogTail(n int) string {
	lines := strings.SplitAfter(c.Log(), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d earlier lines]\n", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "")
}

// Report is what a failure about charon's state needs: charon's
// --list-sas, the last TailLines lines of its log, and our side's listing
// when Ours is set.
func (c *Charon) Report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "charon's --list-sas:\n%s\n", c.listSAs())
	if c.Ours != nil {
		fmt.Fprintf(&b, "ours:\n%s\n", c.Ours())
	}
	fmt.Fprintf(&b, "charon.log, last %d lines:\n%s", TailLines, c.LogTail(TailLines))
	return b.String()
}

// WaitFor polls cond every 50 ms until it holds, and returns how long
// that took. After timeout it fails t with what and the Report. t is a
// parameter, not Start's, because a charon started by a test often
// serves its subtests.
func (c *Charon) WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s\n%s", timeout, what, c.Report())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// WaitSAs waits, as WaitFor does, until cond holds on charon's
// --list-sas; a failing swanctl counts as not yet (it is in the
// report if it lasts).
func (c *Charon) WaitSAs(t testing.TB, what string, timeout time.Duration, cond func(sas string) bool) time.Duration {
	t.Helper()
	return c.WaitFor(t, what, timeout, func() bool {
		sas, err := c.ListSAs()
		return err == nil && cond(sas)
	})
}

// Done is closed when charon has exited.
func (c *Charon) Done() <-chan struct{} { return c.done }

// nsSeq tells apart the namespaces one test process makes.
var nsSeq atomic.Int32

// Netns creates a network namespace with lo up, named prefix, the process
// id and a sequence number (so that test processes of several packages,
// which go test may run at once, never collide), and deletes it with its
// interfaces at t's cleanup. Create the namespaces before Start, so that
// charon stops before its namespace goes.
func Netns(t testing.TB, prefix string) string {
	t.Helper()
	ns := fmt.Sprintf("%s%d_%d", prefix, os.Getpid()%100000, nsSeq.Add(1))
	IP(t, "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	IP(t, "-n", ns, "link", "set", "lo", "up")
	return ns
}

// IP runs ip(8) with args and fails t if it fails: the tests' topology
// commands (namespaces, veths, addresses).
func IP(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// InNetns runs fn on an OS thread inside network namespace ns (an `ip
// netns` name): the sockets fn creates belong to ns for their whole life.
// The thread stays locked to its goroutine, so Go discards it afterwards
// rather than let another goroutine run in ns.
func InNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Sink serves the tests' TCP sink protocol on addr inside network
// namespace ns, the far end of transfers through charon's tunnel: it
// reads each connection to EOF and answers the SHA-256 of what came, so
// the sender checks the whole stream arrived intact. It stops at t's
// cleanup.
func Sink(t testing.TB, ns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := InNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("sink on %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed at cleanup
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
