package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// This program is also the leader of the wake-latency runs: started with
// roleEnv=roleExitOnTerm as PID 1 of a new PID namespace, it writes one
// byte on stdout once it takes SIGTERM, and exits 0 on it.
const (
	roleEnv        = "NSPAWN_BENCH_ROLE"
	roleExitOnTerm = "exit-on-sigterm"
)

func exitOnTerm() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	os.Stdout.Write([]byte{'.'})
	<-c
	os.Exit(0)
}

// child is a process started with a pidfd.
type child struct {
	pid, pidfd int
	reaped     bool
	p          proc
}

// finish kills the child if it still runs, reaps it and closes its pidfd.
func (c *child) finish() error {
	if c.pidfd < 0 {
		return nil
	}
	var err error
	if !c.reaped {
		unix.PidfdSendSignal(c.pidfd, unix.SIGKILL, nil, 0)
		err = reap(c.pid, &c.p)
		c.reaped = true
	}
	unix.Close(c.pidfd)
	c.pidfd = -1
	return err
}

// stopWake measures, on leaders that exit on nspawn-stop's SIGTERM, the
// time from the leader's exit to nspawn-stop's: both seen by this process
// through pidfds in one poll(2).
func (b *bench) stopWake() {
	const what = "stop: wake latency, the leader's exit → nspawn-stop's exit"
	logf("stop: wake latency, %d runs", b.cfg.runs)
	c := &contender{name: "nspawn-stop --pid P --signal TERM: its exit after the leader's"}
	for i := 0; i < warmup+b.cfg.runs; i++ {
		p, err := b.wakeOnce()
		if err != nil {
			b.fail(secStop, what, err)
			return
		}
		if i >= warmup {
			c.runs = append(c.runs, p)
		}
	}
	b.details = append(b.details, c)
	s := summarize(c.times())
	together := 0
	for _, t := range c.times() {
		if t == 0 {
			together++
		}
	}
	b.notes = append(b.notes, fmt.Sprintf("Wake latency: the leader (this program, PID 1 of a new PID namespace, exiting on SIGTERM) and nspawn-stop are both watched through pidfds in one poll(2); the latency is the time between the two wake-ups. In %d of %d runs both exits were seen by the same wake-up and count as 0.", together, len(c.runs)))
	b.add(secStop, what+" (median)", fmt.Sprintf("%s (p90 %s, max %s)", ms(s.median), ms(s.p90), ms(s.maxim)),
		"original: polls every 0.2 s, so up to 200 ms (100 ms on average): its design, not measured",
		"goal ≤ 1 ms", verdict(s.median <= time.Millisecond))
}

// wakeOnce runs one leader and one nspawn-stop; the proc it returns is
// nspawn-stop's, with elapsed set to the wake latency.
func (b *bench) wakeOnce() (proc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return proc{}, err
	}
	defer r.Close()
	null := devNull.Fd()
	leader := &child{pidfd: -1}
	defer leader.finish()
	attr := &syscall.ProcAttr{
		Env:   []string{roleEnv + "=" + roleExitOnTerm},
		Files: []uintptr{null, w.Fd(), null},
		Sys:   &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, PidFD: &leader.pidfd},
	}
	leader.pid, err = syscall.ForkExec(b.self, []string{b.self}, attr)
	w.Close()
	if err != nil {
		return proc{}, fmt.Errorf("start the leader: %w", err)
	}
	r.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(r, make([]byte, 1)); err != nil {
		return proc{}, fmt.Errorf("the leader did not get ready: %w", err)
	}
	stop := &child{pidfd: -1}
	defer stop.finish()
	argv := []string{b.stop, "--pid", strconv.Itoa(leader.pid), "--signal", "TERM", "--timeout", "10s"}
	if stop.pid, err = spawn(argv, []uintptr{null, null, null}, &stop.pidfd); err != nil {
		return proc{}, err
	}
	at, err := waitExits([]int{leader.pidfd, stop.pidfd}, 20*time.Second)
	if err != nil {
		return proc{}, err
	}
	if err := reap(stop.pid, &stop.p); err != nil {
		return proc{}, err
	}
	stop.reaped = true
	if err := reap(leader.pid, &leader.p); err != nil {
		return proc{}, err
	}
	leader.reaped = true
	if !stop.p.status.Exited() || stop.p.status.ExitStatus() != 0 {
		return proc{}, fmt.Errorf("%s: %s, want exit 0", shortArgv(argv), stop.p.describe())
	}
	if at[1].Before(at[0]) {
		return proc{}, errors.New("nspawn-stop exited before the leader")
	}
	stop.p.elapsed = at[1].Sub(at[0])
	return stop.p, nil
}

// stopIdle runs nspawn-stop for a whole --timeout on a leader that ignores
// its signal (PID 1 without a handler) and reports its CPU time, context
// switches and peak RSS.
func (b *bench) stopIdle() {
	what := fmt.Sprintf("stop: CPU time (user+sys) of nspawn-stop over a %v wait (`--timeout`, exit 124)", b.cfg.wait)
	logf("stop: nspawn-stop waits %v on a leader that ignores SIGTERM", b.cfg.wait)
	argv := []string{b.stop, "--pid", strconv.Itoa(b.plain.PID), "--signal", "TERM", "--timeout", b.cfg.wait.String()}
	// Its peak RSS is read shortly before the timeout.
	rss, p, err := peakRSS(argv, b.cfg.wait-min(300*time.Millisecond, b.cfg.wait/2), 124)
	if err != nil {
		b.fail(secStop, what, err)
		return
	}
	cpuRef := "empty static Go program: not measured"
	if b.emptyGoRun != nil {
		cpuRef = "empty static Go program, start to exit: " + ms(b.emptyGoRun.cpuMedian())
	}
	b.add(secStop, what, fmt.Sprintf("%s; %d voluntary, %d involuntary context switches", ms(p.cpu()), p.usage.Nvcsw, p.usage.Nivcsw),
		cpuRef, "goal ≤ 10 ms", verdict(p.cpu() <= 10*time.Millisecond))
	rssRef := "sleeping static Go program: not measured"
	if ref, _, err := peakRSS([]string{b.sleepGo}, 500*time.Millisecond, 0); err == nil {
		rssRef = "static Go program that only sleeps: " + mib(ref)
	}
	b.add(secStop, "stop: peak RSS of nspawn-stop during that wait (VmHWM)", mib(rss), rssRef,
		"goal ≤ 8 MiB", verdict(rss <= 8<<20))
}
