// Package linuxvm boots Debian's Linux kernel under qemu (TCG) as an IPsec
// peer for integration tests, and drives it over a virtio-serial control
// channel.
//
// The guest is a busybox initramfs with the kernel's xfrm, ESP/AH/IPComp and
// crypto modules loaded, iproute2's ip and a small agent (./agent) that runs
// commands and serves TCP echo (7), a TCP sink (9000, answers with the
// SHA-256 of what it read) and UDP echo (7). Its one NIC (eth0, virtio-net)
// is attached to a TAP device on the host; a gVisor stack binds to the host
// side of that TAP with AF_PACKET. The host kernel's side of the TAP is up
// with no address and IPv6 disabled, so only the stack answers.
//
// In guest commands, `ip` is iproute2's (a shell function over
// /usr/sbin/ip: busybox's own applet has no xfrm and ash prefers applets
// over PATH).
//
// With PrepareOptions.Charon the image also carries strongSwan's charon
// and swanctl (the host's Debian binaries), which VM.StartCharon runs in
// the guest with the kernel-netlink backend: an IKEv2 peer whose SAs are
// the guest kernel's.
package linuxvm

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ipsecstack/ipsecstack/integration/linuxvm/proto"
	"github.com/ipsecstack/ipsecstack/internal/pdeath"
)

// Ports of the agent's services in the guest.
const (
	EchoPort = proto.EchoPort // TCP and UDP echo
	SinkPort = proto.SinkPort // TCP sink answering with SHA-256
	// NATTPort is where ESPInUDP opens a UDP_ENCAP_ESPINUDP socket per
	// family in the guest, so that the kernel takes ESP in UDP for its
	// `encap espinudp` SAs.
	NATTPort = proto.NATTPort
)

// AgentPath is the agent binary inside the guest (also a client:
// tcpsend/tcpecho/udpsend, see the agent's doc).
const AgentPath = "/bin/agent"

// Options configures Start.
type Options struct {
	// TapName is the host TAP device (created if missing, deleted on Close
	// if Start created it); empty picks a free name "ipsvmNNNNN", so that
	// concurrent test processes do not share a TAP. VM.TapName tells.
	TapName string
	// GuestMAC is the guest NIC's MAC; empty means 52:54:00:12:34:56.
	GuestMAC string
	// CacheDir is passed to Prepare.
	CacheDir string
	// Image skips Prepare.
	Image *Image
	// Log receives the guest console and qemu's messages; nil discards.
	Log io.Writer
	// MemoryMB is the guest memory; 0 means 512.
	MemoryMB int
	// BootTimeout bounds the boot up to the agent's answer; 0 means 3 min.
	BootTimeout time.Duration
	// Append adds kernel command line arguments.
	Append string
}

// VM is a running guest.
type VM struct {
	Image    *Image
	TapName  string
	GuestMAC string
	// BootTime is from qemu's start to the agent's first answer.
	BootTime time.Duration

	cmd       *exec.Cmd
	tmp       string
	ownTap    bool
	conn      net.Conn
	wmu       sync.Mutex
	mu        sync.Mutex
	nextID    uint64
	pending   map[uint64]chan proto.Response
	readErr   error
	exited    chan struct{}
	exitErr   error
	closeOnce sync.Once
}

// Result is the outcome of a guest command.
type Result struct {
	Stdout, Stderr string
	Exit           int
}

