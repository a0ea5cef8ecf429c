package main_test

import (
	"debug/buildinfo"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nspawn-tools/nspawn-tools/internal/nstest"
	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
)

// TestBadInput runs nspawn-enter with command lines it must refuse: each
// ends with the given status (2 for what the command line alone shows wrong,
// invalid machine names included; 125 for what the tool finds wrong), nothing
// on stdout, one error line on stderr (see checkErrline) that contains the
// given text, and nothing left running.
func TestBadInput(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	setpriv := testenv.LookPath(t, "setpriv")
	tg := nstest.Start(t, nstest.Spec{Name: "badinput", User: true})
	unknown := fmt.Sprintf("nstest-unknown-%d", os.Getpid())
	if _, err := os.Stat("/run/systemd/machines/" + unknown); err == nil {
		t.Fatalf("machine %s exists", unknown)
	}
	free := strconv.Itoa(freePID(t))
	pid := strconv.Itoa(tg.PID)
	long := strings.Repeat("a", 65)

	cases := []struct {
		name   string
		argv   []string // after the program
		status string
		text   string // in the error line
	}{
		{"no arguments", nil, "exit 2", ""},
		{"unknown flag", []string{"-x"}, "exit 2", "-x"},
		{"unknown long flag", []string{"--no-such-flag", "m"}, "exit 2", "--no-such-flag"},
		{"machine and --pid", []string{"m", "--pid", pid, "--", "/bin/true"}, "exit 2", ""},
		{"--pid not a number", []string{"--pid", "abc", "--", "/bin/true"}, "exit 2", "abc"},
		{"name with ..", []string{"../x", "--", "/bin/true"}, "exit 2", "../x"},
		{"name with /", []string{"a/b", "--", "/bin/true"}, "exit 2", "a/b"},
		{"name of 65 chars", []string{long, "--", "/bin/true"}, "exit 2", long},
		{"empty name", []string{"", "--", "/bin/true"}, "exit 2", ""},
		{"name .host", []string{".host", "--", "/bin/true"}, "exit 2", ".host"},
		{"unknown machine", []string{unknown, "--", "/bin/true"}, "exit 125", unknown},
		{"--pid of no process", []string{"--pid", free, "--", "/bin/true"}, "exit 125", free},
		{"--pid 0", []string{"--pid", "0", "--", "/bin/true"}, "exit 2", "--pid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := children(t)
			r := run(t, "", enter, c.argv...)
			checkNoStrays(t, before, tg)
			if r.status() != c.status || r.stdout != "" {
				t.Errorf("want %s and no stdout\n%v", c.status, r)
			}
			if err := checkErrline(r.stderr); err != nil {
				t.Error(err)
			}
			if first, _, _ := strings.Cut(r.stderr, "\n"); !strings.Contains(first, c.text) {
				t.Errorf("the error does not name %q\n%v", c.text, r)
			}
		})
	}

	// Root without capabilities: nothing to join with.
	t.Run("no capabilities", func(t *testing.T) {
		before := children(t)
		r := run(t, "", setpriv, "--bounding-set=-all", "--inh-caps=-all", "--", enter, "--pid", pid, "--", "/bin/true")
		checkNoStrays(t, before, tg)
		if r.status() != "exit 125" || r.stdout != "" {
			t.Errorf("want exit 125 and no stdout\n%v", r)
		}
		if err := checkErrline(r.stderr); err != nil {
			t.Error(err)
		}
	})

	// Success, for contrast: the same target, the same program.
	t.Run("good", func(t *testing.T) {
		r := run(t, "", enter, "--pid", pid, "--", "/bin/cat", "/etc/marker")
		if r.status() != "exit 0" || r.stdout != tg.Marker+"\n" || r.stderr != "" {
			t.Errorf("want exit 0 and the marker\n%v", r)
		}
	})

	// --help is no error.
	t.Run("--help", func(t *testing.T) {
		r := run(t, "", enter, "--help")
		if r.status() != "exit 0" {
			t.Errorf("want exit 0\n%v", r)
		}
		for _, k := range []string{"mount", "uts", "ipc", "network", "pid", "cgroup", "user", "time"} {
			if !strings.Contains(r.stdout, "--no-"+k) {
				t.Errorf("help lacks --no-%s\n%v", k, r)
			}
		}
	})
}

// checkErrline checks that stderr is one "nspawn-enter: error: " line,
// optionally followed by "nspawn-enter: hint: " lines.
func checkErrline(stderr string) error {
	lines := strings.Split(stderr, "\n")
	if len(lines) < 2 || lines[len(lines)-1] != "" {
		return fmt.Errorf("stderr %q: want one error line ending in a newline", stderr)
	}
	lines = lines[:len(lines)-1]
	if !strings.HasPrefix(lines[0], "nspawn-enter: error: ") || len(lines[0]) == len("nspawn-enter: error: ") {
		return fmt.Errorf("stderr %q: the first line is no \"nspawn-enter: error: ...\"", stderr)
	}
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, "nspawn-enter: hint: ") {
			return fmt.Errorf("stderr %q: line %q is neither the error nor a hint", stderr, l)
		}
	}
	return nil
}

// freePID returns a PID that no process has, high enough that none is
// likely to get it while the tests run.
func freePID(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for pid := max - 1; pid > max/2; pid-- {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return pid
		}
	}
	t.Fatal("no free PID")
	return 0
}

// TestNotRoot runs nspawn-enter as nobody: it must refuse with one clear
// line and exit 125, and start nothing.
func TestNotRoot(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	tg := nstest.Start(t, nstest.Spec{Name: "notroot", User: true})

	// The build directory is private to root: run a copy nobody can reach.
	pub, err := os.MkdirTemp("", "nstest-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pub) })
	if err := os.Chmod(pub, 0o755); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(pub, "nspawn-enter")
	copyFile(t, enter, prog)

	for _, args := range [][]string{
		{"--pid", strconv.Itoa(tg.PID), "--", "/bin/true"},
		{"--pid", strconv.Itoa(tg.PID), "--no-user", "--", "/bin/true"},
		{"--pid", strconv.Itoa(tg.PID)},
	} {
		before := children(t)
		cmd := exec.Command(prog, args...)
		cmd.Env = env
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		checkNoStrays(t, before, tg)
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err == nil {
			code = 0
		}
		if code != 125 || stdout.String() != "" {
			t.Errorf("%q as nobody: %v, stdout %q, stderr %q; want exit 125", args, err, stdout.String(), stderr.String())
		}
		if err := checkErrline(stderr.String()); err != nil {
			t.Errorf("%q as nobody: %v", args, err)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNoKong: the binary does not link kong, whose package initialisation
// every run would pay (see args.go); only its tests use it.
func TestNoKong(t *testing.T) {
	bi, err := buildinfo.ReadFile(testenv.Binary(t, "nspawn-enter"))
	if err != nil {
		t.Fatal(err)
	}
	if len(bi.Deps) == 0 {
		t.Fatalf("no modules in the build information of nspawn-enter: %v", bi)
	}
	for _, m := range bi.Deps {
		if m.Path == "github.com/alecthomas/kong" {
			t.Errorf("nspawn-enter links %s %s", m.Path, m.Version)
		}
	}
}
