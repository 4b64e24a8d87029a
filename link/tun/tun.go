//go:build linux

// Package tun runs a gVisor stack on a Linux TUN device: an L3 link with no
// Ethernet header, no link address and no neighbour resolution. The host
// kernel is the other end: whatever the host routes into the device (`ip
// route add 10.2.0.0/24 dev NAME`) reaches the stack as IP packets, and
// what the stack sends out of the NIC enters the host's IP layer as if
// received on NAME. This is how kernel-libipsec's ipsec0 and wireguard-go
// give every host program a path through a userspace data plane.
package tun

import (
	"fmt"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/internal/fdlink"
)

// Options configures Open.
type Options struct {
	// MTU is the IP MTU of the stack's NIC and of the host's interface;
	// 0 keeps the interface's (1500 for a new TUN).
	MTU uint32
	// ClosedFunc, if set, is called when the reader stops, with the error
	// that stopped it (nil when stopped by Close or NIC removal).
	ClosedFunc func(tcpip.Error)
	// TxQueueLen is the most packets the kernel queues for us to read
	// (the device's txqueuelen) before it drops them; 0 means
	// DefaultTxQueueLen. A larger queue the device already has is kept.
	TxQueueLen int
}

// DefaultTxQueueLen is the default TxQueueLen, the one every link of
// ours asks for (fdlink.DefaultTxQueueLen).
const DefaultTxQueueLen = fdlink.DefaultTxQueueLen

// Open creates the TUN device name (or attaches to an existing persistent
// one), brings it up and returns an L3 endpoint on it: packets carry no
// link header, and the reader tells IPv4 from IPv6 by the version nibble.
// A device that Open created disappears when the endpoint is closed.
//
// The device is opened with IFF_VNET_HDR and asks the kernel for TCP
// segmentation offload (TUN_F_TSO4, TUN_F_TSO6) with partial checksums
// (TUN_F_CSUM), as wireguard-go's TUN does: the host's TCP then hands the
// device segments of up to 64 KiB, one read each, which the reader cuts
// into the wire-sized segments a NIC would send, with their checksums
// (fdlink's splitTCP), and a packet whose checksum the kernel left to the
// device gets it there too. A kernel that refuses the offloads hands
// whole packets, as it does to a device without IFF_VNET_HDR. Received
// checksums are verified as on any link.
func Open(name string, opts Options) (stack.LinkEndpoint, error) {
	fd, err := fdlink.OpenDevice("tun", name, "%/ \t", fdlink.OpenVnetTUN)
	if err != nil {
		return nil, err
	}
	fail := func(what string, err error) (stack.LinkEndpoint, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: device %q: %s: %w", name, what, err)
	}
	mtu, err := fdlink.Up(name, opts.MTU)
	if err != nil {
		return fail("configure", err)
	}
	if err := fdlink.RaiseTxQueueLen(name, opts.TxQueueLen); err != nil {
		return fail("txqueuelen", err)
	}
	if err := fdlink.SetOffload(fd, fdlink.TunFCsum|fdlink.TunFTSO4|fdlink.TunFTSO6); err != nil {
		return fail("TUNSETOFFLOAD", err)
	}
	ep, err := fdlink.NewFDBased(&fdbased.Options{
		FDs:            []int{fd},
		MTU:            mtu,
		EthernetHeader: false,
		GSOMaxSize:     0,
		ClosedFunc:     opts.ClosedFunc,
		// A TUN fd is no socket: fdbased uses readv whatever we ask.
		PacketDispatchMode: fdbased.Readv,
	})
	if err != nil {
		return fail("fdbased endpoint", err)
	}
	drops, err := fdlink.OpenTxDropped(name)
	if err != nil {
		ep.Close()
		return fail("drop counter", err)
	}
	le := fdlink.New(ep, []int{fd, drops.FD()})
	// Our own reader and writer, which know the virtio_net_hdr: frames
	// read in batches and TSO frames cut; runs of in-order TCP segments
	// written as one TSO frame, everything else after a header that
	// asks for no offload.
	le.UseReaders(fdlink.ReaderOptions{MTU: mtu, ClosedFunc: opts.ClosedFunc, Readv: true, L3: true})
	le.UseWriter(fdlink.WriterOptions{Writev: true, TCPCoalesce: true})
	return &Endpoint{Endpoint: le, drops: drops}, nil
}

// Endpoint is the link endpoint Open returns.
type Endpoint struct {
	*fdlink.Endpoint
	drops *fdlink.TxDropped // its socket is closed with the endpoint
}

// KernelDrops returns the TUN device's tx_dropped counter, read now: the
// packets the kernel dropped because the stack did not read the device
// fast enough (its queue of txqueuelen packets was full). 0 when closed.
func (e *Endpoint) KernelDrops() uint64 {
	var v uint64
	e.Control(func([]int) { v = e.drops.Read() })
	return v
}
