package integration

import (
	"flag"
	"fmt"
	"strings"
	"time"
)

// updateReport writes integration/REPORT.md from the matrix run:
//
//	go test -count=1 -run TestLinuxXFRM ./integration/ -update
var updateReport = flag.Bool("update", false, "write REPORT.md from TestLinuxXFRM's results")

// caseResult is one row of the report.
type caseResult struct {
	Case  linuxCase
	Cells map[string]string // column -> ok / FAIL
	Skip  string
	Pass  bool
	Dur   time.Duration
}

type report struct {
	Boot, Total time.Duration
	Start       time.Time
	Tools       string
	Rows        []*caseResult
	groups      []string
	groupT      map[string]time.Duration
	cur         string
	curStart    time.Time
}

func (r *report) groupStart(g string) {
	r.flushGroup()
	r.cur, r.curStart = g, time.Now()
	r.groups = append(r.groups, g)
}

func (r *report) flushGroup() {
	if r.cur == "" {
		return
	}
	if r.groupT == nil {
		r.groupT = map[string]time.Duration{}
	}
	r.groupT[r.cur] = time.Since(r.curStart)
}

func (r *report) add(c *caseResult) { r.Rows = append(r.Rows, c) }

// markdown renders one row per case: suite, mode and family, then one
// column per traffic and direction (s→k: ipsecstack initiates or sends;
// k→s: the Linux kernel does), "–" where the case has no such traffic or
// the tool cannot handle the algorithm.
func (r *report) markdown() string {
	r.flushGroup()
	var b strings.Builder
	b.WriteString("| group | suite | mode/family | result | time |")
	for _, c := range columns {
		b.WriteString(" " + c + " |")
	}
	b.WriteString("\n|---|---|---|---|---:|")
	for range columns {
		b.WriteString(":-:|")
	}
	b.WriteString("\n")
	pass, fail, skip := 0, 0, 0
	for _, row := range r.Rows {
		c := row.Case
		mf := c.modeFam()
		if c.NDP {
			mf += " +ndp"
		}
		if c.ExtHdrs {
			mf += " +exthdr"
		}
		res := "PASS"
		switch {
		case row.Skip != "":
			res, skip = "SKIP", skip+1
		case !row.Pass:
			res, fail = "**FAIL**", fail+1
		default:
			pass++
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.1fs |", c.Group, c.suiteName(), mf, res, row.Dur.Seconds())
		for _, col := range columns {
			v := row.Cells[col]
			switch v {
			case "":
				v = "–"
			case "FAIL":
				v = "**FAIL**"
			}
			b.WriteString(" " + v + " |")
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\n%d cases: %d pass, %d fail, %d skipped. Boot %.1fs; whole matrix %.0fs (",
		len(r.Rows), pass, fail, skip, r.Boot.Seconds(), r.Total.Seconds())
	for i, g := range r.groups {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %.0fs", g, r.groupT[g].Seconds())
	}
	b.WriteString(").\n")
	for _, row := range r.Rows {
		if row.Skip != "" {
			fmt.Fprintf(&b, "\nSkipped %s: %s\n", row.Case.Name(), row.Skip)
		}
	}
	return b.String()
}

func (r *report) document(table string) string {
	return "# Linux XFRM interop report\n\n" +
		"Written by `go test -count=1 -run TestLinuxXFRM ./integration/ -update` " +
		"(see README.md, \"Interop with Linux\"). Peer: Debian's Linux 6.1 under qemu TCG; " +
		"tools: " + r.Tools + ". Generated " + r.Start.UTC().Format("2006-01-02 15:04 UTC") + ".\n\n" +
		"Columns: s→k = ipsecstack initiates (or sends), k→s = the Linux kernel does; " +
		"replay →k / →s = a captured packet re-sent into the kernel / the stack is rejected " +
		"(XfrmInStateSeqError +1 on that side); scapy →s = scapy-built packets accepted by ipsecstack; " +
		"scapy ←s = scapy decrypts what ipsecstack sent; tshark = every ESP packet of the capture has a good ICV; " +
		"udpencap (natt) = every IPsec packet is ESP in UDP 4500→4500 with a correct UDP length and checksum, " +
		"and tshark dissects it as udp:udpencap:esp; " +
		"– = not part of this case or the tool cannot handle the algorithm.\n\n" + table
}
