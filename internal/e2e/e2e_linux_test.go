package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

func TestMain(m *testing.M) { os.Exit(machinetest.RunTests(m)) }

// runLimit bounds every run of a product program: a hang fails the test.
const runLimit = 60 * time.Second

// result is how a run of a program ended.
type result struct {
	stdout, stderr string
	code           int            // exit status, -1 if killed by a signal
	signal         syscall.Signal // the signal that killed it, or 0
	elapsed        time.Duration
}

func (r result) String() string {
	s := fmt.Sprintf("exit %d", r.code)
	if r.signal != 0 {
		s = "killed by " + r.signal.String()
	}
	return fmt.Sprintf("%s after %v; stdout %q; stderr %q", s, r.elapsed.Round(time.Millisecond), r.stdout, r.stderr)
}

func run(t *testing.T, prog string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(t0)}
	if ctx.Err() != nil {
		t.Fatalf("%s %s: still running after %v (killed)", filepath.Base(prog), strings.Join(args, " "), runLimit)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s %s: %v", filepath.Base(prog), strings.Join(args, " "), err)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	r.code = ws.ExitStatus()
	if ws.Signaled() {
		r.code, r.signal = -1, ws.Signal()
	}
	t.Logf("%s %s: %s", filepath.Base(prog), strings.Join(args, " "), r)
	return r
}

func enter(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, testenv.Binary(t, "nspawn-enter"), args...)
}

func stop(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, testenv.Binary(t, "nspawn-stop"), args...)
}

// want fails the test unless r exited with code.
func want(t *testing.T, r result, code int) {
	t.Helper()
	if r.signal != 0 || r.code != code {
		t.Errorf("want exit %d, got %s", code, r)
	}
}

func kindOf(in machinetest.Init) machinetest.Kind {
	if in == machinetest.InitBusybox {
		return machinetest.Busybox
	}
	return machinetest.Bookworm
}

var allInits = []machinetest.Init{
	machinetest.InitBusybox, machinetest.InitRunit, machinetest.InitS6, machinetest.InitOpenRC, machinetest.InitSystemd,
}

// namespaces are the /proc/PID/ns entries nspawn-enter joins.
var namespaces = []string{"cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"}

// TestEnterEachInit enters a machine of every init by name and compares
// what the command sees with the host's view of the leader.
func TestEnterEachInit(t *testing.T) {
	for _, in := range allInits {
		t.Run(string(in), func(t *testing.T) {
			machinetest.Require(t, kindOf(in))
			t.Parallel()
			m := machinetest.Start(t, machinetest.Name("enter-"+string(in)), machinetest.Spec{Init: in})

			r := enter(t, m.Name, "--", "hostname")
			want(t, r, 0)
			if got := strings.TrimSpace(r.stdout); got != m.Name {
				t.Errorf("hostname inside = %q, want %q", got, m.Name)
			}

			osRelease, err := os.ReadFile(filepath.Join(m.Root, "etc/os-release"))
			if err != nil {
				// Debian's is a symlink into /usr/lib
				out, err := m.Output("cat", "/etc/os-release")
				if err != nil {
					t.Fatal(err)
				}
				osRelease = []byte(out)
			}
			r = enter(t, m.Name, "--", "cat", "/etc/os-release")
			want(t, r, 0)
			if r.stdout != string(osRelease) {
				t.Errorf("/etc/os-release inside = %q, want the machine's %q", r.stdout, osRelease)
			}

			// PID 1 is the machine's init; every namespace is the leader's.
			script := `cat /proc/1/comm; for n in ` + strings.Join(namespaces, " ") + `; do readlink /proc/self/ns/$n; done; ls /proc`
			r = enter(t, m.Name, "--", "sh", "-c", script)
			want(t, r, 0)
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", m.Leader))
			if len(lines) < 1+len(namespaces) {
				t.Fatalf("output %q too short", r.stdout)
			}
			if lines[0] != strings.TrimSpace(string(comm)) {
				t.Errorf("PID 1 inside is %q, want the leader's comm %q", lines[0], strings.TrimSpace(string(comm)))
			}
			for i, n := range namespaces {
				hostView, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", m.Leader, n))
				if err != nil {
					t.Fatal(err)
				}
				if lines[1+i] != hostView {
					t.Errorf("ns %s inside = %s, leader's = %s", n, lines[1+i], hostView)
				}
			}
			// Only the machine's processes: a handful of small PIDs, none
			// of them the leader's host PID number.
			var pids []int
			for _, f := range strings.Fields(strings.Join(lines[1+len(namespaces):], " ")) {
				if n, err := strconv.Atoi(f); err == nil {
					pids = append(pids, n)
				}
			}
			sort.Ints(pids)
			t.Logf("PIDs inside: %v", pids)
			if len(pids) == 0 || pids[0] != 1 {
				t.Errorf("/proc inside has PIDs %v, want 1 first", pids)
			}
			if len(pids) > 200 {
				t.Errorf("/proc inside lists %d processes: the host's?", len(pids))
			}
			if in == machinetest.InitBusybox {
				r = enter(t, m.Name, "--", "sh", "-c", "hostname; cat /etc/os-release | head -1; ps")
				want(t, r, 0)
				if !strings.Contains(r.stdout, "ID=busybox") || !strings.Contains(r.stdout, "init") {
					t.Errorf("busybox ps: %q", r.stdout)
				}
			}
			r = enter(t, "--pid", strconv.Itoa(m.Leader), "--", "hostname")
			want(t, r, 0)
			if got := strings.TrimSpace(r.stdout); got != m.Name {
				t.Errorf("--pid %d: hostname inside = %q, want %q", m.Leader, got, m.Name)
			}
		})
	}
}

