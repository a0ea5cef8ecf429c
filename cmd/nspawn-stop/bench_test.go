package main_test

import (
	"bufio"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
)

// BenchmarkWakeLatency measures the time from a leader's exit to the end
// of nspawn-stop waiting for it. The leader is dash as PID 1 of a new PID
// namespace: it ignores nspawn-stop's SIGTERM (no handler) and exits when
// the benchmark writes a line to its stdin. The clock starts at that
// write, so the figure also holds dash's wake-up and exit.
func BenchmarkWakeLatency(b *testing.B) {
	testenv.RequireRoot(b)
	bin := testenv.Binary(b, "nspawn-stop")
	dash := testenv.LookPath(b, "dash")
	var lat []time.Duration
	for b.Loop() {
		r, w, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		leader := exec.Command(dash, "-c", "read x")
		leader.Stdin = r
		leader.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Unshareflags: syscall.CLONE_NEWNS}
		if err := leader.Start(); err != nil {
			b.Fatal(err)
		}
		r.Close()
		stop := exec.Command(bin, "--pid", strconv.Itoa(leader.Process.Pid), "--signal", "TERM", "--timeout", "0")
		stderr, err := stop.StderrPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := stop.Start(); err != nil {
			b.Fatal(err)
		}
		lines := bufio.NewScanner(stderr)
		if !lines.Scan() || !strings.Contains(lines.Text(), "sent SIGTERM") {
			b.Fatalf("nspawn-stop said %q", lines.Text())
		}
		// Now it waits in poll(2). Give it a moment to get there.
		time.Sleep(2 * time.Millisecond)
		t0 := time.Now()
		w.Write([]byte("\n"))
		for lines.Scan() {
		}
		if err := stop.Wait(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		w.Close()
		leader.Wait()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "median-µs")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds()), "p90-µs")
}

// BenchmarkIdleWait runs nspawn-stop for its whole --timeout 10s on a PID
// 1 that ignores the signal, and reports the CPU time and peak RSS it used.
func BenchmarkIdleWait(b *testing.B) {
	testenv.RequireRoot(b)
	bin := testenv.Binary(b, "nspawn-stop")
	leader := exec.Command(testenv.LookPath(b, "sleep"), "1000")
	leader.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Unshareflags: syscall.CLONE_NEWNS}
	if err := leader.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { leader.Process.Kill(); leader.Wait() }()
	var cpu time.Duration
	var rss int64
	runs := 0
	for b.Loop() {
		stop := exec.Command(bin, "--pid", strconv.Itoa(leader.Process.Pid), "--signal", "TERM", "--timeout", "10s")
		if err := stop.Run(); stop.ProcessState == nil || stop.ProcessState.ExitCode() != 124 {
			b.Fatalf("nspawn-stop: %v, want exit 124", err)
		}
		ru := stop.ProcessState.SysUsage().(*syscall.Rusage)
		cpu += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		rss = max(rss, int64(ru.Maxrss))
		runs++
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(runs), "cpu-ms/op")
	b.ReportMetric(float64(rss), "maxrss-KiB")
}
