package stack

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"unsafe"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/frame"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// outQueue is what one WritePackets call hands the link, in the order the
// packets were sealed: PacketBuffers for a lower endpoint that writes only
// those, or frames when it is a frame.Writer (raw), in which case the TCP
// segments outputGSO cuts are built, sealed and framed in buffers of ours
// (see outputRaw) and the rest go as PacketBuffers among them.
type outQueue struct {
	raw    bool
	pkts   stack.PacketBufferList // !raw
	frames []frame.Frame          // raw
	bufs   []*frameBuf            // the buffers behind frames' Bytes
}

var outQueuePool = sync.Pool{New: func() any { return new(outQueue) }}

// push queues pkt, whose reference passes to the queue.
func (q *outQueue) push(pkt *stack.PacketBuffer) {
	if q.raw {
		q.frames = append(q.frames, frame.Frame{Packet: pkt})
		return
	}
	q.pkts.PushBack(pkt)
}

// pushFrame queues the whole frame f, which lies in fb (now the queue's).
func (q *outQueue) pushFrame(f []byte, fb *frameBuf) {
	q.frames = append(q.frames, frame.Frame{Bytes: f})
	q.bufs = append(q.bufs, fb)
}

// len is the number of packets queued.
func (q *outQueue) len() int {
	if q.raw {
		return len(q.frames)
	}
	return q.pkts.Len()
}

// reset drops the queue's references and buffers once the link wrote (or
// refused) them: a link that keeps a packet takes its own reference, and
// a frame.Writer keeps no Bytes.
func (q *outQueue) reset() {
	q.pkts.Reset()
	for i := range q.frames {
		if p := q.frames[i].Packet; p != nil {
			p.DecRef()
		}
	}
	clear(q.frames)
	q.frames = q.frames[:0]
	for _, fb := range q.bufs {
		fb.free()
	}
	clear(q.bufs)
	q.bufs = q.bufs[:0]
}

// frameBuf is a buffer outputRaw builds a frame in. Unlike gVisor's
// chunks it is not zeroed when reused: every byte of a frame is written
// before it is sent.
type frameBuf struct {
	b []byte
}

// Frame buffers come in powers of two from 2 KiB (a full-size Ethernet
// frame with its IPsec overhead) to 128 KiB (a 64 KiB segment on a link
// with a jumbo MTU).
const (
	minFrameBufLog = 11
	maxFrameBufLog = 17
)

var frameBufPools [maxFrameBufLog - minFrameBufLog + 1]sync.Pool

// getFrameBuf returns a buffer of at least n bytes (n ≤ 128 KiB).
func getFrameBuf(n int) *frameBuf {
	c := max(bits.Len(uint(n-1)), minFrameBufLog) - minFrameBufLog
	if fb, ok := frameBufPools[c].Get().(*frameBuf); ok {
		return fb
	}
	return &frameBuf{b: make([]byte, 1<<(c+minFrameBufLog))}
}

func (fb *frameBuf) free() {
	frameBufPools[bits.Len(uint(len(fb.b)-1))-minFrameBufLog].Put(fb)
}

// Room outputRaw leaves around a segment: before it, the link header and
// the most an ESP SA puts in front (outer IPv6 header, UDP, ESP header, a
// 16-byte IV); after it, the most ESP appends (15 bytes of padding, the
// trailer and a 32-byte ICV), rounded up.
const (
	frameHeadroom = 128
	frameTailroom = 64
	// maxRawSegment bounds the segments outputRaw takes: their frame
	// buffer must exist, and the packet with IPsec's overhead must fit an
	// IP length field (a bigger one may need a tunnel's fragments,
	// xfrm.Emitter, which only the PacketBuffer path offers).
	maxRawSegment = 0xffff - frameHeadroom - frameTailroom
)

// rawAlloc is the allocator outputRaw gives the engine: the segment's own
// buffer, with room around the segment, to seal in place
// (xfrm.OutPlaceAllocator), and frame buffers for anything else the
// engine builds (a bundle's later SAs), each with room for the link
// header before it.
type rawAlloc struct {
	buf     []byte // the segment's frame buffer, from the link header on
	off     int    // the segment's offset in buf
	linkLen int
	bufs    []*frameBuf
}

var rawAllocPool = sync.Pool{New: func() any { return &rawAlloc{bufs: make([]*frameBuf, 0, 4)} }}

