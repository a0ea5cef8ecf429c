package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/machinetest"
	"github.com/nspawn-tools/nspawn-tools/internal/nstest"
	"github.com/nspawn-tools/nspawn-tools/nsjoin"
	"golang.org/x/sys/unix"
)

// warmup rounds run before the measured ones of every comparison.
const warmup = 3

// enterGoal is the goal for nspawn-enter against nsenter.
const enterGoal = 1.2

// startTarget starts a namespace target that stays up until the end.
func (b *bench) startTarget(spec nstest.Spec) (*nstest.Target, error) {
	var tg *nstest.Target
	err := attempt(func() { tg = nstest.Start(b.t, spec) })
	return tg, err
}

// noAll are the --no-<namespace> options for every namespace.
func noAll() []string {
	var opts []string
	for _, ns := range nsjoin.Namespaces {
		opts = append(opts, "--no-"+ns.Option)
	}
	return opts
}

// enterTarget is one target of the enter comparison: the letter the
// tables name it by, what sets it apart, and the row of the goal.
type enterTarget struct {
	letter, ns, row string
	target          *nstest.Target
}

// enterTargets compares nspawn-enter with nsenter on the three targets, and
// times the steps of nspawn-enter's start.
func (b *bench) enterTargets() {
	logf("enter: %d alternating rounds on three targets", b.cfg.runs)
	targets := []enterTarget{
		{"P", "no user ns", "enter: `nspawn-enter --pid P -- /bin/true`, target without a user namespace", b.plain},
		{"U", "user ns", "enter: the same, target with a user namespace (mapped like `-U`)", b.userns},
		{"T", "user and time ns", "enter: the same, target with a user and a time namespace (systemd-nspawn makes no time namespace; joining one needs a real fork of the command, not vfork)", b.timens},
	}
	var cs, ours, ref []*contender
	for _, tg := range targets {
		pid := strconv.Itoa(tg.target.PID)
		o := command("nspawn-enter --pid "+tg.letter+" -- /bin/true ("+tg.ns+")", b.enter, "--pid", pid, "--", "/bin/true")
		r := command("nsenter -t "+tg.letter+" -a /bin/true ("+tg.ns+")", b.nsenter, "-t", pid, "-a", "/bin/true")
		ours, ref, cs = append(ours, o), append(ref, r), append(cs, o, r)
	}
	oursU, refU, u := ours[1], ref[1], strconv.Itoa(b.userns.PID)
	hostTrue := command("/bin/true on the host", "/bin/true")
	b.emptyGoRun = command("empty static Go program", b.emptyGo)
	// A PID that is never in use: everything up to the pinning, which fails.
	noPID := []string{b.enter, "--pid", "999999999", "--", "/bin/true"}
	noSuch := &contender{name: "nspawn-enter --pid (no such process) -- /bin/true", run: func() (proc, error) { return runWant(noPID, 125) }}
	keepArgs := append(append([]string{b.enter, "--pid", u}, noAll()...), "--", "/bin/true")
	keepAll := command("nspawn-enter --pid U --no-(all 8) -- /bin/true", keepArgs...)
	spawn := command("static Go program that only runs /bin/true", b.spawnGo)
	spawnKong := command("the same, linking kong", b.spawnKong)
	cs = append(cs, hostTrue, b.emptyGoRun, noSuch, keepAll, spawn, spawnKong)
	if err := alternate(b.cfg.runs, warmup, cs); err != nil {
		b.emptyGoRun = nil
		b.fail(secEnter, "enter: nspawn-enter vs nsenter -a", err)
		return
	}
	b.details = append(b.details, cs...)
	for i, tg := range targets {
		r := ratio(ours[i].median(), ref[i].median())
		b.add(secEnter, tg.row, ms(ours[i].median()), "`nsenter -t "+tg.letter+" -a /bin/true`: "+ms(ref[i].median()),
			fmt.Sprintf("%.2f× (goal ≤ %.2f×)", r, enterGoal), verdict(r <= enterGoal))
	}
	// The floor: what a Go tool pays to run /bin/true at all, against the
	// goal's bound.
	bound := time.Duration(float64(refU.median()) * enterGoal)
	for _, f := range []struct {
		what string
		c    *contender
	}{
		{"enter floor: a static Go program that only runs /bin/true and waits (no lookup, no join)", spawn},
		{"enter floor with kong: the same program, linking kong without calling it (nspawn-stop links kong; nspawn-enter does not, see args.go)", spawnKong},
	} {
		b.add(secEnter, f.what, ms(f.c.median()), "`nsenter -t U -a /bin/true`: "+ms(refU.median()),
			fmt.Sprintf("%.2f×; leaves %s under the goal's %s", ratio(f.c.median(), refU.median()), ms(bound-f.c.median()), ms(bound)), resultInfo)
	}
	b.breakdown = []breakdownLine{
		{hostTrue, "fork, exec and exit of a small C program: the floor for any tool"},
		{b.emptyGoRun, "the Go runtime's start and exit (static binary, no code)"},
		{noSuch, "nspawn-enter's package initialisation, reading the command line, starting to take signals, the failed lookup of the process and the error message"},
		{keepAll, "pinning the leader (/proc, pidfd), the namespace plan, host descriptors, the fork child, exec of /bin/true, wait — with nothing to join"},
		{oursU, "joining the 8 namespaces (setns on the thread; user and time in the fork child, with setgroups/setuid), chroot"},
	}
	b.notes = append(b.notes, fmt.Sprintf("For comparison, `nsenter -t U -a /bin/true` takes %s: %s more than /bin/true alone; nspawn-enter takes %s more than /bin/true, of which %s is the Go runtime's start.",
		ms(refU.median()), ms(refU.median()-hostTrue.median()), ms(oursU.median()-hostTrue.median()), ms(b.emptyGoRun.median()-hostTrue.median())))
	if b.cfg.hyperfine {
		b.hyperfineCheck(targets)
	}
}

