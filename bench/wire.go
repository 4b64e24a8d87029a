package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// wireOpts are the --wire benchmark's knobs.
type wireOpts struct {
	Bytes  int64         // per TCP transfer
	Rounds int           // interleaved rounds
	RR     time.Duration // UDP request/response time per round
	Only   []string      // contender ids or id prefixes (wireWanted); empty: all
	// Pprof, if set, is a directory for CPU profiles of the ipsecstack
	// daemons, one per daemon and TCP round (wirePprofSeconds each).
	Pprof string
	Log   io.Writer
}

// wireReport is what a --wire run measured, for JSON and the table.
type wireReport struct {
	Machine    string      `json:"machine"`
	Started    time.Time   `json:"started"`
	Duration   string      `json:"duration"`
	Bytes      int64       `json:"bytes_per_transfer"`
	Rounds     int         `json:"rounds"`
	RRSeconds  float64     `json:"rr_seconds"`
	CPUHow     string      `json:"cpu_accounting"`
	Contenders []wireRow   `json:"contenders"`
	Ratios     []wireRatio `json:"ratios"`
	Skipped    []wireSkip  `json:"skipped,omitempty"`
	list       []*wireContender
}

type wireRow struct {
	Name       string            `json:"name"`
	Group      string            `json:"group"`
	MBps       float64           `json:"mbps_median"`
	MBpsMin    float64           `json:"mbps_min"`
	MBpsMax    float64           `json:"mbps_max"`
	CPUperGB   float64           `json:"cpu_s_per_gb_median"`
	ProcPerGB  float64           `json:"proc_cpu_s_per_gb_median"`
	SoftPerGB  float64           `json:"softirq_s_per_gb_median"`
	Retrans    uint64            `json:"retransmits_median"`
	RetransNA  bool              `json:"retransmits_not_available,omitempty"`
	RetransSrc string            `json:"retransmits_source"`
	Drops      uint64            `json:"drops_total"`
	DaemonDrop map[string]uint64 `json:"daemon_drop_counters,omitempty"`
	RRtps      float64           `json:"udp_rr_per_s_median"`
	RRus       float64           `json:"udp_rr_us_median"`
	RRLost     uint64            `json:"udp_rr_lost_total"`
	Rounds     []wireRound       `json:"rounds"`
	RR         []wireRR          `json:"rr_rounds"`
	Failed     string            `json:"failed,omitempty"`
	Errors     []string          `json:"errors,omitempty"`
}

type wireRatio struct {
	What    string  `json:"what"`
	Metric  string  `json:"metric"`
	Ours    float64 `json:"ours"`
	Against string  `json:"against"`
	Base    float64 `json:"baseline"`
	Ratio   float64 `json:"ratio"` // median of per-round ratios
}

type wireSkip struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

const wireCPUHow = "utime+stime of every process of the contender (/proc/PID/stat: daemons, charon, wireguard-go, and the sending and sinking programs) plus the machine's softirq time (/proc/stat, both cores) over the transfer; the kernel does veth, bridge, TAP and kernel-TCP receive work in softirq, which Linux accounts to no process. Softirq is machine-wide, so other load's softirq adds to it."

