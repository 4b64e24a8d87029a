package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// sinkPort is the benchmark's discard sink: it reads everything and
// answers with the byte count (no hashing, so the sink costs the same on
// every contender and little).
const sinkPort = 9100

type listener interface {
	Accept() (net.Conn, error)
	Close() error
}

func serveDiscard(ctx context.Context, l listener) {
	go func() { <-ctx.Done(); l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				var n uint64
				for {
					k, err := c.Read(buf)
					n += uint64(k)
					if err != nil {
						break
					}
				}
				var b [8]byte
				binary.BigEndian.PutUint64(b[:], n)
				c.Write(b[:])
			}()
		}
	}()
}

type tcpConn interface {
	net.Conn
	CloseWrite() error
}

var payload = func() []byte {
	b := make([]byte, 64<<10)
	x := uint32(1)
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}()

// transfer sends n bytes over a fresh connection from dial and waits for
// the sink to confirm them; it returns bytes per second.
func transfer(ctx context.Context, dial func(context.Context) (tcpConn, error), n int) (float64, error) {
	start := time.Now()
	c, err := dial(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	for left := n; left > 0; {
		m := min(left, len(payload))
		if _, err := c.Write(payload[:m]); err != nil {
			return 0, fmt.Errorf("write after %d bytes: %w", n-left, err)
		}
		left -= m
	}
	if err := c.CloseWrite(); err != nil {
		return 0, err
	}
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, fmt.Errorf("reading the count: %w", err)
	}
	if got := binary.BigEndian.Uint64(b[:]); got != uint64(n) {
		return 0, fmt.Errorf("sink got %d bytes, sent %d", got, n)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// contender is one side-by-side TCP case.
type contender struct {
	name  string
	dial  func(context.Context) (tcpConn, error)
	close func()
	rates []float64
	// cpu is the process's CPU seconds per GB of each transfer: both
	// stacks, the harness and whatever else the process runs, alike for
	// every contender. It moves less with the machine's speed than the
	// rates do.
	cpu []float64
}

func ipsecDial(p *testbed.Pair, port uint16) func(context.Context) (tcpConn, error) {
	return func(ctx context.Context) (tcpConn, error) {
		return gonet.DialContextTCP(ctx, p.A.Stack, p.A.FullAddress(p.AddrB, port), stack.Proto(p.AddrB))
	}
}

// newIPsecPair builds a testbed pair for the benchmark: IPv4 inside, no
// leak-detector tap (it inspects every frame), discard sinks on B.
func newIPsecPair(ctx context.Context, cfg testbed.Config, ports ...uint16) (*testbed.Pair, error) {
	cfg.Inner = 4
	p, err := testbed.New(cfg)
	if err != nil {
		return nil, err
	}
	p.LinkA.SetTap(nil)
	p.LinkB.SetTap(nil)
	if len(ports) == 0 {
		ports = []uint16{sinkPort}
	}
	for _, port := range ports {
		l, err := gonet.ListenTCP(p.B.Stack, p.B.FullAddress(netip.Addr{}, port), stack.Proto(p.AddrB))
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("listen: %v", err)
		}
		serveDiscard(ctx, l)
	}
	return p, nil
}

// tcpMTU is the inner MTU of every contender: the testbed's route MTU
// (1500 minus the stack's overhead reserve), given to wireguard-go's tun.
const tcpMTU = 1500 - stack.DefaultOverheadReserve

func runTCP(o opts, r *Results) error {
	size, rounds := 64<<20, 5
	if o.quick {
		size, rounds = 12<<20, 3
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var cs []*contender
	defer func() {
		for _, c := range cs {
			c.close()
		}
	}()
	addPair := func(name string, cfg testbed.Config) error {
		p, err := newIPsecPair(ctx, cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		cs = append(cs, &contender{name: name, dial: ipsecDial(p, sinkPort), close: p.Close})
		return nil
	}
	if err := addPair("plain gVisor", testbed.Config{Plain: true}); err != nil {
		return err
	}
	for _, s := range []string{"aes-gcm-128", "aes-gcm-256", "chacha20-poly1305", "aes-cbc-128+hmac-sha256"} {
		suite, _ := testbed.SuiteByName(s)
		for _, mode := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
			if err := addPair("ESP "+s+" "+mode.String(), testbed.Config{Suite: suite, Mode: mode}); err != nil {
				return err
			}
		}
	}
	if ahs, ok := testbed.SuiteByName("hmac-sha256"); ok {
		for _, mode := range []xfrm.Mode{xfrm.ModeTransport, xfrm.ModeTunnel} {
			if err := addPair("AH hmac-sha256 "+mode.String(), testbed.Config{Suite: ahs, AH: ahs, Mode: mode, Bundle: []xfrm.Proto{xfrm.ProtoAH}}); err != nil {
				return err
			}
		}
	}
	wg, err := newWGPair(tcpMTU)
	if err != nil {
		return fmt.Errorf("wireguard-go: %w", err)
	}
	l, err := wg.net[1].ListenTCPAddrPort(netip.AddrPortFrom(wg.addrB, sinkPort))
	if err != nil {
		wg.Close()
		return fmt.Errorf("wireguard-go listen: %w", err)
	}
	serveDiscard(ctx, l)
	cs = append(cs, &contender{name: "wireguard-go netstack", close: wg.Close,
		dial: func(ctx context.Context) (tcpConn, error) {
			return wg.net[0].DialContextTCPAddrPort(ctx, netip.AddrPortFrom(wg.addrB, sinkPort))
		}})
	// Warm up: neighbour resolution, handshakes, TCP windows.
	for _, c := range cs {
		if _, err := transfer(ctx, c.dial, 2<<20); err != nil {
			return fmt.Errorf("%s: warm-up: %w", c.name, err)
		}
	}
	// Rounds: every contender once per round, the order rotated so no
	// contender always follows the same one.
	for round := 0; round < rounds; round++ {
		for k := range cs {
			c := cs[(k+round)%len(cs)]
			cpu0 := cpuTime()
			rate, err := transfer(ctx, c.dial, size)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			c.rates = append(c.rates, rate/1e6)
			c.cpu = append(c.cpu, (cpuTime()-cpu0).Seconds()/(float64(size)/1e9))
		}
	}
	plain, wgc := cs[0], cs[len(cs)-1]
	ratio := func(a, b *contender) float64 {
		var v []float64
		for i := range a.rates {
			v = append(v, a.rates[i]/b.rates[i])
		}
		return median(v)
	}
	note := fmt.Sprintf("%d MiB per transfer, median of %d interleaved rounds", size>>20, rounds)
	for _, c := range cs[1 : len(cs)-1] {
		n := note
		if c.name == "ESP aes-gcm-128 transport" {
			n += targetNote(ratio(c, plain), 0.8)
		}
		r.rate("tcp", c.name, "throughput", "MB/s", median(c.rates), median(plain.rates), ratio(c, plain), "plain gVisor", n)
	}
	// CPU per GB, where a lower value is better: the ratio is plain's over
	// the contender's, so that above 1 is still faster.
	for _, c := range cs[1 : len(cs)-1] {
		var v []float64
		for i := range c.cpu {
			v = append(v, plain.cpu[i]/c.cpu[i])
		}
		r.rate("tcp", c.name, "CPU per GB", "s/GB", median(c.cpu), median(plain.cpu), median(v), "plain gVisor",
			"the process's CPU (both stacks) per GB moved; ratio = plain's / this one's")
	}
	for _, c := range cs[:len(cs)-1] {
		n := ""
		switch c.name {
		case "ESP aes-gcm-128 transport":
			n = targetNote(ratio(c, wgc), 1.3)
		case "ESP chacha20-poly1305 transport":
			n = targetNote(ratio(c, wgc), 1.0)
		case "plain gVisor":
		default:
			if len(c.name) < 3 || c.name[:3] != "ESP" || c.name[len(c.name)-9:] != "transport" {
				continue
			}
		}
		n = strings.TrimPrefix(n, "; ")
		r.rate("tcp", c.name+" vs wireguard-go", "throughput", "MB/s", median(c.rates), median(wgc.rates), ratio(c, wgc), "wireguard-go netstack", n)
	}
	return nil
}

func targetNote(ratio, target float64) string {
	if ratio >= target {
		return fmt.Sprintf("; target >= %.1fx: met", target)
	}
	return fmt.Sprintf("; target >= %.1fx: missed", target)
}
