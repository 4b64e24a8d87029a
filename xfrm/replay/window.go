// Package replay implements the ESP/AH anti-replay window (RFC 4303 §3.4.3)
// without bit shifting, as RFC 6479 describes, over 64-bit extended
// sequence numbers (RFC 4303 Appendix A).
package replay

import "math/bits"

// Window is an RFC 6479 anti-replay window over 64-bit sequence numbers.
// Not safe for concurrent use: the SA holds a lock around it.
//
// The bitmap is a ring of 64-bit blocks, a power of two of them so that a
// sequence number finds its block with a mask, with at least one block
// more than the window needs: the block holding the top sequence number is
// only partly inside the window, and the spare keeps the oldest in-window
// block from sharing its slot. Advancing the top clears whole blocks;
// nothing is ever shifted, so a check or update is O(1) for any window
// size (memory: the window in bits rounded up to a power of two, at most
// twice size/8 bytes).
type Window struct {
	size uint32
	esn  bool
	top  uint64
	// mask is len(ring)-1; ring is the bitmap of seen sequence numbers:
	// bit s%64 of block (s/64)&mask stands for s.
	mask uint64
	ring []uint64
}

// Init sizes the window (0 disables checking).
//
// A disabled window accepts every sequence number, zero and replays
// included, as Linux does with replay_window 0; it still tracks Top.
// Init resets all state.
func (w *Window) Init(size uint32, esn bool) {
	*w = Window{size: size, esn: esn}
	if size == 0 {
		return
	}
	blocks := (uint64(size)+63)/64 + 1
	n := uint64(1) << bits.Len64(blocks-1) // next power of two >= blocks
	w.ring = make([]uint64, n)
	w.mask = n - 1
}

// Size is the window size given to Init.
func (w *Window) Size() uint32 { return w.size }

// Infer returns the full 64-bit sequence number for the low 32 bits
// received (RFC 4303 Appendix A for ESN; the low bits themselves otherwise).
//
// With ESN the high half is guessed from the window's position (A.2): a
// number at or right of the window's bottom is in the top's epoch, one
// left of it in the next epoch (case A); when the window straddles a
// 2^32 boundary (case B), numbers in the straddling part belong to the
// previous epoch. The ICV check then proves or refutes the guess. A
// disabled window infers with a window of 2^31, half the space.
func (w *Window) Infer(seqLo uint32) uint64 {
	if !w.esn {
		return uint64(seqLo)
	}
	win := w.size
	if win == 0 {
		win = 1 << 31
	}
	th := uint32(w.top >> 32)
	tl := uint32(w.top)
	bottom := tl - win + 1 // mod 2^32
	var sh uint32
	if tl >= win-1 {
		// Case A: the window [bottom, tl] lies within one epoch.
		sh = th
		if seqLo < bottom {
			sh = th + 1
		}
	} else {
		// Case B: the window wraps into the previous epoch.
		sh = th
		if seqLo >= bottom && th > 0 {
			// There is no epoch before the first: at Th = 0 such a
			// number is taken as a jump ahead, not as Th - 1.
			sh = th - 1
		}
	}
	return uint64(sh)<<32 | uint64(seqLo)
}

// Check reports whether seq may be accepted (not seen, not left of window,
// not zero). It does not change the window.
func (w *Window) Check(seq uint64) bool {
	if w.size == 0 {
		return true
	}
	if seq == 0 {
		return false
	}
	if seq > w.top {
		return true
	}
	if w.top-seq >= uint64(w.size) {
		return false
	}
	return w.ring[(seq>>6)&w.mask]&(1<<(seq&63)) == 0
}

// Update marks seq seen after the ICV verified; false if it was a replay.
// It repeats Check's tests because the caller may drop the SA lock while
// it verifies the ICV, letting another copy of seq in meanwhile.
func (w *Window) Update(seq uint64) bool {
	if w.size == 0 {
		w.top = max(w.top, seq)
		return true
	}
	if seq == 0 {
		return false
	}
	if seq > w.top {
		w.advance(seq)
	} else if w.top-seq >= uint64(w.size) {
		return false
	}
	blk := &w.ring[(seq>>6)&w.mask]
	bit := uint64(1) << (seq & 63)
	if *blk&bit != 0 {
		return false
	}
	*blk |= bit
	return true
}

// advance moves the top to seq, clearing the blocks that newly enter the
// ring (all of them after a jump larger than the ring).
func (w *Window) advance(seq uint64) {
	from := w.top >> 6
	to := seq >> 6
	if to-from > w.mask {
		clear(w.ring)
	} else {
		for b := from + 1; b <= to; b++ {
			w.ring[b&w.mask] = 0
		}
	}
	w.top = seq
}

// Top is the highest sequence number accepted.
func (w *Window) Top() uint64 { return w.top }
