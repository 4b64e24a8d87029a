// Package pcap writes Ethernet frames in the classic libpcap file format
// (LINKTYPE_ETHERNET), readable by tcpdump, tshark and Wireshark.
//
// gVisor's link/sniffer writes pcap too, but its writer is unexported and
// hard-wired to LINKTYPE_RAW (IP without a link header); our endpoints carry
// Ethernet frames, and ESP decryption in tshark keys on the full frame, so
// this package has its own small writer.
package pcap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/frame"
	"github.com/ipsecstack/ipsecstack/link/memlink"
)

// File format constants (https://wiki.wireshark.org/Development/LibpcapFileFormat).
const (
	// MagicMicroseconds is the magic number of a classic pcap file with
	// microsecond timestamps, as written in the writer's byte order.
	MagicMicroseconds = 0xa1b2c3d4
	// LinkTypeEthernet is LINKTYPE_ETHERNET.
	LinkTypeEthernet = 1
	// DefaultSnapLen is used when NewWriter gets a snaplen of 0: the largest
	// frame gVisor can write (64 KiB IP plus Ethernet) fits.
	DefaultSnapLen = 262144

	fileHeaderLen   = 24
	recordHeaderLen = 16
)

// Writer writes a pcap stream. Its methods are safe for concurrent use; each
// record is written with one Write call, so records never interleave.
type Writer struct {
	mu      sync.Mutex
	w       io.Writer
	snaplen uint32
	buf     []byte
	err     error
}

// NewWriter writes the pcap file header to w and returns a Writer that cuts
// frames at snaplen bytes (0 means DefaultSnapLen).
func NewWriter(w io.Writer, snaplen uint32) (*Writer, error) {
	if snaplen == 0 {
		snaplen = DefaultSnapLen
	}
	var h [fileHeaderLen]byte
	binary.LittleEndian.PutUint32(h[0:], MagicMicroseconds)
	binary.LittleEndian.PutUint16(h[4:], 2) // version 2.4
	binary.LittleEndian.PutUint16(h[6:], 4)
	// thiszone and sigfigs stay 0: timestamps are UTC, as libpcap writes.
	binary.LittleEndian.PutUint32(h[16:], snaplen)
	binary.LittleEndian.PutUint32(h[20:], LinkTypeEthernet)
	if _, err := w.Write(h[:]); err != nil {
		return nil, fmt.Errorf("pcap: write file header: %w", err)
	}
	return &Writer{w: w, snaplen: snaplen}, nil
}

// WritePacket appends one frame captured at ts. After a write error every
// later call returns that error, so a full disk is reported once per caller
// rather than leaving a torn record followed by good ones.
func (pw *Writer) WritePacket(ts time.Time, frame []byte) error {
	return pw.writeParts(ts, len(frame), [][]byte{frame})
}

