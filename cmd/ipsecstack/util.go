package main

import (
	"context"
	"sort"
	"time"
)

func sortStrings(s []string) { sort.Strings(s) }

// every calls f each period until ctx ends.
func every(ctx context.Context, period time.Duration, f func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}
