package control

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/pfkey"
)

// dumpKey is the test's own key for SA i: 20 bytes (AES-128 + GCM salt),
// derived from i alone so the check shares nothing with the code under test.
func dumpKey(i int) []byte {
	k := make([]byte, 20)
	for j := range k {
		k[j] = byte(i*31 + j*7 + i>>8)
	}
	return k
}

func dumpSPI(i int) uint32 { return 0x10000 + uint32(i) }

func dumpDst(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}) }

// addDumpSAs adds n ESP SAs i = 0..n-1 straight to the engine's SAD.
func addDumpSAs(t testing.TB, e *xfrm.Engine, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		sa, err := xfrm.NewSA(xfrm.SAConfig{Proto: xfrm.ProtoESP, SPI: dumpSPI(i), Mode: xfrm.ModeTransport,
			Src: netip.MustParseAddr("10.0.0.1"), Dst: dumpDst(i),
			AEAD: xfrm.Algorithm{Name: "rfc4106(gcm(aes))", Key: dumpKey(i), ICVBits: 128}, ReplayWindow: 32})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.SAD.Add(sa); err != nil {
			t.Fatal(err)
		}
	}
}

// readDump sends a DUMP and reads every reply up to sequence 0, checking
// each SA's SPI, addresses and key against what was added. pause is slept
// every 100 messages to make a slow reader.
// burst, if not nil, runs after the request is sent and before anything
// is read; notices, if not nil, counts the ENOBUFS notices seen.
func readDump(t *testing.T, c *Client, n int, pause time.Duration, notices *int, burst func()) {
	t.Helper()
	req := (&pfkey.Msg{Type: pfkey.MsgDump, SAType: pfkey.SATypeUnspec, Seq: 7, PID: 4242}).MustEncode()
	if err := c.Send(req); err != nil {
		t.Fatal(err)
	}
	if burst != nil {
		burst()
	}
	seen := make([]bool, n)
	got := 0
	for {
		b, err := c.Recv()
		if err != nil {
			t.Fatalf("after %d of %d SAs: %v", got, n, err)
		}
		if len(b) >= 16 && b[1] != pfkey.MsgDump {
			if b[2] == byte(syscall.ENOBUFS) && notices != nil {
				*notices++
			}
			continue // a broadcast, or the notice of lost ones
		}
		m, err := pfkey.Decode(b)
		if err != nil {
			t.Fatalf("after %d SAs: undecodable message (%d bytes): %v", got, len(b), err)
		}
		if m.Type != pfkey.MsgDump || m.PID != 4242 {
			continue
		}
		if m.Errno != 0 {
			t.Fatalf("after %d SAs: DUMP failed: %v", got, syscall.Errno(m.Errno))
		}
		i := int(m.SA.SPI) - 0x10000
		if i < 0 || i >= n || seen[i] {
			t.Fatalf("SPI %#x unexpected or repeated", m.SA.SPI)
		}
		seen[i] = true
		got++
		if m.Dst.Addr != dumpDst(i) || m.Src.Addr != netip.MustParseAddr("10.0.0.1") || m.KeyEncrypt == nil ||
			!bytes.Equal(m.KeyEncrypt.Data, dumpKey(i)) {
			t.Fatalf("SA %d: wrong content: dst %v key %x", i, m.Dst.Addr, m.KeyEncrypt)
		}
		if pause > 0 && got%100 == 0 {
			time.Sleep(pause)
		}
		if m.Seq == 0 {
			break
		}
	}
	if got != n {
		t.Fatalf("DUMP: %d of %d SAs arrived", got, n)
	}
}

// procStatusKB reads a "VmXXX:   N kB" line of /proc/self/status.
func procStatusKB(t *testing.T, field string) int {
	b, err := os.ReadFile("/proc/self/status")
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

// TestDumpNothingLost: DUMP through the control socket delivers every SA,
// with its keys, to a reader at full speed and to a slow one. Before the
// dump was streamed, DUMPs of more than 4,096 SAs lost hundreds of them
// even at full speed (the per-connection queue overflowed).
func TestDumpNothingLost(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	_, path := listen(t, e)
	addDumpSAs(t, e, 6000)
	for _, tc := range []struct {
		name  string
		pause time.Duration
	}{{"fast", 0}, {"slow", 2 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, path)
			readDump(t, c, 6000, tc.pause, nil, nil)
		})
	}
}

