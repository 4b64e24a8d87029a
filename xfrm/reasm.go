package xfrm

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Reassembly happens here, before any inbound policy decision, and not in
// gVisor's IP layer. The reason is RFC 4301 §7: a policy with specific ports
// can only be checked on a datagram whose ports are known, and the only
// datagram whose ports are certain is the one the transport layer finally
// receives. Classifying fragments one by one (ports OPAQUE for all but the
// first) lets through an IPv6 tiny first fragment whose transport header is
// in the second fragment, and fragments that arrived partly in clear and
// partly through an SA. So every fragment, from the link or decapsulated from
// an SA, is reassembled first; the whole datagram is then classified once,
// with the SAs all of its fragments came through, and handed to the stack
// whole. gVisor's own reassembler never sees a fragment.

// Reassembly limits, as Linux's defaults (net.ipv4.ipfrag_high_thresh,
// ipfrag_time).
const (
	DefaultReasmMemLimit = 4 << 20
	DefaultReasmTimeout  = 30 * time.Second
	// reasmPieceCost is what each held fragment is charged beyond its bytes
	// (bookkeeping), so that a train of 8-byte fragments cannot hold more
	// entries than the byte limit suggests.
	reasmPieceCost = 64
)

// ReasmStats counts what the reassembler did, with the names of Linux's
// /proc/net/snmp Ip: counters.
type ReasmStats struct {
	ReasmReqds   atomic.Uint64 // fragments received
	ReasmOKs     atomic.Uint64 // datagrams reassembled
	ReasmFails   atomic.Uint64 // datagrams (or fragments) given up: overlap, bad length, limits
	ReasmTimeout atomic.Uint64 // datagrams that timed out incomplete
	ReasmEvicted atomic.Uint64 // incomplete datagrams evicted to stay under the memory limit
}

// reasmKey identifies one datagram in reassembly. Fragments that came
// through different SAs (or some in clear) never join: the secpath is part
// of the key, which is RFC 4301 §7.3's stateful fragment check made strict.
type reasmKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8 // IPv4 protocol; 0 for IPv6 (RFC 8200 keys by addresses and ID)
	sp       [maxBundle]*SA
}

type reasmPiece struct {
	off  int
	data []byte
}

type reasmEntry struct {
	key     reasmKey
	elem    *list.Element
	created time.Time
	hdr     []byte // IP header (IPv4) or header + unfragmentable part (IPv6) of the first fragment
	nhOff   int    // IPv6: offset in hdr of the Next Header byte to patch; IPv4: unused
	nh      uint8  // upper-layer protocol from the first fragment's Fragment header (IPv6)
	pieces  []reasmPiece
	have    int // bytes of payload held
	end     int // payload length, known once the last fragment arrived; -1 before
	cost    int
}

// Reassembler rebuilds IPv4 and IPv6 datagrams from their fragments.
// Overlapping fragments discard the whole datagram (RFC 5722, and Linux
// for IPv4 since 2018); exact duplicates are ignored. Memory is bounded:
// past the limit the oldest incomplete datagrams are evicted. Safe for
// concurrent use.
type Reassembler struct {
	// Stats counts fragments and datagrams by fate.
	Stats ReasmStats

	mu      sync.Mutex
	m       map[reasmKey]*reasmEntry
	lru     list.List // of *reasmEntry, oldest first
	mem     int
	limit   int
	timeout time.Duration
	now     func() time.Time
}

// NewReassembler returns a reassembler holding at most limit bytes of
// incomplete datagrams, each for at most timeout.
func NewReassembler(limit int, timeout time.Duration) *Reassembler {
	return &Reassembler{m: make(map[reasmKey]*reasmEntry), limit: limit, timeout: timeout, now: time.Now}
}

// Pending returns the number of incomplete datagrams held.
func (r *Reassembler) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// Memory returns the bytes charged for incomplete datagrams.
func (r *Reassembler) Memory() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mem
}

// FragInfo describes a fragment found by ParseFragment.
type FragInfo struct {
	// Version is 4 or 6.
	Version int
	// HdrLen is the length of what precedes the fragment data: the IPv4
	// header, or the IPv6 header, the unfragmentable part and the Fragment
	// header.
	HdrLen int
	// FragHdrOff is the offset of the IPv6 Fragment header; NhOff the offset
	// of the Next Header byte that names it (6 or in an extension header).
	FragHdrOff, NhOff int
	// Offset is the fragment's offset in bytes; More the M/MF flag.
	Offset int
	More   bool
	// ID is the identification (16 bits in IPv4).
	ID uint32
	// Proto is the IPv4 protocol or the Fragment header's Next Header.
	Proto uint8
	// End is the packet length from its length field (link padding past it
	// is not part of the packet).
	End int
}

