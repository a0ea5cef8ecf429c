package leader

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
	"golang.org/x/sys/unix"
)

// startProcess starts a long sleep (optionally under another program
// name) and ends it when the test ends.
func startProcess(t *testing.T, argv ...string) *exec.Cmd {
	t.Helper()
	if len(argv) == 0 {
		argv = []string{"sleep", "600"}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

func monotonicNow(t *testing.T) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano() / 1000)
}

// writeState writes a state file for name into a fresh state directory.
func writeState(t *testing.T, dir, name string, pid int, extra string) {
	t.Helper()
	data := fmt.Sprintf("# This is private data. Do not parse.\nNAME=%s\nSCOPE=test-%s.scope\nSERVICE=systemd-nspawn\nROOT=/\nLEADER=%d\nCLASS=container\n%s",
		name, name, pid, extra)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func opts(dir string) *Options { return &Options{StateDir: dir, Varlink: "-"} }

func TestOpen(t *testing.T) {
	cmd := startProcess(t)
	l, err := Open(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if comm, err := l.Comm(); err != nil || comm != "sleep" {
		t.Errorf("Comm() = %q, %v", comm, err)
	}
	if exe, err := l.Exe(); err != nil || filepath.Base(exe) != "sleep" {
		t.Errorf("Exe() = %q, %v", exe, err)
	}
	if l.Exited() {
		t.Error("Exited() = true for a live process")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !l.Exited() {
		t.Error("Exited() = false after the process was reaped")
	}
	// The pinned /proc directory never follows the PID to a new process.
	if _, err := l.Comm(); !errors.Is(err, unix.ESRCH) {
		t.Errorf("Comm() after exit: %v, want ESRCH", err)
	}
}

// ReadProc reads a file of many pages whole, and stops at 1 MiB.
func TestReadProcLong(t *testing.T) {
	for _, size := range []int{100, 4095, 4096, 4097, 70 << 10, 3 << 19} {
		// The environment of a sleep, in strings of at most 64 KiB (the
		// kernel takes none over 128 KiB, and 2 MiB in all).
		var env []string
		for i := 0; i < size; i += 64 << 10 {
			env = append(env, fmt.Sprintf("X%d=%s", i, strings.Repeat("e", min(size-i, 64<<10))))
		}
		want := strings.Join(env, "\x00") + "\x00"
		if len(want) > 1<<20 {
			want = want[:1<<20]
		}
		if got := readEnviron(t, env); string(got) != want {
			t.Errorf("ReadProc(environ) with %d bytes: got %d bytes, want %d", size, len(got), len(want))
		}
	}
}

// readEnviron starts a sleep with env and reads its /proc/PID/environ
// through ReadProc once the sleep runs with its environment in place:
// before its execve, the child of exec.Cmd still shows this program, and
// during it, comm changes before the new environment is set up (the file
// reads empty then).
func readEnviron(t *testing.T, env []string) []byte {
	t.Helper()
	cmd := exec.Command("/bin/sleep", "600")
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	l, err := Open(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if comm, _ := l.Comm(); comm == "sleep" {
			data, err := l.ReadProc("environ")
			if err != nil {
				t.Fatal(err)
			}
			if len(data) > 0 {
				return data
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: no sleep with an environment after 5s", cmd.Process.Pid)
		}
	}
}

func TestOpenNoProcess(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{cmd.Process.Pid, 0, -1, 1 << 30} {
		if _, err := Open(pid); !errors.Is(err, ErrNoProcess) {
			t.Errorf("Open(%d) = %v, want ErrNoProcess", pid, err)
		}
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	cmd := startProcess(t)
	writeState(t, dir, "m1", cmd.Process.Pid, fmt.Sprintf("MONOTONIC=%d\n", monotonicNow(t)))
	l, err := Find("m1", opts(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.PID != cmd.Process.Pid || l.Machine != "m1" || l.State.Scope != "test-m1.scope" {
		t.Errorf("Find = %+v", l)
	}
	if got := Machines(opts(dir)); len(got) != 1 || got[0].Name != "m1" || got[0].Leader != cmd.Process.Pid {
		t.Errorf("Machines = %v", got)
	}
}

func TestFindPidfdID(t *testing.T) {
	testenv.RequireRoot(t) // a pidfs inode of another process is seen the same by root and others, but keep the tier honest
	dir := t.TempDir()
	cmd := startProcess(t)
	l, err := Open(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	id, err := l.PidfdID()
	l.Close()
	if err != nil || id == 0 {
		t.Fatalf("PidfdID = %d, %v", id, err)
	}
	writeState(t, dir, "good", cmd.Process.Pid, fmt.Sprintf("LEADER_PIDFDID=%d\n", id))
	if l, err := Find("good", opts(dir)); err != nil {
		t.Errorf("matching LEADER_PIDFDID: %v", err)
	} else {
		l.Close()
	}
	writeState(t, dir, "other", cmd.Process.Pid, fmt.Sprintf("LEADER_PIDFDID=%d\n", id+1))
	if _, err := Find("other", opts(dir)); !errors.Is(err, ErrNotRunning) {
		t.Errorf("wrong LEADER_PIDFDID: %v, want ErrNotRunning", err)
	}
}

func TestFindStale(t *testing.T) {
	dir := t.TempDir()
	// A leader that has exited.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	writeState(t, dir, "gone", dead.Process.Pid, "")
	_, err := Find("gone", opts(dir))
	var nr *NotRunningError
	if !errors.As(err, &nr) || !strings.Contains(nr.Reason, "exited") {
		t.Errorf("exited leader: %v", err)
	}
	// A PID that now belongs to a process started after the registration.
	cmd := startProcess(t)
	writeState(t, dir, "reused", cmd.Process.Pid, "MONOTONIC=1000\n")
	if _, err := Find("reused", opts(dir)); !errors.As(err, &nr) || !strings.Contains(nr.Reason, "another process") {
		t.Errorf("reused pid: %v", err)
	}
	// Unknown machine: the running ones are listed, not the stale records.
	alive := startProcess(t)
	writeState(t, dir, "alive", alive.Process.Pid, "")
	if _, err := Find("nosuch", opts(dir)); !errors.As(err, &nr) || strings.Join(nr.Running, ",") != "alive" {
		t.Errorf("unknown machine: %v (running %v), want alive alone listed", err, nr)
	}
	if _, err := Find("gone", opts(dir)); !errors.As(err, &nr) || strings.Join(nr.Running, ",") != "alive" {
		t.Errorf("stale machine: %v (running %v), want alive alone listed", err, nr)
	}
	var names []string
	for _, st := range Machines(opts(dir)) {
		names = append(names, st.Name)
	}
	if strings.Join(names, ",") != "alive" {
		t.Errorf("Machines lists %v, want alive alone", names)
	}
}

func TestFindBadRecords(t *testing.T) {
	dir := t.TempDir()
	cmd := startProcess(t)
	writeState(t, dir, "real", cmd.Process.Pid, "")
	if err := os.WriteFile(filepath.Join(dir, "wrong"), []byte(fmt.Sprintf("NAME=real\nLEADER=%d\n", cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Find("wrong", opts(dir)); !errors.Is(err, ErrBadState) {
		t.Errorf("NAME mismatch: %v, want ErrBadState", err)
	}
	if err := os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := Find("link", opts(dir)); err == nil {
		t.Error("a symlinked state file was followed")
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Find("fifo", opts(dir)); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a FIFO state file was accepted")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Find blocked on a FIFO state file")
	}
	for _, name := range []string{"../x", "a/b", ".host", ""} {
		if _, err := Find(name, opts(dir)); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Find(%q) = %v, want ErrInvalidName", name, err)
		}
	}
}

// TestFindWaitsForExec: machined registers the leader before it has exec'd
// the machine's init, while its comm is still systemd-nspawn.
func TestFindWaitsForExec(t *testing.T) {
	bin := t.TempDir()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(bin, "systemd-nspawn")
	if err := os.Symlink(sh, fake); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := startProcess(t, fake, "-c", "sleep 0.3; exec sleep 600")
	writeState(t, dir, "starting", cmd.Process.Pid, "")
	t0 := time.Now()
	l, err := Find("starting", opts(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if comm, _ := l.Comm(); comm != "sleep" {
		t.Errorf("leader comm after Find = %q, want sleep (waited %v)", comm, time.Since(t0))
	}

	// sleep under the name systemd-nspawn: a leader that never execs.
	stuck := filepath.Join(t.TempDir(), "systemd-nspawn")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sleep, stuck); err != nil {
		t.Fatal(err)
	}
	cmd2 := startProcess(t, stuck, "600")
	writeState(t, dir, "stuck", cmd2.Process.Pid, "")
	o := opts(dir)
	o.ExecWait = 100 * time.Millisecond
	if _, err := Find("stuck", o); err == nil || !strings.Contains(err.Error(), "still starting") {
		t.Errorf("leader that never execs: %v", err)
	}
}

func TestParseListReplyReal(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "testdata", "machined-257", "io.systemd.Machine.List.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var got []*Machine
	for sc.Scan() {
		// varlinkctl prints one JSON reply per line, each after an RS (0x1e).
		m, err := parseListReply([]byte(`{"parameters":` + strings.TrimPrefix(sc.Text(), "\x1e") + `}`))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	if len(got) != 2 {
		t.Fatalf("%d replies", len(got))
	}
	inner := got[1].state()
	if inner.Name != "inner" || inner.Leader != 131 || inner.LeaderPidfdID != 234553 ||
		inner.Scope != "machine-inner.scope" || inner.Monotonic != 4596874717 || inner.Root != "/var/lib/machines/inner" {
		t.Errorf("inner = %+v", inner)
	}
	if _, err := parseListReply([]byte(`{"error":"io.systemd.Machine.NoSuchMachine","parameters":{}}`)); !errors.Is(err, errNoSuchMachine) {
		t.Errorf("NoSuchMachine: %v", err)
	}
}

// serveList answers one io.systemd.Machine.List call on a unix socket
// the way machined 257 does, with reply as the parameters (or an error).
func serveList(t *testing.T, reply string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "io.systemd.Machine")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := bufio.NewReader(c).ReadBytes(0)
		if err != nil || !strings.Contains(string(req), `"method":"io.systemd.Machine.List"`) {
			return
		}
		c.Write(append([]byte(reply), 0))
	}()
	return sock
}

func TestFindVarlink(t *testing.T) {
	cmd := startProcess(t)
	l, err := Open(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := l.PidfdID()
	l.Close()
	reply := func(pidfdID uint64) string {
		return fmt.Sprintf(`{"parameters":{"name":"vm1","id":"739d334d1a704f3393fdee4bfdf9874f","class":"container","service":"systemd-nspawn","rootDirectory":"/","unit":"machine-vm1.scope","leader":{"pid":%d,"pidfdId":%d,"bootId":"b9fc1e4389b145968d84f63f8120aea6"},"timestamp":{"realtime":1796318815616367,"monotonic":%d}}}`,
			cmd.Process.Pid, pidfdID, monotonicNow(t))
	}
	empty := t.TempDir() // no state files: the answer must come from varlink
	l, err = Find("vm1", &Options{StateDir: empty, Varlink: serveList(t, reply(id))})
	if err != nil {
		t.Fatalf("varlink: %v", err)
	}
	if l.PID != cmd.Process.Pid || l.State.Scope != "machine-vm1.scope" {
		t.Errorf("varlink: %+v", l)
	}
	l.Close()
	if _, err := Find("vm1", &Options{StateDir: empty, Varlink: serveList(t, reply(id+1))}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("varlink, wrong pidfdId: %v, want ErrNotRunning", err)
	}
	noSuch := `{"error":"io.systemd.Machine.NoSuchMachine","parameters":{}}`
	if _, err := Find("vm1", &Options{StateDir: empty, Varlink: serveList(t, noSuch)}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("varlink, no such machine: %v, want ErrNotRunning", err)
	}
	// No socket: the state file decides.
	writeState(t, empty, "vm1", cmd.Process.Pid, "")
	l, err = Find("vm1", &Options{StateDir: empty, Varlink: filepath.Join(empty, "nosocket")})
	if err != nil {
		t.Fatalf("fallback to the state file: %v", err)
	}
	l.Close()
}

// TestStateReplacedWhileRead: machined replaces a state file by renaming a
// new one over it; a lookup meanwhile sees the old or the new record whole.
func TestStateReplacedWhileRead(t *testing.T) {
	dir := t.TempDir()
	a, b := startProcess(t), startProcess(t)
	writeState(t, dir, "m", a.Process.Pid, "")
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			pid := a.Process.Pid
			if i%2 == 1 {
				pid = b.Process.Pid
			}
			tmp := filepath.Join(dir, ".#m")
			data := fmt.Sprintf("# This is private data. Do not parse.\nNAME=m\nSCOPE=test-m.scope\nLEADER=%d\nCLASS=container\n", pid)
			if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
				done <- err
				return
			}
			if err := os.Rename(tmp, filepath.Join(dir, "m")); err != nil {
				done <- err
				return
			}
		}
	}()
	for i := 0; i < 2000; i++ {
		l, err := Find("m", opts(dir))
		if err != nil {
			t.Errorf("lookup %d while the record is replaced: %v", i, err)
			break
		}
		if l.PID != a.Process.Pid && l.PID != b.Process.Pid {
			t.Errorf("lookup %d: leader %d, neither record's", i, l.PID)
		}
		l.Close()
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