// TestEnterPrivateUsers: a file created inside a -U machine belongs, on
// disk, to the machine's root, i.e. the base of its uid range.
func TestEnterPrivateUsers(t *testing.T) {
	machinetest.Require(t, machinetest.Busybox)
	m := machinetest.Start(t, machinetest.Name("userns"), machinetest.Spec{Init: machinetest.InitBusybox, PrivateUsers: true})
	uidMap, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", m.Leader))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(uidMap))
	if len(f) != 3 || f[0] != "0" || f[1] == "0" {
		t.Fatalf("leader's uid_map %q: not a -U machine", uidMap)
	}
	base, _ := strconv.Atoi(f[1])
	r := enter(t, m.Name, "--", "sh", "-c", "id -u; id -g; echo hi > /root/made-inside; ls -ln /root/made-inside")
	want(t, r, 0)
	if lines := strings.Fields(r.stdout); len(lines) < 2 || lines[0] != "0" || lines[1] != "0" {
		t.Errorf("id inside: %q, want uid 0 gid 0", r.stdout)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(m.Root, "root/made-inside"), &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("uid base %d; file made inside is owned by %d:%d on the host", base, st.Uid, st.Gid)
	if int(st.Uid) != base || int(st.Gid) != base {
		t.Errorf("file made inside owned by %d:%d on the host, want %d:%d", st.Uid, st.Gid, base, base)
	}
}

// interfaces lists the network interfaces of /proc/net/dev text.
func interfaces(dev string) []string {
	var names []string
	for _, line := range strings.Split(dev, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, "|") {
			names = append(names, strings.TrimSpace(name))
		}
	}
	sort.Strings(names)
	return names
}

// TestEnterNetwork: in a --private-network machine the command sees only
// the machine's loopback; with --no-network, the host's interfaces.
func TestEnterNetwork(t *testing.T) {
	machinetest.Require(t, machinetest.Busybox)
	m := machinetest.Start(t, machinetest.Name("privnet"), machinetest.Spec{Init: machinetest.InitBusybox, PrivateNetwork: true})
	hostDev, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	host := interfaces(string(hostDev))
	// /proc/net is the reader's network namespace, whatever /proc it is.
	r := enter(t, m.Name, "--", "cat", "/proc/net/dev")
	want(t, r, 0)
	if got := interfaces(r.stdout); strings.Join(got, " ") != "lo" {
		t.Errorf("interfaces inside %v, want [lo]", got)
	}
	r = enter(t, m.Name, "--no-network", "--", "cat", "/proc/net/dev")
	want(t, r, 0)
	if got := interfaces(r.stdout); strings.Join(got, " ") != strings.Join(host, " ") {
		t.Errorf("--no-network: interfaces %v, want the host's %v", got, host)
	}
	hostname, _ := os.Hostname()
	r = enter(t, m.Name, "--no-uts", "--", "hostname")
	want(t, r, 0)
	if got := strings.TrimSpace(r.stdout); got != hostname {
		t.Errorf("--no-uts: hostname %q, want the host's %q", got, hostname)
	}
}

