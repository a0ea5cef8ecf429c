package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// TestSessionEndsWithMachine: when the machine's PID 1 dies while a
// command runs inside, the command dies with its PID namespace and
// nspawn-enter ends the same way, at once; nothing is left running.
func TestSessionEndsWithMachine(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	for _, spec := range []nstest.Spec{{Name: "ends"}, {Name: "ends-user", User: true}} {
		t.Run(spec.Name, func(t *testing.T) {
			tg := nstest.Start(t, spec)
			cmd := exec.Command(enter, "--pid", strconv.Itoa(tg.PID), "--no-pty", "--", "/bin/sh", "-c", "echo ready; exec sleep 1000")
			testenv.StartReady(t, cmd)
			if err := syscall.Kill(tg.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			testenv.WaitEnd(t, cmd, 10*time.Second)
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Errorf("nspawn-enter ended with %v, want death by SIGKILL like its command", cmd.ProcessState)
			}
		})
	}
}

// TestLowOpenFilesLimit: with a tiny RLIMIT_NOFILE nspawn-enter either
// works or says why in one line, never crashes or hangs; the command gets
// the machine's limit, but never more than the caller's.
func TestLowOpenFilesLimit(t *testing.T) {
	prlimit := testenv.LookPath(t, "prlimit")
	enter := testenv.Binary(t, "nspawn-enter")
	tg := nstest.Start(t, nstest.Spec{Name: "nofile", User: true})
	for _, n := range []string{"64", "32", "31", "8", "4"} {
		r := run(t, "", prlimit, "--nofile="+n+":"+n, enter, "--pid", strconv.Itoa(tg.PID), "--", "/bin/sh", "-c", "ulimit -n")
		switch {
		case r.status() == "exit 0":
			// The machine's own limit, but never above the caller's.
			if limit := strings.TrimSpace(r.stdout); limit != n {
				t.Errorf("limit %s: the command's open files limit is %s", n, limit)
			}
		case r.status() == "exit 125":
			if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); !strings.HasPrefix(lines[0], "nspawn-enter: error: ") {
				t.Errorf("limit %s: failure without a clear error:\n%v", n, r)
			}
		default:
			t.Errorf("limit %s: %v", n, r)
		}
		t.Logf("RLIMIT_NOFILE %s: %s %q %q", n, r.status(), strings.TrimSpace(r.stdout), strings.TrimSpace(r.stderr))
	}
}

