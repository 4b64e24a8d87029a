package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/ipsecstack/ipsecstack/integration/linuxvm"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// ndpUnderESP checks that the capture holds an ESP packet from src to the
// solicited-node address of dst (a neighbour solicitation under the
// multicast SA), and no neighbour solicitation or advertisement between
// them in clear.
func ndpUnderESP(capPath string, src, dst netip.Addr) error {
	frames, err := readCapture(capPath)
	if err != nil {
		return err
	}
	sn := solicitedNode(dst)
	esp := 0
	for _, fr := range frames {
		fi, ok := parseFrame(fr)
		if !ok || fi.src != src {
			continue
		}
		if fi.proto == uint8(xfrm.ProtoESP) && fi.dst == sn {
			esp++
		}
		if fi.proto == xfrm.ProtoICMPv6 && (fi.icmpType == 135 || fi.icmpType == 136) {
			return fmt.Errorf("neighbour discovery (type %d) in clear from %v to %v", fi.icmpType, fi.src, fi.dst)
		}
	}
	if esp == 0 {
		return fmt.Errorf("no ESP packet from %v to %v (solicited-node of %v) in the capture", src, sn, dst)
	}
	return nil
}

// heapAlloc is an xfrm.Allocator over make.
type heapAlloc struct{}

func (heapAlloc) Alloc(n int) []byte { return make([]byte, n) }

// extHdrFrom sends UDP datagrams with a hop-by-hop and a destination
// options header (each with a mutable and an immutable option) from the
// stack to the guest's UDP echo, and waits for the echoes. gVisor sends
// no such headers itself, so the packet is crafted and goes through the
// stack's xfrm engine (the same Output as the stack's link wrapper) onto
// the wire.
func extHdrFrom(ctx context.Context, cs *caseStack, vm *linuxvm.VM, src, dst netip.Addr) error {
	if !src.Is6() {
		return fmt.Errorf("extension headers: IPv6 only")
	}
	st := cs.st
	l := tcpip.FullAddress{NIC: st.NIC, Addr: tcpip.AddrFromSlice(src.AsSlice()), Port: extPort}
	c, err := gonet.DialUDP(st.Stack, &l, nil, stack.Proto(src))
	if err != nil {
		return fmt.Errorf("udp bind: %w", err)
	}
	defer c.Close()
	guestMAC, err := parseMAC(vm.GuestMAC)
	if err != nil {
		return err
	}
	got := make([]byte, 65536)
	for i, size := range []int{200, 1000, 1200} {
		msg := bytes.Repeat([]byte{byte(i + 1), 0x5a}, size/2)
		ok := false
		for try := 0; try < 5 && !ok; try++ {
			ip := udp6WithOpts(src, dst, extPort, linuxvm.EchoPort, msg)
			v, out := st.Engine.Output(ip, heapAlloc{})
			switch v {
			case xfrm.VerdictDrop:
				return fmt.Errorf("engine dropped the datagram with extension headers")
			case xfrm.VerdictPass:
				return fmt.Errorf("engine passed the datagram with extension headers in clear")
			}
			if len(out) > 1500 {
				return fmt.Errorf("protected packet of %d bytes exceeds the MTU", len(out))
			}
			if err := cs.raw.Send(ethFrame(guestMAC, cs.mac, out)); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, _, err := c.ReadFrom(got)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue
			}
			if !bytes.Equal(got[:n], msg) {
				return fmt.Errorf("echo of %d bytes differs (%d bytes back)", size, n)
			}
			ok = true
		}
		if !ok {
			return fmt.Errorf("no echo of the %d-byte datagram with extension headers after 5 tries", size)
		}
	}
	return nil
}

func parseMAC(s string) (tcpip.LinkAddress, error) {
	a, err := tcpip.ParseMACAddress(s)
	if err != nil {
		return "", fmt.Errorf("guest MAC %q: %v", s, err)
	}
	return a, nil
}

