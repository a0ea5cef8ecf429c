package leader

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultStateDir is where machined keeps one state file per running machine.
const DefaultStateDir = "/run/systemd/machines"

// ErrNotRunning is matched (errors.Is) by a *NotRunningError.
var ErrNotRunning = errors.New("not running")

// ErrNoProcess: the PID given with Open names no process.
var ErrNoProcess = errors.New("no such process")

// NotRunningError says that a machine is not running, and why we think so.
type NotRunningError struct {
	Name    string
	Reason  string   // e.g. "no state file", "its leader 123 has exited"
	Running []string // the machines that are running, for the user's benefit
}

func (e *NotRunningError) Error() string {
	return fmt.Sprintf("machine %q is not running (%s)", e.Name, e.Reason)
}

// Is makes errors.Is(err, ErrNotRunning) true.
func (e *NotRunningError) Is(target error) bool { return target == ErrNotRunning }

// Leader is a pinned process: PidFD and Dir refer to one process for their
// whole life, even once it has exited and its PID is reused.
type Leader struct {
	PID     int    // PID in our PID namespace
	Machine string // machine name, "" when opened by PID
	State   *State // the machine's state, nil when opened by PID
	pidfd   int
	dir     int
	start   uint64 // start time, clock ticks after boot (read once, when pinned)
}

// PidFD is the leader's pidfd (O_CLOEXEC). It stays valid until Close.
func (l *Leader) PidFD() int { return l.pidfd }

// Dir is an O_PATH descriptor of /proc/PID. Lookups through it fail with
// ESRCH once the leader has been reaped, whatever process gets the PID next.
func (l *Leader) Dir() int { return l.dir }

// String names the leader for messages: `machine "x" (leader 123)` or `pid 123`.
func (l *Leader) String() string {
	if l.Machine != "" {
		return fmt.Sprintf("machine %q (leader pid %d)", l.Machine, l.PID)
	}
	return fmt.Sprintf("pid %d", l.PID)
}

// Close releases both descriptors.
func (l *Leader) Close() error {
	err := unix.Close(l.pidfd)
	if e := unix.Close(l.dir); err == nil {
		err = e
	}
	return err
}

// ReadProc reads /proc/PID/name of the pinned leader (at most 1 MiB).
func (l *Leader) ReadProc(name string) ([]byte, error) {
	fd, err := unix.Openat(l.dir, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("read /proc/%d/%s: %w", l.PID, name, err)
	}
	defer unix.Close(fd)
	var out []byte
	buf := make([]byte, 4096)
	for len(out) < 1<<20 {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read /proc/%d/%s: %w", l.PID, name, err)
		}
		if n == 0 {
			break
		}
		out = append(out, buf[:n]...)
	}
	return out, nil
}

// Comm is the leader's command name (/proc/PID/comm).
func (l *Leader) Comm() (string, error) {
	b, err := l.ReadProc("comm")
	return strings.TrimSuffix(string(b), "\n"), err
}

// Exe is the target of /proc/PID/exe, as the kernel prints it (a path in
// the leader's mount namespace, " (deleted)" appended when unlinked).
func (l *Leader) Exe() (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(l.dir, "exe", buf)
	if err != nil {
		return "", fmt.Errorf("read /proc/%d/exe: %w", l.PID, err)
	}
	return string(buf[:n]), nil
}

// Exited reports whether the leader has exited (its pidfd is readable).
func (l *Leader) Exited() bool { return exited(l.pidfd) }

