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
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"
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
}

// Open creates the TAP device name (or attaches to an existing persistent
// one), brings it up and returns an Ethernet endpoint on it. A device that
// Open created disappears when the endpoint is closed.
func Open(name string, opts Options) (stack.LinkEndpoint, error) {
	fd, err := fdlink.OpenDevice("tap", name, "%", tun.OpenTAP)
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
// destination is neither mac nor a group address, like a NIC's MAC filter.
// This is not just an optimisation: fdbased's readv dispatcher treats a
// unicast frame for another MAC as the end of input and stops reading, so
// one stray frame (a stale neighbour entry, a flooded bridge port) would
// silently end all reception.
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
