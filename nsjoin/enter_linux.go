package nsjoin

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/nspawn-tools/nspawn-tools/leader"
	"golang.org/x/sys/unix"
)

// Command is what to run inside the machine.
type Command struct {
	// Args is the argument vector. Args[0] is looked up in PATH (of Env,
	// else DefaultPath) inside the machine unless it contains a slash.
	Args []string
	// Argv0 replaces Args[0] in the argument vector when set, e.g. "-sh" for
	// a login shell.
	Argv0 string
	Env   []string
	Dir   string // working directory inside the machine; "" means "/"
	// Creds are the credentials to run with; nil means uid and gid 0 with
	// no supplementary groups when the user namespace is joined (like
	// nsenter), and the caller's otherwise.
	Creds *Creds
	// Stdio are the descriptors the command gets as 0, 1 and 2; nil means
	// the caller's own 0, 1 and 2.
	Stdio []int
	// Setsid starts a new session; with Ctty, Stdio[0] (a terminal) becomes
	// its controlling terminal.
	Setsid, Ctty bool
}

// Creds are numeric credentials inside the machine's user namespace.
type Creds struct {
	UID, GID uint32
	Groups   []uint32
}

// DefaultPath is searched for commands when the environment has no PATH.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ExecError says the command could not be started; Code is 127 when it was
// not found and 126 when it could not be executed, as in nsenter.
type ExecError struct {
	Name string
	Err  error
}

func (e *ExecError) Error() string { return fmt.Sprintf("cannot execute %s: %v", e.Name, e.Err) }

// Unwrap returns the cause.
func (e *ExecError) Unwrap() error { return e.Err }

// Code is the exit status the shell convention gives this failure.
func (e *ExecError) Code() int {
	if errors.Is(e.Err, unix.ENOENT) || errors.Is(e.Err, unix.ENOTDIR) {
		return 127
	}
	return 126
}

// JoinError says joining the leader's namespaces failed.
type JoinError struct {
	Leader *leader.Leader
	Set    Set
	Err    error
}

func (e *JoinError) Error() string {
	if errors.Is(e.Err, unix.ESRCH) {
		return fmt.Sprintf("join %s namespaces of %s: the leader exited", e.Set, e.Leader)
	}
	return fmt.Sprintf("join %s namespaces of %s: %v", e.Set, e.Leader, e.Err)
}

// Unwrap returns the cause.
func (e *JoinError) Unwrap() error { return e.Err }

// Prepare is called on the joined thread, whose root directory and mount
// namespace are the machine's when the mount namespace is joined. m reads
// the machine's files safely in any case. It returns the command to run.
type Prepare func(m *Machine) (*Command, error)

// Options are choices about how the command is started.
type Options struct {
	// JoinCgroup places the command in the leader's cgroups (v2, and the
	// name=systemd v1 group on hybrid hosts), so that it belongs to the
	// machine's unit and ends with it.
	JoinCgroup bool
	// DieWithCaller has the kernel kill the command (SIGKILL) if the
	// caller's process ends first, whatever ends it: set last before
	// execve, and cleared by the kernel when the command is set-user-ID.
	DieWithCaller bool
	// Forward, when not nil, are signals the thread that waits for the
	// command passes on to it, from its start to its exit.
	Forward *Signals
}

// Process is a command started inside a machine.
type Process struct {
	PID int // in our PID namespace
	// CgroupErr says why the command could not join the leader's cgroups
	// (Options.JoinCgroup); it then runs in the caller's.
	CgroupErr error
	pidfd     int
	fwd       *Signals
	done      chan waitResult // nil when StartHere started it
}

type waitResult struct {
	ws  unix.WaitStatus
	err error
}

// Signal sends sig to the command (through its pidfd: never to a process
// that reused its PID).
func (p *Process) Signal(sig unix.Signal) error {
	return unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
}

// Wait waits for the command to exit and releases its pidfd.
func (p *Process) Wait() (unix.WaitStatus, error) {
	var r waitResult
	if p.done != nil {
		r = <-p.done
	} else {
		r = p.wait()
	}
	unix.Close(p.pidfd)
	return r.ws, r.err
}

