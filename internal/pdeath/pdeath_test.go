package pdeath

import (
	"errors"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// endLockedThreads makes the runtime terminate n OS threads, as the
// namespace helpers do: a goroutine locks its thread and ends locked.
func endLockedThreads(n int) {
	for range n {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(done)
		}()
		<-done
	}
	time.Sleep(50 * time.Millisecond)
}

// TestChildOutlivesEndedThreads: a child started with Start survives
// the end of other locked threads, and dies with SIGKILL only when
// killed.
func TestChildOutlivesEndedThreads(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	done, err := Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	endLockedThreads(20)
	select {
	case err := <-done:
		t.Fatalf("child ended while other threads ended: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cmd.Process.Kill()
	if err := <-done; err == nil {
		t.Fatal("killed child reported success")
	}
}

// TestStartFromEndingThread: the goroutine that calls Start ends locked
// right after it, so the runtime ends its thread (found by a second
// route: TestLinuxGateway after TestLinuxGuestCharon lost every ping,
// then "control channel: connection reset by peer"). The child lives on.
// The main thread is never ended, so a call that lands there is retried.
func TestStartFromEndingThread(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	type res struct {
		done <-chan error
		err  error
	}
	started := make(chan res, 1)
	for {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			if syscall.Gettid() == syscall.Getpid() {
				runtime.UnlockOSThread()
				started <- res{err: errMainThread}
				return
			}
			done, err := Start(cmd)
			started <- res{done, err}
		}()
		r := <-started
		if r.err == errMainThread {
			continue
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		endLockedThreads(5)
		select {
		case err := <-r.done:
			t.Fatalf("child died when the thread that called Start ended: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		cmd.Process.Kill()
		<-r.done
		return
	}
}

var errMainThread = errors.New("on the main thread")

// TestPdeathsigFiresOnThreadExit shows the hazard Start avoids: a child
// forked on a locked thread that then ends is killed at once. (The
// runtime never ends the main thread, so a fork that lands there is
// tried again.)
func TestPdeathsigFiresOnThreadExit(t *testing.T) {
	for range 5 {
		cmd := exec.Command("sleep", "30")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		started := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // ends locked: the runtime ends the thread
			started <- cmd.Start()
		}()
		if err := <-started; err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- cmd.Wait() }()
		select {
		case <-errc:
			if ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signal() == syscall.SIGKILL {
				return
			}
		case <-time.After(time.Second):
			cmd.Process.Kill()
			<-errc
		}
	}
	t.Fatal("a child forked on an ended thread was never killed: Pdeathsig did not fire")
}