// PidfdID is the leader's pidfs inode number, the same in every PID
// namespace: what machined calls pidfdId / LEADER_PIDFDID.
func (l *Leader) PidfdID() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(l.pidfd, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// Open pins the process pid: it opens /proc/PID, then a pidfd, then checks
// through the /proc descriptor that the process it named is still alive.
// If it is, the pidfd was opened on that same process.
func Open(pid int) (*Leader, error) {
	if pid < 1 {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	dir, err := unix.Open("/proc/"+strconv.Itoa(pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return nil, fmt.Errorf("open /proc/%d: %w", pid, err)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		unix.Close(dir)
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	l := &Leader{PID: pid, pidfd: pidfd, dir: dir}
	if l.start, err = l.startTime(); err != nil {
		l.Close()
		if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return nil, err
	}
	return l, nil
}

// startTime is field 22 of /proc/PID/stat: clock ticks after boot.
func (l *Leader) startTime() (uint64, error) {
	b, err := l.ReadProc("stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", l.PID)
	}
	f := bytes.Fields(b[i+2:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", l.PID)
	}
	return strconv.ParseUint(string(f[19]), 10, 64)
}

// Options tunes Find. The zero value means the defaults.
type Options struct {
	StateDir string        // default DefaultStateDir
	Varlink  string        // machined's varlink socket; default DefaultVarlink, "-" to never use it
	ExecWait time.Duration // how long to wait for the leader to exec init; default 3s
}

func (o *Options) stateDir() string {
	if o == nil || o.StateDir == "" {
		return DefaultStateDir
	}
	return o.StateDir
}

func (o *Options) execWait() time.Duration {
	if o == nil || o.ExecWait == 0 {
		return 3 * time.Second
	}
	return o.ExecWait
}

// ReadState validates name and reads its state file from the state directory.
func ReadState(name string, opt *Options) (*State, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	st, err := readState(name, opt)
	if errors.Is(err, os.ErrNotExist) {
		return nil, &NotRunningError{Name: name, Reason: "machined has no record of it", Running: running(opt)}
	}
	return st, err
}

// readState reads the state file of the valid name; a missing file gives
// an error matching os.ErrNotExist.
func readState(name string, opt *Options) (*State, error) {
	path := filepath.Join(opt.stateDir(), name)
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("read state of machine %q: %w", name, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read state of machine %q: %s is not a regular file", name, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("read state of machine %q: %w", name, err)
	}
	st, err := ParseState(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.Name != "" && st.Name != name {
		return nil, fmt.Errorf("%s: %w: NAME=%s", path, ErrBadState, st.Name)
	}
	return st, nil
}

// Find resolves a running machine by name to its pinned leader. It asks
// machined over varlink where it can, else reads the state file; a leader
// that has exited, or whose PID now belongs to another process, gives a
// *NotRunningError. A leader that has not exec'd the machine's init yet is
// waited for (Options.ExecWait).
func Find(name string, opt *Options) (*Leader, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	st, pidfdID, err := lookup(name, opt)
	if err != nil {
		return nil, err
	}
	stale := func(reason string) error {
		return &NotRunningError{Name: name, Reason: reason, Running: running(opt)}
	}
	l, err := Open(st.Leader)
	if errors.Is(err, ErrNoProcess) {
		return nil, stale(fmt.Sprintf("its leader, pid %d, has exited; the record is stale", st.Leader))
	}
	if err != nil {
		return nil, err
	}
	l.Machine, l.State = name, st
	if reason := l.mismatch(st, pidfdID); reason != "" {
		l.Close()
		return nil, stale(fmt.Sprintf("pid %d %s; the record is stale", st.Leader, reason))
	}
	if err := l.waitExec(opt.execWait()); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// mismatch returns why the pinned process cannot be the leader the record
// names, or "" when every check that applies passes.
func (l *Leader) mismatch(st *State, pidfdID uint64) string {
	if pidfdID == 0 {
		pidfdID = st.LeaderPidfdID
	}
	if pidfdID != 0 {
		if id, err := l.PidfdID(); err == nil && id != pidfdID {
			return fmt.Sprintf("is another process (pidfd id %d, machined recorded %d)", id, pidfdID)
		}
	}
	// The leader was forked before machined registered it. Its start time
	// counts CLOCK_BOOTTIME; MONOTONIC does not count suspend, so subtract
	// all the suspend time so far to get a lower bound on its monotonic start.
	if st.Monotonic != 0 {
		var boot, mono unix.Timespec
		// MONOTONIC first: read in this order, the difference is never negative.
		if unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) == nil && unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot) == nil {
			const slack = 20_000 // µs: clock tick granularity, with margin
			startUS := l.start * 1_000_000 / uint64(clockTicks)
			suspended := uint64(max(boot.Nano()-mono.Nano(), 0)) / 1000
			if startUS > suspended && startUS-suspended > st.Monotonic+slack {
				return "started after the machine was registered: it is another process"
			}
		}
	}
	return ""
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on Linux.
const clockTicks = 100

// waitExec waits while the leader is still the systemd-nspawn child that has
// not yet exec'd the machine's init (machined registers it before the exec).
func (l *Leader) waitExec(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		comm, err := l.Comm()
		if err != nil {
			return &NotRunningError{Name: l.Machine, Reason: fmt.Sprintf("its leader, pid %d, exited while starting", l.PID)}
		}
		if comm != "systemd-nspawn" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("machine %q is still starting: its leader, pid %d, has not started the machine's init after %v", l.Machine, l.PID, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// running lists the names of the running machines (see Machines), for
// the hint of a NotRunningError.
func running(opt *Options) []string {
	var names []string
	for _, st := range Machines(opt) {
		names = append(names, st.Name)
	}
	return names
}

// Machines returns the state of each running machine, sorted by name: each
// one machined has a state file for whose leader runs and is the process
// the record names. Stale records (a machine that ended while machined was
// down), unreadable and malformed files are left out.
func Machines(opt *Options) []*State {
	ents, err := os.ReadDir(opt.stateDir())
	if err != nil {
		return nil
	}
	var out []*State
	for _, e := range ents {
		if !e.Type().IsRegular() || ValidateName(e.Name()) != nil {
			continue
		}
		st, err := readState(e.Name(), opt)
		if err != nil || !current(st) {
			continue
		}
		if st.Name == "" {
			st.Name = e.Name()
		}
		out = append(out, st)
	}
	return out // os.ReadDir sorts by file name
}

// current reports whether the leader st names runs and is that process.
func current(st *State) bool {
	l, err := Open(st.Leader)
	if err != nil {
		return false
	}
	defer l.Close()
	return l.mismatch(st, 0) == ""
}
