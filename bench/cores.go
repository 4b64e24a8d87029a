package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/ipsecstack/ipsecstack/internal/testbed"
)

// twoFlows runs one transfer of n bytes on each dial at once and returns
// the aggregate rate in bytes per second.
func twoFlows(ctx context.Context, dials [2]func(context.Context) (tcpConn, error), n int) (float64, error) {
	start := time.Now()
	errs := make(chan error, 2)
	for _, d := range dials {
		go func() {
			_, err := transfer(ctx, d, n)
			errs <- err
		}()
	}
	for range dials {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	return float64(2*n) / time.Since(start).Seconds(), nil
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runCores(o opts, r *Results) error {
	size, rounds := 48<<20, 5
	if o.quick {
		size, rounds = 12<<20, 3
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	suite, _ := testbed.SuiteByName("aes-gcm-128")
	for _, c := range []struct {
		name string
		cfg  testbed.Config
		note string
	}{
		{"ESP aes-gcm-128 transport", testbed.Config{Suite: suite, Dispatchers: 2, PortSAs: []uint16{sinkPort + 1}},
			"two SA pairs on two delivery goroutines per link end; target >= 1.7x: "},
		{"plain gVisor", testbed.Config{Plain: true, Dispatchers: 2},
			"reference: the two flows may share a delivery goroutine (memlink hashes ports)"},
	} {
		p, err := newIPsecPair(ctx, c.cfg, sinkPort, sinkPort+1)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		dials := [2]func(context.Context) (tcpConn, error){ipsecDial(p, sinkPort), ipsecDial(p, sinkPort+1)}
		for _, d := range dials {
			if _, err := transfer(ctx, d, 2<<20); err != nil {
				p.Close()
				return fmt.Errorf("%s: warm-up: %w", c.name, err)
			}
		}
		var one, two, ratios []float64
		var cpu1, cpu2, wall1, wall2 time.Duration
		for i := 0; i < rounds; i++ {
			c0, t0 := cpuTime(), time.Now()
			a, err := transfer(ctx, dials[0], size)
			if err != nil {
				p.Close()
				return err
			}
			c1, t1 := cpuTime(), time.Now()
			b, err := twoFlows(ctx, dials, size)
			if err != nil {
				p.Close()
				return err
			}
			cpu1 += c1 - c0
			wall1 += t1.Sub(t0)
			cpu2 += cpuTime() - c1
			wall2 += time.Since(t1)
			one, two, ratios = append(one, a/1e6), append(two, b/1e6), append(ratios, b/a)
		}
		p.Close()
		note := c.note
		if !c.cfg.Plain {
			if median(ratios) >= 1.7 {
				note += "met"
			} else {
				note += "missed"
			}
		}
		note += fmt.Sprintf("; this process used %.2f cores with 1 flow, %.2f with 2",
			cpu1.Seconds()/wall1.Seconds(), cpu2.Seconds()/wall2.Seconds())
		r.rate("cores", c.name+", 2 flows", "aggregate throughput", "MB/s", median(two), median(one), median(ratios), "1 flow", note)
	}
	return nil
}
