// Package stopper stops a machine's leader: it chooses the signal that
// halts the leader's init, sends it through the leader's pidfd, and waits
// for the exit on that pidfd, escalating to SIGKILL if asked.
package stopper

import (
	"errors"
	"fmt"
	"time"

	"github.com/nspawn-tools/nspawn-tools/leader"
	"golang.org/x/sys/unix"
)

// Reporter receives one line per event; *cli.Messages is one.
type Reporter interface {
	Info(format string, args ...any)
	Warning(format string, args ...any)
}

// Options says how Stop signals and waits. The zero value chooses the
// signal and waits forever.
type Options struct {
	Signal    unix.Signal   // 0: Choose one
	Timeout   time.Duration // how long to wait for the exit; 0: no limit
	Kill      bool          // send SIGKILL when Timeout runs out
	KillAfter time.Duration // how long to wait after SIGKILL; 0: no limit
	Report    Reporter      // nil: no messages
}

// Outcome is how a stop ended.
type Outcome int

// The outcomes of Stop.
const (
	NotRunning Outcome = iota // the leader had exited before it was signalled
	Exited                    // the leader exited after the signal
	TimedOut                  // the leader was still running when the wait ran out
	Killed                    // the leader exited after SIGKILL
)

// Result is what Stop did.
type Result struct {
	Outcome Outcome
	Choice  *Choice       // nil when Options.Signal was given or the leader had exited
	Signal  unix.Signal   // the signal sent first, 0 if none
	Waited  time.Duration // from the first signal to the exit or to giving up
}

// Stop signals l and waits for it to exit. A leader that exits before the
// signal (a zombie, or ESRCH from the kernel) is NotRunning, not an error:
// a machine that stopped by itself is stopped.
func Stop(l *leader.Leader, opt Options) (*Result, error) {
	rep := opt.Report
	if rep == nil {
		rep = discard{}
	}
	began := time.Now()
	var deadline time.Time
	if opt.Timeout > 0 {
		deadline = began.Add(opt.Timeout)
	}
	res := &Result{Signal: opt.Signal}
	notRunning := func() (*Result, error) {
		rep.Info("pid %d had already exited", l.PID)
		res.Outcome = NotRunning
		return res, nil
	}
	if l.Exited() {
		return notRunning()
	}
	if res.Signal == 0 {
		c, err := Choose(l, deadline)
		if errors.Is(err, ErrExited) {
			return notRunning()
		}
		if err != nil {
			return nil, err
		}
		if c.Doubt != "" {
			rep.Warning("%s", c.Doubt)
		}
		res.Choice, res.Signal = c, c.Signal
	}
	if err := Send(l, res.Signal); errors.Is(err, ErrExited) {
		return notRunning()
	} else if err != nil {
		return nil, err
	}
	sent := time.Now()
	rep.Info("sent %s to pid %d (%s)", SignalName(res.Signal), l.PID, res.describe())
	exited, err := Wait(l, deadline)
	res.Waited = time.Since(sent)
	if err != nil {
		return nil, err
	}
	if exited {
		rep.Info("pid %d exited after %s", l.PID, ms(res.Waited))
		res.Outcome = Exited
		return res, nil
	}
	if !opt.Kill {
		rep.Info("pid %d still running: timed out after %s", l.PID, ms(time.Since(began)))
		res.Outcome = TimedOut
		return res, nil
	}
	if err := Send(l, unix.SIGKILL); err != nil && !errors.Is(err, ErrExited) {
		return nil, err
	}
	killed := time.Now()
	rep.Info("sent SIGKILL to pid %d, still running after %s", l.PID, ms(time.Since(began)))
	deadline = time.Time{}
	if opt.KillAfter > 0 {
		deadline = killed.Add(opt.KillAfter)
	}
	exited, err = Wait(l, deadline)
	res.Waited = time.Since(sent)
	if err != nil {
		return nil, err
	}
	if !exited {
		rep.Info("pid %d still running %s after SIGKILL: timed out", l.PID, ms(time.Since(killed)))
		res.Outcome = TimedOut
		return res, nil
	}
	rep.Info("pid %d exited %s after SIGKILL", l.PID, ms(time.Since(killed)))
	res.Outcome = Killed
	return res, nil
}

// describe says in a few words why Signal was sent.
func (r *Result) describe() string {
	switch {
	case r.Choice == nil:
		return "as asked"
	case r.Choice.Init != nil:
		return "init " + r.Choice.Init.Name + ": " + r.Choice.Reason
	}
	return r.Choice.Reason
}

// Send sends sig to l through its pidfd. It returns ErrExited if l has
// exited and been reaped. (On a zombie the kernel returns success.)
func Send(l *leader.Leader, sig unix.Signal) error {
	err := unix.PidfdSendSignal(l.PidFD(), sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("pid %d %w", l.PID, ErrExited)
	}
	if err != nil {
		return fmt.Errorf("send %s to pid %d: %w", SignalName(sig), l.PID, err)
	}
	return nil
}

// Wait waits on l's pidfd, in Go's netpoller (epoll), until l exits or
// deadline passes (a zero deadline: no limit), and reports whether it
// exited. The process sleeps while it waits: no CPU, no timer wake-ups.
func Wait(l *leader.Leader, deadline time.Time) (bool, error) {
	ok, err := l.Wait(deadline)
	if err != nil {
		return false, fmt.Errorf("wait for pid %d: %w", l.PID, err)
	}
	return ok, nil
}

// ms prints a duration for people: "0.4 ms", "12.3 ms", "2.01 s".
func ms(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

type discard struct{}

func (discard) Info(string, ...any)    {}
func (discard) Warning(string, ...any) {}
