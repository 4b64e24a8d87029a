package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ipsecstack/ipsecstack/control"
	"github.com/ipsecstack/ipsecstack/internal/pdeath"
)

// wireEnv owns what the --wire benchmark creates: network namespaces
// (their interfaces go with them), processes and a temporary directory.
// close removes all of it; it is also run on SIGINT/SIGTERM.
type wireEnv struct {
	id   string // unique per run: namespace and interface names
	dir  string // temporary directory (binaries, configs, sockets)
	self string // this binary, for the helpers
	log  io.Writer
	// debug (WIRE_DEBUG=1): daemons capture (--pcap) and log at debug
	// level, and the directory is kept for a look afterwards.
	debug bool
	// pprofDir (--wire-pprof): daemons serve --pprof, and each TCP
	// round's CPU profiles are written here.
	pprofDir string

	mu     sync.Mutex
	ns     []string
	procs  []*wireProc
	closed bool
	nsSeq  int
	gone   chan struct{} // closed when close has removed everything
}

// wireNSPrefix starts the name of every namespace the benchmark creates:
// "wb<pid>-<n>". A run killed before it could clean up leaves some; the
// next run removes those whose pid is gone.
const wireNSPrefix = "wb"

var wireNSName = regexp.MustCompile(`^wb(\d+)-\d+$`)

func newWireEnv(log io.Writer) (*wireEnv, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ipsecstack-wire-")
	if err != nil {
		return nil, err
	}
	e := &wireEnv{id: strconv.Itoa(os.Getpid()), dir: dir, self: self, log: log, gone: make(chan struct{}),
		debug: os.Getenv("WIRE_DEBUG") == "1"}
	e.removeStale()
	return e, nil
}

// removeStale deletes namespaces of earlier runs whose process is gone.
func (e *wireEnv) removeStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		m := wireNSName.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		fmt.Fprintf(e.log, "wire: removing namespace %s left by an earlier run\n", f[0])
		exec.Command("ip", "netns", "del", f[0]).Run()
	}
}

// close stops every process (SIGTERM, then SIGKILL after 3 s) and deletes
// the namespaces and the directory. A second call (the signal handler's
// and the normal return's) waits for the first to finish.
func (e *wireEnv) close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		<-e.gone
		return
	}
	e.closed = true
	procs, nss := e.procs, e.ns
	e.mu.Unlock()
	defer close(e.gone)
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop() }()
	}
	wg.Wait()
	for _, n := range nss {
		if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil {
			fmt.Fprintf(e.log, "wire: ip netns del %s: %v %s\n", n, err, out)
		}
	}
	if e.debug {
		fmt.Fprintf(e.log, "wire: WIRE_DEBUG=1: kept %s\n", e.dir)
		return
	}
	os.RemoveAll(e.dir)
}

// newNS creates a namespace with lo up.
func (e *wireEnv) newNS() (string, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return "", errors.New("interrupted")
	}
	e.nsSeq++
	name := fmt.Sprintf("%s%s-%d", wireNSPrefix, e.id, e.nsSeq)
	e.ns = append(e.ns, name)
	e.mu.Unlock()
	if err := e.sh("ip", "netns", "add", name); err != nil {
		return "", err
	}
	return name, e.sh("ip", "-n", name, "link", "set", "lo", "up")
}

// ifName is a unique interface name (at most 15 bytes).
func (e *wireEnv) ifName(tag string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nsSeq++
	return fmt.Sprintf("%s%s%d", tag, e.id, e.nsSeq)
}

// sh runs a command; its output is in the error.
func (e *wireEnv) sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// nsh runs a command in namespace ns.
func (e *wireEnv) nsh(ns string, args ...string) error {
	return e.sh(append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// wireProc is a process the benchmark started. ip netns exec, unshare
// and sh exec their command, so pid is the program's own process.
type wireProc struct {
	name   string
	cmd    *exec.Cmd
	out    *tailBuf
	done   chan struct{}
	err    error
	stdin  io.WriteCloser
	stdout *bufio.Reader
}

// tailBuf keeps the last 8 KiB written to it (a process's stderr).
type tailBuf struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuf) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 8<<10 {
		t.b = append([]byte(nil), t.b[len(t.b)-8<<10:]...)
	}
	return len(p), nil
}

func (t *tailBuf) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.b))
}

// last is the output's last three non-blank lines, for an error message
// (a program's banner before its error says nothing).
func (t *tailBuf) last() string {
	var keep []string
	lines := strings.Split(t.String(), "\n")
	for i := len(lines) - 1; i >= 0 && len(keep) < 3; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			keep = append([]string{l}, keep...)
		}
	}
	return strings.Join(keep, " | ")
}

