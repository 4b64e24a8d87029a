// Package ipcomp implements IP Payload Compression (RFC 3173) with DEFLATE
// (RFC 2394: raw deflate, no zlib header) on byte slices.
//
// A payload is compressed only when it is at least Threshold bytes (Linux
// uses 90 for deflate) and only when the result, with the 4-byte IPComp
// header, is smaller than the original; otherwise it goes out unchanged,
// with no IPComp header (RFC 3173 §2.2). Decompression stops at a hard cap
// (the most an IP packet can carry) so that a small packet cannot expand
// without bound. Compressors and decompressors are pooled: building a
// flate.Writer costs hundreds of kilobytes.
package ipcomp

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// HeaderLen is the IPComp header: next header, flags, CPI.
const HeaderLen = 4

// DefaultThreshold is the smallest payload compressed, as Linux's deflate
// entry in xfrm_algo.c (threshold 90).
const DefaultThreshold = 90

// AlgInfo describes the compression algorithm in the front ends'
// vocabulary.
type AlgInfo struct {
	LinuxName   string   // "deflate"
	SetkeyNames []string // "deflate"
	IKEv2ID     uint16   // IPCOMP_DEFLATE (RFC 7296 §3.3.2, transform ID space of IPCOMP)
	SADB        uint8    // SADB_X_CALG_DEFLATE
}

// Algorithms lists the compression algorithms.
func Algorithms() []AlgInfo {
	return []AlgInfo{{LinuxName: "deflate", SetkeyNames: []string{"deflate"}, IKEv2ID: 2, SADB: 2}}
}

// Errors from Decompress.
var (
	ErrTooBig    = errors.New("ipcomp: decompressed payload exceeds the limit (decompression bomb)")
	ErrCorrupt   = errors.New("ipcomp: corrupt compressed payload")
	ErrTruncated = errors.New("ipcomp: packet too short")
)

// Transform is an IPComp SA's compressor. Safe for concurrent use.
type Transform struct {
	threshold int
	level     int
	writers   sync.Pool // *compressor
	readers   sync.Pool // *decompressor
}

type compressor struct {
	w  *flate.Writer
	lw limitWriter
}

// limitWriter writes into a fixed buffer and fails once it is full: a
// compression that does not fit is one we would not send.
type limitWriter struct {
	buf  []byte
	n    int
	full bool
}

var errFull = errors.New("full")

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.full || l.n+len(p) > len(l.buf) {
		l.full = true
		return 0, errFull
	}
	l.n += copy(l.buf[l.n:], p)
	return len(p), nil
}

type decompressor struct {
	r  io.ReadCloser
	br bytes.Reader
}

// New returns a transform for the algorithm name ("deflate", Linux and
// setkey name alike). threshold 0 takes DefaultThreshold.
func New(name string, threshold int) (*Transform, error) {
	if n := strings.ToLower(strings.TrimSpace(name)); n != "deflate" {
		return nil, fmt.Errorf("ipcomp: unknown compression algorithm %q (want deflate)", name)
	}
	if threshold <= 0 {
		threshold = DefaultThreshold
	}
	t := &Transform{threshold: threshold, level: flate.DefaultCompression}
	t.writers.New = func() any {
		w, _ := flate.NewWriter(nil, t.level)
		return &compressor{w: w}
	}
	t.readers.New = func() any {
		d := new(decompressor)
		d.r = flate.NewReader(&d.br)
		return d
	}
	return t, nil
}

// String names the algorithm.
func (t *Transform) String() string { return "deflate" }

// Threshold is the smallest payload Compress compresses.
func (t *Transform) Threshold() int { return t.threshold }

// Compress writes the IPComp header (nextHeader, flags 0, cpi) and the
// compressed payload into dst and returns the length used. It returns
// false, leaving the payload to be sent as it is, when the payload is
// below the threshold or does not shrink: the result must fit in
// len(payload)-1 bytes, and dst must have at least that much room.
func (t *Transform) Compress(dst, payload []byte, nextHeader uint8, cpi uint16) (int, bool) {
	if len(payload) < t.threshold || len(payload) <= HeaderLen+1 {
		return 0, false
	}
	limit := len(payload) - 1
	if len(dst) < limit {
		return 0, false
	}
	c := t.writers.Get().(*compressor)
	defer t.writers.Put(c)
	c.lw = limitWriter{buf: dst[HeaderLen:limit]}
	c.w.Reset(&c.lw)
	if _, err := c.w.Write(payload); err != nil {
		c.lw.buf = nil
		return 0, false
	}
	if err := c.w.Close(); err != nil || c.lw.full {
		c.lw.buf = nil
		return 0, false
	}
	n := c.lw.n
	c.lw.buf = nil
	dst[0] = nextHeader
	dst[1] = 0
	dst[2], dst[3] = byte(cpi>>8), byte(cpi)
	return HeaderLen + n, true
}

// Decompress inflates the IPComp packet b (header and compressed data)
// into dst and returns the payload length and its next header. A payload
// longer than len(dst) is a decompression bomb: ErrTooBig.
func (t *Transform) Decompress(dst, b []byte) (int, uint8, error) {
	if len(b) < HeaderLen+1 {
		return 0, 0, ErrTruncated
	}
	d := t.readers.Get().(*decompressor)
	defer t.readers.Put(d)
	d.br.Reset(b[HeaderLen:])
	if err := d.r.(flate.Resetter).Reset(&d.br, nil); err != nil {
		return 0, 0, ErrCorrupt
	}
	n := 0
	for {
		if n == len(dst) {
			// Full: anything more is over the limit.
			var one [1]byte
			if m, err := d.r.Read(one[:]); m > 0 {
				return 0, 0, ErrTooBig
			} else if err == io.EOF {
				break
			} else if err != nil {
				return 0, 0, ErrCorrupt
			}
			continue
		}
		m, err := d.r.Read(dst[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, ErrCorrupt
		}
	}
	d.br.Reset(nil)
	return n, b[0], nil
}