// hyperfineCheck times the enter commands once more with hyperfine.
func (b *bench) hyperfineCheck(targets []enterTarget) {
	hf, err := exec.LookPath("hyperfine")
	if err != nil {
		b.notes = append(b.notes, "hyperfine cross-check not run: "+err.Error())
		return
	}
	logf("enter: hyperfine cross-check")
	md := filepath.Join(b.dir, "hyperfine.md")
	args := []string{"-N", "--style", "none", "--warmup", strconv.Itoa(warmup), "--runs", strconv.Itoa(b.cfg.runs), "--export-markdown", md}
	for _, tg := range targets {
		pid := strconv.Itoa(tg.target.PID)
		args = append(args, b.enter+" --pid "+pid+" -- /bin/true", b.nsenter+" -t "+pid+" -a /bin/true")
	}
	cmd := exec.Command(hf, args...)
	cmd.Env = cmdEnv
	if out, err := cmd.CombinedOutput(); err != nil {
		b.notes = append(b.notes, fmt.Sprintf("hyperfine cross-check failed: %v: %s", err, oneLine(string(out))))
		return
	}
	table, err := os.ReadFile(md)
	if err != nil {
		b.notes = append(b.notes, "hyperfine cross-check: "+err.Error())
		return
	}
	text := strings.ReplaceAll(string(table), b.enter, "nspawn-enter")
	text = strings.ReplaceAll(text, b.nsenter, "nsenter")
	for _, tg := range targets {
		text = strings.ReplaceAll(text, " "+strconv.Itoa(tg.target.PID)+" ", " "+tg.letter+" ")
	}
	b.extra = append(b.extra, fmt.Sprintf("### hyperfine cross-check\n\n%s, `-N`: each command's runs one after the other (not alternating); P without, U with a user namespace, T with a user and a time namespace.\n\n%s",
		firstLine(hf, "--version"), text))
}

// enterRSS measures the peak RSS of both tools while their command runs.
func (b *bench) enterRSS() {
	const what = "enter: peak RSS of nspawn-enter while its command runs (`-- sleep 1`, VmHWM)"
	logf("enter: peak RSS")
	u := strconv.Itoa(b.userns.PID)
	ours, p, err := peakRSS([]string{b.enter, "--pid", u, "--", "sleep", "1"}, 500*time.Millisecond, 0)
	if err != nil {
		b.fail(secStop, what, err)
		return
	}
	ref, _, err := peakRSS([]string{b.nsenter, "-t", u, "-a", "sleep", "1"}, 500*time.Millisecond, 0)
	if err != nil {
		b.fail(secStop, what, err)
		return
	}
	b.add(secStop, what, mib(ours), "`nsenter -t P -a sleep 1`: "+mib(ref),
		"goal ≤ 10 MiB", verdict(ours <= 10<<20))
	self, _ := vmHWM(os.Getpid())
	b.notes = append(b.notes, fmt.Sprintf("Peak RSS is VmHWM from /proc/PID/status, read while the tool still runs (0.5 s into `sleep 1`; 0.3 s before nspawn-stop's timeout), not ru_maxrss: for a child started by vfork (Go's ForkExec, posix_spawn) the kernel counts the parent's high-water mark into the child's ru_maxrss at exec. (wait4's ru_maxrss for the nspawn-enter run above: %s; this program's own VmHWM: %s.)",
		mib(int64(p.usage.Maxrss)*1024), mib(self)))
}

