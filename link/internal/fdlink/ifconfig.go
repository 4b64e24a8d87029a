//go:build linux

package fdlink

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Up sets the MTU of the host interface name (when mtu is not 0), brings
// it up and returns its MTU. TAP and TUN devices are created down with an
// MTU of 1500; the stack's side must match the kernel's, so both take it
// from here.
func Up(name string, mtu uint32) (uint32, error) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if mtu != 0 {
		ifr.SetUint32(mtu)
		if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr); err != nil {
			return 0, fmt.Errorf("SIOCSIFMTU %d: %w", mtu, err)
		}
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return 0, fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	if flags := ifr.Uint16(); flags&unix.IFF_UP == 0 {
		ifr.SetUint16(flags | unix.IFF_UP)
		if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
			return 0, fmt.Errorf("SIOCSIFFLAGS up: %w", err)
		}
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, fmt.Errorf("SIOCGIFMTU: %w", err)
	}
	return ifr.Uint32(), nil
}

// DefaultTxQueueLen is the txqueuelen RaiseTxQueueLen sets when asked for
// none: 4096 frames, some 6 MiB of full-size ones, where a new TAP queues
// 1000 and a new TUN 500. It holds what arrives at a few hundred MB/s
// while the reader is not scheduled for some milliseconds; every frame
// dropped there costs TCP a retransmission (at 500 the bench's --tun row
// lost 285 packets per 256 MiB). The drops are counted (KernelDrops).
const DefaultTxQueueLen = 4096

// RaiseTxQueueLen sets the txqueuelen of interface name to n frames
// (DefaultTxQueueLen if n <= 0), unless it is already as long.
func RaiseTxQueueLen(name string, n int) error {
	if n <= 0 {
		n = DefaultTxQueueLen
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFTXQLEN, ifr); err != nil {
		return fmt.Errorf("SIOCGIFTXQLEN: %w", err)
	}
	if int(ifr.Uint32()) >= n {
		return nil
	}
	ifr.SetUint32(uint32(n))
	if err := unix.IoctlIfreq(s, unix.SIOCSIFTXQLEN, ifr); err != nil {
		return fmt.Errorf("SIOCSIFTXQLEN %d: %w", n, err)
	}
	return nil
}
