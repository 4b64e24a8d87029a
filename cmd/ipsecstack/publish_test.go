package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/ipsecstack/ipsecstack/stack"
)

func TestParsePublishDiscardFlags(t *testing.T) {
	const base = "--link tap:x --addr 192.0.2.1/24 "
	c, err := parseRunFlags(strings.Fields(base+"--discard tcp:9 --discard udp:9 --echo tcp:7 "+
		"--publish tcp:80=127.0.0.1:8080 --publish udp:53=[::1]:5353 --publish tcp:443=[::ffff:10.0.0.1]:443"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Discard) != 2 || c.Discard[0] != (echoSpec{"tcp", 9}) || c.Discard[1] != (echoSpec{"udp", 9}) {
		t.Errorf("discard: %+v", c.Discard)
	}
	want := []publishSpec{{"tcp", 80, "127.0.0.1:8080"}, {"udp", 53, "[::1]:5353"}, {"tcp", 443, "10.0.0.1:443"}}
	if len(c.Publish) != len(want) {
		t.Fatalf("publish: %+v", c.Publish)
	}
	for i := range want {
		if c.Publish[i] != want[i] {
			t.Errorf("publish %d: %+v, want %+v", i, c.Publish[i], want[i])
		}
	}

	for _, tc := range []struct{ args, want string }{
		{"--discard tcp:0", `--discard "tcp:0": want tcp:PORT or udp:PORT`},
		{"--discard sctp:9", `--discard "sctp:9": want tcp:PORT or udp:PORT`},
		{"--discard 9", `--discard "9": want tcp:PORT or udp:PORT`},
		{"--discard tcp:9 --discard tcp:9", `--discard "tcp:9" given twice`},
		{"--echo tcp:7 --discard tcp:7", `--discard "tcp:7": stack port tcp:7 is already taken by --echo "tcp:7"`},
		{"--discard udp:9 --publish udp:9=127.0.0.1:9", `--publish "udp:9=127.0.0.1:9": stack port udp:9 is already taken by --discard "udp:9"`},
		{"--publish tcp:80", `--publish "tcp:80": missing =HOSTADDR:PORT`},
		{"--publish 80=127.0.0.1:80", `--publish "80=127.0.0.1:80": want tcp:STACKPORT=HOSTADDR:PORT`},
		{"--publish tcp:0=127.0.0.1:80", `--publish "tcp:0=127.0.0.1:80": stack port "0": want 1-65535`},
		{"--publish tcp:70000=127.0.0.1:80", `stack port "70000": want 1-65535`},
		{"--publish tcp:80=127.0.0.1", `host address "127.0.0.1": want ADDR:PORT`},
		{"--publish tcp:80=localhost:80", `host address "localhost:80": want ADDR:PORT`},
		{"--publish tcp:80=127.0.0.1:0", `host address "127.0.0.1:0": want ADDR:PORT`},
		{"--publish tcp:80=[fe80::1%eth0]:80", `want ADDR:PORT`},
		{"--publish tcp:80=0.0.0.0:80", `host address "0.0.0.0:80" is not a unicast address`},
		{"--publish udp:80=[ff02::1]:80", `is not a unicast address`},
		{"--publish tcp:80=127.0.0.1:80 --publish tcp:80=127.0.0.1:81", `stack port tcp:80 is already taken by --publish "tcp:80=127.0.0.1:80"`},
	} {
		_, err := parseRunFlags(strings.Fields(base+tc.args), io.Discard)
		if !errors.Is(err, errUsage) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a one-line usage error with %q", tc.args, err, tc.want)
		}
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// hostTCPEcho is a host TCP echo server (the published program) that
// counts its connections.
func hostTCPEcho(t *testing.T) (string, chan struct{}) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan struct{}, 100)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return l.Addr().String(), accepted
}