// enterMachine compares, on a real machine registered with machined,
// entering it by name with nsenter and with the original tool's way
// (machinectl show, then nsenter), and stops it with nspawn-stop.
func (b *bench) enterMachine() {
	const what = "enter a real machine (busybox init, `-U`) by name: `nspawn-enter NAME -- /bin/true`"
	mctl, err := exec.LookPath("machinectl")
	if err != nil {
		b.fail(secEnter, what, err)
		return
	}
	b.c.add(func() {
		if err := machinetest.Shutdown(logf); err != nil {
			logf("cleanup: %v", err)
			b.c.fail()
		}
	})
	name := machinetest.Name("bench")
	logf("enter: starting machine %s", name)
	m, err := machinetest.Launch(name, machinetest.Spec{Init: machinetest.InitBusybox, PrivateUsers: true, Logf: logf})
	if err != nil {
		b.fail(secEnter, what, err)
		return
	}
	b.c.add(func() {
		if err := m.Close(); err != nil {
			logf("cleanup: %v", err)
			b.c.fail()
		}
	})
	leaderPID := strconv.Itoa(m.Leader)
	ours := command("nspawn-enter NAME -- /bin/true (machine)", b.enter, name, "--", "/bin/true")
	keepCgroup := command("nspawn-enter NAME --keep-cgroup -- /bin/true (machine)", b.enter, name, "--keep-cgroup", "--", "/bin/true")
	byPID := command("nspawn-enter --pid LEADER -- /bin/true (machine)", b.enter, "--pid", leaderPID, "--", "/bin/true")
	ref := command("nsenter -t LEADER -a /bin/true (machine)", b.nsenter, "-t", leaderPID, "-a", "/bin/true")
	show := []string{mctl, "show", "-p", "Leader", "--value", name}
	original := &contender{name: "original: machinectl show -p Leader --value NAME, then nsenter -t LEADER -m -u -i -n -p /bin/true (machine)"}
	original.run = func() (proc, error) {
		t0 := time.Now()
		p1, out, err := runOutput(show, false)
		if err != nil {
			return proc{}, err
		}
		pid := strings.TrimSpace(out)
		if _, err := strconv.Atoi(pid); err != nil || !p1.status.Exited() || p1.status.ExitStatus() != 0 {
			return proc{}, fmt.Errorf("machinectl show: %s, printed %q", p1.describe(), out)
		}
		p2, err := runWant([]string{b.nsenter, "-t", pid, "-m", "-u", "-i", "-n", "-p", "/bin/true"}, 0)
		if err != nil {
			return proc{}, err
		}
		return proc{elapsed: time.Since(t0), steps: []step{{"machinectl show -p Leader --value NAME", p1.elapsed}, {"nsenter -t LEADER -m -u -i -n -p /bin/true", p2.elapsed}}}, nil
	}

	fake := filepath.Join(b.dir, "run-systemd")
	if err := os.MkdirAll(filepath.Join(fake, "system"), 0o755); err != nil {
		b.fail(secEnter, what, err)
		return
	}
	logf("enter: %d alternating rounds on machine %s (leader %d)", b.cfg.runs, name, m.Leader)
	var mctlErr, runErr error
	err = inBootedLookingNS(fake, func() {
		// machinectl works here, or the comparison goes on without it.
		p, out, err := runOutput(show, true)
		if err == nil && (!p.status.Exited() || p.status.ExitStatus() != 0 || strings.TrimSpace(out) != leaderPID) {
			err = fmt.Errorf("%s: %s, printed %q, want the leader %s", shortArgv(show), p.describe(), strings.TrimSpace(out), leaderPID)
		}
		cs := []*contender{ours, keepCgroup, byPID, ref}
		if mctlErr = err; err == nil {
			cs = append(cs, original)
		}
		if runErr = alternate(b.cfg.runs, warmup, cs); runErr == nil {
			b.details = append(b.details, cs...)
		}
	})
	if err == nil {
		err = runErr
	}
	if err != nil {
		b.fail(secEnter, what, err)
		return
	}
	r := ratio(ours.median(), ref.median())
	b.add(secEnter, what, ms(ours.median()), "nsenter -t LEADER -a: "+ms(ref.median()),
		fmt.Sprintf("%.2f× (by name vs by PID)", r), resultInfo)
	b.notes = append(b.notes, fmt.Sprintf("On the real machine, medians: by name rather than `--pid LEADER`: %s of wall time, %s of CPU time (finding the leader through machined's state file); the default move into the machine's cgroup rather than `--keep-cgroup`: %s of wall time, %s of CPU time (nsenter moves nothing).",
		signed(ours.median()-byPID.median()), signed(ours.cpuMedian()-byPID.cpuMedian()), signed(ours.median()-keepCgroup.median()), signed(ours.cpuMedian()-keepCgroup.cpuMedian())))
	const origWhat = "enter the same machine by name, vs the original tool's way"
	if mctlErr != nil {
		b.add(secEnter, origWhat, ms(ours.median()), "machinectl did not work: "+oneLine(mctlErr.Error()), "", resultNA)
	} else {
		r := ratio(ours.median(), original.median())
		b.add(secEnter, origWhat, ms(ours.median()), "`machinectl show -p Leader --value NAME` + `nsenter -m -u -i -n -p`: "+ms(original.median()),
			fmt.Sprintf("%.2f×", r), resultInfo)
		b.notes = append(b.notes, "machinectl refuses to run when PID 1 is not systemd (as on this host): it ran from a thread of this program in a mount namespace of its own with a directory holding `system/` and machined's `machines/` bound over /run/systemd; it asks machined over D-Bus. The original tool's Python start is not included.")
	}
	b.stopMachine(name, m)
}