// writeParts is WritePacket for a frame of size bytes held in parts (a
// packet buffer's views), copied straight into the record buffer.
func (pw *Writer) writeParts(ts time.Time, size int, parts [][]byte) error {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.err != nil {
		return pw.err
	}
	capLen := min(size, int(pw.snaplen))
	need := recordHeaderLen + capLen
	if cap(pw.buf) < need {
		pw.buf = make([]byte, need)
	}
	b := pw.buf[:need]
	binary.LittleEndian.PutUint32(b[0:], uint32(ts.Unix()))
	binary.LittleEndian.PutUint32(b[4:], uint32(ts.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(b[8:], uint32(capLen))
	binary.LittleEndian.PutUint32(b[12:], uint32(size))
	rest := b[recordHeaderLen:]
	for _, p := range parts {
		rest = rest[copy(rest, p):]
	}
	if _, err := pw.w.Write(b); err != nil {
		pw.err = fmt.Errorf("pcap: write record: %w", err)
		return pw.err
	}
	return nil
}

// Err returns the first write error, if any.
func (pw *Writer) Err() error {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.err
}

// Tap adapts w to memlink.Endpoint.SetTap: both directions go to the same
// file, as tcpdump on an interface shows them. Write errors are kept in w
// (see Err) because a tap cannot return them.
func Tap(w *Writer) func(dir memlink.Direction, frame []byte) {
	return func(_ memlink.Direction, frame []byte) {
		_ = w.WritePacket(time.Now(), frame)
	}
}

// Endpoint is a link endpoint wrapper that records every Ethernet frame
// passing through it to a Writer: put it directly above an afpacket or tap
// endpoint (below any IPsec wrapper) to capture what is on the wire.
type Endpoint struct {
	nested.Endpoint
	w *Writer
	// frames is the endpoint below as a frame.Writer, when it is one.
	frames frame.Writer
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)
var _ stack.NetworkDispatcher = (*Endpoint)(nil)

// NewEndpoint wraps lower, which must frame with Ethernet (fdbased with
// EthernetHeader, memlink), so that its frames are written to w.
func NewEndpoint(lower stack.LinkEndpoint, w *Writer) *Endpoint {
	e := &Endpoint{w: w}
	e.frames, _ = lower.(frame.Writer)
	e.Endpoint.Init(lower, e)
	return e
}

// WritePackets implements stack.LinkWriter: frames are recorded with their
// Ethernet header (already added by the NIC) before going down.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	now := time.Now()
	for _, pkt := range pkts.AsSlice() {
		_ = e.w.writeParts(now, pkt.Size(), pkt.AsSlices())
	}
	return e.Endpoint.WritePackets(pkts)
}

// CanWriteFrames implements frame.Writer: the wrapper takes frames when
// the endpoint below it does, so that a capture does not change the path
// the wrapper above sends on.
func (e *Endpoint) CanWriteFrames() bool {
	return e.frames != nil && e.frames.CanWriteFrames()
}

// WriteFrames implements frame.Writer: frames are recorded as they go
// down, as WritePackets records packets.
func (e *Endpoint) WriteFrames(frames []frame.Frame) (int, tcpip.Error) {
	if e.frames == nil {
		return 0, &tcpip.ErrNotSupported{}
	}
	now := time.Now()
	for i := range frames {
		if f := &frames[i]; f.Bytes != nil {
			_ = e.w.WritePacket(now, f.Bytes)
		} else {
			_ = e.w.writeParts(now, f.Packet.Size(), f.Packet.AsSlices())
		}
	}
	return e.frames.WriteFrames(frames)
}

// DeliverNetworkPacket implements stack.NetworkDispatcher: the lower
// endpoint has consumed the Ethernet header into LinkHeader, the first
// header of the packet, so the whole packet from there is the frame.
func (e *Endpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	_ = e.w.writeParts(time.Now(), pkt.Size(), pkt.AsSlices())
	e.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// ReadAll parses a classic pcap stream written by Writer (little-endian,
// microsecond magic) and returns its link type and frames. It exists so that
// tests, here and elsewhere, can check captures without external tools.
func ReadAll(r io.Reader) (linkType uint32, frames [][]byte, err error) {
	var h [fileHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, fmt.Errorf("pcap: read file header: %w", err)
	}
	if m := binary.LittleEndian.Uint32(h[0:]); m != MagicMicroseconds {
		return 0, nil, fmt.Errorf("pcap: bad magic %#x", m)
	}
	linkType = binary.LittleEndian.Uint32(h[20:])
	snaplen := binary.LittleEndian.Uint32(h[16:])
	for {
		var rh [recordHeaderLen]byte
		if _, err := io.ReadFull(r, rh[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return linkType, frames, nil
			}
			return linkType, frames, fmt.Errorf("pcap: record %d header: %w", len(frames), err)
		}
		capLen := binary.LittleEndian.Uint32(rh[8:])
		origLen := binary.LittleEndian.Uint32(rh[12:])
		if capLen > snaplen || capLen > origLen {
			return linkType, frames, fmt.Errorf("pcap: record %d: caplen %d, origlen %d, snaplen %d", len(frames), capLen, origLen, snaplen)
		}
		f := make([]byte, capLen)
		if _, err := io.ReadFull(r, f); err != nil {
			return linkType, frames, fmt.Errorf("pcap: record %d data: %w", len(frames), err)
		}
		frames = append(frames, f)
	}
}
