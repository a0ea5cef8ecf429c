package machinetest

import (
	"fmt"
	"os"
	"testing"

	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
)

// TB is what Start needs from a test: *testing.T and *testing.B have it.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

var _ TB = (*testing.T)(nil)

// Start launches a machine for a test and closes it when the test ends
// (Errorf if anything was left behind). A failure to start is Fatalf. If
// spec.Logf is nil, progress goes to t.Logf.
func Start(t TB, name string, spec Spec) *Machine {
	t.Helper()
	if spec.Logf == nil {
		spec.Logf = t.Logf
	}
	m, err := Launch(name, spec)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return m
}

// RunTests runs a test binary's tests (call it from TestMain), then removes
// the programs testenv built and stops the daemons this process started.
// It returns the exit status, failed if the shutdown failed.
func RunTests(m *testing.M) int {
	code := m.Run()
	testenv.RemoveBinaries()
	if err := Shutdown(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	return code
}
