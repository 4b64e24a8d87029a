// Package frame is the seam through which the IPsec wrapper hands a link
// endpoint whole frames built in its own buffers, instead of gVisor
// PacketBuffers.
//
// On a real link the wrapper seals every TCP segment into a new packet.
// Wrapping each in a PacketBuffer costs two pooled, zeroed gVisor chunks
// (payload and link header), two pool round trips and the reference
// counting on release: a third of a sending daemon's CPU, more than the
// AES-GCM. A frame written from the wrapper's buffer, which the kernel
// copies before the write returns, costs none of that.
package frame

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Frame is one frame to write: Bytes, a whole link-layer frame (link
// header included) in the caller's buffer, or, when Bytes is nil, Packet,
// a packet as stack.LinkWriter.WritePackets takes it.
type Frame struct {
	Bytes  []byte
	Packet *stack.PacketBuffer
}

// Size is the frame's length in bytes on the link.
func (f *Frame) Size() int {
	if f.Bytes != nil {
		return len(f.Bytes)
	}
	return f.Packet.Size()
}

// Writer is a link endpoint that can write Frames.
type Writer interface {
	// CanWriteFrames reports whether WriteFrames may be used now.
	CanWriteFrames() bool
	// WriteFrames writes frames in order and returns how many went out
	// before an error. It keeps no Bytes after it returns (the caller
	// reuses them) and takes its own references to the Packets it keeps.
	WriteFrames(frames []Frame) (int, tcpip.Error)
}
