package main

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Metrics (--metrics ADDR, path /metrics), read from the engine and the
// stack at scrape time:
//
//	ipsecstack_xfrm_stat_total{stat="XfrmInNoStates"}   one family, the
//	    Linux /proc/net/xfrm_stat name as the label: the values are those
//	    `ipsecstack stats` prints
//	ipsecstack_sa_bytes_total, _packets_total, _replay_errors_total,
//	    _integrity_errors_total {spi,src,dst,proto,mode}
//	ipsecstack_sa_state{spi,src,dst,proto,mode,state}  1 for the SA's
//	    state, 0 for the others (larval, mature, dying, dead)
//	ipsecstack_sad_entries, ipsecstack_spd_policies
//	ipsecstack_link_packets_total{event}   the IPsec wrapper's counters
//	    (out_passed, out_protected, out_dropped, out_fragments,
//	    out_df_cleared, out_too_big, ptb_injected, pmtu_updates, in_checked,
//	    in_dropped, in_ipsec, in_fragments, reinjected, in_nat_keepalive,
//	    in_nat_ike, out_nat_keepalive, out_nat_keepalive_errors,
//	    out_link_dropped)
//	ipsecstack_nic_{rx,tx}_{packets,bytes}_total   the NIC's wire counters
//	ipsecstack_daemon_stat_total{stat="ForwardTCPRefused"}   the daemon's
//	    own counters (control socket, relays), named as in `ipsecstack stats`
//	ipsecstack_ike_sas{state="established"|"half_open"},
//	    ipsecstack_ike_child_sas   IKE and CHILD SAs of the --ike daemon
//	ipsecstack_ike_events_total{event}   its counters (established,
//	    child_installed, child_deleted, deleted, child_rekeys, rekeys,
//	    in_messages, ..., with `ipsecstack stats` names as the label)
//	ipsecstack_ike_failures_total{reason}   failed exchanges by reason
//	    (timeout, auth, no_proposal, ts_unacceptable, invalid_ke,
//	    peer_error, install, config, dead, other)
//	plus the Go runtime and process collectors.
type collector struct {
	st *stack.Stack
	ds *daemonStats
}

