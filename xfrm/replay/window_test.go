package replay

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

var sizes = []uint32{32, 64, 128, 1024, 4096, 65536}

// step is one received sequence number and whether the window must take it.
type step struct {
	seq uint64
	ok  bool
}

func run(t *testing.T, w *Window, steps []step) {
	t.Helper()
	for i, s := range steps {
		c := w.Check(s.seq)
		u := w.Update(s.seq)
		if c != s.ok || u != s.ok {
			t.Fatalf("step %d: seq %d: Check %v Update %v, want %v (top %d)", i, s.seq, c, u, s.ok, w.Top())
		}
	}
}

func TestWindow(t *testing.T) {
	for _, size := range sizes {
		W := uint64(size)
		cases := []struct {
			name  string
			steps []step
		}{
			{"in order", []step{{1, true}, {2, true}, {3, true}, {4, true}}},
			{"zero rejected", []step{{0, false}, {1, true}, {0, false}}},
			{"duplicate", []step{{1, true}, {1, false}, {2, true}, {1, false}, {2, false}}},
			{"out of order", []step{{5, true}, {3, true}, {4, true}, {1, true}, {2, true}, {3, false}}},
			{"window edge", []step{{W + 10, true}, {11, true}, {10, false}, {11, false}, {12, true}}},
			{"big jump", []step{{1, true}, {2, true}, {1000 * W, true}, {2, false}, {1000*W - W + 1, true}, {1000*W - W, false}, {1000*W - 1, true}, {1000*W - 1, false}}},
			{"jump clears stale bits", []step{{W, true}, {3 * W, true}, {2*W + 1, true}, {2 * W, false}, {2*W + 2, true}, {2*W + 2, false}, {2*W + 1, false}}},
			{"one block advance", []step{{64, true}, {128, true}, {129, true}, {127, true}, {127, false}, {192, true}, {191, true}, {128, false}, {130, 192-130 < W}}},
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("%d/%s", size, c.name), func(t *testing.T) {
				var w Window
				w.Init(size, false)
				run(t, &w, c.steps)
			})
		}
	}
}

func TestDisabled(t *testing.T) {
	var w Window
	w.Init(0, false)
	run(t, &w, []step{{0, true}, {5, true}, {5, true}, {1, true}})
	if w.Top() != 5 {
		t.Fatalf("Top = %d, want 5", w.Top())
	}
}

// TestInfer follows RFC 4303 Appendix A.2's two cases.
func TestInfer(t *testing.T) {
	const e32 = uint64(1) << 32
	cases := []struct {
		name  string
		size  uint32
		top   uint64 // accepted before inferring
		seqLo uint32
		want  uint64
	}{
		{"A: in epoch", 64, 1000, 999, 999},
		{"A: ahead", 64, 1000, 5000, 5000},
		{"A: left of window means next epoch", 64, 1000, 900, e32 + 900},
		{"A: wrap ahead", 64, e32 - 1, 3, e32 + 3},
		{"A: late packet before wrap", 64, e32 - 1, 0xfffffff0, 0xfffffff0},
		{"A: epoch 5", 128, 5*e32 + 10000, 9990, 5*e32 + 9990},
		{"B: just past wrap, late packet", 64, e32 + 3, 0xfffffffe, 0xfffffffe},
		{"B: just past wrap, new packet", 64, e32 + 3, 10, e32 + 10},
		{"B: far left stays in epoch", 64, e32 + 3, 0x80000000, e32 + 0x80000000},
		{"B: no epoch before the first", 64, 3, 0xfffffffe, 0xfffffffe},
		{"B: 65536 window, previous epoch", 65536, 3*e32 + 100, 0xffff1000, 2*e32 + 0xffff1000},
		{"B: 65536 window, left of window", 65536, 3*e32 + 100, 0xffff0000, 3*e32 + 0xffff0000},
		{"nothing received", 1024, 0, 1, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var w Window
			w.Init(c.size, true)
			if c.top != 0 && !w.Update(c.top) {
				t.Fatalf("Update(%#x) refused", c.top)
			}
			if got := w.Infer(c.seqLo); got != c.want {
				t.Fatalf("Infer(%#x) with top %#x = %#x, want %#x", c.seqLo, c.top, got, c.want)
			}
		})
	}
	var w Window
	w.Init(64, false)
	w.Update(e32 - 1)
	if got := w.Infer(3); got != 3 {
		t.Fatalf("without ESN Infer(3) = %d, want 3", got)
	}
}