// ParseFragment reports whether pkt, a raw IP packet, is a fragment: IPv4
// with MF or a fragment offset, IPv6 with a Fragment header (an atomic
// fragment, RFC 6946, included). It walks the IPv6 headers gVisor walks
// before a Fragment header: hop-by-hop, routing, destination options and
// the 8-byte experiment header 253. A packet it cannot parse is an error:
// never let the stack reassemble what the policy check did not see.
func ParseFragment(pkt []byte) (fi FragInfo, isFrag bool, err error) {
	if len(pkt) == 0 {
		return fi, false, ErrTruncated
	}
	switch pkt[0] >> 4 {
	case 4:
		ihl, end, err := ipv4Bounds(pkt)
		if err != nil {
			return fi, false, err
		}
		fo := binary.BigEndian.Uint16(pkt[6:8])
		if fo&0x3fff == 0 {
			return fi, false, nil
		}
		return FragInfo{
			Version: 4, HdrLen: ihl, NhOff: 9, Offset: int(fo&0x1fff) * 8, More: fo&0x2000 != 0,
			ID: uint32(binary.BigEndian.Uint16(pkt[4:6])), Proto: pkt[9], End: end,
		}, true, nil
	case 6:
		end, err := ipv6Bounds(pkt)
		if err != nil {
			return fi, false, err
		}
		pkt = pkt[:end]
		off, nhOff := ipv6Header, 6
		for {
			nh := pkt[nhOff]
			if nh == nhHopOpts && off != ipv6Header {
				return fi, false, ErrMalformed
			}
			_, after, isExt, err := skipExt6(pkt, off, nh)
			if err != nil {
				return fi, false, err
			}
			if isExt {
				nhOff, off = off, after
				continue
			}
			switch nh {
			case nhFragment:
				if len(pkt)-off < 8 {
					return fi, false, ErrTruncated
				}
				fo := binary.BigEndian.Uint16(pkt[off+2 : off+4])
				return FragInfo{
					Version: 6, HdrLen: off + 8, FragHdrOff: off, NhOff: nhOff,
					Offset: int(fo>>3) * 8, More: fo&1 != 0,
					ID: binary.BigEndian.Uint32(pkt[off+4 : off+8]), Proto: pkt[off], End: end,
				}, true, nil
			default:
				return fi, false, nil
			}
		}
	}
	return fi, false, ErrBadVersion
}

// maxDatagram is the largest IPv4 total length or IPv6 payload length.
const maxDatagram = 65535

// Add takes one fragment, described by fi (from ParseFragment), that
// arrived through the SAs in sp (outermost first; empty in clear). It
// copies what it keeps. When the fragment completes its datagram, Add
// writes the whole datagram (Fragment header removed, lengths and IPv4
// checksum fixed) into a buffer from a and returns it; otherwise nil: held,
// duplicate, or dropped and counted.
func (r *Reassembler) Add(pkt []byte, fi *FragInfo, sp []*SA, a Allocator) []byte {
	r.Stats.ReasmReqds.Add(1)
	data := pkt[fi.HdrLen:fi.End]
	if fi.Version == 4 && ipv4Checksum(pkt[:fi.HdrLen]) != 0 {
		r.Stats.ReasmFails.Add(1)
		return nil
	}
	// Every fragment but the last carries a multiple of 8 bytes (RFC 791,
	// RFC 8200 §4.5), and no fragment reaches past the largest datagram.
	hdrCost := fi.HdrLen
	if fi.Version == 6 {
		hdrCost = fi.FragHdrOff - ipv6Header
	}
	if (fi.More && (len(data) == 0 || len(data)%8 != 0)) || hdrCost+fi.Offset+len(data) > maxDatagram {
		r.Stats.ReasmFails.Add(1)
		return nil
	}
	var k reasmKey
	if fi.Version == 4 {
		k.src = netip.AddrFrom4([4]byte(pkt[12:16]))
		k.dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		k.proto = fi.Proto
	} else {
		k.src = netip.AddrFrom16([16]byte(pkt[8:24]))
		k.dst = netip.AddrFrom16([16]byte(pkt[24:40]))
	}
	k.id = fi.ID
	if len(sp) > maxBundle {
		r.Stats.ReasmFails.Add(1)
		return nil
	}
	copy(k.sp[:], sp)

	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.expireLocked(now)
	e := r.m[k]
	if e == nil {
		if !fi.More && fi.Offset == 0 {
			// An atomic fragment (RFC 6946) is a whole datagram; skip the
			// table.
			r.Stats.ReasmOKs.Add(1)
			return r.build(&reasmEntry{end: len(data), pieces: []reasmPiece{{0, data}}}, pkt, fi, a)
		}
		e = &reasmEntry{key: k, created: now, end: -1}
		e.elem = r.lru.PushBack(e)
		r.m[k] = e
	}
	switch e.insert(fi.Offset, data, !fi.More) {
	case insertDup:
		return nil
	case insertBad:
		r.Stats.ReasmFails.Add(1)
		r.dropLocked(e)
		return nil
	}
	if fi.Offset == 0 {
		// The first fragment's headers become the datagram's (RFC 791;
		// RFC 8200 §4.5: the unfragmentable part of the first fragment).
		e.hdr = bytes.Clone(pkt[:fi.HdrLen])
		e.nhOff, e.nh = fi.NhOff, fi.Proto
		if fi.Version == 6 {
			e.hdr = e.hdr[:fi.FragHdrOff]
		}
	}
	cost := len(data) + reasmPieceCost
	if fi.Offset == 0 {
		cost += len(e.hdr)
	}
	e.cost += cost
	r.mem += cost
	if e.end >= 0 && e.have == e.end && e.hdr != nil {
		r.dropLocked(e)
		r.Stats.ReasmOKs.Add(1)
		return r.build(e, e.hdr, nil, a)
	}
	// Stay under the limit: evict the oldest incomplete datagrams, this
	// one last.
	for r.mem > r.limit {
		old := r.lru.Front().Value.(*reasmEntry)
		r.Stats.ReasmEvicted.Add(1)
		r.Stats.ReasmFails.Add(1)
		r.dropLocked(old)
		if old == e {
			break
		}
	}
	return nil
}