// wait passes the signals of Options.Forward on to the command until it
// exits, and reaps it. Any thread of the process may: wait4 takes the
// children of every thread.
func (p *Process) wait() (r waitResult) {
	if p.fwd != nil {
		p.fwd.forward(p.pidfd)
	}
	for {
		_, r.err = unix.Wait4(p.PID, &r.ws, 0, nil)
		if r.err != unix.EINTR {
			return r
		}
	}
}

// Start joins the planned namespaces of l on a dedicated OS thread, enters
// the leader's root directory (when the mount namespace is joined), calls
// prepare there, and starts the command it returns in a fork that joins the
// user and time namespaces last. The thread is never used for anything
// else: it ends when the command has been waited for.
func Start(l *leader.Leader, plan Plan, opt Options, prepare Prepare) (*Process, error) {
	j, err := newJoiner(l, plan, opt)
	if err != nil {
		return nil, err
	}
	j.started = make(chan error, 1)
	p := &Process{fwd: j.fwd, done: make(chan waitResult, 1)}
	go j.run(p, prepare, nil)
	if err := <-j.started; err != nil {
		return nil, err
	}
	return p, nil
}

// StartHere is Start without a thread of its own: it joins on the calling
// goroutine's thread and locks the goroutine to it for good, and Wait
// waits on the goroutine that calls it, with no hand-off between threads.
// It is for a goroutine that ends the process once the command has
// ended, like nspawn-enter's main, and that goroutine must not return
// before then: its thread stays in the machine's namespaces and root,
// whether StartHere succeeds or fails (from the first join on), and only
// the process's end may end it, as its end would kill the command
// (Options.DieWithCaller). Other goroutines and the threads the runtime
// starts later keep the host's namespaces and root; but when the calling
// thread is the process's first one, /proc/self (which names that thread)
// shows the machine's namespaces and mounts from then on.
func StartHere(l *leader.Leader, plan Plan, opt Options, prepare Prepare) (*Process, error) {
	j, err := newJoiner(l, plan, opt)
	if err != nil {
		return nil, err
	}
	runtime.LockOSThread() // never unlocked, see above
	pid, pidfd, err := j.start(prepare)
	j.closeHostFDs()
	if err != nil {
		return nil, err
	}
	return &Process{PID: pid, CgroupErr: j.cgErr, pidfd: pidfd, fwd: j.fwd}, nil
}

// newJoiner opens on the host what the joins of one start need.
func newJoiner(l *leader.Leader, plan Plan, opt Options) (*joiner, error) {
	j := &joiner{l: l, plan: plan, rootFD: -1, cg: cgroups{v2Dir: -1, v1Procs: -1}, pdeath: opt.DieWithCaller, fwd: opt.Forward}
	if opt.JoinCgroup {
		if j.cg, j.cgErr = openCgroups(l); j.cgErr != nil {
			j.cgErr = fmt.Errorf("join the cgroup of %s: %w", l, j.cgErr)
		}
	}
	if err := j.openHostFDs(); err != nil {
		j.closeHostFDs()
		if l.Exited() {
			return nil, &JoinError{Leader: l, Set: plan.Join, Err: unix.ESRCH}
		}
		return nil, err
	}
	return j, nil
}

// joiner holds what one Start needs on its thread.
type joiner struct {
	l       *leader.Leader
	plan    Plan
	rootFD  int // the leader's root directory, opened on the host
	cg      cgroups
	cgErr   error
	nofile  *unix.Rlimit
	pdeath  bool
	fwd     *Signals
	started chan error
}

// openHostFDs opens, before any join, every host-side descriptor the joins need.
func (j *joiner) openHostFDs() error {
	fd, err := unix.Openat(j.l.Dir(), "root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open root directory of %s: %w", j.l, err)
	}
	j.rootFD = fd
	// The command gets the machine's own limit on open files, not the one
	// the Go runtime raised for this process.
	// It is never raised above this process's own hard limit: the fork
	// child, in the machine's user namespace by then, could not.
	var lim, own unix.Rlimit
	if err := unix.Prlimit(j.l.PID, unix.RLIMIT_NOFILE, nil, &lim); err == nil && !j.l.Exited() &&
		unix.Getrlimit(unix.RLIMIT_NOFILE, &own) == nil {
		lim.Max = min(lim.Max, own.Max)
		lim.Cur = min(lim.Cur, lim.Max)
		j.nofile = &lim
	}
	return nil
}

