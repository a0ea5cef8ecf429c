// Command nspawn-stop stops a systemd-nspawn machine cleanly and waits
// until it has stopped: it sends the machine's init the signal that halts
// it (SIGRTMIN+4 to systemd, SIGUSR2 to busybox init, SIGPWR to runit,
// SIGTERM to s6-svscan and openrc-init), through a pidfd, and waits for
// the leader's exit on that pidfd.
//
//	nspawn-stop MACHINE [--signal auto|NAME|NUMBER] [--timeout 60] [--kill-after DURATION] [--dry-run]
//	nspawn-stop --pid PID [...]
//
// Exit status:
//
//	0    the leader exited, or the machine was not running at all
//	2    usage error: unknown flag, bad signal or duration, invalid machine name
//	124  timed out: the leader is still running
//	125  any other error (not root, machined's records unreadable, ...)
//	137  the leader ignored the signal and was killed with SIGKILL (--kill-after)
package main

//go:generate sh -c "go run . --man > nspawn-stop.1"

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/cli"
	"github.com/nspawn-tools/nspawn-tools/internal/kongcli"
	"github.com/nspawn-tools/nspawn-tools/leader"
	"github.com/nspawn-tools/nspawn-tools/stopper"
	"golang.org/x/sys/unix"
)

const prog = "nspawn-stop"

// Exit statuses, one table (see the package comment).
const (
	exitStopped  = 0
	exitTimedOut = 124
	exitError    = 125
	exitKilled   = 137
)

var doc = &cli.Doc{
	Name:    prog,
	Summary: "stop a systemd-nspawn machine cleanly and wait until it has stopped",
	Synopsis: []string{
		"MACHINE [--signal auto|NAME|NUMBER] [--timeout 60] [--kill-after DURATION] [--dry-run]",
		"--pid PID [flags]",
	},
	Description: `Stops a systemd-nspawn machine cleanly, and waits until it has stopped: sends
the machine's init the signal that halts it, through a pidfd, and waits for
the leader's exit on that pidfd, without polling.

The signal is chosen for the machine's init: SIGRTMIN+4 for systemd, SIGUSR2
for busybox init, SIGPWR for runit, SIGTERM for s6-svscan and openrc-init
(SIGTERM would re-execute systemd and reboot busybox init, and runit blocks
it); for another init, the first it takes of SIGRTMIN+4, SIGRTMIN+3, SIGPWR,
SIGTERM. A machine that is not running is no error: systemd runs ExecStop=
also after a machine has exited by itself.`,
	ExitStatus: []cli.Row{
		{Left: "0", Right: "the leader exited, or the machine was not running"},
		{Left: "124", Right: "timed out: the leader is still running"},
		{Left: "137", Right: "killed with SIGKILL after the timeout (--kill-after)"},
		{Left: "125", Right: "any other error (not root, unreadable records, ...)"},
		{Left: "2", Right: "usage error, including an invalid machine name"},
	},
	Examples: []cli.Row{
		{Left: "nspawn-stop web", Right: "Halt machine web with its init's own signal; wait up to 60 s."},
		{Left: "nspawn-stop web --timeout 2m --kill-after 15s", Right: "Wait 2 minutes, then SIGKILL the leader and wait up to 15 s more."},
		{Left: "nspawn-stop web --dry-run", Right: "Show the leader, its init and the signal that would be sent, and why."},
		{Left: "ExecStop=/usr/local/bin/nspawn-stop %i --timeout 60", Right: "In a drop-in for systemd-nspawn@.service."},
	},
	Notes: []cli.Section{{Title: "Output", Text: `One line on stderr per event: the signal sent, the exit and after how long,
a timeout. When stderr is the journal (JOURNAL_STREAM), each line carries its
priority as an sd-daemon prefix such as <6>.`}},
	SeeAlso: []string{"nspawn-enter(1)", "systemd-nspawn(1)", "machinectl(1)", "kill(1)"},
}

type cmdline struct {
	Machine   string        `arg:"" optional:"" help:"Name of the machine to stop."`
	PID       int           `name:"pid" placeholder:"PID" help:"Stop the process PID (a machine's leader) instead of a machine named."`
	Signal    signalFlag    `default:"auto" placeholder:"auto|NAME|NUMBER" help:"Signal to send: auto chooses by init; or a name or number (SIGPWR, PWR, RTMIN+4, 30)."`
	Timeout   durationFlag  `default:"60" placeholder:"SECONDS|DURATION" help:"How long to wait for the leader to exit: seconds or a duration (90s, 2m); 0 waits forever."`
	KillAfter *durationFlag `placeholder:"DURATION" help:"When the timeout runs out, send SIGKILL and wait up to DURATION for the exit (0: no limit). Off by default."`
	DryRun    bool          `help:"Print the leader, its init and the signal that would be sent, and why; send nothing."`
	StateDir  string        `hidden:"" help:"Read machine state files from this directory, not machined (for tests)."`
}

