package fdlink

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/frame"
	"github.com/ipsecstack/ipsecstack/link/linkstats"
)

// WriterOptions configures the endpoint's own writer (UseWriter).
type WriterOptions struct {
	// UDPSegmentation sends each run of consecutive UDP datagrams of one
	// flow and one size (the last may be shorter) as one UDP GSO frame
	// (VIRTIO_NET_HDR_GSO_UDP_L4): one skb through the kernel instead of
	// up to udpGSOMaxSegs. The IPsec wrapper seals a TCP super-segment
	// into such a run of ESP-in-UDP packets. The frame crosses a veth
	// whole and is cut where it meets a kernel socket, a device without
	// the offload, or a reader with PACKET_VNET_HDR (ours); a capture on
	// the path (tcpdump, tshark) sees it whole, as it sees the kernel's
	// own TSO frames.
	UDPSegmentation bool
	// Writev writes a descriptor that is no socket (a TAP device) with
	// writev, a frame per call, instead of sendmmsg.
	Writev bool
	// TCPCoalesce, on an L3 link (a TUN device), sends each run of
	// consecutive in-order TCP segments of one flow as one TSO frame
	// (tcpcoalesce.go).
	TCPCoalesce bool
}

// UseWriter has the endpoint write its packet sockets itself instead of
// through fdbased, with a virtio_net_hdr before every frame: the sockets
// must have PACKET_VNET_HDR (a TAP IFF_VNET_HDR), which the readers
// (UseReaders) expect too. Call it before the NIC is created.
func (e *Endpoint) UseWriter(opts WriterOptions) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.writerOpts = &opts
}

// gsoStats counts the UDP GSO frames the endpoint sent and the ones its
// readers cut, with the datagrams they carried: whether segmentation
// offload is at work, and how much it merges.
type gsoStats struct {
	TxFrames, TxDatagrams atomic.Uint64
	RxFrames, RxDatagrams atomic.Uint64
	// RxTSOFrames, RxTSOSegments: the TCP TSO frames a reader cut
	// (splitTCP), and the segments they made; TxTSOFrames,
	// TxTSOSegments: the TSO frames the writer sent (tcpRun), and the
	// segments they merged.
	RxTSOFrames, RxTSOSegments atomic.Uint64
	TxTSOFrames, TxTSOSegments atomic.Uint64
}

// GSOCounters returns the endpoint's UDP GSO counters, read now.
func (e *Endpoint) GSOCounters() linkstats.GSOCounters {
	g := &e.gso
	return linkstats.GSOCounters{TxFrames: g.TxFrames.Load(), TxDatagrams: g.TxDatagrams.Load(),
		RxFrames: g.RxFrames.Load(), RxDatagrams: g.RxDatagrams.Load(),
		RxTSOFrames: g.RxTSOFrames.Load(), RxTSOSegments: g.RxTSOSegments.Load(),
		TxTSOFrames: g.TxTSOFrames.Load(), TxTSOSegments: g.TxTSOSegments.Load()}
}

// txBatchFrames is the most frames one sendmmsg carries; a GSO frame
// counts as one.
const txBatchFrames = 64

// txBatch is one sendmmsg's worth of headers, kept in a pool so that the
// write path allocates nothing. Its iovecs point into its own arrays and
// into the packets' views, so it must not grow while it is filled: flush
// and reuse it instead.
type txBatch struct {
	msgs  [txBatchFrames]rawfile.MMsgHdr
	iovs  []unix.Iovec // capacity txBatchIovs
	vnet  [txBatchFrames][vnetHdrLen]byte
	hdrs  [txBatchFrames][tcpHeadMax]byte // a GSO or TSO frame's rewritten headers
	heads [2][tcpHeadMax]byte             // the heads udpRun and tcpRun compare, when not in place
	first []byte                          // the head of the run udpRun found last
	pkts  [txBatchFrames]int              // packets in each frame
	n     int                             // frames in msgs
}

// txBatchIovs bounds the iovecs of one batch: a GSO frame of
// udpGSOMaxSegs datagrams of a few views each, or txBatchFrames plain
// frames of a few views each.
const txBatchIovs = 1024

var txBatchPool = sync.Pool{New: func() any {
	return &txBatch{iovs: make([]unix.Iovec, 0, txBatchIovs)}
}}

// plainVnetHdr is the header of a frame sent as it is: no offload. The
// kernel only reads it.
var plainVnetHdr [vnetHdrLen]byte

// framesPool holds the frame lists writePackets makes of its packets.
var framesPool = sync.Pool{New: func() any { return new([]frame.Frame) }}

// writePackets is WritePackets for an endpoint with its own writer; e.mu
// is read-locked and the endpoint open. It returns how many packets went
// out before an error.
func (e *Endpoint) writePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	fp := framesPool.Get().(*[]frame.Frame)
	frames := (*fp)[:0]
	for _, pkt := range pkts.AsSlice() {
		frames = append(frames, frame.Frame{Packet: pkt})
	}
	n, err := e.writeFrames(frames)
	clear(frames)
	*fp = frames[:0]
	framesPool.Put(fp)
	return n, err
}

