package machinetest

import "testing"

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
