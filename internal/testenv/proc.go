package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ChildrenOf returns the children of every thread of pid, sorted; none if
// pid is gone.
func ChildrenOf(t testing.TB, pid int) []int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatal(err)
	}
	var kids []int
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue // the thread is gone
		}
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	slices.Sort(kids)
	return kids
}

// Descendants returns the descendants of pid, depth first.
func Descendants(t testing.TB, pid int) []int {
	t.Helper()
	var all []int
	for _, k := range ChildrenOf(t, pid) {
		all = append(all, k)
		all = append(all, Descendants(t, k)...)
	}
	return all
}

// MakeCgroup creates the cgroup directory dir and removes it when the test
// ends, retrying for up to 10 s while the processes or threads in it end.
func MakeCgroup(t testing.TB, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := syscall.Rmdir(dir)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				return
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
				t.Errorf("remove cgroup %s: %v (processes: %q)", dir, err, procs)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
