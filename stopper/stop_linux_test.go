package stopper

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
	"github.com/nspawn-tools/nspawn-tools/leader"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinaries()
	os.Exit(code)
}

// A standIn plays an init: /bin/dash, copied under the init's command name,
// runs as PID 1 of a new PID namespace and traps exactly the signals the
// real init takes (DESIGN.md, "Stopping"). A signal that halts the real
// init makes it exit 0; one that reboots or re-executes it, another code.
type standIn struct {
	comm   string
	script string    // traps, set before the wait loop
	takes  SignalSet // SigCgt once set up: the traps plus dash's own CHLD
	want   unix.Signal
}

// dash catches two signals itself when it runs as here (measured): INT,
// unless it inherited INT ignored, and CHLD once it has a background job.

// waitLoop keeps dash (PID 1) alive in the interruptible wait builtin,
// which returns to run a trap as soon as a trapped signal arrives.
const waitLoop = "; sleep 1000000 & while :; do wait; done"

var standIns = []standIn{
	{"systemd", "trap 'exit 0' RTMIN+3 RTMIN+4; trap 'exit 99' TERM; trap 'exit 133' INT; trap 'exit 255' QUIT; trap : HUP USR1 USR2 PWR CONT",
		set(37, 38, 15, 2, 3, 1, 10, 12, 30, 18, 17), SIGRTMIN + 4},
	{"runit", "trap 'exit 0' PWR; trap : INT ALRM CONT", set(30, 2, 14, 18, 17), unix.SIGPWR},
	{"s6-svscan", "trap 'exit 0' TERM QUIT INT; trap : HUP USR1 USR2 PWR", set(15, 3, 2, 1, 10, 12, 30, 17), unix.SIGTERM},
	{"openrc-init", "trap 'exit 0' TERM PWR; trap 'exit 133' INT", set(15, 30, 2, 17), unix.SIGTERM},
	{"myinit", "trap 'exit 0' PWR; trap 'exit 99' TERM; trap 'exit 133' INT", set(30, 15, 2, 17), unix.SIGPWR},
	{"pid1", "trap 'exit 0' RTMIN+4; trap 'exit 99' TERM PWR", set(38, 15, 30, 2, 17), SIGRTMIN + 4},
	{"tini", "trap 'exit 0' TERM; trap : HUP", set(15, 1, 2, 17), unix.SIGTERM},
}

func set(sigs ...unix.Signal) SignalSet {
	var s SignalSet
	for _, sig := range sigs {
		s |= 1 << (sig - 1)
	}
	return s
}

// start runs the stand-in and waits until its SigCgt is exactly s.takes.
func (s standIn) start(t testing.TB) (*exec.Cmd, *leader.Leader) {
	t.Helper()
	exe := filepath.Join(t.TempDir(), s.comm)
	copyFile(t, testenv.LookPath(t, "dash"), exe)
	cmd := testenv.StartPID1(t, exe, "-c", s.script+waitLoop)
	l := open(t, cmd.Process.Pid)
	var cgt SignalSet
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		status, err := l.ReadProc("status")
		if err != nil {
			t.Fatal(err)
		}
		if cgt, _ = statusMask(status, "SigCgt:"); cgt == s.takes {
			return cmd, l
		}
	}
	t.Fatalf("%s: SigCgt is %s, want %s", s.comm, cgt, s.takes)
	return nil, nil
}

