// Command nspawn-enter runs a shell or a command inside a running
// systemd-nspawn machine: in all the namespaces of its leader process, in
// its root directory, with the exit status of the command.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path"
	"reflect"
	"runtime"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/nspawn-tools/nspawn-tools/internal/cli"
	"github.com/nspawn-tools/nspawn-tools/leader"
	"github.com/nspawn-tools/nspawn-tools/nsjoin"
	"golang.org/x/sys/unix"
)

const prog = "nspawn-enter"

const description = `Run a login shell, or CMD, inside a running systemd-nspawn machine: in every
namespace of its leader (user, cgroup, ipc, uts, network, pid, mount, time)
that differs from the caller's, in its root directory, starting in "/".
Entering a user namespace runs the command as root (uid 0, gid 0) of that
namespace, with no supplementary groups.

Usage: nspawn-enter MACHINE [flags] [-- CMD [ARGS...]]
       nspawn-enter --pid PID [flags] [-- CMD [ARGS...]]

Exit status: that of CMD; if CMD is killed by a signal, nspawn-enter dies of
the same signal. 127 CMD not found, 126 CMD not executable, 125 nspawn-enter
itself failed (machine not running, not root, ...), 2 usage error.`

// ExitFailure is the exit status when nspawn-enter itself fails.
const ExitFailure = 125

// grammar is the fixed part of the command line; the --no-<namespace>
// options come from nsjoin.Namespaces (see keepOptions).
type grammar struct {
	Machine string `arg:"" optional:"" help:"Name of the running machine, as registered with systemd-machined."`
	PID     int    `name:"pid" placeholder:"PID" help:"Enter the namespaces of process PID instead of a machine's leader."`
}

// keepOptions builds a struct type with one bool field per namespace kind,
// tagged for kong as --no-<option>.
func keepOptions() reflect.Value {
	fields := make([]reflect.StructField, len(nsjoin.Namespaces))
	for i, ns := range nsjoin.Namespaces {
		fields[i] = reflect.StructField{
			Name: "No" + strings.ToUpper(ns.Option[:1]) + ns.Option[1:],
			Type: reflect.TypeOf(false),
			Tag:  reflect.StructTag(fmt.Sprintf(`name:"no-%s" help:%q`, ns.Option, ns.Help)),
		}
	}
	return reflect.New(reflect.StructOf(fields))
}

func init() {
	// The startup thread stays with main. /proc/self follows it, and the
	// joining thread (which ends in the machine's namespaces) must never be it.
	runtime.LockOSThread()
}

func main() {
	msg := cli.New(prog)
	// While this process holds host descriptors, nothing in the machine may
	// ptrace it or read its memory.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		msg.Error("make the process non-dumpable: %v", err)
		os.Exit(ExitFailure)
	}
	args, command := splitCommand(os.Args[1:])
	var g grammar
	keep := keepOptions()
	cli.Parse(prog, description, &g, args, kong.Embed(keep.Interface()))
	if (g.Machine == "") == (g.PID == 0) {
		msg.Error("name a machine or give --pid PID (one of them)")
		msg.Hint("see '%s --help'", prog)
		os.Exit(cli.ExitUsage)
	}
	var keepSet nsjoin.Set
	for i, ns := range nsjoin.Namespaces {
		if keep.Elem().Field(i).Bool() {
			keepSet |= nsjoin.Set(ns.Clone)
		}
	}
	fail(msg, run(g, keepSet, command))
}

// splitCommand cuts the command line at the first "--": what follows is
// the command to run inside, never parsed as options.
func splitCommand(args []string) (opts, command []string) {
	for i, a := range args {
		if a == "--" {
			return args[:i], args[i+1:]
		}
	}
	return args, nil
}

func run(g grammar, keep nsjoin.Set, command []string) error {
	var l *leader.Leader
	var err error
	if g.PID != 0 {
		l, err = leader.Open(g.PID)
	} else {
		l, err = leader.Find(g.Machine, nil)
	}
	if err != nil {
		return err
	}
	plan, err := nsjoin.NewPlan(l.Dir(), keep)
	if err != nil {
		return fmt.Errorf("%s: %w", l, err)
	}
	prepare := func() (*nsjoin.Command, error) {
		c := &nsjoin.Command{Args: command, Env: os.Environ()}
		if len(command) == 0 {
			shell := nsjoin.LoginShell("/etc/passwd", 0)
			c.Args, c.Argv0 = []string{shell}, "-"+path.Base(shell)
		}
		return c, nil
	}
	// Taken before the start so that none is lost; forwarded once it runs.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
	p, err := nsjoin.Start(l, plan, prepare)
	l.Close()
	if err != nil {
		return err
	}
	go func() {
		for s := range sigs {
			p.Signal(s.(unix.Signal))
		}
	}()
	ws, err := p.Wait()
	if err != nil {
		return fmt.Errorf("wait for the command: %w", err)
	}
	signal.Stop(sigs)
	nsjoin.ExitLike(ws)
	return nil
}

// fail reports err, if any, and exits with the status it calls for.
func fail(msg *cli.Messages, err error) {
	if err == nil {
		return
	}
	var execErr *nsjoin.ExecError
	var notRunning *leader.NotRunningError
	switch {
	case errors.As(err, &execErr):
		msg.Error("%v", err)
		os.Exit(execErr.Code())
	case errors.Is(err, leader.ErrInvalidName):
		msg.Error("%v", err)
		msg.Hint("machine names have 1 to 64 characters of A-Z a-z 0-9 . - ; see '%s --help'", prog)
		os.Exit(cli.ExitUsage)
	case errors.As(err, &notRunning):
		msg.Error("%v", err)
		if len(notRunning.Running) == 0 {
			msg.Hint("no machines are running")
		} else {
			msg.Hint("running machines: %s", strings.Join(notRunning.Running, " "))
		}
	case errors.Is(err, leader.ErrNoProcess):
		msg.Error("%v", err)
	default:
		msg.Error("%v", err)
		if cli.NotRoot(err) && os.Geteuid() != 0 {
			msg.Hint("%s must run as root", prog)
		} else if cli.NotRoot(err) {
			msg.Hint("%s needs CAP_SYS_ADMIN, CAP_SYS_CHROOT and CAP_SYS_PTRACE", prog)
		}
	}
	os.Exit(ExitFailure)
}
