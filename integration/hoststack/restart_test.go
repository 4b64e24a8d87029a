package hoststack

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeConf is the static-key setkey file of the README ("host.conf"),
// for the side at fd00:1::1; the peer gets the mirrored policies.
func readmeConf(me, peer string) string {
	return `flush;
spdflush;
add fd00:1::1 fd00:1::2 esp 0x1001 -m transport -E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;
add fd00:1::2 fd00:1::1 esp 0x1002 -m transport -E aes-gcm-16 0x101112131415161718191a1b1c1d1e1f20212223;
spdadd ::/0 ::/0 icmp6 135 -P out prio 100 none;
spdadd ::/0 ::/0 icmp6 136 -P out prio 100 none;
spdadd ::/0 ::/0 icmp6 135 -P in prio 100 none;
spdadd ::/0 ::/0 icmp6 136 -P in prio 100 none;
spdadd ` + me + ` ` + peer + ` any -P out ipsec esp/transport//require;
spdadd ` + peer + ` ` + me + ` any -P in ipsec esp/transport//require;
`
}

// espSent is one ESP packet read from a capture.
type espSent struct {
	spi, seq uint32
	iv       [8]byte
	pkt      []byte // from the ESP header on
	src      [16]byte
}

// readESP6 reads a classic pcap file (either byte order, LINKTYPE_ETHERNET)
// with a parser of its own, and returns the ESP packets carried directly
// over IPv6. It shares no code with the daemon's capture writer.
func readESP6(t *testing.T, path string) []espSent {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 {
		t.Fatalf("%s: %d bytes, no pcap header", path, len(b))
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4:
		bo = binary.LittleEndian
	case 0xd4c3b2a1:
		bo = binary.BigEndian
	default:
		t.Fatalf("%s: not a classic microsecond pcap file (magic %x)", path, b[:4])
	}
	if lt := bo.Uint32(b[20:]); lt != 1 {
		t.Fatalf("%s: link type %d, want 1 (Ethernet)", path, lt)
	}
	var out []espSent
	for off := 24; off < len(b); {
		if off+16 > len(b) {
			t.Fatalf("%s: truncated record header at %d", path, off)
		}
		incl := int(bo.Uint32(b[off+8:]))
		off += 16
		if off+incl > len(b) {
			t.Fatalf("%s: truncated record at %d", path, off)
		}
		f := b[off : off+incl]
		off += incl
		// Ethernet, IPv6 (no extension headers in this traffic), ESP.
		if len(f) < 14+40+8+8 || binary.BigEndian.Uint16(f[12:]) != 0x86dd || f[14+6] != 50 {
			continue
		}
		ip := f[14:]
		e := espSent{spi: binary.BigEndian.Uint32(ip[40:]), seq: binary.BigEndian.Uint32(ip[44:]), pkt: bytes.Clone(ip[40 : 40+int(binary.BigEndian.Uint16(ip[4:]))])}
		copy(e.iv[:], ip[48:56])
		copy(e.src[:], ip[8:24])
		out = append(out, e)
	}
	return out
}

// keylogKeys reads the daemon's --keylog (Wireshark esp_sa lines) and
// returns the encryption key, salt included, of each SPI.
func keylogKeys(t *testing.T, path string) map[uint32][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[uint32][]byte{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rec, err := csv.NewReader(strings.NewReader(line)).Read()
		if err != nil || len(rec) != 8 {
			t.Fatalf("keylog line %q: %v", line, err)
		}
		var spi uint32
		if _, err := fmt.Sscanf(rec[3], "0x%x", &spi); err != nil {
			t.Fatalf("keylog SPI %q: %v", rec[3], err)
		}
		k, err := hex.DecodeString(strings.TrimPrefix(rec[5], "0x"))
		if err != nil {
			t.Fatalf("keylog key of SPI %#x: %v", spi, err)
		}
		keys[spi] = k
	}
	return keys
}

// openGCM decrypts an RFC 4106 ESP packet (AES-GCM, 16-byte ICV, no ESN)
// with Go's crypto/cipher: nonce = salt || IV, AAD = SPI || sequence
// number. It proves that the IV in the packet is the nonce the sender used.
func openGCM(key []byte, pkt []byte) error {
	blk, err := aes.NewCipher(key[:len(key)-4])
	if err != nil {
		return err
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return err
	}
	nonce := append(bytes.Clone(key[len(key)-4:]), pkt[8:16]...)
	_, err = g.Open(nil, nonce, pkt[16:], pkt[:8])
	return err
}

