package nsjoin

import (
	"syscall"
	"unsafe"
)

// haveVfork: this architecture has rawVfork (vfork_amd64.s).
const haveVfork = true

func rawVfork(args, size uintptr) (pid, errno uintptr)

// vforkExec starts the child with CLONE_VM|CLONE_VFORK (in args.flags).
// The parent returns from this frame at once; only the child goes on in
// it, into childMain, which never returns: so the child never writes to a
// frame the parent still uses (the scheme of syscall.forkAndExecInChild1).
//
//go:noinline
//go:nosplit
//go:norace
//go:nocheckptr
func vforkExec(args *cloneArgs, s *forkSpec) (uintptr, syscall.Errno) {
	pid, errno := rawVfork(uintptr(unsafe.Pointer(args)), unsafe.Sizeof(*args))
	if errno != 0 || pid != 0 {
		return pid, syscall.Errno(errno)
	}
	childMain(s)
	return 0, 0 // not reached
}