var (
	saLabels   = []string{"spi", "src", "dst", "proto", "mode"}
	descXfrm   = prometheus.NewDesc("ipsecstack_xfrm_stat_total", "xfrm counters with their Linux /proc/net/xfrm_stat names.", []string{"stat"}, nil)
	descSABy   = prometheus.NewDesc("ipsecstack_sa_bytes_total", "Bytes protected or accepted by the SA.", saLabels, nil)
	descSAPk   = prometheus.NewDesc("ipsecstack_sa_packets_total", "Packets protected or accepted by the SA.", saLabels, nil)
	descSARe   = prometheus.NewDesc("ipsecstack_sa_replay_errors_total", "Packets the SA's anti-replay window rejected.", saLabels, nil)
	descSAIn   = prometheus.NewDesc("ipsecstack_sa_integrity_errors_total", "Packets that failed the SA's integrity check.", saLabels, nil)
	descSASt   = prometheus.NewDesc("ipsecstack_sa_state", "1 for the SA's current state (larval, mature, dying, dead).", append(saLabels[:len(saLabels):len(saLabels)], "state"), nil)
	descSAD    = prometheus.NewDesc("ipsecstack_sad_entries", "Security associations in the SAD.", nil, nil)
	descSPD    = prometheus.NewDesc("ipsecstack_spd_policies", "Policies in the SPD.", nil, nil)
	descLink   = prometheus.NewDesc("ipsecstack_link_packets_total", "Packets by fate at the IPsec link wrapper.", []string{"event"}, nil)
	descRxPk   = prometheus.NewDesc("ipsecstack_nic_rx_packets_total", "Frames received on the link.", nil, nil)
	descRxBy   = prometheus.NewDesc("ipsecstack_nic_rx_bytes_total", "Bytes received on the link.", nil, nil)
	descTxPk   = prometheus.NewDesc("ipsecstack_nic_tx_packets_total", "Frames sent on the link.", nil, nil)
	descTxBy   = prometheus.NewDesc("ipsecstack_nic_tx_bytes_total", "Bytes sent on the link.", nil, nil)
	descDaemon = prometheus.NewDesc("ipsecstack_daemon_stat_total", "The daemon's own counters (control socket, relays) with their `ipsecstack stats` names.", []string{"stat"}, nil)
	descIKESAs = prometheus.NewDesc("ipsecstack_ike_sas", "IKE SAs of the --ike daemon by state.", []string{"state"}, nil)
	descIKECh  = prometheus.NewDesc("ipsecstack_ike_child_sas", "CHILD SAs the --ike daemon has installed.", nil, nil)
	descIKEEv  = prometheus.NewDesc("ipsecstack_ike_events_total", "The --ike daemon's counters with their `ipsecstack stats` names.", []string{"event"}, nil)
	descIKEF   = prometheus.NewDesc("ipsecstack_ike_failures_total", "IKE exchanges that failed, by reason.", []string{"reason"}, nil)
	saStateAll = []xfrm.SAState{xfrm.StateLarval, xfrm.StateMature, xfrm.StateDying, xfrm.StateDead}
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descXfrm, descSABy, descSAPk, descSARe, descSAIn, descSASt, descSAD, descSPD, descLink, descRxPk, descRxBy, descTxPk, descTxBy, descDaemon, descIKESAs, descIKECh, descIKEEv, descIKEF} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	eng := c.st.Engine
	for _, s := range eng.Stats.Snapshot() {
		ch <- prometheus.MustNewConstMetric(descXfrm, prometheus.CounterValue, float64(s.Value), s.Name)
	}
	if c.ds != nil {
		for _, s := range c.ds.Snapshot() {
			ch <- prometheus.MustNewConstMetric(descDaemon, prometheus.CounterValue, float64(s.Value), s.Name)
		}
	}
	if c.ds != nil && c.ds.ike != nil {
		for _, s := range c.ds.ike.Snapshot() {
			switch {
			case s.Name == "IKESAsEstablished":
				ch <- prometheus.MustNewConstMetric(descIKESAs, prometheus.GaugeValue, float64(s.Value), "established")
			case s.Name == "IKESAsHalfOpen":
				ch <- prometheus.MustNewConstMetric(descIKESAs, prometheus.GaugeValue, float64(s.Value), "half_open")
			case s.Name == "IKEChildSAsInstalled":
				ch <- prometheus.MustNewConstMetric(descIKECh, prometheus.GaugeValue, float64(s.Value))
			case s.Label != "":
				ch <- prometheus.MustNewConstMetric(descIKEF, prometheus.CounterValue, float64(s.Value), s.Label)
			default:
				ch <- prometheus.MustNewConstMetric(descIKEEv, prometheus.CounterValue, float64(s.Value), s.Name)
			}
		}
	}
	eng.SAD.Walk(func(sa *xfrm.SA) bool {
		cf := &sa.Config
		l := []string{fmt.Sprintf("0x%08x", cf.SPI), cf.Src.String(), cf.Dst.String(), cf.Proto.String(), cf.Mode.String()}
		ch <- prometheus.MustNewConstMetric(descSABy, prometheus.CounterValue, float64(sa.Counters.Bytes.Load()), l...)
		ch <- prometheus.MustNewConstMetric(descSAPk, prometheus.CounterValue, float64(sa.Counters.Packets.Load()), l...)
		ch <- prometheus.MustNewConstMetric(descSARe, prometheus.CounterValue, float64(sa.Counters.ReplayErrors.Load()), l...)
		ch <- prometheus.MustNewConstMetric(descSAIn, prometheus.CounterValue, float64(sa.Counters.IntegrityErrors.Load()), l...)
		cur := sa.State()
		for _, s := range saStateAll {
			v := 0.0
			if s == cur {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descSASt, prometheus.GaugeValue, v, append(l, s.String())...)
		}
		return true
	})
	ch <- prometheus.MustNewConstMetric(descSAD, prometheus.GaugeValue, float64(eng.SAD.Len()))
	ch <- prometheus.MustNewConstMetric(descSPD, prometheus.GaugeValue, float64(eng.SPD.Len()))
	ls := &c.st.Endpoint.Stats
	for _, e := range []struct {
		name string
		v    uint64
	}{
		{"out_passed", ls.OutPassed.Load()}, {"out_protected", ls.OutProtected.Load()},
		{"out_dropped", ls.OutDropped.Load()}, {"out_fragments", ls.OutFragments.Load()},
		{"out_df_cleared", ls.OutDFCleared.Load()}, {"out_too_big", ls.OutTooBig.Load()},
		{"ptb_injected", ls.PTBInjected.Load()}, {"pmtu_updates", ls.PMTUUpdates.Load()},
		{"in_checked", ls.InChecked.Load()}, {"in_dropped", ls.InDropped.Load()},
		{"in_ipsec", ls.InIPsec.Load()}, {"in_fragments", ls.InFragments.Load()},
		{"reinjected", ls.Reinjected.Load()},
		{"in_nat_keepalive", ls.InNATKeepalive.Load()}, {"in_nat_ike", ls.InNATIKE.Load()},
		{"out_nat_keepalive", ls.OutNATKeepalive.Load()}, {"out_nat_keepalive_errors", ls.OutNATKeepaliveErrors.Load()},
		{"out_link_dropped", ls.OutLinkDropped.Load()},
	} {
		ch <- prometheus.MustNewConstMetric(descLink, prometheus.CounterValue, float64(e.v), e.name)
	}
	if info, ok := c.st.NICInfo()[c.st.NIC]; ok {
		ns := info.Stats
		ch <- prometheus.MustNewConstMetric(descRxPk, prometheus.CounterValue, float64(ns.Rx.Packets.Value()))
		ch <- prometheus.MustNewConstMetric(descRxBy, prometheus.CounterValue, float64(ns.Rx.Bytes.Value()))
		ch <- prometheus.MustNewConstMetric(descTxPk, prometheus.CounterValue, float64(ns.Tx.Packets.Value()))
		ch <- prometheus.MustNewConstMetric(descTxBy, prometheus.CounterValue, float64(ns.Tx.Bytes.Value()))
	}
}

// metricsHandler serves /metrics (and a pointer to it on /).
func metricsHandler(st *stack.Stack, ds *daemonStats) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{st, ds}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "ipsecstack: metrics at /metrics")
	})
	return mux
}
