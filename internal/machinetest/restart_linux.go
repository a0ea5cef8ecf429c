package machinetest

import (
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// taken is whether this process holds the daemons exclusively
// (TakeMachined); guarded by daemons.mu.
var taken bool

// TakeMachined gives this process the bus and systemd-machined to itself,
// for a test that stops and restarts machined: it waits, at most limit,
// until no other test process uses them (go test runs packages in
// parallel) and machined is one this process started, then holds them
// exclusively until ReleaseMachined: meanwhile other processes'
// EnsureMachined waits.
//
// A machined another test process started is stopped by that process's
// Shutdown once nobody else uses it; TakeMachined waits for that, then
// starts its own. A machined nobody here started (the host's own) is never
// stopped: that is an error once limit has passed.
//
// Call it before starting the test's machines: while it waits, the
// daemons may go away, and with them the registration of a running
// machine.
func TakeMachined(logf Logf, limit time.Duration) error {
	if err := EnsureMachined(logf); err != nil {
		return err
	}
	if err := takeUsers(limit); err != nil {
		return err
	}
	// machined is ours or gone; the bus may be gone too
	return EnsureMachined(logf)
}

// takeUsers waits until it holds usersLock exclusively with no machined
// but ours running.
func takeUsers(limit time.Duration) error {
	daemons.mu.Lock()
	defer daemons.mu.Unlock()
	if taken {
		return nil
	}
	deadline := time.Now().Add(limit)
	for {
		// Drop our shared lock, then take an exclusive one: granted once
		// no other process uses the daemons (not a conversion, see Shutdown).
		unix.Flock(daemons.usersFD, unix.LOCK_UN)
		err := unix.Flock(daemons.usersFD, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			if ownMachined() != nil || !MachinedAnswers() {
				taken = true
				return nil
			}
			// Another process's: let its Shutdown take the lock and stop it.
			unix.Flock(daemons.usersFD, unix.LOCK_UN)
		} else if !errors.Is(err, unix.EWOULDBLOCK) {
			unix.Flock(daemons.usersFD, unix.LOCK_SH)
			return fmt.Errorf("machinetest: lock %s: %w", usersLock, err)
		}
		if time.Now().After(deadline) {
			unix.Flock(daemons.usersFD, unix.LOCK_SH)
			if err == nil {
				return fmt.Errorf("machinetest: systemd-machined (pid %s) was not started by this process and still runs after %v; only the process that started it may stop it", machinedPID(), limit)
			}
			return fmt.Errorf("machinetest: other test processes still use the bus and systemd-machined after %v", limit)
		}
		// Longer than Shutdown's 200 ms poll, so that it can get the lock.
		time.Sleep(500 * time.Millisecond)
	}
}

// StopMachined stops systemd-machined (this process's, by PID) and returns
// once it has exited; machines keep running. It needs TakeMachined.
// EnsureMachined starts machined again.
func StopMachined(logf Logf) error {
	daemons.mu.Lock()
	defer daemons.mu.Unlock()
	if !taken {
		return errors.New("machinetest: StopMachined without TakeMachined")
	}
	d := ownMachined()
	if d == nil {
		return nil // it exited by itself (idle)
	}
	if err := stopDaemon(d); err != nil {
		return err
	}
	logf.printf("machinetest: stopped systemd-machined, pid %d", d.cmd.Process.Pid)
	return nil
}

// ReleaseMachined ends TakeMachined: it starts machined if it is stopped,
// and lets other test processes use the daemons again, even if the start
// failed. Without TakeMachined it only starts machined.
func ReleaseMachined(logf Logf) error {
	err := EnsureMachined(logf)
	daemons.mu.Lock()
	defer daemons.mu.Unlock()
	if taken {
		// back to the shared lock EnsureMachined holds
		if lerr := unix.Flock(daemons.usersFD, unix.LOCK_SH); lerr != nil {
			err = errors.Join(err, fmt.Errorf("machinetest: lock %s: %w", usersLock, lerr))
		}
		taken = false
	}
	return err
}

// ownMachined is the systemd-machined this process started, if it runs.
func ownMachined() *daemon {
	for _, d := range daemons.started {
		if d.name == "systemd-machined" && !d.exited() {
			return d
		}
	}
	return nil
}

// machinedPID is the PID of the owner of org.freedesktop.machine1 on the
// system bus, or "unknown".
func machinedPID() string {
	out, _ := exec.Command("busctl", "--system", "status", "org.freedesktop.machine1").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "PID="); ok {
			if _, err := strconv.Atoi(v); err == nil {
				return v
			}
		}
	}
	return "unknown"
}
