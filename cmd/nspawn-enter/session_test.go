package main_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
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

// loginPath is the PATH of a clean login environment, as machinectl shell
// gives.
const loginPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// quickTimeout bounds runs that must not block on what a machine put in
// their way (a FIFO for /etc/passwd): generous, yet far from runTimeout.
const quickTimeout = 15 * time.Second

// runIn is run with the given environment for nspawn-enter and a bound of
// its own on the run (stdin empty).
func runIn(t testing.TB, environ []string, timeout time.Duration, prog string, args ...string) result {
	t.Helper()
	return runWith(t, environ, "", timeout, prog, args...)
}

// enterArgs is the command line of nspawn-enter for target pid: flags,
// then the command after "--" (none: the login shell).
func enterArgs(pid int, flags []string, command ...string) []string {
	args := append([]string{"--pid", strconv.Itoa(pid)}, flags...)
	if len(command) > 0 {
		args = append(append(args, "--"), command...)
	}
	return args
}

// showUser prints who the command is and where it starts.
const showUser = `id -u; id -g; id -G; echo "$HOME"; echo "$SHELL"; pwd -P`

// TestSessionUser runs commands as users of the target's own /etc/passwd
// and /etc/group: by name, by number, with a group, without an account, and
// by default as root.
func TestSessionUser(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	tg := nstest.Start(t, nstest.Spec{Name: "user-plain"})
	// bob's home does not exist; carol's shell does not.
	tg.WriteFile(t, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"+
		"alice:x:1000:1000::/home/alice:/bin/sh\n"+
		"bob:x:1001:1001::/home/bob:/bin/sh\n"+
		"carol:x:1002:1002::/:/bin/no-such-shell\n", 0o644)
	rootGroups := callerGroups(t)

	cases := []struct {
		name string
		user []string // --user and its value, or nothing
		want string   // showUser's output
	}{
		// Without --user in a target that shares our user namespace, the
		// command keeps the caller's supplementary groups, as with nsenter.
		{"default", nil, "0\n0\n" + rootGroups + "\n/root\n/bin/sh\n/root\n"},
		{"root", []string{"--user", "root"}, "0\n0\n0\n/root\n/bin/sh\n/root\n"},
		{"alice", []string{"--user", "alice"}, "1000\n1000\n1000 50\n/home/alice\n/bin/sh\n/home/alice\n"},
		{"1000", []string{"--user", "1000"}, "1000\n1000\n1000 50\n/home/alice\n/bin/sh\n/home/alice\n"},
		{"-u alice", []string{"-u", "alice"}, "1000\n1000\n1000 50\n/home/alice\n/bin/sh\n/home/alice\n"},
		{"alice:staff", []string{"--user", "alice:staff"}, "1000\n50\n50\n/home/alice\n/bin/sh\n/home/alice\n"},
		{"alice:50", []string{"--user", "alice:50"}, "1000\n50\n50\n/home/alice\n/bin/sh\n/home/alice\n"},
		{"1000:777", []string{"--user", "1000:777"}, "1000\n777\n777\n/home/alice\n/bin/sh\n/home/alice\n"},
		{"4242 (no account)", []string{"--user", "4242"}, "4242\n4242\n4242\n/\n/bin/sh\n/\n"},
		{"bob (no home)", []string{"--user", "bob"}, "1001\n1001\n1001\n/home/bob\n/bin/sh\n/\n"},
		{"carol (no shell)", []string{"--user", "carol"}, "1002\n1002\n1002\n/\n/bin/sh\n/\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := children(t)
			r := run(t, "", enter, enterArgs(tg.PID, c.user, "/bin/sh", "-c", showUser)...)
			checkNoStrays(t, before, tg)
			if r.status() != "exit 0" || r.stdout != c.want || r.stderr != "" {
				t.Errorf("want exit 0 and %q\n%v", c.want, r)
			}
		})
	}

	// No command: the user's login shell, as a login shell ($0 "-sh").
	for _, c := range []struct {
		user []string
		want string
	}{
		{nil, "-sh\n0\n/root\n/root\n"},
		{[]string{"--user", "alice"}, "-sh\n1000\n/home/alice\n/home/alice\n"},
		{[]string{"--user", "carol"}, "-sh\n1002\n/\n/\n"},
	} {
		t.Run(fmt.Sprintf("login shell %q", c.user), func(t *testing.T) {
			before := children(t)
			r := run(t, `echo "$0"; id -u; echo "$HOME"; pwd -P; exit 3`+"\n", enter, enterArgs(tg.PID, c.user)...)
			checkNoStrays(t, before, tg)
			if r.status() != "exit 3" || r.stdout != c.want || r.stderr != "" {
				t.Errorf("want exit 3 and %q\n%v", c.want, r)
			}
		})
	}

	for _, spec := range []string{"nosuch", "nosuch:staff", "alice:nosuch", "5000:nosuch"} {
		t.Run("--user "+spec, func(t *testing.T) {
			before := children(t)
			r := run(t, "", enter, enterArgs(tg.PID, []string{"--user", spec}, "/bin/echo", "ran")...)
			checkNoStrays(t, before, tg)
			if r.status() != "exit 125" || r.stdout != "" {
				t.Errorf("want exit 125 and no output\n%v", r)
			}
			if err := checkErrline(r.stderr); err != nil {
				t.Error(err)
			}
			if !strings.Contains(r.stderr, "nosuch") {
				t.Errorf("the error does not name nosuch\n%v", r)
			}
		})
	}

	// In a user namespace the ids are the namespace's: on disk alice's
	// file belongs to the host uid the namespace maps 1000 to.
	t.Run("user namespace", func(t *testing.T) {
		utg := nstest.Start(t, nstest.Spec{Name: "user-userns", User: true})
		before := children(t)
		r := run(t, "", enter, enterArgs(utg.PID, []string{"--user", "alice"}, "/bin/sh", "-c", showUser+"; touch /tmp/by-alice")...)
		checkNoStrays(t, before, utg)
		if want := "1000\n1000\n1000 50\n/home/alice\n/bin/sh\n/home/alice\n"; r.status() != "exit 0" || r.stdout != want {
			t.Fatalf("want exit 0 and %q\n%v", want, r)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(utg.Path("/tmp/by-alice"), &st); err != nil {
			t.Fatal(err)
		}
		if want := uint32(utg.UIDShift + 1000); st.Uid != want || st.Gid != want {
			t.Errorf("/tmp/by-alice owned by %d:%d on disk, want %d:%d", st.Uid, st.Gid, want, want)
		}
	})
}

