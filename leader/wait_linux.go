package leader

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// WaitPidfd waits until the process behind pidfd has exited (the pidfd
// becomes readable) or deadline passes (zero: no deadline), and reports
// whether it exited. The wait parks the goroutine in Go's netpoller, so
// the whole process sleeps in epoll_wait: no CPU, no timer wake-ups
// (a blocking poll(2) would keep the runtime's sysmon waking every 10 ms).
func WaitPidfd(pidfd int, deadline time.Time) (bool, error) {
	fd, err := unix.FcntlInt(uintptr(pidfd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return false, fmt.Errorf("dup pidfd: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return false, fmt.Errorf("pidfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	if err := f.SetReadDeadline(deadline); err != nil {
		return false, fmt.Errorf("pidfd: %w", err) // not in the netpoller
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	err = rc.Read(func(fd uintptr) bool { return exited(int(fd)) })
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("wait on pidfd: %w", err)
	}
	return true, nil
}

// exited polls pidfd without blocking: readable means the process exited.
func exited(pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// Wait waits until the leader has exited or deadline passes (zero: no
// deadline), and reports whether it exited.
func (l *Leader) Wait(deadline time.Time) (bool, error) {
	return WaitPidfd(l.pidfd, deadline)
}
