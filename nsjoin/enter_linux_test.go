package nsjoin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/nstest"
	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
	"github.com/nspawn-tools/nspawn-tools/leader"
	"golang.org/x/sys/unix"
)

func startTarget(t *testing.T, spec nstest.Spec) (*nstest.Target, *leader.Leader, Plan) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.LookPath(t, "unshare")
	tg := nstest.Start(t, spec)
	l, err := leader.Open(tg.PID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	plan, err := NewPlan(l.Dir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return tg, l, plan
}

func runTrue(l *leader.Leader, plan Plan) error {
	p, err := Start(l, plan, Options{}, func(*Machine) (*Command, error) {
		return &Command{Args: []string{"/bin/true"}}, nil
	})
	if err != nil {
		return err
	}
	ws, err := p.Wait()
	if err != nil {
		return err
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		return errors.New("/bin/true did not exit 0")
	}
	return nil
}

func TestPlan(t *testing.T) {
	_, l, plan := startTarget(t, nstest.Spec{Name: "plan", User: true, Time: true})
	if plan.Join.String() != "user,cgroup,ipc,uts,net,pid,mnt,time" || plan.Same != 0 || plan.Kept != 0 {
		t.Errorf("plan for a target with every namespace: join %s, same %s, kept %s", plan.Join, plan.Same, plan.Kept)
	}
	keep := Set(unix.CLONE_NEWNET | unix.CLONE_NEWUSER)
	p2, err := NewPlan(l.Dir(), keep)
	if err != nil {
		t.Fatal(err)
	}
	if p2.Kept != keep || p2.Join.String() != "cgroup,ipc,uts,pid,mnt,time" {
		t.Errorf("plan keeping net and user: join %s, kept %s", p2.Join, p2.Kept)
	}
	self, err := leader.Open(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	p3, err := NewPlan(self.Dir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if p3.Join != 0 || p3.Same.String() != "user,cgroup,ipc,uts,net,pid,mnt,time" {
		t.Errorf("plan for ourselves: join %s, same %s", p3.Join, p3.Same)
	}
}

// TestForkUnderGCPressure starts a command in a user namespace (the fork
// child's path) thousands of times, several at once, while other
// goroutines churn the heap so that garbage collections overlap the forks.
func TestForkUnderGCPressure(t *testing.T) {
	// With a time namespace to join the child is a real fork; without one,
	// where vforkExec exists, it shares the memory the collector works on.
	for _, spec := range []nstest.Spec{{Name: "forkstress", User: true, Time: true}, {Name: "vforkstress", User: true}} {
		t.Run(spec.Name, func(t *testing.T) { forkUnderGCPressure(t, spec) })
	}
}

func forkUnderGCPressure(t *testing.T, spec nstest.Spec) {
	_, l, plan := startTarget(t, spec)
	n := 2000
	if testing.Short() {
		n = 200
	}
	stop := make(chan struct{})
	var churn sync.WaitGroup
	var sink atomic.Pointer[[]byte]
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		churn.Add(1)
		go func() {
			defer churn.Done()
			for {
				select {
				case <-stop:
					return
				default:
					b := make([]byte, 64<<10)
					sink.Store(&b)
				}
			}
		}()
	}
	var failures atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				if err := runTrue(l, plan); err != nil {
					failures.Add(1)
					first.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(stop)
	churn.Wait()
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d starts failed; first: %v", f, n, first.Load())
	}
	// No thread of this process was left in the target's namespaces. The
	// last joining threads may still be ending: they have a few seconds.
	own, _ := os.Readlink("/proc/self/ns/mnt")
	deadline := time.Now().Add(5 * time.Second)
	for {
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		var foreign []string
		for _, e := range entries {
			mnt, err := os.Readlink("/proc/self/task/" + e.Name() + "/ns/mnt")
			if err == nil && mnt != own {
				foreign = append(foreign, e.Name()+" in "+mnt)
			}
		}
		if len(foreign) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("threads left in other mount namespaces than ours (%s): %v", own, foreign)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStartErrors(t *testing.T) {
	_, l, plan := startTarget(t, nstest.Spec{Name: "errs", User: true})
	cases := []struct {
		cmd  string
		code int
	}{{"/nonexistent", 127}, {"no-such-command", 127}, {"/etc/passwd", 126}, {"/etc", 126}}
	for _, st := range starters {
		t.Run(st.name, func(t *testing.T) {
			for _, c := range cases {
				_, err := st.start(l, plan, Options{}, func(*Machine) (*Command, error) {
					return &Command{Args: []string{c.cmd}}, nil
				})
				var ee *ExecError
				if !errors.As(err, &ee) || ee.Code() != c.code {
					t.Errorf("%s: %v, want exit %d", c.cmd, err, c.code)
				}
			}
			// A working directory that does not exist.
			_, err := st.start(l, plan, Options{}, func(*Machine) (*Command, error) {
				return &Command{Args: []string{"/bin/true"}, Dir: "/no/such/dir"}, nil
			})
			if err == nil || !strings.Contains(err.Error(), "/no/such/dir") {
				t.Errorf("missing working directory: %v", err)
			}
		})
	}
}

// starters are the two ways to start a command; tests that hold for both
// run with each.
var starters = []struct {
	name  string
	start func(*leader.Leader, Plan, Options, Prepare) (*Process, error)
}{{"Start", Start}, {"StartHere", startHereOffMain}}

// startHereOffMain calls StartHere on a goroutine of its own, on a thread
// that is not the main thread, and ends that thread when StartHere returns
// (the process goes on: this is a test). The command, started without
// Options.DieWithCaller, outlives the thread, and Wait works from any.
func startHereOffMain(l *leader.Leader, plan Plan, opt Options, prepare Prepare) (p *Process, err error) {
	if opt.DieWithCaller {
		panic("startHereOffMain: the thread's end would kill the command")
	}
	offMainThread(func() { p, err = StartHere(l, plan, opt, prepare) })
	return p, err
}

// offMainThread runs fn on a goroutine locked to a thread other than the
// main thread, and returns when fn has; that thread then ends with the
// goroutine (the runtime ends a thread whose goroutine returns locked).
func offMainThread(fn func()) {
	done := make(chan struct{})
	var try func()
	try = func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			go try() // not on this thread, which stays locked until fn is done
			<-done
			runtime.UnlockOSThread()
			return
		}
		defer close(done)
		fn()
	}
	go try()
	<-done
}

// TestStartHere: StartHere leaves the calling thread in the target's
// namespaces (all but user and time, which only the command joins) and no
// other thread, not even those the runtime starts afterwards.
func TestStartHere(t *testing.T) {
	tg, l, plan := startTarget(t, nstest.Spec{Name: "here", User: true, Time: true})
	want := tg.Namespaces(t)
	own, err := nstest.Namespaces(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan int, 1) // the joined thread, or 0
	release := make(chan struct{})
	var ws unix.WaitStatus
	var startErr, waitErr error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		offMainThread(func() {
			var p *Process
			p, startErr = StartHere(l, plan, Options{DieWithCaller: true}, func(*Machine) (*Command, error) {
				return &Command{Args: []string{"sleep", "20"}}, nil
			})
			if startErr != nil {
				started <- 0
				return
			}
			started <- unix.Gettid()
			<-release
			p.Signal(unix.SIGTERM)
			ws, waitErr = p.Wait()
		})
	}()
	tid := <-started
	if tid == 0 {
		t.Fatalf("StartHere: %v", startErr)
	}
	// The runtime starts threads for goroutines that lock one while the
	// others are taken.
	hold := make(chan struct{})
	var locked sync.WaitGroup
	for range 8 {
		locked.Add(1)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			locked.Done()
			<-hold
		}()
	}
	locked.Wait()
	joined, err := nstest.Namespaces(tid)
	if err != nil {
		t.Error(err)
	}
	for _, k := range []string{"cgroup", "ipc", "uts", "net", "mnt"} {
		if joined[k] != want[k] {
			t.Errorf("the calling thread's %s namespace is %d, not the target's %d", k, joined[k], want[k])
		}
	}
	for _, k := range []string{"user", "time"} {
		if joined[k] != own[k] {
			t.Errorf("the calling thread's %s namespace is %d, not ours %d", k, joined[k], own[k])
		}
	}
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 10 {
		t.Errorf("%d threads; want the caller's, 8 locked ones and the main thread at least", len(entries))
	}
	for _, e := range entries {
		if e.Name() == strconv.Itoa(tid) {
			continue
		}
		if other, err := nstest.Namespaces(mustAtoi(t, e.Name())); err == nil && other["mnt"] != own["mnt"] {
			t.Errorf("thread %s is in mount namespace %d, not ours (%d)", e.Name(), other["mnt"], own["mnt"])
		}
	}
	close(hold)
	close(release)
	<-finished
	if waitErr != nil || !ws.Signaled() || ws.Signal() != unix.SIGTERM {
		t.Errorf("sleep ended with %#x (%v); want killed by the SIGTERM sent to it", ws, waitErr)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLeaderGone: a leader that exits after being pinned is reported, not
// half-joined.
func TestLeaderGone(t *testing.T) {
	_, l, plan := startTarget(t, nstest.Spec{Name: "gone", User: true})
	unix.PidfdSendSignal(l.PidFD(), unix.SIGKILL, nil, 0)
	fds := []unix.PollFd{{Fd: int32(l.PidFD()), Events: unix.POLLIN}}
	unix.Poll(fds, 10000)
	err := runTrue(l, plan)
	var je *JoinError
	if !errors.As(err, &je) || !errors.Is(err, unix.ESRCH) || !strings.Contains(err.Error(), "the leader exited") {
		t.Errorf("leader gone: %v, want a JoinError saying the leader exited", err)
	}
}

// TestLeaderGoneBetweenJoins: the leader exits after the thread has joined
// its namespaces but before the fork child joins the user and time
// namespaces. The start fails with a clear error and no process is left,
// half-joined or not.
func TestLeaderGoneBetweenJoins(t *testing.T) {
	// With a user namespace the fork child joins it after the thread's
	// joins; without one the thread joins everything and the fork follows.
	for _, spec := range []nstest.Spec{{Name: "between", User: true, Time: true}, {Name: "between-plain"}} {
		t.Run(spec.Name, func(t *testing.T) {
			_, l, plan := startTarget(t, spec)
			for _, st := range starters {
				t.Run(st.name, func(t *testing.T) { leaderGoneBetweenJoins(t, l, plan, st.start) })
			}
		})
	}
}

func leaderGoneBetweenJoins(t *testing.T, l *leader.Leader, plan Plan, start func(*leader.Leader, Plan, Options, Prepare) (*Process, error)) {
	before := testenv.ChildrenOf(t, os.Getpid())
	_, err := start(l, plan, Options{}, func(*Machine) (*Command, error) {
		if err := unix.PidfdSendSignal(l.PidFD(), unix.SIGKILL, nil, 0); err != nil {
			return nil, err
		}
		fds := []unix.PollFd{{Fd: int32(l.PidFD()), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 10000); err != nil || fds[0].Revents&unix.POLLIN == 0 {
			return nil, errors.New("the leader did not exit within 10 s")
		}
		return &Command{Args: []string{"/bin/true"}}, nil
	})
	var je *JoinError
	if !errors.As(err, &je) || !errors.Is(err, unix.ESRCH) || !strings.Contains(err.Error(), "the leader exited") {
		t.Fatalf("leader gone between the joins: %v, want a JoinError saying the leader exited", err)
	}
	checkNoNewChildren(t, before)
}

// TestForkRefused: when the kernel refuses the fork (here a pids cgroup
// limit on the joining thread alone), Start says so and nothing is left.
// Only that thread is limited, through the v1 pids hierarchy, which
// places threads one by one: the rest of the test's runtime is not.
func TestForkRefused(t *testing.T) {
	_, l, plan := startTarget(t, nstest.Spec{Name: "refused", User: true, Time: true})
	pids := "/sys/fs/cgroup/pids"
	if _, err := os.Stat(filepath.Join(pids, "tasks")); err != nil {
		testenv.Unavailable(t, "needs the cgroup v1 pids hierarchy at %s: %v", pids, err)
	}
	cg := filepath.Join(pids, fmt.Sprintf("nspawntest-refused-%d", os.Getpid()))
	// The joining thread ends after Start returns; its group empties then.
	testenv.MakeCgroup(t, cg)
	if err := os.WriteFile(filepath.Join(cg, "pids.max"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	tasks, err := os.OpenFile(filepath.Join(cg, "tasks"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tasks.Close()
	before := testenv.ChildrenOf(t, os.Getpid())
	_, err = Start(l, plan, Options{}, func(*Machine) (*Command, error) {
		// "0" is the writing thread itself.
		if _, err := unix.Write(int(tasks.Fd()), []byte("0")); err != nil {
			return nil, fmt.Errorf("move the joining thread into %s: %w", cg, err)
		}
		return &Command{Args: []string{"/bin/true"}}, nil
	})
	if !errors.Is(err, unix.EAGAIN) || !strings.Contains(err.Error(), "no more processes allowed") {
		t.Fatalf("fork refused by a pids limit: %v, want an error saying no more processes are allowed", err)
	}
	checkNoNewChildren(t, before)
	// And the next start, on a new thread outside the limit, works.
	if err := runTrue(l, plan); err != nil {
		t.Errorf("start after a refused fork: %v", err)
	}
}

// checkNoNewChildren fails the test if this process has a child that was
// not in before.
func checkNoNewChildren(t *testing.T, before []int) {
	t.Helper()
	for _, k := range testenv.ChildrenOf(t, os.Getpid()) {
		if !slices.Contains(before, k) {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", k))
			t.Errorf("process %d (%s) left behind", k, strings.TrimSpace(string(comm)))
		}
	}
}

// TestJoinLeavesMainThread: a joining goroutine that finds itself on the
// main thread leaves it untouched and works on another. Which thread it
// gets is the runtime's choice, so the test also makes the first thread it
// lands on count as a main thread.
func TestJoinLeavesMainThread(t *testing.T) {
	_, l, plan := startTarget(t, nstest.Spec{Name: "mainthread", User: true})
	own, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	var first atomic.Int64
	isMainThread = func() bool {
		tid := unix.Gettid()
		first.CompareAndSwap(0, int64(tid))
		return int64(tid) == first.Load() || tid == unix.Getpid()
	}
	t.Cleanup(func() { isMainThread = func() bool { return unix.Gettid() == unix.Getpid() } })
	var joined int
	p, err := Start(l, plan, Options{}, func(*Machine) (*Command, error) {
		joined = unix.Gettid()
		return &Command{Args: []string{"/bin/true"}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if ws, err := p.Wait(); err != nil || ws.ExitStatus() != 0 {
		t.Fatalf("/bin/true: %v %v", ws, err)
	}
	for _, tid := range []int{int(first.Load()), unix.Getpid()} {
		if joined == tid {
			t.Errorf("the joins ran on thread %d, a main thread", tid)
		}
		if mnt, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/mnt", tid)); err != nil || mnt != own {
			t.Errorf("thread %d is in mount namespace %s (%v), not ours (%s)", tid, mnt, err, own)
		}
	}
}