// TestPublishTCP: stack A reaches a host echo server published on stack
// B's port 80; 1 MiB comes back unchanged, and the half-close passes
// through (A's CloseWrite reaches the host program, whose EOF comes back).
// Past --forward-max-sessions a connection is closed at once and counted.
func TestPublishTCP(t *testing.T) {
	p := forwardPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	host, accepted := hostTCPEcho(t)
	var stats forwardStats
	stop, err := startPublish(ctx, p.B, publishSpec{"tcp", 80, host}, forwardLimits{MaxSessions: 1, Idle: time.Minute}, &stats, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	dial := func() *gonet.TCPConn {
		t.Helper()
		dctx, c := context.WithTimeout(ctx, 5*time.Second)
		defer c()
		conn, err := gonet.DialContextTCP(dctx, p.A.Stack, p.A.FullAddress(p.AddrB, 80), stack.Proto(p.AddrB))
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	c := dial()
	defer c.Close()
	data := make([]byte, 1<<20)
	rand.Read(data)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		c.Write(data)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo through --publish: %d of %d bytes, equal %v, err %v", len(got), len(data), bytes.Equal(got, data), err)
	}
	<-accepted

	// A connection held open takes the one session; a second one is
	// past the limit.
	c1 := dial()
	defer c1.Close()
	c1.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c1.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c1, make([]byte, 1)); err != nil {
		t.Fatalf("held connection: %v", err)
	}
	<-accepted
	c2 := dial()
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); err == nil {
		t.Errorf("connection past the limit read %d bytes", n)
	}
	if !waitFor(2*time.Second, func() bool { return stats.TCPRefused.Load() == 1 }) {
		t.Errorf("refused %d, want 1", stats.TCPRefused.Load())
	}
	select {
	case <-accepted:
		t.Error("a connection past the limit reached the host program")
	default:
	}
}

// TestPublishTCPHostDown: with nothing listening on the host, a stack
// client's connection is closed (the relay's dial fails), and stopping
// the relay leaves nothing running.
func TestPublishTCPHostDown(t *testing.T) {
	p := forwardPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	host := l.Addr().String()
	l.Close()
	stop, err := startPublish(ctx, p.B, publishSpec{"tcp", 80, host}, forwardLimits{MaxSessions: 4, Idle: time.Minute}, &forwardStats{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	c, err := gonet.DialContextTCP(ctx, p.A.Stack, p.A.FullAddress(p.AddrB, 80), stack.Proto(p.AddrB))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("read: %v, want the connection closed", err)
	}
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("stop hangs")
	}
}