// TestDumpDuringBroadcastFlood: a reader in the middle of a dump, flooded
// with asynchronous messages it does not read yet, loses some of those
// (counted, and told with an ENOBUFS notice) but not a single dump record.
func TestDumpDuringBroadcastFlood(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	s, path := listen(t, e)
	addDumpSAs(t, e, 6000)
	c := dial(t, path)
	if err := c.Call("version", nil, nil); err != nil { // the connection is served
		t.Fatal(err)
	}
	notices := 0
	readDump(t, c, 6000, time.Millisecond, &notices, func() {
		// 2 MiB of broadcasts while the dump is under way and
		// nothing is read: far more than the queue holds.
		time.Sleep(50 * time.Millisecond) // the dump has started
		msg := make([]byte, 4096)
		msg[0], msg[1] = pfkey.Version, pfkey.MsgAcquire
		binary.NativeEndian.PutUint16(msg[4:], uint16(len(msg)/8))
		for i := 0; i < 512; i++ {
			s.PFKey().Broadcast(msg, pfkey.BroadcastAll, nil)
		}
	})
	if s.Dropped.Load() == 0 || notices != 1 {
		t.Errorf("dropped %d, notices %d: want some dropped and one notice", s.Dropped.Load(), notices)
	}
	t.Logf("dump complete; %d broadcasts dropped, %d ENOBUFS notice", s.Dropped.Load(), notices)
}

// TestDump100k dumps 100,000 SAs through the control socket, at full speed
// and slowly, and logs the time and the process's peak RSS during each.
// Under -race or -short it dumps 20,000: the race detector's shadow memory
// for 100,000 SAs is 875 MB, and integration/hoststack's TestDaemonDump
// dumps 100,000 through a real daemon (built without -race) in every run.
func TestDump100k(t *testing.T) {
	n := 100000
	if testing.Short() || raceEnabled {
		n = 20000
	}
	e := xfrm.NewEngine()
	defer e.Close()
	_, path := listen(t, e)
	start := time.Now()
	addDumpSAs(t, e, n)
	t.Logf("added %d SAs in %v; RSS %d kB", n, time.Since(start).Round(time.Millisecond), procStatusKB(t, "VmRSS"))
	for _, tc := range []struct {
		name  string
		pause time.Duration
	}{{"fast", 0}, {"slow", time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			// Collect the garbage of earlier steps and keep the heap
			// close to its live size (the test's reader decodes and
			// drops 100,000 messages), then reset the peak RSS
			// (VmHWM) so it covers this dump only.
			defer debug.SetGCPercent(debug.SetGCPercent(10))
			debug.FreeOSMemory()
			os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
			before := procStatusKB(t, "VmRSS")
			c := dial(t, path)
			start := time.Now()
			readDump(t, c, n, tc.pause, nil, nil)
			t.Logf("%s reader: %d SAs in %v; RSS before %d kB, peak during dump %d kB",
				tc.name, n, time.Since(start).Round(time.Millisecond), before, procStatusKB(t, "VmHWM"))
		})
	}
}

// TestSPDDumpNothingLost: SPDDUMP of 6,000 policies arrives complete.
func TestSPDDumpNothingLost(t *testing.T) {
	const n = 6000
	e := xfrm.NewEngine()
	defer e.Close()
	_, path := listen(t, e)
	for i := 0; i < n; i++ {
		p := &xfrm.Policy{Dir: xfrm.DirOut, Action: xfrm.ActionBypass, Sel: xfrm.Selector{
			Src: netip.MustParsePrefix("10.0.0.1/32"), Dst: netip.PrefixFrom(dumpDst(i), 32)}}
		if _, err := e.SPD.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, path)
	if err := c.Send((&pfkey.Msg{Type: pfkey.MsgXSPDDump, PID: 4242}).MustEncode()); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for {
		b, err := c.Recv()
		if err != nil {
			t.Fatalf("after %d policies: %v", len(seen), err)
		}
		m, err := pfkey.Decode(b)
		if err != nil || m.Type != pfkey.MsgXSPDDump || m.PID != 4242 {
			continue
		}
		if m.Errno != 0 {
			t.Fatalf("SPDDUMP: %v", syscall.Errno(m.Errno))
		}
		seen[m.Dst.Addr] = true
		if m.Seq == 0 {
			break
		}
	}
	if len(seen) != n {
		t.Fatalf("SPDDUMP: %d of %d policies arrived", len(seen), n)
	}
}

// TestJSONLargeReply: the "sas"-style op whose whole answer exceeds the
// socket's send buffer (208 KiB) is paged, and the connection survives.
// Before, such a reply made the server close the connection.
func TestJSONLargeReply(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	s, path := listen(t, e)
	const n = 5000
	row := strings.Repeat("x", 100)
	s.HandleJSON("rows", func(req json.RawMessage) (any, error) {
		var r struct {
			After string `json:"after"`
		}
		if err := json.Unmarshal(req, &r); err != nil {
			return nil, err
		}
		start := 0
		if r.After != "" {
			start, _ = strconv.Atoi(r.After)
		}
		var out []string
		for i := start; i < n && len(out) < 500; i++ {
			out = append(out, fmt.Sprintf("%05d%s", i, row))
		}
		next := ""
		if start+len(out) < n {
			next = strconv.Itoa(start + len(out))
		}
		return Page{Items: out, Next: next}, nil
	})
	c := dial(t, path)
	got := 0
	err := c.CallPages("rows", nil, func(raw json.RawMessage) error {
		var rows []string
		if err := json.Unmarshal(raw, &rows); err != nil {
			return err
		}
		for _, r := range rows {
			if r != fmt.Sprintf("%05d%s", got, row) {
				return fmt.Errorf("row %d: %.10q", got, r)
			}
			got++
		}
		return nil
	})
	if err != nil || got != n {
		t.Fatalf("rows: %d of %d, err %v", got, n, err)
	}
	if err := c.Call("version", nil, nil); err != nil {
		t.Fatalf("connection unusable after a large reply: %v", err)
	}
}

