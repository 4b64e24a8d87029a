package leakcheck

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Verdict is what the checker concluded about a frame.
type Verdict int

// Verdicts.
const (
	// NotIP: not an IPv4 or IPv6 frame (ARP, for example).
	NotIP Verdict = iota
	// Clear: in clear, and no protected flow matches it (or a Clear flow
	// matches it first).
	Clear
	// Protected: ESP, AH, IPComp, or ESP in UDP.
	Protected
	// Pending: a fragment whose datagram is not complete yet; the frame
	// that completes it (or Flush) gives the datagram's verdict.
	Pending
	// Leak: in clear, and a protected flow matches it (or may match it:
	// a field the flow restricts could not be read), or an ICMP error in
	// clear quotes such a packet.
	Leak
	// Unclassifiable: malformed in a way no end host would accept, and
	// not a leak in any reading of it.
	Unclassifiable
)

// String names the verdict.
func (v Verdict) String() string {
	switch v {
	case NotIP:
		return "not IP"
	case Clear:
		return "clear"
	case Protected:
		return "protected"
	case Pending:
		return "pending"
	case Leak:
		return "leak"
	case Unclassifiable:
		return "unclassifiable"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Finding is a leak or an unclassifiable datagram.
type Finding struct {
	Verdict Verdict
	// Frame is the 1-based number of the frame (or packet) the checker
	// was given that settled it: the fragment that completed a datagram,
	// or for a datagram Flush found incomplete its first fragment seen.
	Frame int
	// Reason says what was seen and which flow it matches.
	Reason string
	// Hex is the start of that frame (up to 128 bytes), for the report.
	Hex string
}

// String is the finding as a test reports it: frame number, verdict,
// reason and the frame's first bytes.
func (f Finding) String() string {
	s := fmt.Sprintf("%s: %s", f.Verdict, f.Reason)
	if f.Frame > 0 {
		s = fmt.Sprintf("frame %d: %s", f.Frame, s)
	}
	if f.Hex != "" {
		s += " [" + f.Hex + "]"
	}
	return s
}

// Stats counts what the checker saw.
type Stats struct {
	Frames         int // frames and packets given
	IP             int // of which IPv4 or IPv6
	Fragments      int // IP fragments (not atomic ones)
	Reassembled    int // datagrams reassembled from fragments
	Incomplete     int // fragment trains Flush (or eviction) found incomplete
	Overlaps       int // reassembled datagrams with overlapping fragments
	Protected      int // IPsec frames
	Clear          int // frames and reassembled datagrams allowed in clear
	Leaks          int
	Unclassifiable int
}

// Config configures a Checker.
type Config struct {
	// Flows are the protected flows (and Clear exceptions), first match
	// wins.
	Flows []Flow
	// ESPInUDPPorts are the UDP ports whose datagrams with a non-zero
	// SPI are ESP in UDP (RFC 3948); nil means {4500}. Set explicitly,
	// it also says that ESP in UDP is in use: a UDP fragment without its
	// ports is then judged with its datagram (a leak once reassembled as
	// cleartext, or when it never completes), not on its own.
	ESPInUDPPorts []uint16
	// MaxTrains bounds the datagrams being reassembled (0 = 1024); the
	// oldest is judged incomplete when a new one would exceed it.
	MaxTrains int
	// MaxFindings bounds the findings kept (0 = 100); Stats counts all.
	MaxFindings int
}

// Checker classifies captured frames. It is safe for concurrent use.
type Checker struct {
	mu       sync.Mutex
	cfg      Config
	p        parser
	trains   map[trainKey]*train
	seq      uint64
	stats    Stats
	findings []Finding
	// encapInUse: ESPInUDPPorts was set explicitly (see Config).
	encapInUse bool
}

// train is a datagram being reassembled.
type train struct {
	key   trainKey
	frags []storedFrag // in arrival order
	end   int          // length of the reassembled payload; -1 until the last fragment
	bad   []string
	seq   uint64 // when it started, for eviction
	first int    // frame number of its first fragment
	head  []byte // the start of that frame, for the report
	size  int
	// reported: a fragment on its own was already reported as a leak.
	reported bool
	// maybe: what its fragments on their own may leak (judged by Flush
	// when the datagram never completes).
	maybe string
}

type storedFrag struct {
	off  int
	more bool
	data []byte
}

const maxTrainBytes = 1 << 17 // an IP datagram is at most 65535 bytes

// New returns a checker for cfg (the flows are copied).
func New(cfg Config) *Checker {
	cfg.Flows = slices.Clone(cfg.Flows)
	encap := cfg.ESPInUDPPorts != nil
	if cfg.ESPInUDPPorts == nil {
		cfg.ESPInUDPPorts = []uint16{4500}
	}
	if cfg.MaxTrains <= 0 {
		cfg.MaxTrains = 1024
	}
	if cfg.MaxFindings <= 0 {
		cfg.MaxFindings = 100
	}
	return &Checker{cfg: cfg, p: parser{espPorts: cfg.ESPInUDPPorts}, trains: map[trainKey]*train{}, encapInUse: encap}
}

// SetFlows replaces the flows (for a test that changes its policies).
func (c *Checker) SetFlows(flows []Flow) {
	c.mu.Lock()
	c.cfg.Flows = slices.Clone(flows)
	c.mu.Unlock()
}

// Frame classifies an Ethernet frame (802.1Q/802.1ad tags are skipped).
func (c *Checker) Frame(frame []byte) Verdict {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Frames++
	b := frame
	if len(b) < 14 {
		return NotIP
	}
	et := binary.BigEndian.Uint16(b[12:])
	b = b[14:]
	for (et == 0x8100 || et == 0x88a8) && len(b) >= 4 {
		et = binary.BigEndian.Uint16(b[2:])
		b = b[4:]
	}
	switch et {
	case 0x0800, 0x86dd:
	default:
		return NotIP
	}
	if len(b) > 0 && (b[0]>>4 == 4) != (et == 0x0800) {
		return c.finding(Unclassifiable, frame, fmt.Sprintf("IP version %d in a frame of ethertype %#04x", b[0]>>4, et))
	}
	return c.packet(frame, b)
}

// Packet classifies a bare IP packet.
func (c *Checker) Packet(ip []byte) Verdict {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Frames++
	return c.packet(ip, ip)
}

// judgement sums up the readings of one datagram or fragment.
type judgement struct {
	leak      match
	why       string // the leak
	bad       string // the first malformation
	protected bool
	fragMaybe string // a leak the rest of a fragment's datagram may settle
}

func (c *Checker) judge(rs []reading) judgement {
	var j judgement
	for _, r := range rs {
		switch r.kind {
		case kindBad:
			if j.bad == "" {
				j.bad = r.why
			}
		case kindProtected:
			j.protected = true
		case kindTuple, kindQuoted:
			o := evaluate(c.cfg.Flows, r.t)
			if r.kind == kindQuoted {
				// The error travels back towards the quoted packet's
				// source: judge the quoted flow both ways.
				if or := evaluate(c.cfg.Flows, r.t.reversed()); or.leak > o.leak {
					o = or
				}
			}
			if o.leak == yes && r.frag && !r.t.l4 && r.t.proto == protoUDP && c.encapInUse {
				// A UDP fragment without its ports may be part of
				// ESP in UDP (RFC 3948): its datagram, once
				// reassembled (or found incomplete), decides.
				o.leak = maybe
			}
			if o.leak == no {
				continue
			}
			what := fmt.Sprintf("%v in clear", r.t)
			if r.kind == kindQuoted {
				what = fmt.Sprintf("an ICMP error in clear quoting %v", r.t)
			}
			desc := fmt.Sprintf("%s matches protected flow %q", what, o.flow)
			if o.leak == maybe {
				desc = fmt.Sprintf("%s may match protected flow %q (a field it restricts is unknown)", what, o.flow)
			}
			if o.leak == maybe && r.frag {
				if j.fragMaybe == "" {
					j.fragMaybe = desc
				}
				continue
			}
			if j.leak == no {
				j.why = desc
			}
			j.leak = yes
		}
	}
	return j
}

func (c *Checker) packet(frame, ip []byte) Verdict {
	c.stats.IP++
	p := &c.p
	p.readings, p.frags = p.readings[:0], p.frags[:0]
	p.ip(ctx{}, ip)
	j := c.judge(p.readings)
	if len(p.frags) == 0 {
		return c.conclude(frame, j, "")
	}
	c.stats.Fragments++
	frameNo := c.stats.Frames
	frags := slices.Clone(p.frags) // p is reused by reassembly
	v := Pending
	fresh := false // a train not reported as a leak yet
	for _, f := range frags {
		tr := c.trains[f.key]
		if tr == nil {
			c.evictFor()
			c.seq++
			tr = &train{key: f.key, end: -1, seq: c.seq, first: frameNo, head: slices.Clone(frame[:min(len(frame), 128)])}
			c.trains[f.key] = tr
		}
		if !tr.reported {
			fresh = true
		}
		if j.leak == yes {
			tr.reported = true
		}
		if j.fragMaybe != "" && tr.maybe == "" {
			tr.maybe = j.fragMaybe
		}
		if dv, done := c.addFragment(frame, tr, f); done && (v == Pending || rank(dv) > rank(v)) {
			v = dv
		}
	}
	switch {
	case j.leak == yes && fresh:
		return c.finding(Leak, frame, "fragment: "+j.why)
	case j.leak == yes:
		return Leak // its datagram was reported already
	case v == Leak:
	case j.bad != "":
		return c.finding(Unclassifiable, frame, "fragment: "+j.bad)
	}
	return v
}

// rank orders the verdicts of the datagrams one frame completes (a frame
// the parser reads in several ways may complete more than one).
func rank(v Verdict) int {
	switch v {
	case Leak:
		return 4
	case Unclassifiable:
		return 3
	case Clear:
		return 2
	case Protected:
		return 1
	}
	return 0
}

// conclude turns the judgement of a whole datagram into a verdict.
func (c *Checker) conclude(frame []byte, j judgement, prefix string) Verdict {
	if j.leak == no && j.fragMaybe != "" {
		// A whole datagram: what may leak is judged a leak.
		j.leak, j.why = maybe, j.fragMaybe
	}
	switch {
	case j.leak != no:
		return c.finding(Leak, frame, prefix+j.why)
	case j.bad != "":
		return c.finding(Unclassifiable, frame, prefix+j.bad)
	case j.protected:
		c.stats.Protected++
		return Protected
	}
	c.stats.Clear++
	return Clear
}

func (c *Checker) finding(v Verdict, frame []byte, reason string) Verdict {
	return c.findingAt(v, c.stats.Frames, frame, reason)
}

// findingAt records a finding settled by frame number n.
func (c *Checker) findingAt(v Verdict, n int, frame []byte, reason string) Verdict {
	switch v {
	case Leak:
		c.stats.Leaks++
	case Unclassifiable:
		c.stats.Unclassifiable++
	}
	if len(c.findings) < c.cfg.MaxFindings {
		c.findings = append(c.findings, Finding{Verdict: v, Frame: n, Reason: reason,
			Hex: hex.EncodeToString(frame[:min(len(frame), 128)])})
	}
	return v
}

// addFragment stores f in tr and, when that completes the datagram,
// judges it.
func (c *Checker) addFragment(frame []byte, tr *train, f fragment) (Verdict, bool) {
	if tr.size+len(f.data) > maxTrainBytes || len(tr.frags) >= maxTrainBytes/8 {
		tr.bad = append(tr.bad, "more fragments than a datagram can have")
		return Pending, false
	}
	tr.size += len(f.data)
	tr.frags = append(tr.frags, storedFrag{off: f.off, more: f.more, data: slices.Clone(f.data)})
	if !f.more {
		end := f.off + len(f.data)
		if tr.end >= 0 && tr.end != end {
			tr.bad = append(tr.bad, fmt.Sprintf("last fragments disagree on the length (%d and %d)", tr.end, end))
		}
		if tr.end < 0 || end > tr.end {
			tr.end = end
		}
	}
	if tr.end < 0 {
		return Pending, false
	}
	// Complete when the fragments cover 0..end without a gap.
	order := slices.Clone(tr.frags)
	slices.SortStableFunc(order, func(a, b storedFrag) int { return a.off - b.off })
	covered := 0
	for _, s := range order {
		if s.off > covered {
			return Pending, false
		}
		covered = max(covered, s.off+len(s.data))
	}
	if covered < tr.end {
		return Pending, false
	}
	delete(c.trains, tr.key)
	c.stats.Reassembled++
	// Overlapping fragments (RFC 5722 forbids them for IPv6; IPv4 hosts
	// differ on which copy wins): judge the datagram both ways.
	firstWins, lastWins, overlap := images(tr.frags, covered)
	if overlap {
		c.stats.Overlaps++
	}
	prefix := fmt.Sprintf("datagram reassembled from %d fragments (frames %d-%d): ", len(tr.frags), tr.first, c.stats.Frames)
	js := []judgement{c.judgeDatagram(tr, firstWins)}
	if lastWins != nil {
		j := c.judgeDatagram(tr, lastWins)
		if j.leak != no || j.fragMaybe != "" {
			prefix += "(overlapping fragments, last copy wins) "
		}
		js = append(js, j)
	}
	j := js[0]
	for _, o := range js[1:] {
		if (o.leak > j.leak) || (j.leak == no && j.fragMaybe == "" && o.fragMaybe != "") {
			j.leak, j.why, j.fragMaybe = o.leak, o.why, o.fragMaybe
		}
		if j.bad == "" {
			j.bad = o.bad
		}
	}
	if covered > tr.end {
		tr.bad = append(tr.bad, fmt.Sprintf("fragments extend to %d beyond the last one's end %d", covered, tr.end))
	}
	if j.bad == "" && len(tr.bad) > 0 {
		j.bad = tr.bad[0]
	}
	if tr.reported {
		// The leak was reported from a fragment already.
		return Leak, true
	}
	return c.conclude(frame, j, prefix), true
}

// images lays the fragments out (first copy wins) and, if overlapping
// fragments disagree, also with the last copy winning.
func images(frags []storedFrag, n int) (firstWins, lastWins []byte, overlap bool) {
	firstWins = make([]byte, n)
	filled := make([]bool, n)
	differ := false
	for _, f := range frags {
		for i, v := range f.data {
			at := f.off + i
			if filled[at] {
				overlap = true
				if firstWins[at] != v {
					differ = true
				}
				continue
			}
			filled[at], firstWins[at] = true, v
		}
	}
	if !differ {
		return firstWins, nil, overlap
	}
	lastWins = make([]byte, n)
	for _, f := range frags {
		copy(lastWins[f.off:], f.data)
	}
	return firstWins, lastWins, overlap
}

func (c *Checker) judgeDatagram(tr *train, payload []byte) judgement {
	p := &c.p
	p.readings, p.frags = p.readings[:0], p.frags[:0]
	cx := ctx{t: tuple{fam: tr.key.fam, src: tr.key.src, dst: tr.key.dst}, reassembled: true}
	if tr.key.fam == 4 {
		p.payload(cx, tr.key.nh, payload)
	} else {
		p.walk6(cx, tr.key.nh, payload)
	}
	return c.judge(p.readings)
}

// evictFor makes room for one more train by judging the oldest.
func (c *Checker) evictFor() {
	if len(c.trains) < c.cfg.MaxTrains {
		return
	}
	var old *train
	for _, tr := range c.trains {
		if old == nil || tr.seq < old.seq {
			old = tr
		}
	}
	c.incomplete(old)
}

// incomplete judges a train that will not complete: what its fragments
// may leak on their own is a leak.
func (c *Checker) incomplete(tr *train) {
	delete(c.trains, tr.key)
	c.stats.Incomplete++
	n := 0
	for _, f := range tr.frags {
		n += len(f.data)
	}
	what := fmt.Sprintf("incomplete datagram (%d fragments, %d bytes; the frame is its first fragment seen): ", len(tr.frags), n)
	switch {
	case tr.reported:
	case tr.maybe != "":
		c.findingAt(Leak, tr.first, tr.head, what+tr.maybe)
	case len(tr.bad) > 0:
		c.findingAt(Unclassifiable, tr.first, tr.head, what+tr.bad[0])
	}
}

// Flush judges the datagrams still being reassembled as they are: one
// whose fragments may belong to a protected flow is a leak. Call it when
// the capture is over.
func (c *Checker) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	trs := make([]*train, 0, len(c.trains))
	for _, tr := range c.trains {
		trs = append(trs, tr)
	}
	slices.SortFunc(trs, func(a, b *train) int { return int(a.seq - b.seq) })
	for _, tr := range trs {
		c.incomplete(tr)
	}
}

// Findings returns the leaks and unclassifiable datagrams found so far
// (at most Config.MaxFindings).
func (c *Checker) Findings() []Finding {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.findings)
}

// Stats returns the counters.
func (c *Checker) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Err returns an error describing the leaks (and, when strict, the
// unclassifiable datagrams) found so far, or nil.
func (c *Checker) Err(strict bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.stats.Leaks
	if strict {
		n += c.stats.Unclassifiable
	}
	if n == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d leaks, %d unclassifiable datagrams in %d frames", c.stats.Leaks, c.stats.Unclassifiable, c.stats.Frames)
	shown := 0
	for _, f := range c.findings {
		if f.Verdict == Leak || strict {
			if shown == 10 {
				b.WriteString("\n...")
				break
			}
			b.WriteString("\n" + f.String())
			shown++
		}
	}
	return errors.New(b.String())
}
