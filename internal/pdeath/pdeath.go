// Package pdeath starts child processes that are killed when the Go
// process that started them dies, and only then.
//
// Linux's PR_SET_PDEATHSIG fires when the parent *thread* exits, not the
// parent process (prctl(2)). Go terminates an OS thread whose goroutine
// ends while locked to it (runtime.LockOSThread without Unlock), which
// is how every network-namespace helper of ours discards a thread that
// has entered another namespace. A child forked on a thread that some
// later helper locks and ends is therefore killed in the middle of a
// test: the Linux guest's qemu died this way, intermittently, as a TCP
// timeout followed by "control channel: EOF". Start forks on a thread
// that is locked for the child's whole life, so the signal comes only
// when the process itself goes.
package pdeath

import (
	"os/exec"
	"runtime"
	"syscall"
)

// Start starts cmd with Pdeathsig SIGKILL (keeping any other SysProcAttr
// settings) from an OS thread that stays alive until cmd exits, and waits
// for it there. The returned channel receives cmd.Wait's result once; the
// caller must not call cmd.Wait itself.
func Start(cmd *exec.Cmd) (<-chan error, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}