// CanWriteFrames implements frame.Writer: the endpoint writes its sockets
// itself (UseWriter) and is open.
func (e *Endpoint) CanWriteFrames() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.writerOpts != nil && !e.closed
}

// WriteFrames implements frame.Writer.
func (e *Endpoint) WriteFrames(frames []frame.Frame) (int, tcpip.Error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return 0, &tcpip.ErrClosedForSend{}
	}
	if e.writerOpts == nil {
		return 0, &tcpip.ErrNotSupported{}
	}
	return e.writeFrames(frames)
}

// writeFrames writes frames with the endpoint's own writer; e.mu is
// read-locked and the endpoint open. It returns how many frames (packets)
// went out before an error.
func (e *Endpoint) writeFrames(list []frame.Frame) (int, tcpip.Error) {
	b := txBatchPool.Get().(*txBatch)
	defer txBatchPool.Put(b)
	gso := e.writerOpts.UDPSegmentation && !e.gsoRefused.Load()
	sent := 0 // packets whose frames the kernel took
	b.reset()
	for i := 0; i < len(list); {
		run := 1
		var f udpFlow
		var ts tcpSeg
		switch {
		case gso:
			run, f = b.udpRun(list[i:])
		case e.writerOpts.TCPCoalesce:
			run, ts = b.tcpRun(list[i:])
		}
		if b.n == len(b.msgs) || len(b.iovs)+2+run*maxViews > cap(b.iovs) {
			n, errno := b.send(e.fds[0], e.writerOpts.Writev, &e.gso)
			sent += n
			if errno != 0 {
				return e.afterSendError(list, sent, errno)
			}
		}
		switch {
		case run == 1:
			b.addFrame(&list[i])
		case gso:
			b.addGSOFrame(list[i:i+run], f)
		default:
			b.addTSOFrame(list[i:i+run], ts)
		}
		i += run
	}
	if b.n > 0 {
		n, errno := b.send(e.fds[0], e.writerOpts.Writev, &e.gso)
		sent += n
		if errno != 0 {
			return e.afterSendError(list, sent, errno)
		}
	}
	return sent, nil
}

// afterSendError handles sendmmsg's errno after the first sent packets of
// list went out. EINVAL for a batch with GSO frames is a kernel without
// UDP_L4 in virtio_net_hdr_to_skb (before 4.18): UDP segmentation is
// turned off for good and the rest is sent as plain frames. Any other
// error ends the write.
func (e *Endpoint) afterSendError(list []frame.Frame, sent int, errno unix.Errno) (int, tcpip.Error) {
	if errno != unix.EINVAL || !e.writerOpts.UDPSegmentation || e.gsoRefused.Swap(true) {
		return sent, tcpip.TranslateErrno(errno)
	}
	n, err := e.writeFrames(list[sent:])
	return sent + n, err
}

// send writes b's frames with sendmmsg on fd and empties b. It returns
// how many packets (not frames) the kernel took, and the error that
// stopped it, if any.
func (b *txBatch) send(fd int, writev bool, gso *gsoStats) (int, unix.Errno) {
	sent := 0
	msgs := b.msgs[:b.n]
	var errno unix.Errno
	for k := 0; k < len(msgs); {
		var n int
		var e unix.Errno
		if writev {
			m := &msgs[k].Msg
			_, _, e = unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(m.Iov)), uintptr(m.Iovlen))
			n = 1
		} else {
			n, e = rawfile.NonBlockingSendMMsg(fd, msgs[k:])
		}
		if e != 0 {
			errno = e
			break
		}
		for j, c := range b.pkts[k : k+n] {
			sent += c
			if c == 1 {
				continue
			}
			// A frame of several: its virtio_net_hdr (addMerged) says
			// which offload.
			if b.vnet[k+j][1]&^vnetGSOECN == vnetGSOUDPL4 {
				gso.TxFrames.Add(1)
				gso.TxDatagrams.Add(uint64(c))
			} else {
				gso.TxTSOFrames.Add(1)
				gso.TxTSOSegments.Add(uint64(c))
			}
		}
		k += n
	}
	b.reset()
	return sent, errno
}

// maxViews is the views a packet is expected to have at most (ours have a
// header view and a payload view or two), for the check that a frame's
// iovecs fit the batch. A packet of more views only makes b.iovs grow:
// the messages already added keep pointing into the old array, which
// their pointers keep alive.
const maxViews = 4

func (b *txBatch) reset() {
	b.n = 0
	b.iovs = b.iovs[:0]
}

// appendFrame appends the iovecs of f's bytes from offset skip on.
func (b *txBatch) appendFrame(f *frame.Frame, skip int) {
	if f.Bytes != nil {
		b.iovs = appendIovec(b.iovs, f.Bytes[skip:])
		return
	}
	views, off := f.Packet.AsViewList()
	off += skip
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		b.iovs = appendIovec(b.iovs, s[off:])
		off = 0
	}
}

func appendIovec(iovs []unix.Iovec, s []byte) []unix.Iovec {
	if len(s) == 0 {
		return iovs
	}
	iov := unix.Iovec{Base: unsafe.SliceData(s)}
	iov.SetLen(len(s))
	return append(iovs, iov)
}

