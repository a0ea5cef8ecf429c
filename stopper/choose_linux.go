package stopper

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nspawn-tools/nspawn-tools/leader"
	"golang.org/x/sys/unix"
)

// Init is an init system recognised by its executable and command name,
// with the signal that halts it cleanly. The table Inits is measured on
// real systemd-nspawn machines (DESIGN.md, "Stopping").
type Init struct {
	Name   string      // what people call it
	Exe    string      // base name of its executable (/proc/PID/exe)
	Comms  []string    // command names it runs under; nil: any
	Signal unix.Signal // the signal that halts it cleanly
	Effect string      // what Signal makes it do
}

// Inits is every init nspawn-stop recognises. Each also takes signals
// that do the wrong thing (reboot, re-exec), which is why masks alone
// cannot choose.
var Inits = []Init{
	{Name: "systemd", Exe: "systemd", Signal: SIGRTMIN + 4, Effect: "starts poweroff.target; SIGTERM would re-execute it"},
	{Name: "busybox init", Exe: "busybox", Comms: []string{"init", "busybox", "linuxrc"}, Signal: unix.SIGUSR2, Effect: "powers off; SIGTERM would reboot it"},
	{Name: "runit", Exe: "runit", Signal: unix.SIGPWR, Effect: "runs stage 3 and halts; it blocks SIGTERM"},
	{Name: "s6-svscan", Exe: "s6-svscan", Signal: unix.SIGTERM, Effect: "runs .s6-svscan/finish"},
	{Name: "openrc-init", Exe: "openrc-init", Signal: unix.SIGTERM, Effect: "shuts down; SIGINT would reboot it"},
}

// Recognise returns the init that runs as comm from executable exe (as
// /proc/PID/exe shows it; "" when unreadable), or nil.
func Recognise(comm, exe string) *Init {
	base := path.Base(strings.TrimSuffix(exe, " (deleted)"))
	for i := range Inits {
		in := &Inits[i]
		switch {
		case exe != "" && base == in.Exe && (in.Comms == nil || slices.Contains(in.Comms, comm)):
			return in
		case exe == "" && comm == in.Exe:
			return in
		}
	}
	return nil
}

// conventions are the signals an unknown init is sent, best first, when
// it takes them: power-off and halt by convention before SIGTERM, which
// several inits treat as reboot or re-exec.
var conventions = []struct {
	sig unix.Signal
	why string
}{
	{SIGRTMIN + 4, "power-off by convention (systemd)"},
	{SIGRTMIN + 3, "halt by convention (systemd)"},
	{unix.SIGPWR, "power failure: halt by convention"},
	{unix.SIGTERM, "terminate"},
}

// Settle is how long after its start a process is given to set up its
// signal handling before the choice stops waiting for it.
const Settle = 3 * time.Second

// settlePoll is how often the masks are read again while waiting for an
// init to set up its signal handling.
const settlePoll = 10 * time.Millisecond

// ErrExited says the leader exited before it was signalled.
var ErrExited = errors.New("exited before it was signalled")

// Choice is the signal chosen to stop a leader, and why.
type Choice struct {
	Signal unix.Signal
	Init   *Init     // nil when not recognised
	Comm   string    // /proc/PID/comm
	Exe    string    // /proc/PID/exe, "" if unreadable
	Takes  SignalSet // the signals it handles, blocks or waits for
	surely SignalSet // Takes without those that are only blocked
	Reason string    // one phrase for people
	Doubt  string    // set when the choice goes against the masks
}

// Choose picks the signal that halts l's init. It recognises the init
// (Recognise), then checks that the init takes that signal. An unknown
// init gets the first of the conventional signals it takes, or SIGTERM.
// While l is younger than Settle and takes none of the signals that would
// do, Choose waits for it (never past deadline; a zero deadline means no
// limit). It returns ErrExited if l exits meanwhile.
func Choose(l *leader.Leader, deadline time.Time) (*Choice, error) {
	c := &Choice{}
	var err error
	if c.Comm, err = l.Comm(); err != nil {
		return nil, gone(l, err)
	}
	c.Exe, _ = l.Exe() // a zombie or a deleted binary: comm alone decides
	c.Init = Recognise(c.Comm, c.Exe)
	for {
		sigs, err := ReadSignals(l)
		if err != nil {
			return nil, gone(l, err)
		}
		c.Takes, c.surely = sigs.Takes(), sigs.Surely()
		age, err := Age(l)
		young := err == nil && age < Settle
		if c.decide(young) {
			return c, nil
		}
		if !young {
			break
		}
		wait := settlePoll
		if !deadline.IsZero() {
			wait = min(wait, time.Until(deadline))
			if wait <= 0 {
				break
			}
		}
		if exited, err := Wait(l, time.Now().Add(wait)); err != nil {
			return nil, err
		} else if exited {
			return nil, fmt.Errorf("pid %d %w", l.PID, ErrExited)
		}
	}
	if c.Init != nil {
		c.Signal = c.Init.Signal
		c.Reason = fmt.Sprintf("%s %s", SignalName(c.Signal), c.Init.Effect)
		c.Doubt = fmt.Sprintf("%s does not show that it takes %s (it takes %s)", c.Init.Name, SignalName(c.Signal), c.Takes)
		return c, nil
	}
	c.Signal = unix.SIGTERM
	c.Reason = "unknown init"
	c.Doubt = fmt.Sprintf("it takes none of SIGRTMIN+4, SIGRTMIN+3, SIGPWR, SIGTERM (it takes %s); sending SIGTERM, which it may ignore", c.Takes)
	return c, nil
}

