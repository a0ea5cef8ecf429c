package nsjoin

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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

// TestForkUnderGCPressure starts a command in a user and time namespace
// (the fork child's path) thousands of times, several at once, while other
// goroutines churn the heap so that garbage collections overlap the forks.
func TestForkUnderGCPressure(t *testing.T) {
	_, l, plan := startTarget(t, nstest.Spec{Name: "forkstress", User: true, Time: true})
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
	// No thread of this process was left in the target's namespaces.
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	own, _ := os.Readlink("/proc/self/ns/mnt")
	for _, e := range entries {
		mnt, err := os.Readlink("/proc/self/task/" + e.Name() + "/ns/mnt")
		if err == nil && mnt != own {
			t.Errorf("thread %s is in mount namespace %s, not ours (%s)", e.Name(), mnt, own)
		}
	}
}

func TestStartErrors(t *testing.T) {
	_, l, plan := startTarget(t, nstest.Spec{Name: "errs", User: true})
	cases := []struct {
		cmd  string
		code int
	}{{"/nonexistent", 127}, {"no-such-command", 127}, {"/etc/passwd", 126}, {"/etc", 126}}
	for _, c := range cases {
		_, err := Start(l, plan, Options{}, func(*Machine) (*Command, error) {
			return &Command{Args: []string{c.cmd}}, nil
		})
		var ee *ExecError
		if !errors.As(err, &ee) || ee.Code() != c.code {
			t.Errorf("%s: %v, want exit %d", c.cmd, err, c.code)
		}
	}
	// A working directory that does not exist.
	_, err := Start(l, plan, Options{}, func(*Machine) (*Command, error) {
		return &Command{Args: []string{"/bin/true"}, Dir: "/no/such/dir"}, nil
	})
	if err == nil || !strings.Contains(err.Error(), "/no/such/dir") {
		t.Errorf("missing working directory: %v", err)
	}
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
