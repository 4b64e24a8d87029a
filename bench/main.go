package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// opts are the knobs every suite reads.
type opts struct {
	quick bool
}

type suite struct {
	name string
	run  func(o opts, r *Results) error
}

var suites = []suite{
	{"transforms", runTransforms},
	{"replay", runReplay},
	{"spd", runSPD},
	{"udp", runUDP},
	{"tcp", runTCP},
	{"cores", runCores},
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == wireHelperArg {
		os.Exit(wireHelper(os.Args[2:]))
	}
	wire := flag.Bool("wire", false, "run the real-link benchmark instead of the suites (root: namespaces, veth, AF_PACKET, TAP; kernel, ipsecstack daemons, wireguard-go, strongSwan)")
	wireBytes := flag.String("wire-bytes", "256MiB", "--wire: bytes per TCP transfer (N, NK, NM, NG)")
	wireRounds := flag.Int("wire-rounds", 3, "--wire: interleaved rounds (the median is reported)")
	wireRR := flag.Duration("wire-rr", 3*time.Second, "--wire: UDP request/response time per contender and round")
	wireOnly := flag.String("wire-only", "", "--wire: comma-separated contenders, by id or id prefix (default all: "+strings.Join(wireIDs(), ",")+")")
	wirePprof := flag.String("wire-pprof", "", "--wire: write a CPU profile of every ipsecstack daemon (its --pprof) per TCP round into this directory; the profile covers the round's first "+wirePprofSeconds.String()+", so pick --wire-bytes to outlast that")
	quick := flag.Bool("quick", false, "short runs (under 2 minutes on 2 cores)")
	jsonFile := flag.String("json", "", "write every result to this JSON file")
	svgDir := flag.String("svg", "", "draw the plots into this directory")
	only := flag.String("suites", "", "comma-separated suites to run (default all: transforms,replay,spd,udp,tcp,cores)")
	flag.Parse()
	if *wire {
		os.Exit(mainWire(*wireBytes, *wireRounds, *wireRR, *wireOnly, *wirePprof, *jsonFile, *svgDir))
	}

	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			want[s] = true
		}
	}
	for s := range want {
		ok := false
		for _, x := range suites {
			ok = ok || x.name == s
		}
		if !ok {
			fmt.Fprintf(os.Stderr, "bench: unknown suite %q\n", s)
			os.Exit(2)
		}
	}
	r := &Results{Log: os.Stderr}
	start := time.Now()
	load0 := loadavg()
	failed := false
	for _, s := range suites {
		if len(want) > 0 && !want[s.name] {
			continue
		}
		fmt.Fprintf(os.Stderr, "suite %s (load %s)\n", s.name, loadavg())
		t0 := time.Now()
		if err := s.run(opts{quick: *quick}, r); err != nil {
			fmt.Fprintf(os.Stderr, "bench: suite %s: %v\n", s.name, err)
			failed = true
		}
		fmt.Fprintf(os.Stderr, "suite %s done in %v\n", s.name, time.Since(t0).Round(time.Millisecond))
	}
	fmt.Printf("%s, %d cores (GOMAXPROCS %d), %s; load average %s at start, %s at end; %v.\n",
		cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), load0, loadavg(),
		time.Since(start).Round(time.Second))
	fmt.Println("Ratios are relative speeds against the baseline measured alongside in the same run (above 1 = faster).")
	r.Markdown(os.Stdout)
	if *jsonFile != "" {
		if err := r.WriteJSON(*jsonFile); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			failed = true
		}
	}
	if *svgDir != "" {
		if err := writeSVGs(*svgDir, r); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func mainWire(size string, rounds int, rr time.Duration, only, pprofDir, jsonFile, svgDir string) int {
	n, err := parseSize(size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: --wire-bytes:", err)
		return 2
	}
	if rounds < 1 || rr <= 0 {
		fmt.Fprintln(os.Stderr, "bench: --wire-rounds and --wire-rr must be positive")
		return 2
	}
	o := wireOpts{Bytes: n, Rounds: rounds, RR: rr, Log: os.Stderr, Pprof: pprofDir}
	if pprofDir != "" {
		if err := os.MkdirAll(pprofDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "bench: --wire-pprof:", err)
			return 2
		}
	}
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		known := false
		for _, id := range wireIDs() {
			known = known || wireWanted([]string{s}, id)
		}
		if !known {
			fmt.Fprintf(os.Stderr, "bench: --wire-only %q: no such contender (have %s)\n", s, strings.Join(wireIDs(), ","))
			return 2
		}
		o.Only = append(o.Only, s)
	}
	load0 := loadavg()
	rep, err := runWire(o)
	if rep != nil && len(rep.Contenders)+len(rep.Skipped) > 0 {
		fmt.Printf("Load average %s at start, %s at end; %s.\n", load0, loadavg(), runtime.Version())
		rep.Markdown(os.Stdout)
		if jsonFile != "" {
			if err := rep.WriteJSON(jsonFile); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				return 1
			}
		}
		if svgDir != "" {
			if err := os.WriteFile(filepath.Join(svgDir, "wire.svg"), []byte(rep.SVG()), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				return 1
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: --wire:", err)
		return 1
	}
	return 0
}
