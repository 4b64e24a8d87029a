package charontest

import (
	"bytes"
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
	"testing"
	"time"
)

// fakeTB records what the code under test asks of its testing.TB; Fatal
// and Skip end the goroutine as the real ones do.
type fakeTB struct {
	testing.TB
	msg             string
	failed, skipped bool
	logs            []string
	cleanups        []func()
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, a ...any) {
	f.msg, f.failed = fmt.Sprintf(format, a...), true
	runtime.Goexit()
}
func (f *fakeTB) Skipf(format string, a ...any) {
	f.msg, f.skipped = fmt.Sprintf(format, a...), true
	runtime.Goexit()
}
func (f *fakeTB) Logf(format string, a ...any) { f.logs = append(f.logs, fmt.Sprintf(format, a...)) }
func (f *fakeTB) Cleanup(fn func())            { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Failed() bool                 { return f.failed }

// run calls fn with a fakeTB on its own goroutine and returns the record.
func run(fn func(testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() { defer close(done); fn(f) }()
	<-done
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	return f
}

// TestSkipOrFail: a missing peer skips, except under CI=true, where it
// fails (the project's convention: CI installs the peers).
func TestSkipOrFail(t *testing.T) {
	for _, tt := range []struct {
		ci         string
		fail, skip bool
	}{
		{"", false, true},
		{"false", false, true},
		{"true", true, false},
	} {
		t.Setenv("CI", tt.ci)
		f := run(func(tb testing.TB) { skipOrFail(tb, errors.New("no charon here")) })
		if f.failed != tt.fail || f.skipped != tt.skip || !strings.Contains(f.msg, "no charon here") {
			t.Errorf("CI=%q: failed %v skipped %v (%q), want failed %v skipped %v", tt.ci, f.failed, f.skipped, f.msg, tt.fail, tt.skip)
		}
	}
}

// TestLogTail: the last n lines, with a count of the ones left out.
func TestLogTail(t *testing.T) {
	c := &Charon{Dir: t.TempDir()}
	var b strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	os.WriteFile(filepath.Join(c.Dir, "charon.log"), []byte(b.String()), 0o600)
	for _, tt := range []struct {
		n          int
		first, end string
		lines      int
	}{
		{80, "[... 20 earlier lines]\n", "line 100\n", 81},
		{100, "line 1\n", "line 100\n", 100},
		{200, "line 1\n", "line 100\n", 100},
	} {
		got := c.LogTail(tt.n)
		if !strings.HasPrefix(got, tt.first) || !strings.HasSuffix(got, tt.end) || strings.Count(got, "\n") != tt.lines {
			t.Errorf("LogTail(%d) = %q..., %d lines", tt.n, got[:min(len(got), 40)], strings.Count(got, "\n"))
		}
	}
	if got := (&Charon{Dir: t.TempDir()}).LogTail(80); got != "" {
		t.Errorf("LogTail of no log = %q", got)
	}
}

// TestStart starts a charon with one connection, checks that it loaded
// it and logs to Dir, that a wait on its state times out with the report
// (--list-sas, log tail, our listing), and that Kill and the cleanup end
// it.
func TestStart(t *testing.T) {
	ns := Netns(t, "chtest")
	c := Start(t, Options{Netns: ns, SwanctlConf: `connections {
  probe {
    local_addrs = 10.99.0.1
    remote_addrs = 10.99.0.2
    local { auth = psk }
    remote { auth = psk }
    children { c { } }
  }
}
`})
	if out, err := c.Swanctl("--list-conns"); err != nil || !strings.Contains(out, "probe:") || strings.Contains(out, "plugin '") {
		t.Errorf("swanctl --list-conns: %v\n%s", err, out)
	}
	if !strings.Contains(c.Log(), "charon") {
		t.Errorf("charon's log:\n%s", c.Log())
	}
	if sas, err := c.ListSAs(); err != nil || strings.Contains(sas, "ESTABLISHED") {
		t.Errorf("--list-sas: %v\n%s", err, sas)
	}
	if d := c.WaitSAs(t, "no SAs", time.Second, func(sas string) bool { return !strings.Contains(sas, "ESTABLISHED") }); d > time.Second {
		t.Errorf("WaitSAs took %v", d)
	}

	c.Ours = func() string { return "our listing: nothing" }
	f := run(func(tb testing.TB) {
		c.WaitFor(tb, "an SA that never comes", 200*time.Millisecond, func() bool { return false })
	})
	for _, want := range []string{"an SA that never comes", "charon's --list-sas:", "our listing: nothing", "charon.log, last 80 lines:", "[DMN] Starting IKE charon daemon", "(no SAs)"} {
		if !f.failed || !strings.Contains(f.msg, want) {
			t.Errorf("WaitFor's timeout message lacks %q (failed %v):\n%s", want, f.failed, f.msg)
		}
	}

	// The process we signal is charon itself, not a wrapper around it.
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.cmd.Process.Pid))
	if strings.TrimSpace(string(comm)) != "charon" {
		t.Errorf("the started process is %q, want charon", comm)
	}
	c.Kill()
	if r := c.Report(); !strings.Contains(r, "killed by the test") {
		t.Errorf("report after Kill:\n%s", r)
	}
	if err := exec.Command("ip", "netns", "pids", ns).Run(); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("ip", "netns", "pids", ns).Output(); len(out) != 0 {
		t.Errorf("processes left in %s: %s", ns, out)
	}
}

// TestStartFails: when charon cannot start (here: no such namespace),
// Start fails with what the start-up commands said.
func TestStartFails(t *testing.T) {
	Require(t)
	f := run(func(tb testing.TB) { Start(tb, Options{Netns: "charontest-no-such-ns"}) })
	if !f.failed || !strings.Contains(f.msg, "charon exited while starting") || !strings.Contains(f.msg, "charontest-no-such-ns") {
		t.Errorf("failed %v:\n%s", f.failed, f.msg)
	}
}

// TestStartCleanup: the cleanup stops charon with SIGTERM and removes
// its temporary directory.
func TestStartCleanup(t *testing.T) {
	Require(t)
	ns := Netns(t, "chtest")
	var c *Charon
	t.Run("charon", func(t *testing.T) {
		c = Start(t, Options{Netns: ns})
	})
	select {
	case <-c.Done():
	default:
		t.Fatal("charon still running after its test's cleanup")
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", c.Dir, err)
	}
	if c.err != nil {
		t.Errorf("charon's exit after SIGTERM: %v\n%s", c.err, c.output())
	}
}

// TestSink: the sink answers the SHA-256 of all it read, inside its
// namespace.
func TestSink(t *testing.T) {
	Require(t)
	ns := Netns(t, "chtest")
	Sink(t, ns, "127.0.0.1:9000")
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var sum []byte
	err := InNetns(ns, func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:9000", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(data); err != nil {
			return err
		}
		c.(*net.TCPConn).CloseWrite()
		sum, err = io.ReadAll(c)
		return err
	})
	if want := sha256.Sum256(data); err != nil || !bytes.Equal(sum, want[:]) {
		t.Fatalf("sink: %v, digest %x want %x", err, sum, want)
	}
}
