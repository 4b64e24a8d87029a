//go:build linux

// Package tap runs a gVisor stack on a Linux TAP device: the stack owns the
// device's file descriptor, the host kernel is the peer on the other side
// (give the kernel's tap interface an address on the same subnet to talk to
// the stack, or attach the tap to a bridge or a VM).
package tap

import (
	"crypto/rand"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/internal/fdlink"
)

// Options configures Open.
type Options struct {
	// MTU is the IP MTU of the stack and of the kernel's tap interface;
	// 0 keeps the interface's (1500 for a new TAP).
	MTU uint32
	// Address is the stack's MAC; empty means a random locally
	// administered unicast one. It must differ from the kernel side's MAC.
	Address tcpip.LinkAddress
	// RXChecksumOffload tells the stack not to verify received checksums.
	// Not needed on a TAP without IFF_VNET_HDR: the kernel completes
	// checksums before handing frames to us.
	RXChecksumOffload bool
	// ClosedFunc, if set, is called when the reader stops, with the error
	// that stopped it (nil when stopped by Close or NIC removal).
	ClosedFunc func(tcpip.Error)
	// UDPSegmentation sends each run of UDP datagrams of one flow and one
	// size (ESP in UDP) as one UDP GSO frame, as afpacket's option of the
	// same name does; the kernel cuts it where it leaves the bridge or
	// meets a socket.
	UDPSegmentation bool
	// TxQueueLen is the most frames the kernel queues for us to read
	// (the device's txqueuelen) before it drops them; 0 means
	// DefaultTxQueueLen. A larger queue the device already has is kept.
	TxQueueLen int
}

// DefaultTxQueueLen is the default TxQueueLen, the one every link of
// ours asks for (fdlink.DefaultTxQueueLen).
const DefaultTxQueueLen = fdlink.DefaultTxQueueLen

// Open creates the TAP device name (or attaches to an existing persistent
// one), brings it up and returns an Ethernet endpoint on it. A device that
// Open created disappears when the endpoint is closed.
func Open(name string, opts Options) (stack.LinkEndpoint, error) {
	fd, err := fdlink.OpenDevice("tap", name, "%", fdlink.OpenVnetTAP)
	if err != nil {
		return nil, err
	}
	fail := func(what string, err error) (stack.LinkEndpoint, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("tap: device %q: %s: %w", name, what, err)
	}

	mac := opts.Address
	if mac == "" {
		var b [6]byte
		rand.Read(b[:])
		b[0] = b[0]&^1 | 2 // unicast, locally administered
		mac = tcpip.LinkAddress(b[:])
	}
	if len(mac) != 6 || mac[0]&1 != 0 {
		return fail("address", fmt.Errorf("%v is not a unicast MAC", mac))
	}
	if err := setTXFilter(fd, mac); err != nil {
		return fail("TUNSETTXFILTER", err)
	}
	mtu, err := fdlink.Up(name, opts.MTU)
	if err != nil {
		return fail("configure", err)
	}
	if err := fdlink.RaiseTxQueueLen(name, opts.TxQueueLen); err != nil {
		return fail("txqueuelen", err)
	}

	// Receive offloads: the kernel may hand us frames with the checksum
	// not yet computed (flagged in the virtio_net_hdr) and UDP GSO frames
	// whole, which the reader cuts; USO needs Linux 6.2, so without it
	// the kernel cuts and sums every frame for us, as before.
	if err := fdlink.SetOffload(fd, fdlink.TunFCsum|fdlink.TunFUSO4|fdlink.TunFUSO6); err != nil {
		return fail("TUNSETOFFLOAD", err)
	}
	ep, err := fdlink.NewFDBased(&fdbased.Options{
		FDs:               []int{fd},
		MTU:               mtu,
		EthernetHeader:    true,
		Address:           mac,
		GSOMaxSize:        0,
		ClosedFunc:        opts.ClosedFunc,
		RXChecksumOffload: opts.RXChecksumOffload,
		// A TAP fd is no socket: fdbased uses readv whatever we ask.
		PacketDispatchMode: fdbased.Readv,
	})
	if err != nil {
		return fail("fdbased endpoint", err)
	}
	drops, err := fdlink.OpenTxDropped(name)
	if err != nil {
		return fail("drop counter", err)
	}
	le := fdlink.New(ep, []int{fd, drops.FD()})
	le.SetAddr = func(a tcpip.LinkAddress) { _ = setTXFilter(fd, a) }
	// Our own reader and writer (fdlink.UseReaders, UseWriter): a batch
	// of frames per wake-up handed to the IPsec wrapper as one (GRO after
	// decryption; fdbased delivers frame by frame), the virtio_net_hdr
	// IFF_VNET_HDR puts before every frame, and UDP GSO frames both ways.
	le.UseReaders(fdlink.ReaderOptions{MTU: mtu, RXChecksumOffload: opts.RXChecksumOffload, ClosedFunc: opts.ClosedFunc, Readv: true})
	le.UseWriter(fdlink.WriterOptions{UDPSegmentation: opts.UDPSegmentation, Writev: true})
	return &Endpoint{Endpoint: le, drops: drops}, nil
}

// Endpoint is the link endpoint Open returns.
type Endpoint struct {
	*fdlink.Endpoint
	drops *fdlink.TxDropped // its socket is closed with the endpoint
}

// KernelDrops returns the TAP device's tx_dropped counter (rtnetlink's
// IFLA_STATS64), read now: frames the kernel dropped on their way to us,
// for a full device queue (txqueuelen frames not yet read), and frames for
// another MAC that the device's filter (setTXFilter) refused, as a bridge
// floods unicast for unknown hosts. The kernel has no separate counter of
// the first. 0 when closed or the device is gone.
func (e *Endpoint) KernelDrops() uint64 {
	var v uint64
	e.Control(func([]int) { v = e.drops.Read() })
	return v
}

// setTXFilter makes the kernel drop, before they reach us, frames whose
// destination is neither mac nor a group address, like a NIC's MAC filter:
// a bridge floods unicast for hosts it has not learnt to every port, and
// reading those only to drop them costs a read each. (fdbased's readv
// dispatcher, which read TAPs before our reader, even stopped reading for
// good at the first one.)
func setTXFilter(fd int, mac tcpip.LinkAddress) error {
	// struct tun_filter { __u16 flags; __u16 count; __u8 addr[][ETH_ALEN]; }
	var f struct {
		flags, count uint16
		addr         [6]byte
	}
	f.flags = 1 // TUN_FLT_ALLMULTI: let every group address through
	f.count = 1
	copy(f.addr[:], mac)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETTXFILTER, uintptr(unsafe.Pointer(&f))); errno != 0 {
		return errno
	}
	return nil
}
