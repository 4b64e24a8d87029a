package pcap_test

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/link/frame"
	"github.com/ipsecstack/ipsecstack/link/internal/linktest"
	"github.com/ipsecstack/ipsecstack/link/memlink"
	"github.com/ipsecstack/ipsecstack/link/pcap"
)

const (
	macA = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x0a")
	macB = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x0b")
)

var (
	a4 = netip.MustParsePrefix("192.0.2.1/24")
	b4 = netip.MustParsePrefix("192.0.2.2/24")
	a6 = netip.MustParsePrefix("2001:db8::1/64")
	b6 = netip.MustParsePrefix("2001:db8::2/64")
)

func TestSnaplenAndErrors(t *testing.T) {
	var buf bytes.Buffer
	w, err := pcap.NewWriter(&buf, 10)
	if err != nil {
		t.Fatal(err)
	}
	frame := bytes.Repeat([]byte{0xab}, 60)
	if err := w.WritePacket(time.Unix(1700000000, 123456000), frame); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	lt, frames, err := pcap.ReadAll(bytes.NewReader(raw))
	if err != nil || lt != pcap.LinkTypeEthernet || len(frames) != 1 || len(frames[0]) != 10 {
		t.Fatalf("ReadAll = %d, %d frames, %v", lt, len(frames), err)
	}
	// Record header: seconds, microseconds, caplen 10, origlen 60.
	rec := raw[24:40]
	want := []byte{0x00, 0xf1, 0x53, 0x65, 0x40, 0xe2, 0x01, 0x00, 10, 0, 0, 0, 60, 0, 0, 0}
	if !bytes.Equal(rec, want) {
		t.Errorf("record header % x, want % x", rec, want)
	}

	w2, err := pcap.NewWriter(&failAfter{n: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.WritePacket(time.Now(), frame); err == nil {
		t.Fatal("write to a failing writer succeeded")
	}
	if w2.Err() == nil || w2.WritePacket(time.Now(), frame) == nil {
		t.Error("error was not sticky")
	}
}

type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, os.ErrClosed
	}
	f.n--
	return len(p), nil
}

// TestMemlinkCapture captures a ping over memlink through both the tap
// adapter (side A) and the wrapper endpoint (side B), then checks that both
// files parse, hold Ethernet frames in both directions, and (when tshark is
// installed) that tshark decodes them as ARP/ICMP/ICMPv6.
func TestMemlinkCapture(t *testing.T) {
	dir := t.TempDir()
	fa, err := os.Create(filepath.Join(dir, "a.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Create(filepath.Join(dir, "b.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	wa, err := pcap.NewWriter(fa, 0)
	if err != nil {
		t.Fatal(err)
	}
	wb, err := pcap.NewWriter(fb, 0)
	if err != nil {
		t.Fatal(err)
	}

	ea, eb := memlink.NewPair(macA, macB, 1500)
	var mu sync.Mutex
	tapped := 0
	tap := pcap.Tap(wa)
	ea.SetTap(func(d memlink.Direction, f []byte) {
		mu.Lock()
		tapped++
		mu.Unlock()
		tap(d, f)
	})
	sa := linktest.NewStack(t, ea, a4, a6)
	linktest.NewStack(t, pcap.NewEndpoint(eb, wb), b4, b6)
	for _, dst := range []netip.Addr{b4.Addr(), b6.Addr()} {
		if err := linktest.Ping(sa, dst, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ea.SetTap(nil)
	fa.Close()
	fb.Close()

	for _, name := range []string{"a.pcap", "b.pcap"} {
		path := filepath.Join(dir, name)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		lt, frames, err := pcap.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if lt != pcap.LinkTypeEthernet {
			t.Errorf("%s: link type %d", name, lt)
		}
		mu.Lock()
		if name == "a.pcap" && len(frames) != tapped {
			t.Errorf("a.pcap: %d frames, tap saw %d", len(frames), tapped)
		}
		mu.Unlock()
		var fromA, toA int
		for _, fr := range frames {
			eth := header.Ethernet(fr)
			if eth.SourceAddress() == macA {
				fromA++
			}
			if eth.SourceAddress() == macB {
				toA++
			}
		}
		// ARP, NS, echo v4 and v6 each way at least.
		if fromA < 3 || toA < 3 {
			t.Errorf("%s: %d frames from A, %d from B; want both directions", name, fromA, toA)
		}
		checkTshark(t, path)
	}
}

func checkTshark(t *testing.T, path string) {
	t.Run("tshark/"+filepath.Base(path), func(t *testing.T) {
		tshark, err := exec.LookPath("tshark")
		if err != nil {
			t.Skip("tshark not installed (apt-get install tshark): not checking that it decodes the capture")
		}
		runTshark(t, tshark, path)
	})
}

func runTshark(t *testing.T, tshark, path string) {
	out, err := exec.Command(tshark, "-r", path, "-T", "fields", "-e", "frame.protocols").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -r %s: %v\n%s", path, err, out)
	}
	s := string(out)
	for _, want := range []string{"eth:ethertype:arp", "eth:ethertype:ip:icmp", "eth:ethertype:ipv6:icmpv6"} {
		if !strings.Contains(s, want) {
			t.Errorf("tshark -r %s: no %q in\n%s", filepath.Base(path), want, s)
		}
	}
}

// TestFramesRecorded: over a link that takes frames (memlink), the
// wrapper takes them too (so that --pcap does not turn the IPsec
// wrapper's frame path off), records each, whether bytes or a packet, and
// passes them down unchanged; over a link that does not, it says so.
func TestFramesRecorded(t *testing.T) {
	var buf bytes.Buffer
	w, err := pcap.NewWriter(&buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	ea, eb := memlink.NewPair(macA, macB, 1500)
	defer ea.Close()
	defer eb.Close()
	var mu sync.Mutex
	var seen [][]byte
	ea.SetTap(func(d memlink.Direction, f []byte) {
		if d == memlink.Out {
			mu.Lock()
			seen = append(seen, bytes.Clone(f))
			mu.Unlock()
		}
	})
	e := pcap.NewEndpoint(ea, w)
	if !e.CanWriteFrames() {
		t.Fatal("CanWriteFrames false over memlink")
	}
	eth := func(fill byte, n int) []byte {
		f := bytes.Repeat([]byte{fill}, n)
		copy(f, macB)
		copy(f[6:], macA)
		f[12], f[13] = 0x08, 0x00
		return f
	}
	want := [][]byte{eth(0x11, 100), eth(0x22, 60)}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(want[1])})
	defer pkt.DecRef()
	n, terr := e.WriteFrames([]frame.Frame{{Bytes: want[0]}, {Packet: pkt}})
	if terr != nil || n != 2 {
		t.Fatalf("WriteFrames = %d, %v", n, terr)
	}
	_, frames, err := pcap.ReadAll(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(frames) != 2 || len(seen) != 2 {
		t.Fatalf("%d frames recorded, %d sent, want 2 and 2", len(frames), len(seen))
	}
	for i := range want {
		if !bytes.Equal(frames[i], want[i]) || !bytes.Equal(seen[i], want[i]) {
			t.Errorf("frame %d: recorded % x, sent % x, want % x", i, frames[i], seen[i], want[i])
		}
	}
	if pcap.NewEndpoint(packetsOnly{ea}, w).CanWriteFrames() {
		t.Error("CanWriteFrames true over a link without frame.Writer")
	}
}

// packetsOnly hides a link's frame.Writer.
type packetsOnly struct{ stack.LinkEndpoint }
