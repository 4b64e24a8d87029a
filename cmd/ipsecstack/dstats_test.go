package main

import (
	"io"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/ipsecstack/ipsecstack/link/afpacket"
	"github.com/ipsecstack/ipsecstack/link/memlink"
	"github.com/ipsecstack/ipsecstack/link/tap"
	"github.com/ipsecstack/ipsecstack/stack"
)

// The links whose kernel drops the daemon reads.
var (
	_ linkDropper = (*afpacket.Endpoint)(nil)
	_ linkDropper = (*tap.Endpoint)(nil)
)

type fakeDropper uint64

func (f fakeDropper) KernelDrops() uint64 { return uint64(f) }

// TestLinkDropsShown checks that the link's kernel drops and the frames
// the link refused reach `ipsecstack stats` (Snapshot) and /metrics, by
// the names the README gives.
func TestLinkDropsShown(t *testing.T) {
	l, _ := memlink.NewPair("\x02\x00\x00\x00\x00\x01", "\x02\x00\x00\x00\x00\x02", 1500)
	st, err := stack.New(stack.Config{Link: l, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Endpoint.Stats.OutLinkDropped.Add(3)
	st.Endpoint.Stats.OutFrames.Add(5)
	ds := &daemonStats{eng: st.Engine, links: []linkDropper{fakeDropper(4), fakeDropper(3)}, st: st}
	got := map[string]uint64{}
	for _, s := range ds.Snapshot() {
		got[s.Name] = s.Value
	}
	if _, ok := got["TcpRetransSegs"]; !ok {
		t.Error("stats: no TcpRetransSegs")
	}
	if got["LinkRxKernelDrops"] != 7 || got["LinkTxDropped"] != 3 || got["LinkTxDirectFrames"] != 5 {
		t.Errorf("stats: LinkRxKernelDrops %d, LinkTxDropped %d, LinkTxDirectFrames %d; want 7, 3, 5",
			got["LinkRxKernelDrops"], got["LinkTxDropped"], got["LinkTxDirectFrames"])
	}
	srv := httptest.NewServer(metricsHandler(st, ds))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`ipsecstack_daemon_stat_total{stat="LinkRxKernelDrops"} 7`,
		`ipsecstack_daemon_stat_total{stat="LinkTxDropped"} 3`,
		`ipsecstack_daemon_stat_total{stat="LinkTxDirectFrames"} 5`,
		`ipsecstack_link_packets_total{event="out_link_dropped"} 3`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