// TestEnterExitStatus: the command's status, its death signal, 126, 127,
// and the tool's own 125 and 2.
func TestEnterExitStatus(t *testing.T) {
	machinetest.Require(t, machinetest.Busybox)
	m := machinetest.Start(t, machinetest.Name("status"), machinetest.Spec{Init: machinetest.InitBusybox})
	for _, code := range []int{0, 1, 42} {
		want(t, enter(t, m.Name, "--", "sh", "-c", fmt.Sprintf("exit %d", code)), code)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL, syscall.SIGUSR1} {
		r := enter(t, m.Name, "--", "sh", "-c", fmt.Sprintf("kill -%d $$", int(sig)))
		if r.signal != sig {
			t.Errorf("command killed by %v: want nspawn-enter killed by it too, got %s", sig, r)
		}
	}
	want(t, enter(t, m.Name, "--", "/no/such/command"), 127)
	want(t, enter(t, m.Name, "--", "no-such-command-e2e"), 127)
	want(t, enter(t, m.Name, "--", "/etc/passwd"), 126)

	r := enter(t, machinetest.Name("not-running"), "--", "true")
	want(t, r, 125)
	if lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n"); !strings.HasPrefix(lines[0], "nspawn-enter: error: ") {
		t.Errorf("not running: stderr %q, want one line \"nspawn-enter: error: ...\"", r.stderr)
	}
	want(t, enter(t, "a..b", "--", "true"), 2)
	want(t, enter(t, m.Name, "--no-such-option", "--", "true"), 2)
}

// stopSignal is the signal nspawn-stop --signal auto must pick per init
// (any of the names given).
var stopSignal = map[machinetest.Init][]string{
	machinetest.InitSystemd: {"SIGRTMIN+4"},
	machinetest.InitBusybox: {"SIGUSR2"},
	machinetest.InitRunit:   {"SIGPWR"},
	machinetest.InitS6:      {"SIGTERM"},
	machinetest.InitOpenRC:  {"SIGTERM", "SIGPWR"},
}

// TestStopEachInit: nspawn-stop with the automatic signal halts every
// init cleanly: it returns once the leader is gone, nspawn exits 0 (not
// 133, a reboot) and machined forgets the machine.
func TestStopEachInit(t *testing.T) {
	type variant struct {
		name string
		init machinetest.Init
		spec machinetest.Spec
	}
	var variants []variant
	for _, in := range allInits {
		variants = append(variants, variant{string(in), in, machinetest.Spec{Init: in}})
	}
	variants = append(variants,
		variant{"busybox-U", machinetest.InitBusybox, machinetest.Spec{Init: machinetest.InitBusybox, PrivateUsers: true}},
		variant{"systemd-U", machinetest.InitSystemd, machinetest.Spec{Init: machinetest.InitSystemd, PrivateUsers: true}},
		variant{"busybox-privnet", machinetest.InitBusybox, machinetest.Spec{Init: machinetest.InitBusybox, PrivateNetwork: true}},
	)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			machinetest.Require(t, kindOf(v.init))
			t.Parallel()
			m := machinetest.Start(t, machinetest.Name("stop-"+v.name), v.spec)

			dry := stop(t, m.Name, "--dry-run")
			want(t, dry, 0)
			if !mentionsAny(dry.stdout+dry.stderr, stopSignal[v.init]) {
				t.Errorf("--dry-run for %s: %q names none of %v", v.init, dry.stdout+dry.stderr, stopSignal[v.init])
			}
			if m.Exited() {
				t.Fatalf("--dry-run stopped the machine")
			}

			// Watch the leader's exit from here too, to report how soon
			// after it nspawn-stop returned (a measurement, not a check).
			pl, err := leader.Open(m.Leader)
			if err != nil {
				t.Fatal(err)
			}
			defer pl.Close()
			leaderGone := make(chan time.Time, 1)
			go func() {
				pl.Wait(time.Now().Add(runLimit))
				leaderGone <- time.Now()
			}()
			t0 := time.Now()
			r := stop(t, m.Name)
			stopped := time.Since(t0)
			returned := time.Now()
			want(t, r, 0)
			code, err := m.Wait(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			nspawnGone := time.Since(t0)
			if code != 0 {
				t.Errorf("systemd-nspawn exited %d, want 0 (133 is a reboot)", code)
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", m.Leader)); err == nil && r.code == 0 {
				// nspawn (its parent) has exited too, so the leader is reaped
				t.Errorf("leader %d still exists after nspawn-stop returned 0 and nspawn exited", m.Leader)
			}
			gone := waitGone(m.StateFile(), 10*time.Second)
			t.Logf("TIMING %s: nspawn-stop returned after %v, %v after the leader's exit; nspawn exited at %v, state file gone: %v",
				v.name, stopped.Round(time.Millisecond), returned.Sub(<-leaderGone).Round(10*time.Microsecond), nspawnGone.Round(time.Millisecond), gone)
			if !gone {
				t.Errorf("state file %s still there", m.StateFile())
			}
			// A stopped machine: stop says so and succeeds, enter fails.
			want(t, stop(t, m.Name), 0)
			want(t, enter(t, m.Name, "--", "true"), 125)
		})
	}
}