// Start prepares the image if needed, sets the TAP up and boots the guest.
// It returns when the agent answers.
func Start(ctx context.Context, o Options) (*VM, error) {
	if err := CheckPrereqs(); err != nil {
		return nil, err
	}
	if o.TapName == "" {
		o.TapName = freeTapName()
	}
	if o.GuestMAC == "" {
		o.GuestMAC = "52:54:00:12:34:56"
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = 512
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 3 * time.Minute
	}
	img := o.Image
	if img == nil {
		var err error
		img, err = Prepare(ctx, PrepareOptions{CacheDir: o.CacheDir, Log: o.Log})
		if err != nil {
			return nil, err
		}
	}
	vm := &VM{Image: img, TapName: o.TapName, GuestMAC: o.GuestMAC, pending: map[uint64]chan proto.Response{}, exited: make(chan struct{})}
	var err error
	if vm.ownTap, err = setupTap(o.TapName); err != nil {
		return nil, err
	}
	vm.tmp, err = os.MkdirTemp("", "linuxvm-")
	if err != nil {
		vm.Close()
		return nil, err
	}
	sock := filepath.Join(vm.tmp, "agent.sock")
	appendLine := "console=ttyS0 quiet panic=-1 oops=panic rdinit=/init tsc=reliable no_timer_check " +
		"i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd nokaslr mitigations=off " + o.Append
	args := []string{
		"-accel", "tcg", "-cpu", "max", "-m", strconv.Itoa(o.MemoryMB), "-smp", "1",
		"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
		"-serial", "stdio", "-monitor", "none",
		"-kernel", img.Kernel, "-initrd", img.Initrd, "-append", strings.TrimSpace(appendLine),
		"-netdev", "tap,id=n0,ifname=" + o.TapName + ",script=no,downscript=no,vnet_hdr=off",
		"-device", "virtio-net-pci,netdev=n0,mac=" + o.GuestMAC + ",romfile=",
		"-device", "virtio-serial-pci,id=vs0",
		"-chardev", "socket,id=agent,path=" + sock + ",server=on,wait=off",
		"-device", "virtserialport,bus=vs0.0,chardev=agent,name=" + proto.PortName,
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	vm.cmd = exec.Command("qemu-system-x86_64", args...)
	vm.cmd.Stdout, vm.cmd.Stderr = log, log
	vm.cmd.Stdin = nil
	// qemu dies with the test process (Pdeathsig), and only then:
	// pdeath forks it on a thread that lives as long as qemu, since the
	// signal follows the forking thread and our namespace helpers end
	// theirs.
	start := time.Now()
	waitc, err := pdeath.Start(vm.cmd)
	if err != nil {
		vm.Close()
		return nil, fmt.Errorf("linuxvm: qemu: %w", err)
	}
	go func() {
		vm.exitErr = <-waitc
		close(vm.exited)
	}()
	bootCtx, cancel := context.WithTimeout(ctx, o.BootTimeout)
	defer cancel()
	if err := vm.connect(bootCtx, sock); err != nil {
		vm.Close()
		return nil, err
	}
	if _, err := vm.call(bootCtx, proto.Request{Op: "hello"}); err != nil {
		vm.Close()
		return nil, fmt.Errorf("linuxvm: waiting for the agent: %w", err)
	}
	vm.BootTime = time.Since(start)
	return vm, nil
}

// freeTapName returns an unused interface name derived from the pid.
func freeTapName() string {
	for i := 0; ; i++ {
		name := fmt.Sprintf("ipsvm%d", (os.Getpid()*7+i)%100000)
		if _, err := net.InterfaceByName(name); err != nil {
			return name
		}
	}
}

// setupTap creates the TAP if missing and configures the host side: up,
// IPv6 off, IPv4 forwarding off, no addresses.
func setupTap(name string) (created bool, err error) {
	if _, err := net.InterfaceByName(name); err != nil {
		if out, err := exec.Command("ip", "tuntap", "add", "dev", name, "mode", "tap").CombinedOutput(); err != nil {
			return false, fmt.Errorf("linuxvm: ip tuntap add %s: %v: %s", name, err, tail(out))
		}
		created = true
	}
	fail := func(err error) (bool, error) {
		if created {
			exec.Command("ip", "link", "del", name).Run()
		}
		return false, err
	}
	for _, kv := range [][2]string{
		{"/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6", "1"},
		{"/proc/sys/net/ipv4/conf/" + name + "/forwarding", "0"},
	} {
		if err := os.WriteFile(kv[0], []byte(kv[1]), 0o644); err != nil {
			return fail(fmt.Errorf("linuxvm: %s: %w", kv[0], err))
		}
	}
	for _, a := range [][]string{
		{"addr", "flush", "dev", name},
		{"link", "set", name, "up"},
	} {
		if out, err := exec.Command("ip", a...).CombinedOutput(); err != nil {
			return fail(fmt.Errorf("linuxvm: ip %s: %v: %s", strings.Join(a, " "), err, tail(out)))
		}
	}
	return created, nil
}

func (vm *VM) connect(ctx context.Context, sock string) error {
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			vm.conn = c
			go vm.readLoop()
			return nil
		}
		select {
		case <-vm.exited:
			return fmt.Errorf("linuxvm: qemu exited: %v", vm.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("linuxvm: connecting to the agent socket: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (vm *VM) readLoop() {
	sc := bufio.NewScanner(vm.conn)
	sc.Buffer(make([]byte, 1<<16), 64<<20)
	for sc.Scan() {
		var r proto.Response
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		vm.mu.Lock()
		ch := vm.pending[r.ID]
		delete(vm.pending, r.ID)
		vm.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
	vm.mu.Lock()
	vm.readErr = sc.Err()
	if vm.readErr == nil {
		vm.readErr = io.EOF
	}
	for id, ch := range vm.pending {
		close(ch)
		delete(vm.pending, id)
	}
	vm.mu.Unlock()
}

func (vm *VM) call(ctx context.Context, req proto.Request) (proto.Response, error) {
	ch := make(chan proto.Response, 1)
	vm.mu.Lock()
	if vm.readErr != nil {
		err := vm.readErr
		vm.mu.Unlock()
		return proto.Response{}, fmt.Errorf("linuxvm: control channel: %w", err)
	}
	vm.nextID++
	req.ID = vm.nextID
	vm.pending[req.ID] = ch
	vm.mu.Unlock()
	if dl, ok := ctx.Deadline(); ok && req.Op == "exec" {
		req.TimeoutMs = max(1, time.Until(dl).Milliseconds())
	}
	b, _ := json.Marshal(req)
	vm.wmu.Lock()
	_, err := vm.conn.Write(append(b, '\n'))
	vm.wmu.Unlock()
	if err != nil {
		return proto.Response{}, fmt.Errorf("linuxvm: control channel: %w", err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return proto.Response{}, fmt.Errorf("linuxvm: control channel closed (guest died?)")
		}
		return r, nil
	case <-vm.exited:
		return proto.Response{}, fmt.Errorf("linuxvm: qemu exited: %v", vm.exitErr)
	case <-ctx.Done():
		vm.mu.Lock()
		delete(vm.pending, req.ID)
		vm.mu.Unlock()
		return proto.Response{}, ctx.Err()
	}
}

// Exec runs cmd with /bin/sh -c in the guest. The context's deadline, if
// any, is also enforced in the guest (the command's process group is
// killed).
func (vm *VM) Exec(ctx context.Context, cmd string) (Result, error) {
	r, err := vm.call(ctx, proto.Request{Op: "exec", Cmd: cmd})
	if err != nil {
		return Result{}, err
	}
	res := Result{Stdout: r.Stdout, Stderr: r.Stderr, Exit: r.Exit}
	if r.Err != "" {
		return res, fmt.Errorf("linuxvm: %q: %s", short(cmd), r.Err)
	}
	return res, nil
}

// Run runs cmd in the guest and returns its standard output and exit
// status; err is for failures to run it at all (stderr is lost: use Exec
// or Sh to see it).
func (vm *VM) Run(ctx context.Context, cmd string) (stdout string, exit int, err error) {
	r, err := vm.Exec(ctx, cmd)
	return r.Stdout, r.Exit, err
}

// Sh runs cmd and returns its standard output, or an error carrying its
// exit status and standard error when it fails.
func (vm *VM) Sh(ctx context.Context, cmd string) (string, error) {
	r, err := vm.Exec(ctx, cmd)
	if err != nil {
		return r.Stdout, err
	}
	if r.Exit != 0 {
		return r.Stdout, fmt.Errorf("guest: %q: exit %d: %s%s", short(cmd), r.Exit, strings.TrimSpace(r.Stderr), stdoutHint(r.Stdout))
	}
	return r.Stdout, nil
}

// PFKey sends PF_KEY v2 messages on one AF_KEY socket in the guest (the
// agent's "pfkey" op) and returns, for each, the messages the kernel sent
// back before the next was sent: up to and including the reply of the same
// type (for SADB_DUMP and SADB_X_SPDDUMP, the whole dump, whose last message
// has sadb_msg_seq 0), or an error reply. A message the kernel refuses
// without a reply (a bad sadb_msg) is an error.
func (vm *VM) PFKey(ctx context.Context, msgs ...[]byte) ([][][]byte, error) {
	req := proto.Request{Op: "pfkey"}
	for _, m := range msgs {
		req.Msgs = append(req.Msgs, hex.EncodeToString(m))
	}
	r, err := vm.call(ctx, req)
	if err != nil {
		return nil, err
	}
	out := make([][][]byte, len(msgs))
	for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			return out, fmt.Errorf("linuxvm: pfkey: %s", line[1:])
		}
		i, h, ok := strings.Cut(line, " ")
		n, err1 := strconv.Atoi(i)
		b, err2 := hex.DecodeString(h)
		if !ok || err1 != nil || err2 != nil || n < 0 || n >= len(msgs) {
			return out, fmt.Errorf("linuxvm: pfkey: bad reply line %q", line)
		}
		out[n] = append(out[n], b)
	}
	if r.Err != "" {
		return out, fmt.Errorf("linuxvm: pfkey: %s", r.Err)
	}
	return out, nil
}

// short abbreviates a command for error messages.
func short(cmd string) string {
	cmd = strings.TrimSpace(cmd)
	if i := strings.IndexByte(cmd, '\n'); i >= 0 {
		cmd = cmd[:i] + " …"
	}
	if len(cmd) > 160 {
		cmd = cmd[:160] + "…"
	}
	return cmd
}

func stdoutHint(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return " (stdout: " + tail([]byte(s)) + ")"
}

// ReadFile returns a guest file's content.
func (vm *VM) ReadFile(ctx context.Context, path string) (string, error) {
	r, err := vm.call(ctx, proto.Request{Op: "read", Path: path})
	if err != nil {
		return "", err
	}
	if r.Err != "" {
		return "", fmt.Errorf("guest: read %s: %s", path, r.Err)
	}
	return r.Stdout, nil
}

// XfrmStats returns the guest kernel's /proc/net/xfrm_stat counters
// (XfrmInError, XfrmInStateSeqError, ...).
func (vm *VM) XfrmStats() (map[string]uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := vm.ReadFile(ctx, "/proc/net/xfrm_stat")
	if err != nil {
		return nil, err
	}
	return ParseXfrmStat(s)
}

// ParseXfrmStat parses /proc/net/xfrm_stat ("Name<spaces>value" lines).
func ParseXfrmStat(s string) (map[string]uint64, error) {
	m := map[string]uint64{}
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("xfrm_stat line %q: %w", l, err)
		}
		m[f[0]] = v
	}
	if len(m) == 0 {
		return nil, errors.New("xfrm_stat: no counters")
	}
	return m, nil
}