func (j *joiner) closeHostFDs() {
	if j.rootFD >= 0 {
		unix.Close(j.rootFD)
		j.rootFD = -1
	}
	j.cg.close()
}

// isMainThread reports whether this thread is the process's first one.
var isMainThread = func() bool { return unix.Gettid() == unix.Getpid() }

// run is the body of the dedicated thread. held, when not nil, is closed
// once the work has a locked thread that is not the main thread.
func (j *joiner) run(p *Process, prepare Prepare, held chan<- struct{}) {
	// Never unlocked: when this goroutine returns, the runtime ends the
	// thread instead of reusing it with the machine's namespaces and root.
	runtime.LockOSThread()
	if isMainThread() {
		// The main thread, though, is never ended: the runtime would park
		// it for good, the process's own thread inside the machine. It is
		// held until a new goroutine, which so cannot run on it, has locked
		// a thread of its own for the work; then given back untouched.
		mine := make(chan struct{})
		go j.run(p, prepare, mine)
		<-mine
		runtime.UnlockOSThread()
		if held != nil {
			close(held)
		}
		return
	}
	if held != nil {
		close(held)
	}
	j.work(p, prepare)
}

// work joins, starts the command and waits for it, on a locked thread
// that is not the main thread.
func (j *joiner) work(p *Process, prepare Prepare) {
	pid, pidfd, err := j.start(prepare)
	j.closeHostFDs()
	if err != nil {
		j.started <- err
		return
	}
	p.PID, p.pidfd, p.CgroupErr = pid, pidfd, j.cgErr
	j.started <- nil
	p.done <- p.wait()
}

func (j *joiner) start(prepare Prepare) (int, int, error) {
	// A private fs_struct for this thread. Without it setns(CLONE_NEWNS)
	// through a pidfd would change the root and working directory of every
	// thread of the process.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return 0, -1, fmt.Errorf("unshare file system attributes: %w", err)
	}
	onThread := j.plan.Join & threadKinds
	inFork := j.plan.Join &^ threadKinds
	if err := j.setns(onThread); err != nil {
		return 0, -1, &JoinError{Leader: j.l, Set: onThread, Err: err}
	}
	if j.plan.Join&Set(unix.CLONE_NEWNS) != 0 {
		if err := enterRoot(j.rootFD); err != nil {
			return 0, -1, fmt.Errorf("enter root directory of %s: %w", j.l, err)
		}
	}
	cmd, err := prepare(&Machine{root: j.rootFD})
	if err != nil {
		return 0, -1, err
	}
	if cmd.Dir != "" {
		if err := unix.Chdir(cmd.Dir); err != nil {
			return 0, -1, fmt.Errorf("working directory %s: %w", cmd.Dir, err)
		}
	}
	path, err := lookPath(cmd.Args[0], cmd.Env)
	if err != nil {
		return 0, -1, &ExecError{Name: cmd.Args[0], Err: err}
	}
	s, err := j.spec(cmd, path, inFork)
	if err != nil {
		return 0, -1, err
	}
	if err := closeOnExec(); err != nil {
		return 0, -1, err
	}
	if j.fwd != nil {
		j.fwd.wait() // so that none is lost once the command runs
	}
	s.v1Procs = int32(j.cg.v1Procs)
	pid, pidfd, err := forkExec(s, j.cg.v2Dir)
	var ce *ChildError
	if err != nil && (j.cg.v2Dir >= 0 || j.cg.v1Procs >= 0) && (!errors.As(err, &ce) || ce.Step == stepText[stepCgroup]) {
		// The cgroups would not take the command: start it in the caller's.
		j.cgErr = fmt.Errorf("join the cgroup of %s: %w", j.l, err)
		s.v1Procs = -1
		pid, pidfd, err = forkExec(s, -1)
	}
	runtime.KeepAlive(s)
	if err != nil && !errors.As(err, &ce) && j.l.Exited() {
		// The leader died after the thread's joins: a PID namespace
		// without its init takes no new process (clone3 fails with ENOMEM).
		return 0, -1, &JoinError{Leader: j.l, Set: j.plan.Join, Err: unix.ESRCH}
	}
	if errors.As(err, &ce) {
		switch ce.Step {
		case stepText[stepExec]:
			return 0, -1, &ExecError{Name: cmd.Args[0], Err: ce.Errno}
		case stepText[stepSetns]:
			return 0, -1, &JoinError{Leader: j.l, Set: inFork, Err: ce.Errno}
		case stepText[stepGroups], stepText[stepGID], stepText[stepUID]:
			if ce.Errno == unix.EINVAL && cmd.Creds != nil {
				return 0, -1, fmt.Errorf("%w: uid %d or one of the groups %d %v is not mapped in the machine's user namespace",
					ce, cmd.Creds.UID, cmd.Creds.GID, cmd.Creds.Groups)
			}
		}
	}
	return pid, pidfd, err
}

