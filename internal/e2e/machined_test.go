//go:build linux

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/machinetest"
	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
	"github.com/nspawn-tools/nspawn-tools/leader"
)

// machinedWait bounds how long a test waits for other test processes to
// finish with machined.
const machinedWait = 5 * time.Minute

// takeMachined gives the test the bus and machined to itself until it
// ends (machinetest.TakeMachined): call it before starting machines.
func takeMachined(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		// other tests, here and in other test processes, need machined
		if err := machinetest.ReleaseMachined(t.Logf); err != nil {
			t.Errorf("%v", err)
		}
	})
	if err := machinetest.TakeMachined(t.Logf, machinedWait); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
}

// stopMachined stops systemd-machined until startMachined, or the end of
// the test.
func stopMachined(t *testing.T) {
	t.Helper()
	// Registered after the machines' cleanups, so it runs before them:
	// they need machined.
	t.Cleanup(func() {
		if err := machinetest.EnsureMachined(t.Logf); err != nil {
			t.Errorf("%v", err)
		}
	})
	if err := machinetest.StopMachined(t.Logf); err != nil {
		t.Fatal(err)
	}
	if machinetest.MachinedAnswers() {
		t.Fatal("systemd-machined still answers on the bus after it was stopped")
	}
}

// startMachined starts systemd-machined again after stopMachined.
func startMachined(t *testing.T) {
	t.Helper()
	if err := machinetest.EnsureMachined(t.Logf); err != nil {
		t.Fatal(err)
	}
	if !machinetest.MachinedAnswers() {
		t.Fatal("systemd-machined does not answer on the bus after it was started")
	}
}

// varlinkAnswers reports whether something accepts connections on
// machined's varlink socket, and what is at its path.
func varlinkAnswers() (bool, string) {
	fi, err := os.Lstat(leader.DefaultVarlink)
	if err != nil {
		return false, err.Error()
	}
	c, err := net.DialTimeout("unix", leader.DefaultVarlink, time.Second)
	if err != nil {
		return false, fmt.Sprintf("%v; connect: %v", fi.Mode(), err)
	}
	c.Close()
	return true, fi.Mode().String()
}

// TestMachinedStopped: with machined not running at all, the tools still
// find a running machine through the state file it left behind; once a new
// machined runs, they work as before, and the machine the old one
// registered stops cleanly: the new one forgets it.
func TestMachinedStopped(t *testing.T) {
	machinetest.Require(t, machinetest.Busybox)
	takeMachined(t)
	m := machinetest.Start(t, machinetest.Name("machined-down"), machinetest.Spec{Init: machinetest.InitBusybox})
	before, err := os.ReadFile(m.StateFile())
	if err != nil {
		t.Fatal(err)
	}

	_, what := varlinkAnswers()
	t.Logf("machined running: varlink socket %s: %s", leader.DefaultVarlink, what)
	stopMachined(t)
	answers, what := varlinkAnswers()
	t.Logf("machined stopped: varlink socket %s: %s", leader.DefaultVarlink, what)
	if answers {
		t.Errorf("something answers on %s with machined stopped", leader.DefaultVarlink)
	}
	// systemd 252's machined leaves its state files when it exits: they
	// are its record for the next machined.
	during, err := os.ReadFile(m.StateFile())
	if err != nil {
		t.Fatalf("state file with machined stopped: %v", err)
	}
	t.Logf("machined stopped: state file %s kept:\n%s", m.StateFile(), during)
	if !bytes.Equal(during, before) {
		t.Errorf("state file changed when machined stopped:\n%s\nwas:\n%s", during, before)
	}

	r := enter(t, m.Name, "--", "/bin/true")
	want(t, r, 0)
	if r.stderr != "" {
		t.Errorf("nspawn-enter with machined stopped: stderr %q, want none", r.stderr)
	}
	r = enter(t, m.Name, "--", "hostname")
	want(t, r, 0)
	if got := strings.TrimSpace(r.stdout); got != m.Name {
		t.Errorf("hostname inside = %q, want %q", got, m.Name)
	}
	dry := stop(t, m.Name, "--dry-run")
	want(t, dry, 0)
	if s := fmt.Sprintf("leader pid %d", m.Leader); !strings.Contains(dry.stdout, s) {
		t.Errorf("--dry-run with machined stopped: %q does not name %q", dry.stdout, s)
	}
	if !mentionsAny(dry.stdout, stopSignal[machinetest.InitBusybox]) {
		t.Errorf("--dry-run with machined stopped: %q names none of %v", dry.stdout, stopSignal[machinetest.InitBusybox])
	}
	if m.Exited() {
		t.Fatal("the machine exited while machined was stopped")
	}

	startMachined(t)
	after, err := os.ReadFile(m.StateFile())
	if err != nil {
		t.Fatalf("state file after machined restarted: %v", err)
	}
	if !bytes.Equal(after, before) {
		t.Logf("the new machined rewrote the state file:\n%s", after)
	}
	if out, err := exec.Command("busctl", "--system", "call", "org.freedesktop.machine1", "/org/freedesktop/machine1",
		"org.freedesktop.machine1.Manager", "GetMachine", "s", m.Name).CombinedOutput(); err != nil {
		t.Errorf("the new machined does not know %s: %v %s", m.Name, err, out)
	}
	want(t, enter(t, m.Name, "--", "/bin/true"), 0)

	// nspawn unregisters the machine from the new machined when it exits.
	want(t, stop(t, m.Name), 0)
	code, err := m.Wait(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Errorf("systemd-nspawn exited %d, want 0", code)
	}
	if !waitGone(m.StateFile(), 10*time.Second) {
		t.Errorf("state file %s still there after the machine stopped", m.StateFile())
	}
	want(t, enter(t, m.Name, "--", "/bin/true"), 125)
}