// OutPlace implements xfrm.OutPlaceAllocator.
func (a *rawAlloc) OutPlace() ([]byte, int) { return a.buf, a.off }

// Alloc implements xfrm.Allocator.
func (a *rawAlloc) Alloc(n int) []byte {
	fb := getFrameBuf(a.linkLen + n)
	a.bufs = append(a.bufs, fb)
	return fb.b[a.linkLen : a.linkLen+n]
}

// within returns the offset of s in b when s lies in b's backing array.
func within(b, s []byte) (int, bool) {
	if len(s) == 0 || len(b) == 0 {
		return 0, false
	}
	off := int(uintptr(unsafe.Pointer(unsafe.SliceData(s))) - uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	return off, off >= 0 && off+len(s) <= len(b)
}

// outputRaw sends the IP packet ip, a segment outputGSO cut for pkt and
// built in fb at frameHeadroom, as a frame of its own buffer: the engine
// seals it in place (or builds it in frame buffers of rawAlloc), and the
// link header is pkt's own, with the EtherType of what goes out. ip is
// segment seg of c, which can cut it again for the rare packet that turns
// out too big for the path after IPsec: sendWire then fragments it as
// before, and needs the inner packet that sealing in place destroyed.
func (e *Endpoint) outputRaw(pkt *stack.PacketBuffer, fb *frameBuf, ip []byte, out *outQueue, c *gsoCut, seg int) {
	link := pkt.LinkHeader().Slice()
	linkLen := len(link)
	a := rawAllocPool.Get().(*rawAlloc)
	a.buf, a.off, a.linkLen = fb.b[linkLen:], frameHeadroom-linkLen, linkLen
	verdict, wire := e.engine.Output(ip, a)
	bufs := append(a.bufs, fb) // every buffer the packet may be in
	defer func() {
		clear(bufs)
		a.bufs = bufs[:0]
		rawAllocPool.Put(a)
	}()
	var keep *frameBuf
	switch verdict {
	case xfrm.VerdictDrop:
		e.Stats.OutDropped.Add(1)
	case xfrm.VerdictPass:
		e.Stats.OutPassed.Add(1)
		keep = e.frameOut(pkt, ip, ip, link, bufs, out, nil, 0)
	default:
		e.Stats.OutProtected.Add(1)
		keep = e.frameOut(pkt, ip, wire, link, bufs, out, c, seg)
	}
	for _, b := range bufs {
		if b != keep {
			b.free()
		}
	}
}

// frameOut queues wire, the IP packet outputRaw's engine call made of
// inner (wire is inner when it passed in clear, and c nil), as a frame
// of the buffer among bufs it lies in, and returns that buffer; or, when
// it is too big for the path, hands it to sendWire in gVisor views to be
// fragmented and returns nil.
func (e *Endpoint) frameOut(pkt *stack.PacketBuffer, inner, wire, link []byte, bufs []*frameBuf, out *outQueue, c *gsoCut, seg int) *frameBuf {
	if len(wire) > e.pathMTU(wire) {
		v := buffer.NewViewWithData(wire)
		if c != nil {
			// Sealing in place destroyed inner, which sendWire needs:
			// cut the segment again.
			iv := buffer.NewViewSize(len(inner))
			defer iv.Release()
			inner = iv.AsSlice()
			c.segment(inner, seg)
		}
		e.sendWire(pkt, inner, v.AsSlice(), v, out)
		return nil
	}
	for _, b := range bufs {
		off, ok := within(b.b, wire)
		if !ok || off < len(link) {
			continue
		}
		f := b.b[off-len(link) : off+len(wire)]
		copy(f, link)
		if len(link) == header.EthernetMinimumSize {
			// The link header is pkt's, the EtherType the wire
			// packet's (an IPv6 packet may leave in an IPv4 tunnel).
			et := header.IPv6ProtocolNumber
			if wire[0]>>4 == 4 {
				et = header.IPv4ProtocolNumber
			}
			binary.BigEndian.PutUint16(f[12:], uint16(et))
		}
		out.pushFrame(f, b)
		e.Stats.OutFrames.Add(1)
		return b
	}
	// Not built where it can be framed: never expected.
	e.engine.Stats.OutError.Add(1)
	e.Stats.OutDropped.Add(1)
	return nil
}
