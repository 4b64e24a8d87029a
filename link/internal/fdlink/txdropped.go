package fdlink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// TxDropped reads a TAP or TUN device's tx_dropped counter: the frames the
// kernel dropped on their way to the program reading the device (a full
// device queue, and for a TAP frames its MAC filter refused). It asks
// rtnetlink on a socket made when it was opened, so it reads the device
// of the namespace it was opened in whatever thread asks later.
type TxDropped struct {
	ifindex int
	nl      int

	mu  sync.Mutex
	seq uint32
}

// OpenTxDropped opens the counter of the device named name. Its socket
// (FD) belongs to the caller's endpoint: pass it to New so that Close
// closes it.
func OpenTxDropped(name string) (*TxDropped, error) {
	idx, err := ifindex(name)
	if err != nil {
		return nil, fmt.Errorf("interface index of %s: %w", name, err)
	}
	nl, err := openNetlink()
	if err != nil {
		return nil, fmt.Errorf("rtnetlink socket: %w", err)
	}
	return &TxDropped{ifindex: idx, nl: nl}, nil
}

// FD is the rtnetlink socket.
func (d *TxDropped) FD() int { return d.nl }

// Read returns the counter now; 0 if it cannot be read (the device is
// gone). Call it under the endpoint's Control, so the socket is open.
func (d *TxDropped) Read() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	v, _ := linkTxDropped(d.nl, d.ifindex, d.seq)
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
