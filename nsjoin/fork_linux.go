package nsjoin

// The fork child. setns(2) into a user or time namespace fails in any
// multithreaded process, and a Go process is always multithreaded. So the
// last joins happen in a child of clone3, single-threaded, with its own
// fs_struct, which then joins, sets its credentials and calls execve.
//
// The child shares this process's memory and runs on the forking thread's
// stack, that thread suspended until execve (CLONE_VM|CLONE_VFORK, as
// os/exec does): no page tables to copy, no copy-on-write faults. A time
// namespace is joined only by a process that shares its memory with no
// other (setns fails with EUSERS), so with one to join, and on
// architectures without rawVfork, the child is a real fork with its own
// copy of the memory.
//
// Rules for childMain, the code that runs between clone3 and execve (those of
// syscall.forkAndExecInChild1):
//   - nosplit, norace: runtime_BeforeFork has poisoned the stack guard, so
//     any stack growth throws;
//   - no allocation, no locks, no calls but raw system calls;
//   - every failing step writes {step, errno} to the error pipe and exits 127.
//
// This file, vfork_linux_amd64.go (with vfork_amd64.s) and the signal
// handler of sigcatch_linux_amd64.go (with sigcatch_amd64.s) are the only
// files of the product that use unsafe, go:linkname or assembly.

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The runtime's fork hooks, exported to package syscall and on Go's linkname
// allow-list (go.dev/issue/67401).
//
//go:linkname runtimeBeforeFork syscall.runtime_BeforeFork
func runtimeBeforeFork()

//go:linkname runtimeAfterFork syscall.runtime_AfterFork
func runtimeAfterFork()

// step names the point where the child failed.
type step uint32

const (
	stepNone step = iota
	stepCgroup
	stepSetns
	stepStdio
	stepSetsid
	stepCtty
	stepGroups
	stepGID
	stepUID
	stepRlimit
	stepPdeath
	stepExec
)

var stepText = [...]string{
	stepNone:   "start",
	stepCgroup: "join the name=systemd cgroup",
	stepSetns:  "join namespaces",
	stepStdio:  "set up standard input/output",
	stepSetsid: "start a new session",
	stepCtty:   "take the controlling terminal",
	stepGroups: "set supplementary groups",
	stepGID:    "set group id",
	stepUID:    "set user id",
	stepRlimit: "set the open files limit",
	stepPdeath: "ask to die with the caller",
	stepExec:   "execute",
}

// ChildError is a failure inside the fork child, before the command ran.
type ChildError struct {
	Step  string
	Errno syscall.Errno
}

func (e *ChildError) Error() string { return e.Step + ": " + e.Errno.Error() }

// Unwrap gives the errno, for errors.Is.
func (e *ChildError) Unwrap() error { return e.Errno }

// setnsCall is one setns(fd, flags) the child makes.
type setnsCall struct{ fd, flags uintptr }

// forkSpec is everything the child needs, prepared by the parent: pointers
// and C strings only, nothing the child would have to allocate.
type forkSpec struct {
	setns     setnsCall // the user and time namespaces; flags 0 = none
	v1Procs   int32     // cgroup.procs of a v1 group to write "0" to; -1 = none
	stdio     [3]int32  // dup'ed onto 0, 1, 2 when not already there
	setsid    bool
	ctty      bool // TIOCSCTTY on fd 0 (after setsid)
	setCreds  bool
	groups    []uint32
	uid, gid  uintptr
	nofile    unix.Rlimit
	setNofile bool
	// pdeath asks for SIGKILL when the forking thread ends; pipeRead is
	// the parent's end of the error pipe, closed in the child first so
	// that a parent already gone shows as POLLERR on errPipe.
	pdeath   bool
	pipeRead uintptr
	path     *byte
	argv     []*byte // NULL-terminated
	envv     []*byte // NULL-terminated
	errPipe  uintptr
	errbuf   [2]uint32 // {step, errno}, written in the child's own copy
	// sigmask is the forking thread's signal mask, which the child
	// restores before execve (runtime_BeforeFork blocks every signal).
	sigmask unix.Sigset_t
}

// cloneArgs is the kernel's struct clone_args (CLONE_ARGS_SIZE_VER2, 88 bytes).
type cloneArgs struct {
	flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls, setTID, setTIDSize, cgroup uint64
}

