package hoststack

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPublishDiscard: two daemons over AF_PACKET on a veth, ESP transport
// (IPv4 AES-CBC+HMAC-SHA-256, IPv6 AES-GCM). A host program in B's
// namespace (TCP and UDP echo on 127.0.0.1) is published inside B's stack
// (--publish); a host program in A's namespace reaches it through A's
// --forward, over ESP, for both families: the published service answers.
// B's --discard tcp swallows 1 MiB and closes; nothing counts a drop.
func TestPublishDiscard(t *testing.T) {
	require(t)
	dir := t.TempDir()
	nsA, nsB := newNS(t), newNS(t)
	va, vb := uniq("hpa"), uniq("hpb")
	vethPair(t, nsA, va, nsB, vb)

	// The published host programs, in B's namespace.
	var ln net.Listener
	var pc net.PacketConn
	if err := nsB.do(func() error {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer pc.Close()
	accepted := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c.RemoteAddr().String()
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()

	base := func(me, peer side, link string) []string {
		conf := filepath.Join(dir, me.name+".conf")
		if err := os.WriteFile(conf, []byte(setkeyFile(me, peer, false)), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"--link", "afpacket:" + link, "--addr", me.outer4 + "/24", "--addr", me.outer6 + "/64", "--setkey", conf}
	}
	argsA := base(sideA, sideB, va)
	for _, f := range []int{4, 6} {
		peer := sideB.addr(false, f)
		argsA = append(argsA,
			"--forward", fmt.Sprintf("tcp:127.0.0.1:%d=%s", 7400+f, net.JoinHostPort(peer, "80")),
			"--forward", fmt.Sprintf("udp:127.0.0.1:%d=%s", 7400+f, net.JoinHostPort(peer, "53")),
			"--forward", fmt.Sprintf("tcp:127.0.0.1:%d=%s", 7410+f, net.JoinHostPort(peer, "9")))
	}
	argsB := append(base(sideB, sideA, vb),
		"--publish", "tcp:80="+ln.Addr().String(), "--publish", "udp:53="+pc.LocalAddr().String(),
		"--discard", "tcp:9", "--discard", "udp:9")
	dA := startDaemon(t, "A", nsA, dir, argsA...)
	dB := startDaemon(t, "B", nsB, dir, argsB...)

	for _, f := range []int{4, 6} {
		laddr := fmt.Sprintf("127.0.0.1:%d", 7400+f)
		if err := tcpEcho(nsA, laddr, 256<<10); err != nil {
			t.Fatalf("IPv%d: A's host -> A --forward -> ESP -> B --publish tcp:80 -> B's host echo: %v", f, err)
		}
		// The published program sees the relay in B's namespace, not
		// A's address: the relay dials it from the host side.
		if from := <-accepted; !strings.HasPrefix(from, "127.0.0.1:") {
			t.Errorf("IPv%d: published program accepted a connection from %s, want 127.0.0.1", f, from)
		}
		for _, size := range []int{64, 1400} {
			if err := udpEcho(nsA, laddr, size); err != nil {
				t.Fatalf("IPv%d: UDP %d bytes via --publish udp:53: %v", f, size, err)
			}
		}
		if err := discard(nsA, fmt.Sprintf("127.0.0.1:%d", 7410+f), 1<<20); err != nil {
			t.Fatalf("IPv%d: --discard tcp:9 via --forward: %v", f, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, d := range []*daemon{dA, dB} {
		checkStatsClean(t, ctx, d)
	}
	dA.stop(t, syscall.SIGTERM)
	dB.stop(t, syscall.SIGTERM)
}

// discard sends n bytes to addr, half-closes and wants EOF with no data
// back: the sink read everything and closed.
func discard(ns *netns, addr string, n int) error {
	c, err := ns.dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(make([]byte, n)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || len(got) != 0 {
		return fmt.Errorf("after sending %d bytes: read %d bytes back, err %v; want EOF", n, len(got), err)
	}
	return nil
}