// copyFile copies the executable from to to. It must be an ELF binary: a
// wrapper script (a pyenv shim, say) copied under an init's name would
// look up and run the real init of that name, on the host's root.
func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x7fELF")) {
		testenv.Unavailable(t, "%s is not an ELF binary (a wrapper script?)", from)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func open(t testing.TB, pid int) *leader.Leader {
	t.Helper()
	l, err := leader.Open(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// exitCode waits for cmd with a generous bound, so that a hang fails.
func exitCode(t testing.TB, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan struct{})
	timer := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	go func() { cmd.Wait(); close(done) }()
	<-done
	if !timer.Stop() {
		t.Fatalf("%s did not exit within 10s", cmd.Args[0])
	}
	return cmd.ProcessState.ExitCode()
}

type testReport struct{ t testing.TB }

func (r testReport) Info(f string, a ...any)    { r.t.Logf("info: "+f, a...) }
func (r testReport) Warning(f string, a ...any) { r.t.Logf("warning: "+f, a...) }

// TestAutoStopsEachInit: the automatic choice stops every stand-in with the
// signal that halts the real init.
func TestAutoStopsEachInit(t *testing.T) {
	for _, s := range standIns {
		t.Run(s.comm, func(t *testing.T) {
			cmd, l := s.start(t)
			c, err := Choose(l, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("comm %s exe %s: %s (takes %s)", c.Comm, c.Exe, c.Reason, c.Takes)
			if c.Signal != s.want || c.Doubt != "" {
				t.Fatalf("chose %s (doubt %q), want %s", SignalName(c.Signal), c.Doubt, SignalName(s.want))
			}
			res, err := Stop(l, Options{Timeout: 10 * time.Second, Report: testReport{t}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != Exited {
				t.Fatalf("outcome %v, want Exited", res.Outcome)
			}
			if code := exitCode(t, cmd); code != 0 {
				t.Fatalf("stand-in exited %d: the signal did the wrong thing", code)
			}
			t.Logf("signal to wake: %v", res.Waited)
		})
	}
}

// signalfdInit plays an init that takes signals the way systemd and
// s6-svscan do: it blocks them and reads them from a signalfd (python3,
// copied under the init's name, through ctypes). Its exit code is the
// one given for the signal it read.
const signalfdInit = `
import ctypes, os, signal, struct, sys
codes = {int(k): int(v) for k, v in (a.split("=") for a in sys.argv[1:])}
mask = 0
for sig in codes:
    mask |= 1 << (sig - 1)
signal.pthread_sigmask(signal.SIG_BLOCK, list(codes))
fd = ctypes.CDLL(None, use_errno=True).signalfd(-1, ctypes.c_char_p(struct.pack("Q", mask)), 0)
if fd < 0:
    os._exit(120)
while True:
    sig = struct.unpack("I", os.read(fd, 128)[:4])[0]
    if codes[sig] >= 0:
        os._exit(codes[sig])
`

// TestSignalfdInits: stand-ins for systemd and s6-svscan that take their
// signals by signalfd, as the real ones do (SigCgt shows none of them).
func TestSignalfdInits(t *testing.T) {
	// Debian's interpreter, not whatever python3 is first on PATH (a
	// pyenv shim is a script that runs "pyenv exec" on its own name).
	py, err := filepath.EvalSymlinks("/usr/bin/python3")
	if err != nil {
		testenv.Unavailable(t, "needs /usr/bin/python3: %v", err)
	}
	for _, tc := range []struct {
		comm  string
		codes map[unix.Signal]int // exit code per signal; -1: does nothing
		want  unix.Signal
	}{
		{"systemd", map[unix.Signal]int{37: 0, 38: 0, 15: 99, 2: 133, 1: -1, 10: -1, 12: -1, 30: -1, 18: -1, 17: -1}, SIGRTMIN + 4},
		{"s6-svscan", map[unix.Signal]int{15: 0, 3: 0, 2: 0, 1: -1, 10: -1, 12: -1, 30: -1, 17: -1}, unix.SIGTERM},
		{"fdinit", map[unix.Signal]int{15: 99, 30: 0, 1: -1}, unix.SIGPWR},
	} {
		t.Run(tc.comm, func(t *testing.T) {
			exe := filepath.Join(t.TempDir(), tc.comm)
			copyFile(t, py, exe)
			args := []string{exe, "-c", signalfdInit}
			var mask SignalSet
			for sig, code := range tc.codes {
				args = append(args, fmt.Sprintf("%d=%d", sig, code))
				mask |= set(sig)
			}
			cmd := testenv.StartPID1(t, args...)
			l := open(t, cmd.Process.Pid)
			var sigs Signals
			for deadline := time.Now().Add(5 * time.Second); sigs.Signalfd != mask && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if sigs, err = ReadSignals(l); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("SigCgt %s; SigBlk %s; signalfd %s", sigs.Caught, sigs.Blocked, sigs.Signalfd)
			if sigs.Signalfd != mask || sigs.Caught.Has(tc.want) {
				t.Fatalf("signalfd mask %s, want %s, and no handler for %s", sigs.Signalfd, mask, SignalName(tc.want))
			}
			res, err := Stop(l, Options{Timeout: 10 * time.Second, Report: testReport{t}})
			if err != nil || res.Outcome != Exited || res.Signal != tc.want {
				t.Fatalf("Stop = %+v, %v; want %s and Exited", res, err, SignalName(tc.want))
			}
			if code := exitCode(t, cmd); code != 0 {
				t.Fatalf("stand-in exited %d: the signal did the wrong thing", code)
			}
		})
	}
}

// TestBusyboxInit runs the real busybox init applet as PID 1 in a small
// chroot. It takes signals only by rt_sigtimedwait (no handler, nothing
// blocked while it waits): Takes must read the waited set from its memory.
func TestBusyboxInit(t *testing.T) {
	testenv.RequireRoot(t)
	bb := testenv.LookPath(t, "busybox")
	root := t.TempDir()
	for _, d := range []string{"bin", "sbin", "etc"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, bb, filepath.Join(root, "bin", "busybox"))
	for link, target := range map[string]string{"bin/sh": "busybox", "bin/true": "busybox", "sbin/init": "../bin/busybox"} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "inittab"), []byte("::sysinit:/bin/true\n::shutdown:/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/sbin/init")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Unshareflags: syscall.CLONE_NEWNS, Chroot: root}
	if err := cmd.Start(); err != nil {
		testenv.Unavailable(t, "start busybox init: %v", err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	l := open(t, cmd.Process.Pid)
	var w SignalSet
	for deadline := time.Now().Add(5 * time.Second); !w.Has(unix.SIGUSR2) && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		w = waited(l)
	}
	status, _ := l.ReadProc("status")
	cgt, _ := statusMask(status, "SigCgt:")
	blk, _ := statusMask(status, "SigBlk:")
	t.Logf("busybox init: SigCgt %s, SigBlk %s, rt_sigtimedwait set %s", cgt, blk, w)
	if !w.Has(unix.SIGUSR2) {
		t.Fatalf("rt_sigtimedwait set %s lacks USR2", w)
	}
	c, err := Choose(l, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("comm %s exe %s: %s", c.Comm, c.Exe, c.Reason)
	if c.Init == nil || c.Init.Name != "busybox init" || c.Signal != unix.SIGUSR2 {
		t.Fatalf("chose %s for %+v, want SIGUSR2 for busybox init", SignalName(c.Signal), c.Init)
	}
	res, err := Stop(l, Options{Timeout: 10 * time.Second, Report: testReport{t}})
	if err != nil || res.Outcome != Exited {
		t.Fatalf("Stop = %+v, %v", res, err)
	}
	exitCode(t, cmd)
	// reboot(2) in a PID namespace ends its init with SIGINT for power-off
	// and halt, SIGHUP for reboot.
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Fatalf("busybox init ended with %v, want killed by SIGINT (power-off)", ws)
	}
	t.Logf("signal to wake: %v", res.Waited)
}

// TestJustStarted: an init that does not take its signal yet is waited
// for, not sent a signal it would ignore.
func TestJustStarted(t *testing.T) {
	for _, comm := range []string{"runit", "myinit"} {
		t.Run(comm, func(t *testing.T) {
			exe := filepath.Join(t.TempDir(), comm)
			copyFile(t, testenv.LookPath(t, "dash"), exe)
			cmd := testenv.StartPID1(t, exe, "-c", "sleep 0.3; trap 'exit 0' PWR"+waitLoop)
			l := open(t, cmd.Process.Pid)
			res, err := Stop(l, Options{Timeout: 10 * time.Second, Report: testReport{t}})
			if err != nil || res.Outcome != Exited || res.Signal != unix.SIGPWR {
				t.Fatalf("Stop = %+v, %v; want SIGPWR and Exited", res, err)
			}
			if code := exitCode(t, cmd); code != 0 {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

// TestTimeoutAndKill: a PID 1 that takes no signal ignores SIGTERM; the
// wait times out, and with Kill, SIGKILL ends it.
func TestTimeoutAndKill(t *testing.T) {
	cmd := testenv.StartPID1(t, testenv.LookPath(t, "sleep"), "1000")
	l := open(t, cmd.Process.Pid)
	c, err := Choose(l, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c.Signal != unix.SIGTERM || c.Doubt == "" {
		t.Fatalf("choice %+v, want SIGTERM with a doubt", c)
	}
	res, err := Stop(l, Options{Signal: unix.SIGTERM, Timeout: 200 * time.Millisecond, Report: testReport{t}})
	if err != nil || res.Outcome != TimedOut {
		t.Fatalf("Stop = %+v, %v; want TimedOut", res, err)
	}
	res, err = Stop(l, Options{Signal: unix.SIGTERM, Timeout: 200 * time.Millisecond, Kill: true, KillAfter: 10 * time.Second, Report: testReport{t}})
	if err != nil || res.Outcome != Killed {
		t.Fatalf("Stop = %+v, %v; want Killed", res, err)
	}
	exitCode(t, cmd)
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signal() != syscall.SIGKILL {
		t.Fatalf("ended with %v, want SIGKILL", ws)
	}
}

// TestZombie: a leader that exited but is not reaped has a readable pidfd
// and takes pidfd_send_signal without error; Stop calls it not running.
func TestZombie(t *testing.T) {
	cmd := testenv.StartPID1(t, testenv.LookPath(t, "true"))
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	l := open(t, cmd.Process.Pid)
	if err := Send(l, unix.SIGTERM); err != nil {
		t.Fatalf("pidfd_send_signal on a zombie: %v, want success", err)
	}
	res, err := Stop(l, Options{Timeout: time.Second, Report: testReport{t}})
	if err != nil || res.Outcome != NotRunning {
		t.Fatalf("Stop = %+v, %v; want NotRunning", res, err)
	}
	exitCode(t, cmd)
}

// TestReaped: the leader exits and is reaped between resolution and the
// signal: pidfd_send_signal says ESRCH, and Stop calls it not running.
func TestReaped(t *testing.T) {
	cmd := testenv.StartPID1(t, testenv.LookPath(t, "sleep"), "1000")
	l := open(t, cmd.Process.Pid)
	cmd.Process.Kill()
	cmd.Wait()
	if err := Send(l, unix.SIGTERM); !errors.Is(err, ErrExited) {
		t.Fatalf("Send after reaping: %v, want ErrExited", err)
	}
	res, err := Stop(l, Options{Timeout: time.Second, Report: testReport{t}})
	if err != nil || res.Outcome != NotRunning {
		t.Fatalf("Stop = %+v, %v; want NotRunning", res, err)
	}
}

// TestTwoAtOnce: two stops of one leader, each with its own pidfd, both
// succeed.
func TestTwoAtOnce(t *testing.T) {
	cmd, _ := standIns[1].start(t)
	var wg sync.WaitGroup
	for i := range 2 {
		l := open(t, cmd.Process.Pid)
		wg.Go(func() {
			res, err := Stop(l, Options{Timeout: 10 * time.Second, Report: testReport{t}})
			if err != nil || res.Outcome != Exited && res.Outcome != NotRunning {
				t.Errorf("stop %d: %+v, %v", i, res, err)
			}
		})
	}
	wg.Wait()
	if code := exitCode(t, cmd); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestRecognise(t *testing.T) {
	for _, tc := range []struct{ comm, exe, want string }{
		{"systemd", "/usr/lib/systemd/systemd", "systemd"},
		{"init", "/lib/systemd/systemd", "systemd"},
		{"init", "/bin/busybox", "busybox init"},
		{"busybox", "/bin/busybox (deleted)", "busybox init"},
		{"sh", "/bin/busybox", ""},
		{"init", "/sbin/init", ""},
		{"runit", "", "runit"},
		{"s6-svscan", "/usr/bin/s6-svscan", "s6-svscan"},
		{"openrc-init", "/sbin/openrc-init", "openrc-init"},
		{"bash", "/bin/bash", ""},
	} {
		got := ""
		if in := Recognise(tc.comm, tc.exe); in != nil {
			got = in.Name
		}
		if got != tc.want {
			t.Errorf("Recognise(%q, %q) = %q, want %q", tc.comm, tc.exe, got, tc.want)
		}
	}
}
