package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/ipsecstack/ipsecstack/control"
)

func init() { commands["ping"] = runPing }

// runPing is `ipsecstack ping [--control PATH] [-c N] [-s SIZE] [-i
// INTERVAL] [-W TIMEOUT] ADDR`: ICMP or ICMPv6 echo sent from inside the
// running stack, one JSON "ping" op per echo, printed like ping(8). Exit 1
// if no reply came back at all (as ping does).
func runPing(args []string) error {
	fs := flag.NewFlagSet("ping", flag.ContinueOnError)
	path := fs.String("control", control.DefaultPath, "control socket `PATH`")
	count := fs.Int("c", 4, "stop after `N` echo requests (0: until interrupted)")
	size := fs.Int("s", 56, "payload `SIZE` in bytes")
	interval := fs.String("i", "1", "`INTERVAL` between requests: seconds (0.2) or a Go duration (200ms)")
	wait := fs.String("W", "1", "`TIMEOUT` for each reply: seconds or a Go duration")
	usage := "usage: ipsecstack ping [--control PATH] [-c N] [-s SIZE] [-i INTERVAL] [-W TIMEOUT] ADDR"
	if err := parseFlags(fs, args, usage, os.Stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want exactly one ADDR (%s)", errUsage, usage)
	}
	addr, err := netip.ParseAddr(fs.Arg(0))
	if err != nil || addr.Zone() != "" {
		return fmt.Errorf("%w: %q is not an IP address", errUsage, fs.Arg(0))
	}
	addr = addr.Unmap()
	if *count < 0 {
		return fmt.Errorf("%w: -c %d: want 0 or more", errUsage, *count)
	}
	if *size < 0 || *size > maxPingSize {
		return fmt.Errorf("%w: -s %d: want 0 to %d", errUsage, *size, maxPingSize)
	}
	ival, err := parseSeconds(*interval)
	if err != nil || ival < 0 {
		return fmt.Errorf("%w: -i %q: want seconds or a duration", errUsage, *interval)
	}
	timeout, err := parseSeconds(*wait)
	if err != nil || timeout <= 0 || timeout > time.Minute {
		return fmt.Errorf("%w: -W %q: want a timeout up to 60s", errUsage, *wait)
	}
	c, err := control.Dial(*path)
	if err != nil {
		return err
	}
	defer c.Close()
	c.Timeout = timeout + 10*time.Second

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)

	fmt.Printf("PING %s %d data bytes (from inside the stack)\n", addr, *size)
	start := time.Now()
	var sent, recv int
	var rtts []float64
loop:
	for seq := 1; *count == 0 || seq <= *count; seq++ {
		if seq > 1 {
			select {
			case <-sig:
				break loop
			case <-time.After(ival):
			}
		}
		sent++
		var r pingResp
		err := c.Call("ping", pingReq{Addr: addr.String(), Seq: uint16(seq), Size: *size, TimeoutMS: int(timeout / time.Millisecond)}, &r)
		if err != nil {
			if err.Error() != "timeout" {
				fmt.Fprintf(os.Stderr, "ping %s: icmp_seq=%d: %v\n", addr, seq, err)
			}
		} else {
			recv++
			ms := float64(r.RTTNs) / 1e6
			rtts = append(rtts, ms)
			fmt.Printf("%d bytes from %s: icmp_seq=%d time=%s ms\n", r.Bytes, addr, r.Seq, fmtMS(ms))
		}
		select {
		case <-sig:
			break loop
		default:
		}
	}
	elapsed := time.Since(start)
	loss := 0.0
	if sent > 0 {
		loss = 100 * float64(sent-recv) / float64(sent)
	}
	fmt.Printf("\n--- %s ping statistics ---\n", addr)
	fmt.Printf("%d packets transmitted, %d received, %s%% packet loss, time %dms\n", sent, recv, strconv.FormatFloat(loss, 'f', -1, 64), elapsed.Milliseconds())
	if recv == 0 {
		return fmt.Errorf("no reply from %s", addr)
	}
	var sum, sq, lo, hi float64
	lo = math.Inf(1)
	for _, v := range rtts {
		sum += v
		sq += v * v
		lo = math.Min(lo, v)
		hi = math.Max(hi, v)
	}
	avg := sum / float64(len(rtts))
	mdev := math.Sqrt(math.Max(0, sq/float64(len(rtts))-avg*avg))
	fmt.Printf("rtt min/avg/max/mdev = %.3f/%.3f/%.3f/%.3f ms\n", lo, avg, hi, mdev)
	return nil
}

// fmtMS prints an RTT as ping does: three significant digits.
func fmtMS(ms float64) string {
	switch {
	case ms >= 100:
		return fmt.Sprintf("%.0f", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1f", ms)
	case ms >= 1:
		return fmt.Sprintf("%.2f", ms)
	}
	return fmt.Sprintf("%.3f", ms)
}

// parseSeconds accepts ping's "0.2" (seconds) or a Go duration ("200ms").
func parseSeconds(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, errors.New("bad number")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}
