package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

func init() { commands["demo"] = runDemo }

// runDemo builds two stacks joined by an in-memory link, protects all
// traffic between them (NDP included) with ESP, runs TCP, UDP, ping and
// ping6 over it, prints what happened and fails unless every check passed.
func runDemo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	suiteName := fs.String("suite", "aes-gcm-128", "ESP suite: "+suiteNames())
	mode := fs.String("mode", "transport", "transport or tunnel")
	tcpMiB := fs.Int("tcp-mib", 4, "MiB to send over TCP in each family")
	if err := fs.Parse(args); err != nil {
		return err
	}
	suite, ok := testbed.SuiteByName(*suiteName)
	if !ok {
		return fmt.Errorf("%w: unknown suite %q (have %s)", errUsage, *suiteName, suiteNames())
	}
	m := xfrm.ModeTransport
	switch *mode {
	case "transport":
	case "tunnel":
		m = xfrm.ModeTunnel
	default:
		return fmt.Errorf("%w: --mode %q: want transport or tunnel", errUsage, *mode)
	}
	return demo(os.Stdout, suite, m, *tcpMiB<<20)
}

func suiteNames() string {
	var n []string
	for _, s := range testbed.Suites {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}

func demo(w io.Writer, suite testbed.Suite, mode xfrm.Mode, tcpBytes int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fmt.Fprintf(w, "ipsecstack demo: two gVisor stacks on an in-memory Ethernet link, ESP %s %s mode\n", suite.Name, mode)
	fmt.Fprintf(w, "  A = %v, %v    B = %v, %v\n", testbed.A4, testbed.A6, testbed.B4, testbed.B6)
	fmt.Fprintf(w, "  policy: all traffic between A and B requires ESP; NDP (NS/NA) under ESP via solicited-node multicast SAs\n\n")

	failed := 0
	check := func(name string, err error, detail string) {
		status := "ok  "
		if err != nil {
			status = "FAIL"
			failed++
			detail = err.Error()
		}
		fmt.Fprintf(w, "  [%s] %-34s %s\n", status, name, detail)
	}
	var pairs []*testbed.Pair
	defer func() {
		for _, p := range pairs {
			p.Close()
		}
	}()
	for _, fam := range []int{6, 4} {
		p, err := testbed.New(testbed.Config{Suite: suite, Mode: mode, Inner: fam})
		if err != nil {
			return fmt.Errorf("building IPv%d pair: %w", fam, err)
		}
		pairs = append(pairs, p)
		if err := p.StartServers(ctx); err != nil {
			return err
		}
		fmt.Fprintf(w, "IPv%d (%v <-> %v)\n", fam, p.AddrA, p.AddrB)
		ping := "ping"
		if fam == 6 {
			ping = "ping6 (NDP first, under ESP)"
		}
		replies, err := testbed.Ping(ctx, p.A, p.AddrB, 3, 56)
		detail := ""
		if err == nil {
			var sum time.Duration
			for _, r := range replies {
				sum += r.RTT
			}
			detail = fmt.Sprintf("3/3 replies, avg rtt %v", (sum / 3).Round(time.Microsecond))
		}
		check(ping+" A->B", err, detail)
		_, err = testbed.Ping(ctx, p.B, p.AddrA, 3, 56)
		check(ping+" B->A", err, "3/3 replies")
		for _, size := range []int{100, 8000} {
			err := testbed.UDPEcho(ctx, p.A, p.AddrB, size)
			check(fmt.Sprintf("udp echo %d bytes", size), err, "echo matches")
		}
		rate, err := testbed.TCPTransfer(ctx, p.A, p.AddrB, tcpBytes)
		check(fmt.Sprintf("tcp %d MiB A->B", tcpBytes>>20), err, fmt.Sprintf("sha256 matches, %.1f MB/s", rate/1e6))
		leaks, frames := p.Leaks()
		var lerr error
		if len(leaks) > 0 {
			lerr = fmt.Errorf("%d cleartext packets, first: %s", len(leaks), leaks[0])
		}
		check("no protected flow in cleartext", lerr, fmt.Sprintf("%d frames inspected on the wire", frames))
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "Security associations (stack A):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  family\tdir\tspi\tsrc -> dst\tmode\tpackets\tbytes\tstate")
	for i, p := range pairs {
		fam := []string{"IPv6", "IPv4"}[i]
		printSAs(tw, fam, p.A)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nxfrm_stat (non-zero counters, both stacks):")
	nonzero := 0
	for i, p := range pairs {
		for _, s := range []*stack.Stack{p.A, p.B} {
			for _, st := range s.Engine.Stats.Snapshot() {
				if st.Value != 0 {
					nonzero++
					fmt.Fprintf(w, "  pair %d: %s %d\n", i, st.Name, st.Value)
				}
			}
		}
	}
	if nonzero == 0 {
		fmt.Fprintln(w, "  all zero: no packet was dropped by IPsec")
	}
	if failed > 0 {
		return fmt.Errorf("%d checks failed", failed)
	}
	fmt.Fprintln(w, "\nall checks passed")
	return nil
}

func printSAs(w io.Writer, fam string, s *stack.Stack) {
	var rows []string
	s.Engine.SAD.Walk(func(sa *xfrm.SA) bool {
		c := &sa.Config
		dir := "in"
		if c.Src == testbed.A4 || c.Src == testbed.A6 {
			dir = "out"
		}
		rows = append(rows, fmt.Sprintf("  %s\t%s\t0x%08x\t%v -> %v\t%s\t%d\t%d\t%s", fam, dir, c.SPI, c.Src, c.Dst, c.Mode,
			sa.Counters.Packets.Load(), sa.Counters.Bytes.Load(), sa.State()))
		return true
	})
	slices.Sort(rows)
	for _, r := range rows {
		fmt.Fprintln(w, r)
	}
}
