package main_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
	"golang.org/x/sys/unix"
)

// startInit starts /bin/dash, copied under the name comm, as PID 1 running
// script then waiting in the wait builtin, and waits until its SigCgt
// shows want. dash itself catches INT and CHLD here.
func startInit(t testing.TB, comm, script string, want uint64) *exec.Cmd {
	t.Helper()
	dash := testenv.LookPath(t, "dash")
	b, err := os.ReadFile(dash)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x7fELF")) {
		// A wrapper script copied under an init's name could run the real init.
		testenv.Unavailable(t, "%s is not an ELF binary", dash)
	}
	exe := filepath.Join(t.TempDir(), comm)
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := testenv.StartPID1(t, exe, "-c", script+"; sleep 1000000 & while :; do wait; done")
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	var cgt uint64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(status)
		if err != nil {
			t.Fatal(err)
		}
		if m := regexp.MustCompile(`SigCgt:\s*([0-9a-f]+)`).FindSubmatch(b); m != nil {
			cgt, _ = strconv.ParseUint(string(m[1]), 16, 64)
		}
		if cgt == want {
			return cmd
		}
	}
	t.Fatalf("%s: SigCgt %#x, want %#x", comm, cgt, want)
	return nil
}

// runitLike takes what runit takes (SigCgt INT ALRM CHLD CONT PWR) and
// exits 0 on SIGPWR only.
func runitLike(t testing.TB) *exec.Cmd {
	return startInit(t, "runit", "trap 'exit 0' PWR; trap : INT ALRM CONT", 1<<29|1<<1|1<<13|1<<17|1<<16)
}

// waitExit waits for cmd, bounded so that a hang fails, and returns its status.
func waitExit(t testing.TB, cmd *exec.Cmd) syscall.WaitStatus {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
	cmd.Wait()
	if !timer.Stop() {
		t.Fatalf("%s did not exit within 10s", cmd.Path)
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func machine(t testing.TB, name string, pid int) string {
	return stateDir(t, map[string]string{name: fmt.Sprintf("NAME=%s\nLEADER=%d\nCLASS=container\nSERVICE=systemd-nspawn\n", name, pid)})
}

// TestStopMachine: a machine (a state file naming the stand-in as leader)
// is stopped with the signal its init takes, and nspawn-stop returns once
// it has exited.
func TestStopMachine(t *testing.T) {
	cmd := runitLike(t)
	pid := cmd.Process.Pid
	code, stdout, stderr := run(t, "--state-dir", machine(t, "m1", pid), "m1")
	t.Logf("stderr:\n%s", stderr)
	want := fmt.Sprintf(`^nspawn-stop: sent SIGPWR to pid %d \(init runit: SIGPWR runs stage 3 and halts; it blocks SIGTERM\)\nnspawn-stop: pid %d exited after [0-9.]+ m?s\n$`, pid, pid)
	if code != 0 || stdout != "" || !regexp.MustCompile(want).MatchString(stderr) {
		t.Fatalf("exit %d; stdout %q; stderr does not match %s", code, stdout, want)
	}
	if ws := waitExit(t, cmd); ws.ExitStatus() != 0 {
		t.Fatalf("stand-in: %v, want exit 0 (SIGPWR)", ws)
	}
}

// TestTwoAtOnce: two nspawn-stop on one machine at once both exit 0.
func TestTwoAtOnce(t *testing.T) {
	cmd := runitLike(t)
	dir := machine(t, "m2", cmd.Process.Pid)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			if code, _, stderr := run(t, "--state-dir", dir, "m2"); code != 0 {
				t.Errorf("stop %d: exit %d\n%s", i, code, stderr)
			}
		})
	}
	wg.Wait()
	if ws := waitExit(t, cmd); ws.ExitStatus() != 0 {
		t.Fatalf("stand-in: %v, want exit 0", ws)
	}
}