func mentionsAny(s string, names []string) bool {
	for _, n := range names {
		if strings.Contains(s, n) {
			return true
		}
	}
	return false
}

func waitGone(path string, limit time.Duration) bool {
	for end := time.Now().Add(limit); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// TestStopTimeout: a signal the init ignores (SIGHUP to busybox init)
// times out with 124 and leaves the machine running; --kill-after then
// SIGKILLs it: 137.
// TestStopEndsSessions: a command entered into a machine belongs to it
// (its PID namespace and cgroup): stopping the machine ends it, and
// nspawn-enter with it, by the same signal.
func TestStopEndsSessions(t *testing.T) {
	machinetest.Require(t, machinetest.Busybox)
	m := machinetest.Start(t, machinetest.Name("sessions"), machinetest.Spec{})
	cmd := exec.Command(testenv.Binary(t, "nspawn-enter"), m.Name, "--no-pty", "--", "sh", "-c", "echo ready; exec sleep 1000")
	testenv.StartReady(t, cmd)
	want(t, stop(t, m.Name), 0)
	testenv.WaitEnd(t, cmd, 10*time.Second)
	t.Logf("session ended with %v", cmd.ProcessState)
	// The init's shutdown sends every process SIGTERM (busybox init does),
	// or the end of the PID namespace SIGKILL: either way the command died
	// of it, and nspawn-enter the same way.
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM && ws.Signal() != syscall.SIGKILL {
		t.Errorf("session ended with %v, want death by SIGTERM or SIGKILL", cmd.ProcessState)
	}
}

func TestStopTimeout(t *testing.T) {
	machinetest.Require(t, machinetest.Busybox)
	m := machinetest.Start(t, machinetest.Name("timeout"), machinetest.Spec{Init: machinetest.InitBusybox})
	want(t, stop(t, m.Name, "--signal", "HUP", "--timeout", "2s"), 124)
	if m.Exited() {
		t.Fatal("machine stopped by SIGHUP")
	}
	want(t, stop(t, m.Name, "--signal", "SIGHUP", "--timeout", "1s", "--kill-after", "5s"), 137)
	if _, err := m.Wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !waitGone(m.StateFile(), 10*time.Second) {
		t.Errorf("state file %s still there", m.StateFile())
	}
}

// TestStopUsage: usage errors exit 2, a machine that is not running 0.
func TestStopUsage(t *testing.T) {
	machinetest.Require(t)
	want(t, stop(t), 2)
	want(t, stop(t, "a..b"), 2)
	want(t, stop(t, "x", "--timeout", "soon"), 2)
	want(t, stop(t, "x", "--signal", "NOSUCHSIGNAL"), 2)
	want(t, stop(t, machinetest.Name("not-running")), 0)
}

// TestNested: a busybox machine "inner" registered with the machined 257
// of a Debian trixie machine booted with -b. Its state file names PIDs in
// the outer machine's PID namespace, so the tools run inside the outer
// machine: nspawn-enter OUTER -- /usr/local/bin/nspawn-enter inner -- ...
func TestNested(t *testing.T) {
	machinetest.Require(t, machinetest.Busybox, machinetest.Trixie)
	enterBin, stopBin := testenv.Binary(t, "nspawn-enter"), testenv.Binary(t, "nspawn-stop")
	busybox, err := machinetest.Rootfs(machinetest.Busybox, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	outer := machinetest.Start(t, machinetest.Name("outer"), machinetest.Spec{
		Init:   machinetest.InitSystemd,
		Rootfs: machinetest.Trixie,
		Prepare: func(root string) error {
			for _, b := range []string{enterBin, stopBin} {
				if out, err := exec.Command("cp", b, filepath.Join(root, "usr/local/bin")).CombinedOutput(); err != nil {
					return fmt.Errorf("cp %s: %v %s", b, err, out)
				}
			}
			dir := filepath.Join(root, "var/lib/machines")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if out, err := exec.Command("cp", "-a", busybox, filepath.Join(dir, "inner")).CombinedOutput(); err != nil {
				return fmt.Errorf("cp -a %s: %v %s", busybox, err, out)
			}
			return nil
		},
	})
	if v, err := outer.Output("systemctl", "--version"); err == nil {
		t.Logf("outer: %s", strings.SplitN(v, "\n", 2)[0])
	}
	// Start "inner" with the outer machine's own systemd and machined.
	t0 := time.Now()
	if _, err := outer.Output("systemd-run", "--quiet", "--unit=inner-nspawn", "systemd-nspawn", "--machine=inner",
		"-D", "/var/lib/machines/inner", "/bin/busybox", "init"); err != nil {
		t.Fatal(err)
	}
	innerState := fmt.Sprintf("/proc/%d/root/run/systemd/machines/inner", outer.Leader)
	var innerLeader string
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st, err := machinetest.ReadStateFile(innerState); err == nil && st["LEADER"] != "" {
			// ready: busybox init ran the respawn entry that makes the marker
			marker := fmt.Sprintf("/proc/%d/root/proc/%s/root%s", outer.Leader, st["LEADER"], machinetest.ReadyMarker)
			if _, err := os.Stat(marker); err == nil {
				innerLeader = st["LEADER"]
				break
			}
		}
		if time.Now().After(end) {
			status, _ := outer.Output("systemctl", "status", "--no-pager", "inner-nspawn")
			t.Fatalf("inner machine not up after 30 s:\n%s", status)
		}
	}
	t.Logf("TIMING nested: inner registered with the outer machined and ready in %v; LEADER=%s (outer's PID namespace)",
		time.Since(t0).Round(time.Millisecond), innerLeader)
	t.Cleanup(func() {
		// if the test failed before stopping it (the outer's Close would
		// end it anyway, less gently)
		if !outer.Exited() {
			outer.Output("systemctl", "stop", "inner-nspawn")
		}
	})

	r := enter(t, outer.Name, "--", "/usr/local/bin/nspawn-enter", "inner", "--", "sh", "-c", "hostname; head -1 /etc/os-release; cat /proc/1/comm")
	want(t, r, 0)
	if got := strings.Fields(r.stdout); len(got) != 3 || got[0] != "inner" || got[1] != "ID=busybox" || got[2] != "busybox" {
		t.Errorf("inside inner: %q, want inner, ID=busybox, busybox", r.stdout)
	}
	want(t, enter(t, outer.Name, "--", "/usr/local/bin/nspawn-enter", "inner", "--", "sh", "-c", "exit 42"), 42)

	// Both ways to the leader, on the real systemd 257: with the state files
	// hidden only varlink can find inner; with the varlink socket hidden,
	// only the state file (which has no LEADER_PIDFDID on 257).
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/run/systemd/machine/io.systemd.Machine", outer.Leader)); err != nil {
		t.Errorf("machined 257 serves no varlink socket: %v", err)
	}
	for dir, via := range map[string]string{"/run/systemd/machines": "varlink", "/run/systemd/machine": "state file"} {
		r := enter(t, outer.Name, "--", "unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount -t tmpfs hidden "$0" && exec /usr/local/bin/nspawn-enter inner -- hostname`, dir)
		want(t, r, 0)
		if r.stdout != "inner\n" {
			t.Errorf("through the %s alone (%s hidden): %q, want inner", via, dir, r.stdout)
		}
	}

	t0 = time.Now()
	r = enter(t, outer.Name, "--", "/usr/local/bin/nspawn-stop", "inner")
	want(t, r, 0)
	if !strings.Contains(r.stderr, "SIGUSR2") {
		t.Errorf("nspawn-stop inner: %q does not say SIGUSR2", r.stderr)
	}
	if !waitGone(innerState, 10*time.Second) {
		t.Errorf("inner's state file still there")
	}
	t.Logf("TIMING nested: inner stopped in %v", time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	want(t, stop(t, outer.Name), 0)
	code, err := outer.Wait(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Errorf("outer systemd-nspawn exited %d, want 0", code)
	}
	t.Logf("TIMING nested: outer (systemd 257) stopped in %v", time.Since(t0).Round(time.Millisecond))
}