// setns joins the kinds in set on this thread, all at once through the
// leader's pidfd (Linux 5.8): all or nothing.
func (j *joiner) setns(set Set) error {
	if set == 0 {
		return nil
	}
	return unix.Setns(j.l.PidFD(), int(set))
}

// enterRoot makes the directory rootFD this thread's root and working directory.
func enterRoot(rootFD int) error {
	if err := unix.Fchdir(rootFD); err != nil {
		return err
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	return unix.Chdir("/")
}

// spec prepares the fork child's instructions.
func (j *joiner) spec(cmd *Command, path string, inFork Set) (*forkSpec, error) {
	s := &forkSpec{stdio: [3]int32{0, 1, 2}, setsid: cmd.Setsid, ctty: cmd.Ctty, pdeath: j.pdeath}
	s.setns = setnsCall{uintptr(j.l.PidFD()), uintptr(inFork)}
	for i, fd := range cmd.Stdio {
		s.stdio[i] = int32(fd)
	}
	switch {
	case cmd.Creds != nil:
		s.setCreds, s.uid, s.gid, s.groups = true, uintptr(cmd.Creds.UID), uintptr(cmd.Creds.GID), cmd.Creds.Groups
	case inFork&Set(unix.CLONE_NEWUSER) != 0:
		s.setCreds = true // uid 0, gid 0, no groups
	}
	if j.nofile != nil {
		s.setNofile, s.nofile = true, *j.nofile
	}
	var err error
	if s.path, err = unix.BytePtrFromString(path); err != nil {
		return nil, err
	}
	argv := cmd.Args
	if cmd.Argv0 != "" {
		argv = append([]string{cmd.Argv0}, argv[1:]...)
	}
	if s.argv, err = cStrings(argv); err != nil {
		return nil, fmt.Errorf("argument: %w", err)
	}
	if s.envv, err = cStrings(cmd.Env); err != nil {
		return nil, fmt.Errorf("environment: %w", err)
	}
	return s, nil
}

func cStrings(ss []string) ([]*byte, error) {
	out := make([]*byte, 0, len(ss)+1)
	for _, s := range ss {
		b, err := unix.BytePtrFromString(s)
		if err != nil {
			return nil, fmt.Errorf("%q contains a NUL byte", s)
		}
		out = append(out, b)
	}
	return append(out, nil), nil
}

// lookPath finds name like execvp: names with a slash are taken as they
// are; others are searched in the PATH of env. A file found but not
// executable gives EACCES (126) unless a later directory has an executable one.
func lookPath(name string, env []string) (string, error) {
	if name == "" {
		return "", unix.ENOENT
	}
	if strings.Contains(name, "/") {
		return name, checkExecutable(name)
	}
	path := DefaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	var firstErr error = unix.ENOENT
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + name
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, unix.EACCES) && errors.Is(firstErr, unix.ENOENT) {
			firstErr = err
		}
	}
	return "", firstErr
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return errno
		}
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return unix.EACCES
	}
	return nil
}

// closeOnExec marks every descriptor above 2 close-on-exec, so that none
// the caller handed this process reaches the machine (all of the
// program's own are opened so already): close_range where the kernel has
// CLOSE_RANGE_CLOEXEC (5.11), else one fcntl per entry of /proc/self/fd.
func closeOnExec() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list open descriptors: %w", err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && err != unix.EBADF {
			return fmt.Errorf("mark descriptor %d close-on-exec: %w", fd, err)
		}
	}
	return nil
}
