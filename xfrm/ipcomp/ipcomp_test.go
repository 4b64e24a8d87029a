package ipcomp

import (
	"bytes"
	"compress/flate"
	"encoding/hex"
	"errors"
	"math/rand"
	"strings"
	"testing"
)

func compressible(n int) []byte {
	return []byte(strings.Repeat("GET /index.html HTTP/1.1\r\nHost: example.com\r\n", n/45+1))[:n]
}

func TestRoundTrip(t *testing.T) {
	tr, err := New("deflate", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{90, 200, 1400, 8000, 65000} {
		p := compressible(n)
		dst := make([]byte, n)
		m, ok := tr.Compress(dst, p, 17, 0x1234)
		if !ok || m >= n {
			t.Fatalf("n %d: Compress = %d, %v", n, m, ok)
		}
		if dst[0] != 17 || dst[1] != 0 || dst[2] != 0x12 || dst[3] != 0x34 {
			t.Fatalf("header %x", dst[:4])
		}
		out := make([]byte, 65535)
		k, nh, err := tr.Decompress(out, dst[:m])
		if err != nil || nh != 17 || !bytes.Equal(out[:k], p) {
			t.Fatalf("n %d: Decompress %d nh %d err %v", n, k, nh, err)
		}
	}
}

func TestNotCompressed(t *testing.T) {
	tr, _ := New("deflate", 0)
	// Below the threshold.
	if _, ok := tr.Compress(make([]byte, 100), compressible(89), 6, 1); ok {
		t.Fatal("compressed below the threshold")
	}
	// Random data does not shrink: sent as it is.
	r := make([]byte, 1400)
	rand.New(rand.NewSource(1)).Read(r)
	if _, ok := tr.Compress(make([]byte, 1400), r, 6, 1); ok {
		t.Fatal("compressed random data")
	}
	// A dst too small for any gain.
	if _, ok := tr.Compress(make([]byte, 10), compressible(500), 6, 1); ok {
		t.Fatal("compressed into a tiny dst")
	}
	if _, err := New("lzs", 0); err == nil {
		t.Fatal("lzs accepted")
	}
}

// TestLinuxDeflate decompresses what Linux's deflate (zlib raw deflate with
// a 2^11 window, DEFLATE_DEF_WINBITS) makes; the vector was produced with
// /usr/bin/python3 -c "import zlib; c=zlib.compressobj(9, zlib.DEFLATED, -11);
// p=b'GET /index.html HTTP/1.1\r\nHost: example.com\r\n'*6;
// print((c.compress(p)+c.flush()).hex())"
func TestLinuxDeflate(t *testing.T) {
	tr, _ := New("deflate", 0)
	z, _ := hex.DecodeString("73770d51d0cfcc4b49add0cb28c9cd51f0080909d037d433e4e5f2c82f2eb15248ad48cc2dc849d54bcecfe5e5721fee8a01")
	out := make([]byte, 1000)
	n, nh, err := tr.Decompress(out, append([]byte{6, 0, 0, 9}, z...))
	want := bytes.Repeat([]byte("GET /index.html HTTP/1.1\r\nHost: example.com\r\n"), 6)
	if err != nil || nh != 6 || !bytes.Equal(out[:n], want) {
		t.Fatalf("%q nh %d err %v", out[:n], nh, err)
	}
}

func TestBombAndCorrupt(t *testing.T) {
	tr, _ := New("deflate", 0)
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, 9)
	w.Write(make([]byte, 1<<20)) // 1 MiB of zeros: about 1 KiB compressed
	w.Close()
	bomb := append([]byte{17, 0, 0, 1}, b.Bytes()...)
	out := make([]byte, 65535-20)
	if _, _, err := tr.Decompress(out, bomb); !errors.Is(err, ErrTooBig) {
		t.Fatalf("bomb (%d bytes): %v", len(bomb), err)
	}
	// Exactly at the limit is fine.
	exact := make([]byte, 100)
	b.Reset()
	w.Reset(&b)
	w.Write(exact)
	w.Close()
	if n, _, err := tr.Decompress(make([]byte, 100), append([]byte{17, 0, 0, 1}, b.Bytes()...)); err != nil || n != 100 {
		t.Fatalf("at the limit: %d %v", n, err)
	}
	if _, _, err := tr.Decompress(out, []byte{17, 0, 0, 1, 0xff, 0xff, 0xff}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt: %v", err)
	}
	if _, _, err := tr.Decompress(out, []byte{17, 0, 0}); !errors.Is(err, ErrTruncated) {
		t.Fatalf("short: %v", err)
	}
}

func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	tr, _ := New("deflate", 0)
	p := compressible(1400)
	dst := make([]byte, 1400)
	out := make([]byte, 65535)
	tr.Compress(dst, p, 6, 1) // warm the pools
	allocs := testing.AllocsPerRun(50, func() {
		n, ok := tr.Compress(dst, p, 6, 1)
		if !ok {
			t.Fatal("not compressed")
		}
		if _, _, err := tr.Decompress(out, dst[:n]); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%v allocations per Compress+Decompress", allocs)
	if allocs != 0 {
		t.Errorf("%v allocations per Compress+Decompress", allocs)
	}
}

func BenchmarkCompress1400(b *testing.B) {
	tr, _ := New("deflate", 0)
	p := compressible(1400)
	dst := make([]byte, 1400)
	b.SetBytes(1400)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		tr.Compress(dst, p, 6, 1)
	}
}
