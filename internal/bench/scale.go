package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/leader"
	"golang.org/x/sys/unix"
)

// resolutionGoal bounds resolution time among many machines against one:
// it must not grow with their number (the bound leaves room for noise).
const resolutionGoal = 1.2

// scaleResolution times leader.Find in a state directory of one machine
// and in one of many (without varlink: the tools read the state file
// there), in alternating testing.Benchmark runs.
func (b *bench) scaleResolution() {
	n := b.cfg.machines
	what := fmt.Sprintf("scale: resolve a machine by name (`leader.Find`, state file) among %d registered vs 1", n)
	logf("scale: leader.Find among %d state files vs 1", n)
	name := fmt.Sprintf("bench-%03d", n/2)
	one, many := filepath.Join(b.dir, "machines-1"), filepath.Join(b.dir, "machines-"+strconv.Itoa(n))
	err := writeStates(one, b.plain.PID, []string{name})
	if err == nil {
		var names []string
		for i := range n {
			names = append(names, fmt.Sprintf("bench-%03d", i))
		}
		err = writeStates(many, b.plain.PID, names)
	}
	if err != nil {
		b.fail(secScale, what, err)
		return
	}
	var failures atomic.Int64
	var lastErr atomic.Value
	find := func(dir string) func(*testing.B) {
		opt := &leader.Options{StateDir: dir, Varlink: "-"}
		return func(tb *testing.B) {
			tb.ReportAllocs()
			for tb.Loop() {
				l, err := leader.Find(name, opt)
				if err != nil {
					failures.Add(1)
					lastErr.Store(err)
					continue
				}
				l.Close()
			}
		}
	}
	const rounds = 3
	var oneRes, manyRes []testing.BenchmarkResult
	for range rounds {
		oneRes = append(oneRes, testing.Benchmark(find(one)))
		manyRes = append(manyRes, testing.Benchmark(find(many)))
	}
	if failures.Load() > 0 {
		b.fail(secScale, what, fmt.Errorf("%d of the lookups failed, the last with: %v", failures.Load(), lastErr.Load()))
		return
	}
	med := func(rs []testing.BenchmarkResult) (time.Duration, int64) {
		ns := make([]time.Duration, len(rs))
		for i, r := range rs {
			ns[i] = time.Duration(r.NsPerOp())
		}
		return summarize(ns).median, rs[0].AllocsPerOp()
	}
	tOne, aOne := med(oneRes)
	tMany, aMany := med(manyRes)
	r := ratio(tMany, tOne)
	b.add(secScale, what, fmt.Sprintf("%s/op, %d allocs/op with %d", ms(tMany), aMany, n), fmt.Sprintf("%s/op, %d allocs/op with 1", ms(tOne), aOne),
		fmt.Sprintf("%.2f× (goal: no growth, ≤ %.2f×)", r, resolutionGoal), verdict(r <= resolutionGoal))
	b.notes = append(b.notes, fmt.Sprintf("Resolution: testing.Benchmark of `leader.Find(NAME, &leader.Options{StateDir: DIR, Varlink: \"-\"})`, %d rounds alternating between the two directories, median ns/op; the state files name a live leader (a target's PID 1). Only a machine that is not running lists the directory (for the error's hint).", rounds))
}

// writeStates writes a machined state file for each name into dir, all
// naming leader (a live process) as registered now.
func writeStates(dir string, leader int, names []string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	var mono, real unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return err
	}
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &real); err != nil {
		return err
	}
	for i, name := range names {
		data := fmt.Sprintf("# This is private data. Do not parse.\nNAME=%s\nSCOPE=machine-%s.scope\nSERVICE=systemd-nspawn\nROOT=/var/lib/machines/%s\nID=%032x\nLEADER=%d\nCLASS=container\nREALTIME=%d\nMONOTONIC=%d\n",
			name, name, name, i+1, leader, real.Nano()/1000, mono.Nano()/1000)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// scaleConcurrent starts many nspawn-enter at once into one target, then
// as many nsenter.
func (b *bench) scaleConcurrent() {
	n := b.cfg.concurrent
	what := fmt.Sprintf("scale: %d concurrent `nspawn-enter --pid P -- /bin/true` into one target (user ns)", n)
	logf("scale: %d concurrent runs", n)
	u := strconv.Itoa(b.userns.PID)
	ok, wall, err := concurrently(n, []string{b.enter, "--pid", u, "--", "/bin/true"})
	refOK, refWall, refErr := concurrently(n, []string{b.nsenter, "-t", u, "-a", "/bin/true"})
	ours := fmt.Sprintf("%d/%d succeeded, %s in all", ok, n, ms(wall))
	ref := fmt.Sprintf("nsenter -t P -a: %d/%d succeeded, %s in all", refOK, n, ms(refWall))
	if err != nil {
		ours += "; first error: " + oneLine(err.Error())
	}
	if refErr != nil {
		ref += "; first error: " + oneLine(refErr.Error())
	}
	b.add(secScale, what, ours, ref, "goal: all succeed", verdict(ok == n))
}

// concurrently starts n runs of argv at once and counts those that exit 0.
func concurrently(n int, argv []string) (ok int, wall time.Duration, firstErr error) {
	errs := make([]error, n)
	var wg sync.WaitGroup
	begin := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-begin
			_, errs[i] = runWant(argv, 0)
		})
	}
	t0 := time.Now()
	close(begin)
	wg.Wait()
	wall = time.Since(t0)
	for _, e := range errs {
		if e == nil {
			ok++
		} else if firstErr == nil {
			firstErr = e
		}
	}
	return ok, wall, firstErr
}
