package main

import (
	"os"
	"os/signal"
	"sync/atomic"
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
	exited  atomic.Bool // the command has exited: reads of the pty get deadlines
}

// After the command has exited, output is passed on until the pty has been
// quiet for drainIdle (a slow caller terminal loses nothing), but for no
// longer than drainMax in all (a background process may keep the pty open
// and writing forever).
const (
	drainIdle = 250 * time.Millisecond
	drainMax  = 5 * time.Second
)

// startSession copies the caller's window size to the pty, puts the
// caller's terminal (if stdin is one) in raw mode so that every key, ^C
// included, reaches the command, and starts relaying both ways.
func startSession(pty *nsjoin.PTY) (*session, error) {
	s := &session{pty: pty, winch: make(chan os.Signal, 1), outDone: make(chan struct{})}
	// Notified first, then resized: no change of size falls between.
	signal.Notify(s.winch, unix.SIGWINCH)
	copyWindowSize(s.pty)
	go func() {
		for range s.winch {
			copyWindowSize(s.pty)
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
	go s.input()
	go s.output()
	return s, nil
}

// input copies the caller's input to the pty. At its end (stdin from a
// pipe or file) the pty's end-of-file character is typed, twice after a
// partial line, so that the command reads end-of-file too.
func (s *session) input() {
	buf := make([]byte, 32<<10)
	last := byte('\n')
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			if _, werr := s.pty.Master.Write(buf[:n]); werr != nil {
				return
			}
			last = buf[n-1]
		}
		if err != nil {
			break
		}
	}
	eof := byte(4) // ^D
	if t, err := unix.IoctlGetTermios(int(s.pty.Master.Fd()), unix.TCGETS); err == nil {
		eof = t.Cc[unix.VEOF]
	}
	if last != '\n' {
		s.pty.Master.Write([]byte{eof})
	}
	s.pty.Master.Write([]byte{eof})
}

// output copies what the command writes to the caller's stdout until the
// pty is hung up (EIO once no process holds it) or, after the command has
// exited, stays quiet for drainIdle.
func (s *session) output() {
	defer close(s.outDone)
	buf := make([]byte, 32<<10)
	for {
		if s.exited.Load() {
			s.pty.Master.SetReadDeadline(time.Now().Add(drainIdle))
		}
		n, err := s.pty.Master.Read(buf)
		if n > 0 {
			if _, werr := os.Stdout.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// copyWindowSize gives pty the window size of the caller's terminal. It is
// first called before the command starts, which may ask for the size at
// once.
func copyWindowSize(pty *nsjoin.PTY) {
	for _, fd := range []int{0, 1, 2} {
		if ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); err == nil {
			unix.IoctlSetWinsize(int(pty.Master.Fd()), unix.TIOCSWINSZ, ws)
			return
		}
	}
}

// finish, once the command has exited, waits for the last of its output
// (see drainIdle, drainMax) and restores the caller's terminal.
func (s *session) finish() {
	s.exited.Store(true)
	s.pty.Master.SetReadDeadline(time.Now().Add(drainIdle)) // wakes a read that had none
	select {
	case <-s.outDone:
	case <-time.After(drainMax):
		s.pty.Master.SetReadDeadline(time.Now())
		<-s.outDone
	}
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