// TestSlowReaderBounded: a client that stops reading while asynchronous
// messages keep coming pins a bounded number of bytes (not 4,096
// messages of any size), the loss is counted, and when the client reads
// again it finds an ENOBUFS notice where the gap is.
func TestSlowReaderBounded(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	s, path := listen(t, e)
	c := dial(t, path)
	if err := c.Call("version", nil, nil); err != nil { // connected and served
		t.Fatal(err)
	}
	// 10,000 broadcasts of 4 KiB: 40 MiB offered to a reader that is asleep.
	big := make([]byte, 4096)
	big[0], big[1] = pfkey.Version, pfkey.MsgAcquire
	binary.NativeEndian.PutUint16(big[4:], uint16(len(big)/8))
	for i := 0; i < 10000; i++ {
		s.PFKey().Broadcast(big, pfkey.BroadcastAll, nil)
	}
	if s.Dropped.Load() == 0 {
		t.Fatal("nothing counted as dropped")
	}
	var total int
	notice := false
	c.Timeout = 500 * time.Millisecond
	for {
		b, err := c.Recv()
		if err != nil {
			break
		}
		if len(b) == 16 && b[2] == byte(syscall.ENOBUFS) {
			notice = true
			break
		}
		total += len(b)
	}
	t.Logf("stalled reader: %d bytes queued for it, %d messages dropped", total, s.Dropped.Load())
	if limit := 1 << 20; total > limit {
		t.Errorf("%d bytes were queued for a stalled reader, want at most %d", total, limit)
	}
	if !notice {
		t.Error("no ENOBUFS notice after the dropped messages")
	}
}

// TestJSONOversizeRefused: a handler's reply too large for the socket is
// answered with an error, counted, and the connection goes on. Before, the
// write failed and the server closed the connection.
func TestJSONOversizeRefused(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	s, path := listen(t, e)
	s.HandleJSON("big", func(json.RawMessage) (any, error) { return strings.Repeat("x", 300<<10), nil })
	c := dial(t, path)
	if err := c.Call("big", nil, nil); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("oversize reply: %v", err)
	}
	if s.Oversize.Load() != 1 {
		t.Errorf("Oversize = %d, want 1", s.Oversize.Load())
	}
	if err := c.Call("version", nil, nil); err != nil {
		t.Fatalf("connection unusable after an oversize reply: %v", err)
	}
}

// TestUnreadRepliesBounded: a client that sends requests and never reads
// the replies pins at most sendQueueBytes of them (plus one) in the
// server: the server stops reading its requests instead.
func TestUnreadRepliesBounded(t *testing.T) {
	e := xfrm.NewEngine()
	defer e.Close()
	s, path := listen(t, e)
	addDumpSAs(t, e, 1)
	c := dial(t, path)
	if err := c.Call("version", nil, nil); err != nil {
		t.Fatal(err)
	}
	get := (&pfkey.Msg{Type: pfkey.MsgGet, SAType: pfkey.SATypeESP, PID: 1, SA: &pfkey.SA{SPI: dumpSPI(0)},
		Dst: &pfkey.Address{PrefixLen: 32, Sockaddr: pfkey.Sockaddr{Addr: dumpDst(0)}}}).MustEncode()
	c.c.SetWriteDeadline(time.Now().Add(time.Second))
	sent := 0
	for sent < 100000 {
		if err := c.Send(get); err != nil {
			break // the server stopped reading: backpressure reached us
		}
		sent++
	}
	time.Sleep(100 * time.Millisecond)
	s.mu.RLock()
	var queued int
	for k := range s.conns {
		k.mu.Lock()
		queued += k.qBytes
		k.mu.Unlock()
	}
	s.mu.RUnlock()
	t.Logf("sent %d GETs before the socket filled; %d bytes of replies queued", sent, queued)
	if sent == 100000 {
		t.Error("100,000 requests went through without backpressure")
	}
	if queued > sendQueueBytes {
		t.Errorf("%d bytes queued, want at most %d", queued, sendQueueBytes)
	}
}
