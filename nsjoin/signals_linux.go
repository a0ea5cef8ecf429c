package nsjoin

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// Signals are signals caught for a command: from CatchSignals on, each of
// them sent to this process is kept, one byte in a pipe, instead of taking
// its default action; Start's waiting thread passes them on to the command
// (Options.Forward), those caught before it started included.
//
// On amd64 a handler of a few instructions (sigcatch_amd64.s), installed
// with rt_sigaction, writes the byte: catching costs one system call per
// signal. Elsewhere signal.Notify does it, which starts a thread and makes
// a round trip to it for each signal (≈ 0.7 ms on amd64 here).
type Signals struct {
	r, w     int           // the pipe, both ends non-blocking
	ready    chan struct{} // closed once the signals are caught
	replaced []replaced    // the runtime's handlers catchRaw replaced
}

var (
	catchMu  sync.Mutex
	catching bool
)

// ErrCaughtTwice: CatchSignals may be called once in a process.
var ErrCaughtTwice = errors.New("signals are caught already")

// Catchable are the signals CatchSignals takes: asynchronous ones that the
// Go runtime does not use itself (it needs SIGURG, SIGPROF, SIGPIPE and the
// synchronous ones) and that do not stop or continue the process.
var Catchable = []unix.Signal{unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2,
	unix.SIGTERM, unix.SIGALRM, unix.SIGWINCH, unix.SIGPWR}

// CatchSignals starts catching sigs, each one of Catchable. A signal the
// process ignores, as it inherited SIGINT or SIGHUP ignored (a background
// job, nohup), stays ignored, and so the command inherits it ignored too.
func CatchSignals(sigs ...unix.Signal) (*Signals, error) {
	catchMu.Lock()
	defer catchMu.Unlock()
	if catching {
		return nil, ErrCaughtTwice
	}
	for _, sig := range sigs {
		if !slices.Contains(Catchable, sig) {
			return nil, fmt.Errorf("catch signal %d: %w", sig, unix.EINVAL)
		}
	}
	s, err := newSignals()
	if err != nil {
		return nil, err
	}
	catching = true
	if haveSigCatch {
		if err := s.catchRaw(sigs); err != nil {
			return nil, err
		}
		close(s.ready)
		return s, nil
	}
	go s.catchNotify(sigs)
	return s, nil
}

// newSignals makes the pipe; nothing is caught yet.
func newSignals() (*Signals, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("catch signals: pipe: %w", err)
	}
	return &Signals{r: p[0], w: p[1], ready: make(chan struct{})}, nil
}

// catchNotify catches sigs with signal.Notify and writes each to the pipe.
func (s *Signals) catchNotify(sigs []unix.Signal) {
	ch := make(chan os.Signal, 8)
	for _, sig := range sigs {
		if !signal.Ignored(sig) {
			signal.Notify(ch, sig)
		}
	}
	close(s.ready)
	for sig := range ch {
		unix.Write(s.w, []byte{byte(sig.(unix.Signal))})
	}
}

// wait returns once the signals are caught.
func (s *Signals) wait() { <-s.ready }

// pending reads the signals caught and not yet read into buf.
func (s *Signals) pending(buf []byte) []unix.Signal {
	var out []unix.Signal
	for {
		n, err := unix.Read(s.r, buf)
		if err == unix.EINTR {
			continue
		}
		if n <= 0 {
			return out
		}
		for _, b := range buf[:n] {
			out = append(out, unix.Signal(b))
		}
	}
}

// forward passes the signals caught on to the process of pidfd until it
// has exited (it is then still to be waited for), or poll fails.
func (s *Signals) forward(pidfd int) {
	var buf [64]byte
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}, {Fd: int32(s.r), Events: unix.POLLIN}}
	for {
		if _, err := unix.Ppoll(fds, nil, nil); err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		if fds[1].Revents != 0 {
			for _, sig := range s.pending(buf[:]) {
				unix.PidfdSendSignal(pidfd, sig, nil, 0)
			}
		}
		if fds[0].Revents != 0 {
			return
		}
	}
}
