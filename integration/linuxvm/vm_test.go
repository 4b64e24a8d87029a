package linuxvm

import (
	"errors"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestStartPinnedSurvivesThreadExit: qemu runs with Pdeathsig SIGKILL
// (it must not outlive a crashed test), and Linux sends that signal when
// the *thread* that forked the child exits, not the process (prctl(2)).
// Go ends an OS thread when a goroutine that locked it returns: the
// namespace helpers of the tests do that (LockOSThread, Setns, return).
// When qemu had been forked on a thread that later served such a
// goroutine, the guest died in the middle of a test (TestLinuxGateway
// after TestLinuxGuestCharon: "control channel: connection reset by
// peer", every ping lost). Here the caller's thread is made to exit right
// after the start, as it would be: the child must live on.
func TestStartPinnedSurvivesThreadExit(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited := make(chan error, 1)
	started := make(chan error, 1)
	// The starting goroutine runs on a thread of its own that ends with
	// it. Go never ends the main thread (it parks a locked goroutine's
	// main thread instead), so that one is not taken.
	for {
		go func() {
			runtime.LockOSThread() // never unlocked: this thread ends with the goroutine
			if syscall.Gettid() == syscall.Getpid() {
				runtime.UnlockOSThread()
				started <- errMainThread
				return
			}
			started <- startPinned(cmd, func(err error) { exited <- err })
		}()
		if err := <-started; err != errMainThread {
			if err != nil {
				t.Skipf("cannot run sleep: %v", err)
			}
			break
		}
	}
	defer cmd.Process.Kill()
	select {
	case err := <-exited:
		t.Fatalf("the child died when the thread that started it exited: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("exited was not called after the child was killed")
	}
}

var errMainThread = errors.New("on the main thread")
