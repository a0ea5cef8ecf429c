package nsjoin

import (
	"errors"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/nspawn-tools/nspawn-tools/internal/nstest"
	"github.com/nspawn-tools/nspawn-tools/leader"
	"golang.org/x/sys/unix"
)

// The tests of this file change how this test process takes signals. Run
// one after the other, each catches what it needs again: catchRaw points
// the handler at its own pipe.

// catcher is one way of catching signals.
type catcher struct {
	name  string
	catch func(sigs ...unix.Signal) *Signals
}

// catchers are the two ways, both tried on every architecture that has
// the raw handler; signal.Notify first: it cannot take a signal whose
// handler catchRaw replaced, so each raw catch puts the runtime's back.
func catchers(t *testing.T) []catcher {
	t.Helper()
	cs := []catcher{{"notify", func(sigs ...unix.Signal) *Signals {
		s := mustNewSignals(t)
		go s.catchNotify(sigs)
		s.wait()
		t.Cleanup(func() {
			for _, sig := range sigs {
				signal.Reset(sig)
			}
		})
		return s
	}}}
	if !haveSigCatch {
		t.Logf("no raw signal handler on %s: signal.Notify only", runtime.GOARCH)
		return cs
	}
	return append(cs, catcher{"raw", func(sigs ...unix.Signal) *Signals {
		s := mustNewSignals(t)
		t.Cleanup(s.restore)
		if err := s.catchRaw(sigs); err != nil {
			t.Fatal(err)
		}
		close(s.ready)
		return s
	}})
}

func mustNewSignals(t *testing.T) *Signals {
	t.Helper()
	s, err := newSignals()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.r); unix.Close(s.w) })
	return s
}

// next waits up to 10 s for the next signal caught by s.
func next(t *testing.T, s *Signals) unix.Signal {
	t.Helper()
	var buf [1]byte
	fds := []unix.PollFd{{Fd: int32(s.r), Events: unix.POLLIN}}
	timeout := unix.NsecToTimespec(int64(10 * time.Second))
	if n, err := unix.Ppoll(fds, &timeout, nil); n != 1 {
		t.Fatalf("no signal caught within 10 s (%v)", err)
	}
	if n, err := unix.Read(s.r, buf[:]); n != 1 {
		t.Fatalf("read the caught signal: %d, %v", n, err)
	}
	return unix.Signal(buf[0])
}

func TestCatchSignals(t *testing.T) {
	for _, c := range catchers(t) {
		t.Run(c.name, func(t *testing.T) {
			s := c.catch(unix.SIGUSR1, unix.SIGUSR2)
			for _, sig := range []unix.Signal{unix.SIGUSR2, unix.SIGUSR1} {
				if err := unix.Kill(unix.Getpid(), sig); err != nil {
					t.Fatal(err)
				}
				if got := next(t, s); got != sig {
					t.Errorf("caught %v, sent %v", got, sig)
				}
			}
		})
	}
}

// An ignored signal stays ignored: nothing is caught, and the disposition
// the command would inherit is still SIG_IGN.
func TestCatchSignalsLeavesIgnored(t *testing.T) {
	defer signal.Reset(unix.SIGHUP)
	for _, c := range catchers(t) {
		t.Run(c.name, func(t *testing.T) {
			signal.Ignore(unix.SIGHUP)
			if h := disposition(t, unix.SIGHUP); h != sigIgnHandler {
				t.Fatalf("SIGHUP handler is %#x after signal.Ignore, want SIG_IGN", h)
			}
			s := c.catch(unix.SIGHUP, unix.SIGUSR1)
			if err := unix.Kill(unix.Getpid(), unix.SIGHUP); err != nil {
				t.Fatal(err)
			}
			// A signal that is caught after it shows that SIGHUP was not.
			if err := unix.Kill(unix.Getpid(), unix.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			if got := next(t, s); got != unix.SIGUSR1 {
				t.Errorf("caught %v; SIGHUP is ignored and should not be", got)
			}
			if h := disposition(t, unix.SIGHUP); h != sigIgnHandler {
				t.Errorf("SIGHUP handler is %#x, want SIG_IGN", h)
			}
		})
	}
}

const sigIgnHandler = 1

// disposition reads the handler address of sig (0 SIG_DFL, 1 SIG_IGN).
func disposition(t *testing.T, sig unix.Signal) uintptr {
	t.Helper()
	var old [4]uintptr
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
		t.Fatal(e)
	}
	return old[0]
}

