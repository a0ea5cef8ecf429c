package machinetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := Shutdown(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func need(t *testing.T)       { t.Helper(); Require(t, Busybox) }
func needDebian(t *testing.T) { t.Helper(); Require(t, Busybox, Bookworm) }

// pidAlive reports whether pid names a live (not zombie) process.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// assertGone checks that nothing of m is left on the host.
func assertGone(t *testing.T, m *Machine) {
	t.Helper()
	for _, pid := range []int{m.NspawnPID, m.Leader} {
		if pidAlive(pid) {
			t.Errorf("pid %d still alive after Close", pid)
		}
	}
	for _, r := range CgroupRoots() {
		if _, err := os.Stat(filepath.Join(r, CgroupName(m.Name))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s left behind (%v)", filepath.Join(r, CgroupName(m.Name)), err)
		}
	}
	if _, err := os.Lstat(m.StateFile()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file %s left behind (%v)", m.StateFile(), err)
	}
	if _, err := os.Lstat(m.Scratch()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scratch %s left behind (%v)", m.Scratch(), err)
	}
	if mp := mountsUnder(m.Scratch()); len(mp) > 0 {
		t.Errorf("mounts left behind: %v", mp)
	}
	if _, err := os.Lstat(filepath.Join("/run/systemd/nspawn/propagate", m.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/run/systemd/nspawn/propagate/%s left behind (%v)", m.Name, err)
	}
	if _, err := os.Lstat(filepath.Join(m.Base, ReadyMarker)); err == nil {
		t.Errorf("the machine wrote into the cached rootfs %s", m.Base)
	}
}

func TestBusyboxMachine(t *testing.T) {
	need(t)
	name := Name("bb")
	m := Start(t, name, Spec{Init: InitBusybox})
	st, err := ReadStateFile(m.StateFile())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("state file: %v", st)
	if st["LEADER"] != strconv.Itoa(m.Leader) {
		t.Errorf("LEADER=%s, want %d", st["LEADER"], m.Leader)
	}
	if st["NAME"] != name || st["CLASS"] != "container" || st["SCOPE"] != CgroupName(name) {
		t.Errorf("state file NAME=%s CLASS=%s SCOPE=%s, want %s container %s", st["NAME"], st["CLASS"], st["SCOPE"], name, CgroupName(name))
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", m.Leader)); strings.TrimSpace(string(comm)) != "busybox" {
		t.Errorf("leader comm %q, want busybox", comm)
	}
	if ppid, _ := parentOf(m.Leader); ppid != m.NspawnPID {
		t.Errorf("leader's parent %d, want nspawn %d", ppid, m.NspawnPID)
	}
	if out, err := m.Output("hostname"); err != nil || strings.TrimSpace(out) != name {
		t.Errorf("hostname inside = %q, %v; want %s", out, err, name)
	}
	if out, err := m.Output("cat", "/proc/1/comm"); err != nil || strings.TrimSpace(out) != "busybox" {
		t.Errorf("PID 1 inside = %q, %v", out, err)
	}
	procs, _ := os.ReadFile(filepath.Join(m.Cgroups()[0], "cgroup.procs"))
	t.Logf("cgroup %s: procs %q", m.Cgroups()[0], strings.Fields(string(procs)))
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, m)
}

// TestStopBySignal: busybox init halts on SIGUSR2 (nspawn exits 0) and
// reboots on SIGTERM (nspawn exits 133); either way machined drops it.
func TestStopBySignal(t *testing.T) {
	need(t)
	for _, c := range []struct {
		sig  unix.Signal
		want int
	}{{unix.SIGUSR2, 0}, {unix.SIGTERM, 133}} {
		t.Run(unix.SignalName(c.sig), func(t *testing.T) {
			m := Start(t, Name("sig"), Spec{Init: InitBusybox})
			t0 := time.Now()
			if err := unix.Kill(m.Leader, c.sig); err != nil {
				t.Fatal(err)
			}
			code, err := m.Wait(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%v to busybox init: nspawn exited %d after %v", c.sig, code, time.Since(t0).Round(time.Millisecond))
			if code != c.want {
				t.Errorf("nspawn exit code %d, want %d", code, c.want)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			assertGone(t, m)
		})
	}
}

// TestKilledMachineCleanup: Close on a machine whose nspawn was SIGKILLed
// (so it could not unregister) still leaves nothing behind.
func TestKilledMachineCleanup(t *testing.T) {
	need(t)
	m := Start(t, Name("killed"), Spec{Init: InitBusybox})
	if err := m.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if code, err := m.Wait(10 * time.Second); err != nil || code != 128+9 {
		t.Fatalf("Wait = %d, %v; want 137", code, err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, m)
}

func TestPrivateUsersAndNetwork(t *testing.T) {
	need(t)
	m := Start(t, Name("userns"), Spec{Init: InitBusybox, PrivateUsers: true, PrivateNetwork: true})
	uidmap, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", m.Leader))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(uidmap))
	t.Logf("leader uid_map: %q", f)
	if len(f) != 3 || f[0] != "0" || f[1] == "0" || f[2] != "65536" {
		t.Errorf("uid_map %q: want 0 BASE 65536 with BASE != 0", f)
	}
	if _, err := m.Output("touch", "/root/x"); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(m.Root, "root/x"), &st); err != nil {
		t.Fatal(err)
	}
	if strconv.Itoa(int(st.Uid)) != f[1] {
		t.Errorf("file made by root inside is owned by %d on the host, want %s", st.Uid, f[1])
	}
	var base unix.Stat_t
	if err := unix.Stat(filepath.Join(m.Base, "root"), &base); err != nil || base.Uid != 0 {
		t.Errorf("cached rootfs /root owned by %d (%v), want 0: the cache was chowned", base.Uid, err)
	}
	links, err := m.Output("ls", "/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(links) != "lo" {
		t.Errorf("private network has %q, want only lo", links)
	}
}

func TestInits(t *testing.T) {
	needDebian(t)
	for _, c := range []struct {
		init Init
		kind Kind
	}{{InitRunit, Bookworm}, {InitS6, Bookworm}, {InitOpenRC, Bookworm}, {InitSystemd, Bookworm}, {InitSystemd, Trixie}} {
		in := c.init
		t.Run(string(in)+"-"+string(c.kind), func(t *testing.T) {
			m := Start(t, Name(string(in)), Spec{Init: in, Rootfs: c.kind})
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", m.Leader))
			t.Logf("%s: leader %d comm %q", in, m.Leader, strings.TrimSpace(string(comm)))
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			assertGone(t, m)
		})
	}
}

func TestRecipeKey(t *testing.T) {
	r1, err := recipeFor(Bookworm)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := recipeFor(Bookworm)
	if r1.key() != r2.key() {
		t.Fatalf("same recipe, different keys %s %s", r1.key(), r2.key())
	}
	r2.files[1].data += "# changed\n"
	if r1.key() == r2.key() {
		t.Fatalf("changed recipe, same key %s", r1.key())
	}
	if !strings.HasPrefix(r1.key(), "bookworm-") {
		t.Errorf("key %s", r1.key())
	}
}

func TestMirror(t *testing.T) {
	m, err := Mirror()
	if err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	t.Logf("mirror %s", m)
	if !strings.HasSuffix(m, "/debian") {
		t.Errorf("mirror %q", m)
	}
}

// TestPrivateUsersDebian: a -U machine on the Debian overlay; nspawn
// may chown (copy-up) the overlay, never the cache.
func TestPrivateUsersDebian(t *testing.T) {
	needDebian(t)
	m := Start(t, Name("userns-deb"), Spec{Init: InitSystemd, PrivateUsers: true})
	log, _ := os.ReadFile(m.Log)
	t.Logf("nspawn log:\n%s", log)
	t.Logf("upper dir: %s", duSize(filepath.Join(m.Scratch(), "upper")))
	var base unix.Stat_t
	if err := unix.Stat(filepath.Join(m.Base, "etc"), &base); err != nil || base.Uid != 0 {
		t.Errorf("cached rootfs /etc owned by %d (%v), want 0: the cache was chowned", base.Uid, err)
	}
}

// TestRootfsCache: an interrupted build (a leftover temporary directory)
// is thrown away and rebuilt; a finished build is reused.
func TestRootfsCache(t *testing.T) {
	need(t)
	t.Setenv("NSPAWN_TOOLS_TEST_CACHE", t.TempDir())
	r, err := recipeFor(Busybox)
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(CacheDir(), ".tmp-"+r.key())
	if err := os.MkdirAll(filepath.Join(stale, "half-built"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := Rootfs(Busybox, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(CacheDir(), r.key()) {
		t.Errorf("rootfs in %s, want %s", dir, filepath.Join(CacheDir(), r.key()))
	}
	if _, err := os.Stat(filepath.Join(dir, "half-built")); err == nil {
		t.Errorf("the leftover of an interrupted build was used")
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind", stale)
	}
	for _, p := range []string{"bin/busybox", "bin/sh", "sbin/init", "etc/os-release", "etc/inittab"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Errorf("rootfs lacks %s: %v", p, err)
		}
	}
	t0 := time.Now()
	again, err := Rootfs(Busybox, t.Logf)
	if err != nil || again != dir {
		t.Fatalf("second Rootfs = %s, %v; want %s", again, err, dir)
	}
	t.Logf("cached lookup took %v", time.Since(t0))
}

// TestReapStale: a machine whose test process died is removed by the
// next process; the machines of live processes are left alone.
func TestReapStale(t *testing.T) {
	need(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := Start(t, fmt.Sprintf("nt-stale-%d", dead.Process.Pid), Spec{Init: InitBusybox})
	live := Start(t, Name("live"), Spec{Init: InitBusybox})
	if err := ReapStale(t.Logf); err != nil {
		t.Fatal(err)
	}
	if _, err := stale.Wait(10 * time.Second); err != nil {
		t.Fatalf("stale machine still running: %v", err)
	}
	if _, err := os.Lstat(stale.StateFile()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale machine's state file left")
	}
	for _, cg := range stale.Cgroups() {
		if _, err := os.Stat(cg); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale machine's cgroup %s left", cg)
		}
	}
	if _, err := os.Lstat(stale.Scratch()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale machine's scratch %s left", stale.Scratch())
	}
	if live.Exited() {
		t.Errorf("ReapStale stopped a machine whose process is alive")
	}
	if err := stale.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, stale)
}