// start runs args in namespace ns (no namespace if ns is ""). With pipe,
// stdin and stdout are kept for a line protocol; else stdout goes with
// stderr into the process's tail buffer.
func (e *wireEnv) start(name, ns string, pipe bool, env []string, args ...string) (*wireProc, error) {
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	p := &wireProc{name: name, cmd: exec.Command(args[0], args[1:]...), out: &tailBuf{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.out
	// Own process group: a ^C on the terminal reaches only the
	// benchmark, which then stops its processes in order.
	// Pdeathsig: a benchmark killed outright (SIGKILL, a test timeout)
	// takes its processes along instead of leaving daemons behind, with
	// whatever descriptors they inherited (a flock on /tmp/heavy.lock
	// among them).
	// pdeath.Start sets it and forks on a thread that outlives the child
	// (the signal follows the forking thread, not the process).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if pipe {
		w, err := p.cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		r, err := p.cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		p.stdin, p.stdout = w, bufio.NewReader(r)
	} else {
		p.cmd.Stdout = p.out
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, errors.New("interrupted")
	}
	waitc, err := pdeath.Start(p.cmd)
	if err != nil {
		e.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	go func() { p.err = <-waitc; close(p.done) }()
	return p, nil
}

func (p *wireProc) pid() int { return p.cmd.Process.Pid }

func (p *wireProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process: SIGTERM, SIGKILL after 3 s.
func (p *wireProc) stop() {
	if p.stdin != nil {
		p.stdin.Close()
	}
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// call sends one command line and reads the answer line ("ok …").
func (p *wireProc) call(timeout time.Duration, format string, a ...any) ([]string, error) {
	if _, err := fmt.Fprintf(p.stdin, format+"\n", a...); err != nil {
		return nil, fmt.Errorf("%s: %w (%s)", p.name, err, p.out.last())
	}
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := p.stdout.ReadString('\n')
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("%s: %w (%s)", p.name, r.err, p.out.last())
		}
		f := strings.Fields(r.s)
		if len(f) == 0 || f[0] != "ok" {
			return nil, fmt.Errorf("%s: %s", p.name, strings.TrimSpace(r.s))
		}
		return f[1:], nil
	case <-time.After(timeout):
		// The answer may still come: the process is unusable now.
		p.stop()
		return nil, fmt.Errorf("%s: no answer after %v", p.name, timeout)
	}
}

// waitLine waits for a process to print want on stdout (a pipe process)
// or in its output.
func (p *wireProc) waitReady(timeout time.Duration, want string) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited: %v: %s", p.name, p.err, p.out.last())
		}
		if strings.Contains(p.out.String(), want) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: not ready after %v: %s", p.name, timeout, p.out.last())
}

// waitControl waits until an ipsecstack control socket answers.
func waitControl(p *wireProc, path string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited: %v: %s", p.name, p.err, p.out.last())
		}
		if c, err := control.Dial(path); err == nil {
			c.Timeout = 2 * time.Second
			err = c.Call("version", nil, nil)
			c.Close()
			if err == nil {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: control socket %s not answering after 15 s: %s", p.name, path, p.out.last())
}

// daemonStats reads an ipsecstack daemon's counters (the JSON op behind
// `ipsecstack stats`).
func daemonStats(path string) map[string]uint64 {
	c, err := control.Dial(path)
	if err != nil {
		return nil
	}
	defer c.Close()
	c.Timeout = 2 * time.Second
	var stats []struct {
		Name  string `json:"name"`
		Value uint64 `json:"value"`
	}
	if err := c.Call("stats", nil, &stats); err != nil {
		return nil
	}
	m := map[string]uint64{}
	for _, s := range stats {
		m[s.Name] = s.Value
	}
	return m
}

// procCPU is a process's utime+stime in seconds (/proc/PID/stat fields
// 14 and 15, clock ticks of 1/100 s: Linux's USER_HZ on x86 and arm64).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count after its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return float64(ut+st) / 100
}

// softirqCPU is the machine's softirq time in seconds (/proc/stat, the
// "cpu" line's seventh field, all cores).
func softirqCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	l, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(l)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	v, _ := strconv.ParseUint(f[7], 10, 64)
	return float64(v) / 100
}

// ifDrops is an interface's rx_dropped + tx_dropped (ip -s -j link).
func ifDrops(ns, ifname string) uint64 {
	out, err := exec.Command("ip", "-n", ns, "-s", "-j", "link", "show", "dev", ifname).Output()
	if err != nil {
		return 0
	}
	var v []struct {
		Stats64 struct {
			RX struct {
				Dropped uint64 `json:"dropped"`
			} `json:"rx"`
			TX struct {
				Dropped uint64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if json.Unmarshal(out, &v) != nil || len(v) == 0 {
		return 0
	}
	return v[0].Stats64.RX.Dropped + v[0].Stats64.TX.Dropped
}

// writeFile writes a configuration file into the run's directory.
func (e *wireEnv) writeFile(name, body string, mode os.FileMode) (string, error) {
	p := filepath.Join(e.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	return p, os.WriteFile(p, []byte(body), mode)
}
