package main

import (
	"fmt"
	"html"
	"os"
	"path/filepath"
	"strings"
)

type bar struct {
	label string
	value float64
}

// hbars draws a horizontal bar chart; ref > 0 draws a dashed line there
// (a target) labelled refLabel.
func hbars(title, unit string, bars []bar, ref float64, refLabel string) string {
	const left, right, rowH, top = 330, 90, 18, 40
	width := 900
	plotW := width - left - right
	maxV := ref
	for _, b := range bars {
		maxV = max(maxV, b.value)
	}
	if maxV <= 0 {
		maxV = 1
	}
	maxV *= 1.05
	h := top + rowH*len(bars) + 30
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, h)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&s, `<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", 10, html.EscapeString(title))
	for i, b := range bars {
		y := top + i*rowH
		w := int(float64(plotW) * b.value / maxV)
		color := "#4878a8"
		if ref > 0 && b.value < ref {
			color = "#c8553d"
		}
		fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-6, y+13, html.EscapeString(b.label))
		fmt.Fprintf(&s, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", left, y+2, max(w, 1), rowH-4, color)
		fmt.Fprintf(&s, `<text x="%d" y="%d">%s</text>`+"\n", left+w+4, y+13, html.EscapeString(fmtNum(b.value)+" "+unit))
	}
	if ref > 0 {
		x := left + int(float64(plotW)*ref/maxV)
		fmt.Fprintf(&s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black" stroke-dasharray="4,3"/>`+"\n", x, top-4, x, top+rowH*len(bars))
		fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x, top+rowH*len(bars)+16, html.EscapeString(refLabel))
	}
	s.WriteString("</svg>\n")
	return s.String()
}

// writeSVGs draws one plot per suite that ran.
func writeSVGs(dir string, r *Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	plots := map[string]string{}
	var tcp, cores, udp, tr, lookups, replays []bar
	seen := map[string]bool{}
	for _, x := range r.List {
		switch x.Suite {
		case "tcp":
			if x.Metric != "throughput" {
				continue
			}
			if strings.HasSuffix(x.Case, " vs wireguard-go") {
				if !seen["wg"] {
					seen["wg"] = true
					tcp = append(tcp, bar{"wireguard-go netstack", x.Baseline})
				}
				continue
			}
			if !seen["plain"] {
				seen["plain"] = true
				tcp = append(tcp, bar{"plain gVisor", x.Baseline})
			}
			tcp = append(tcp, bar{x.Case, x.Value})
		case "transforms":
			if strings.HasSuffix(x.Case, " 1400 B") {
				tr = append(tr, bar{strings.TrimSuffix(x.Case, " 1400 B") + " " + x.Metric, x.Ratio})
			}
		case "udp":
			udp = append(udp, bar{x.Case + " (vs plain)", x.Ratio})
		case "cores":
			cores = append(cores, bar{x.Case + " / 1 flow", x.Ratio})
		case "spd":
			if strings.HasPrefix(x.Metric, "lookup") || strings.HasPrefix(x.Metric, "SPI lookup") || strings.HasPrefix(x.Metric, "insert") {
				lookups = append(lookups, bar{x.Case + ", " + x.Metric, x.Value})
			}
		case "replay":
			replays = append(replays, bar{x.Case + ", " + x.Metric, x.Value})
		}
	}
	if len(tcp) > 0 {
		plots["tcp.svg"] = hbars("TCP bulk throughput, two stacks over the in-memory link (same run)", "MB/s", tcp, 0, "")
	}
	if len(tr) > 0 {
		plots["transforms.svg"] = hbars("Transforms at 1400 B: speed relative to the raw primitive (target 0.85x)", "x", tr, 0.85, "0.85x")
	}
	if len(udp)+len(cores) > 0 {
		plots["small-packets-cores.svg"] = hbars("64-byte UDP echo vs plain gVisor; 2 flows on 2 SAs vs 1 flow (target 1.7x)", "x", append(udp, cores...), 0, "")
	}
	if len(lookups) > 0 {
		plots["spd.svg"] = hbars("SPD lookup and insertion, SAD lookup", "ns", lookups, 0, "")
	}
	if len(replays) > 0 {
		plots["replay.svg"] = hbars("Anti-replay check+update per packet (target < 5 ns)", "ns", replays, 5, "5 ns")
	}
	for name, body := range plots {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}
