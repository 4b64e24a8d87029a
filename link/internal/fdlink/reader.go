package fdlink

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/stopfd"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// BatchDispatcher is a NetworkDispatcher that also takes the frames of one
// read as one batch: the IPsec wrapper (stack.Endpoint) coalesces the TCP
// segments it decrypts from a batch (GRO after decryption), which it can
// only do if it knows where a batch ends.
type BatchDispatcher interface {
	stack.NetworkDispatcher
	// DeliverNetworkPackets delivers pkts, each with its
	// NetworkProtocolNumber set and its link header consumed, as
	// DeliverNetworkPacket would one by one. The callee takes no
	// reference it does not add itself.
	DeliverNetworkPackets(pkts []*stack.PacketBuffer)
}

// ReaderOptions configures the endpoint's own readers (UseReaders).
type ReaderOptions struct {
	// MTU is the link's IP MTU: each frame is read into one view of the
	// MTU plus an Ethernet header and a VLAN tag; a larger frame (a GRO
	// or TSO super-frame of the host kernel, up to 64 KiB) is read past
	// it into an overflow buffer and delivered whole.
	MTU uint32
	// RXChecksumOffload marks received packets' checksums as validated.
	RXChecksumOffload bool
	// Readv reads a descriptor that is no socket (a TAP device) with
	// readv, a frame per call, instead of recvmmsg.
	Readv bool
	// L3 says frames are IP packets without a link header (a TUN
	// device), each of the version its first nibble says.
	L3 bool
	// ClosedFunc, if set, is called when a reader stops: with the error
	// that stopped it, or nil when stopped by Close (as fdbased does).
	ClosedFunc func(tcpip.Error)
}

// readerBatch is the number of frames one recvmmsg reads: fdbased reads
// 8; a larger batch gives the wrapper's GRO more segments to coalesce and
// costs one syscall for more frames.
const readerBatch = 32

// overflowSize is the room past the first view of each slot: an IPv4 or
// IPv6 packet of up to 64 KiB in one frame.
const overflowSize = 1 << 16

// perSlot is the iovecs of each slot: the virtio_net_hdr every frame
// comes after (the sockets have PACKET_VNET_HDR, a TAP IFF_VNET_HDR, as
// the writer needs), the first view, the overflow.
const perSlot = 3

// UseReaders has the endpoint read its packet sockets with its own
// readers instead of fdbased's: recvmmsg of readerBatch frames, delivered
// as one batch to a BatchDispatcher (others get them one by one). Writes
// still go through fdbased. Call it before the NIC is created.
func (e *Endpoint) UseReaders(opts ReaderOptions) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.readerOpts = &opts
}

// reader reads one packet socket.
type reader struct {
	stopfd.StopFD
	fd       int
	e        *Endpoint
	opts     *ReaderOptions
	first    int // size of each slot's view
	msgs     []rawfile.MMsgHdr
	iovs     []unix.Iovec // perSlot per slot: vnet header, view, overflow
	vnet     []byte       // readerBatch × vnetHdrLen
	views    []*buffer.View
	overflow []byte // mmap'ed: readerBatch × overflowSize, touched only by large frames
	pkts     []*stack.PacketBuffer
}

func newReader(e *Endpoint, fd int, opts *ReaderOptions) (*reader, error) {
	sfd, err := stopfd.New()
	if err != nil {
		return nil, err
	}
	ov, err := unix.Mmap(-1, 0, readerBatch*overflowSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		unix.Close(sfd.EFD)
		return nil, err
	}
	r := &reader{StopFD: sfd, fd: fd, e: e, opts: opts, first: int(opts.MTU) + 18,
		msgs:  make([]rawfile.MMsgHdr, readerBatch),
		views: make([]*buffer.View, readerBatch), overflow: ov}
	r.vnet = make([]byte, readerBatch*vnetHdrLen)
	r.iovs = make([]unix.Iovec, perSlot*readerBatch)
	for k := range r.msgs {
		slot := r.iovs[perSlot*k:][:perSlot]
		slot[0].Base = &r.vnet[k*vnetHdrLen]
		slot[0].SetLen(vnetHdrLen)
		slot[2].Base = &ov[k*overflowSize]
		slot[2].SetLen(overflowSize)
	}
	return r, nil
}

func (r *reader) release() {
	for k, v := range r.views {
		if v != nil {
			v.Release()
			r.views[k] = nil
		}
	}
	unix.Munmap(r.overflow)
	unix.Close(r.EFD)
}

