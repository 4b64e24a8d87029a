package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/internal/testbed"
	"github.com/ipsecstack/ipsecstack/link/memlink"
	"github.com/ipsecstack/ipsecstack/link/pcap"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// oneSA returns a daemon's only IKE SA (nil if none).
func oneSA(d *Daemon) *ikeSA {
	d.mu.Lock()
	defer d.mu.Unlock()
	for sa := range d.sas {
		return sa
	}
	return nil
}

// sessionSPIs returns the SPI pairs the IKE SA's state machine accepts
// messages for, read on the SA's goroutine.
func sessionSPIs(sa *ikeSA) [][2]uint64 {
	res := make(chan [][2]uint64, 1)
	sa.do(func(time.Time) {
		if s, ok := sa.sess.(*ikesaSession); ok {
			res <- s.s.SPIs()
			return
		}
		res <- nil
	})
	select {
	case r := <-res:
		return r
	case <-time.After(5 * time.Second):
		return nil
	}
}

// TestIKERekeyByPeerListing: B, the responder of the IKE SA, rekeys it
// (its rekey_time; A has none). RFC 7296 §2.18: the rekey's initiator is
// the new IKE SA's initiator. Once the old IKE SA is deleted, both
// listings show the new SPIs (not those of the old SA's Delete exchange)
// and the new roles (A responder, B initiator); A's key log has the new
// IKE SA's line, with which tshark (when installed) decrypts A's Delete
// on the new SA; A's index holds its own SPI of the new SA and not the
// peer's; and a request A sends on the new SA (its Delete) is answered
// at once.
func TestIKERekeyByPeerListing(t *testing.T) {
	cfgA := connConfig(addrA4, addrB4, "a.test", "b.test", xfrm.ModeTunnel, config.StartNone)
	cfgB := connConfig(addrB4, addrA4, "b.test", "a.test", xfrm.ModeTunnel, config.StartNone)
	cfgB.Connections[0].RekeyTime = 2 * time.Second
	b := newBed(t, 4, cfgA, cfgB)
	var capture bytes.Buffer
	var capMu sync.Mutex
	w, err := pcap.NewWriter(&capture, 0)
	if err != nil {
		t.Fatal(err)
	}
	b.linkA.SetTap(func(dir memlink.Direction, f []byte) {
		if dir == memlink.Out {
			b.leakA.Frame(f)
		}
		capMu.Lock()
		pcap.Tap(w)(dir, f)
		capMu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.da.Initiate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	first := b.da.List().SAs[0]
	if first.Role != "initiator" {
		t.Fatalf("A's role before the rekey: %s", first.Role)
	}
	saA, saB := oneSA(b.da), oneSA(b.db)
	waitFor(t, "B's IKE rekey", 10*time.Second, func() bool { return b.db.Stats.IKERekeys.Load() == 1 })
	// The old IKE SA's Delete exchange (B deletes it) is over when both
	// state machines accept the new SPIs only.
	waitFor(t, "the old IKE SA deleted", 5*time.Second, func() bool {
		return len(sessionSPIs(saA)) == 1 && len(sessionSPIs(saB)) == 1
	})
	spis := sessionSPIs(saA)[0]
	want := [2]string{fmt.Sprintf("%016x", spis[0]), fmt.Sprintf("%016x", spis[1])}
	if want[0] == first.SPIi {
		t.Fatalf("the IKE SA kept SPIi %s", first.SPIi)
	}
	for _, c := range []struct {
		side string
		d    *Daemon
		role string
	}{{"A", b.da, "responder"}, {"B", b.db, "initiator"}} {
		l := c.d.List()
		if len(l.SAs) != 1 {
			t.Fatalf("%s's listing:\n%s", c.side, l.Format())
		}
		if s := l.SAs[0]; s.SPIi != want[0] || s.SPIr != want[1] || s.Role != c.role {
			t.Errorf("%s lists spi_i %s spi_r %s as %s, want %s %s as %s", c.side, s.SPIi, s.SPIr, s.Role, want[0], want[1], c.role)
		}
	}
	b.mu.Lock()
	lines := append([]string(nil), b.keyLines...)
	b.mu.Unlock()
	if len(lines) != 2 || !strings.HasPrefix(lines[1], want[0]+","+want[1]+",") {
		t.Errorf("A's key log after the rekey:\n%s", strings.Join(lines, "\n"))
	}
	b.da.mu.Lock()
	own, peers := b.da.bySPI[spis[1]], b.da.bySPI[spis[0]]
	b.da.mu.Unlock()
	if own != saA {
		t.Error("A's index lacks its own SPI (SPIr) of the new IKE SA")
	}
	if peers != nil {
		t.Error("A's index holds the peer's SPI (SPIi) of the new IKE SA")
	}
	if _, err := testbed.TCPTransfer(ctx, b.a, addrB4, 64<<10); err != nil {
		t.Fatal(err)
	}
	tcpQuiet(t, b.b)
	start := time.Now()
	if err := b.da.Terminate(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("A's Delete on the new IKE SA took %v: not answered at once", d)
	}
	waitFor(t, "B's IKE SA gone", 5*time.Second, func() bool { return len(b.db.List().SAs) == 0 })
	if _, err := exec.LookPath("tshark"); err != nil || len(lines) != 2 {
		return
	}
	// Two Deletes are encrypted: B's of the old IKE SA (first key line)
	// and A's of the new one (second line).
	capMu.Lock()
	file := filepath.Join(t.TempDir(), "ike.pcap")
	os.WriteFile(file, capture.Bytes(), 0o600)
	capMu.Unlock()
	deletes := func(lines ...string) int {
		args := []string{"-r", file, "-V"}
		for _, l := range lines {
			args = append(args, "-o", "uat:ikev2_decryption_table:"+l)
		}
		out, err := exec.Command("tshark", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("tshark: %v\n%s", err, out)
		}
		return strings.Count(string(out), "Payload: Delete")
	}
	if n, m := deletes(lines[0]), deletes(lines...); n != 1 || m != 2 {
		t.Errorf("tshark decrypts %d Delete requests with the first key line, %d with both, want 1 and 2; key lines:\n%s", n, m, strings.Join(lines, "\n"))
	}
}
