package machinetest

import (
	"os"
	"testing"

	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
)

// Require stops the test (a failure under CI=true, else a skip) unless
// machines of the given rootfs kinds can be started here: root, the
// programs the harness runs, and debootstrap for the Debian kinds.
func Require(t testing.TB, kinds ...Kind) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, p := range []string{"systemd-nspawn", "dbus-daemon", "busctl", "nsenter"} {
		testenv.LookPath(t, p)
	}
	if _, err := os.Stat(machinedPath); err != nil {
		testenv.Unavailable(t, "needs %s (systemd-container): %v", machinedPath, err)
	}
	for _, k := range kinds {
		switch k {
		case Busybox:
			if _, err := os.Stat("/bin/busybox"); err != nil {
				testenv.Unavailable(t, "needs /bin/busybox (busybox-static): %v", err)
			}
		default:
			testenv.LookPath(t, "debootstrap")
			if _, err := Mirror(); err != nil {
				testenv.Unavailable(t, "%v", err)
			}
		}
	}
}
