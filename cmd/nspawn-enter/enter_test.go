package main_test

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nspawn-tools/nspawn-tools/internal/nstest"
)

// specs are the targets every differential test runs against.
var specs = []nstest.Spec{
	{Name: "plain"},
	{Name: "user", User: true},
	{Name: "time", Time: true},
	{Name: "usertime", User: true, Time: true},
}

// probe prints, as key=value lines, what a command sees of where it runs.
// /proc/self of a redirection is the shell itself; of readlink, a child in
// the same namespaces.
const probe = `echo "hostname=$(hostname)"
for k in user cgroup ipc uts net pid mnt time; do echo "ns.$k=$(readlink /proc/self/ns/$k)"; done
while read -r k v; do
	case $k in NSpid:|CapEff:|CapPrm:|CapBnd:|Uid:|Gid:|Groups:) echo "status.${k%:}=$v";; esac
done </proc/self/status
while read -r a b c; do echo "uid_map=$a $b $c"; done </proc/self/uid_map
while read -r a b c; do echo "gid_map=$a $b $c"; done </proc/self/gid_map
echo "cwd=$(pwd -P)"
echo "marker=$(cat /etc/marker)"
read -r up idle </proc/uptime
echo "uptime=$up"
echo "id=$(id -u):$(id -g)"
echo "groups=$(id -G)"
`

// parseProbe turns probe's output into a map.
func parseProbe(t *testing.T, r result) map[string]string {
	t.Helper()
	if r.status() != "exit 0" || r.stderr != "" {
		t.Fatalf("probe failed: %v", r)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("probe printed %q:\n%v", line, r)
		}
		m[k] = v
	}
	return m
}

// TestDifferential runs the probe through nsenter -a and through
// nspawn-enter in each kind of target and compares what both saw, and what
// both saw with what the host knows of the target.
func TestDifferential(t *testing.T) {
	for _, spec := range specs {
		t.Run(spec.Name, func(t *testing.T) {
			tg := nstest.Start(t, spec)
			before := children(t)
			var seen []map[string]string
			for _, tl := range tools(t) {
				argv := tl.argv(t, tg.PID, "/bin/sh", "-c", probe)
				seen = append(seen, parseProbe(t, run(t, "", argv[0], argv[1:]...)))
			}
			checkNoStrays(t, before, tg)
			want, got := seen[0], seen[1]

			// What the oracle saw is what the target is.
			targetNS := tg.Namespaces(t)
			for _, k := range nstest.Kinds {
				if link := fmt.Sprintf("%s:[%d]", k, targetNS[k]); want["ns."+k] != link {
					t.Errorf("nsenter saw ns.%s=%s, the target has %s", k, want["ns."+k], link)
				}
			}
			if want["hostname"] != spec.Name || want["marker"] != tg.Marker || want["cwd"] != "/" {
				t.Errorf("nsenter saw hostname=%s marker=%s cwd=%s: the oracle is off", want["hostname"], want["marker"], want["cwd"])
			}

			for k, w := range want {
				g, ok := got[k]
				switch {
				case !ok:
					t.Errorf("%s: nspawn-enter's probe printed nothing (nsenter: %q)", k, w)
				case k == "status.NSpid":
					// The PIDs differ; the depth (one PID per namespace
					// level) and not being PID 1 must not.
					wf, gf := strings.Fields(w), strings.Fields(g)
					if len(wf) != len(gf) || gf[len(gf)-1] == "1" {
						t.Errorf("NSpid: nspawn-enter %q, nsenter %q", g, w)
					}
				case k == "uptime":
					// The two runs are moments apart; the offsets of a time
					// namespace are days. A generous bound, not a timing.
					wu, err1 := strconv.ParseFloat(w, 64)
					gu, err2 := strconv.ParseFloat(g, 64)
					if err1 != nil || err2 != nil || math.Abs(gu-wu) > 30 {
						t.Errorf("uptime: nspawn-enter %q, nsenter %q", g, w)
					}
				case g != w:
					t.Errorf("%s: nspawn-enter %q, nsenter %q", k, g, w)
				}
			}
		})
	}
}