// decide sets Signal and Reason when the masks confirm a choice. While
// the process is young, a signal that is only blocked does not count: it
// may be blocked for a moment, not for good.
func (c *Choice) decide(young bool) bool {
	takes := c.Takes
	if young {
		takes = c.surely
	}
	if c.Init != nil {
		if !takes.Has(c.Init.Signal) {
			return false
		}
		c.Signal = c.Init.Signal
		c.Reason = fmt.Sprintf("%s %s", SignalName(c.Signal), c.Init.Effect)
		return true
	}
	for _, conv := range conventions {
		if takes.Has(conv.sig) {
			c.Signal = conv.sig
			c.Reason = fmt.Sprintf("unknown init that takes %s; %s is %s", c.Takes, SignalName(conv.sig), conv.why)
			return true
		}
	}
	return false
}

// gone turns a failed read of a leader that has exited into ErrExited.
func gone(l *leader.Leader, err error) error {
	if l.Exited() || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("pid %d %w", l.PID, ErrExited)
	}
	return err
}

// Signals is what a process does with signals, as /proc shows it.
type Signals struct {
	Caught   SignalSet // handlers (SigCgt)
	Blocked  SignalSet // blocked (SigBlk): queued for signalfd or sigwait, or only for a while
	Waited   SignalSet // the set it waits for in rt_sigtimedwait right now
	Signalfd SignalSet // the masks of its signalfds
}

// Takes is every signal l would act on if sent from outside its PID
// namespace, where signals an init neither handles nor blocks are dropped.
func (s Signals) Takes() SignalSet { return s.Caught | s.Blocked | s.Waited | s.Signalfd }

// Surely leaves out signals that are only blocked: a shell blocks
// everything for a moment while it forks, and a blocked signal without a
// handler is dropped when it is unblocked.
func (s Signals) Surely() SignalSet { return s.Caught | s.Waited | s.Signalfd }

// ReadSignals reads how l takes signals: SigCgt and SigBlk from
// /proc/PID/status, the set it waits for if it sleeps in rt_sigtimedwait
// (busybox init waits there with nothing blocked), and the masks of its
// signalfds (systemd, s6-svscan).
func ReadSignals(l *leader.Leader) (Signals, error) {
	var s Signals
	before := waited(l)
	status, err := l.ReadProc("status")
	if err != nil {
		return s, err
	}
	s.Waited = before | waited(l)
	if s.Caught, err = statusMask(status, "SigCgt:"); err == nil {
		s.Blocked, err = statusMask(status, "SigBlk:")
	}
	if err != nil {
		return s, fmt.Errorf("/proc/%d/status: %w", l.PID, err)
	}
	s.Signalfd = signalfds(l)
	return s, nil
}

// signalfds is the union of the masks of l's signalfds, read from
// /proc/PID/fdinfo. Anything unreadable gives the empty set.
func signalfds(l *leader.Leader) SignalSet {
	fd, err := unix.Openat(l.Dir(), "fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	dir := os.NewFile(uintptr(fd), "fd")
	defer dir.Close()
	names, _ := dir.Readdirnames(maxFDs)
	var set SignalSet
	buf := make([]byte, 64)
	for _, name := range names {
		n, err := unix.Readlinkat(fd, name, buf)
		if err != nil || string(buf[:n]) != "anon_inode:[signalfd]" {
			continue
		}
		info, err := l.ReadProc("fdinfo/" + name)
		if err != nil {
			continue
		}
		if m, err := statusMask(info, "sigmask:"); err == nil {
			set |= m
		}
	}
	return set
}

// maxFDs bounds the descriptors looked at for signalfds; systemd has a few
// hundred.
const maxFDs = 4096

// statusMask reads one hex mask line of /proc/PID/status.
func statusMask(status []byte, key string) (SignalSet, error) {
	for line := range bytes.Lines(status) {
		if v, ok := bytes.CutPrefix(line, []byte(key)); ok {
			n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("%s %q: %w", key, bytes.TrimSpace(v), err)
			}
			return SignalSet(n), nil
		}
	}
	return 0, fmt.Errorf("no %s line", key)
}

// waited is the set l waits for if it sleeps in rt_sigtimedwait: the
// set's address is the first argument in /proc/PID/syscall, its contents
// are read from /proc/PID/mem. Anything unreadable gives the empty set.
func waited(l *leader.Leader) SignalSet {
	b, err := l.ReadProc("syscall")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 5 || f[0] != strconv.Itoa(unix.SYS_RT_SIGTIMEDWAIT) {
		return 0
	}
	addr, err1 := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 64)
	size, err2 := strconv.ParseUint(strings.TrimPrefix(f[4], "0x"), 16, 64)
	if err1 != nil || err2 != nil || size < 8 || addr > 1<<63 {
		return 0
	}
	fd, err := unix.Openat(l.Dir(), "mem", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	var set [8]byte
	if n, err := unix.Pread(fd, set[:], int64(addr)); err != nil || n != len(set) {
		return 0
	}
	return SignalSet(binary.NativeEndian.Uint64(set[:]))
}

// Age is how long ago l started (field 22 of /proc/PID/stat).
func Age(l *leader.Leader) (time.Duration, error) {
	b, err := l.ReadProc("stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	f := bytes.Fields(b[i+1:])
	if i < 0 || len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", l.PID)
	}
	ticks, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: start time: %w", l.PID, err)
	}
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &now); err != nil {
		return 0, err
	}
	const userHZ = 100 // the unit of /proc/PID/stat times on Linux
	return time.Duration(now.Nano()) - time.Duration(ticks)*time.Second/userHZ, nil
}
