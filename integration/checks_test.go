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

// firstIPsecFrame returns the first captured frame from src to dst whose
// outermost header is proto (not a fragment).
func firstIPsecFrame(frames [][]byte, proto xfrm.Proto, src, dst netip.Addr) ([]byte, frameInfo, error) {
	for _, fr := range frames {
		fi, ok := parseFrame(fr)
		if ok && !fi.frag && fi.proto == uint8(proto) && fi.src == src && fi.dst == dst {
			return fr, fi, nil
		}
	}
	return nil, frameInfo{}, fmt.Errorf("no %s frame from %v to %v in the capture", proto, src, dst)
}

// replayToGuest re-sends the first IPsec packet the stack sent to the
// guest and expects the kernel's XfrmInStateSeqError to go up.
func replayToGuest(ctx context.Context, vm *linuxvm.VM, cs *caseStack, frames [][]byte, proto xfrm.Proto, src, dst netip.Addr) error {
	fr, fi, err := firstIPsecFrame(frames, proto, src, dst)
	if err != nil {
		return err
	}
	before, err := vm.XfrmStats()
	if err != nil {
		return err
	}
	if err := cs.raw.Send(fr); err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		after, err := vm.XfrmStats()
		if err != nil {
			return err
		}
		if d := after["XfrmInStateSeqError"] - before["XfrmInStateSeqError"]; d > 0 {
			if d != 1 {
				return fmt.Errorf("XfrmInStateSeqError went up by %d for one replay", d)
			}
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("replayed %s spi %#x: guest XfrmInStateSeqError stayed %d", proto, fi.spi, after["XfrmInStateSeqError"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// replayToStack injects the first IPsec packet the guest sent to the stack
// again and expects the stack's InStateSeqError to go up by one.
func replayToStack(cs *caseStack, frames [][]byte, proto xfrm.Proto, src, dst netip.Addr) error {
	fr, fi, err := firstIPsecFrame(frames, proto, src, dst)
	if err != nil {
		return err
	}
	e := cs.st.Engine
	before := e.Stats.InStateSeqError.Load()
	if err := cs.inj.Inject(fr); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		d := e.Stats.InStateSeqError.Load() - before
		if d == 1 {
			return nil
		}
		if d > 1 {
			return fmt.Errorf("InStateSeqError went up by %d for one replay", d)
		}
		if time.Now().After(deadline) {
			var nz []string
			for _, s := range e.Stats.Snapshot() {
				if s.Value != 0 {
					nz = append(nz, fmt.Sprintf("%s=%d", s.Name, s.Value))
				}
			}
			return fmt.Errorf("replayed %s spi %#x: stack InStateSeqError did not move (counters %v)", proto, fi.spi, nz)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
