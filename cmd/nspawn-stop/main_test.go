package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinaries()
	os.Exit(code)
}

// run runs nspawn-stop with args, bounded so that a hang fails, and
// returns its exit status, stdout and stderr.
func run(t testing.TB, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t, "nspawn-stop"), args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	if !timer.Stop() {
		t.Fatalf("nspawn-stop %q hung: killed after 30s", args)
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// stateDir holds machined-like state files.
func stateDir(t testing.TB, machines map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range machines {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestCommandLine: usage errors exit 2 with one error line and a hint;
// a machine that is not running is no error (exit 0).
func TestCommandLine(t *testing.T) {
	// "other" is a stale record; "live" names this test process, which runs.
	dir := stateDir(t, map[string]string{
		"other": "# This is private data. Do not parse.\nNAME=other\nLEADER=999999\nCLASS=container\n",
		"live":  fmt.Sprintf("# This is private data. Do not parse.\nNAME=live\nLEADER=%d\nCLASS=container\n", os.Getpid()),
	})
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string // a regexp the whole stderr must match
		stdout string
	}{
		{[]string{"--help"}, 0, `^$`, `(?s)Exit status:.*0 +the leader exited.*124 +timed out.*137 +killed.*125 +any other error.*2 +usage error`},
		{nil, 2, `^nspawn-stop: error: name a machine, or give --pid\nnspawn-stop: hint: see 'nspawn-stop --help'\n$`, `^$`},
		{[]string{"m", "--pid", "1"}, 2, `not both`, ``},
		{[]string{"--pid=-3"}, 2, `not a process id`, ``},
		{[]string{"--pid", "abc"}, 2, `^nspawn-stop: error: --pid`, ``},
		{[]string{"m", "--bogus"}, 2, `unknown flag --bogus`, ``},
		{[]string{"--kill-after", "5s", "--timeout", "0", "m"}, 2, `needs a --timeout`, ``},

		// Invalid machine names: usage errors, checked before any file is read.
		{[]string{"../etc"}, 2, `^nspawn-stop: error: invalid machine name "../etc": empty label.*\nnspawn-stop: hint: see`, ``},
		{[]string{"a/b"}, 2, `character '/' not allowed`, ``},
		{[]string{"--", "-x"}, 2, `invalid machine name "-x"`, ``},
		{[]string{".host"}, 2, `names the host itself`, ``},
		{[]string{string(bytes.Repeat([]byte("a"), 65))}, 2, `longer than 64`, ``},

		// Signals.
		{[]string{"--signal", "FOO", "m"}, 2, `^nspawn-stop: error: --signal: invalid signal "FOO": unknown signal name \(see kill -l\)\n`, ``},
		{[]string{"--signal", "0", "m"}, 2, `not a number from 1 to 64`, ``},
		{[]string{"--signal", "65", "m"}, 2, `not a number from 1 to 64`, ``},
		{[]string{"--signal", "32", "m"}, 2, `reserved by the C library`, ``},
		{[]string{"--signal", "RTMIN+31", "m"}, 2, `RTMIN\+N or RTMAX-N`, ``},
		{[]string{"--signal=-15", "m"}, 2, `invalid signal`, ``},
		{[]string{"--signal", "SIG TERM", "m"}, 2, `not a signal name or number`, ``},

		// Durations.
		{[]string{"--timeout=-1", "m"}, 2, `^nspawn-stop: error: --timeout: invalid duration "-1": want seconds \(60\) or a duration \(90s, 2m\), not negative\n`, ``},
		{[]string{"--timeout", "-1", "m"}, 2, `^nspawn-stop: error: --timeout`, ``},
		{[]string{"--timeout=-5s", "m"}, 2, `not negative`, ``},
		{[]string{"--timeout", "ten", "m"}, 2, `invalid duration "ten"`, ``},
		{[]string{"--timeout", "5x", "m"}, 2, `invalid duration "5x"`, ``},
		{[]string{"--timeout", "99999999999", "m"}, 2, `too large`, ``},
		{[]string{"--kill-after=-1s", "m"}, 2, `--kill-after: invalid duration`, ``},
		{[]string{"--kill-after", "", "m"}, 2, `invalid duration "": empty`, ``},

		// Not running: nothing to stop, exit 0 (ExecStop= may run after the
		// machine has exited by itself). Good flags parse.
		{[]string{"--state-dir", dir, "nosuch"}, 0, `^nspawn-stop: machine "nosuch" is not running \(machined has no record of it\): nothing to stop; running: live\n$`, `^$`},
		{[]string{"--state-dir", dir, "other"}, 0, `its leader, pid 999999, has exited; the record is stale\): nothing to stop`, `^$`},
		{[]string{"--pid", "999999"}, 0, `^nspawn-stop: pid 999999: no such process: nothing to stop\n$`, `^$`},
		{[]string{"--state-dir", dir, "--signal", "pwr", "--timeout", "90s", "--kill-after", "10s", "nosuch"}, 0, `nothing to stop`, ``},
		{[]string{"--state-dir", dir, "--signal", "SIGRTMIN+4", "--timeout", "2.5", "nosuch"}, 0, `nothing to stop`, ``},
		{[]string{"--state-dir", dir, "--signal", "30", "--timeout", "0", "nosuch"}, 0, `nothing to stop`, ``},
	} {
		code, stdout, stderr := run(t, tc.args...)
		if code != tc.code || !regexp.MustCompile(tc.stderr).MatchString(stderr) || !regexp.MustCompile(tc.stdout).MatchString(stdout) {
			t.Errorf("nspawn-stop %q: exit %d, want %d\nstdout: %s\nstderr: %s", tc.args, code, tc.code, stdout, stderr)
		}
	}
}