// run reads until stopped or an error. It leaves the reader's resources
// to stopReaders: Close stops every reader, including one that already
// ended on an error (a vanished interface), and the eventfd it writes to
// must still be this reader's, not a closed or reused descriptor.
func (r *reader) run() {
	for {
		for k := range r.msgs {
			if r.views[k] == nil {
				v := buffer.NewViewSize(r.first)
				r.views[k] = v
				iov := &r.iovs[perSlot*k+1]
				iov.Base = unsafe.SliceData(v.AsSlice())
				iov.SetLen(r.first)
			}
			r.msgs[k].Msg.Iov = &r.iovs[perSlot*k]
			r.msgs[k].Msg.SetIovlen(perSlot)
			r.msgs[k].Msg.Flags = 0
			r.msgs[k].Len = 0
		}
		var n int
		var errno unix.Errno
		if r.opts.Readv {
			n, errno = r.readv()
		} else {
			n, errno = rawfile.BlockingRecvMMsgUntilStopped(r.EFD, r.fd, r.msgs)
		}
		if n == -1 || errno != 0 {
			// As fdbased: nil when stopped (Close), else the error.
			if r.opts.ClosedFunc != nil {
				var err tcpip.Error
				if n != -1 {
					err = tcpip.TranslateErrno(errno)
				}
				r.opts.ClosedFunc(err)
			}
			return
		}
		r.dispatch(n)
	}
}

// readv fills the slots as recvmmsg would from a descriptor that is no
// socket (a TAP device: one frame per read): it waits for the first
// frame, then reads what else is queued, up to a batch, without waiting.
func (r *reader) readv() (int, unix.Errno) {
	iov := func(k int) []unix.Iovec { return r.iovs[perSlot*k:][:perSlot] }
	n, errno := rawfile.BlockingReadvUntilStopped(r.EFD, r.fd, iov(0))
	if n == -1 || errno != 0 {
		return n, errno
	}
	r.msgs[0].Len = uint32(n)
	k := 1
	for ; k < len(r.msgs); k++ {
		v := iov(k)
		m, _, e := unix.RawSyscall(unix.SYS_READV, uintptr(r.fd), uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)))
		if e != 0 {
			break // EAGAIN: the queue is empty; any other error shows on the next blocking read
		}
		r.msgs[k].Len = uint32(m)
	}
	return k, 0
}