// ipsecFrames returns the captured frames from src to dst whose outermost
// header is proto, or ESP in UDP for ESP (not fragments), in capture order.
func ipsecFrames(frames [][]byte, proto xfrm.Proto, src, dst netip.Addr) ([][]byte, error) {
	var r [][]byte
	for _, fr := range frames {
		fi, ok := parseFrame(fr)
		if ok && !fi.frag && (fi.proto == uint8(proto) || fi.encap && proto == xfrm.ProtoESP) && fi.src == src && fi.dst == dst {
			r = append(r, fr)
		}
	}
	if len(r) == 0 {
		return nil, fmt.Errorf("no %s frame from %v to %v in the capture", proto, src, dst)
	}
	return r, nil
}

// replay is one re-sent packet and the counter it must move by one:
// the newest packet of the SA is a duplicate inside the window
// (InStateSeqError); the oldest is below the window after the case's
// thousands of packets — InStateSeqError too without ESN, but with ESN
// RFC 4303 Appendix A takes a sequence number below the window for the
// next 2^32 epoch, so the ICV check fails instead (InStateProtoError), on
// Linux and on ipsecstack alike. With a window larger than the traffic
// (4096) the oldest is a duplicate as well.
type replay struct {
	what    string
	frame   []byte
	counter string
}

func replays(frames [][]byte, c linuxCase, proto xfrm.Proto, src, dst netip.Addr) ([]replay, error) {
	fs, err := ipsecFrames(frames, proto, src, dst)
	if err != nil {
		return nil, err
	}
	r := []replay{{"newest", fs[len(fs)-1], "XfrmInStateSeqError"}}
	old := replay{"oldest", fs[0], "XfrmInStateSeqError"}
	if c.ESN && len(fs) > int(c.window()) {
		old.counter = "XfrmInStateProtoError"
	}
	if len(fs) > 1 {
		r = append(r, old)
	}
	return r, nil
}

func statMap(s []xfrm.Stat) map[string]uint64 {
	m := map[string]uint64{}
	for _, v := range s {
		m[v.Name] = v.Value
	}
	return m
}

// replayTo re-sends each replay with send and waits until counters (the
// peer's xfrm_stat) moved by exactly one in the expected counter and
// nowhere else.
func replayTo(ctx context.Context, rs []replay, send func([]byte) error, counters func() (map[string]uint64, error), who string) error {
	for _, r := range rs {
		before, err := counters()
		if err != nil {
			return err
		}
		if err := send(r.frame); err != nil {
			return err
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			after, err := counters()
			if err != nil {
				return err
			}
			var moved []string
			for k, v := range after {
				if v != before[k] {
					moved = append(moved, fmt.Sprintf("%s +%d", k, v-before[k]))
				}
			}
			if len(moved) > 0 {
				if len(moved) == 1 && after[r.counter]-before[r.counter] == 1 {
					break
				}
				return fmt.Errorf("%s: replayed %s packet: want %s +1, counters moved: %v", who, r.what, r.counter, moved)
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s: replayed %s packet: no counter moved (want %s +1)", who, r.what, r.counter)
			}
			time.Sleep(30 * time.Millisecond)
		}
	}
	return nil
}

// replayToGuest re-sends IPsec packets the stack sent to the guest; the
// kernel must reject them (see replay).
func replayToGuest(ctx context.Context, vm *linuxvm.VM, cs *caseStack, frames [][]byte, c linuxCase, src, dst netip.Addr) error {
	rs, err := replays(frames, c, c.main().Proto, src, dst)
	if err != nil {
		return err
	}
	return replayTo(ctx, rs, cs.raw.Send, vm.XfrmStats, "guest")
}

// replayToStack injects IPsec packets the guest sent to the stack again;
// the stack must reject them (see replay).
func replayToStack(ctx context.Context, cs *caseStack, frames [][]byte, c linuxCase, src, dst netip.Addr) error {
	rs, err := replays(frames, c, c.main().Proto, src, dst)
	if err != nil {
		return err
	}
	stats := func() (map[string]uint64, error) { return statMap(cs.st.Engine.Stats.Snapshot()), nil }
	return replayTo(ctx, rs, cs.inj.Inject, stats, "stack")
}
