//go:build linux

// Package tap runs a gVisor stack on a Linux TAP device: the stack owns the
// device's file descriptor, the host kernel is the peer on the other side
// (give the kernel's tap interface an address on the same subnet to talk to
// the stack, or attach the tap to a bridge or a VM).
package tap

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
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
	// A "tap%d" template would make the kernel pick the name, which we
	// then could not configure: ask for a concrete one.
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ || strings.ContainsRune(name, '%') {
		return nil, fmt.Errorf("tap: invalid device name %q (1 to %d bytes, no %%)", name, unix.IFNAMSIZ-1)
	}
	fd, err := tun.OpenTAP(name)
	if err != nil {
		switch {
		case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
			return nil, fmt.Errorf("tap: device %q: %w (needs root or CAP_NET_ADMIN)", name, err)
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("tap: device %q: /dev/net/tun: %w (no TUN/TAP support)", name, err)
		case errors.Is(err, unix.EINVAL):
			return nil, fmt.Errorf("tap: device %q: %w (exists and is not a TAP device?)", name, err)
		}
		return nil, fmt.Errorf("tap: device %q: %w", name, err)
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
	idx, err := ifindex(name)
	if err != nil {
		return fail("interface index", err)
	}
	// The counters are asked of the namespace the device is in: a
	// netlink socket keeps the namespace it was made in.
	nl, err := openNetlink()
	if err != nil {
		return fail("rtnetlink socket", err)
	}
	le := fdlink.New(ep, []int{fd, nl})
	le.SetAddr = func(a tcpip.LinkAddress) { _ = setTXFilter(fd, a) }
	return &Endpoint{Endpoint: le, ifindex: idx, nl: nl}, nil
}

// Endpoint is the link endpoint Open returns.
type Endpoint struct {
	*fdlink.Endpoint
	ifindex int
	nl      int // NETLINK_ROUTE socket, closed with the endpoint

	nlMu  sync.Mutex
	nlSeq uint32
}

// KernelDrops returns the TAP device's tx_dropped counter (rtnetlink's
// IFLA_STATS64), read now: frames the kernel dropped on their way to us,
// for a full device queue (txqueuelen frames not yet read), and frames for
// another MAC that the device's filter (setTXFilter) refused, as a bridge
// floods unicast for unknown hosts. The kernel has no separate counter of
// the first. 0 when closed or the device is gone.
func (e *Endpoint) KernelDrops() uint64 {
	var v uint64
	e.Control(func([]int) {
		e.nlMu.Lock()
		defer e.nlMu.Unlock()
		e.nlSeq++
		v, _ = linkTxDropped(e.nl, e.ifindex, e.nlSeq)
	})
	return v
}

// ifindex returns the index of the interface named name.
func ifindex(name string) (int, error) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("SIOCGIFINDEX: %w", err)
	}
	return int(ifr.Uint32()), nil
}

// openNetlink opens a NETLINK_ROUTE socket whose reads give up after a
// second, so a stats read never hangs.
func openNetlink() (int, error) {
	nl, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return -1, err
	}
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(nl, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(nl)
		return -1, err
	}
	if err := unix.Bind(nl, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(nl)
		return -1, err
	}
	return nl, nil
}

// linkTxDropped asks rtnetlink (socket nl) for interface index and
// returns its tx_dropped: the eighth u64 of struct rtnl_link_stats64
// (after rx/tx packets, bytes, errors and rx_dropped) in IFLA_STATS64.
func linkTxDropped(nl, index int, seq uint32) (uint64, error) {
	const txDroppedOff = 7 * 8
	req := make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.RTM_GETLINK)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:], seq)
	// struct ifinfomsg: family, pad, type (u16), index (s32), flags, change
	binary.NativeEndian.PutUint32(req[unix.SizeofNlMsghdr+4:], uint32(index))
	if err := unix.Sendto(nl, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(nl, buf, 0)
		if err != nil {
			return 0, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return 0, err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue // a late answer to an earlier request
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
						return 0, syscall.Errno(-e)
					}
				}
				return 0, errors.New("rtnetlink error")
			case unix.RTM_NEWLINK:
				attrs, err := syscall.ParseNetlinkRouteAttr(&m)
				if err != nil {
					return 0, err
				}
				for _, a := range attrs {
					if a.Attr.Type == unix.IFLA_STATS64 && len(a.Value) >= txDroppedOff+8 {
						return binary.NativeEndian.Uint64(a.Value[txDroppedOff:]), nil
					}
				}
				return 0, errors.New("no IFLA_STATS64")
			}
		}
	}
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