// wireContenders lists every contender in table order.
func wireContenders(ipsecstack, wg string) []*wireContender {
	cs := []*wireContender{{id: "kernel", name: "Linux kernel, plain veth", group: "kernel", setup: setupKernel}}
	for _, link := range []string{"afpacket", "tap"} {
		for _, s := range []struct{ id, suite string }{
			{"none", "none"}, {"gcm", "aes-gcm-128 transport"}, {"gcm-tunnel", "aes-gcm-128 tunnel"}, {"chacha", "chacha20-poly1305 transport"},
		} {
			label := "ESP " + s.suite
			if s.suite == "none" {
				label = "no SA (plain gVisor)"
			}
			cs = append(cs, &wireContender{id: link + "-" + s.id, name: fmt.Sprintf("ipsecstack %s, %s", link, label), group: "ipsecstack",
				link: link, suite: s.suite, setup: setupIpsecstack(ipsecstack)})
		}
	}
	// ESP in UDP (RFC 3948, port 4500 both ways), the encapsulation of
	// the strongSwan row: by default (--udp-gso) the wrapper's runs of
	// equal ESP-in-UDP packets cross the veth as UDP GSO frames; with
	// --udp-gso=false, one frame each.
	for _, s := range []struct{ id, suite, label string }{
		{"gcm-udp", "aes-gcm-128 tunnel udp-gso", "ESP aes-gcm-128 UDP-encap tunnel (UDP GSO)"},
		{"gcm-udp-nogso", "aes-gcm-128 tunnel udp", "ESP aes-gcm-128 UDP-encap tunnel, --udp-gso=false"},
	} {
		cs = append(cs, &wireContender{id: "afpacket-" + s.id, name: "ipsecstack afpacket, " + s.label, group: "ipsecstack",
			link: "afpacket", suite: s.suite, setup: setupIpsecstack(ipsecstack)})
	}
	// The receive side as a host program sees it: daemon B publishes
	// the host sink in B's namespace (--publish) instead of sinking
	// inside the stack (--discard).
	for _, s := range []struct{ id, suite, label string }{
		{"none", "none", "no SA"}, {"gcm", "aes-gcm-128 transport", "ESP aes-gcm-128 transport"},
	} {
		cs = append(cs, &wireContender{id: "publish-" + s.id, name: "ipsecstack afpacket, " + s.label + ", --publish to a host sink",
			group: "ipsecstack", link: "afpacket", suite: s.suite, publish: true, setup: setupIpsecstack(ipsecstack)})
	}
	cs = append(cs, tunContenders(ipsecstack)...)
	cs = append(cs,
		&wireContender{id: "wireguard-go", name: "wireguard-go (TUN), kernel TCP", group: "wireguard-go", setup: setupWireguard(wg)},
		&wireContender{id: "strongswan", name: "strongSwan kernel-libipsec, ESP aes-gcm-128 UDP-encap tunnel", group: "strongswan", setup: setupStrongswan})
	return cs
}