var zero = [...]byte{'0'}

// childMain never returns.
//
//go:nosplit
//go:norace
//go:nocheckptr
func childMain(s *forkSpec) {
	var (
		e  syscall.Errno
		st step
		i  int
		p  uintptr
		// A poll of the error pipe that does not wait.
		pollfd unix.PollFd
		noWait unix.Timespec
	)
	// While still host root: move into the machine's name=systemd group.
	if s.v1Procs >= 0 {
		st = stepCgroup
		if _, _, e = syscall.RawSyscall(unix.SYS_WRITE, uintptr(s.v1Procs), uintptr(unsafe.Pointer(&zero[0])), 1); e != 0 {
			goto fail
		}
	}
	// Drop supplementary groups while still in the caller's user namespace:
	// inside one whose setgroups file says "deny" it would fail.
	if s.setCreds {
		st = stepGroups
		if _, _, e = syscall.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
			goto fail
		}
	}
	st = stepSetns
	if s.setns.flags != 0 {
		if _, _, e = syscall.RawSyscall(unix.SYS_SETNS, s.setns.fd, s.setns.flags, 0); e != 0 {
			goto fail
		}
	}
	st = stepStdio
	for i = 0; i < 3; i++ {
		if s.stdio[i] != int32(i) {
			if _, _, e = syscall.RawSyscall(unix.SYS_DUP3, uintptr(s.stdio[i]), uintptr(i), 0); e != 0 {
				goto fail
			}
		}
	}
	if s.setsid {
		st = stepSetsid
		if _, _, e = syscall.RawSyscall(unix.SYS_SETSID, 0, 0, 0); e != 0 {
			goto fail
		}
	}
	if s.ctty {
		st = stepCtty
		if _, _, e = syscall.RawSyscall(unix.SYS_IOCTL, 0, unix.TIOCSCTTY, 1); e != 0 {
			goto fail
		}
	}
	if s.setCreds {
		if len(s.groups) > 0 {
			st = stepGroups
			p = uintptr(unsafe.Pointer(&s.groups[0]))
			if _, _, e = syscall.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(s.groups)), p, 0); e != 0 {
				goto fail
			}
		}
		st = stepGID
		if _, _, e = syscall.RawSyscall(unix.SYS_SETRESGID, s.gid, s.gid, s.gid); e != 0 {
			goto fail
		}
		st = stepUID
		if _, _, e = syscall.RawSyscall(unix.SYS_SETRESUID, s.uid, s.uid, s.uid); e != 0 {
			goto fail
		}
	}
	if s.setNofile {
		st = stepRlimit
		if _, _, e = syscall.RawSyscall6(unix.SYS_PRLIMIT64, 0, unix.RLIMIT_NOFILE, uintptr(unsafe.Pointer(&s.nofile)), 0, 0, 0); e != 0 {
			goto fail
		}
	}
	if s.pdeath {
		// Last, as a change of credentials clears it.
		st = stepPdeath
		if _, _, e = syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0); e != 0 {
			goto fail
		}
		// A parent that died before the prctl sent no signal: its end of
		// the pipe is closed then.
		syscall.RawSyscall(unix.SYS_CLOSE, s.pipeRead, 0, 0)
		pollfd.Fd, pollfd.Events = int32(s.errPipe), unix.POLLOUT
		if _, _, e = syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pollfd)), 1, uintptr(unsafe.Pointer(&noWait)), 0, 0, 0); e != 0 {
			goto fail
		}
		if pollfd.Revents&unix.POLLERR != 0 {
			for {
				syscall.RawSyscall(unix.SYS_EXIT_GROUP, 127, 0, 0)
			}
		}
	}
	// The handlers are SIG_DFL already (CLONE_CLEAR_SIGHAND), so a signal
	// from now on takes its default action, as it will after execve.
	// (runtime_AfterForkInChild resets them one by one: 65 rt_sigaction
	// calls, while the parent waits.)
	st = stepExec
	if _, _, e = syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&s.sigmask)), 0, 8, 0, 0); e != 0 {
		goto fail
	}
	_, _, e = syscall.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(s.path)),
		uintptr(unsafe.Pointer(&s.argv[0])), uintptr(unsafe.Pointer(&s.envv[0])))
