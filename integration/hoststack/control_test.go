package hoststack

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/control"
	"github.com/ipsecstack/ipsecstack/xfrm/pfkey"
)

// dumpN is the SAD size of TestDaemonDump: the size the issue asks for.
const dumpN = 100000

// dumpKeyHex is the test's own key of SA i (20 bytes: AES-128-GCM + salt),
// independent of the code under test.
func dumpKeyHex(i int) string {
	var b strings.Builder
	for j := 0; j < 20; j++ {
		fmt.Fprintf(&b, "%02x", byte(i*13+j*5+i>>9))
	}
	return b.String()
}

func dumpAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}) }

// procKB reads one "Name:   N kB" field of /proc/PID/status.
func procKB(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return -1
}

// TestDaemonDump: a daemon holding 100,000 SAs (from its --setkey file)
// dumps them all through its control socket, keys included: to a PF_KEY
// reader at full speed, to a slow one, and to `ipsecstack setkey -D`. The
// daemon's peak RSS during each dump is logged. Before the dump was
// streamed, DUMPs beyond ~4,096 SAs lost records.
func TestDaemonDump(t *testing.T) {
	require(t)
	dir := t.TempDir()
	ns := newNS(t)
	va, vb := uniq("hdv"), uniq("hdw")
	ns.sh(t, "ip", "link", "add", va, "type", "veth", "peer", "name", vb)
	ns.ownedByStack(t, va)
	ns.sh(t, "ip", "link", "set", vb, "up")
	var conf bytes.Buffer
	for i := 0; i < dumpN; i++ {
		fmt.Fprintf(&conf, "add 10.0.0.1 %s esp 0x%x -E aes-gcm-16 0x%s;\n", dumpAddr(i), 0x10000+i, dumpKeyHex(i))
	}
	file := filepath.Join(dir, "sad.conf")
	if err := os.WriteFile(file, conf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d := startDaemon(t, "dump", ns, dir, "--link", "afpacket:"+va, "--addr", "10.0.0.1/24", "--setkey", file)
	pid := d.cmd.Process.Pid // `ip netns exec` execs the daemon in place
	t.Logf("daemon up with %d SAs in %v; RSS %d kB", dumpN, time.Since(start).Round(time.Millisecond), procKB(pid, "VmRSS"))

	measure := func(name string, fn func() error) {
		t.Helper()
		// Peak RSS (VmHWM) from here on.
		os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
		before := procKB(pid, "VmRSS")
		start := time.Now()
		if err := fn(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		t.Logf("%s: %d SAs in %v; daemon RSS before %d kB, peak during the dump %d kB",
			name, dumpN, time.Since(start).Round(time.Millisecond), before, procKB(pid, "VmHWM"))
	}
	measure("PF_KEY reader, full speed", func() error { return pfkeyDump(d.control, 0) })
	measure("PF_KEY reader, slow (1 ms per 100)", func() error { return pfkeyDump(d.control, time.Millisecond) })
	measure("ipsecstack setkey -D", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, serr, code := cli(ctx, "setkey", "--control", d.control, "-D")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, serr)
		}
		if n := strings.Count(out, "\tesp mode=transport spi="); n != dumpN {
			return fmt.Errorf("%d of %d SAs printed", n, dumpN)
		}
		for _, i := range []int{0, 4095, 4096, dumpN / 2, dumpN - 1} {
			if !strings.Contains(out, fmt.Sprintf("spi=%d(0x%08x)", 0x10000+i, 0x10000+i)) {
				return fmt.Errorf("SA %d missing", i)
			}
		}
		return nil
	})
	d.stop(t, syscall.SIGTERM)
}

// pfkeyDump sends SADB_DUMP over the control socket and checks that every
// SA arrives once with its addresses and key; pause is slept every 100
// messages.
func pfkeyDump(path string, pause time.Duration) error {
	c, err := control.Dial(path)
	if err != nil {
		return err
	}
	defer c.Close()
	c.Timeout = 30 * time.Second
	if err := c.Send((&pfkey.Msg{Type: pfkey.MsgDump, Seq: 1, PID: 777}).MustEncode()); err != nil {
		return err
	}
	seen := make([]bool, dumpN)
	got := 0
	for {
		b, err := c.Recv()
		if err != nil {
			return fmt.Errorf("after %d SAs: %v", got, err)
		}
		m, err := pfkey.Decode(b)
		if err != nil || m.Type != pfkey.MsgDump || m.PID != 777 {
			continue
		}
		if m.Errno != 0 {
			return fmt.Errorf("after %d SAs: %v", got, syscall.Errno(m.Errno))
		}
		i := int(m.SA.SPI) - 0x10000
		if i < 0 || i >= dumpN || seen[i] {
			return fmt.Errorf("SPI %#x unexpected or repeated", m.SA.SPI)
		}
		seen[i] = true
		got++
		if m.Dst.Addr != dumpAddr(i) || m.KeyEncrypt == nil || fmt.Sprintf("%x", m.KeyEncrypt.Data) != dumpKeyHex(i) {
			return fmt.Errorf("SA %d: wrong destination or key", i)
		}
		if pause > 0 && got%100 == 0 {
			time.Sleep(pause)
		}
		if m.Seq == 0 {
			break
		}
	}
	if got != dumpN {
		return fmt.Errorf("%d of %d SAs arrived", got, dumpN)
	}
	return nil
}
