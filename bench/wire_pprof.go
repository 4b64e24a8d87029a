package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// wirePprofAddr is where each daemon serves --pprof under --wire-pprof:
// the loopback of its own namespace, so every daemon can use the same.
const wirePprofAddr = "127.0.0.1:6060"

// wirePprofSeconds is how long each profile samples from the start of a
// TCP round.
const wirePprofSeconds = 3 * time.Second

// startProfiles starts fetching a CPU profile of each of c's daemons for
// round, into c.pprofDir as <id>-<A|B>-r<round>.pprof, and returns a
// function that waits for them. It does nothing for a contender without
// daemons or without --wire-pprof.
func (c *wireContender) startProfiles(round int) (wait func()) {
	if c.pprofDir == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	for i, ns := range c.pprofNS {
		file := filepath.Join(c.pprofDir, fmt.Sprintf("%s-%c-r%d.pprof", c.id, 'A'+i, round))
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", wirePprofAddr, int(wirePprofSeconds/time.Second))
		wg.Add(1)
		go func() {
			defer wg.Done()
			// curl runs in the daemon's namespace to reach its loopback.
			_ = exec.Command("ip", "netns", "exec", ns, "curl", "-sf", "-o", file, url).Run()
		}()
	}
	// Give the profiler its start before the transfer does.
	time.Sleep(50 * time.Millisecond)
	return wg.Wait
}