fail:
	s.errbuf[0] = uint32(st)
	s.errbuf[1] = uint32(e)
	syscall.RawSyscall(unix.SYS_WRITE, s.errPipe, uintptr(unsafe.Pointer(&s.errbuf[0])), 8)
	for {
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, 127, 0, 0)
	}
}

// forkExec starts the child from the calling OS thread, which must be locked
// and already joined: the child inherits this thread's namespaces (including
// pid_for_children), root and working directory. cgroupFD ≥ 0 places the
// child in that cgroup v2 directory from birth. It returns the child's pid
// and pidfd once execve has succeeded.
func forkExec(s *forkSpec, cgroupFD int) (pid, pidfd int, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return 0, -1, fmt.Errorf("pipe: %w", err)
	}
	s.errPipe, s.pipeRead = uintptr(p[1]), uintptr(p[0])
	fd := int32(-1)
	// CLONE_CLEAR_SIGHAND: the child starts with every handler reset to
	// SIG_DFL (ignored signals stay ignored), so no handler of this
	// process runs in it.
	args := cloneArgs{flags: unix.CLONE_PIDFD | unix.CLONE_CLEAR_SIGHAND, exitSignal: uint64(unix.SIGCHLD)}
	if cgroupFD >= 0 {
		args.flags |= unix.CLONE_INTO_CGROUP
		args.cgroup = uint64(cgroupFD)
	}

	syscall.ForkLock.Lock()
	// What runtime_BeforeFork saves before it blocks every signal.
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, nil, &s.sigmask); err != nil {
		syscall.ForkLock.Unlock()
		return 0, -1, fmt.Errorf("read the signal mask: %w", err)
	}
	runtimeBeforeFork()
	// Taken only now: from here to the clone the stack cannot move (the
	// runtime forbids stack growth), so the address stays right.
	args.pidfd = uint64(uintptr(unsafe.Pointer(&fd)))
	var r1 uintptr
	var e syscall.Errno
	if haveVfork && s.setns.flags&unix.CLONE_NEWTIME == 0 {
		args.flags |= unix.CLONE_VM | unix.CLONE_VFORK
		r1, e = vforkExec(&args, s)
	} else {
		r1, _, e = syscall.RawSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args), 0)
		if e == 0 && r1 == 0 {
			childMain(s)
		}
	}
	runtimeAfterFork()
	syscall.ForkLock.Unlock()

	unix.Close(p[1])
	defer unix.Close(p[0])
	if e == unix.EAGAIN {
		return 0, -1, fmt.Errorf("start the command: no more processes allowed (a pids cgroup limit or RLIMIT_NPROC): %w", e)
	}
	if e != 0 {
		return 0, -1, fmt.Errorf("start the command: clone3: %w", e)
	}
	pid = int(r1)
	var buf [8]byte
	n, rerr := readFull(p[0], buf[:])
	if n == 0 && rerr == nil {
		return pid, int(fd), nil // EOF: execve closed the pipe
	}
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
			break
		}
	}
	unix.Close(int(fd))
	if n != len(buf) {
		return 0, -1, fmt.Errorf("read from child: %d bytes, %v", n, rerr)
	}
	st := step(*(*uint32)(unsafe.Pointer(&buf[0])))
	errno := syscall.Errno(*(*uint32)(unsafe.Pointer(&buf[4])))
	if int(st) >= len(stepText) {
		return 0, -1, errors.New("child reported an unknown step")
	}
	return 0, -1, &ChildError{Step: stepText[st], Errno: errno}
}

func readFull(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// dieOf ends this process by sig with the signal's default action, as the
// command inside died. The runtime's own handler would not do (it ignores a
// SIGSEGV sent by kill), so the disposition is reset with a raw
// rt_sigaction, the signal unblocked and raised on this thread. It returns
// only if the default action of sig is not to terminate.
func dieOf(sig unix.Signal) {
	runtime.LockOSThread()
	var sa [4]uintptr // struct kernel_sigaction: handler SIG_DFL, flags, restorer, mask
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0)
	var set unix.Sigset_t
	set.Val[(sig-1)/64] = 1 << (uint(sig-1) % 64)
	unix.PthreadSigmask(unix.SIG_UNBLOCK, &set, nil)
	unix.Tgkill(unix.Getpid(), unix.Gettid(), sig)
}
