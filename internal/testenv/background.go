package testenv

import (
	"bufio"
	"os/exec"
	"testing"
	"time"
)

// StartReady starts cmd in the background and waits until it prints the
// line "ready" on stdout; the test ends it (SIGKILL) if it still runs.
func StartReady(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("%s printed %q, not ready", cmd, line)
	}
}

// WaitEnd waits for cmd (started by StartReady) to end, and fails the test
// if it still runs after limit.
func WaitEnd(t testing.TB, cmd *exec.Cmd, limit time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("%s still runs after %v", cmd, limit)
	}
}