// TestNamespacesSeenFromHost looks at the entered command from the host:
// with all namespaces joined, and with each --no-<ns> leaving one as the
// caller's.
func TestNamespacesSeenFromHost(t *testing.T) {
	tg := nstest.Start(t, nstest.Spec{Name: "usertime", User: true, Time: true})
	enter := tools(t)[1]
	self, err := nstest.Namespaces(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	targetNS := tg.Namespaces(t)
	for k, v := range targetNS {
		if self[k] == v {
			t.Fatalf("the target shares our %s namespace: the test would prove nothing", k)
		}
	}
	wait := []string{"/bin/sh", "-c", "echo ready; read x; exit 0"}

	t.Run("all", func(t *testing.T) {
		before := children(t)
		o := observe(t, enter.argv(t, tg.PID, wait...))
		checkNoStrays(t, before, tg)
		for _, k := range nstest.Kinds {
			if o.ns[k] != targetNS[k] {
				t.Errorf("%s namespace %d, the target's is %d", k, o.ns[k], targetNS[k])
			}
		}
		if len(o.nspid) != 2 || o.nspid[1] == 1 {
			t.Errorf("NSpid %v, want the host's PID and one in the target's namespace", o.nspid)
		}
		// The oracle, seen the same way.
		nsenter := tools(t)[0]
		if n := observe(t, nsenter.argv(t, tg.PID, wait...)); !equalNS(n.ns, o.ns) {
			t.Errorf("nsenter's command is in %v, nspawn-enter's in %v", n.ns, o.ns)
		}
	})

	for _, skip := range nstest.Kinds {
		flag := "--no-" + map[string]string{"mnt": "mount", "net": "network"}[skip]
		if flag == "--no-" {
			flag += skip
		}
		t.Run(flag, func(t *testing.T) {
			argv := enter.argv(t, tg.PID, wait...)
			argv = slices.Insert(argv, 1, flag)
			before := children(t)
			o := observe(t, argv)
			checkNoStrays(t, before, tg)
			for _, k := range nstest.Kinds {
				want, whose := targetNS[k], "target's"
				if k == skip {
					want, whose = self[k], "caller's"
				}
				if o.ns[k] != want {
					t.Errorf("%s namespace %d, want the %s %d", k, o.ns[k], whose, want)
				}
			}
		})
	}
}

func equalNS(a, b map[string]uint64) bool {
	for _, k := range nstest.Kinds {
		if a[k] != b[k] {
			return false
		}
	}
	return true
}

// TestExitStatus checks that nspawn-enter ends as nsenter does: with the
// command's exit code, of the signal that killed it, 126 for a file that is
// not executable, 127 for a missing command.
func TestExitStatus(t *testing.T) {
	cases := []struct {
		cmd  []string
		want string
	}{
		{[]string{"/bin/sh", "-c", "exit 0"}, "exit 0"},
		{[]string{"/bin/sh", "-c", "exit 1"}, "exit 1"},
		{[]string{"/bin/sh", "-c", "exit 42"}, "exit 42"},
		{[]string{"/bin/sh", "-c", "exit 255"}, "exit 255"},
		{[]string{"/bin/sh", "-c", "kill -TERM $$"}, "signal terminated"},
		{[]string{"/bin/sh", "-c", "kill -INT $$"}, "signal interrupt"},
		{[]string{"/bin/sh", "-c", "kill -KILL $$"}, "signal killed"},
		{[]string{"/bin/sh", "-c", "kill -SEGV $$"}, "signal segmentation fault"},
		{[]string{"/tmp/not-executable"}, "exit 126"},
		{[]string{"/etc"}, "exit 126"},
		{[]string{"/no/such/command"}, "exit 127"},
		{[]string{"no-such-command-in-path"}, "exit 127"},
	}
	for _, spec := range specs {
		t.Run(spec.Name, func(t *testing.T) {
			tg := nstest.Start(t, spec)
			tg.WriteFile(t, "/tmp/not-executable", "#!/bin/sh\necho ran\n", 0o644)
			for _, c := range cases {
				before := children(t)
				var got []result
				for _, tl := range tools(t) {
					argv := tl.argv(t, tg.PID, c.cmd...)
					got = append(got, run(t, "", argv[0], argv[1:]...))
				}
				checkNoStrays(t, before, tg)
				if got[0].status() != c.want {
					t.Errorf("%q: the oracle ended with %s, want %s\n%v", c.cmd, got[0].status(), c.want, got[0])
				}
				if got[1].status() != got[0].status() {
					t.Errorf("%q: nspawn-enter ended with %s, nsenter with %s\n%v", c.cmd, got[1].status(), got[0].status(), got[1])
				}
				if strings.Contains(got[1].stdout, "ran") {
					t.Errorf("%q: the not-executable file ran\n%v", c.cmd, got[1])
				}
			}
		})
	}
}

// TestFileOwnership checks that a file made inside a target is owned on
// disk by the host ids of the target's root: the user namespace was joined.
func TestFileOwnership(t *testing.T) {
	for _, spec := range []nstest.Spec{{Name: "plain"}, {Name: "user", User: true}} {
		t.Run(spec.Name, func(t *testing.T) {
			tg := nstest.Start(t, spec)
			for _, tl := range tools(t) {
				file := "/tmp/made-by-" + tl.name
				argv := tl.argv(t, tg.PID, "/bin/sh", "-c", "touch "+file+" && mkdir "+file+".d && ls -nd "+file+" "+file+".d")
				r := run(t, "", argv[0], argv[1:]...)
				if r.status() != "exit 0" {
					t.Fatalf("%v", r)
				}
				for _, f := range []string{file, file + ".d"} {
					var st syscall.Stat_t
					if err := syscall.Stat(tg.Path(f), &st); err != nil {
						t.Fatalf("%s: %v", tl.name, err)
					}
					if st.Uid != uint32(tg.UIDShift) || st.Gid != uint32(tg.UIDShift) {
						t.Errorf("%s: %s owned by %d:%d on disk, want %d:%d", tl.name, f, st.Uid, st.Gid, tg.UIDShift, tg.UIDShift)
					}
				}
				for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
					if f := strings.Fields(line); len(f) < 4 || f[2] != "0" || f[3] != "0" {
						t.Errorf("%s: inside, ls -n says %q, want owner 0 0", tl.name, line)
					}
				}
			}
		})
	}
}