// addMsg closes the message whose iovecs start at first, a frame of
// pkts packets.
func (b *txBatch) addMsg(first, pkts int) {
	m := &b.msgs[b.n]
	*m = rawfile.MMsgHdr{}
	m.Msg.Iov = &b.iovs[first]
	m.Msg.SetIovlen(len(b.iovs) - first)
	b.pkts[b.n] = pkts
	b.n++
}

// addFrame adds f as a frame of its own.
func (b *txBatch) addFrame(f *frame.Frame) {
	first := len(b.iovs)
	b.iovs = appendIovec(b.iovs, plainVnetHdr[:])
	b.appendFrame(f, 0)
	b.addMsg(first, 1)
}

// udpRun returns how many frames from the head of pkts make one UDP GSO
// frame (1: send the first as it is), and their shape. The first one's
// head is left in b.first, for addGSOFrame.
func (b *txBatch) udpRun(pkts []frame.Frame) (int, udpFlow) {
	if len(pkts) < 2 {
		return 1, udpFlow{}
	}
	first, ok := b.head(0, &pkts[0], udpHeadMax, udpHeadLeast)
	if !ok {
		return 1, udpFlow{}
	}
	f, ok := parseUDPFrame(first, pkts[0].Size())
	if !ok {
		return 1, udpFlow{}
	}
	b.first = first
	limit := 0xffff - f.ipLen - 8 // an IP length field's worth of UDP payload
	total, n := f.payload, 1
	for n < len(pkts) && n < udpGSOMaxSegs {
		h, ok := b.head(1, &pkts[n], udpHeadMax, udpHeadLeast)
		if !ok {
			break
		}
		g, ok := parseUDPFrame(h, pkts[n].Size())
		if !ok || g.ipLen != f.ipLen || g.payload > f.payload || total+g.payload > limit || !sameUDPFlow(first, h, f.ipLen) {
			break
		}
		total += g.payload
		n++
		if g.payload < f.payload {
			break // a short datagram ends a run: segments are gso_size but the last
		}
	}
	return n, f
}

// udpHeadLeast is the shortest frame udpRun reads: Ethernet, IPv4 and
// UDP headers.
const udpHeadLeast = header.EthernetMinimumSize + header.IPv4MinimumSize + header.UDPMinimumSize

// head returns the first max bytes of f (fewer if it is shorter): in
// place when its bytes or its first view hold them, else copied into
// b.heads[k]; false if f is shorter than least bytes.
func (b *txBatch) head(k int, f *frame.Frame, max, least int) ([]byte, bool) {
	if f.Bytes != nil {
		s := f.Bytes[:min(len(f.Bytes), max)]
		return s, len(s) >= least
	}
	views, off := f.Packet.AsViewList()
	v := views.Front()
	for ; v != nil && off >= v.Size(); v = v.Next() {
		off -= v.Size()
	}
	if v == nil {
		return nil, false
	}
	if s := v.AsSlice()[off:]; len(s) >= max || v.Next() == nil {
		s = s[:min(len(s), max)]
		return s, len(s) >= least
	}
	dst := b.heads[k][:max]
	n := 0
	for ; v != nil && n < len(dst); v = v.Next() {
		n += copy(dst[n:], v.AsSlice()[off:])
		off = 0
	}
	return dst[:n], n >= least
}

// addGSOFrame adds pkts, a run udpRun found, as one UDP GSO frame: the
// first packet's headers rewritten for the whole, then every packet's UDP
// payload in order.
func (b *txBatch) addGSOFrame(pkts []frame.Frame, f udpFlow) {
	hdrs, total := b.mergedHeaders(pkts, f.udpHdrsLen())
	b.addMerged(gsoHeaders(hdrs, f, total, f.payload), hdrs, pkts)
}

// mergedHeaders returns the next frame's header buffer (b.hdrs[b.n])
// holding the first hl bytes of the run's first packet (b.first), for
// the caller to rewrite for the whole run, and the bytes the run's
// packets carry past their hl bytes of headers.
func (b *txBatch) mergedHeaders(pkts []frame.Frame, hl int) (hdrs []byte, total int) {
	for i := range pkts {
		total += pkts[i].Size() - hl
	}
	hdrs = b.hdrs[b.n][:hl]
	copy(hdrs, b.first[:hl])
	return hdrs, total
}

// addMerged adds pkts as one frame: the virtio_net_hdr vh, the merged
// headers hdrs (b.hdrs[b.n]), then every packet's bytes past its own
// headers (as long as hdrs) in order.
func (b *txBatch) addMerged(vh vnetHdr, hdrs []byte, pkts []frame.Frame) {
	vh.encode(b.vnet[b.n][:])
	first := len(b.iovs)
	b.iovs = appendIovec(b.iovs, b.vnet[b.n][:])
	b.iovs = appendIovec(b.iovs, hdrs)
	for i := range pkts {
		b.appendFrame(&pkts[i], len(hdrs))
	}
	b.addMsg(first, len(pkts))
}