// dispatch hands the n frames read to the stack.
func (r *reader) dispatch(n int) {
	d := r.e.disp.Load()
	addr := r.e.LinkEndpoint.LinkAddress()
	r.pkts = r.pkts[:0]
	for k := 0; k < n; k++ {
		v := r.views[k]
		r.views[k] = nil
		size := int(r.msgs[k].Len) - vnetHdrLen
		var vh vnetHdr
		if size >= 0 {
			vh.decode(r.vnet[k*vnetHdrLen:])
		}
		if r.msgs[k].Msg.Flags&unix.MSG_TRUNC != 0 || size < header.EthernetMinimumSize {
			v.Release() // larger than 64 KiB, or a runt: nothing sends that
			continue
		}
		validated := r.opts.RXChecksumOffload || vh.flags&(vnetNeedsCsum|vnetDataValid) != 0
		switch vh.gsoType &^ vnetGSOECN {
		case vnetGSOUDPL4:
			if vh.gsoSize != 0 && !r.opts.L3 && r.splitUDP(k, v, size, vh.gsoSize, addr) {
				v.Release()
				continue
			}
		case vnetGSOTCPv4, vnetGSOTCPv6:
			if vh.gsoSize != 0 && r.splitTCP(k, v, size, vh.gsoSize, addr) {
				v.Release()
				continue
			}
		}
		if size > r.first {
			big := buffer.NewViewSize(size)
			b := big.AsSlice()
			copy(b, v.AsSlice())
			copy(b[r.first:], r.overflow[k*overflowSize:][:size-r.first])
			v.Release()
			v = big
		} else {
			v.CapLength(size)
		}
		proto, ok := r.frameProto(v.AsSlice(), addr)
		if !ok {
			v.Release()
			continue
		}
		if vh.flags&vnetNeedsCsum != 0 && !r.opts.RXChecksumOffload {
			// The stack verifies checksums on this link: finish the one
			// a local sender left to the device, as the device would.
			finishChecksum(v.AsSlice(), vh)
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
		if !r.opts.L3 {
			pkt.LinkHeader().Consume(header.EthernetMinimumSize)
		}
		pkt.NetworkProtocolNumber = proto
		pkt.RXChecksumValidated = validated
		r.pkts = append(r.pkts, pkt)
	}
	if d != nil && len(r.pkts) > 0 {
		if bd, ok := (*d).(BatchDispatcher); ok {
			bd.DeliverNetworkPackets(r.pkts)
		} else {
			for _, pkt := range r.pkts {
				(*d).DeliverNetworkPacket(pkt.NetworkProtocolNumber, pkt)
			}
		}
	}
	for k, pkt := range r.pkts {
		pkt.DecRef()
		r.pkts[k] = nil
	}
}

// splitUDP cuts slot k's frame of size bytes, a UDP GSO frame whose
// first bytes are in v, into its datagrams of segSize payload bytes and
// queues them in r.pkts, checksum-validated (a GSO frame's checksum is
// computed by whoever cuts it: here, nobody). It reports false, leaving
// the frame to be delivered whole, if the frame is not one UDP datagram
// over IPv4 or IPv6 whose headers it can read; v stays the caller's.
func (r *reader) splitUDP(k int, v *buffer.View, size int, segSize uint16, addr tcpip.LinkAddress) bool {
	head := v.AsSlice()
	if size < len(head) {
		head = head[:size]
	}
	f, ok := parseUDPFrame(head, size)
	if !ok || size <= f.udpHdrsLen() || (size-f.udpHdrsLen())/int(segSize) >= udpGSOMaxRxSegs {
		// Not one datagram we can read, or cut finer than any sender
		// of ours or the kernel's would (UDP_MAX_SEGMENTS): whole, it
		// fails where a datagram of that size would.
		return false
	}
	proto, ok := r.frameProto(head, addr)
	if !ok {
		return true // dropped
	}
	segs := r.cut(k, head, size, f.udpHdrsLen(), int(segSize), header.EthernetMinimumSize, proto,
		func(seg []byte, _, _, n int, _ bool) {
			segmentHeaders(seg, f.ipLen, n)
			if f.ipLen == header.IPv6MinimumSize && !r.opts.RXChecksumOffload {
				// IPv6 has no "no checksum": the stack verifies checksums
				// on this link, so give the segment its own.
				udpChecksum6(seg)
			}
		})
	r.e.gso.RxFrames.Add(1)
	r.e.gso.RxDatagrams.Add(segs)
	return true
}

// cut cuts slot k's frame of size bytes, whose first bytes are head,
// into segments of at most segSize bytes past its hl bytes of headers
// (l2 of them the link's), and queues them in r.pkts as packets of
// protocol proto, checksum-validated: each a copy of the headers and
// its bytes of the frame, which finish then makes a segment of (index
// counts the segments, off is where its bytes start past the headers, n
// is how many, last marks the frame's last). It returns how many it made.
// One view per segment, not regions of one shared chunk: gVisor's PullUp
// copies a whole shared chunk (copy-on-write) before it hands out a
// slice of it, and the wrapper pulls every packet up.
func (r *reader) cut(k int, head []byte, size, hl, segSize, l2 int, proto tcpip.NetworkProtocolNumber,
	finish func(seg []byte, index, off, n int, last bool)) uint64 {
	tail := r.overflow[k*overflowSize:][:max(0, size-len(head))]
	var segs uint64
	for off := hl; off < size; off += segSize {
		n := min(segSize, size-off)
		seg := buffer.NewViewSize(hl + n)
		b := seg.AsSlice()
		copy(b, head[:hl])
		copyFrame(b[hl:], head, tail, off)
		finish(b, int(segs), off-hl, n, off+n >= size)
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(seg)})
		if l2 > 0 {
			pkt.LinkHeader().Consume(l2)
		}
		pkt.NetworkProtocolNumber = proto
		pkt.RXChecksumValidated = true
		r.pkts = append(r.pkts, pkt)
		segs++
	}
	return segs
}

// frameProto returns the network protocol of frame, or false for a frame
// to drop: on an Ethernet link, one unicast to another MAC (promiscuous
// mode); on an L3 link, one that is neither IPv4 nor IPv6.
func (r *reader) frameProto(frame []byte, addr tcpip.LinkAddress) (tcpip.NetworkProtocolNumber, bool) {
	if r.opts.L3 {
		switch frame[0] >> 4 {
		case 4:
			return header.IPv4ProtocolNumber, true
		case 6:
			return header.IPv6ProtocolNumber, true
		}
		return 0, false
	}
	eth := header.Ethernet(frame)
	if dst := eth.DestinationAddress(); dst != addr && dst[0]&1 == 0 {
		return 0, false
	}
	return eth.Type(), true
}

