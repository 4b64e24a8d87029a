package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// The --wire benchmark's traffic programs are this binary run again as
// `bench wire-helper server|client` inside a namespace (ip netns exec):
// separate processes, so their CPU time is read from /proc like every
// other contender's, and they stay up across rounds so that process
// start-up is never measured.
//
//	server TCPADDR UDPADDR   TCP sink (each connection read to its end,
//	                         then closed) and UDP echo; prints "ready"
//	client                   reads commands on stdin, answers one line:
//	  tcp ADDR BYTES SRC     sends BYTES, half-closes, waits for the
//	                         sink's close: "ok SECONDS RETRANS" (RETRANS:
//	                         Tcp RetransSegs of /proc/net/snmp, this
//	                         namespace, during the transfer)
//	  rr ADDR SIZE SECONDS SRC  UDP request/response, one in flight:
//	                         "ok TRANSACTIONS SECONDS LOST"
//	  (SRC "-": the kernel's choice of source address)
const wireHelperArg = "wire-helper"

// wireHelperBuf is the helpers' read and write size.
const wireHelperBuf = 256 << 10

func wireHelper(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "wire-helper: want server or client")
		return 2
	}
	var err error
	switch args[0] {
	case "server":
		if len(args) != 3 {
			err = errors.New("server TCPADDR UDPADDR")
			break
		}
		err = helperServer(args[1], args[2])
	case "client":
		err = helperClient(os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown mode %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wire-helper:", err)
		return 1
	}
	return 0
}

func helperServer(tcpAddr, udpAddr string) error {
	ln, err := net.Listen("tcp", tcpAddr)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", udpAddr)
	if err != nil {
		return err
	}
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
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			buf := make([]byte, wireHelperBuf)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
	}
}

func helperClient(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var reply string
		var err error
		switch {
		case len(f) == 4 && f[0] == "tcp":
			var n int64
			if n, err = strconv.ParseInt(f[2], 10, 64); err == nil {
				reply, err = helperTCP(f[1], n, f[3])
			}
		case len(f) == 5 && f[0] == "rr":
			var size int
			var secs float64
			size, err = strconv.Atoi(f[2])
			if err == nil {
				secs, err = strconv.ParseFloat(f[3], 64)
			}
			if err == nil {
				reply, err = helperRR(f[1], size, time.Duration(secs*float64(time.Second)), f[4])
			}
		default:
			err = fmt.Errorf("bad command %q", sc.Text())
		}
		if err != nil {
			reply = "err " + strings.ReplaceAll(err.Error(), "\n", " ")
		}
		if _, err := fmt.Fprintln(out, reply); err != nil {
			return err
		}
	}
	return sc.Err()
}

func dialer(src, network string) *net.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if src != "-" {
		ip := net.ParseIP(src)
		if network == "tcp" {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		} else {
			d.LocalAddr = &net.UDPAddr{IP: ip}
		}
	}
	return d
}

func helperTCP(addr string, n int64, src string) (string, error) {
	r0 := tcpRetransSegs()
	start := time.Now()
	c, err := dialer(src, "tcp").Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// A generous bound: 2 MB/s is far below every contender.
	c.SetDeadline(start.Add(30*time.Second + time.Duration(n/2e6)*time.Second))
	buf := make([]byte, wireHelperBuf)
	for left := n; left > 0; {
		k := int64(len(buf))
		if left < k {
			k = left
		}
		w, err := c.Write(buf[:k])
		left -= int64(w)
		if err != nil {
			return "", fmt.Errorf("write after %d of %d bytes: %w", n-left, n, err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	// The sink closes once it has read everything: delivery, not just
	// the send buffer, is timed.
	if _, err := io.Copy(io.Discard, c); err != nil {
		return "", fmt.Errorf("waiting for the sink to close: %w", err)
	}
	secs := time.Since(start).Seconds()
	return fmt.Sprintf("ok %.6f %d", secs, tcpRetransSegs()-r0), nil
}

func helperRR(addr string, size int, d time.Duration, src string) (string, error) {
	c, err := dialer(src, "udp").Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	req := make([]byte, size)
	resp := make([]byte, 65536)
	var n, lost uint64
	start := time.Now()
	end := start.Add(d)
	for seq := uint64(0); time.Now().Before(end); seq++ {
		for i := 0; i < 8 && i < size; i++ {
			req[i] = byte(seq >> (8 * i))
		}
		if _, err := c.Write(req); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			k, err := c.Read(resp)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					lost++
					break
				}
				return "", err
			}
			if k == size && string(resp[:min(8, size)]) == string(req[:min(8, size)]) {
				n++
				break
			}
			// A late answer to an earlier request: keep waiting.
		}
	}
	return fmt.Sprintf("ok %d %.6f %d", n, time.Since(start).Seconds(), lost), nil
}

// tcpRetransSegs reads Tcp: RetransSegs from /proc/net/snmp (this
// process's network namespace).
func tcpRetransSegs() uint64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	return snmpField(string(b), "Tcp:", "RetransSegs")
}

// snmpField finds a counter in /proc/net/snmp's format: a header line
// and a value line per protocol.
func snmpField(s, proto, name string) uint64 {
	lines := strings.Split(s, "\n")
	for i := 0; i+1 < len(lines); i++ {
		h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(h) == 0 || h[0] != proto || len(v) != len(h) || v[0] != proto {
			continue
		}
		for j := range h {
			if h[j] == name {
				x, _ := strconv.ParseUint(v[j], 10, 64)
				return x
			}
		}
	}
	return 0
}
