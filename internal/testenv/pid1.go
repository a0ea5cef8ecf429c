package testenv

import (
	"os/exec"
	"syscall"
	"testing"
)

// StartPID1 starts argv as PID 1 of a new PID namespace, a child of the
// test, and kills and reaps it when the test ends. It also gets a private
// mount namespace: whatever runs as PID 1 there cannot mount over the
// host's /run or /dev (a systemd started by mistake would).
func StartPID1(t testing.TB, argv ...string) *exec.Cmd {
	t.Helper()
	RequireRoot(t)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Unshareflags: syscall.CLONE_NEWNS}
	if err := cmd.Start(); err != nil {
		Unavailable(t, "start %s in a new PID namespace: %v", argv[0], err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}
