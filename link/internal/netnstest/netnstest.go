//go:build linux

// Package netnstest builds throw-away Linux network namespaces for the
// integration tests of the afpacket and tap endpoints. Everything lives in
// namespaces the test creates (the root namespace is never touched), so no
// test frame can be routed or forwarded off this machine.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

var seq atomic.Int32

// Require skips t unless it runs as root with iproute2's ip and the given
// extra commands on PATH.
func Require(t *testing.T, cmds ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, veth/TAP devices, AF_PACKET): skipping")
	}
	for _, c := range append([]string{"ip"}, cmds...) {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs %q on PATH (%v): skipping", c, err)
		}
	}
}

// UniqueName returns a short name (fits IFNAMSIZ) unique to this process.
func UniqueName(prefix string) string {
	return fmt.Sprintf("%s%d%d", prefix, os.Getpid()%100000, seq.Add(1))
}

// NS is a network namespace created by the test.
type NS struct{ Name string }

// New creates a namespace with lo up and forwarding off, deleted (with its
// interfaces) when the test ends, pass or fail.
func New(t *testing.T) *NS {
	t.Helper()
	ns := &NS{Name: UniqueName("ipsns")}
	Run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v: %s", ns.Name, err, out)
		}
	})
	ns.Run(t, "ip", "link", "set", "lo", "up")
	ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
	return ns
}

// Run runs a command in the root namespace and fails t on error.
func Run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Run runs a command inside ns and fails t on error.
func (ns *NS) Run(t *testing.T, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// Try runs a command inside ns and returns its output and error.
func (ns *NS) Try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// Do runs fn on an OS thread that has entered ns. Sockets and devices fn
// creates belong to ns for their whole life, whichever goroutine uses them
// later. The thread is never unlocked, so the Go runtime discards it when
// fn returns instead of running other goroutines in ns.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns.Name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