// stopMachine stops the real machine with nspawn-stop NAME and times it.
func (b *bench) stopMachine(name string, m *machinetest.Machine) {
	const what = "stop the real machine: `nspawn-stop NAME` (signal chosen for busybox init)"
	logf("stop: nspawn-stop %s", name)
	lfd, err := unix.PidfdOpen(m.Leader, 0)
	if err != nil {
		b.fail(secStop, what, err)
		return
	}
	defer unix.Close(lfd)
	null := devNull.Fd()
	sfd := -1
	t0 := time.Now()
	pid, err := spawn([]string{b.stop, name}, []uintptr{null, null, null}, &sfd)
	if err != nil {
		b.fail(secStop, what, err)
		return
	}
	defer unix.Close(sfd)
	at, werr := waitExits([]int{lfd, sfd}, 90*time.Second)
	if werr != nil {
		unix.PidfdSendSignal(sfd, unix.SIGKILL, nil, 0)
	}
	var p proc
	err = reap(pid, &p)
	if err == nil {
		err = werr
	}
	if err == nil && (!p.status.Exited() || p.status.ExitStatus() != 0) {
		err = fmt.Errorf("nspawn-stop %s: %s, want exit 0", name, p.describe())
	}
	if err != nil {
		b.fail(secStop, what, err)
		return
	}
	b.add(secStop, what, fmt.Sprintf("%s in all; its exit %s after the leader's", ms(at[1].Sub(t0)), ms(at[1].Sub(at[0]))),
		"original: SIGTERM (busybox init reboots on it), then polls every 0.2 s", "one run; the time is the init's own shutdown", resultInfo)
}

// inBootedLookingNS runs f on a thread of its own in a mount namespace of
// its own, where fake (a directory holding system/) is bound over
// /run/systemd with machined's state files and socket directory inside, so
// that machinectl, which refuses to run unless systemd is PID 1, works.
// Commands f starts inherit the namespace; the thread ends with f, and
// with it the namespace. Nothing changes for the rest of the program.
func inBootedLookingNS(fake string, f func()) error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime destroys the thread when this returns.
		runtime.LockOSThread()
		done <- func() error {
			// A new mount namespace for this thread (it unshares CLONE_FS too).
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("unshare mount namespace: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("make mounts private: %w", err)
			}
			for _, sub := range []string{"machines", "machine"} {
				src := filepath.Join("/run/systemd", sub)
				if _, err := os.Stat(src); err != nil {
					continue
				}
				dst := filepath.Join(fake, sub)
				if err := os.MkdirAll(dst, 0o755); err != nil {
					return err
				}
				if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
					return fmt.Errorf("bind %s: %w", src, err)
				}
			}
			if err := unix.Mount(fake, "/run/systemd", "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("bind over /run/systemd: %w", err)
			}
			f()
			return nil
		}()
	}()
	return <-done
}
