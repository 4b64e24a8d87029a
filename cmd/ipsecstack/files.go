package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// createPrivate opens path for writing a file only this user may read (the
// keylog holds keys; a capture holds traffic). It never follows a
// symbolic link and never writes into a file that may be someone else's:
//
//   - no file at path: it is created, mode 0600, atomically (O_EXCL), so
//     nobody can slip a link or a file in between;
//   - a regular file with a single link, owned by our effective user: it
//     is truncated and set to 0600 (a previous run's output);
//   - anything else (a symbolic link, another user's file, a file with
//     other hard links, a FIFO, a device, a directory): refused with an
//     error naming what is there.
//
// The existing file is inspected through an O_PATH descriptor and then
// reopened through that same descriptor, so what was checked is what is
// written, and opening touches nothing (a FIFO or device is never opened
// for writing).
func createPrivate(path string) (*os.File, error) {
	const flags = syscall.O_WRONLY | syscall.O_CLOEXEC | syscall.O_NOFOLLOW
	fd, err := syscall.Open(path, flags|syscall.O_CREAT|syscall.O_EXCL, 0o600)
	if err == nil {
		f := os.NewFile(uintptr(fd), path)
		if err := f.Chmod(0o600); err != nil { // whatever the umask left
			f.Close()
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return f, nil
	}
	if !errors.Is(err, syscall.EEXIST) {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link; refusing to write through it", path)
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	pfd, err := syscall.Open(path, unix.O_PATH|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(pfd)
	var st syscall.Stat_t
	if err := syscall.Fstat(pfd, &st); err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	switch {
	case st.Mode&syscall.S_IFMT == syscall.S_IFLNK:
		return nil, fmt.Errorf("%s is a symbolic link; refusing to write through it", path)
	case st.Mode&syscall.S_IFMT != syscall.S_IFREG:
		return nil, fmt.Errorf("%s exists and is not a regular file; refusing to overwrite it", path)
	case int(st.Uid) != os.Geteuid():
		return nil, fmt.Errorf("%s exists and belongs to uid %d; refusing to reuse it (remove it first)", path, st.Uid)
	case st.Nlink != 1:
		return nil, fmt.Errorf("%s has %d hard links; refusing to overwrite it", path, st.Nlink)
	}
	// Reopen the very inode checked (not the path, which may have changed).
	fd, err = syscall.Open("/proc/self/fd/"+strconv.Itoa(pfd), syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return f, nil
}

// openPcapFile creates the --pcap capture file (createPrivate).
func openPcapFile(path string) (*os.File, error) { return createPrivate(path) }