// TestRestartSameStaticKeysNoNonceReuse (hardening finding 1): both
// daemons of a pair run the README's static-key example, exchange pings,
// are stopped and started again with the same file, and exchange pings
// again. Each sender's ESP packets, read from its --pcap captures of both
// runs and decrypted with the keys of its --keylog, must never use one
// AES-GCM nonce twice under a key: with the sequence number as the IV the
// second run sent nonces 1, 2, 3 … again.
func TestRestartSameStaticKeysNoNonceReuse(t *testing.T) {
	require(t)
	dir := t.TempDir()
	nsA, nsB := newNS(t), newNS(t)
	va, vb := uniq("hra"), uniq("hrb")
	vethPair(t, nsA, va, nsB, vb)
	const addrA, addrB = "fd00:1::1", "fd00:1::2"
	hosts := []struct {
		name, me, peer, link string
		ns                   *netns
		spi                  uint32 // the SA it sends on
	}{
		{"A", addrA, addrB, "afpacket:" + va, nsA, 0x1001},
		{"B", addrB, addrA, "afpacket:" + vb, nsB, 0x1002},
	}
	for _, h := range hosts {
		os.WriteFile(filepath.Join(dir, h.name+".conf"), []byte(readmeConf(h.me, h.peer)), 0o600)
	}

	// seen maps (SPI, IV) to the run and sequence number that used it.
	seen := map[[12]byte]string{}
	for run := 1; run <= 2; run++ {
		var ds []*daemon
		for _, h := range hosts {
			base := filepath.Join(dir, fmt.Sprintf("%s-%d", h.name, run))
			ds = append(ds, startDaemon(t, fmt.Sprintf("%s-%d", h.name, run), h.ns, dir,
				"--link", h.link, "--addr", h.me+"/64", "--setkey", filepath.Join(dir, h.name+".conf"),
				"--pcap", base+".pcap", "--keylog", base+".keys"))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for i, h := range hosts {
			out, serr, code := cli(ctx, "ping", "--control", ds[i].control, "-c", "3", "-i", "0.2", h.peer)
			if code != 0 || !strings.Contains(out, "3 packets transmitted, 3 received") {
				cancel()
				t.Fatalf("run %d: ping %s->%s: exit %d\n%s%s", run, h.name, h.peer, code, out, serr)
			}
		}
		cancel()
		for _, d := range ds {
			d.stop(t, syscall.SIGTERM)
		}
		for _, h := range hosts {
			base := filepath.Join(dir, fmt.Sprintf("%s-%d", h.name, run))
			keys := keylogKeys(t, base+".keys")
			key := keys[h.spi]
			if len(key) != 20 {
				t.Fatalf("run %d: %s keylog has no 20-byte AES-GCM key for SPI %#x", run, h.name, h.spi)
			}
			sent := 0
			for _, e := range readESP6(t, base+".pcap") {
				if e.spi != h.spi {
					continue // what the peer sent
				}
				sent++
				if err := openGCM(key, e.pkt); err != nil {
					t.Fatalf("run %d: %s SPI %#x seq %d does not decrypt with the keylog's key: %v", run, h.name, e.spi, e.seq, err)
				}
				var k [12]byte
				binary.BigEndian.PutUint32(k[:4], e.spi)
				copy(k[4:], e.iv[:])
				where := fmt.Sprintf("run %d seq %d", run, e.seq)
				if prev, dup := seen[k]; dup {
					t.Errorf("%s SPI %#x: nonce IV %x of %s was already used in %s, under the same key", h.name, e.spi, e.iv, where, prev)
				}
				seen[k] = where
			}
			if sent < 3 {
				t.Fatalf("run %d: %s capture holds %d ESP packets on SPI %#x, want at least the 3 echo requests or replies", run, h.name, sent, h.spi)
			}
			t.Logf("run %d: %s sent %d ESP packets on SPI %#x, all decrypted", run, h.name, sent, h.spi)
		}
	}
}
