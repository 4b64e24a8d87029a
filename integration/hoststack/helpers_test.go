package hoststack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipsecstack/ipsecstack/control"
)

// bin is the ipsecstack binary, built once by TestMain.
var (
	bin      string
	buildErr error
	binDir   string
)

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "ipsecstack-bin-")
			if err != nil {
				buildErr = err
			} else {
				binDir = dir
				defer os.RemoveAll(dir)
				// World-readable so the no-permission case can run it as nobody.
				os.Chmod(dir, 0o755)
				bin = filepath.Join(dir, "ipsecstack")
				start := time.Now()
				out, err := exec.Command("go", "build", "-o", bin, "github.com/ipsecstack/ipsecstack/cmd/ipsecstack").CombinedOutput()
				if err != nil {
					buildErr = fmt.Errorf("go build: %v\n%s", err, out)
				} else {
					fmt.Fprintf(os.Stderr, "hoststack: built %s in %v\n", bin, time.Since(start).Round(time.Millisecond))
				}
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// require skips (or with CI=true fails) unless the test can run: root, ip,
// the binary, and the extra commands.
func require(t *testing.T, cmds ...string) {
	t.Helper()
	skip := func(format string, a ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: "+format, a...)
		}
		t.Skipf(format+": skipping", a...)
	}
	if os.Geteuid() != 0 {
		skip("needs root (network namespaces, veth/TAP devices, AF_PACKET)")
	}
	for _, c := range append([]string{"ip"}, cmds...) {
		if _, err := exec.LookPath(c); err != nil {
			skip("needs %q on PATH (%v)", c, err)
		}
	}
	if buildErr != nil {
		t.Fatalf("building ipsecstack: %v", buildErr)
	}
}

var seq atomic.Int32

func uniq(prefix string) string {
	return fmt.Sprintf("%s%d%d", prefix, os.Getpid()%10000, seq.Add(1))
}

// sh runs a command and fails t on error.
func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netns is a network namespace the test created; it is deleted, with its
// interfaces, when the test ends (pass or fail).
type netns struct{ name string }

func newNS(t *testing.T) *netns {
	t.Helper()
	ns := &netns{uniq("hsns")}
	sh(t, "ip", "netns", "add", ns.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	ns.sh(t, "ip", "link", "set", "lo", "up")
	return ns
}

func (ns *netns) sh(t *testing.T, args ...string) string {
	t.Helper()
	return sh(t, append([]string{"ip", "netns", "exec", ns.name}, args...)...)
}

// do runs fn on an OS thread inside ns: sockets fn creates live in ns. The
// thread stays locked, so Go discards it afterwards.
func (ns *netns) do(fn func() error) error {
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
			errc <- fmt.Errorf("setns %s: %w", ns.name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// dial opens a connection from inside ns.
func (ns *netns) dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.do(func() error {
		var err error
		c, err = net.DialTimeout(network, addr, 5*time.Second)
		return err
	})
	return c, err
}

// daemon is one `ipsecstack run` process.
type daemon struct {
	name    string
	ns      *netns
	cmd     *exec.Cmd
	stderr  *syncBuf
	control string
	done    chan struct{}
	err     error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDaemon runs `ipsecstack run args…` in ns (--control is added) and
// waits until its control socket answers.
func startDaemon(t *testing.T, name string, ns *netns, dir string, args ...string) *daemon {
	t.Helper()
	d := &daemon{name: name, ns: ns, stderr: &syncBuf{}, control: filepath.Join(dir, name+".sock"), done: make(chan struct{})}
	full := append([]string{"netns", "exec", ns.name, bin, "run", "--control", d.control}, args...)
	d.cmd = exec.Command("ip", full...)
	d.cmd.Stderr = d.stderr
	d.cmd.Stdout = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		var stats string
		select {
		case <-d.done:
		default:
			if t.Failed() {
				// The xfrm counters of a daemon still running say where
				// packets were dropped.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				out, serr, _ := cli(ctx, "stats", "--control", d.control)
				cancel()
				stats = out + serr
			}
			d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s\n%s xfrm_stat:\n%s", name, d.stderr.String(), name, stats)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-d.done:
			t.Fatalf("%s exited during start-up: %v\n%s", name, d.err, d.stderr.String())
		default:
		}
		if c, err := control.Dial(d.control); err == nil {
			c.Timeout = 2 * time.Second
			err = c.Call("version", nil, nil)
			c.Close()
			if err == nil {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: control socket %s not answering after 10 s\n%s", name, d.control, d.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and wants a clean exit (status 0) with the control socket
// removed.
func (d *daemon) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		t.Fatalf("%s: still running 10 s after %v", d.name, sig)
	}
	if d.err != nil {
		t.Errorf("%s: exit after %v: %v\n%s", d.name, sig, d.err, d.stderr.String())
	}
	if _, err := os.Stat(d.control); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: control socket %s still there after %v (stat: %v)", d.name, d.control, sig, err)
	}
}

// cli runs an ipsecstack client subcommand and returns stdout, stderr and
// the exit code.
func cli(ctx context.Context, args ...string) (string, string, int) {
	var so, se bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			code = -1
			se.WriteString(err.Error())
		}
	}
	return so.String(), se.String(), code
}

// vethPair joins a new veth pair: end a in namespace na, end b in nb, each
// made ready for a stack to own it (ownedByStack).
func vethPair(t *testing.T, na *netns, a string, nb *netns, b string) {
	t.Helper()
	sh(t, "ip", "link", "add", a, "netns", na.name, "type", "veth", "peer", "name", b, "netns", nb.name)
	na.ownedByStack(t, a)
	nb.ownedByStack(t, b)
}

// ownedByStack readies the kernel's side of an interface a stack will own
// through AF_PACKET: up, with no address and no IPv6 (the stack reuses its
// MAC and answers for it).
func (n *netns) ownedByStack(t *testing.T, ifname string) {
	t.Helper()
	n.sh(t, "sysctl", "-qw", "net.ipv6.conf."+ifname+".disable_ipv6=1")
	n.sh(t, "ip", "link", "set", ifname, "up")
}
