// Command bench runs the benchmarks of issue 6 and prints their results as
// one markdown table, with the machine it ran on:
//
//   - enter: nspawn-enter --pid P against util-linux nsenter -t P -a, on a
//     target with and one without a user namespace, where nspawn-enter's
//     time goes, and on a real machine registered with machined, by name,
//     against nsenter and the original tool's machinectl + nsenter;
//   - stop: nspawn-stop's wake latency from the leader's exit to its own,
//     its CPU time and context switches over a whole --timeout wait, and
//     the peak RSS of both tools;
//   - size of both static binaries, built as the README says;
//   - scale: leader resolution among 100 registered machines against 1,
//     and 50 concurrent nspawn-enter into one target.
//
// Run it as root from the repository:
//
//	go run ./internal/bench [-n 200] [-wait 10s] [-machine=false] [-hyperfine]
//
// Commands compared are timed side by side: every round runs each of them
// once, in an order that rotates every round; the table gives medians. The
// report goes to stdout, progress to stderr. Everything the program starts
// (targets, a throwaway machine, and dbus/machined if none answered) is
// stopped, and everything it makes removed, when it ends or is interrupted.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/nstest"
)

// The startup thread stays with main: a goroutine that locks a thread and
// changes its mount namespace (the machinectl runs) never lands on it, and
// the thread it leaves behind when it returns is destroyed, not reused.
func init() { runtime.LockOSThread() }

var start = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%7.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

// config is the command line.
type config struct {
	runs       int           // rounds of every side-by-side comparison
	wait       time.Duration // nspawn-stop's --timeout in the idle wait
	concurrent int           // concurrent nspawn-enter runs
	machines   int           // state files in the resolution benchmark
	machine    bool          // also benchmark a real nspawn machine
	hyperfine  bool          // cross-check the enter timings with hyperfine
}

func main() {
	if os.Getenv(roleEnv) == roleExitOnTerm {
		exitOnTerm()
	}
	var cfg config
	flag.IntVar(&cfg.runs, "n", 200, "runs of each command compared side by side (at least 30 for the report)")
	flag.DurationVar(&cfg.wait, "wait", 10*time.Second, "how long nspawn-stop waits on a leader that ignores its signal")
	flag.IntVar(&cfg.concurrent, "concurrent", 50, "nspawn-enter runs started at once into one target")
	flag.IntVar(&cfg.machines, "machines", 100, "registered machines (state files) in the resolution benchmark")
	flag.BoolVar(&cfg.machine, "machine", true, "also benchmark a real systemd-nspawn machine registered with machined")
	flag.BoolVar(&cfg.hyperfine, "hyperfine", false, "cross-check the enter timings with hyperfine (which runs commands one after the other, not alternating)")
	flag.Parse()
	if flag.NArg() != 0 || cfg.runs < 1 || cfg.concurrent < 1 || cfg.machines < 1 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(runAll(cfg))
}

func runAll(cfg config) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: must run as root (it joins namespaces and starts machines)")
		return 1
	}
	var c cleanups
	defer c.run()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("got %v: cleaning up", s)
		c.run()
		os.Exit(130)
	}()

	b := &bench{cfg: cfg, c: &c, t: harness{c: &c}}
	b.facts = machineFacts()
	if err := b.setup(); err != nil {
		logf("setup failed: %v", err)
		return 1
	}
	b.size()
	b.enterTargets()
	b.stopWake()
	b.stopIdle()
	b.enterRSS()
	b.scaleResolution()
	b.scaleConcurrent()
	if cfg.machine {
		b.enterMachine()
	} else {
		b.add(secEnter, "enter real machine by name, vs the original (machinectl + nsenter)", "not run (-machine=false)", "", "", resultNA)
	}
	b.facts = append(b.facts, fact{"load average at the end", loadavg()})
	b.report(os.Stdout)
	c.run()
	if b.errors > 0 || c.failed {
		logf("%d measurement(s) could not be made; cleanup failed: %v", b.errors, c.failed)
		return 1
	}
	return 0
}

// bench holds what the benchmarks share and what they found.
type bench struct {
	cfg config
	c   *cleanups
	t   harness
	dir string // scratch directory, removed at the end

	enter, stop string // the tools, built as the README says
	emptyGo     string // an empty static Go program
	spawnGo     string // a static Go program that only runs /bin/true
	spawnKong   string // the same, linking kong
	sleepGo     string // a static Go program that sleeps for a second
	nsenter     string
	self        string // this program, for the stop target role

	plain, userns *nstest.Target
	timens        *nstest.Target // user and time namespace: the fork path
	emptyGoRun    *contender     // the empty Go program's runs: a reference

	rows      []row
	details   []*contender
	breakdown []breakdownLine
	extra     []string // more tables (hyperfine) printed after the others
	notes     []string
	facts     []fact
	errors    int
}

