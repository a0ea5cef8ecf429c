package machinetest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Paths of the system bus and of the daemons the harness may start.
const (
	systemBusSocket = "/run/dbus/system_bus_socket"
	machinedPath    = "/lib/systemd/systemd-machined"
	// usersLock is held shared by every process that uses the daemons, so
	// that the process that started them stops them only once no other
	// test process (go test runs packages in parallel) needs them.
	usersLock = "/run/nspawn-tools-test.users.lock"
	// ensureLock serialises the check-and-start of the daemons between
	// test processes.
	ensureLock = "/run/nspawn-tools-test.ensure.lock"
	// shutdownWait bounds how long Shutdown waits for other processes.
	shutdownWait = 5 * time.Minute
)

// daemon is a process the harness started and must stop.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returned
	log  string
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

var daemons struct {
	mu            sync.Mutex
	started       []*daemon
	createdSocket bool
	usersFD       int // -1 or an fd of usersLock that holds LOCK_SH
	logDir        string
	inited        bool
	reaped        bool
}

// Logf is how the harness reports progress: testing.T's Logf, log.Printf,
// or nil for silence.
type Logf func(format string, args ...any)

func (l Logf) printf(format string, args ...any) {
	if l != nil {
		l(format, args...)
	}
}

// busAnswers reports whether something accepts connections on the system
// bus socket.
func busAnswers() bool {
	c, err := net.DialTimeout("unix", systemBusSocket, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// MachinedAnswers reports whether org.freedesktop.machine1 has an owner on
// the system bus (busctl status does not activate the name).
func MachinedAnswers() bool {
	cmd := exec.Command("busctl", "--system", "status", "org.freedesktop.machine1")
	return cmd.Run() == nil
}

// EnsureMachined makes sure a system bus and systemd-machined answer,
// starting dbus-daemon and/or systemd-machined if they do not. Call it
// before each machine start: machined exits by itself after a while
// without machines. What it starts, Shutdown stops.
func EnsureMachined(logf Logf) error {
	daemons.mu.Lock()
	defer daemons.mu.Unlock()
	if !daemons.inited {
		daemons.usersFD = -1
		daemons.inited = true
	}
	if os.Geteuid() != 0 {
		return errors.New("machinetest: needs root")
	}
	if daemons.usersFD < 0 {
		fd, err := unix.Open(usersLock, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("machinetest: %w", err)
		}
		if err := unix.Flock(fd, unix.LOCK_SH); err != nil {
			unix.Close(fd)
			return fmt.Errorf("machinetest: lock %s: %w", usersLock, err)
		}
		daemons.usersFD = fd
	}
	if daemons.logDir == "" {
		dir, err := os.MkdirTemp("", "nspawntest-daemons-")
		if err != nil {
			return fmt.Errorf("machinetest: %w", err)
		}
		daemons.logDir = dir
	}
	if _, err := exec.LookPath("busctl"); err != nil {
		return fmt.Errorf("machinetest: %w", err)
	}
	lk, err := unix.Open(ensureLock, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("machinetest: %w", err)
	}
	defer unix.Close(lk) // releases the lock
	if err := unix.Flock(lk, unix.LOCK_EX); err != nil {
		return fmt.Errorf("machinetest: lock %s: %w", ensureLock, err)
	}
	if !busAnswers() {
		if err := os.MkdirAll("/run/dbus", 0o755); err != nil {
			return fmt.Errorf("machinetest: %w", err)
		}
		// A socket nobody answers on is left by a dead bus.
		if fi, err := os.Lstat(systemBusSocket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(systemBusSocket)
		}
		t0 := time.Now()
		d, err := startDaemon("dbus-daemon", "dbus-daemon", "--system", "--nofork", "--nopidfile")
		if err != nil {
			return err
		}
		daemons.createdSocket = true
		if err := waitDaemon(d, 10*time.Second, busAnswers); err != nil {
			return err
		}
		logf.printf("machinetest: started dbus-daemon, pid %d (%v)", d.cmd.Process.Pid, time.Since(t0).Round(time.Millisecond))
	}
	if !MachinedAnswers() {
		t0 := time.Now()
		d, err := startDaemon("systemd-machined", machinedPath)
		if err != nil {
			return err
		}
		if err := waitDaemon(d, 10*time.Second, MachinedAnswers); err != nil {
			return err
		}
		logf.printf("machinetest: started systemd-machined, pid %d (%v)", d.cmd.Process.Pid, time.Since(t0).Round(time.Millisecond))
	}
	if !daemons.reaped {
		// once per process, under the ensure lock, with machined answering
		daemons.reaped = true
		if err := ReapStale(logf); err != nil {
			logf.printf("%v", err)
		}
	}
	return nil
}

// startDaemon starts a daemon in its own session (so a terminal's ^C
// reaches only the test), logging to a file.
func startDaemon(name string, argv ...string) (*daemon, error) {
	logPath := filepath.Join(daemons.logDir, fmt.Sprintf("%s.%d.log", name, len(daemons.started)))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("machinetest: %w", err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("machinetest: start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); close(d.done) }()
	daemons.started = append(daemons.started, d)
	return d, nil
}

func waitDaemon(d *daemon, limit time.Duration, ready func() bool) error {
	deadline := time.Now().Add(limit)
	for !ready() {
		if d.exited() {
			log, _ := os.ReadFile(d.log)
			return fmt.Errorf("machinetest: %s exited at once (%v):\n%s", d.name, d.cmd.ProcessState, log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("machinetest: %s (pid %d) did not answer within %v", d.name, d.cmd.Process.Pid, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Shutdown stops the daemons EnsureMachined started (by PID, newest
// first), once no other test process uses them (waiting at most a few
// minutes; past that it leaves them running and says so). Call it once,
// at the end of the process (TestMain, after m.Run; or the demo's end).
func Shutdown(logf Logf) error {
	daemons.mu.Lock()
	defer daemons.mu.Unlock()
	if daemons.usersFD >= 0 {
		alive := 0
		for _, d := range daemons.started {
			if !d.exited() {
				alive++
			}
		}
		if alive > 0 {
			// Drop our shared lock, then take an exclusive one: granted
			// once every other user has finished. (Not a conversion: two
			// starters converting at once would wait for each other.)
			unix.Flock(daemons.usersFD, unix.LOCK_UN)
			err := unix.Flock(daemons.usersFD, unix.LOCK_EX|unix.LOCK_NB)
			if err != nil {
				logf.printf("machinetest: another test process uses the bus/machined we started; waiting for it (at most %v)", shutdownWait)
				deadline := time.Now().Add(shutdownWait)
				for err != nil && time.Now().Before(deadline) {
					time.Sleep(200 * time.Millisecond)
					err = unix.Flock(daemons.usersFD, unix.LOCK_EX|unix.LOCK_NB)
				}
			}
			if err != nil {
				unix.Close(daemons.usersFD)
				daemons.usersFD = -1
				return fmt.Errorf("machinetest: other processes still use the daemons after %v; left running: %s", shutdownWait, describe(daemons.started))
			}
		}
	}
	var errs []error
	for i := len(daemons.started) - 1; i >= 0; i-- {
		d := daemons.started[i]
		if d.exited() {
			continue
		}
		if err := stopDaemon(d); err != nil {
			errs = append(errs, err)
		} else {
			logf.printf("machinetest: stopped %s, pid %d", d.name, d.cmd.Process.Pid)
		}
	}
	daemons.started = nil
	if daemons.createdSocket && !busAnswers() {
		os.Remove(systemBusSocket)
	}
	daemons.createdSocket = false
	if daemons.usersFD >= 0 {
		unix.Close(daemons.usersFD)
		daemons.usersFD = -1
	}
	if daemons.logDir != "" {
		os.RemoveAll(daemons.logDir)
		daemons.logDir = ""
	}
	return errors.Join(errs...)
}

func describe(ds []*daemon) string {
	s := ""
	for _, d := range ds {
		if !d.exited() {
			s += fmt.Sprintf("%s pid %d; ", d.name, d.cmd.Process.Pid)
		}
	}
	return s
}

// stopDaemon sends SIGTERM, then SIGKILL after 5 s, to a child of ours (so
// its PID cannot have been reused before we reap it).
func stopDaemon(d *daemon) error {
	d.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(5 * time.Second):
	}
	d.cmd.Process.Signal(unix.SIGKILL)
	select {
	case <-d.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("machinetest: %s, pid %d, survived SIGKILL", d.name, d.cmd.Process.Pid)
	}
}