// runWire runs the real-link benchmark: it needs root, builds ipsecstack
// and wireguard-go into a temporary directory, sets every contender up in
// its own pair of namespaces, measures interleaved rounds and removes
// everything again (on error and on SIGINT/SIGTERM too).
func runWire(o wireOpts) (*wireReport, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("--wire needs root (network namespaces, veth and TAP devices, AF_PACKET)")
	}
	for _, t := range []string{"ip", "bridge", "sysctl"} {
		if _, err := exec.LookPath(t); err != nil {
			return nil, fmt.Errorf("--wire needs %s (iproute2, procps): %v", t, err)
		}
	}
	start := time.Now()
	e, err := newWireEnv(o.Log)
	if err != nil {
		return nil, err
	}
	e.pprofDir = o.Pprof
	defer e.close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if s, ok := <-sigs; ok {
			fmt.Fprintf(o.Log, "wire: %v: removing namespaces and processes\n", s)
			e.close()
			os.Exit(130)
		}
	}()

	// Build once.
	bin := filepath.Join(e.dir, "ipsecstack")
	wg := filepath.Join(e.dir, "wireguard-go")
	t0 := time.Now()
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/ipsecstack/ipsecstack/cmd/ipsecstack").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ipsecstack: %v: %s", err, out)
	}
	var wgErr error
	if out, err := exec.Command("go", "build", "-o", wg, "golang.zx2c4.com/wireguard").CombinedOutput(); err != nil {
		wgErr = fmt.Errorf("go build golang.zx2c4.com/wireguard: %v: %s", err, strings.TrimSpace(string(out)))
	}
	fmt.Fprintf(o.Log, "wire: built ipsecstack and wireguard-go in %v\n", time.Since(t0).Round(time.Millisecond))

	rep := &wireReport{Machine: fmt.Sprintf("%s, %d cores", cpuModel(), runtime.NumCPU()), Started: start, Bytes: o.Bytes,
		Rounds: o.Rounds, RRSeconds: o.RR.Seconds(), CPUHow: wireCPUHow}
	all := wireContenders(bin, wg)
	var cs []*wireContender
	for i, c := range all {
		if !wireWanted(o.Only, c.id) {
			continue
		}
		switch c.group {
		case "wireguard-go":
			if wgErr != nil {
				c.skip = wgErr.Error()
			} else if _, err := exec.LookPath("wg"); err != nil {
				c.skip = "wg (wireguard-tools) not on PATH"
			} else if _, err := os.Stat("/dev/net/tun"); err != nil {
				c.skip = "no /dev/net/tun"
			}
		case "strongswan":
			if _, err := os.Stat("/usr/lib/ipsec/charon"); err != nil {
				c.skip = "no /usr/lib/ipsec/charon (strongswan-charon)"
			} else if _, err := os.Stat("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"); err != nil {
				c.skip = "no kernel-libipsec plugin (libcharon-extra-plugins)"
			} else if _, err := os.Stat("/usr/lib/ipsec/plugins/libstrongswan-gcm.so"); err != nil {
				c.skip = "no gcm plugin (libstrongswan-standard-plugins)"
			} else if _, err := exec.LookPath("swanctl"); err != nil {
				c.skip = "swanctl (strongswan-swanctl) not on PATH"
			} else if _, err := exec.LookPath("unshare"); err != nil {
				c.skip = "unshare (util-linux) not on PATH"
			}
		}
		if c.link == "tap" {
			if _, err := os.Stat("/dev/net/tun"); err != nil {
				c.skip = "no /dev/net/tun"
			}
		}
		if c.skip == "" {
			t := time.Now()
			if err := c.setup(e, c, i+1); err != nil {
				c.skip = "setup failed: " + oneLineErr(err)
			} else if err := wireWarmup(c, o.Log); err != nil {
				c.skip = "warm-up failed: " + oneLineErr(err)
			} else {
				fmt.Fprintf(o.Log, "wire: %s: up in %v\n", c.name, time.Since(t).Round(time.Millisecond))
			}
		}
		if c.skip != "" {
			fmt.Fprintf(o.Log, "wire: skipping %s: %s\n", c.name, c.skip)
			rep.Skipped = append(rep.Skipped, wireSkip{c.name, c.skip})
			continue
		}
		cs = append(cs, c)
	}
	if len(cs) == 0 {
		return rep, errors.New("no contender could run")
	}

	for r := 0; r < o.Rounds; r++ {
		for _, c := range cs {
			if c.failed != "" {
				continue
			}
			prof := c.startProfiles(r + 1)
			res, err := wireTCP(c, o.Bytes)
			prof()
			if err != nil {
				c.fail(o.Log, fmt.Sprintf("round %d TCP: %s", r+1, oneLineErr(err)))
				continue
			}
			res.Round = r + 1
			c.rounds = append(c.rounds, res)
			fmt.Fprintf(o.Log, "  round %d %-62s %7.1f MB/s  cpu %.2f s/GB (procs %.2f + softirq %.2f)  retrans %s  drops %d\n",
				r+1, c.name, res.MBps, res.TotalGB, res.ProcsGB, res.TotalGB-res.ProcsGB, res.retransString(), res.Drops)
		}
		for _, c := range cs {
			if c.failed != "" {
				continue
			}
			rr, err := wireUDPRR(c, o.RR)
			if err != nil {
				c.fail(o.Log, fmt.Sprintf("round %d UDP: %s", r+1, oneLineErr(err)))
				continue
			}
			rr.Round = r + 1
			c.rr = append(c.rr, rr)
			fmt.Fprintf(o.Log, "  round %d %-62s %7.0f UDP RR/s  %6.1f µs  lost %d\n", r+1, c.name, rr.TPS, rr.Us, rr.Lost)
		}
	}
	rep.list = cs
	rep.build()
	rep.Duration = time.Since(start).Round(time.Second).String()
	return rep, nil
}

