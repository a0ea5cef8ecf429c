// Command nspawn-enter runs a shell or a command inside a running
// systemd-nspawn machine: in all the namespaces of its leader process, in
// its root directory, with the exit status of the command.
package main

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/nspawn-tools/nspawn-tools/internal/cli"
	"github.com/nspawn-tools/nspawn-tools/leader"
	"github.com/nspawn-tools/nspawn-tools/nsjoin"
	"golang.org/x/sys/unix"
)

const prog = "nspawn-enter"

var doc = &cli.Doc{
	Name:    prog,
	Summary: "run a shell or a command inside a running systemd-nspawn machine",
	Synopsis: []string{
		"MACHINE [flags] [-- CMD [ARGS...]]",
		"--pid PID [flags] [-- CMD [ARGS...]]",
	},
	Description: `Runs a login shell, or CMD, inside a running systemd-nspawn machine: in every
namespace of its leader (user, cgroup, ipc, uts, network, pid, mount, time)
that differs from the caller's, in its root directory, in the leader's
cgroup, as root of its user namespace (or --user), with a clean login
environment, and on a terminal of the machine's own when run on a terminal.

The leader is found through systemd-machined (its varlink socket, else the
state file /run/systemd/machines/MACHINE) and pinned with a pidfd checked
against machined's record, so a stale record or a reused PID is reported as
"not running", never entered. Everything after -- is the command, looked up
in PATH inside the machine; without it, the user's login shell starts.`,
	ExitStatus: []cli.Row{
		{Left: "N", Right: "the command exited with N"},
		{Left: "128+S", Right: "the command was killed by signal S: nspawn-enter kills itself with S"},
		{Left: "127", Right: "the command was not found in the machine"},
		{Left: "126", Right: "the command was found but could not be executed"},
		{Left: "125", Right: "nspawn-enter itself failed (machine not running, not root, ...)"},
		{Left: "2", Right: "usage error, including an invalid machine name"},
	},
	Examples: []cli.Row{
		{Left: "nspawn-enter web", Right: "A login shell as root inside the machine web."},
		{Left: "nspawn-enter web -- sv status /etc/service/*", Right: "Run a command inside; its exit status is nspawn-enter's."},
		{Left: "nspawn-enter web --user alice --wd /srv", Right: "A login shell as alice (from the machine's /etc/passwd) in /srv."},
		{Left: "nspawn-enter web --no-network -- ip addr", Right: "Everything of the machine but its network: the host's interfaces."},
		{Left: "nspawn-enter --pid 4242 -- cat /etc/os-release", Right: "Enter the namespaces of any process."},
		{Left: "nspawn-enter --list --json", Right: "The running machines, for scripts."},
	},
	Notes: []cli.Section{{Title: "Signals", Text: `SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to nspawn-enter
are passed on to the command. If nspawn-enter is killed by a signal it
cannot pass on (SIGKILL), the kernel kills the command with SIGKILL too:
it is never left running in the machine without nspawn-enter. A
set-user-ID command clears this, as the kernel does for every such program.
SIGINT or SIGHUP ignored when nspawn-enter starts (nohup, a background job
of a script) stay ignored, and the command inherits them ignored.`}, {Title: "Security", Text: `nspawn-enter is a tool for root. It must never be installed setuid: it
opens files of the host for the machine and joins namespaces. While it
holds host descriptors it is not dumpable; the command gets only
descriptors 0, 1 and 2. Files of the machine (/etc/passwd, /etc/group,
/dev/pts/ptmx) are resolved inside its root directory, so a symlink in the
machine never leads to a host file.`}},
	SeeAlso: []string{"nspawn-stop(1)", "systemd-nspawn(1)", "machinectl(1)", "nsenter(1)"},
}

// ExitFailure is the exit status when nspawn-enter itself fails.
const ExitFailure = 125

