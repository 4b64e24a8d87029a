// Package ah implements the IP Authentication Header (RFC 4302) on byte
// slices: the ICV over the IP header with its mutable fields zeroed, the
// extension headers (options that may change en route zeroed, routing
// headers in their final form), the AH header with a zero ICV, the payload
// and, with ESN, the high sequence bits (RFC 4302 §2.5.1, §3.3.3.2).
//
// The integrity algorithms are ESP's MAC table (esp.MAC): HMAC-MD5-96,
// HMAC-SHA1-96, HMAC-SHA2-256/384/512, AES-XCBC-MAC-96 and AES-CMAC-96.
package ah

import (
	"encoding/binary"
	"errors"
	"sync"

	"github.com/ipsecstack/ipsecstack/xfrm/esp"
)

// HeaderLen is the fixed part of the AH header: next header, payload
// length, reserved, SPI, sequence number.
const HeaderLen = 12

// Errors returned by Open.
var (
	ErrICV       = errors.New("ah: ICV mismatch")
	ErrTruncated = errors.New("ah: packet too short or bad AH length")
	ErrHeader    = errors.New("ah: malformed IP header or extension header")
	ErrZeroed    = errors.New("ah: transform key material wiped")
)

// Transform is the keyed AH transform of one SA. Safe for concurrent use.
type Transform struct {
	mac    *esp.MAC
	icvLen int
	// align4 makes IPv4 AH headers a multiple of 4 bytes rather than 8
	// (scapy does that; tests use it to reproduce scapy's packets).
	align4 bool
}

// New builds an AH transform for the integrity algorithm name (Linux or
// setkey name) with key; icvBits 0 takes the algorithm's default ICV.
func New(name string, key []byte, icvBits int) (*Transform, error) {
	if name == "" {
		return nil, errors.New("ah: an integrity algorithm is required")
	}
	m, err := esp.NewMAC(name, key, icvBits)
	if err != nil {
		return nil, err
	}
	return &Transform{mac: m, icvLen: m.ICVLen()}, nil
}

// String names the algorithm and ICV length.
func (t *Transform) String() string { return t.mac.String() }

// ICVLen is the length of the ICV.
func (t *Transform) ICVLen() int { return t.icvLen }

// Len is the AH header length including the ICV and its padding. RFC
// 4302 §3.3.3.2.1 asks for a multiple of 8 bytes for IPv6 and of 4 for
// IPv4; Linux pads IPv4 AH to 8 bytes too (ah4.c: XFRM_ALIGN8) and rejects
// anything else, so Len does the same: with a 128-bit or 256-bit ICV the
// IPv4 header carries 4 bytes of padding, which the RFC allows. Open
// accepts both paddings for IPv4.
func (t *Transform) Len(v4 bool) int {
	n := HeaderLen + t.icvLen
	if v4 && t.align4 {
		return (n + 3) &^ 3
	}
	return (n + 7) &^ 7
}

// Zero wipes the key.
func (t *Transform) Zero() { t.mac.Zero() }

// scratch holds copies of IP headers whose mutable fields are zeroed.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// Seal fills in the AH header at pkt[off:] and computes its ICV. pkt is
// the complete outgoing packet: the IP header and the extension headers
// that precede AH (in pkt[:off]) with final lengths and the next header
// before AH already set to 51, then room for Len bytes of AH, then the
// payload. nextHeader is what AH protects.
func (t *Transform) Seal(pkt []byte, off int, nextHeader uint8, spi uint32, seq uint64, esn bool) error {
	v4 := len(pkt) > 0 && pkt[0]>>4 == 4
	n := t.Len(v4)
	if off+n > len(pkt) {
		return ErrTruncated
	}
	a := pkt[off : off+n]
	a[0] = nextHeader
	a[1] = byte(n/4 - 2)
	a[2], a[3] = 0, 0
	binary.BigEndian.PutUint32(a[4:], spi)
	binary.BigEndian.PutUint32(a[8:], uint32(seq))
	clear(a[HeaderLen:]) // ICV and padding
	bp := scratch.Get().(*[]byte)
	defer scratch.Put(bp)
	h, err := immutable(bp, pkt[:off], len(pkt)-off)
	if err != nil {
		return err
	}
	t.mac.Compute(a[HeaderLen:], seq, esn, h, pkt[off:])
	return nil
}

// Open verifies the AH packet b (the AH header and what follows) that
// arrived under the IP header hdr (the IPv4 header with options, or the
// IPv6 header with the extension headers before AH; a Fragment header
// left there by reassembly is skipped). seq is the full sequence number
// (high half inferred by the caller with ESN). It returns the protected
// payload, aliasing b, and its next header. The ICV field of b is zeroed
// in the process.
func (t *Transform) Open(hdr, b []byte, seq uint64, esn bool) ([]byte, uint8, error) {
	if len(b) < HeaderLen {
		return nil, 0, ErrTruncated
	}
	n := (int(b[1]) + 2) * 4
	v4 := len(hdr) > 0 && hdr[0]>>4 == 4
	// The length must be the SA's ICV padded as RFC 4302 §3.3.3.2.1 says
	// (for IPv4: to 4 bytes, or to 8 as Linux does); a different ICV
	// length is a different SA (or an attack).
	full := HeaderLen + t.icvLen
	okLen := n == (full+7)&^7 || (v4 && n == (full+3)&^3)
	if !okLen || n > len(b) {
		return nil, 0, ErrTruncated
	}
	var icv [64]byte
	got := icv[:t.icvLen]
	copy(got, b[HeaderLen:])
	clear(b[HeaderLen : HeaderLen+t.icvLen])
	bp := scratch.Get().(*[]byte)
	defer scratch.Put(bp)
	h, err := immutable(bp, hdr, len(b))
	if err != nil {
		return nil, 0, err
	}
	if !t.mac.Verify(got, seq, esn, h, b) {
		return nil, 0, ErrICV
	}
	return b[n:], b[0], nil
}