// callerGroups returns `id -G` of this process, which nspawn-enter inherits.
func callerGroups(t *testing.T) string {
	t.Helper()
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	gid := os.Getgid()
	ids := []string{strconv.Itoa(gid)}
	for _, g := range groups {
		if g != gid {
			ids = append(ids, strconv.Itoa(g))
		}
	}
	return strings.Join(ids, " ")
}

// replaceInTarget removes path in a target that shares our user namespace
// and lets make put something else there (a symlink, a FIFO).
func replaceInTarget(t *testing.T, tg *nstest.Target, path string, make func(hostPath string) error) {
	t.Helper()
	p := tg.Path(path)
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := make(p); err != nil {
		t.Fatal(err)
	}
}

// TestSessionHostileFiles gives a target an /etc/passwd and /etc/group
// that are symlinks to absolute paths of host files, which do not exist in
// the target: nspawn-enter must not read the host's, with or without the
// mount namespace. And a FIFO or device for /etc/passwd must not block it.
func TestSessionHostileFiles(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	tg := nstest.Start(t, nstest.Spec{Name: "hostile"})
	hostDir := t.TempDir()
	hostPasswd := filepath.Join(hostDir, "passwd")
	hostGroup := filepath.Join(hostDir, "group")
	if err := os.WriteFile(hostPasswd, []byte("root:x:0:0::/host-only-home:/bin/sh\nalice:x:1000:1000::/host-only-home:/bin/sh\nhostuser:x:3000:3000::/host-only-home:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hostGroup, []byte("staff:x:50:alice\nhostgrp:x:777:alice\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tg.Path(hostDir)); !os.IsNotExist(err) {
		t.Fatalf("%s exists in the target (%v): the test would prove nothing", hostDir, err)
	}
	original, err := os.ReadFile(tg.Path("/etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}

	check := func(t *testing.T, flags []string, cmd, want string) {
		t.Helper()
		before := children(t)
		r := runIn(t, env, quickTimeout, enter, enterArgs(tg.PID, flags, "/bin/sh", "-c", cmd)...)
		checkNoStrays(t, before, tg)
		if r.status() != "exit 0" || r.stdout != want {
			t.Errorf("want exit 0 and %q\n%v", want, r)
		}
		if strings.Contains(r.stdout+r.stderr, "host-only-home") || strings.Contains(r.stdout, "777") {
			t.Errorf("the host's file was read\n%v", r)
		}
	}
	checkNoUser := func(t *testing.T, flags []string) {
		t.Helper()
		before := children(t)
		r := runIn(t, env, quickTimeout, enter, enterArgs(tg.PID, flags, "/bin/echo", "ran")...)
		checkNoStrays(t, before, tg)
		if r.status() != "exit 125" || r.stdout != "" {
			t.Errorf("want exit 125: the user is only in the host's file\n%v", r)
		}
		if err := checkErrline(r.stderr); err != nil {
			t.Error(err)
		}
	}

	t.Run("passwd symlink", func(t *testing.T) {
		replaceInTarget(t, tg, "/etc/passwd", func(p string) error { return os.Symlink(hostPasswd, p) })
		// The setup is hostile: from the host, through /proc/PID/root, the
		// symlink leads to the host's file.
		if b, err := os.ReadFile(tg.Path("/etc/passwd")); err != nil || !strings.Contains(string(b), "host-only-home") {
			t.Fatalf("the target's /etc/passwd does not lead to the host's file from the host: %q, %v", b, err)
		}
		// With no passwd, uid 0 is an account-less number: home "/".
		for _, flags := range [][]string{nil, {"--no-mount"}} {
			t.Run(fmt.Sprintf("%q", flags), func(t *testing.T) {
				check(t, flags, `id -u; echo "$HOME"; pwd -P`, "0\n/\n/\n")
			})
		}
		for _, flags := range [][]string{{"--user", "hostuser"}, {"--user", "alice"}, {"--no-mount", "--user", "alice"}} {
			t.Run(fmt.Sprintf("%q", flags), func(t *testing.T) { checkNoUser(t, flags) })
		}
	})
	t.Run("passwd relative symlink", func(t *testing.T) {
		replaceInTarget(t, tg, "/etc/passwd", func(p string) error {
			return os.Symlink(strings.Repeat("../", 20)+strings.TrimPrefix(hostPasswd, "/"), p)
		})
		for _, flags := range [][]string{nil, {"--no-mount"}} {
			t.Run(fmt.Sprintf("%q", flags), func(t *testing.T) {
				check(t, flags, `id -u; echo "$HOME"`, "0\n/\n")
			})
		}
	})
	t.Run("group symlink", func(t *testing.T) {
		replaceInTarget(t, tg, "/etc/passwd", func(p string) error { return os.WriteFile(p, original, 0o644) })
		replaceInTarget(t, tg, "/etc/group", func(p string) error { return os.Symlink(hostGroup, p) })
		// No group file: the primary group only.
		for _, flags := range [][]string{{"--user", "alice"}, {"--no-mount", "--user", "alice"}} {
			t.Run(fmt.Sprintf("%q", flags), func(t *testing.T) {
				check(t, flags, `id -u; id -g; id -G; echo "$HOME"`, "1000\n1000\n1000\n/home/alice\n")
			})
		}
		for _, flags := range [][]string{{"--user", "alice:hostgrp"}, {"--no-mount", "--user", "alice:hostgrp"}} {
			t.Run(fmt.Sprintf("%q", flags), func(t *testing.T) { checkNoUser(t, flags) })
		}
	})
	t.Run("passwd FIFO", func(t *testing.T) {
		replaceInTarget(t, tg, "/etc/passwd", func(p string) error { return syscall.Mkfifo(p, 0o644) })
		replaceInTarget(t, tg, "/etc/group", func(p string) error { return syscall.Mkfifo(p, 0o644) })
		for _, flags := range [][]string{nil, {"--no-mount"}} {
			t.Run(fmt.Sprintf("%q", flags), func(t *testing.T) {
				check(t, flags, `id -u; echo "$HOME"`, "0\n/\n")
			})
		}
		t.Run("--user 1000", func(t *testing.T) {
			check(t, []string{"--user", "1000"}, `id -u; id -G; echo "$HOME"`, "1000\n1000\n/\n")
		})
	})
	// A line over the scanner's 64 KiB: only --user reads /etc/group, and
	// it says which file is at fault.
	t.Run("group line too long", func(t *testing.T) {
		replaceInTarget(t, tg, "/etc/passwd", func(p string) error { return os.WriteFile(p, original, 0o644) })
		replaceInTarget(t, tg, "/etc/group", func(p string) error {
			return os.WriteFile(p, []byte("staff:x:50:alice\nbig:x:60:"+strings.Repeat("u,", 50<<10)+"u\n"), 0o644)
		})
		check(t, nil, `id -u; id -G; echo "$HOME"`, "0\n0\n/root\n")
		before := children(t)
		r := runIn(t, env, quickTimeout, enter, enterArgs(tg.PID, []string{"--user", "alice"}, "/bin/echo", "ran")...)
		checkNoStrays(t, before, tg)
		if r.status() != "exit 125" || r.stdout != "" || !strings.Contains(r.stderr, "/etc/group has a line longer than 64 KiB") {
			t.Errorf("want exit 125 and the file named\n%v", r)
		}
		if err := checkErrline(r.stderr); err != nil {
			t.Error(err)
		}
	})
	t.Run("passwd symlink to /dev/zero", func(t *testing.T) {
		replaceInTarget(t, tg, "/etc/passwd", func(p string) error { return os.Symlink("/dev/zero", p) })
		replaceInTarget(t, tg, "/etc/group", func(p string) error { return os.Symlink("/dev/urandom", p) })
		check(t, nil, `id -u; echo "$HOME"`, "0\n/\n")
		check(t, []string{"--user", "1000"}, `id -u; id -G`, "1000\n1000\n")
	})
}

// parseEnv splits the output of `env -0` into sorted KEY=VALUE strings.
func parseEnv(out string) []string {
	vars := strings.Split(strings.TrimSuffix(out, "\x00"), "\x00")
	if out == "" {
		vars = nil
	}
	slices.Sort(vars)
	return vars
}

// TestSessionEnv checks the command's environment: a clean login one by
// default, the caller's with --keep-env, the leader's with --leader-env,
// and --setenv on top.
func TestSessionEnv(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	tg := nstest.Start(t, nstest.Spec{Name: "env", User: true})
	// What the caller has: a host-only variable, terminal type and locale,
	// and a HOME and PATH of the host's.
	caller := []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin:/host/only/bin",
		"HOME=/host-home",
		"NSPAWN_TEST_HOSTONLY=1",
		"SSH_AUTH_SOCK=/host/agent.sock",
		"TERM=xterm-nstest",
		"LANG=C.UTF-8",
		"LANGUAGE=en",
		"LC_TIME=POSIX",
		"LC_ALL=C",
	}
	fromCaller := []string{"TERM=xterm-nstest", "LANG=C.UTF-8", "LANGUAGE=en", "LC_TIME=POSIX", "LC_ALL=C"}
	leaderEnv, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", tg.PID))
	if err != nil {
		t.Fatal(err)
	}
	leader := parseEnv(string(leaderEnv))
	if len(leader) == 0 || slices.Contains(leader, "NSPAWN_TEST_HOSTONLY=1") {
		t.Fatalf("the leader's environment %q is no use to the test", leader)
	}
	sorted := func(vars ...[]string) []string {
		out := slices.Concat(vars...)
		slices.Sort(out)
		return out
	}
	login := func(name, home string) []string {
		return []string{loginPath, "HOME=" + home, "USER=" + name, "LOGNAME=" + name, "SHELL=/bin/sh"}
	}
	without := func(vars []string, key string) []string {
		return slices.DeleteFunc(slices.Clone(vars), func(kv string) bool { return strings.HasPrefix(kv, key+"=") })
	}

	cases := []struct {
		name  string
		flags []string
		want  []string
	}{
		{"default", nil, sorted(login("root", "/root"), fromCaller)},
		{"--user alice", []string{"--user", "alice"}, sorted(login("alice", "/home/alice"), fromCaller)},
		{"--keep-env", []string{"--keep-env"}, sorted(caller)},
		{"--leader-env", []string{"--leader-env"}, leader},
		{"--setenv", []string{"--setenv", "A=B", "--setenv", "HOME=/x", "--setenv", "EMPTY="},
			sorted(without(login("root", "/root"), "HOME"), fromCaller, []string{"A=B", "HOME=/x", "EMPTY="})},
		{"--setenv twice", []string{"--setenv", "A=1", "--setenv", "A=2=3"},
			sorted(login("root", "/root"), fromCaller, []string{"A=2=3"})},
		{"--keep-env --setenv", []string{"--keep-env", "--setenv", "NSPAWN_TEST_HOSTONLY=2"},
			sorted(without(caller, "NSPAWN_TEST_HOSTONLY"), []string{"NSPAWN_TEST_HOSTONLY=2"})},
		{"--leader-env --setenv", []string{"--leader-env", "--setenv", "A=B"}, sorted(leader, []string{"A=B"})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := children(t)
			r := runIn(t, caller, runTimeout, enter, enterArgs(tg.PID, c.flags, "env", "-0")...)
			checkNoStrays(t, before, tg)
			if r.status() != "exit 0" || r.stderr != "" {
				t.Fatalf("want exit 0\n%v", r)
			}
			if got := parseEnv(r.stdout); !slices.Equal(got, c.want) {
				t.Errorf("environment\n got %q\nwant %q", got, c.want)
			}
		})
	}

	for _, flags := range [][]string{
		{"--setenv", "NOEQUALS"},
		{"--setenv", "=value"},
		{"--keep-env", "--leader-env"},
		{"--pty", "--no-pty"},
	} {
		t.Run(fmt.Sprintf("%q", flags), func(t *testing.T) {
			before := children(t)
			r := runIn(t, caller, runTimeout, enter, enterArgs(tg.PID, flags, "/bin/echo", "ran")...)
			checkNoStrays(t, before, tg)
			if r.status() != "exit 2" || r.stdout != "" {
				t.Errorf("want exit 2 and no output\n%v", r)
			}
			if err := checkErrline(r.stderr); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestSessionWorkingDir checks --wd.
func TestSessionWorkingDir(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	tg := nstest.Start(t, nstest.Spec{Name: "wd", User: true})
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--wd", "/tmp"}, "/tmp\n"},
		{[]string{"--wd", "/etc/"}, "/etc\n"},
		{[]string{"--wd", "/tmp", "--user", "alice"}, "/tmp\n"},
		{[]string{"--wd", "/"}, "/\n"},
	} {
		t.Run(fmt.Sprintf("%q", c.flags), func(t *testing.T) {
			r := run(t, "", enter, enterArgs(tg.PID, c.flags, "/bin/sh", "-c", "pwd -P")...)
			if r.status() != "exit 0" || r.stdout != c.want || r.stderr != "" {
				t.Errorf("want exit 0 and %q\n%v", c.want, r)
			}
		})
	}
	for _, dir := range []string{"/nonexistent", "/etc/passwd"} {
		t.Run(dir, func(t *testing.T) {
			before := children(t)
			r := run(t, "", enter, enterArgs(tg.PID, []string{"--wd", dir}, "/bin/echo", "ran")...)
			checkNoStrays(t, before, tg)
			if r.status() != "exit 125" || r.stdout != "" {
				t.Errorf("want exit 125 and no output\n%v", r)
			}
			if err := checkErrline(r.stderr); err != nil {
				t.Error(err)
			}
			if !strings.Contains(r.stderr, dir) {
				t.Errorf("the error does not name %s\n%v", dir, r)
			}
		})
	}
}

// cgroupMounts returns where this host mounts the cgroup v2 hierarchy and
// the name=systemd v1 hierarchy ("" if it does not).
func cgroupMounts(t *testing.T) (v2, v1 string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		a, f := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 5 || len(f) < 3 || a[3] != "/" {
			continue
		}
		switch {
		case f[0] == "cgroup2" && v2 == "":
			v2 = a[4]
		case f[0] == "cgroup" && v1 == "" && slices.Contains(strings.Split(f[2], ","), "name=systemd"):
			v1 = a[4]
		}
	}
	return v2, v1
}

// cgroupLines returns the cgroup v2 line ("0::/...") and the name=systemd
// line of /proc/PID/cgroup, as this process sees them.
func cgroupLines(t *testing.T, pid string) (v2, v1 string) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	return parseCgroups(string(b))
}

func parseCgroups(s string) (v2, v1 string) {
	for _, line := range strings.Split(strings.ReplaceAll(s, "\r", ""), "\n") {
		f := strings.SplitN(line, ":", 3)
		switch {
		case len(f) != 3:
		case f[0] == "0" && f[1] == "":
			v2 = f[2]
		case f[1] == "name=systemd":
			v1 = f[2]
		}
	}
	return v2, v1
}

// machineCgroups makes a cgroup v2 group, and a name=systemd v1 group where
// that hierarchy is mounted, below this process's own, as a machine's
// scope. They are removed when the test ends, after the targets started
// later (whose cleanups run first).
func machineCgroups(t *testing.T) (v2, v1 string) {
	t.Helper()
	v2Mount, v1Mount := cgroupMounts(t)
	if v2Mount == "" {
		testenv.Unavailable(t, "no cgroup v2 hierarchy mounted")
	}
	own2, own1 := cgroupLines(t, "self")
	name := fmt.Sprintf("nstest-session-%d-%s.scope", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	v2 = filepath.Join(v2Mount, own2, name)
	if v1Mount != "" {
		v1 = filepath.Join(v1Mount, own1, name)
	}
	for _, dir := range []string{v2, v1} {
		if dir == "" {
			continue
		}
		// The processes in it are being reaped when the test ends.
		testenv.MakeCgroup(t, dir)
	}
	return v2, v1
}

// moveToCgroup writes pid into the cgroup.procs of each dir given.
func moveToCgroup(t *testing.T, pid int, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			t.Fatalf("move pid %d to %s: %v", pid, dir, err)
		}
	}
}

// running is a command started through nspawn-enter that printed a first
// line and now waits for its stdin to close.
type running struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	first  string // its first line of output
	rest   chan string
	stderr *bytes.Buffer
	done   chan struct{}
}