// TestFileDescriptors checks that the command inherits only stdin, stdout
// and stderr: no pidfd, namespace or directory fd of the tool leaks in.
// (TestMain made sure the test process passes on no other fd.)
func TestFileDescriptors(t *testing.T) {
	for _, spec := range specs {
		t.Run(spec.Name, func(t *testing.T) {
			tg := nstest.Start(t, spec)
			for _, tl := range tools(t) {
				// ls opens one fd (3) to read the directory.
				argv := tl.argv(t, tg.PID, "/bin/ls", "-l", "/proc/self/fd")
				r := run(t, "", argv[0], argv[1:]...)
				var fds []string
				for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n")[1:] {
					if f := strings.Fields(line); len(f) > 8 {
						fds = append(fds, f[8])
					}
				}
				if r.status() != "exit 0" || strings.Join(fds, " ") != "0 1 2 3" {
					t.Errorf("%s: the command has fds %q, want 0 1 2 and ls's 3\n%v", tl.name, fds, r)
				}
			}
		})
	}
}

// TestLoginShell checks that without a command nspawn-enter runs the login
// shell of the target's root (/bin/sh in its /etc/passwd), in the target.
func TestLoginShell(t *testing.T) {
	enter := tools(t)[1]
	for _, spec := range specs {
		t.Run(spec.Name, func(t *testing.T) {
			tg := nstest.Start(t, spec)
			argv := enter.argv(t, tg.PID)
			argv = argv[:len(argv)-1] // no "--"
			before := children(t)
			r := run(t, "cat /etc/marker; hostname; pwd -P; exit 7\n", argv[0], argv[1:]...)
			checkNoStrays(t, before, tg)
			if want := tg.Marker + "\n" + spec.Name + "\n/\n"; r.status() != "exit 7" || r.stdout != want {
				t.Errorf("want exit 7 and %q\n%v", want, r)
			}
		})
	}
}
