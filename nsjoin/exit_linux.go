package nsjoin

import (
	"os"

	"golang.org/x/sys/unix"
)

// ExitLike ends this process the way the command ended, like util-linux
// nsenter: with its exit code, or by the same signal that killed it.
func ExitLike(ws unix.WaitStatus) {
	switch {
	case ws.Exited():
		os.Exit(ws.ExitStatus())
	case ws.Signaled():
		dieOf(ws.Signal())
		os.Exit(128 + int(ws.Signal())) // the signal's default action is not to die
	}
	os.Exit(1)
}