// startRunning starts prog with args, whose command prints one line and
// then waits; it returns once that line is out (a bounded wait).
func startRunning(t *testing.T, prog string, args ...string) *running {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Env = env
	cmd.Dir = "/"
	r := &running{cmd: cmd, stderr: &bytes.Buffer{}, rest: make(chan string, 1), done: make(chan struct{})}
	cmd.Stderr = r.stderr
	var err error
	if r.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = cmd.Process.Kill() // ours, by pid
			r.wait(t)
		}
	})
	first := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadString('\n')
		first <- line
		rest, _ := io.ReadAll(br)
		r.rest <- string(rest)
	}()
	select {
	case r.first = <-first:
	case <-time.After(runTimeout):
		t.Fatalf("%s: printed nothing within %v\nstderr:\n%s", cmd, runTimeout, r.stderr)
	}
	if r.first == "" {
		r.wait(t)
		t.Fatalf("%s: exited without output\nstderr:\n%s", cmd, r.stderr)
	}
	return r
}

// wait waits (bounded) for the program to end, and returns how.
func (r *running) wait(t *testing.T) result {
	t.Helper()
	waited := make(chan error, 1)
	go func() { waited <- r.cmd.Wait() }()
	select {
	case <-waited:
	case <-time.After(runTimeout):
		_ = r.cmd.Process.Kill()
		<-waited
		t.Errorf("%s: did not exit within %v", r.cmd, runTimeout)
	}
	close(r.done)
	var rest string
	select {
	case rest = <-r.rest:
	case <-time.After(5 * time.Second):
	}
	return result{cmd: r.cmd.String(), stdout: r.first + rest, stderr: r.stderr.String(), state: r.cmd.ProcessState}
}

