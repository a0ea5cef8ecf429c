package main_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/nstest"
	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
	"golang.org/x/sys/unix"
)

// runTimeout bounds every run of a program so that a hang fails the test.
const runTimeout = 60 * time.Second

// env is the whole environment of every program run here, the same for
// nspawn-enter and nsenter.
var env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}

func TestMain(m *testing.M) {
	// Orphans of the programs under test come back to us, so a test can
	// see what they left running (see checkNoStrays).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		os.Exit(1)
	}
	// Fds we inherited without FD_CLOEXEC would reach every program run
	// here and blur TestFileDescriptors.
	if err := closeOnExec(); err != nil {
		fmt.Fprintln(os.Stderr, "set FD_CLOEXEC on inherited fds:", err)
		os.Exit(1)
	}
	// Commands killed by SIGSEGV (and nsenter re-raising it) dump no core.
	_ = syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
	code := m.Run()
	testenv.RemoveBinaries()
	os.Exit(code)
}

// closeOnExec sets FD_CLOEXEC on all our fds but 0, 1 and 2.
func closeOnExec() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		// The fd ReadDir used is closed by now: EBADF is no error.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && err != unix.EBADF {
			return fmt.Errorf("fd %d: %w", fd, err)
		}
	}
	return nil
}

// result is what one run of a program did.
type result struct {
	cmd    string
	stdout string
	stderr string
	state  *os.ProcessState
}

// status says how the run ended: "exit N" or "signal NAME".
func (r result) status() string {
	ws := r.state.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return "exit " + strconv.Itoa(ws.ExitStatus())
}

func (r result) String() string {
	return fmt.Sprintf("%s: %s\nstdout:\n%s\nstderr:\n%s", r.cmd, r.status(), r.stdout, r.stderr)
}

// run runs prog with args and stdin, and returns how it ended. Failing to
// start it, or a run longer than runTimeout, fails the test.
func run(t testing.TB, stdin, prog string, args ...string) result {
	t.Helper()
	return runWith(t, env, stdin, runTimeout, prog, args...)
}

// runWith is run with an environment, stdin and bound of its own.
func runWith(t testing.TB, environ []string, stdin string, timeout time.Duration, prog string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = environ
	cmd.Dir = "/"
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s: did not finish within %v", cmd, timeout)
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("%s: %v", cmd, err)
	}
	return result{cmd: cmd.String(), stdout: stdout.String(), stderr: stderr.String(), state: cmd.ProcessState}
}

// tools are the two ways to run a command in a target, the oracle first.
type tool struct {
	name string
	argv func(t testing.TB, pid int, cmd ...string) []string
}

func tools(t testing.TB) []tool {
	nsenter := testenv.LookPath(t, "nsenter")
	enter := testenv.Binary(t, "nspawn-enter")
	return []tool{
		{"nsenter", func(_ testing.TB, pid int, cmd ...string) []string {
			return append([]string{nsenter, "-t", strconv.Itoa(pid), "-a"}, cmd...)
		}},
		{"nspawn-enter", func(_ testing.TB, pid int, cmd ...string) []string {
			// nsenter -a starts in the target's working directory, "/";
			// nspawn-enter starts in the user's home unless told.
			return append([]string{enter, "--pid", strconv.Itoa(pid), "--wd", "/", "--"}, cmd...)
		}},
	}
}

// children returns the PIDs of our children.
func children(t testing.TB) []int {
	t.Helper()
	return testenv.ChildrenOf(t, os.Getpid())
}

// checkNoStrays fails the test if a run left a process behind: a child of
// ours not in before (orphans come to us, the subreaper), or a child of a
// target's PID 1 (orphans inside the target's PID namespace go there). It
// kills and reaps what it finds, so that nothing stays running.
func checkNoStrays(t testing.TB, before []int, targets ...*nstest.Target) {
	t.Helper()
	for _, pid := range children(t) {
		if slices.Contains(before, pid) {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		t.Errorf("process %d (%s) left behind", pid, bytes.TrimSpace(comm))
		// Our child: killing and reaping it by pid is safe.
		_ = syscall.Kill(pid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, 0, nil)
	}
	for _, tg := range targets {
		if kids := testenv.ChildrenOf(t, tg.PID); len(kids) > 0 {
			t.Errorf("target %s: PID 1 (pid %d) has children %v left behind", tg.Name, tg.PID, kids)
		}
	}
}

// observed is a command seen from the host while it runs.
type observed struct {
	pid   int // its host PID
	ns    map[string]uint64
	nspid []int
}

// observe runs argv, whose command must be `/bin/sh -c 'echo ready; read x'`,
// and looks at that shell from the host once it is ready: it finds the
// process among the program's descendants whatever /proc the command sees.
func observe(t testing.TB, argv []string) observed {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = "/"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v\nstderr:\n%s", cmd, err, stderr.String())
			}
		case <-time.After(runTimeout):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%s: did not exit within %v of its stdin closing", cmd, runTimeout)
		}
	}()

	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		if line != "ready\n" {
			t.Fatalf("%s: printed %q, not ready\nstderr:\n%s", cmd, line, stderr.String())
		}
	case <-time.After(runTimeout):
		_ = cmd.Process.Kill()
		t.Fatalf("%s: not ready within %v", cmd, runTimeout)
	}

	for _, pid := range testenv.Descendants(t, cmd.Process.Pid) {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || string(comm) != "sh\n" {
			continue
		}
		o := observed{pid: pid}
		if o.ns, err = nstest.Namespaces(pid); err != nil {
			t.Fatal(err)
		}
		if o.nspid, err = nstest.NSpid(pid); err != nil {
			t.Fatal(err)
		}
		return o
	}
	t.Fatalf("%s: no sh among the descendants of pid %d", cmd, cmd.Process.Pid)
	return observed{}
}
