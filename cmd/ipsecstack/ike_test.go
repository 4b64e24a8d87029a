package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipsecstack/ipsecstack/control"
	ikedaemon "github.com/ipsecstack/ipsecstack/ike/daemon"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// TestIKEFlag: --ike takes a file name; an empty one is refused.
func TestIKEFlag(t *testing.T) {
	c, err := parseRunFlags(strings.Fields("--link tap:x --addr 192.0.2.1/24 --ike /etc/swanctl/swanctl.conf"), io.Discard)
	if err != nil || c.IKE != "/etc/swanctl/swanctl.conf" {
		t.Fatalf("--ike: %v %+v", err, c)
	}
	if _, err := parseRunFlags([]string{"--link", "tap:x", "--addr", "192.0.2.1/24", "--ike", ""}, io.Discard); err == nil {
		t.Error("--ike with an empty name accepted")
	}
}

// TestIKEOpsWithoutDaemon: without --ike the ike ops answer with the
// reason, and the client reports it; a malformed command line is a
// usage error.
func TestIKEOpsWithoutDaemon(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	path := filepath.Join(t.TempDir(), "ctl")
	s, err := control.Listen(path, e)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	registerIKEOps(s, (*ikedaemon.Daemon)(nil))
	for _, args := range [][]string{{"--control", path, "list"}, {"--control", path, "initiate", "gw"}, {"--control", path, "terminate", "gw"}} {
		err := runIKE(args)
		if err == nil || !strings.Contains(err.Error(), "no IKE daemon") {
			t.Errorf("ike %v: %v, want the no-daemon reason", args, err)
		}
	}
	for _, args := range [][]string{{"--control", path}, {"--control", path, "list", "x"}, {"--control", path, "initiate"}, {"--control", path, "rekey", "gw"}} {
		if err := runIKE(args); err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("ike %v: %v, want a usage error", args, err)
		}
	}
}
