package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the --wire benchmark's traffic
// programs, which runWire starts as `<this binary> wire-helper …`.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == wireHelperArg {
		os.Exit(wireHelper(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestWireSmoke runs `bench --wire` in miniature (4 MiB, one round, every
// contender) so the real-link benchmark never rots: every contender comes
// up, carries TCP and UDP, and is torn down with its namespaces. No ratio
// is asserted. Needs root and the peers' tools; without them it skips
// (under CI=true, which installs them, it fails).
func TestWireSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the real-link smoke run")
	}
	skip := func(format string, a ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: "+format, a...)
		}
		t.Skipf(format+": skipping", a...)
	}
	if os.Geteuid() != 0 {
		skip("needs root (network namespaces, veth and TAP devices, AF_PACKET)")
	}
	for _, tool := range []string{"ip", "bridge", "wg", "swanctl", "unshare", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip("needs %s on PATH (iproute2, wireguard-tools, strongswan-swanctl, util-linux, go)", tool)
		}
	}
	for _, f := range []string{"/dev/net/tun", "/usr/lib/ipsec/charon", "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"} {
		if _, err := os.Stat(f); err != nil {
			skip("needs %s (strongswan-charon, libcharon-extra-plugins)", f)
		}
	}
	var log bytes.Buffer
	start := time.Now()
	rep, err := runWire(wireOpts{Bytes: 4 << 20, Rounds: 1, RR: 300 * time.Millisecond, Log: &log})
	t.Logf("%v:\n%s", time.Since(start).Round(time.Millisecond), log.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.Skipped {
		t.Errorf("%s skipped: %s", s.Name, s.Reason)
	}
	if want := len(wireIDs()); len(rep.Contenders)+len(rep.Skipped) != want {
		t.Errorf("%d contenders ran, %d skipped; want %d", len(rep.Contenders), len(rep.Skipped), want)
	}
	for _, c := range rep.Contenders {
		if c.Failed != "" || len(c.Rounds) != 1 || len(c.RR) != 1 {
			t.Errorf("%s: %d TCP and %d UDP rounds, failed %q", c.Name, len(c.Rounds), len(c.RR), c.Failed)
			continue
		}
		if c.MBps <= 0 || c.RRtps <= 0 {
			t.Errorf("%s: %.1f MB/s, %.0f UDP RR/s", c.Name, c.MBps, c.RRtps)
		}
	}
	var md bytes.Buffer
	rep.Markdown(&md)
	if !strings.Contains(md.String(), "| Linux kernel, plain veth |") {
		t.Errorf("table without the kernel row:\n%s", md.String())
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Error(err)
	}
	if !strings.Contains(rep.SVG(), "</svg>") {
		t.Error("no SVG")
	}
	// Everything it made is gone.
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if m := wireNSName.FindStringSubmatch(strings.Fields(l + " x")[0]); m != nil && m[1] == strconv.Itoa(os.Getpid()) {
			t.Errorf("namespace %s left behind", l)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{{"256MiB", 256 << 20}, {"4M", 4 << 20}, {"1G", 1 << 30}, {"1000", 1000}, {"8kib", 8 << 10}} {
		if got, err := parseSize(c.in); err != nil || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "0", "-1M", "1T", "M"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q): no error", in)
		}
	}
}
