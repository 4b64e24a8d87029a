package main

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// openers are the daemon's file writers under test: each must create its
// file owner-only without following links and never reuse another's file.
var openers = []struct {
	name string
	open func(path string) (io.Closer, error)
}{
	{"keylog", func(p string) (io.Closer, error) {
		e := xfrm.NewEngine()
		k, err := openKeylog(p, e, slog.New(slog.NewTextHandler(io.Discard, nil)))
		e.Close()
		if err != nil {
			return nil, err
		}
		return closerFunc(k.Close), nil
	}},
	{"pcap", func(p string) (io.Closer, error) {
		f, err := openPcapFile(p)
		if err != nil {
			return nil, err
		}
		return f, nil
	}},
}

type closerFunc func()

func (f closerFunc) Close() error { f(); return nil }

// TestOutputFilesSafe: --keylog and --pcap files are created 0600, never
// through a symbolic link, never reusing a file another user owns (who
// could read the keys) or a file with other hard links; an existing
// regular file of our own is truncated and made 0600. Before, both
// followed symlinks, the keylog kept a foreign owner and the capture was
// created 0644.
func TestOutputFilesSafe(t *testing.T) {
	for _, o := range openers {
		t.Run(o.name, func(t *testing.T) {
			dir := t.TempDir()

			// New file: 0600 whatever the umask.
			old := syscall.Umask(0o022)
			p := filepath.Join(dir, "new")
			c, err := o.open(p)
			syscall.Umask(old)
			if err != nil {
				t.Fatalf("new file: %v", err)
			}
			c.Close()
			if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
				t.Errorf("new file mode %v, want 0600", fi.Mode().Perm())
			}

			// Our own existing file: truncated, made 0600.
			p = filepath.Join(dir, "ours")
			os.WriteFile(p, []byte(strings.Repeat("old data ", 1000)), 0o644)
			os.Chmod(p, 0o644)
			c, err = o.open(p)
			if err != nil {
				t.Fatalf("own existing file: %v", err)
			}
			c.Close()
			if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 || fi.Size() >= 9000 {
				t.Errorf("own existing file: mode %v size %d, want 0600 and truncated", fi.Mode().Perm(), fi.Size())
			}

			// A symbolic link (to an existing file, and dangling): refused,
			// the target untouched and not created.
			target := filepath.Join(dir, "target")
			os.WriteFile(target, []byte("precious"), 0o644)
			p = filepath.Join(dir, "link")
			os.Symlink(target, p)
			if c, err := o.open(p); err == nil {
				c.Close()
				t.Error("followed a symbolic link")
			} else if strings.Contains(err.Error(), "\n") {
				t.Errorf("error not one line: %q", err)
			}
			if b, _ := os.ReadFile(target); string(b) != "precious" {
				t.Errorf("symlink target changed to %q", b)
			}
			dangling := filepath.Join(dir, "dangling")
			os.Symlink(filepath.Join(dir, "created-through-link"), dangling)
			if c, err := o.open(dangling); err == nil {
				c.Close()
				t.Error("followed a dangling symbolic link")
			}
			if _, err := os.Lstat(filepath.Join(dir, "created-through-link")); err == nil {
				t.Error("a file was created through a dangling symlink")
			}

			// A second hard link to a file: refused (it may be anyone's).
			p = filepath.Join(dir, "hardlink")
			os.Link(target, p)
			if c, err := o.open(p); err == nil {
				c.Close()
				t.Error("reused a file with another hard link")
			}

			// A FIFO: refused (opening it for writing blocked the daemon
			// until a reader came).
			p = filepath.Join(dir, "fifo")
			syscall.Mkfifo(p, 0o600)
			if c, err := o.open(p); err == nil {
				c.Close()
				t.Error("opened a FIFO")
			}

			// Another user's file: refused, its owner and content kept.
			if os.Geteuid() != 0 {
				t.Skip("chown needs root")
			}
			p = filepath.Join(dir, "foreign")
			os.WriteFile(p, []byte("theirs"), 0o666)
			os.Chown(p, 65534, 65534)
			if c, err := o.open(p); err == nil {
				c.Close()
				t.Error("reused a file owned by uid 65534")
			} else if !strings.Contains(err.Error(), "65534") {
				t.Errorf("error %q does not name the owner", err)
			}
			if b, _ := os.ReadFile(p); string(b) != "theirs" {
				t.Errorf("foreign file changed to %q", b)
			}
		})
	}
}

// TestKeylogPrunes: the keylog forgets SAs that left the SAD, so rekeying
// does not grow its memory without bound.
func TestKeylogPrunes(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	k, err := openKeylog(filepath.Join(t.TempDir(), "keys"), e, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := uint32(0); i < 100; i++ { // 100 rekeys: each SA replaced by the next
		sa, err := xfrm.NewSA(xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: 0x1000 + i, Src: src, Dst: dst,
			AEAD: xfrm.Algorithm{Name: "aes-gcm-16", Key: make([]byte, 20)}})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.SAD.Add(sa); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			if _, err := e.SAD.Delete(dst, xfrm.ProtoESP, 0x1000+i-1); err != nil {
				t.Fatal(err)
			}
		}
		k.sync()
	}
	k.mu.Lock()
	n := len(k.seen)
	k.mu.Unlock()
	if n != 1 {
		t.Fatalf("keylog remembers %d SAs after 100 rekeys, want 1", n)
	}
}
