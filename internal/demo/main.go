// Command demo shows the two tools doing their job end to end: it builds
// nspawn-enter and nspawn-stop, starts a throwaway busybox machine
// registered with systemd-machined, enters it, stops it, prints what
// happened with timings, and removes everything it made.
//
// Run it as root from the repository: go run ./internal/demo
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/machinetest"
)

var start = time.Now()

func logf(format string, args ...any) {
	fmt.Printf("[%7.3fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	os.Exit(run())
}

func run() (code int) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: must run as root (it starts systemd-nspawn machines)")
		return 1
	}
	var cleanups []func()
	var mu sync.Mutex // main and the signal handler may both clean up
	cleanup := func() {
		mu.Lock()
		defer mu.Unlock()
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		cleanups = nil
	}
	defer cleanup()
	cleanups = append(cleanups, func() {
		if err := machinetest.Shutdown(logf); err != nil {
			logf("cleanup: %v", err)
			code = 1
		}
	})
	// ^C or SIGTERM: clean up, then exit.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("got %v: cleaning up", s)
		cleanup()
		os.Exit(130)
	}()

	fail := func(format string, args ...any) int {
		logf("FAILED: "+format, args...)
		return 1
	}

	// 1. build the tools
	t := time.Now()
	bin, err := os.MkdirTemp("", "nspawn-tools-demo-")
	if err != nil {
		return fail("%v", err)
	}
	cleanups = append(cleanups, func() { os.RemoveAll(bin) })
	root, err := moduleRoot()
	if err != nil {
		return fail("%v", err)
	}
	build := exec.Command("go", "build", "-trimpath", "-o", bin+string(os.PathSeparator), "./cmd/...")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fail("go build ./cmd/...: %v\n%s", err, out)
	}
	enter, stop := filepath.Join(bin, "nspawn-enter"), filepath.Join(bin, "nspawn-stop")
	for _, p := range []string{enter, stop} {
		if _, err := os.Stat(p); err != nil {
			return fail("build did not produce %s: %v", filepath.Base(p), err)
		}
	}
	logf("built nspawn-enter and nspawn-stop into %s in %v", bin, since(t))

	// 2. a throwaway busybox machine registered with machined
	t = time.Now()
	name := machinetest.Name("demo")
	m, err := machinetest.Launch(name, machinetest.Spec{Init: machinetest.InitBusybox, Logf: logf})
	if err != nil {
		return fail("%v", err)
	}
	cleanups = append(cleanups, func() {
		if err := m.Close(); err != nil {
			logf("cleanup: %v", err)
			code = 1
		} else {
			logf("machine %s cleaned up: no process, cgroup, state file, mount or scratch left", name)
		}
	})
	logf("machine %s running in %v: systemd-nspawn pid %d, leader pid %d; machined's record:", name, since(t), m.NspawnPID, m.Leader)
	state, _ := os.ReadFile(m.StateFile())
	for _, line := range strings.Split(strings.TrimSpace(string(state)), "\n") {
		if !strings.HasPrefix(line, "#") {
			fmt.Printf("             %s\n", line)
		}
	}

	// 3. enter it
	script := "hostname; cat /etc/os-release | head -1; ps"
	r := runTool(enter, name, "--", "sh", "-c", script)
	logf("$ nspawn-enter %s -- sh -c '%s'   → %s in %v", name, script, r.status, since2(r.elapsed))
	fmt.Print(indent(r.stdout))
	if r.stderr != "" {
		fmt.Print(indent(r.stderr))
	}
	if r.err != nil || r.code != 0 {
		return fail("nspawn-enter: %s %v", r.status, r.err)
	}

	// 4. stop it
	t = time.Now()
	r = runTool(stop, name)
	logf("$ nspawn-stop %s   → %s in %v", name, r.status, since2(r.elapsed))
	fmt.Print(indent(r.stdout + r.stderr))
	if r.err != nil || r.code != 0 {
		return fail("nspawn-stop: %s %v", r.status, r.err)
	}
	nspawnCode, err := m.Wait(30 * time.Second)
	if err != nil {
		return fail("%v", err)
	}
	logf("systemd-nspawn exited with status %d, %v after nspawn-stop began (0 = powered off; 133 would be a reboot)", nspawnCode, since(t))
	if _, err := os.Stat(m.StateFile()); errors.Is(err, os.ErrNotExist) {
		logf("machined no longer lists %s (%s is gone)", name, m.StateFile())
	} else {
		logf("machined still has %s", m.StateFile())
		code = 1
	}
	if nspawnCode != 0 {
		code = 1
	}
	cleanup()
	logf("done in %v", since(start))
	return code
}

type result struct {
	stdout, stderr string
	code           int
	status         string
	elapsed        time.Duration
	err            error
}

func runTool(prog string, args ...string) result {
	cmd := exec.Command(prog, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t := time.Now()
	done := make(chan error, 1)
	err := cmd.Start()
	if err == nil {
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			<-done
			err = errors.New("still running after 2 minutes: killed")
		}
	}
	r := result{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(t)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = nil
	}
	r.err = err
	if cmd.ProcessState != nil {
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		r.code = ws.ExitStatus()
		r.status = fmt.Sprintf("exit status %d", r.code)
		if ws.Signaled() {
			r.code = 128 + int(ws.Signal())
			r.status = "killed by " + ws.Signal().String()
		}
	}
	return r
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the demo from the nspawn-tools repository (go run ./internal/demo)")
	}
	return filepath.Dir(gomod), nil
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

func since2(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("             | " + line + "\n")
	}
	return b.String()
}