// ESPInUDP opens (or with open false closes) the guest agent's UDP
// sockets on NATTPort, one per family, with UDP_ENCAP_ESPINUDP and
// per-socket bypass policies, as an IKE daemon holds them: Linux
// decapsulates ESP in UDP only on such a socket, and checks the socket's
// inbound policy first (without the bypass, a transport-mode policy
// between the hosts drops the ESP-in-UDP datagram itself,
// XfrmInTmplMismatch). The per-socket policies appear in the kernel's SPD
// dumps while the sockets are open.
func (vm *VM) ESPInUDP(ctx context.Context, open bool) error {
	what := "close"
	if open {
		what = "open"
	}
	r, err := vm.call(ctx, proto.Request{Op: "espinudp", Cmd: what})
	if err != nil {
		return err
	}
	if r.Err != "" {
		return fmt.Errorf("guest: espinudp %s: %s", what, r.Err)
	}
	return nil
}

// Reset flushes the guest's SAD and SPD (ip xfrm state/policy flush).
func (vm *VM) Reset(ctx context.Context) error {
	_, err := vm.Sh(ctx, "ip xfrm state flush && ip xfrm policy flush")
	return err
}

// Close stops qemu, deletes the TAP if Start created it and removes the
// temporary files.
func (vm *VM) Close() error {
	vm.closeOnce.Do(func() {
		if vm.conn != nil {
			vm.conn.Close()
		}
		if vm.cmd != nil && vm.cmd.Process != nil {
			vm.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-vm.exited:
			case <-time.After(5 * time.Second):
				vm.cmd.Process.Kill()
				<-vm.exited
			}
		}
		if vm.ownTap {
			exec.Command("ip", "link", "del", vm.TapName).Run()
		}
		if vm.tmp != "" {
			os.RemoveAll(vm.tmp)
		}
	})
	return nil
}

// Exited is closed when qemu has exited.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }
