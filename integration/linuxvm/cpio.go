package linuxvm

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"
)

// cpioEntry is one file of an initramfs.
type cpioEntry struct {
	Mode  uint32 // type and permission bits (S_IF* | perm)
	Data  []byte // file content, or symlink target
	Major uint32 // device nodes
	Minor uint32
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

// cpioArchive collects initramfs entries by path (no leading slash).
type cpioArchive map[string]cpioEntry

func (a cpioArchive) dir(p string) {
	p = strings.Trim(p, "/")
	for p != "" && p != "." {
		if _, ok := a[p]; !ok {
			a[p] = cpioEntry{Mode: sIFDIR | 0o755}
		}
		i := strings.LastIndex(p, "/")
		if i < 0 {
			break
		}
		p = p[:i]
	}
}

func (a cpioArchive) parent(p string) {
	if i := strings.LastIndex(p, "/"); i > 0 {
		a.dir(p[:i])
	}
}

func (a cpioArchive) file(p string, perm uint32, data []byte) {
	p = strings.Trim(p, "/")
	a.parent(p)
	a[p] = cpioEntry{Mode: sIFREG | perm, Data: data}
}

func (a cpioArchive) symlink(p, target string) {
	p = strings.Trim(p, "/")
	a.parent(p)
	a[p] = cpioEntry{Mode: sIFLNK | 0o777, Data: []byte(target)}
}

func (a cpioArchive) chardev(p string, major, minor uint32) {
	p = strings.Trim(p, "/")
	a.parent(p)
	a[p] = cpioEntry{Mode: sIFCHR | 0o600, Major: major, Minor: minor}
}

// writeTo writes the archive in the "newc" format the kernel unpacks,
// parents before children. The output length is a multiple of 4, so another
// archive may be appended.
func (a cpioArchive) writeTo(w io.Writer) error {
	bw := bufio.NewWriter(w)
	names := make([]string, 0, len(a))
	for n := range a {
		names = append(names, n)
	}
	sort.Strings(names) // "a" sorts before "a/b"
	var off int64
	put := func(b []byte) {
		bw.Write(b)
		off += int64(len(b))
	}
	pad := func() {
		if r := off % 4; r != 0 {
			put(make([]byte, 4-r))
		}
	}
	ino := 1
	emit := func(name string, e cpioEntry) {
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.Mode, 0, 0, 1, 0, len(e.Data), 0, 0, e.Major, e.Minor, len(name)+1, 0)
		ino++
		put([]byte(hdr))
		put([]byte(name + "\x00"))
		pad()
		put(e.Data)
		pad()
	}
	for _, n := range names {
		emit(n, a[n])
	}
	emit("TRAILER!!!", cpioEntry{})
	return bw.Flush()
}