// grammar is the fixed part of the command line; the --no-<namespace>
// options come from nsjoin.Namespaces (see keepOptions in args_test.go,
// which adds them for kong).
type grammar struct {
	Machine string `arg:"" optional:"" help:"Name of the running machine, as registered with systemd-machined."`
	PID     *int   `name:"pid" placeholder:"PID" help:"Enter the namespaces of process PID instead of a machine's leader."`

	User string `short:"u" placeholder:"USER[:GROUP]" help:"Run as USER, a name or number from the machine's /etc/passwd, with its groups from the machine's /etc/group (only GROUP if given). Default: root (uid 0)."`
	WD   string `name:"wd" placeholder:"DIR" help:"Working directory inside the machine. Default: the user's home if it exists, else / (with --no-mount: the caller's working directory)."`

	KeepEnv   bool     `name:"keep-env" xor:"env" help:"Pass the caller's environment unchanged (what nsenter does) instead of a clean login environment."`
	LeaderEnv bool     `name:"leader-env" xor:"env" help:"Start from the leader's environment (/proc/PID/environ) instead of a clean login environment."`
	Setenv    []string `name:"setenv" sep:"none" placeholder:"KEY=VALUE" help:"Set an environment variable, after the rest (repeatable)."`

	PTY        bool `name:"pty" xor:"pty" help:"Give the command a terminal of the machine's own even when stdin or stdout is not a terminal."`
	NoPTY      bool `name:"no-pty" xor:"pty" help:"Keep the caller's descriptors even on a terminal (the command then shares the caller's terminal)."`
	KeepCgroup bool `name:"keep-cgroup" help:"Keep the command in the caller's cgroup instead of the leader's (it then outlives the machine's unit)."`
}

func main() {
	msg := cli.New(prog)
	// While this process holds host descriptors, nothing in the machine may
	// ptrace it or read its memory.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		msg.Error("make the process non-dumpable: %v", err)
		os.Exit(ExitFailure)
	}
	// Signals to pass on to the command are caught from the start: until
	// then the runtime drops SIGUSR1 and SIGUSR2, dumps its goroutines on
	// SIGQUIT, and dies of SIGTERM, SIGINT and SIGHUP.
	sigs, err := nsjoin.CatchSignals(forwarded...)
	if err != nil {
		msg.Error("%v", err)
		os.Exit(ExitFailure)
	}
	args, command := splitCommand(os.Args[1:])
	g, keep := parseArgs(args)
	if g.PID != nil && *g.PID < 1 {
		msg.Error("--pid wants a process ID (a positive number)")
		msg.Hint("see '%s --help'", prog)
		os.Exit(cli.ExitUsage)
	}
	if (g.Machine == "") == (g.PID == nil) {
		msg.Error("name a machine or give --pid PID (one of them)")
		msg.Hint("see '%s --help'", prog)
		os.Exit(cli.ExitUsage)
	}
	fail(msg, run(g, keep, command, sigs))
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

// forwarded are the signals passed on to the command.
var forwarded = []unix.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

