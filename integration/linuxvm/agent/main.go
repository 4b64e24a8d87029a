// Command agent is the guest side of linuxvm: a static program that runs as
// a child of the initramfs's /init inside the Linux VM.
//
//	agent serve
//
// finds the virtio-serial port named "ipsecstack.agent", reads JSON requests
// from it (one per line) and answers each with a JSON response line: "exec"
// runs a shell command and returns its output and exit status, "read"
// returns a file's content, "pfkey" sends PF_KEY v2 messages to the
// kernel's af_key and returns its replies. Requests run concurrently. serve
// also starts the peer services the traffic tests use, on every address:
//
//	TCP 7     echo
//	TCP 9000  sink: reads until EOF, answers with the SHA-256 of what it read
//	UDP 7     echo
//
// and, on request ("espinudp" op, Cmd "open" or "close"), UDP 4500 for ESP
// in UDP (RFC 3948): a socket per family with UDP_ENCAP set to
// UDP_ENCAP_ESPINUDP, without which the kernel does not decapsulate what
// arrives for its `encap espinudp` SAs, and with per-socket bypass
// policies (as an IKE daemon's). Only on request: the kernel lists
// per-socket policies in its SPD dumps (PF_KEY SADB_X_SPDDUMP too).
//
// The same binary is a client for the tests the guest initiates:
//
//	agent tcpsend ADDR PORT NBYTES   send NBYTES to a sink, check its SHA-256
//	agent udpsend ADDR PORT SIZE N   send N datagrams of SIZE, check the echoes
//	agent tcpecho ADDR PORT NBYTES   send NBYTES to an echo server, check them
//	agent udpopts ADDR PORT SIZE N   udpsend over IPv6 with a hop-by-hop and a
//	                                 destination options header on every datagram
//	                                 (each with a mutable and an immutable option)
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipsecstack/ipsecstack/integration/linuxvm/proto"
)

// prelude makes `ip` mean iproute2's: busybox ash runs its own applets in
// preference to PATH, and busybox's ip has no xfrm; functions win over
// applets.
const prelude = "ip() { /usr/sbin/ip \"$@\"; }\n"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: agent serve | tcpsend ADDR PORT N | udpsend ADDR PORT SIZE N | tcpecho ADDR PORT N")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve()
	case "tcpsend":
		err = client(os.Args[2:], 3, tcpSend)
	case "tcpecho":
		err = client(os.Args[2:], 3, tcpEcho)
	case "udpsend":
		err = client(os.Args[2:], 4, udpSend)
	case "udpopts":
		err = client(os.Args[2:], 4, udpOpts)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func serve() error {
	if err := startServices(); err != nil {
		fmt.Fprintln(os.Stderr, "agent: services:", err)
	}
	dev, err := findPort(proto.PortName, 60*time.Second)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "agent: serving on", dev)
	var wmu sync.Mutex
	enc := json.NewEncoder(f)
	reply := func(r proto.Response) {
		wmu.Lock()
		defer wmu.Unlock()
		if err := enc.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, "agent: write:", err)
		}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 16<<20)
	for {
		for sc.Scan() {
			var req proto.Request
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				fmt.Fprintln(os.Stderr, "agent: bad request:", err)
				continue
			}
			go func() { reply(handle(req)) }()
		}
		// EOF: the host closed its end; wait for it to come back.
		fmt.Fprintln(os.Stderr, "agent: port read:", sc.Err())
		time.Sleep(200 * time.Millisecond)
		sc = bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<16), 16<<20)
	}
}

func handle(req proto.Request) proto.Response {
	r := proto.Response{ID: req.ID}
	switch req.Op {
	case "hello":
		r.Stdout = "ready"
	case "read":
		b, err := os.ReadFile(req.Path)
		if err != nil {
			r.Exit, r.Err = 1, err.Error()
		}
		r.Stdout = string(b)
	case "espinudp":
		if err := espInUDPOp(req.Cmd); err != nil {
			r.Exit, r.Err = 1, err.Error()
		}
	case "pfkey":
		out, err := pfkey(req.Msgs)
		r.Stdout = out
		if err != nil {
			r.Exit, r.Err = 1, err.Error()
		}
	case "exec":
		ctx := context.Background()
		if req.TimeoutMs > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMs)*time.Millisecond)
			defer cancel()
		}
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", prelude+req.Cmd)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "TERM=dumb"}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		cmd.WaitDelay = time.Second
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		err := cmd.Run()
		r.Stdout, r.Stderr = out.String(), errb.String()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case ctx.Err() != nil:
			r.Exit, r.Err = -1, "timeout"
		case errors.As(err, &ee):
			r.Exit = ee.ExitCode()
		default:
			r.Exit, r.Err = -1, err.Error()
		}
	default:
		r.Exit, r.Err = -1, "unknown op "+req.Op
	}
	return r
}

