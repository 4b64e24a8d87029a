package fdlink

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// OpenDevice opens the TUN or TAP device name with open (gVisor's
// tun.Open or tun.OpenTAP) after checking the name, and turns the
// kernel's refusals into errors that say what to do. kind ("tun" or
// "tap") prefixes the errors; forbid lists the characters a name may not
// hold (a "%" would let the kernel pick the name, which we then could
// not configure).
func OpenDevice(kind, name, forbid string, open func(string) (int, error)) (int, error) {
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ || strings.ContainsAny(name, forbid) {
		return -1, fmt.Errorf("%s: invalid device name %q (1 to %d bytes, no %s)", kind, name, unix.IFNAMSIZ-1, forbidden(forbid))
	}
	fd, err := open(name)
	if err == nil {
		return fd, nil
	}
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return -1, fmt.Errorf("%s: device %q: %w (needs root or CAP_NET_ADMIN)", kind, name, err)
	case errors.Is(err, unix.ENOENT):
		return -1, fmt.Errorf("%s: device %q: /dev/net/tun: %w (no TUN/TAP support)", kind, name, err)
	case errors.Is(err, unix.EINVAL):
		return -1, fmt.Errorf("%s: device %q: %w (exists and is not a %s device?)", kind, name, err, strings.ToUpper(kind))
	case errors.Is(err, unix.EBUSY):
		return -1, fmt.Errorf("%s: device %q: %w (already open by another program)", kind, name, err)
	}
	return -1, fmt.Errorf("%s: device %q: %w", kind, name, err)
}

// forbidden names the characters of forbid for an error message: "%",
// "%, / or space".
func forbidden(forbid string) string {
	var names []string
	for _, c := range forbid {
		switch c {
		case ' ', '\t':
			if len(names) == 0 || names[len(names)-1] != "space" {
				names = append(names, "space")
			}
		default:
			names = append(names, string(c))
		}
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// OpenVnetTAP opens the TAP device name, creating it if it does not
// exist, with IFF_VNET_HDR: a struct virtio_net_hdr before every frame,
// both ways, as gVisor's tun.OpenTAP does without it.
func OpenVnetTAP(name string) (int, error) { return openVnet(name, unix.IFF_TAP) }

// OpenVnetTUN is OpenVnetTAP for a TUN device (gVisor's tun.Open).
func OpenVnetTUN(name string) (int, error) { return openVnet(name, unix.IFF_TUN) }

// openVnet opens the TUN or TAP (kind) device name with IFF_NO_PI and
// IFF_VNET_HDR, non-blocking.
func openVnet(name string, kind uint16) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	ifr.SetUint16(kind | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// TUNSETOFFLOAD flags (include/uapi/linux/if_tun.h): what the kernel may
// hand a device opened with IFF_VNET_HDR unfinished.
const (
	TunFCsum = 0x01 // TUN_F_CSUM: checksums left partial
	TunFTSO4 = 0x02 // TUN_F_TSO4: TCP TSO frames over IPv4, whole
	TunFTSO6 = 0x04 // TUN_F_TSO6: over IPv6
	TunFUSO4 = 0x20 // TUN_F_USO4: UDP GSO frames over IPv4, whole
	TunFUSO6 = 0x40 // TUN_F_USO6: over IPv6
)

// SetOffload tells the kernel which offloads (Tun* flags) the device's
// reader takes (TUNSETOFFLOAD), or, when the kernel refuses them (too
// old for one of them), none: the kernel then hands over every packet
// whole and summed, as to a device without IFF_VNET_HDR.
func SetOffload(fd int, flags int) error {
	if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, flags) == nil {
		return nil
	}
	return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0)
}
