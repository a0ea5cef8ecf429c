package machinetest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// staleRE matches the cgroups of machines named by Name: the PID in the
// name is that of the test process that started them.
var staleRE = regexp.MustCompile(`^nspawntest-(nt-[A-Za-z0-9-]*?-([0-9]+)(-[0-9]+)?)\.scope$`)

// ReapStale removes what machines left behind when the test process that
// started them died without cleaning up (killed by a timeout, say): their
// processes (only those in their unit-named cgroups), cgroups, state files,
// overlay mounts and scratch directories. It touches only machines named
// by Name whose owning process no longer exists. EnsureMachined calls it.
func ReapStale(logf Logf) error {
	roots := CgroupRoots()
	ents, err := os.ReadDir(roots[0])
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range ents {
		mt := staleRE.FindStringSubmatch(e.Name())
		if mt == nil || !e.IsDir() {
			continue
		}
		name, owner := mt[1], mt[2]
		if pid, _ := strconv.Atoi(owner); pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + owner); err == nil {
			continue // its test process is alive: not ours to touch
		}
		logf.printf("machinetest: removing machine %s left by dead test process %s", name, owner)
		var cgs []string
		for _, r := range roots {
			cgs = append(cgs, filepath.Join(r, e.Name()))
		}
		for _, cg := range cgs {
			if err := drainCgroup(cg, 10*time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		m := &Machine{Name: name}
		if st, err := ReadStateFile(m.StateFile()); err == nil && st["SCOPE"] == e.Name() {
			if err := m.unregister(); err != nil {
				errs = append(errs, err)
			}
		}
		for _, cg := range cgs {
			if err := removeCgroup(cg); err != nil {
				errs = append(errs, err)
			}
		}
		os.Remove(filepath.Join("/run/systemd/nspawn/propagate", name))
		scratch, _ := filepath.Glob(filepath.Join(os.TempDir(), "nspawntest-"+name+"-*"))
		for _, s := range scratch {
			// the name ends in the owner's PID, so "nt-x-12-*" cannot match
			// "nt-x-123-..."; a counter suffix can, but that machine is stale too
			if rest := strings.TrimPrefix(filepath.Base(s), "nspawntest-"+name+"-"); strings.Contains(rest, "-") {
				continue
			}
			if err := removeTree(s); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("machinetest: removing stale machines: %w", err)
	}
	return nil
}
