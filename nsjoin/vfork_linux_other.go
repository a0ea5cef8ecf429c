//go:build !amd64

package nsjoin

import "syscall"

// haveVfork: rawVfork is written for amd64 only; elsewhere every command
// starts in a real fork.
const haveVfork = false

func vforkExec(*cloneArgs, *forkSpec) (uintptr, syscall.Errno) { panic("no vfork here") }
