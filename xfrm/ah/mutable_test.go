package ah

import (
	"bytes"
	"testing"
)

// TestMutableFields changes, in packets scapy protected, each field RFC
// 4302 §3.3.3.1 calls mutable (the ICV must still verify) and each
// immutable one (it must not). Length and next-header fields are left out:
// they are structural (a change moves or re-dispatches the packet) and AH
// recomputes them from the packet it is given.
func TestMutableFields(t *testing.T) {
	type change struct {
		name    string
		at      int // byte offset into the packet
		mutable bool
	}
	cases := []struct {
		vector  string
		changes []change
	}{
		{"ipv4 transport sha1 udp options", []change{
			{"tos", 1, true}, {"flags", 6, true}, {"fragment offset", 7, true}, {"ttl", 8, true},
			{"checksum hi", 10, true}, {"checksum lo", 11, true},
			{"record route pointer", 26, true}, {"record route address", 28, true},
			{"identification", 4, false}, {"source", 12, false}, {"destination", 19, false},
			{"router alert value", 23, false}, {"ah spi", 32 + 7, false}, {"ah reserved", 32 + 2, false},
			{"ah icv", 32 + 12, false}, {"udp port", 32 + 24 + 1, false}, {"payload", 32 + 24 + 10, false},
		}},
		{"ipv6 transport sha512 hbh+dst", []change{
			{"traffic class", 0, true}, {"traffic class/flow label", 1, true}, {"flow label", 3, true},
			{"hop limit", 7, true},
			{"hbh option 0x3e data", 48, true}, {"dstopt option 0x3f data", 66, true},
			{"version", 0, false}, // see below: flips the low bit of byte 0 = traffic class, so replaced
			{"source", 8, false}, {"destination", 39, false},
			{"hbh router alert data", 40 + 4, false}, {"hbh option 0x3e type", 46, false},
			{"dstopt option 0x1e data", 60, false}, {"ah seq", 72 + 11, false}, {"payload", 72 + 48 + 12, false},
		}},
		{"ipv6 tunnel md5 esn", []change{
			{"outer hop limit", 7, true}, {"outer flow label", 2, true},
			{"outer source", 20, false}, {"inner hop limit", 40 + 24 + 7, false}, {"inner source", 40 + 24 + 10, false},
		}},
	}
	for _, c := range cases {
		var v ahVector
		for _, x := range ahVectors {
			if x.name == c.vector {
				v = x
			}
		}
		tr, err := New(v.alg, unhex(t, v.key), v.icvBits)
		if err != nil {
			t.Fatal(err)
		}
		orig := unhex(t, v.packet)
		for _, ch := range c.changes {
			p := bytes.Clone(orig)
			if ch.name == "version" {
				p[0] ^= 0x80 // version 6 -> 14: not an AH-covered value any more
				if _, _, err := tr.Open(p[:v.off], bytes.Clone(p[v.off:]), v.seq, v.esn); err == nil {
					t.Errorf("%s: changing the version verified", c.vector)
				}
				continue
			}
			p[ch.at] ^= 0x01
			_, _, err := tr.Open(p[:v.off], bytes.Clone(p[v.off:]), v.seq, v.esn)
			if ch.mutable && err != nil {
				t.Errorf("%s: changing mutable %s (byte %d) broke the ICV: %v", c.vector, ch.name, ch.at, err)
			}
			if !ch.mutable && err != ErrICV {
				t.Errorf("%s: changing immutable %s (byte %d) gave %v, want ErrICV", c.vector, ch.name, ch.at, err)
			}
		}
	}
}

// TestReassembledIPv6: a Fragment header left in the header by
// reassembly is skipped.
func TestReassembledIPv6(t *testing.T) {
	v := ahVectors[4] // ipv6 tunnel md5 esn: no extension headers
	tr, _ := New(v.alg, unhex(t, v.key), v.icvBits)
	p := unhex(t, v.packet)
	hdr := append(bytes.Clone(p[:40]), 51, 0, 0, 0, 0, 0, 0, 7)
	hdr[6] = 44
	if _, _, err := tr.Open(hdr, bytes.Clone(p[40:]), v.seq, v.esn); err != nil {
		t.Fatal(err)
	}
}

func TestOpenMalformed(t *testing.T) {
	v := ahVectors[0]
	tr, _ := New(v.alg, unhex(t, v.key), v.icvBits)
	p := unhex(t, v.packet)
	for n := 0; n < len(p)-v.off; n++ {
		if _, _, err := tr.Open(p[:v.off], bytes.Clone(p[v.off:v.off+n]), v.seq, false); n < 24 && err != ErrTruncated {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
	bad := bytes.Clone(p)
	bad[v.off+1] = 3 // AH length that does not match the SA's ICV
	if _, _, err := tr.Open(bad[:v.off], bad[v.off:], v.seq, false); err != ErrTruncated {
		t.Fatalf("bad length: %v", err)
	}
	for _, h := range [][]byte{nil, {0x45}, p[:19], {0x60, 0, 0, 0}} {
		if _, _, err := tr.Open(h, bytes.Clone(p[v.off:]), v.seq, false); err != ErrHeader {
			t.Fatalf("header %x: %v", h, err)
		}
	}
	if _, err := New("", nil, 0); err == nil {
		t.Fatal("New without algorithm")
	}
	if _, err := New("hmac(sha1)", make([]byte, 3), 0); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	v := ahVectors[3]
	tr, _ := New(v.alg, unhex(t, v.key), v.icvBits)
	p := unhex(t, v.packet)
	buf := bytes.Clone(p)
	allocs := testing.AllocsPerRun(100, func() {
		copy(buf, p)
		if err := tr.Seal(buf, v.off, p[v.off], v.spi, v.seq, true); err != nil {
			t.Fatal(err)
		}
		if _, _, err := tr.Open(buf[:v.off], buf[v.off:], v.seq, true); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Seal+Open", allocs)
	}
}

// TestIPv4Padding: IPv4 AH is padded to 8 bytes as Linux does (and
// expects), and either padding is accepted on input.
func TestIPv4Padding(t *testing.T) {
	for _, c := range []struct {
		alg      string
		key, len int
	}{{"hmac(sha1)", 20, 24}, {"hmac(sha256)", 32, 32}, {"hmac(sha384)", 48, 40}, {"hmac(sha512)", 64, 48}, {"hmac(md5)", 16, 24}} {
		tr, err := New(c.alg, make([]byte, c.key), 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := tr.Len(true); got != c.len || tr.Len(false) != c.len {
			t.Errorf("%s: Len = %d/%d, want %d", c.alg, got, tr.Len(false), c.len)
		}
		for _, a4 := range []bool{false, true} {
			tr.align4 = a4
			n := tr.Len(true)
			p := make([]byte, 20+n+30)
			p[0] = 0x45
			p[9] = protoAH
			if err := tr.Seal(p, 20, 17, 0x100, 9, false); err != nil {
				t.Fatal(err)
			}
			tr.align4 = false
			if _, _, err := tr.Open(p[:20], bytes.Clone(p[20:]), 9, false); err != nil {
				t.Errorf("%s align4=%v: %v", c.alg, a4, err)
			}
		}
	}
}