// commandPID finds, among the descendants of pid, the one process whose
// comm is sh: the command nspawn-enter started.
func commandPID(t *testing.T, pid int) string {
	t.Helper()
	var found []int
	for _, d := range testenv.Descendants(t, pid) {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", d)); err == nil && string(comm) == "sh\n" {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("descendants of pid %d named sh: %v, want one", pid, found)
	}
	return strconv.Itoa(found[0])
}

// TestSessionCgroup moves a target's PID 1 into cgroups of its own, as a
// machine's scope, and checks that the command joins them (seen from the
// host and from inside), stays in the caller's with --keep-cgroup, and dies
// with the machine's cgroup.
func TestSessionCgroup(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	// The command prints its own and the leader's view from inside (the
	// target has a cgroup namespace of its own), then waits.
	const show = `{ cat /proc/self/cgroup; echo --; cat /proc/1/cgroup; } | tr '\n' ' '; echo; read x; exit 0`

	for _, spec := range []nstest.Spec{{Name: "cgroup"}, {Name: "cgroup-user", User: true}} {
		t.Run(spec.Name, func(t *testing.T) {
			v2, v1 := machineCgroups(t)
			tg := nstest.Start(t, spec)
			moveToCgroup(t, tg.PID, v2, v1)
			leader := strconv.Itoa(tg.PID)
			lv2, lv1 := cgroupLines(t, leader)
			if !strings.HasSuffix(v2, lv2) || v1 != "" && !strings.HasSuffix(v1, lv1) {
				t.Fatalf("the leader is in %q and %q, not in %s and %s", lv2, lv1, v2, v1)
			}
			sv2, sv1 := cgroupLines(t, "self")
			// runShow runs show with flags, and looks at the command's
			// cgroups from the host while it waits.
			runShow := func(t *testing.T, flags []string) (cv2, cv1 string, r *running, res result) {
				t.Helper()
				before := children(t)
				r = startRunning(t, enter, enterArgs(tg.PID, flags, "/bin/sh", "-c", show)...)
				cv2, cv1 = cgroupLines(t, commandPID(t, r.cmd.Process.Pid))
				r.stdin.Close()
				res = r.wait(t)
				checkNoStrays(t, before, tg)
				return cv2, cv1, r, res
			}

			t.Run("join", func(t *testing.T) {
				cv2, cv1, r, res := runShow(t, nil)
				if res.status() != "exit 0" || res.stderr != "" {
					t.Errorf("want exit 0 and no warning\n%v", res)
				}
				if cv2 != lv2 || cv1 != lv1 {
					t.Errorf("from the host, the command is in %q and name=systemd %q, the leader in %q and %q", cv2, cv1, lv2, lv1)
				}
				// Inside: /proc/self/cgroup then /proc/1/cgroup, the same.
				self, one, ok := strings.Cut(r.first, " -- ")
				if !ok {
					t.Fatalf("inside, the command printed %q", r.first)
				}
				iv2, iv1 := parseCgroups(strings.ReplaceAll(self, " ", "\n"))
				jv2, jv1 := parseCgroups(strings.ReplaceAll(one, " ", "\n"))
				if iv2 != jv2 || iv1 != jv1 || iv2 == "" {
					t.Errorf("inside, the command sees itself in %q and %q, the leader in %q and %q", iv2, iv1, jv2, jv1)
				}
			})

			t.Run("--keep-cgroup", func(t *testing.T) {
				cv2, cv1, _, res := runShow(t, []string{"--keep-cgroup"})
				if res.status() != "exit 0" || res.stderr != "" {
					t.Errorf("want exit 0\n%v", res)
				}
				if cv2 != sv2 || cv1 != sv1 {
					t.Errorf("the command is in %q and name=systemd %q, the caller in %q and %q", cv2, cv1, sv2, sv1)
				}
			})

			// Stopping the machine's unit kills its cgroup: the command
			// goes with it.
			t.Run("killed with the machine", func(t *testing.T) {
				kill := filepath.Join(v2, "cgroup.kill")
				if _, err := os.Stat(kill); err != nil {
					testenv.Unavailable(t, "no cgroup.kill (Linux 5.14): %v", err)
				}
				r := startRunning(t, enter, enterArgs(tg.PID, nil, "/bin/sh", "-c", show)...)
				if err := os.WriteFile(kill, []byte("1"), 0); err != nil {
					t.Fatal(err)
				}
				if res := r.wait(t); res.status() != "signal killed" {
					t.Errorf("want nspawn-enter to end like its killed command\n%v", res)
				}
			})
		})
	}
}