func run(g grammar, keep nsjoin.Set, command []string, sigs *nsjoin.Signals) error {
	env, err := checkSetenv(g.Setenv)
	if err != nil {
		return err
	}
	var l *leader.Leader
	if g.PID != nil {
		l, err = leader.Open(*g.PID)
	} else {
		l, err = leader.Find(g.Machine, nil)
	}
	if err != nil {
		return err
	}
	plan, err := nsjoin.NewPlan(l.Dir(), keep)
	if err != nil {
		l.Close()
		return fmt.Errorf("%s: %w", l, err)
	}
	var base []string
	switch {
	case g.KeepEnv:
		base = os.Environ()
	case g.LeaderEnv:
		data, err := l.ReadProc("environ")
		if err != nil {
			l.Close()
			return err
		}
		base = strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	}
	usePTY := g.PTY || !g.NoPTY && isTerminal(0) && isTerminal(1)
	mounted := !plan.Kept.Has(mountNamespace)
	var pty *nsjoin.PTY
	prepare := func(m *nsjoin.Machine) (*nsjoin.Command, error) {
		c := &nsjoin.Command{Args: command}
		var u nsjoin.User
		var err error
		if g.User != "" {
			if u, err = m.LookupUser(g.User); err != nil {
				return nil, err
			}
			c.Creds = &nsjoin.Creds{UID: u.UID, GID: u.GID, Groups: u.Groups}
		} else {
			// Root's home and shell only: its groups are not read, as
			// the command runs with the credentials nsjoin gives it.
			if u.Account, err = m.LookupAccount("0"); err != nil {
				return nil, err
			}
		}
		if len(command) == 0 {
			c.Args, c.Argv0 = []string{u.Shell}, "-"+path.Base(u.Shell)
		}
		switch {
		case g.WD != "":
			c.Dir = g.WD
		case mounted && m.IsDir(u.Home):
			c.Dir = u.Home
		}
		if base == nil && !g.KeepEnv && !g.LeaderEnv {
			base = loginEnv(u)
		}
		c.Env = mergeEnv(base, env)
		if usePTY {
			if pty, err = m.OpenPTY(); err != nil {
				return nil, err
			}
			copyWindowSize(pty)
			c.Stdio, c.Setsid, c.Ctty = []int{pty.Slave, pty.Slave, pty.Slave}, true, true
		}
		return c, nil
	}
	// If nspawn-enter is killed anyway (SIGKILL, which it cannot pass on),
	// the kernel kills the command: it is never left running without it.
	p, err := nsjoin.StartHere(l, plan, nsjoin.Options{JoinCgroup: !g.KeepCgroup, DieWithCaller: true, Forward: sigs}, prepare)
	l.Close()
	if pty != nil {
		unix.Close(pty.Slave)
	}
	if err != nil {
		return err
	}
	if p.CgroupErr != nil {
		cli.New(prog).Warning("%v; the command stays in the caller's cgroup", p.CgroupErr)
	}
	var sess *session
	if pty != nil {
		if sess, err = startSession(pty); err != nil {
			p.Signal(unix.SIGKILL)
			p.Wait()
			return fmt.Errorf("set up the terminal: %w", err)
		}
	}
	ws, err := p.Wait()
	if sess != nil {
		sess.finish()
	}
	if err != nil {
		return fmt.Errorf("wait for the command: %w", err)
	}
	// No signal.Stop: it costs a round trip per signal (0.29 ms median
	// here), and a signal now goes to a process that has ended, harmlessly.
	nsjoin.ExitLike(ws)
	return nil
}

// mountNamespace is the table entry of the mount namespace.
var mountNamespace = func() nsjoin.Namespace {
	for _, ns := range nsjoin.Namespaces {
		if ns.Proc == "mnt" {
			return ns
		}
	}
	panic("no mount namespace in nsjoin.Namespaces")
}()

// errUsage marks an error in the command line found after parsing.
var errUsage = errors.New("usage")

// checkSetenv validates --setenv values.
func checkSetenv(vars []string) ([]string, error) {
	for _, kv := range vars {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsRune(kv, 0) {
			return nil, fmt.Errorf("%w: --setenv %q: want KEY=VALUE", errUsage, kv)
		}
	}
	return vars, nil
}

// loginEnv is the clean environment of a login, as machinectl shell gives:
// the caller's terminal type and locale, the user's identity, a standard PATH.
func loginEnv(u nsjoin.User) []string {
	env := []string{"PATH=" + nsjoin.DefaultPath, "HOME=" + u.Home, "USER=" + u.Name, "LOGNAME=" + u.Name, "SHELL=" + u.Shell}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "TERM" || k == "LANG" || k == "LANGUAGE" || strings.HasPrefix(k, "LC_") {
			env = append(env, kv)
		}
	}
	return env
}

// mergeEnv returns base with the variables of set added or replaced.
func mergeEnv(base, set []string) []string {
	out := make([]string, 0, len(base)+len(set))
	index := map[string]int{}
	for _, kv := range append(append([]string{}, base...), set...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := index[k]; ok {
			out[i] = kv
			continue
		}
		index[k] = len(out)
		out = append(out, kv)
	}
	return out
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
	case errors.Is(err, errUsage):
		msg.Error("%v", strings.TrimPrefix(err.Error(), "usage: "))
		msg.Hint("see '%s --help'", prog)
		os.Exit(cli.ExitUsage)
	case errors.Is(err, nsjoin.ErrNoUser):
		msg.Error("%v", err)
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