// TestMachinedRestartedDuringSession: a command entered into a machine
// does not depend on machined: restarting it leaves the session running,
// which ends with the command's own status when its stdin closes, leaving
// nothing behind; and the machine can be entered again afterwards.
func TestMachinedRestartedDuringSession(t *testing.T) {
	machinetest.Require(t, machinetest.Busybox)
	takeMachined(t)
	m := machinetest.Start(t, machinetest.Name("machined-restart"), machinetest.Spec{Init: machinetest.InitBusybox})
	inMachine, err := pidsInNamespace(m.Leader)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(testenv.Binary(t, "nspawn-enter"), m.Name, "--no-pty", "--", "/bin/sh", "-c", "echo ready; read x")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	testenv.StartReady(t, cmd)
	enterer, err := leader.Open(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer enterer.Close()
	// Everything the session runs, pinned, so a reused PID cannot pass
	// for it later.
	var session []*leader.Leader
	for _, pid := range testenv.Descendants(t, cmd.Process.Pid) {
		l, err := leader.Open(pid)
		if errors.Is(err, leader.ErrNoProcess) {
			continue // already gone
		}
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		session = append(session, l)
	}
	var shell *leader.Leader
	for _, l := range session {
		if comm, _ := l.Comm(); comm == "sh" {
			shell = l
		}
	}
	if shell == nil {
		t.Fatalf("no sh among the processes of nspawn-enter (pid %d): %v", cmd.Process.Pid, session)
	}
	t.Logf("session: nspawn-enter pid %d, command %s", cmd.Process.Pid, shell)

	stopMachined(t)
	startMachined(t)
	time.Sleep(200 * time.Millisecond) // time to act on the restart, were anything to
	if enterer.Exited() || shell.Exited() {
		t.Fatalf("the session ended when machined restarted: nspawn-enter exited %v, the command %v",
			enterer.Exited(), shell.Exited())
	}

	stdin.Close()
	testenv.WaitEnd(t, cmd, 10*time.Second)
	t.Logf("session ended with %v; stderr %q", cmd.ProcessState, stderr.String())
	// sh's read fails at the end of its input: the command exits 1.
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() || ws.ExitStatus() != 1 {
		t.Errorf("session ended with %v, want exit status 1, the command's", cmd.ProcessState)
	}
	if stderr.Len() != 0 {
		t.Errorf("nspawn-enter wrote %q on stderr", stderr.String())
	}
	for _, l := range session {
		if !l.Exited() {
			t.Errorf("%s, started by nspawn-enter, still runs after it exited", l)
		}
	}
	left, err := pidsInNamespace(m.Leader)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(left) != fmt.Sprint(inMachine) {
		t.Errorf("processes in the machine: %v after the session, %v before", left, inMachine)
	}

	want(t, enter(t, m.Name, "--", "/bin/true"), 0)
}

// pidsInNamespace lists, sorted, the host PIDs of the processes in the PID
// namespace of pid. (Not their names: a process of the machine may still
// be exec'ing when the list is taken.)
func pidsInNamespace(pid int) ([]string, error) {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if other, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns/pid")); err == nil && other == ns {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}
