package xfrm

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// v6frag builds an IPv6 fragment 2001:db8::1 → 2001:db8::2 with the
// unfragmentable extension headers ext (first named by extNH), a Fragment
// header naming nh, and data at off.
func v6frag(extNH uint8, ext []byte, nh uint8, off int, more bool, id uint32, data []byte) []byte {
	p := make([]byte, 40, 40+len(ext)+8+len(data))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(len(ext)+8+len(data)))
	p[6] = 44
	if len(ext) > 0 {
		p[6] = extNH
	}
	p[7] = 64
	p[8], p[9], p[23] = 0x20, 0x01, 1
	p[24], p[25], p[39] = 0x20, 0x01, 2
	p = append(p, ext...)
	fo := uint16(off)
	if more {
		fo |= 1
	}
	fh := []byte{nh, 0, byte(fo >> 8), byte(fo), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(fh[4:], id)
	p = append(p, fh...)
	return append(p, data...)
}

// v4frag builds an IPv4 fragment 192.0.2.1 → 192.0.2.2, protocol 17.
func v4frag(off int, more bool, id uint16, data []byte) []byte {
	p := make([]byte, 20, 20+len(data))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(20+len(data)))
	binary.BigEndian.PutUint16(p[4:], id)
	fo := uint16(off / 8)
	if more {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(p[6:], fo)
	p[8], p[9] = 64, 17
	copy(p[12:], []byte{192, 0, 2, 1, 192, 0, 2, 2})
	binary.BigEndian.PutUint16(p[10:], ipv4Checksum(p[:20]))
	return append(p, data...)
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

// feed adds frags in order and returns what the last one completed.
func feed(t *testing.T, r *Reassembler, sp []*SA, frags ...[]byte) []byte {
	t.Helper()
	var out []byte
	for i, f := range frags {
		fi, ok, err := ParseFragment(f)
		if err != nil || !ok {
			t.Fatalf("fragment %d: ParseFragment = %v, %v", i, ok, err)
		}
		out = r.Add(f, &fi, sp, HeapAllocator{})
		if out != nil && i != len(frags)-1 {
			t.Fatalf("datagram complete after fragment %d of %d", i, len(frags))
		}
	}
	return out
}

func TestReassembleIPv6(t *testing.T) {
	data := seq(40)
	dstOpts := []byte{44, 0, 1, 4, 0, 0, 0, 0} // names the Fragment header
	for _, c := range []struct {
		name  string
		frags [][]byte
		want  []byte // payload after the unfragmentable part
	}{
		{"in order", [][]byte{v6frag(0, nil, 17, 0, true, 1, data[:16]), v6frag(0, nil, 17, 16, false, 1, data[16:])}, data},
		{"reversed", [][]byte{v6frag(0, nil, 17, 16, false, 2, data[16:]), v6frag(0, nil, 17, 0, true, 2, data[:16])}, data},
		{"three, middle last", [][]byte{v6frag(0, nil, 17, 0, true, 3, data[:8]), v6frag(0, nil, 17, 24, false, 3, data[24:]), v6frag(0, nil, 17, 8, true, 3, data[8:24])}, data},
		{"duplicate ignored", [][]byte{v6frag(0, nil, 17, 0, true, 4, data[:16]), v6frag(0, nil, 17, 0, true, 4, data[:16]), v6frag(0, nil, 17, 16, false, 4, data[16:])}, data},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := NewReassembler(DefaultReasmMemLimit, DefaultReasmTimeout)
			got := feed(t, r, nil, c.frags...)
			if got == nil {
				t.Fatal("not reassembled")
			}
			if got[6] != 17 || int(binary.BigEndian.Uint16(got[4:])) != len(got)-40 || !bytes.Equal(got[40:], c.want) {
				t.Fatalf("datagram % x", got)
			}
			if r.Pending() != 0 || r.Memory() != 0 {
				t.Fatalf("left %d pending, %d bytes", r.Pending(), r.Memory())
			}
		})
	}
	t.Run("unfragmentable part kept, its next header patched", func(t *testing.T) {
		r := NewReassembler(DefaultReasmMemLimit, DefaultReasmTimeout)
		got := feed(t, r, nil, v6frag(60, dstOpts, 17, 0, true, 9, data[:16]), v6frag(60, dstOpts, 17, 16, false, 9, data[16:]))
		if got == nil || got[6] != 60 || got[40] != 17 || !bytes.Equal(got[48:], data) {
			t.Fatalf("datagram % x", got)
		}
	})
	t.Run("atomic fragment", func(t *testing.T) {
		r := NewReassembler(DefaultReasmMemLimit, DefaultReasmTimeout)
		got := feed(t, r, nil, v6frag(0, nil, 6, 0, false, 10, data))
		if got == nil || got[6] != 6 || !bytes.Equal(got[40:], data) || r.Pending() != 0 {
			t.Fatalf("datagram % x", got)
		}
	})
}

