package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestShutdownWipesKeys: stopping the daemon (what SIGINT/SIGTERM do)
// flushes the SAD and SPD and zeroes every SA's keys. Before, only the
// engine's timer stopped and the keys stayed in memory.
func TestShutdownWipesKeys(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a TAP device needs root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "sa.conf")
	os.WriteFile(conf, []byte(`
add 192.0.2.1 192.0.2.2 esp 0x1001 -E aes-gcm-16 0x1111111111111111111111111111111111111111;
add 192.0.2.2 192.0.2.1 esp 0x1002 -E aes-cbc 0x22222222222222222222222222222222 -A hmac-sha256 0x3333333333333333333333333333333333333333333333333333333333333333;
spdadd 192.0.2.1 192.0.2.2 any -P out ipsec esp/transport//require;
`), 0o600)
	args := fmt.Sprintf("--link tap:h4sd%d --addr 192.0.2.1/24 --setkey %s --control %s", os.Getpid()%100000, conf, filepath.Join(dir, "ctl.sock"))
	cfg, err := parseRunFlags(strings.Fields(args), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d, err := startDaemon(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	var keys [][]byte
	d.engine.SAD.Walk(func(sa *xfrm.SA) bool {
		c := &sa.Config
		for _, k := range [][]byte{c.AEAD.Key, c.Enc.Key, c.Auth.Key} {
			if len(k) > 0 {
				keys = append(keys, k) // the SA's own key bytes, not a copy
			}
		}
		return true
	})
	if len(keys) != 3 {
		t.Fatalf("%d keys in the SAD, want 3", len(keys))
	}
	d.Close()
	for i, k := range keys {
		for _, b := range k {
			if b != 0 {
				t.Errorf("key %d not zeroed after shutdown", i)
				break
			}
		}
	}
	if n, p := d.engine.SAD.Len(), d.engine.SPD.Len(); n != 0 || p != 0 {
		t.Errorf("after shutdown: %d SAs, %d policies; want none", n, p)
	}
}
