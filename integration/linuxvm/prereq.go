package linuxvm

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Packages are the Debian packages the harness needs on the host (besides
// the kernel package, which Prepare downloads but never installs).
var Packages = []string{"qemu-system-x86", "busybox-static", "iproute2", "kmod", "netbase"}

// CheckPrereqs reports what is missing to boot the VM: root, /dev/net/tun,
// qemu-system-x86_64, a static busybox, iproute2's ip, depmod, apt-get and
// dpkg-deb.
func CheckPrereqs() error {
	var miss []string
	if os.Geteuid() != 0 {
		miss = append(miss, "root (TAP devices and AF_PACKET)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		miss = append(miss, "/dev/net/tun")
	}
	for _, t := range []struct{ bin, pkg string }{
		{"qemu-system-x86_64", "qemu-system-x86"},
		{"depmod", "kmod"},
		{"apt-get", "apt"},
		{"apt-cache", "apt"},
		{"dpkg-deb", "dpkg"},
		{"ldd", "libc-bin"},
		{"go", "the Go toolchain"},
	} {
		if _, err := exec.LookPath(t.bin); err != nil {
			miss = append(miss, fmt.Sprintf("%s (%s)", t.bin, t.pkg))
		}
	}
	if bb := firstExisting(busyboxPaths); bb == "" {
		miss = append(miss, "busybox (busybox-static)")
	} else if dyn, err := isDynamic(bb); err != nil || dyn {
		miss = append(miss, "a static busybox at "+bb+" (busybox-static)")
	}
	if firstExisting(iproute2Paths) == "" {
		miss = append(miss, "ip (iproute2)")
	}
	if len(miss) > 0 {
		return errors.New("linuxvm: missing " + strings.Join(miss, ", ") +
			"; apt-get install " + strings.Join(Packages, " "))
	}
	return nil
}

// isDynamic tells whether an ELF binary has a program interpreter.
func isDynamic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true, nil
		}
	}
	return false, nil
}

// InCI tells whether CI=true is set: there a missing prerequisite is a
// failure, not a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips the test when the VM cannot run here (not root, qemu or
// busybox missing) or under -short, or fails it when CI=true: in CI a skip
// is a failure.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() && !InCI() {
		t.Skip("linuxvm: boots a VM; skipped with -short")
	}
	if err := CheckPrereqs(); err != nil {
		if InCI() {
			t.Fatalf("%v (CI=true: a missing prerequisite is a failure)", err)
		}
		t.Skipf("%v (set CI=true to make this a failure)", err)
	}
}