func TestCatchSignalsTwice(t *testing.T) {
	catchMu.Lock()
	was := catching
	catching = true // as after a first call, without changing any handler
	catchMu.Unlock()
	defer func() { catchMu.Lock(); catching = was; catchMu.Unlock() }()
	if _, err := CatchSignals(unix.SIGUSR1); !errors.Is(err, ErrCaughtTwice) {
		t.Errorf("second CatchSignals: %v, want ErrCaughtTwice", err)
	}
}

func TestCatchSignalsRefusesRuntimeSignals(t *testing.T) {
	for _, sig := range []unix.Signal{unix.SIGURG, unix.SIGSEGV, unix.SIGPROF, unix.SIGPIPE, unix.SIGCHLD, unix.SIGKILL, unix.SIGSTOP, unix.SIGCONT, unix.SIGTSTP, 0, 65} {
		if _, err := CatchSignals(sig); !errors.Is(err, unix.EINVAL) {
			t.Errorf("CatchSignals(%d): %v, want EINVAL", sig, err)
		}
	}
}

// Signals by the thousand, while the collector runs and threads come and
// go: the process survives, signals keep being caught, and the last one
// sent is caught.
func TestCatchSignalsStorm(t *testing.T) {
	for _, c := range catchers(t) {
		t.Run(c.name, func(t *testing.T) {
			s := c.catch(unix.SIGUSR1, unix.SIGUSR2)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var sink atomic.Pointer[[]byte]
			for i := 0; i < 2*runtime.GOMAXPROCS(0); i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						b := make([]byte, 32<<10)
						sink.Store(&b)
						runtime.Gosched()
					}
				}()
			}
			var caught atomic.Int64
			drained := make(chan struct{})
			go func() {
				defer close(drained)
				var buf [256]byte
				for {
					select {
					case <-stop:
						return
					default:
					}
					caught.Add(int64(len(s.pending(buf[:]))))
					time.Sleep(time.Millisecond)
				}
			}()
			const sent = 20000
			for i := 0; i < sent; i++ {
				if err := unix.Kill(unix.Getpid(), unix.SIGUSR1); err != nil {
					t.Fatal(err)
				}
			}
			close(stop)
			wg.Wait()
			<-drained
			var buf [256]byte
			n := caught.Load() + int64(len(s.pending(buf[:])))
			// Standard signals do not queue: a burst may be taken as one.
			if n < 1 || n > sent {
				t.Errorf("caught %d of %d signals", n, sent)
			}
			if err := unix.Kill(unix.Getpid(), unix.SIGUSR2); err != nil {
				t.Fatal(err)
			}
			// USR1s of the storm may still be on their way (signal.Notify
			// passes them through a goroutine).
			for got := next(t, s); got != unix.SIGUSR2; got = next(t, s) {
				if got != unix.SIGUSR1 {
					t.Fatalf("after the storm caught %v, want SIGUSR2", got)
				}
			}
			t.Logf("%s: %d signals sent, %d caught", c.name, sent, n)
		})
	}
}

// A signal caught before the command starts is passed on once it runs, and
// one sent while it runs too; both ways of catching.
func TestForward(t *testing.T) {
	_, l, plan := startTarget(t, nstest.Spec{Name: "forward"})
	for _, c := range catchers(t) {
		t.Run(c.name, func(t *testing.T) {
			s := c.catch(unix.SIGUSR1, unix.SIGUSR2)
			// Before the start: sleep dies of it.
			if err := unix.Kill(unix.Getpid(), unix.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			ws := runForwarding(t, l, plan, s, nil)
			if !ws.Signaled() || ws.Signal() != unix.SIGUSR1 {
				t.Errorf("sleep ended with %#x; want killed by SIGUSR1 sent before it started", ws)
			}
			// While it runs.
			ws = runForwarding(t, l, plan, s, func() {
				if err := unix.Kill(unix.Getpid(), unix.SIGUSR2); err != nil {
					t.Error(err)
				}
			})
			if !ws.Signaled() || ws.Signal() != unix.SIGUSR2 {
				t.Errorf("sleep ended with %#x; want killed by SIGUSR2 sent while it ran", ws)
			}
		})
	}
}

// runForwarding runs sleep in the target with s forwarded, calls then
// (if not nil) once it has started, and gives how it ended; it must end
// within 20 s.
func runForwarding(t *testing.T, l *leader.Leader, plan Plan, s *Signals, then func()) unix.WaitStatus {
	t.Helper()
	p, err := Start(l, plan, Options{Forward: s}, func(*Machine) (*Command, error) {
		return &Command{Args: []string{"sleep", "20"}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if then != nil {
		then()
	}
	start := time.Now()
	ws, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("sleep ran %v: the signal was not passed on", time.Since(start))
	}
	return ws
}