// TestTimeoutAndKill: PID 1 that takes no signal (sleep) ignores SIGTERM:
// 124 after the timeout; with --kill-after, 137 and it is gone.
func TestTimeoutAndKill(t *testing.T) {
	cmd := testenv.StartPID1(t, testenv.LookPath(t, "sleep"), "1000")
	pid := strconv.Itoa(cmd.Process.Pid)
	code, _, stderr := run(t, "--pid", pid, "--timeout", "300ms")
	t.Logf("stderr:\n%s", stderr)
	for _, want := range []string{
		"nspawn-stop: warning: it takes none of SIGRTMIN+4, SIGRTMIN+3, SIGPWR, SIGTERM",
		"nspawn-stop: sent SIGTERM to pid " + pid + " (unknown init)",
		"nspawn-stop: pid " + pid + " still running: timed out after ",
		"nspawn-stop: hint: the leader, pid " + pid + ", is still running; --kill-after",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if code != 124 {
		t.Fatalf("exit %d, want 124", code)
	}
	code, _, stderr = run(t, "--pid", pid, "--timeout", "0.3", "--kill-after", "5s", "--signal", "TERM")
	t.Logf("stderr:\n%s", stderr)
	if code != 137 || !strings.Contains(stderr, "sent SIGKILL to pid "+pid) || !strings.Contains(stderr, "after SIGKILL") {
		t.Fatalf("exit %d, want 137 and SIGKILL in the messages", code)
	}
	if ws := waitExit(t, cmd); ws.Signal() != syscall.SIGKILL {
		t.Fatalf("sleep: %v, want killed by SIGKILL", ws)
	}
}

// TestDryRun prints the choice and sends nothing.
func TestDryRun(t *testing.T) {
	cmd := runitLike(t)
	pid := cmd.Process.Pid
	code, stdout, stderr := run(t, "--pid", strconv.Itoa(pid), "--dry-run")
	want := fmt.Sprintf(`^leader: pid %d
init: runit \(comm runit, exe /.*/runit\)
takes: INT ALRM CHLD CONT PWR
signal: SIGPWR \(SIGPWR runs stage 3 and halts; it blocks SIGTERM\)
$`, pid)
	if code != 0 || stderr != "" || !regexp.MustCompile(want).MatchString(stdout) {
		t.Fatalf("exit %d; stderr %q; stdout:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}
	code, stdout, _ = run(t, "--pid", strconv.Itoa(pid), "--dry-run", "--signal", "RTMIN+4")
	if code != 0 || !strings.Contains(stdout, "signal: SIGRTMIN+4 (given with --signal; auto would send SIGPWR)") {
		t.Fatalf("exit %d; stdout:\n%s", code, stdout)
	}
	if err := unix.Kill(pid, 0); err != nil {
		t.Fatalf("the stand-in is gone after --dry-run: %v", err)
	}
}

// TestZombie: a leader that has exited but is not reaped: nothing to stop.
func TestZombie(t *testing.T) {
	cmd := testenv.StartPID1(t, testenv.LookPath(t, "true"))
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "--pid", strconv.Itoa(cmd.Process.Pid))
	if code != 0 || stderr != fmt.Sprintf("nspawn-stop: pid %d had already exited\n", cmd.Process.Pid) {
		t.Fatalf("exit %d; stderr %q", code, stderr)
	}
}

// TestJournal: with stderr connected to the stream JOURNAL_STREAM names,
// every line carries an sd-daemon priority prefix.
func TestJournal(t *testing.T) {
	cmd := runitLike(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	stop := exec.Command(testenv.Binary(t, "nspawn-stop"), "--pid", strconv.Itoa(cmd.Process.Pid))
	stop.Env = []string{fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino)}
	stop.Stderr = f
	if err := stop.Run(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^<6>nspawn-stop: sent SIGPWR to pid \d+ .*\n<6>nspawn-stop: pid \d+ exited after .*\n$`).Match(b) {
		t.Fatalf("journal lines:\n%s", b)
	}
	waitExit(t, cmd)
}
