package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// PingReply is one echo reply.
type PingReply struct {
	Seq  uint16
	Size int
	RTT  time.Duration
}

// Ping sends one ICMP or ICMPv6 echo request of size payload bytes from
// inside the stack to dst and waits for the reply until ctx ends.
func (s *Stack) Ping(ctx context.Context, dst netip.Addr, seq uint16, size int) (PingReply, error) {
	transProto := icmp.ProtocolNumber6
	typ := byte(header.ICMPv6EchoRequest)
	if dst.Is4() {
		transProto = icmp.ProtocolNumber4
		typ = byte(header.ICMPv4Echo)
	}
	var wq waiter.Queue
	ep, terr := s.NewEndpoint(transProto, Proto(dst), &wq)
	if terr != nil {
		return PingReply{}, fmt.Errorf("ping %v: %s", dst, terr)
	}
	defer ep.Close()
	we, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)

	req := make([]byte, 8+size)
	req[0] = typ
	binary.BigEndian.PutUint16(req[6:], seq)
	for i := range req[8:] {
		req[8+i] = byte(i)
	}
	to := s.FullAddress(dst, 0)
	start := time.Now()
	if _, terr := ep.Write(bytes.NewReader(req), tcpip.WriteOptions{To: &to}); terr != nil {
		return PingReply{}, fmt.Errorf("ping %v: send: %s", dst, terr)
	}
	for {
		var buf bytes.Buffer
		_, terr := ep.Read(&buf, tcpip.ReadOptions{})
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return PingReply{}, fmt.Errorf("ping %v seq %d: %w", dst, seq, ctx.Err())
			}
		}
		if terr != nil {
			return PingReply{}, fmt.Errorf("ping %v: receive: %s", dst, terr)
		}
		b := buf.Bytes()
		if len(b) < 8 || binary.BigEndian.Uint16(b[6:]) != seq {
			continue
		}
		if !bytes.Equal(b[8:], req[8:]) {
			return PingReply{}, fmt.Errorf("ping %v seq %d: reply payload differs", dst, seq)
		}
		return PingReply{Seq: seq, Size: len(b) - 8, RTT: time.Since(start)}, nil
	}
}
