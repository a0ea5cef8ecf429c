// Package testenv lets a test demand what it needs (root, a program) and
// fail, not skip, when CI=true: in CI a test that cannot run is a defect.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Unavailable stops the test because something it needs is missing: a
// failure under CI=true, a skip with the reason elsewhere.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run in CI: "+format, args...)
	}
	t.Skipf("cannot run: "+format, args...)
}

// RequireRoot stops the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (euid is %d)", os.Geteuid())
	}
}

// LookPath returns the path of a program the test needs, or stops the test.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "needs %s: %v", name, err)
	}
	return p
}