// setup makes the scratch directory, builds the programs and starts the
// three namespace targets.
func (b *bench) setup() error {
	var err error
	b.dir, err = os.MkdirTemp("", "nspawn-bench-")
	if err != nil {
		return err
	}
	b.c.add(func() { os.RemoveAll(b.dir) })
	if devNull, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
		return err
	}
	if b.nsenter, err = exec.LookPath("nsenter"); err != nil {
		return err
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if err := b.build(); err != nil {
		return err
	}
	logf("starting targets")
	if b.plain, err = b.startTarget(nstest.Spec{Name: "bench-plain"}); err != nil {
		return err
	}
	if b.userns, err = b.startTarget(nstest.Spec{Name: "bench-userns", User: true}); err != nil {
		return err
	}
	if b.timens, err = b.startTarget(nstest.Spec{Name: "bench-timens", User: true, Time: true}); err != nil {
		return err
	}
	return nil
}

// moduleRoot is the directory of the nspawn-tools module around the
// working directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m (run this from the repository): %w", err)
	}
	path, dir, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if path != "github.com/nspawn-tools/nspawn-tools" {
		return "", fmt.Errorf("the working directory is in module %s, not nspawn-tools", path)
	}
	return dir, nil
}

// goBuild runs go build as the README builds: static, trimmed, stripped.
func goBuild(dir, out string, pkgs ...string) error {
	args := append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", out}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (b *bench) build() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(b.dir, "bin")
	logf("building the tools into %s", bin)
	if err := goBuild(root, bin+string(os.PathSeparator), "./cmd/..."); err != nil {
		return err
	}
	b.enter, b.stop = filepath.Join(bin, "nspawn-enter"), filepath.Join(bin, "nspawn-stop")
	empty := filepath.Join(b.dir, "empty")
	if err := writeTree(empty, map[string]string{"main.go": "package main\n\nfunc main() {}\n"}); err != nil {
		return err
	}
	b.emptyGo = filepath.Join(bin, "empty")
	if err := goBuild(empty, b.emptyGo, "main.go"); err != nil {
		return err
	}
	if err := b.buildSpawners(root); err != nil {
		return err
	}
	sleep := filepath.Join(b.dir, "sleep")
	if err := writeTree(sleep, map[string]string{"main.go": "package main\n\nimport \"time\"\n\nfunc main() { time.Sleep(time.Second) }\n"}); err != nil {
		return err
	}
	b.sleepGo = filepath.Join(bin, "sleep")
	return goBuild(sleep, b.sleepGo, "main.go")
}

// writeTree writes files (a path under dir → its text), making the
// directories they need.
func writeTree(dir string, files map[string]string) error {
	for name, text := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// fail records a measurement that could not be made.
func (b *bench) fail(sec section, what string, err error) {
	logf("%s: %v", what, err)
	b.errors++
	b.add(sec, what, "could not measure: "+oneLine(err.Error()), "", "", resultFail)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.ReplaceAll(s, "|", "\\|")
}

// spawnSource is the floor of any Go tool that runs a command: start
// /bin/true (vfork and exec, as os/exec does), wait, exit with its status.
// With kong it also links (and so initialises) the command-line library
// the tools use, without calling it.
const spawnSource = `package main

import (
	"os"
	"syscall"
%s)

func main() {
	pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{Files: []uintptr{0, 1, 2}})
	if err != nil {
		os.Exit(125)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		os.Exit(125)
	}
	os.Exit(ws.ExitStatus())
}
`

// buildSpawners builds the two floor programs of spawnSource, in a module
// of their own that requires what nspawn-tools requires (root's go.mod and
// go.sum, so the build uses the module cache as the tools' build does).
func (b *bench) buildSpawners(root string) error {
	dir := filepath.Join(b.dir, "spawn")
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return err
	}
	_, rest, _ := strings.Cut(string(mod), "\n")
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		return err
	}
	if err := writeTree(dir, map[string]string{
		"go.mod":        "module spawn\n" + rest,
		"go.sum":        string(sum),
		"plain/main.go": fmt.Sprintf(spawnSource, ""),
		"kong/main.go":  fmt.Sprintf(spawnSource, "\n\t_ \"github.com/alecthomas/kong\"\n"),
	}); err != nil {
		return err
	}
	bin := filepath.Join(b.dir, "bin")
	b.spawnGo, b.spawnKong = filepath.Join(bin, "spawn"), filepath.Join(bin, "spawn-kong")
	if err := goBuild(dir, b.spawnGo, "./plain"); err != nil {
		return err
	}
	return goBuild(dir, b.spawnKong, "./kong")
}