// splitTCP cuts slot k's frame of size bytes, a TSO frame (one TCP
// segment of up to 64 KiB, its first bytes in v) of a local sender, into
// the segments of segSize payload bytes a device would have sent
// (tcpSegmentHeaders), each with its checksums, and queues them in
// r.pkts, checksum-validated. A TUN gateway asks the kernel for such
// frames (TUN_F_TSO4, TUN_F_TSO6): one read of 64 KiB instead of some
// forty, and the kernel's TCP spared cutting them; what it forwards
// must still be wire-sized. It reports false, leaving the frame to be
// delivered whole, if it cannot read its headers; v stays the caller's.
func (r *reader) splitTCP(k int, v *buffer.View, size int, segSize uint16, addr tcpip.LinkAddress) bool {
	head := v.AsSlice()
	if size < len(head) {
		head = head[:size]
	}
	l2 := header.EthernetMinimumSize
	if r.opts.L3 {
		l2 = 0
	}
	f, ok := parseTCPFrame(head, size, l2)
	if !ok || (size-f.hdrsLen())/int(segSize) >= tsoMaxRxSegs {
		return false
	}
	proto, ok := r.frameProto(head, addr)
	if !ok {
		return true // dropped
	}
	segs := r.cut(k, head, size, f.hdrsLen(), int(segSize), l2, proto,
		func(seg []byte, index, off, n int, last bool) {
			tcpSegmentHeaders(seg, f, off, index, n, last)
			tcpSegmentChecksum(seg, f)
		})
	r.e.gso.RxTSOFrames.Add(1)
	r.e.gso.RxTSOSegments.Add(segs)
	return true
}

// tsoMaxRxSegs bounds the segments the reader cuts one TSO frame into:
// the kernel's default gso_max_segs (GSO_MAX_SEGS).
const tsoMaxRxSegs = 65535

// udpGSOMaxRxSegs bounds the datagrams the reader cuts one frame into:
// the kernel's UDP_MAX_SEGMENTS (128 since Linux 6.3).
const udpGSOMaxRxSegs = 128

// finishChecksum completes the transport checksum of frame, whose
// virtio_net_hdr (h, with NEEDS_CSUM) says where it starts and where it
// goes: the field holds the pseudo-header sum, and the checksum is the
// complement of the sum from csum_start to the end (skb_checksum_help).
// A header that points outside the frame is left alone: the stack then
// finds the checksum bad and drops the packet.
func finishChecksum(frame []byte, h vnetHdr) {
	start, at := int(h.csumStart), int(h.csumStart)+int(h.csumOffset)
	if start >= len(frame) || at+2 > len(frame) || at < start {
		return
	}
	binary.BigEndian.PutUint16(frame[at:], ^checksum.Checksum(frame[start:], 0))
}

// udpChecksum6 writes the UDP checksum of seg, an Ethernet frame of one
// UDP datagram over IPv6 without extension headers (RFC 8200 §8.1).
func udpChecksum6(seg []byte) {
	const eth = header.EthernetMinimumSize
	ip := header.IPv6(seg[eth:])
	u := header.UDP(seg[eth+header.IPv6MinimumSize:])
	u.SetChecksum(0)
	sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), u.Length())
	c := ^checksum.Checksum(u, sum)
	if c == 0 {
		c = 0xffff
	}
	u.SetChecksum(c)
}

// copyFrame copies into dst the frame's bytes from offset off on, the
// frame being head followed by tail.
func copyFrame(dst, head, tail []byte, off int) {
	if off < len(head) {
		n := copy(dst, head[off:])
		dst, off = dst[n:], len(head)
	}
	copy(dst, tail[off-len(head):])
}

// startReaders starts a reader per fd; e.mu is held.
func (e *Endpoint) startReaders() error {
	for _, fd := range e.fds {
		r, err := newReader(e, fd, e.readerOpts)
		if err != nil {
			for _, r := range e.readers {
				r.release()
			}
			e.readers = nil
			return err
		}
		e.readers = append(e.readers, r)
	}
	for _, r := range e.readers {
		e.readerWG.Add(1)
		go func() {
			defer e.readerWG.Done()
			r.run()
		}()
	}
	return nil
}

// stopReaders stops the readers and waits for them.
func (e *Endpoint) stopReaders() {
	for _, r := range e.readers {
		r.Stop()
	}
	e.readerWG.Wait()
	for _, r := range e.readers {
		r.release()
	}
	e.readers = nil
}
