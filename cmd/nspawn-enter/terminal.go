package main

import (
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/nspawn-tools/nspawn-tools/nsjoin"
	"golang.org/x/sys/unix"
)

// isTerminal reports whether fd is a terminal.
func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// session relays between the caller's terminal (or plain descriptors) and
// a pseudo-terminal of the machine.
type session struct {
	pty     *nsjoin.PTY
	saved   *unix.Termios // the caller's terminal modes, restored at the end; nil if not changed
	winch   chan os.Signal
	outDone chan struct{}
}

// startSession copies the caller's window size to the pty, puts the
// caller's terminal (if stdin is one) in raw mode so that every key, ^C
// included, reaches the command, and starts relaying both ways.
func startSession(pty *nsjoin.PTY) (*session, error) {
	s := &session{pty: pty, winch: make(chan os.Signal, 1), outDone: make(chan struct{})}
	s.resize()
	signal.Notify(s.winch, unix.SIGWINCH)
	go func() {
		for range s.winch {
			s.resize()
		}
	}()
	if t, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		raw := *t
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Oflag &^= unix.OPOST
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(0, unix.TCSETSW, &raw); err != nil {
			return nil, err
		}
		s.saved = t
	}
	go func() {
		io.Copy(pty.Master, os.Stdin)
	}()
	go func() {
		io.Copy(os.Stdout, pty.Master) // ends with EIO once no process holds the pty
		close(s.outDone)
	}()
	return s, nil
}

// resize gives the pty the window size of the caller's terminal.
func (s *session) resize() {
	for _, fd := range []int{0, 1, 2} {
		if ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); err == nil {
			unix.IoctlSetWinsize(int(s.pty.Master.Fd()), unix.TIOCSWINSZ, ws)
			return
		}
	}
}

// finish, once the command has exited, passes on what it wrote last, for
// at most a moment (a background process may keep the pty open forever),
// and restores the caller's terminal.
func (s *session) finish() {
	s.pty.Master.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	<-s.outDone
	s.restore()
}

// restore puts the caller's terminal back as it was.
func (s *session) restore() {
	signal.Stop(s.winch)
	if s.saved != nil {
		unix.IoctlSetTermios(0, unix.TCSETSW, s.saved)
		s.saved = nil
	}
}
