package nsjoin

import (
	"io"
	"os"
	"os/signal"
	"strings"
	"testing"

	"github.com/nspawn-tools/nspawn-tools/internal/nstest"
	"golang.org/x/sys/unix"
)

// TestCommandSignalState: the command starts with the signal mask of the
// thread that started it (here none blocked) and with the signals the
// caller ignores ignored, and nothing else: the child resets this
// process's handlers (CLONE_CLEAR_SIGHAND) and restores the mask before
// execve. Both ways of starting it: vfork (no time namespace) and fork.
func TestCommandSignalState(t *testing.T) {
	signal.Ignore(unix.SIGHUP)
	t.Cleanup(func() { signal.Reset(unix.SIGHUP) })
	for _, spec := range []nstest.Spec{{Name: "sigstate"}, {Name: "sigstate-time", User: true, Time: true}} {
		t.Run(spec.Name, func(t *testing.T) {
			_, l, plan := startTarget(t, spec)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			p, err := Start(l, plan, Options{}, func(*Machine) (*Command, error) {
				return &Command{Args: []string{"/bin/cat", "/proc/self/status"}, Stdio: []int{0, int(w.Fd()), 2}}, nil
			})
			w.Close()
			if err != nil {
				t.Fatal(err)
			}
			out, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if ws, err := p.Wait(); err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
				t.Fatalf("cat: %#x, %v", ws, err)
			}
			want := map[string]string{
				"SigBlk": "0000000000000000",
				"SigIgn": "0000000000000001", // SIGHUP
				"SigCgt": "0000000000000000",
			}
			for _, line := range strings.Split(string(out), "\n") {
				k, v, _ := strings.Cut(line, ":")
				if w, ok := want[k]; ok {
					if v = strings.TrimSpace(v); v != w {
						t.Errorf("the command's %s is %s, want %s", k, v, w)
					}
					delete(want, k)
				}
			}
			if len(want) > 0 {
				t.Errorf("/proc/self/status of the command lacks %v:\n%s", want, out)
			}
		})
	}
}
