package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cmdEnv is the whole environment of every command the benchmarks run.
var cmdEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}

// devNull is every command's stdin, and its stdout and stderr unless read.
var devNull *os.File

// proc is one finished run of a command.
type proc struct {
	elapsed time.Duration // from before the fork to after wait4
	status  unix.WaitStatus
	usage   unix.Rusage // of the command and its reaped children (wait4)
	steps   []step      // the parts of a sequence of commands
}

// step is one part of a sequence of commands, timed on its own.
type step struct {
	name    string
	elapsed time.Duration
}

func (p proc) cpu() time.Duration {
	return time.Duration(p.usage.Utime.Nano() + p.usage.Stime.Nano())
}

func (p proc) describe() string {
	switch {
	case p.status.Exited():
		return fmt.Sprintf("exit %d", p.status.ExitStatus())
	case p.status.Signaled():
		return fmt.Sprintf("killed by %v", p.status.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(p.status))
}

// spawn starts argv (argv[0] an absolute path) with the given descriptors
// as 0, 1, 2; pidfd, if not nil, receives a pidfd of the child.
func spawn(argv []string, files []uintptr, pidfd *int) (int, error) {
	attr := &syscall.ProcAttr{Env: cmdEnv, Files: files}
	if pidfd != nil {
		attr.Sys = &syscall.SysProcAttr{PidFD: pidfd}
	}
	return syscall.ForkExec(argv[0], argv, attr)
}

// reap waits for the child pid and fills in p.
func reap(pid int, p *proc) error {
	for {
		_, err := unix.Wait4(pid, &p.status, 0, &p.usage)
		if err != unix.EINTR {
			return err
		}
	}
}

// run runs argv with /dev/null as stdin, stdout and stderr.
func run(argv []string) (proc, error) {
	null := devNull.Fd()
	var p proc
	t0 := time.Now()
	pid, err := spawn(argv, []uintptr{null, null, null}, nil)
	if err != nil {
		return p, fmt.Errorf("start %s: %w", argv[0], err)
	}
	err = reap(pid, &p)
	p.elapsed = time.Since(t0)
	return p, err
}

// peakRSS runs argv, which must still run after the given time, reads
// its peak resident set size then (VmHWM: the high-water mark of its own
// address space since its exec), and waits for it to exit with status want.
//
// Not ru_maxrss: for a child started with vfork (Go's ForkExec, posix_spawn)
// the kernel counts the high-water mark of the address space the child
// had before its exec, the parent's, into its ru_maxrss.
func peakRSS(argv []string, after time.Duration, want int) (int64, proc, error) {
	null := devNull.Fd()
	var p proc
	t0 := time.Now()
	pid, err := spawn(argv, []uintptr{null, null, null}, nil)
	if err != nil {
		return 0, p, fmt.Errorf("start %s: %w", argv[0], err)
	}
	time.Sleep(after)
	hwm, herr := vmHWM(pid)
	err = reap(pid, &p)
	p.elapsed = time.Since(t0)
	switch {
	case err != nil:
		return 0, p, err
	case !p.status.Exited() || p.status.ExitStatus() != want:
		return 0, p, fmt.Errorf("%s: %s, want exit %d", shortArgv(argv), p.describe(), want)
	case herr != nil:
		return 0, p, fmt.Errorf("%s: %w", shortArgv(argv), herr)
	}
	return hwm, p, nil
}

// vmHWM reads the VmHWM line of /proc/PID/status, in bytes.
func vmHWM(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("pid %d has no VmHWM: it has exited already", pid)
}

// runOutput runs argv and returns what it wrote on stdout (and stderr, if
// withStderr), read through a pipe.
func runOutput(argv []string, withStderr bool) (proc, string, error) {
	var p proc
	r, w, err := os.Pipe()
	if err != nil {
		return p, "", err
	}
	defer r.Close()
	errFD := devNull.Fd()
	if withStderr {
		errFD = w.Fd()
	}
	t0 := time.Now()
	pid, err := spawn(argv, []uintptr{devNull.Fd(), w.Fd(), errFD}, nil)
	w.Close()
	if err != nil {
		return p, "", fmt.Errorf("start %s: %w", argv[0], err)
	}
	out, rerr := io.ReadAll(r)
	err = reap(pid, &p)
	p.elapsed = time.Since(t0)
	if err == nil {
		err = rerr
	}
	return p, string(out), err
}

// runWant runs argv and requires exit status want; the error of a wrong
// status quotes the command's output from a second run.
func runWant(argv []string, want int) (proc, error) {
	p, err := run(argv)
	if err != nil {
		return p, err
	}
	if !p.status.Exited() || p.status.ExitStatus() != want {
		_, out, _ := runOutput(argv, true)
		return p, fmt.Errorf("%s: %s, want exit %d; output of a second run: %q", shortArgv(argv), p.describe(), want, strings.TrimSpace(out))
	}
	return p, nil
}

// shortArgv is argv for messages, with the program's base name.
func shortArgv(argv []string) string {
	a := slices.Clone(argv)
	if i := strings.LastIndexByte(a[0], '/'); i >= 0 {
		a[0] = a[0][i+1:]
	}
	return strings.Join(a, " ")
}

// contender is one command (or sequence) in a side-by-side comparison.
type contender struct {
	name string               // how the tables show it
	run  func() (proc, error) // one timed run
	runs []proc               // the runs after the warm-up
}

func (c *contender) times() []time.Duration {
	ts := make([]time.Duration, len(c.runs))
	for i, p := range c.runs {
		ts[i] = p.elapsed
	}
	return ts
}

func (c *contender) median() time.Duration { return summarize(c.times()).median }

// cpuMedian is the median CPU time (user+sys) of the runs.
func (c *contender) cpuMedian() time.Duration {
	cpus := make([]time.Duration, len(c.runs))
	for i, p := range c.runs {
		cpus[i] = p.cpu()
	}
	return summarize(cpus).median
}

// faultsMedian is the median count of page faults (minor and major) of
// the runs: the pages the command and its reaped children touched, a
// count rather than a time.
func (c *contender) faultsMedian() int64 {
	faults := make([]int64, len(c.runs))
	for i, p := range c.runs {
		faults[i] = p.usage.Minflt + p.usage.Majflt
	}
	slices.Sort(faults)
	return median(faults)
}

// command is a contender that runs argv and wants exit status 0.
func command(name string, argv ...string) *contender {
	return &contender{name: name, run: func() (proc, error) { return runWant(argv, 0) }}
}

// alternate runs warmup rounds, then rounds more, of every contender, one
// after the other in an order that rotates every round, so that a change
// of load on the machine hits all of them alike.
func alternate(rounds, warmup int, cs []*contender) error {
	for r := 0; r < warmup+rounds; r++ {
		for j := range cs {
			c := cs[(r+j)%len(cs)]
			p, err := c.run()
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			if r >= warmup {
				c.runs = append(c.runs, p)
			}
		}
	}
	return nil
}

// stats summarises a sample of durations.
type stats struct {
	n                            int
	min, p10, median, p90, maxim time.Duration
}

func summarize(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[int(q*float64(len(s)-1)+0.5)] }
	return stats{n: len(s), min: s[0], p10: at(0.1), median: median(s), p90: at(0.9), maxim: s[len(s)-1]}
}

// median is the middle of sorted, which is not empty (the mean of the two
// middle ones for an even count).
func median[T ~int64](sorted []T) T {
	n := len(sorted)
	if n%2 == 0 {
		return (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return sorted[n/2]
}

// waitExits waits until every pidfd in fds is readable (its process has
// exited) and returns when this process saw each become so.
func waitExits(fds []int, limit time.Duration) ([]time.Time, error) {
	at := make([]time.Time, len(fds))
	deadline := time.Now().Add(limit)
	for {
		var pfds []unix.PollFd
		var idx []int
		for i, fd := range fds {
			if at[i].IsZero() {
				pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
				idx = append(idx, i)
			}
		}
		if len(pfds) == 0 {
			return at, nil
		}
		msec := int(time.Until(deadline) / time.Millisecond)
		if msec <= 0 {
			return at, fmt.Errorf("processes still running after %v", limit)
		}
		n, err := unix.Poll(pfds, msec)
		now := time.Now()
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return at, fmt.Errorf("poll pidfds: %w", err)
		}
		for k := 0; k < len(pfds) && n > 0; k++ {
			if pfds[k].Revents != 0 {
				at[idx[k]] = now
			}
		}
	}
}
