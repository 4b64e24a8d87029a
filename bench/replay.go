package main

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/ipsecstack/ipsecstack/xfrm/replay"
)

// replaySizes are the window sizes of the replay suite: 64 to 4096 and
// beyond.
var replaySizes = []uint32{64, 128, 256, 512, 1024, 2048, 4096, 16384, 65536, 1 << 20}

const replayOps = 1024

// replayBench returns the two workloads for a window of size: in-order
// check+update (every packet moves the window), and check+update of
// packets reordered within the window (random distance behind the top,
// replays included).
func replayBench(size uint32) (inOrder, reordered func()) {
	var w1, w2 replay.Window
	w1.Init(size, true)
	w2.Init(size, true)
	var seq uint64
	inOrder = func() {
		for i := 0; i < replayOps; i++ {
			seq++
			if w1.Check(seq) {
				w1.Update(seq)
			}
		}
	}
	rng := rand.New(rand.NewPCG(uint64(size), 1))
	dist := make([]uint64, replayOps)
	for i := range dist {
		dist[i] = rng.Uint64N(uint64(size))
	}
	top := uint64(size) * 4
	w2.Update(top)
	reordered = func() {
		// Move the top by a block per call so the window keeps
		// having unseen numbers, then test numbers behind it.
		top += 64
		w2.Update(top)
		for _, d := range dist {
			s := top - d
			if w2.Check(s) {
				w2.Update(s)
			}
		}
	}
	return inOrder, reordered
}

func runReplay(o opts, r *Results) error {
	budget := 150 * time.Millisecond
	if o.quick {
		budget = 40 * time.Millisecond
	}
	for _, size := range replaySizes {
		a1, a2 := replayBench(size)
		b1, b2 := replayBench(64)
		for _, m := range []struct {
			name string
			a, b func()
		}{{"in-order check+update", a1, b1}, {"reordered check+update", a2, b2}} {
			ea, eb := interleave(budget, m.a, m.b)
			ea /= replayOps
			eb /= replayOps
			note := "target < 5 ns: met"
			if ea >= 5 {
				note = "target < 5 ns: missed"
			}
			r.time("replay", fmt.Sprintf("window %d", size), m.name, "ns", ea, eb, "window 64", note)
		}
	}
	return nil
}