// TestHidepid: a /proc mounted with hidepid=invisible does not keep root's
// nspawn-enter from finding and entering the target.
func TestHidepid(t *testing.T) {
	unshare := testenv.LookPath(t, "unshare")
	enter := testenv.Binary(t, "nspawn-enter")
	tg := nstest.Start(t, nstest.Spec{Name: "hidepid", User: true})
	script := `mount -t proc -o hidepid=invisible proc /proc && exec "$0" --pid "$1" -- /bin/sh -c 'hostname'`
	r := run(t, "", unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", script, enter, strconv.Itoa(tg.PID))
	if r.status() != "exit 0" || r.stdout != "hidepid\n" {
		t.Errorf("under hidepid=invisible: %v", r)
	}
}

// TestProcessLimit: under a pids cgroup limit nspawn-enter either works or,
// when its fork is refused, says so in one line (125). Below what the Go
// runtime needs for its own threads, the runtime itself dies with "failed
// to create new OS thread" (exit 2): nothing in the program can catch
// that. Which of the three a given limit gives depends on how many threads
// the runtime has started by then, which varies from run to run; the clean
// refusal is reached deterministically by nsjoin's TestForkRefused. When
// the runtime dies after the fork, the command it started runs on as an
// orphan: it must end by itself, as /bin/true does.
func TestProcessLimit(t *testing.T) {
	testenv.RequireRoot(t)
	pids := "/sys/fs/cgroup/pids"
	if _, err := os.Stat(filepath.Join(pids, "cgroup.procs")); err != nil {
		testenv.Unavailable(t, "needs the cgroup v1 pids hierarchy at %s: %v", pids, err)
	}
	enter := testenv.Binary(t, "nspawn-enter")
	tg := nstest.Start(t, nstest.Spec{Name: "pids", User: true})
	cg := filepath.Join(pids, fmt.Sprintf("nspawntest-pids-%d", os.Getpid()))
	testenv.MakeCgroup(t, cg)
	worked := false
	for n := 1; n <= 16; n++ {
		if err := os.WriteFile(filepath.Join(cg, "pids.max"), []byte(strconv.Itoa(n)), 0o644); err != nil {
			t.Fatal(err)
		}
		before := children(t)
		r := run(t, "", "/bin/sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$1" --pid "$2" -- /bin/true`, cg, enter, strconv.Itoa(tg.PID))
		switch {
		case r.status() == "exit 0":
			worked = true
		case r.status() == "exit 125" && strings.Count(r.stderr, "\n") == 1 && strings.Contains(r.stderr, "no more processes allowed"):
		case r.status() == "exit 2" && strings.Contains(r.stderr, "failed to create new OS thread"):
			reapOrphans(t, before, 10*time.Second)
		default:
			t.Errorf("pids.max %d: %v", n, r)
		}
		checkNoStrays(t, before, tg)
		t.Logf("pids.max %d: %s %q", n, r.status(), strings.SplitN(r.stderr, "\n", 2)[0])
	}
	if !worked {
		t.Error("not even 16 processes were enough for nspawn-enter to start /bin/true")
	}
}

// reapOrphans waits, up to limit, for every new child of this process
// (orphans handed to it as subreaper) to end by itself, and reaps it.
func reapOrphans(t *testing.T, before []int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var running []int
		for _, pid := range children(t) {
			if slices.Contains(before, pid) {
				continue
			}
			var ws syscall.WaitStatus
			if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err == nil && got == 0 {
				running = append(running, pid)
			}
		}
		if len(running) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("orphans %v still running after %v", running, limit)
			return // checkNoStrays ends them
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCommandDiesWithEnter: when nspawn-enter itself is killed (SIGKILL,
// which it cannot pass on), the kernel kills its command: nothing is left
// running in the machine. The request survives joining a user namespace
// and a change of user, which both clear it when made before.
func TestCommandDiesWithEnter(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	cases := []struct {
		spec nstest.Spec
		args []string
	}{
		{nstest.Spec{Name: "orphan"}, nil},
		{nstest.Spec{Name: "orphan-user", User: true}, nil},
		{nstest.Spec{Name: "orphan-alice", User: true}, []string{"--user", "alice"}},
	}
	for _, c := range cases {
		t.Run(c.spec.Name, func(t *testing.T) {
			tg := nstest.Start(t, c.spec)
			args := append([]string{"--pid", strconv.Itoa(tg.PID), "--no-pty"}, c.args...)
			args = append(args, "--", "/bin/sh", "-c", "echo ready; exec sleep 1000")
			cmd := exec.Command(enter, args...)
			before := children(t)
			testenv.StartReady(t, cmd)
			kids := testenv.ChildrenOf(t, cmd.Process.Pid)
			if len(kids) != 1 {
				t.Fatalf("nspawn-enter has children %v, want its command alone", kids)
			}
			sleeper := kids[0]
			pidfd, err := unix.PidfdOpen(sleeper, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(pidfd)
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
			if n, err := unix.Poll(fds, 10000); err != nil || n != 1 {
				t.Errorf("the command (pid %d) still runs 10 s after nspawn-enter was killed (poll: %d, %v)", sleeper, n, err)
				unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
			}
			// The orphan went to this process, a subreaper: reap it, or
			// its PID namespace could never end.
			var info unix.Siginfo
			if err := unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED, nil); err != nil {
				t.Fatalf("reap the command: %v", err)
			}
			checkNoStrays(t, before, tg)
		})
	}
}
