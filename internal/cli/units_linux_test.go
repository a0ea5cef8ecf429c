package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
)

// TestSystemdUnits: the example unit and drop-in in testdata/systemd pass
// systemd-analyze verify, with nspawn-stop where the files say it is.
func TestSystemdUnits(t *testing.T) {
	analyze := testenv.LookPath(t, "systemd-analyze")
	stop := testenv.Binary(t, "nspawn-stop")
	src := filepath.Join("..", "..", "testdata", "systemd")
	dir := t.TempDir()
	template, err := os.ReadFile("/lib/systemd/system/systemd-nspawn@.service")
	if err != nil {
		testenv.Unavailable(t, "needs systemd-nspawn@.service (systemd-container): %v", err)
	}
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data = []byte(strings.ReplaceAll(string(data), "/usr/local/bin/nspawn-stop", stop))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("systemd-nspawn@.service", template)
	for _, rel := range []string{"systemd-nspawn@.service.d/nspawn-stop.conf", "nspawn-runit-web.service"} {
		data, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "ExecStop=/usr/local/bin/nspawn-stop ") {
			t.Errorf("%s has no ExecStop running nspawn-stop", rel)
		}
		write(rel, data)
	}
	for _, unit := range []string{"systemd-nspawn@web.service", "nspawn-runit-web.service"} {
		cmd := exec.Command(analyze, "verify", unit)
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		out, err := cmd.CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
	}
}
