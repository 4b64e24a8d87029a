package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
)

// Result is one measured figure. Ratio is a relative speed against
// Baseline (measured in the same run, interleaved): above 1 is faster.
type Result struct {
	Suite    string  `json:"suite"`
	Case     string  `json:"case"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Baseline float64 `json:"baseline"`
	Ratio    float64 `json:"ratio"`
	// Against names what Baseline measured.
	Against string `json:"against,omitempty"`
	// Note carries extra facts (allocations per packet, target).
	Note string `json:"note,omitempty"`
}

// Results collects a run's results.
type Results struct {
	List []Result
	// Log gets progress lines.
	Log io.Writer
}

func (r *Results) add(res Result) {
	if math.IsNaN(res.Ratio) || math.IsInf(res.Ratio, 0) {
		res.Ratio = 0
	}
	r.List = append(r.List, res)
	if r.Log != nil {
		fmt.Fprintf(r.Log, "  %-10s %-44s %-22s %s\n", res.Suite, res.Case, res.Metric, fmtRatio(res))
	}
}

// speed adds a result whose unit is a time (lower is better): the ratio
// is baseline/value.
func (r *Results) time(suite, cas, metric, unit string, v, base float64, against, note string) {
	r.add(Result{Suite: suite, Case: cas, Metric: metric, Value: v, Unit: unit, Baseline: base,
		Ratio: base / v, Against: against, Note: note})
}

// rate adds a result whose unit is a rate (higher is better): the ratio is
// value/baseline, or the given ratio when ratio > 0 (a median of per-round
// ratios).
func (r *Results) rate(suite, cas, metric, unit string, v, base, ratio float64, against, note string) {
	if ratio <= 0 {
		ratio = v / base
	}
	r.add(Result{Suite: suite, Case: cas, Metric: metric, Value: v, Unit: unit, Baseline: base,
		Ratio: ratio, Against: against, Note: note})
}

func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtRatio(r Result) string {
	if r.Baseline == 0 {
		return fmt.Sprintf("%s %s", fmtNum(r.Value), r.Unit)
	}
	return fmt.Sprintf("%s %s vs %s %s = %.2fx", fmtNum(r.Value), r.Unit, fmtNum(r.Baseline), r.Unit, r.Ratio)
}

// Markdown writes one table per suite.
func (r *Results) Markdown(w io.Writer) {
	var suites []string
	seen := map[string]bool{}
	for _, x := range r.List {
		if !seen[x.Suite] {
			seen[x.Suite] = true
			suites = append(suites, x.Suite)
		}
	}
	for _, s := range suites {
		fmt.Fprintf(w, "\n#### %s\n\n", suiteTitle[s])
		fmt.Fprintln(w, "| case | metric | value | baseline | ratio | notes |")
		fmt.Fprintln(w, "|---|---|---:|---|---:|---|")
		for _, x := range r.List {
			if x.Suite != s {
				continue
			}
			base := ""
			if x.Against != "" || x.Baseline != 0 {
				base = strings.TrimSpace(fmt.Sprintf("%s %s %s", x.Against, fmtNum(x.Baseline), x.Unit))
			}
			ratio := ""
			if x.Ratio != 0 {
				ratio = fmt.Sprintf("%.2fx", x.Ratio)
			}
			fmt.Fprintf(w, "| %s | %s | %s %s | %s | %s | %s |\n", x.Case, x.Metric, fmtNum(x.Value), x.Unit, base, ratio, x.Note)
		}
	}
}

// WriteJSON writes every result.
func (r *Results) WriteJSON(file string) error {
	b, err := json.MarshalIndent(r.List, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

var suiteTitle = map[string]string{
	"transforms": "Transforms: ESP against the raw primitive on the same buffers",
	"tcp":        "TCP bulk throughput over the in-memory link",
	"udp":        "Small packets: 64-byte UDP echo",
	"spd":        "SPD and SAD",
	"replay":     "Anti-replay window",
	"cores":      "Two cores: two flows on two SAs against one",
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