func oneLineErr(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// fail records a failed measurement. The contender stays in the next
// rounds unless its client is gone (a stalled transfer past its deadline
// fails one round, not the run).
func (c *wireContender) fail(log io.Writer, what string) {
	// A process of the contender that died says why.
	for _, p := range c.procs {
		if p.exited() && !strings.Contains(what, p.name+" exited") {
			what += fmt.Sprintf(" [%s exited: %v: %s]", p.name, p.err, p.out.last())
		}
	}
	c.errors = append(c.errors, what)
	if c.client.exited() {
		c.failed = what
	}
	fmt.Fprintf(log, "wire: %s: %s\n", c.name, what)
}

// wireWanted says whether contender id was asked for: an exact id, or a
// prefix ending at a dash ("afpacket" for every afpacket-*).
func wireWanted(only []string, id string) bool {
	if len(only) == 0 {
		return true
	}
	for _, o := range only {
		if id == o || strings.HasPrefix(id, o+"-") {
			return true
		}
	}
	return false
}

// wireIDs lists the contender ids for --wire-only's help and errors.
func wireIDs() []string {
	var ids []string
	for _, c := range wireContenders("", "") {
		ids = append(ids, c.id)
	}
	return ids
}

// wireWarmup resolves neighbours, completes handshakes and fills caches
// before anything is timed: a 64 KiB transfer (less than any socket
// buffer on the way holds, so a slow first read loses nothing) and a few
// UDP round trips.
func wireWarmup(c *wireContender, log io.Writer) error {
	var err error
	for try := 0; try < 3; try++ {
		t := time.Now()
		if _, err = c.client.call(60*time.Second, "tcp %s %d %s", c.tcpTo, 64<<10, c.src); err == nil {
			break
		}
		fmt.Fprintf(log, "wire: %s: warm-up try %d failed after %v: %v\n", c.name, try+1, time.Since(t).Round(time.Millisecond), err)
		time.Sleep(time.Second)
	}
	if err != nil {
		return err
	}
	_, err = c.client.call(30*time.Second, "rr %s 64 0.2 %s", c.udpTo, c.src)
	return err
}

// wireSnap is the state read before and after a transfer.
type wireSnap struct {
	cpu, softirq float64
	drops        uint64
	daemon       []map[string]uint64
}

func (c *wireContender) snap() wireSnap {
	var s wireSnap
	for _, p := range c.procs {
		s.cpu += procCPU(p.pid())
	}
	s.softirq = softirqCPU()
	for _, x := range c.ifaces {
		s.drops += ifDrops(x[0], x[1])
	}
	for _, ctl := range c.controls {
		s.daemon = append(s.daemon, daemonStats(ctl))
	}
	return s
}

// isDropCounter says whether a daemon counter counts packets the link
// lost: the link's own drop counters (PACKET_STATISTICS and the like,
// names with "Drop" from the link), not control-socket or policy counts.
func isDropCounter(name string) bool {
	n := strings.ToLower(name)
	if !strings.Contains(n, "drop") {
		return false
	}
	return strings.HasPrefix(n, "link") || strings.HasPrefix(n, "packet") || strings.HasPrefix(n, "rx") ||
		strings.HasPrefix(n, "tx") || strings.HasPrefix(n, "nic") || strings.HasPrefix(n, "tap") || strings.HasPrefix(n, "afpacket")
}

func isRetransCounter(name string) bool {
	return strings.Contains(strings.ToLower(name), "retrans")
}

// wireTCP measures one one-way bulk transfer.
func wireTCP(c *wireContender, n int64) (wireRound, error) {
	before := c.snap()
	f, err := c.client.call(60*time.Second+time.Duration(n/2e6)*time.Second, "tcp %s %d %s", c.tcpTo, n, c.src)
	if err != nil {
		return wireRound{}, err
	}
	after := c.snap()
	if len(f) != 2 {
		return wireRound{}, fmt.Errorf("client answered %q", f)
	}
	secs, _ := strconv.ParseFloat(f[0], 64)
	retrans, _ := strconv.ParseUint(f[1], 10, 64)
	gb := float64(n) / 1e9
	r := wireRound{Bytes: n, Seconds: secs, MBps: float64(n) / secs / 1e6, ProcCPU: after.cpu - before.cpu,
		Softirq: after.softirq - before.softirq, Drops: after.drops - before.drops}
	r.ProcsGB = r.ProcCPU / gb
	r.TotalGB = (r.ProcCPU + r.Softirq) / gb
	if c.stackSends {
		// The kernel TCP only crosses loopback to daemon A; the stack's
		// TCP sends on the wire. Its retransmits, if the daemon reports
		// them; else the loopback's (normally 0).
		r.Retrans = 0
		found := false
		for i := range after.daemon {
			if i >= len(before.daemon) {
				break
			}
			for k, v := range after.daemon[i] {
				if isRetransCounter(k) {
					found = true
					r.Retrans += v - before.daemon[i][k]
				}
			}
		}
		r.LoopRetrans = retrans
		if !found {
			r.RetransNA = true
			c.retransSource = "n/a: the daemon reports no TCP retransmit counter (loopback_retrans: the kernel TCP hop to daemon A's --forward)"
		} else {
			c.retransSource = "gVisor TCP in daemon A (ipsecstack stats)"
		}
	} else {
		r.Retrans = retrans
	}
	for i := range after.daemon {
		if i >= len(before.daemon) {
			break
		}
		for k, v := range after.daemon[i] {
			if (c.link == "tap" || strings.HasPrefix(c.id, "tun-")) && k == "LinkRxKernelDrops" {
				// A TAP's or TUN's kernel drops are its tx_dropped,
				// which the interface counters (ip -s link) already
				// hold (for the TUN contender this also skips its
				// AF_PACKET side's tp_drops, zero in every run so far).
				continue
			}
			if isDropCounter(k) && v > before.daemon[i][k] {
				if c.droppedSeen == nil {
					c.droppedSeen = map[string]uint64{}
				}
				d := v - before.daemon[i][k]
				c.droppedSeen[fmt.Sprintf("%c:%s", 'A'+i, k)] += d
				r.Drops += d
			}
		}
	}
	return r, nil
}

// wireUDPRR measures 64-byte UDP request/response, one in flight.
func wireUDPRR(c *wireContender, d time.Duration) (wireRR, error) {
	f, err := c.client.call(d+30*time.Second, "rr %s 64 %.3f %s", c.udpTo, d.Seconds(), c.src)
	if err != nil {
		return wireRR{}, err
	}
	if len(f) != 3 {
		return wireRR{}, fmt.Errorf("client answered %q", f)
	}
	n, _ := strconv.ParseFloat(f[0], 64)
	secs, _ := strconv.ParseFloat(f[1], 64)
	lost, _ := strconv.ParseUint(f[2], 10, 64)
	if n == 0 {
		return wireRR{}, errors.New("no UDP answer at all")
	}
	return wireRR{TPS: n / secs, Us: secs / n * 1e6, Lost: lost}, nil
}

func medianU(v []uint64) uint64 {
	f := make([]float64, len(v))
	for i, x := range v {
		f[i] = float64(x)
	}
	return uint64(math.Round(median(f)))
}

// build fills Contenders and Ratios from the rounds.
func (r *wireReport) build() {
	byName := map[string]*wireContender{}
	for _, c := range r.list {
		byName[c.name] = c
		row := wireRow{Name: c.name, Group: c.group, RetransSrc: c.retransSource, DaemonDrop: c.droppedSeen,
			Rounds: c.rounds, RR: c.rr, Failed: c.failed, Errors: c.errors}
		for _, x := range c.rounds {
			row.RetransNA = row.RetransNA || x.RetransNA
		}
		var mb, cpu, proc, soft, tps, us []float64
		var re []uint64
		for _, x := range c.rounds {
			mb = append(mb, x.MBps)
			cpu = append(cpu, x.TotalGB)
			proc = append(proc, x.ProcsGB)
			soft = append(soft, x.TotalGB-x.ProcsGB)
			re = append(re, x.Retrans)
			row.Drops += x.Drops
		}
		for _, x := range c.rr {
			tps = append(tps, x.TPS)
			us = append(us, x.Us)
			row.RRLost += x.Lost
		}
		if len(mb) > 0 {
			s := append([]float64(nil), mb...)
			sort.Float64s(s)
			row.MBps, row.MBpsMin, row.MBpsMax = median(mb), s[0], s[len(s)-1]
			row.CPUperGB, row.ProcPerGB, row.SoftPerGB = median(cpu), median(proc), median(soft)
			row.Retrans = medianU(re)
		}
		row.RRtps, row.RRus = median(tps), median(us)
		r.Contenders = append(r.Contenders, row)
	}
	// Ratios: medians of per-round ratios (the two were measured in the
	// same round, close in time).
	ratio := func(what string, ours, base *wireContender) {
		if ours == nil || base == nil {
			return
		}
		var tr, rr []float64
		for _, a := range ours.rounds {
			for _, b := range base.rounds {
				if a.Round == b.Round {
					tr = append(tr, a.MBps/b.MBps)
				}
			}
		}
		for _, a := range ours.rr {
			for _, b := range base.rr {
				if a.Round == b.Round {
					rr = append(rr, a.TPS/b.TPS)
				}
			}
		}
		if len(tr) > 0 {
			r.Ratios = append(r.Ratios, wireRatio{What: what, Metric: "TCP MB/s", Ours: rowOf(r, ours.name).MBps,
				Against: base.name, Base: rowOf(r, base.name).MBps, Ratio: median(tr)})
		}
		if len(rr) > 0 {
			r.Ratios = append(r.Ratios, wireRatio{What: what, Metric: "UDP RR/s", Ours: rowOf(r, ours.name).RRtps,
				Against: base.name, Base: rowOf(r, base.name).RRtps, Ratio: median(rr)})
		}
	}
	var wgc, swc, kern *wireContender
	for _, c := range r.list {
		switch c.group {
		case "wireguard-go":
			wgc = c
		case "strongswan":
			swc = c
		case "kernel":
			kern = c
		}
	}
	for _, c := range r.list {
		if c.group != "ipsecstack" || c.suite == "none" {
			continue
		}
		base := byName[fmt.Sprintf("ipsecstack %s, no SA (plain gVisor)", c.link)]
		if c.publish {
			base = byName["ipsecstack afpacket, no SA, --publish to a host sink"]
		}
		ratio(c.name+" vs no SA", c, base)
	}
	for _, c := range r.list {
		if c.group == "ipsecstack" && c.suite != "none" {
			ratio(c.name+" vs wireguard-go", c, wgc)
		}
	}
	for _, c := range r.list {
		if c.group == "ipsecstack" && strings.HasPrefix(c.suite, "aes-gcm-128") {
			ratio(c.name+" vs strongSwan", c, swc)
		}
	}
	for _, c := range r.list {
		if c.group != "kernel" {
			ratio(c.name+" vs the kernel", c, kern)
		}
	}
}

func rowOf(r *wireReport, name string) wireRow {
	for _, x := range r.Contenders {
		if x.Name == name {
			return x
		}
	}
	return wireRow{}
}

// Markdown writes the table and the ratios.
func (r *wireReport) Markdown(w io.Writer) {
	fmt.Fprintf(w, "%s; %s per TCP transfer, median of %d interleaved rounds (min-max); UDP: 64-byte request/response, one in flight, %.1f s per round; %s.\n\n",
		r.Machine, fmtBytes(r.Bytes), r.Rounds, r.RRSeconds, r.Duration)
	fmt.Fprintln(w, "| contender | TCP MB/s median (min-max) | CPU s/GB (processes + softirq) | TCP retransmits | drops | UDP RR/s | µs per round trip |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, x := range r.Contenders {
		if len(x.Rounds) == 0 {
			why := x.Failed
			if why == "" && len(x.Errors) > 0 {
				why = x.Errors[0]
			}
			fmt.Fprintf(w, "| %s | failed: %s | | | | | |\n", x.Name, why)
			continue
		}
		name := x.Name
		if x.Failed != "" {
			name += " (stopped: " + x.Failed + ")"
		} else if len(x.Errors) > 0 {
			name += fmt.Sprintf(" (%d failed: %s)", len(x.Errors), strings.Join(x.Errors, "; "))
		}
		retrans := strconv.FormatUint(x.Retrans, 10)
		if x.RetransNA {
			retrans = "n/a"
		}
		fmt.Fprintf(w, "| %s | %s (%s-%s) | %.2f (%.2f + %.2f) | %s | %d | %s | %s |\n", name,
			fmtNum(x.MBps), fmtNum(x.MBpsMin), fmtNum(x.MBpsMax), x.CPUperGB, x.ProcPerGB, x.SoftPerGB,
			retrans, x.Drops, fmtNum(x.RRtps), fmtNum(x.RRus))
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "| %s | skipped: %s | | | | | |\n", s.Name, s.Reason)
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "\n| ratio (same run, median of per-round ratios) | metric | ours | baseline | ratio |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|")
		for _, x := range r.Ratios {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %.2fx |\n", x.What, x.Metric, fmtNum(x.Ours), fmtNum(x.Base), x.Ratio)
		}
	}
	fmt.Fprintf(w, "\nCPU: %s Retransmits: median per transfer; the sending TCP is the kernel's for the kernel, wireguard-go and strongSwan rows (RetransSegs of /proc/net/snmp in the sender's namespace) and gVisor's inside daemon A for ipsecstack (n/a while `ipsecstack stats` does not report it). Drops: sum over all rounds of rx+tx dropped of every interface on the path (ip -s link) and of the daemons' link drop counters when they have them.\n", r.CPUHow)
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// WriteJSON writes the report.
func (r *wireReport) WriteJSON(file string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

// SVG draws TCP throughput and UDP round trips per contender.
func (r *wireReport) SVG() string {
	var tcp, rr []bar
	for _, x := range r.Contenders {
		if len(x.Rounds) > 0 {
			tcp = append(tcp, bar{svgLabel(x.Name), x.MBps})
		}
		if len(x.RR) > 0 {
			rr = append(rr, bar{svgLabel(x.Name), x.RRtps / 1000})
		}
	}
	a := hbars(fmt.Sprintf("TCP one-way over a veth between two namespaces, %s, median of %d rounds", fmtBytes(r.Bytes), r.Rounds), "MB/s", tcp, 0, "")
	b := hbars("64-byte UDP request/response, one in flight", "k/s", rr, 0, "")
	return stackSVG(a, b)
}

// svgLabel shortens a contender's name to fit the plot's label column.
func svgLabel(name string) string {
	return strings.NewReplacer("ipsecstack ", "", " (plain gVisor)", "", ", --publish to a host sink", ", --publish",
		"strongSwan kernel-libipsec, ESP aes-gcm-128 UDP-encap tunnel", "strongSwan libipsec, aes-gcm-128 UDP tunnel",
		"Linux kernel, plain veth", "Linux kernel (plain veth)").Replace(name)
}

// stackSVG puts two hbars drawings one above the other.
func stackSVG(a, b string) string {
	h := func(s string) int {
		i := strings.Index(s, `height="`)
		n, _ := strconv.Atoi(s[i+8 : i+8+strings.IndexByte(s[i+8:], '"')])
		return n
	}
	ha, hb := h(a), h(b)
	inner := func(s string) string {
		s = s[strings.IndexByte(s, '\n')+1:]
		return strings.TrimSuffix(strings.TrimSpace(s), "</svg>")
	}
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="900" height="%d" font-family="sans-serif" font-size="12">`+"\n"+
		"<g>\n%s</g>\n<g transform=\"translate(0,%d)\">\n%s</g>\n</svg>\n", ha+hb, inner(a), ha, inner(b))
}

// parseSize reads 256M, 4MiB, 1G or a byte count.
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mul := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if strings.HasSuffix(t, u.suf) {
			t, mul = strings.TrimSuffix(t, u.suf), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q: want bytes or N[K|M|G][iB]", s)
	}
	return n * mul, nil
}

func (r wireRound) retransString() string {
	if r.RetransNA {
		return fmt.Sprintf("n/a (loopback %d)", r.LoopRetrans)
	}
	return strconv.FormatUint(r.Retrans, 10)
}
