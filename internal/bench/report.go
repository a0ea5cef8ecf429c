package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// section orders the table's rows.
type section int

const (
	secEnter section = iota
	secStop
	secSize
	secScale
)

// Results against a goal.
const (
	resultPass = "PASS"
	resultFail = "FAIL"
	resultInfo = "info"
	resultNA   = "n/a"
)

// row is one line of the main table.
type row struct {
	sec                           section
	what, ours, ref, goal, result string
}

func (b *bench) add(sec section, what, ours, ref, goal, result string) {
	b.rows = append(b.rows, row{sec, what, ours, ref, goal, result})
}

// verdict is PASS when ok, else FAIL.
func verdict(ok bool) string {
	if ok {
		return resultPass
	}
	return resultFail
}

// breakdownLine is one step of "where nspawn-enter's time goes".
type breakdownLine struct {
	c    *contender
	adds string // what this command does more than the previous line
}

// fact is one line about the machine the benchmarks ran on.
type fact struct{ name, value string }

func machineFacts() []fact {
	var u unix.Utsname
	unix.Uname(&u)
	fs := []fact{
		{"kernel", unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])},
		{"CPU", cpuModel()},
		{"clocksource", clocksource()},
		{"nproc", fmt.Sprint(runtime.NumCPU())},
		{"Go", runtime.Version()},
		{"util-linux", firstLine("nsenter", "--version")},
		{"systemd", firstLine("systemd-nspawn", "--version")},
		{"hyperfine", firstLine("hyperfine", "--version")},
		{"date", time.Now().UTC().Format("2006-01-02 15:04 UTC")},
		{"load average at the start", loadavg()},
	}
	return fs
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// clocksource is the kernel's current clock source: the Go runtime reads
// the clock far more often than a C tool, through the vDSO where the
// source allows it.
func clocksource() string {
	data, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(data))
}

func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "not available"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

func loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// ms formats a duration in milliseconds, or microseconds below 1 ms.
func ms(d time.Duration) string {
	if d < time.Millisecond && d > -time.Millisecond {
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// mib formats a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

// ratio formats a/b.
func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func (b *bench) report(w io.Writer) {
	fmt.Fprintf(w, "## Benchmarks\n\n")
	fmt.Fprintf(w, "`go run ./internal/bench` (as root); every comparison is side by side: %d rounds, each running every command once in a rotating order, after 3 warm-up rounds; times are medians of wall time from fork to wait.\n\n", b.cfg.runs)
	if b.cfg.runs < 30 {
		fmt.Fprintf(w, "**Fewer than 30 runs per command: a check that the benchmarks work, not a measurement.**\n\n")
	}
	for _, f := range b.facts {
		fmt.Fprintf(w, "- %s: %s\n", f.name, f.value)
	}
	fmt.Fprintf(w, "\n| what | ours | reference | ratio / goal | result |\n|---|---|---|---|---|\n")
	sort.SliceStable(b.rows, func(i, j int) bool { return b.rows[i].sec < b.rows[j].sec })
	for _, r := range b.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.what, r.ours, r.ref, r.goal, r.result)
	}
	if len(b.breakdown) > 0 {
		fmt.Fprintf(w, "\n### Where nspawn-enter's time goes\n\nMedians from the same alternating rounds; each line adds one step to the one above (target with a user namespace).\n\n")
		fmt.Fprintf(w, "| command | median | adds | for |\n|---|---|---|---|\n")
		var prev time.Duration
		for i, l := range b.breakdown {
			m := l.c.median()
			delta := "—"
			if i > 0 {
				delta = signed(m - prev)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", l.c.name, ms(m), delta, l.adds)
			prev = m
		}
	}
	if len(b.details) > 0 {
		fmt.Fprintf(w, "\n### All timings\n\n| command | runs | min | p10 | median | p90 | max | CPU median | page faults |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, c := range b.details {
			s := summarize(c.times())
			cpu, faults := "—", "—" // a sequence of commands has no one rusage
			if len(c.runs) > 0 && len(c.runs[0].steps) == 0 {
				cpu, faults = ms(c.cpuMedian()), fmt.Sprint(c.faultsMedian())
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", c.name, s.n, ms(s.min), ms(s.p10), ms(s.median), ms(s.p90), ms(s.maxim), cpu, faults)
			for _, st := range steps(c) {
				p := summarize(st.times)
				fmt.Fprintf(w, "| ↳ %s | %d | %s | %s | %s | %s | %s | — | — |\n", st.name, p.n, ms(p.min), ms(p.p10), ms(p.median), ms(p.p90), ms(p.maxim))
			}
		}
	}
	for _, e := range b.extra {
		fmt.Fprintf(w, "\n%s", e)
	}
	if len(b.notes) > 0 {
		fmt.Fprintf(w, "\nNotes:\n\n")
		for _, n := range b.notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// stepTimes are the timings of one step over a contender's runs.
type stepTimes struct {
	name  string
	times []time.Duration
}

// steps gathers the timings of each step of a contender's runs, in order.
func steps(c *contender) []stepTimes {
	var out []stepTimes
	for _, p := range c.runs {
		for i, st := range p.steps {
			if i == len(out) {
				out = append(out, stepTimes{name: st.name})
			}
			out[i].times = append(out[i].times, st.elapsed)
		}
	}
	return out
}

// signed formats a difference of durations with its sign.
func signed(d time.Duration) string {
	if d < 0 {
		return ms(d)
	}
	return "+" + ms(d)
}
