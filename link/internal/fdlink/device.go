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
