package main

import (
	"github.com/ipsecstack/ipsecstack/control"
	ikedaemon "github.com/ipsecstack/ipsecstack/ike/daemon"
	"github.com/ipsecstack/ipsecstack/link/linkstats"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// daemonStats are the daemon's own counters beyond Linux's xfrm_stat:
// what its control socket, relays, ACQUIRE table and fragment reassembly
// refused or dropped. `ipsecstack stats` prints them after the xfrm
// counters and /metrics exports them as
// ipsecstack_daemon_stat_total{stat=NAME}, with the same names.
type daemonStats struct {
	ctl *control.Server // nil until the control socket is up
	eng *xfrm.Engine    // nil until the stack is up
	fwd forwardStats
	pub forwardStats // --publish relays
	// links read the kernel's drop counters of the links (--link, then
	// the --lan and --tun sides that have one); empty until they are
	// open.
	links []linkDropper
	// st is the stack (the wrapper's and the NIC's drops); nil until it
	// is up.
	st *stack.Stack
	// ike is the IKE daemon (--ike); nil without one.
	ike *ikedaemon.Daemon
}

// gsoCounter is a link endpoint with segmentation offload: afpacket and
// tap (UDP GSO), tun (TCP TSO received).
type gsoCounter interface {
	GSOCounters() linkstats.GSOCounters
}

// linkDropper is a link endpoint that can tell what the kernel dropped
// on its way to us: afpacket and tap.
type linkDropper interface {
	// KernelDrops returns the frames dropped before the stack could read
	// them, since the link was opened.
	KernelDrops() uint64
}

// Snapshot returns the counters by name, in a fixed order:
//
//	PfkeyNotifyDropped   asynchronous PF_KEY messages (ACQUIRE, EXPIRE,
//	                     SA and policy changes) lost by a client too slow
//	                     to read them (it gets an ENOBUFS notice)
//	ControlReplyTooLarge control-socket replies refused for their size
//	ForwardTCPRefused    --forward tcp connections refused at the limit
//	ForwardTCPIdleClosed --forward tcp connections closed idle
//	ForwardUDPRefused    --forward udp datagrams of a new source dropped
//	                     at the limit
//	ForwardUDPEvicted    unanswered --forward udp sessions ended early to
//	                     make room for a new source
//	ForwardUDPIdleClosed --forward udp sessions ended idle
//	PublishTCPRefused, PublishTCPIdleClosed, PublishUDPRefused,
//	PublishUDPEvicted, PublishUDPIdleClosed
//	                     the same for --publish
//	PfkeyHandlerPanics   PF_KEY messages whose handler failed unexpectedly
//	                     (answered EINVAL; the daemon went on)
//	AcquireEvicted       pending ACQUIREs evicted to bound the table
//	ReasmReqds, ReasmOKs, ReasmFails, ReasmTimeout, ReasmEvicted
//	                     fragments reassembled before the inbound policy
//	                     check, with Linux's /proc/net/snmp Ip: names
//	LinkRxKernelDrops    frames the kernel dropped before the stack read
//	                     them, summed over --link and the --lan and --tun
//	                     sides: a full AF_PACKET receive buffer (tp_drops
//	                     of PACKET_STATISTICS), or for TAP and TUN their
//	                     tx_dropped (a full queue; for TAP also frames
//	                     for other MACs)
//	LinkTxDropped        frames the link refused after IPsec (a full
//	                     socket send buffer, a link down)
//	LinkTxQueueDrops     packets dropped for a full transmit queue
//	                     (stack.Config.TxQueue; TCP resends them)
//	LinkTxUDPGSOFrames, LinkTxUDPGSODatagrams
//	                     UDP GSO frames sent (--udp-gso)
//	                     and the datagrams (ESP in UDP) they carried
//	LinkRxUDPGSOFrames, LinkRxUDPGSODatagrams
//	                     UDP GSO frames received and cut into datagrams
//	LinkRxTSOFrames, LinkRxTSOSegments
//	                     TCP TSO frames the host's TCP handed the --tun
//	                     device, and the segments they were cut into
//	LinkTxTSOFrames, LinkTxTSOSegments
//	                     TSO frames written to the --tun device, and the
//	                     in-order TCP segments each merged
//	LinkTxDirectFrames   TCP segments the IPsec wrapper built (and
//	                     sealed) in buffers of its own and handed to the
//	                     link as frames, without a gVisor packet
//	TcpRetransSegs       TCP segments the stack sent again (gVisor's
//	                     TCP.Retransmits; Linux's Tcp: RetransSegs)
func (d *daemonStats) Snapshot() []xfrm.Stat {
	var dropped, oversize, panics uint64
	if d.ctl != nil {
		dropped, oversize = d.ctl.Dropped.Load(), d.ctl.Oversize.Load()
		panics = d.ctl.PFKey().Stats.HandlerPanics.Load()
	}
	var evicted uint64
	var rs *xfrm.ReasmStats
	if d.eng != nil {
		evicted = d.eng.AcquireStats.Evicted.Load()
		rs = &d.eng.Reasm.Stats
	} else {
		rs = new(xfrm.ReasmStats)
	}
	var kdrops, txdrops, qdrops, retrans, direct uint64
	var gso linkstats.GSOCounters
	for _, l := range d.links {
		kdrops += l.KernelDrops()
		if g, ok := l.(gsoCounter); ok {
			c := g.GSOCounters()
			gso.TxFrames += c.TxFrames
			gso.TxDatagrams += c.TxDatagrams
			gso.RxFrames += c.RxFrames
			gso.RxDatagrams += c.RxDatagrams
			gso.RxTSOFrames += c.RxTSOFrames
			gso.RxTSOSegments += c.RxTSOSegments
			gso.TxTSOFrames += c.TxTSOFrames
			gso.TxTSOSegments += c.TxTSOSegments
		}
	}
	if d.st != nil {
		retrans = d.st.Stats().TCP.Retransmits.Value()
		infos := d.st.NICInfo()
		for _, id := range d.st.NICs() {
			ls := &d.st.EndpointOf(id).Stats
			txdrops += ls.OutLinkDropped.Load()
			direct += ls.OutFrames.Load()
			if info, ok := infos[id]; ok {
				qdrops += info.Stats.TxPacketsDroppedNoBufferSpace.Value()
			}
		}
	}
	f := &d.fwd
	return []xfrm.Stat{
		{Name: "PfkeyNotifyDropped", Value: dropped},
		{Name: "ControlReplyTooLarge", Value: oversize},
		{Name: "ForwardTCPRefused", Value: f.TCPRefused.Load()},
		{Name: "ForwardTCPIdleClosed", Value: f.TCPIdleClosed.Load()},
		{Name: "ForwardUDPRefused", Value: f.UDPRefused.Load()},
		{Name: "ForwardUDPEvicted", Value: f.UDPEvicted.Load()},
		{Name: "ForwardUDPIdleClosed", Value: f.UDPIdleClosed.Load()},
		{Name: "PublishTCPRefused", Value: d.pub.TCPRefused.Load()},
		{Name: "PublishTCPIdleClosed", Value: d.pub.TCPIdleClosed.Load()},
		{Name: "PublishUDPRefused", Value: d.pub.UDPRefused.Load()},
		{Name: "PublishUDPEvicted", Value: d.pub.UDPEvicted.Load()},
		{Name: "PublishUDPIdleClosed", Value: d.pub.UDPIdleClosed.Load()},
		{Name: "PfkeyHandlerPanics", Value: panics},
		{Name: "AcquireEvicted", Value: evicted},
		{Name: "ReasmReqds", Value: rs.ReasmReqds.Load()},
		{Name: "ReasmOKs", Value: rs.ReasmOKs.Load()},
		{Name: "ReasmFails", Value: rs.ReasmFails.Load()},
		{Name: "ReasmTimeout", Value: rs.ReasmTimeout.Load()},
		{Name: "ReasmEvicted", Value: rs.ReasmEvicted.Load()},
		{Name: "LinkRxKernelDrops", Value: kdrops},
		{Name: "LinkTxDropped", Value: txdrops},
		{Name: "LinkTxQueueDrops", Value: qdrops},
		{Name: "LinkTxUDPGSOFrames", Value: gso.TxFrames},
		{Name: "LinkTxUDPGSODatagrams", Value: gso.TxDatagrams},
		{Name: "LinkRxUDPGSOFrames", Value: gso.RxFrames},
		{Name: "LinkRxUDPGSODatagrams", Value: gso.RxDatagrams},
		{Name: "LinkRxTSOFrames", Value: gso.RxTSOFrames},
		{Name: "LinkRxTSOSegments", Value: gso.RxTSOSegments},
		{Name: "LinkTxTSOFrames", Value: gso.TxTSOFrames},
		{Name: "LinkTxTSOSegments", Value: gso.TxTSOSegments},
		{Name: "LinkTxDirectFrames", Value: direct},
		{Name: "TcpRetransSegs", Value: retrans},
	}
}

// IKESnapshot returns the IKE daemon's counters and gauges for
// `ipsecstack stats` (none without --ike): IKESAsEstablished,
// IKEChildSAsInstalled, IKESAsHalfOpen (gauges), the event and message
// counters, and IKEFailures_REASON per failure reason.
func (d *daemonStats) IKESnapshot() []xfrm.Stat {
	if d.ike == nil {
		return nil
	}
	var out []xfrm.Stat
	for _, s := range d.ike.Snapshot() {
		name := s.Name
		if s.Label != "" {
			name += "_" + s.Label
		}
		out = append(out, xfrm.Stat{Name: name, Value: s.Value})
	}
	return out
}