// pfkey opens a PF_KEY v2 socket, sends each message (hex) and collects
// the kernel's replies until the one answering it: the reply of the same
// type, for SADB_DUMP / SADB_X_SPDDUMP the last of the dump
// (sadb_msg_seq 0), or an error reply. It returns one line per message
// received, "INDEX HEX" (INDEX of the message sent just before), in order,
// and "# INDEX write: ERROR" when the kernel refused a message outright.
func pfkey(msgs []string) (string, error) {
	fd, err := unix.Socket(unix.AF_KEY, unix.SOCK_RAW, 2 /* PF_KEY_V2 */)
	if err != nil {
		return "", fmt.Errorf("socket(AF_KEY): %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return "", err
	}
	var out strings.Builder
	buf := make([]byte, 1<<16)
	for i, h := range msgs {
		m, err := hex.DecodeString(h)
		if err != nil || len(m) < 16 {
			return out.String(), fmt.Errorf("message %d: bad hex or shorter than sadb_msg", i)
		}
		if _, err := unix.Write(fd, m); err != nil {
			// af_key failed without an error reply (a bad sadb_msg).
			fmt.Fprintf(&out, "# %d write: %v\n", i, err)
			continue
		}
		dump := m[1] == 10 || m[1] == 18 // SADB_DUMP, SADB_X_SPDDUMP
		for {
			n, err := unix.Read(fd, buf)
			if err != nil {
				return out.String(), fmt.Errorf("message %d: read: %w", i, err)
			}
			r := buf[:n]
			fmt.Fprintf(&out, "%d %x\n", i, r)
			if n >= 16 && r[1] == m[1] && (!dump || r[2] != 0 || binary.NativeEndian.Uint32(r[8:]) == 0) {
				break
			}
		}
	}
	return out.String(), nil
}

// findPort returns the /dev node of the virtio-serial port called name.
func findPort(name string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		ms, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, m := range ms {
			b, err := os.ReadFile(m)
			if err == nil && strings.TrimSpace(string(b)) == name {
				dev := "/dev/" + filepath.Base(filepath.Dir(m))
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio-serial port named %q", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startServices() error {
	echo, err := net.Listen("tcp", fmt.Sprintf(":%d", proto.EchoPort))
	if err != nil {
		return err
	}
	go acceptLoop(echo, func(c net.Conn) { io.Copy(c, c) })
	sink, err := net.Listen("tcp", fmt.Sprintf(":%d", proto.SinkPort))
	if err != nil {
		return err
	}
	go acceptLoop(sink, func(c net.Conn) {
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		c.Write(h.Sum(nil))
	})
	for _, nw := range []string{"udp4", "udp6"} {
		if err := udpEcho(nw, proto.EchoPort); err != nil {
			return err
		}
	}
	return nil
}

// encapSockets are the open ESP-in-UDP sockets (the "espinudp" op).
var (
	encapMu      sync.Mutex
	encapSockets []net.PacketConn
)

// espInUDPOp opens ("open") the ESP-in-UDP sockets of both families on
// proto.NATTPort, or closes ("close") them.
func espInUDPOp(what string) error {
	encapMu.Lock()
	defer encapMu.Unlock()
	for _, pc := range encapSockets {
		pc.Close()
	}
	encapSockets = nil
	switch what {
	case "close":
		return nil
	case "open":
		for _, nw := range []string{"udp4", "udp6"} {
			if err := espInUDP(nw, proto.NATTPort); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("espinudp: want open or close, not %q", what)
}

// espInUDP opens the UDP socket Linux needs to receive ESP in UDP on port:
// the kernel decapsulates only datagrams arriving on a socket with
// UDP_ENCAP_ESPINUDP (what IKE daemons open on 4500; net/ipv4/udp.c,
// net/ipv6/udp.c). Nothing reads it: ESP never reaches the socket queue.
func espInUDP(network string, port int) error {
	pc, err := net.ListenPacket(network, fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	rc, err := pc.(*net.UDPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_ENCAP, unix.UDP_ENCAP_ESPINUDP); serr != nil {
			serr = fmt.Errorf("setsockopt UDP_ENCAP: %w", serr)
			return
		}
		serr = bypassPolicies(int(fd), network == "udp6")
	})
	if serr != nil {
		pc.Close()
		return fmt.Errorf("%s :%d: %w", network, port, serr)
	}
	encapSockets = append(encapSockets, pc)
	return nil
}

// bypassPolicies gives the socket per-socket xfrm policies that let its
// traffic pass in both directions, as IKE daemons do for their 4500
// sockets (strongSwan's bypass_socket): the UDP layer checks the inbound
// policy before it hands a datagram to the encapsulation handler, and
// with a transport-mode policy between the two hosts the ESP-in-UDP
// datagram itself would otherwise fail it (XfrmInTmplMismatch) and never
// be decapsulated. The option value is struct xfrm_userpolicy_info
// (include/uapi/linux/xfrm.h, 168 bytes on 64-bit), all zero but the
// selector's family and the direction: action 0 is XFRM_POLICY_ALLOW, an
// empty selector matches everything.
func bypassPolicies(fd int, v6 bool) error {
	level, opt, family := unix.IPPROTO_IP, unix.IP_XFRM_POLICY, uint16(unix.AF_INET)
	if v6 {
		level, opt, family = unix.IPPROTO_IPV6, unix.IPV6_XFRM_POLICY, unix.AF_INET6
	}
	const (
		size      = 168 // sizeof(struct xfrm_userpolicy_info)
		offFamily = 40  // sel.family, after daddr, saddr and the ports
		offDir    = 160 // after sel (56), lft (64), curlft (32), priority, index
	)
	for _, dir := range []byte{0, 1} { // XFRM_POLICY_IN, XFRM_POLICY_OUT
		var p [size]byte
		binary.NativeEndian.PutUint16(p[offFamily:], family)
		p[offDir] = dir
		if err := unix.SetsockoptString(fd, level, opt, string(p[:])); err != nil {
			return fmt.Errorf("setsockopt XFRM_POLICY (bypass, dir %d): %w", dir, err)
		}
	}
	return nil
}

// udpEcho serves UDP echo on one family, answering from the address each
// datagram was sent to (IP_PKTINFO / IPV6_PKTINFO): with several addresses
// (tunnel inner and outer) the routing table's choice of source would be
// wrong and the peer would not recognise the reply.
func udpEcho(network string, port int) error {
	pc, err := net.ListenPacket(network, fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	c := pc.(*net.UDPConn)
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	rc.Control(func(fd uintptr) {
		if network == "udp4" {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}
	})
	if serr != nil {
		return serr
	}
	go func() {
		buf := make([]byte, 65536)
		oob := make([]byte, 512)
		for {
			n, oobn, _, from, err := c.ReadMsgUDP(buf, oob)
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			var reply []byte
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				switch {
				case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= 12:
					var pi unix.Inet4Pktinfo
					copy(pi.Spec_dst[:], m.Data[8:12]) // reply from the datagram's destination
					reply = unix.PktInfo4(&pi)
				case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= 16:
					var pi unix.Inet6Pktinfo
					copy(pi.Addr[:], m.Data[:16])
					reply = unix.PktInfo6(&pi)
				}
			}
			c.WriteMsgUDP(buf[:n], reply, from)
		}
	}()
	return nil
}

func acceptLoop(l net.Listener, fn func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			fn(c)
		}()
	}
}

// client parses ADDR PORT and n-2 integers and runs fn.
func client(args []string, n int, fn func(addr string, nums []int) error) error {
	if len(args) != n {
		return fmt.Errorf("want %d arguments, got %d", n, len(args))
	}
	var nums []int
	for _, a := range args[1:] {
		v, err := strconv.Atoi(a)
		if err != nil {
			return err
		}
		nums = append(nums, v)
	}
	addr := net.JoinHostPort(args[0], strconv.Itoa(nums[0]))
	return fn(addr, nums[1:])
}

func fill(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

func tcpSend(addr string, nums []int) error {
	n := nums[0]
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	rng := rand.New(rand.NewPCG(uint64(n), 11))
	h := sha256.New()
	buf := make([]byte, 64<<10)
	start := time.Now()
	for left := n; left > 0; {
		m := min(left, len(buf))
		fill(rng, buf[:m])
		h.Write(buf[:m])
		if _, err := c.Write(buf[:m]); err != nil {
			return fmt.Errorf("write after %d bytes: %w", n-left, err)
		}
		left -= m
	}
	c.(*net.TCPConn).CloseWrite()
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, sum); err != nil {
		return fmt.Errorf("read digest: %w", err)
	}
	if !bytes.Equal(sum, h.Sum(nil)) {
		return fmt.Errorf("sha256 mismatch: sink saw different content")
	}
	el := time.Since(start)
	fmt.Printf("tcpsend %d bytes in %v (%.0f KB/s)\n", n, el.Round(time.Millisecond), float64(n)/el.Seconds()/1e3)
	return nil
}

func tcpEcho(addr string, nums []int) error {
	n := nums[0]
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	msg := make([]byte, n)
	fill(rand.New(rand.NewPCG(uint64(n), 13)), msg)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if err := <-errc; err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo differs")
	}
	fmt.Printf("tcpecho %d bytes ok\n", n)
	return nil
}

func udpSend(addr string, nums []int) error {
	size, count := nums[0], nums[1]
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := udpEchoLoop(c, size, count); err != nil {
		return err
	}
	fmt.Printf("udpsend %d x %d bytes ok\n", count, size)
	return nil
}

// extOpts is a hop-by-hop or destination options header body for the
// IPV6_HOPOPTS / IPV6_DSTOPTS ancillary data: 16 bytes with an immutable
// option (type 0x1e: skip if unknown, may not change en route) and a
// mutable one (0x3e: the change bit set, so AH covers it as zeros), padded
// with PadN. The kernel fills in the next header byte.
func extOpts(tag byte) []byte {
	return []byte{
		0, 1, // next header (set by the kernel), length 1 = 16 bytes
		0x1e, 2, tag, 0xbb, // immutable
		0x3e, 4, 0xcc, 0xdd, 0xee, tag, // mutable
		1, 2, 0, 0, // PadN
	}
}

// udpOpts is udpsend over IPv6 with a hop-by-hop and a destination
// options header on every datagram (sticky options on the socket).
func udpOpts(addr string, nums []int) error {
	size, count := nums[0], nums[1]
	c, err := net.Dial("udp6", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	rc, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	rc.Control(func(fd uintptr) {
		hop, dst := extOpts(0xa1), extOpts(0xa2)
		if serr = setsockoptBytes(int(fd), unix.IPPROTO_IPV6, unix.IPV6_HOPOPTS, hop); serr != nil {
			serr = fmt.Errorf("IPV6_HOPOPTS: %w", serr)
			return
		}
		if serr = setsockoptBytes(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, dst); serr != nil {
			serr = fmt.Errorf("IPV6_DSTOPTS: %w", serr)
		}
	})
	if serr != nil {
		return serr
	}
	if err := udpEchoLoop(c, size, count); err != nil {
		return err
	}
	fmt.Printf("udpopts %d x %d bytes ok (hop-by-hop + destination options)\n", count, size)
	return nil
}

func setsockoptBytes(fd, level, opt int, b []byte) error {
	return unix.SetsockoptString(fd, level, opt, string(b))
}

// udpEchoLoop sends count datagrams of size bytes on c and checks that
// each comes back intact, retrying each a few times.
func udpEchoLoop(c net.Conn, size, count int) error {
	got := make([]byte, 65536)
	for i := 0; i < count; i++ {
		msg := make([]byte, size)
		for j := range msg {
			msg[j] = byte(j*5 + i + size)
		}
		ok := false
		for try := 0; try < 5 && !ok; try++ {
			if _, err := c.Write(msg); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(got)
			if err != nil {
				continue
			}
			if !bytes.Equal(got[:n], msg) {
				return fmt.Errorf("datagram %d: echo differs (%d bytes back)", i, n)
			}
			ok = true
		}
		if !ok {
			return fmt.Errorf("datagram %d of %d bytes: no echo after 5 tries", i, size)
		}
	}
	return nil
}