// TestPublishUDP: two stack clients reach a host UDP echo server published
// on stack B, each getting its own answers (one host socket per client);
// with a limit of 2 sessions a third client, both others answered, is
// refused.
func TestPublishUDP(t *testing.T) {
	p := forwardPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	sources := map[string]bool{}
	srcs := make(chan string, 10)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			srcs <- from.String()
			pc.WriteTo(buf[:n], from)
		}
	}()
	var stats forwardStats
	stop, err := startPublish(ctx, p.B, publishSpec{"udp", 53, pc.LocalAddr().String()}, forwardLimits{MaxSessions: 2, Idle: time.Minute}, &stats, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	to := p.A.FullAddress(p.AddrB, 53)
	rr := func(c *gonet.UDPConn, msg string, tries int) error {
		buf := make([]byte, 2000)
		for try := 0; try < tries; try++ {
			c.Write([]byte(msg))
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := c.Read(buf)
			if err == nil {
				if string(buf[:n]) != msg {
					return errors.New("wrong answer " + string(buf[:n]))
				}
				return nil
			}
		}
		return errors.New("no answer")
	}
	var conns []*gonet.UDPConn
	for i := 0; i < 3; i++ {
		c, err := gonet.DialUDP(p.A.Stack, nil, &to, stack.Proto(p.AddrB))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for i, c := range conns[:2] {
		msg := strings.Repeat(string(rune('a'+i)), 1400)
		if err := rr(c, msg, 3); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		sources[<-srcs] = true
	}
	if len(sources) != 2 {
		t.Errorf("the host saw %d sources for 2 clients, want one socket each", len(sources))
	}
	if err := rr(conns[2], "third", 1); err == nil {
		t.Error("a third client past the limit of 2 answered sessions got an answer")
	}
	if stats.UDPRefused.Load() == 0 {
		t.Error("nothing counted as refused")
	}
}

// TestDiscard: stack B's --discard tcp swallows 1 MiB and closes after the
// sender's end (so the sender reads EOF, no data); --discard udp answers
// nothing.
func TestDiscard(t *testing.T) {
	p := forwardPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.B.ServeTCPDiscard(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if err := p.B.ServeUDPDiscard(ctx, 9); err != nil {
		t.Fatal(err)
	}
	c, err := gonet.DialContextTCP(ctx, p.A.Stack, p.A.FullAddress(p.AddrB, 9), stack.Proto(p.AddrB))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if n, err := c.Write(make([]byte, 1<<20)); n != 1<<20 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	c.CloseWrite()
	if got, err := io.ReadAll(c); len(got) != 0 || err != nil {
		t.Errorf("discard sent %d bytes back, err %v; want EOF", len(got), err)
	}

	to := p.A.FullAddress(p.AddrB, 9)
	u, err := gonet.DialUDP(p.A.Stack, nil, &to, stack.Proto(p.AddrB))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.Write([]byte("into the void"))
	u.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := u.Read(make([]byte, 100)); !isTimeout(err) {
		t.Errorf("udp discard answered: %d bytes, %v", n, err)
	}
	// The stack's own UDP counters: the datagram was delivered to the
	// discard socket, not refused with a port unreachable.
	if n := p.B.Stack.Stats().UDP.UnknownPortErrors.Value(); n != 0 {
		t.Errorf("UnknownPortErrors %d: the datagram found no socket", n)
	}
}

// TestPublishTCPReset: a stack client that aborts its published
// connection (RST) ends the relay's session, and the relay survives it.
// Before, the relay read the stack connection's remote address for its log
// line after the connection had failed: gVisor then has none (a nil
// net.Addr) and the daemon died of a nil pointer dereference (seen in
// bench --wire as daemon B exiting with status 2 mid-run). A published
// service still answers afterwards.
func TestPublishTCPReset(t *testing.T) {
	p := forwardPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	host, accepted := hostTCPEcho(t)
	stop, err := startPublish(ctx, p.B, publishSpec{"tcp", 80, host}, forwardLimits{MaxSessions: 4, Idle: time.Minute}, &forwardStats{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	// A client endpoint with SO_LINGER 0: Close sends RST.
	var wq waiter.Queue
	ep, terr := p.A.Stack.NewEndpoint(tcp.ProtocolNumber, stack.Proto(p.AddrB), &wq)
	if terr != nil {
		t.Fatal(terr)
	}
	ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	we, ch := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&we)
	if terr := ep.Connect(p.A.FullAddress(p.AddrB, 80)); terr != nil {
		if _, ok := terr.(*tcpip.ErrConnectStarted); !ok {
			t.Fatal(terr)
		}
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("connect: no answer")
		}
	}
	wq.EventUnregister(&we)
	c := gonet.NewTCPConn(&wq, ep)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("echo before the reset: %v", err)
	}
	<-accepted
	c.Close()                          // RST
	time.Sleep(200 * time.Millisecond) // the relay sees the reset, ends the session

	c2, err := gonet.DialContextTCP(ctx, p.A.Stack, p.A.FullAddress(p.AddrB, 80), stack.Proto(p.AddrB))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c2, make([]byte, 1)); err != nil {
		t.Fatalf("echo after the reset: %v", err)
	}
}

// TestPublishTCPIdle: a published connection idle past
// --forward-idle-timeout is closed (the stack client reads EOF) and
// counted.
func TestPublishTCPIdle(t *testing.T) {
	p := forwardPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	host, accepted := hostTCPEcho(t)
	var stats forwardStats
	stop, err := startPublish(ctx, p.B, publishSpec{"tcp", 80, host}, forwardLimits{MaxSessions: 4, Idle: 300 * time.Millisecond}, &stats, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c, err := gonet.DialContextTCP(ctx, p.A.Stack, p.A.FullAddress(p.AddrB, 80), stack.Proto(p.AddrB))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-accepted
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection: read %d, %v; want EOF", n, err)
	}
	if !waitFor(2*time.Second, func() bool { return stats.TCPIdleClosed.Load() == 1 }) {
		t.Errorf("idle-closed %d, want 1", stats.TCPIdleClosed.Load())
	}
}
