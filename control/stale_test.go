package control

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestListenKeepsOtherServices: a live socket of another type at the
// --control path (another program's stream or datagram service) is not
// taken for a stale one and deleted; Listen refuses with one line and the
// other service keeps working. Before, connect's EPROTOTYPE counted as
// "stale" and the file was removed.
func TestListenKeepsOtherServices(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	for _, network := range []string{"unix", "unixgram", "unixpacket"} {
		t.Run(network, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "svc.sock")
			var closer interface{ Close() error }
			if network == "unixgram" {
				pc, err := net.ListenUnixgram(network, &net.UnixAddr{Name: path, Net: network})
				if err != nil {
					t.Fatal(err)
				}
				closer = pc
			} else {
				ln, err := net.ListenUnix(network, &net.UnixAddr{Name: path, Net: network})
				if err != nil {
					t.Fatal(err)
				}
				closer = ln
			}
			defer closer.Close()
			s, err := Listen(path, e)
			if err == nil {
				s.Close()
				t.Fatalf("Listen took over a live %s socket", network)
			}
			if !strings.Contains(err.Error(), "in use") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line saying the path is in use", err)
			}
			if _, err := os.Lstat(path); err != nil {
				t.Fatalf("the other program's socket is gone: %v", err)
			}
			c, err := net.Dial(network, path)
			if err != nil {
				t.Fatalf("the other program's socket no longer answers: %v", err)
			}
			c.Close()
		})
	}
}

// TestListenForeignStale: a dead socket that belongs to another user is
// not removed either (it is not ours to reuse).
func TestListenForeignStale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	e := xfrm.NewEngine()
	defer e.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "old.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if s, err := Listen(path, e); err == nil {
		s.Close()
		t.Fatal("Listen removed another user's socket")
	} else if !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("error %q", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatal(err)
	}
}
