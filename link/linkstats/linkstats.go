// Package linkstats holds the counters that the project's link endpoints
// (afpacket, tap) report beyond gVisor's, in a form the daemon's stats
// can sum over every link without knowing which kind it is.
package linkstats

// GSOCounters count segmentation offload on a link since it was opened:
// the UDP GSO frames sent and the ones received and cut, with the
// datagrams they carried, and a TUN gateway's TCP TSO frames: received
// and cut, and sent, each merging segments.
type GSOCounters struct {
	TxFrames, TxDatagrams      uint64
	RxFrames, RxDatagrams      uint64
	RxTSOFrames, RxTSOSegments uint64
	TxTSOFrames, TxTSOSegments uint64
}