// TestESNCrossing walks a stream over the 2^32 boundary with reordering,
// inferring every number from its low half as an SA would.
func TestESNCrossing(t *testing.T) {
	const e32 = uint64(1) << 32
	var w Window
	w.Init(64, true)
	seqs := []uint64{e32 - 5, e32 - 3, e32 - 1, e32, e32 + 1, e32 - 2, e32 - 4, e32 + 3, e32 + 2, e32 - 1}
	want := []bool{true, true, true, true, true, true, true, true, true, false}
	for i, s := range seqs {
		got := w.Infer(uint32(s))
		if got != s {
			t.Fatalf("%d: Infer(%#x) = %#x, want %#x", i, uint32(s), got, s)
		}
		if ok := w.Check(got) && w.Update(got); ok != want[i] {
			t.Fatalf("%d: seq %#x accepted %v, want %v", i, s, ok, want[i])
		}
	}
	// The full 64-bit zero is never valid, but low half zero after a wrap is.
	if w.Check(0) {
		t.Fatal("Check(0) accepted")
	}
}

// model is the obvious reference: a set of seen numbers and the top.
type model struct {
	size uint64
	top  uint64
	seen map[uint64]bool
}

func (m *model) accept(seq uint64) bool {
	if seq == 0 || m.seen[seq] || (seq <= m.top && m.top-seq >= m.size) {
		return false
	}
	m.seen[seq] = true
	m.top = max(m.top, seq)
	return true
}

func TestAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range append([]uint32{1, 2, 63, 65, 100}, sizes...) {
		for _, base := range []uint64{0, 1<<32 - 1000, 1 << 40} {
			var w Window
			w.Init(size, true)
			m := model{size: uint64(size), seen: map[uint64]bool{}}
			next := base
			for i := 0; i < 20000; i++ {
				var seq uint64
				switch r.IntN(10) {
				case 0: // replay of something recent
					seq = next - uint64(r.IntN(int(size)+10))
				case 1: // big jump
					next += uint64(r.IntN(4 * int(size)))
					seq = next
				case 2: // far in the past
					seq = next - uint64(r.IntN(3*int(size)+1))
				default:
					next += uint64(r.IntN(3))
					seq = next - uint64(r.IntN(int(size)/2+1))
				}
				if seq > next { // wrapped below zero
					seq = 0
				}
				want := m.accept(seq)
				c := w.Check(seq)
				u := w.Update(seq)
				if c != want || u != want {
					t.Fatalf("size %d step %d seq %d (top %d): Check %v Update %v, model %v", size, i, seq, w.Top(), c, u, want)
				}
				if w.Top() != m.top {
					t.Fatalf("size %d step %d: Top %d, model %d", size, i, w.Top(), m.top)
				}
			}
		}
	}
}

func BenchmarkCheckUpdate(b *testing.B) {
	for _, size := range []uint32{64, 128, 1024, 4096, 65536} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			var w Window
			w.Init(size, false)
			// Mostly in order with some reordering, like a real link: a
			// pattern of offsets replayed at ever higher bases.
			const n = 1024
			var offs [n]uint64
			for j := range offs {
				offs[j] = uint64(j)
			}
			r := rand.New(rand.NewPCG(3, 4))
			for j := 0; j < n/16; j++ {
				k := r.IntN(n - 4)
				offs[k], offs[k+3] = offs[k+3], offs[k]
			}
			b.ReportAllocs()
			base := uint64(1)
			for i := 0; i < b.N; i++ {
				j := i & (n - 1)
				if j == 0 && i > 0 {
					base += n
				}
				s := base + offs[j]
				if w.Check(s) {
					w.Update(s)
				}
			}
		})
	}
}