// validate checks what kong cannot; its errors are usage errors (exit 2).
func (c *cmdline) validate() error {
	switch {
	case c.Machine == "" && c.PID == 0:
		return errors.New("name a machine, or give --pid")
	case c.Machine != "" && c.PID != 0:
		return errors.New("name a machine or give --pid, not both")
	case c.PID < 0:
		return fmt.Errorf("--pid %d: not a process id", c.PID)
	case c.KillAfter != nil && c.Timeout == 0:
		return errors.New("--kill-after needs a --timeout: with 0 the wait never ends")
	}
	if c.Machine != "" {
		return leader.ValidateName(c.Machine)
	}
	return nil
}

// signalFlag is --signal: 0 for auto.
type signalFlag unix.Signal

func (s *signalFlag) UnmarshalText(b []byte) error {
	if string(b) == "auto" {
		*s = 0
		return nil
	}
	sig, err := stopper.ParseSignal(string(b))
	*s = signalFlag(sig)
	return err
}

// durationFlag is --timeout and --kill-after.
type durationFlag time.Duration

func (d *durationFlag) UnmarshalText(b []byte) error {
	v, err := stopper.ParseTimeout(string(b))
	*d = durationFlag(v)
	return err
}

func main() {
	var c cmdline
	kongcli.ParseDoc(doc, &c, os.Args[1:])
	msg := cli.New(prog)
	if err := c.validate(); err != nil {
		msg.Error("%v", err)
		msg.Hint("see '%s --help'", prog)
		os.Exit(cli.ExitUsage)
	}
	os.Exit(run(&c, msg))
}

func run(c *cmdline, msg *cli.Messages) int {
	l, err := find(c)
	var notRunning *leader.NotRunningError
	switch {
	case errors.As(err, &notRunning):
		running := ""
		if len(notRunning.Running) > 0 {
			running = "; running: " + strings.Join(notRunning.Running, ", ")
		}
		msg.Info("%v: nothing to stop%s", err, running)
		return exitStopped
	case errors.Is(err, leader.ErrNoProcess):
		msg.Info("%v: nothing to stop", err)
		return exitStopped
	case err != nil:
		return fail(msg, err)
	}
	defer l.Close()
	if c.DryRun {
		return dryRun(c, l, msg)
	}
	opt := stopper.Options{Signal: unix.Signal(c.Signal), Timeout: time.Duration(c.Timeout), Report: msg}
	if c.KillAfter != nil {
		opt.Kill, opt.KillAfter = true, time.Duration(*c.KillAfter)
	}
	res, err := stopper.Stop(l, opt)
	if err != nil {
		return fail(msg, err)
	}
	switch res.Outcome {
	case stopper.TimedOut:
		msg.Hint("the leader, pid %d, is still running; --kill-after DURATION ends it with SIGKILL after the timeout", l.PID)
		return exitTimedOut
	case stopper.Killed:
		return exitKilled
	}
	return exitStopped
}

// find resolves the target to a pinned leader.
func find(c *cmdline) (*leader.Leader, error) {
	if c.PID != 0 {
		return leader.Open(c.PID)
	}
	var opt *leader.Options
	if c.StateDir != "" {
		opt = &leader.Options{StateDir: c.StateDir, Varlink: "-"}
	}
	return leader.Find(c.Machine, opt)
}

// dryRun prints what a stop would do, on stdout, and sends nothing.
func dryRun(c *cmdline, l *leader.Leader, msg *cli.Messages) int {
	var deadline time.Time
	if c.Timeout > 0 {
		deadline = time.Now().Add(time.Duration(c.Timeout))
	}
	ch, err := stopper.Choose(l, deadline)
	if errors.Is(err, stopper.ErrExited) {
		msg.Info("%s has exited: nothing to stop", l)
		return exitStopped
	}
	if err != nil {
		return fail(msg, err)
	}
	init := "not recognised"
	if ch.Init != nil {
		init = ch.Init.Name
	}
	fmt.Printf("leader: %s\n", l)
	fmt.Printf("init: %s (comm %s, exe %s)\n", init, ch.Comm, orNone(ch.Exe))
	fmt.Printf("takes: %s\n", ch.Takes)
	if c.Signal != 0 {
		fmt.Printf("signal: %s (given with --signal; auto would send %s)\n", stopper.SignalName(unix.Signal(c.Signal)), stopper.SignalName(ch.Signal))
	} else {
		fmt.Printf("signal: %s (%s)\n", stopper.SignalName(ch.Signal), ch.Reason)
	}
	if ch.Doubt != "" {
		fmt.Printf("warning: %s\n", ch.Doubt)
	}
	return exitStopped
}

func orNone(s string) string {
	if s == "" {
		return "unreadable"
	}
	return s
}

// fail reports err as one error line, with a hint where one helps.
func fail(msg *cli.Messages, err error) int {
	msg.Error("%v", err)
	if cli.NotRoot(err) && os.Geteuid() != 0 {
		msg.Hint("stopping a machine needs root; run nspawn-stop as root")
	}
	return exitError
}