// trapScript traps sig, says it is ready and waits.
func trapScript(sig string) string {
	return fmt.Sprintf(`trap "echo got-%s; exit 3" %s; echo ready; while :; do sleep 0.1; done`, sig, sig)
}

// TestSessionSignals sends signals to nspawn-enter without a pty: each must
// reach the command, and nspawn-enter end as the command did.
func TestSessionSignals(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	signals := []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR2}
	for _, spec := range []nstest.Spec{{Name: "signals"}, {Name: "signals-user", User: true}} {
		t.Run(spec.Name, func(t *testing.T) {
			tg := nstest.Start(t, spec)
			for _, sig := range signals {
				name := strings.TrimPrefix(unix.SignalName(sig), "SIG")
				t.Run(name, func(t *testing.T) {
					before := children(t)
					r := startRunning(t, enter, enterArgs(tg.PID, []string{"--no-pty"}, "/bin/sh", "-c", trapScript(name))...)
					if r.first != "ready\n" {
						t.Fatalf("printed %q, not ready", r.first)
					}
					if err := r.cmd.Process.Signal(sig); err != nil {
						t.Fatal(err)
					}
					res := r.wait(t)
					checkNoStrays(t, before, tg)
					if want := "ready\ngot-" + name + "\n"; res.status() != "exit 3" || res.stdout != want {
						t.Errorf("want exit 3 and %q\n%v", want, res)
					}
				})
			}
			// SIGHUP and SIGINT ignored when nspawn-enter starts (nohup, a
			// background job of sh) are not caught, and the command inherits
			// them ignored, as from nsenter; caught ones reach it as default.
			t.Run("ignored stay ignored", func(t *testing.T) {
				for _, c := range []struct{ trap, want string }{{`trap "" HUP INT; `, "3"}, {"", "0"}} {
					args := append([]string{"-c", c.trap + `exec "$@"`, "sh", enter}, enterArgs(tg.PID, []string{"--no-pty"}, "/bin/sh", "-c", "grep SigIgn /proc/self/status")...)
					res := run(t, "", "/bin/sh", args...)
					ign, ok := strings.CutPrefix(strings.TrimSpace(res.stdout), "SigIgn:")
					mask, err := strconv.ParseUint(strings.TrimSpace(ign), 16, 64)
					if res.status() != "exit 0" || !ok || err != nil {
						t.Fatalf("%q: want the command's SigIgn\n%v", c.trap, res)
					}
					// Bit 0 is SIGHUP, bit 1 SIGINT.
					if got := strconv.FormatUint(mask&3, 10); got != c.want {
						t.Errorf("%q: the command ignores %#x of SIGHUP|SIGINT, want %s\n%v", c.trap, mask&3, c.want, res)
					}
				}
			})
			// Untrapped, the command dies of it, and so does nspawn-enter.
			t.Run("untrapped TERM", func(t *testing.T) {
				before := children(t)
				r := startRunning(t, enter, enterArgs(tg.PID, []string{"--no-pty"}, "/bin/sh", "-c", "echo ready; exec sleep 1000")...)
				if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				res := r.wait(t)
				checkNoStrays(t, before, tg)
				if res.status() != "signal terminated" {
					t.Errorf("want nspawn-enter killed by SIGTERM like the command\n%v", res)
				}
			})
		})
	}
}
