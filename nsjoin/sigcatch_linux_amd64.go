package nsjoin

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// haveSigCatch: this architecture has the handler of sigcatch_amd64.s.
const haveSigCatch = true

// catchFD is the pipe the handler writes to, set before a handler is
// installed.
//
//lint:ignore U1000 read by sigcatch_amd64.s
var catchFD uintptr

// catchAddrs gives the addresses of the handler and of its sa_restorer.
func catchAddrs() (handler, restorer uintptr)

// sigaction is the kernel's struct sigaction on amd64.
type sigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const (
	sigIgn     = 1
	saRestorer = 0x04000000
	saOnstack  = 0x08000000 // every thread of the runtime has its signal stack
	saRestart  = 0x10000000
)

// catchRaw installs the handler for sigs, leaving alone those ignored.
// It replaces the runtime's own handler, which the runtime never installs
// again: os/signal no longer sees these signals.
func (s *Signals) catchRaw(sigs []unix.Signal) error {
	catchFD = uintptr(s.w)
	h, r := catchAddrs()
	sa := sigaction{handler: h, flags: saOnstack | saRestart | saRestorer, restorer: r}
	for _, sig := range sigs {
		var old sigaction
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
			return fmt.Errorf("catch %v: %w", sig, e)
		}
		if old.handler == sigIgn {
			continue
		}
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0); e != 0 {
			return fmt.Errorf("catch %v: %w", sig, e)
		}
		s.replaced = append(s.replaced, replaced{sig, old})
	}
	return nil
}

// replaced is a handler catchRaw replaced.
type replaced struct {
	sig unix.Signal
	old sigaction
}

// restore puts back the handlers catchRaw replaced (for tests).
func (s *Signals) restore() {
	for _, r := range s.replaced {
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(r.sig), uintptr(unsafe.Pointer(&r.old)), 0, 8, 0, 0)
	}
	s.replaced = nil
}