// build writes the datagram: hdr (the first fragment's headers; when fi is
// set, pkt is an atomic fragment and hdr comes from it) and the payload.
func (r *Reassembler) build(e *reasmEntry, hdr []byte, fi *FragInfo, a Allocator) []byte {
	nhOff, nh := e.nhOff, e.nh
	if fi != nil {
		nhOff, nh = fi.NhOff, fi.Proto
		hdr = hdr[:fi.HdrLen]
		if fi.Version == 6 {
			hdr = hdr[:fi.FragHdrOff]
		}
	}
	out := a.Alloc(len(hdr) + e.end)
	n := copy(out, hdr)
	for _, p := range e.pieces {
		copy(out[n+p.off:], p.data)
	}
	if out[0]>>4 == 4 {
		binary.BigEndian.PutUint16(out[2:4], uint16(len(out)))
		out[6], out[7] = out[6]&0x40, 0 // keep DF; no MF, offset 0
		out[10], out[11] = 0, 0
		binary.BigEndian.PutUint16(out[10:12], ipv4Checksum(out[:len(hdr)]))
		return out
	}
	out[nhOff] = nh
	binary.BigEndian.PutUint16(out[4:6], uint16(len(out)-ipv6Header))
	return out
}

type insertResult uint8

const (
	insertOK insertResult = iota
	insertDup
	insertBad
)

// insert adds data at off, keeping pieces sorted and disjoint.
func (e *reasmEntry) insert(off int, data []byte, last bool) insertResult {
	end := off + len(data)
	if last {
		if e.end >= 0 && e.end != end {
			return insertBad // two different ends
		}
		if len(e.pieces) > 0 && e.pieces[len(e.pieces)-1].off+len(e.pieces[len(e.pieces)-1].data) > end {
			return insertBad // data past the end
		}
	} else if e.end >= 0 && end > e.end {
		return insertBad
	}
	// Find the first piece at or after off.
	i := 0
	for i < len(e.pieces) && e.pieces[i].off < off {
		i++
	}
	if i < len(e.pieces) && e.pieces[i].off == off && len(e.pieces[i].data) == len(data) {
		if bytes.Equal(e.pieces[i].data, data) {
			if last {
				e.end = end
			}
			return insertDup
		}
		return insertBad
	}
	if i > 0 {
		p := e.pieces[i-1]
		if p.off+len(p.data) > off {
			return insertBad
		}
	}
	if i < len(e.pieces) && e.pieces[i].off < end {
		return insertBad
	}
	if len(data) == 0 && !last {
		return insertBad
	}
	e.pieces = append(e.pieces, reasmPiece{})
	copy(e.pieces[i+1:], e.pieces[i:])
	e.pieces[i] = reasmPiece{off: off, data: bytes.Clone(data)}
	e.have += len(data)
	if last {
		e.end = end
	}
	return insertOK
}

func (r *Reassembler) dropLocked(e *reasmEntry) {
	if r.m[e.key] != e {
		return
	}
	delete(r.m, e.key)
	r.lru.Remove(e.elem)
	r.mem -= e.cost
}

func (r *Reassembler) expireLocked(now time.Time) {
	for f := r.lru.Front(); f != nil; f = r.lru.Front() {
		e := f.Value.(*reasmEntry)
		if now.Sub(e.created) < r.timeout {
			return
		}
		r.Stats.ReasmTimeout.Add(1)
		r.Stats.ReasmFails.Add(1)
		r.dropLocked(e)
	}
}

// Expire drops incomplete datagrams older than the timeout.
func (r *Reassembler) Expire(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(now)
}