func TestReassembleRejects(t *testing.T) {
	data := seq(64)
	for _, c := range []struct {
		name  string
		frags [][]byte
	}{
		{"overlap", [][]byte{v4frag(0, true, 1, data[:24]), v4frag(16, false, 1, data[16:])}},
		{"same offset, other bytes", [][]byte{v4frag(0, true, 2, data[:16]), v4frag(0, true, 2, seq(17)[1:]), v4frag(16, false, 2, data[16:])}},
		{"two ends", [][]byte{v4frag(16, false, 3, data[16:32]), v4frag(16, false, 3, data[16:40]), v4frag(0, true, 3, data[:16])}},
		{"data past the end", [][]byte{v4frag(32, true, 4, data[32:48]), v4frag(8, false, 4, data[8:16]), v4frag(0, true, 4, data[:8])}},
		{"more fragments, length not a multiple of 8", [][]byte{v4frag(0, true, 5, data[:12]), v4frag(16, false, 5, data[16:])}},
		{"past 65535", [][]byte{v4frag(65528, false, 6, data[:16]), v4frag(0, true, 6, data[:16])}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := NewReassembler(DefaultReasmMemLimit, DefaultReasmTimeout)
			for i, f := range c.frags {
				fi, ok, err := ParseFragment(f)
				if err != nil || !ok {
					t.Fatalf("fragment %d: ParseFragment = %v, %v", i, ok, err)
				}
				if out := r.Add(f, &fi, nil, HeapAllocator{}); out != nil {
					t.Fatalf("fragment %d completed a datagram", i)
				}
			}
			if r.Stats.ReasmFails.Load() == 0 {
				t.Fatal("ReasmFails did not move")
			}
		})
	}
}

// TestReassembleSecPath: fragments that came through different SAs, or
// some in clear, never join (RFC 4301 §7.3, made strict).
func TestReassembleSecPath(t *testing.T) {
	data := seq(32)
	sa1, sa2 := &SA{}, &SA{}
	r := NewReassembler(DefaultReasmMemLimit, DefaultReasmTimeout)
	a, b := v4frag(0, true, 7, data[:16]), v4frag(16, false, 7, data[16:])
	for _, c := range []struct{ first, second []*SA }{{nil, []*SA{sa1}}, {[]*SA{sa1}, nil}, {[]*SA{sa1}, []*SA{sa2}}, {[]*SA{sa1}, []*SA{sa1, sa2}}} {
		r := NewReassembler(DefaultReasmMemLimit, DefaultReasmTimeout)
		fa, _, _ := ParseFragment(a)
		fb, _, _ := ParseFragment(b)
		if r.Add(a, &fa, c.first, HeapAllocator{}) != nil || r.Add(b, &fb, c.second, HeapAllocator{}) != nil {
			t.Fatalf("fragments through %v and %v joined", c.first, c.second)
		}
	}
	fa, _, _ := ParseFragment(a)
	r.Add(a, &fa, []*SA{sa2}, HeapAllocator{})
	fb, _, _ := ParseFragment(b)
	if got := r.Add(b, &fb, []*SA{sa2}, HeapAllocator{}); got == nil || !bytes.Equal(got[20:], data) {
		t.Fatal("fragments through the same SA did not join")
	}
}

func TestReassembleLimits(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		r := NewReassembler(DefaultReasmMemLimit, time.Second)
		now := time.Unix(1000, 0)
		r.now = func() time.Time { return now }
		feed(t, r, nil, v4frag(0, true, 1, seq(16)))
		now = now.Add(2 * time.Second)
		f := v4frag(16, false, 1, seq(8))
		fi, _, _ := ParseFragment(f)
		if r.Add(f, &fi, nil, HeapAllocator{}) != nil {
			t.Fatal("completed with a timed-out first fragment")
		}
		if r.Stats.ReasmTimeout.Load() != 1 {
			t.Fatalf("ReasmTimeout = %d", r.Stats.ReasmTimeout.Load())
		}
	})
	t.Run("memory", func(t *testing.T) {
		const limit = 64 << 10
		r := NewReassembler(limit, DefaultReasmTimeout)
		for id := range 1000 {
			f := v4frag(0, true, uint16(id), seq(1024))
			fi, _, _ := ParseFragment(f)
			r.Add(f, &fi, nil, HeapAllocator{})
			if m := r.Memory(); m > limit {
				t.Fatalf("after %d datagrams %d bytes held, limit %d", id+1, m, limit)
			}
		}
		if r.Stats.ReasmEvicted.Load() == 0 {
			t.Fatal("nothing evicted")
		}
		// The newest datagram survives eviction and completes.
		f := v4frag(1024, false, 999, seq(8))
		fi, _, _ := ParseFragment(f)
		if r.Add(f, &fi, nil, HeapAllocator{}) == nil {
			t.Fatal("newest datagram was evicted")
		}
	})
}

// TestParseFragmentWalk: the walk agrees with gVisor's (hop-by-hop,
// routing, destination options, the 8-byte experiment header 253) and
// fails closed on truncation.
func TestParseFragmentWalk(t *testing.T) {
	exp := []byte{44, 0, 0, 0, 0, 0, 0, 0}
	p := v6frag(253, exp, 17, 8, true, 5, seq(8))
	fi, ok, err := ParseFragment(p)
	if err != nil || !ok || fi.FragHdrOff != 48 || fi.NhOff != 40 || fi.Offset != 8 || !fi.More || fi.ID != 5 {
		t.Fatalf("ParseFragment = %+v, %v, %v", fi, ok, err)
	}
	if _, _, err := ParseFragment(p[:44]); err == nil {
		t.Fatal("truncated experiment header accepted")
	}
	if _, ok, err := ParseFragment(v4frag(0, false, 1, seq(8))); ok || err != nil {
		t.Fatal("whole IPv4 datagram taken for a fragment")
	}
}
