//go:build !amd64

package nsjoin

import "golang.org/x/sys/unix"

// haveSigCatch: the raw handler is written for amd64 only; elsewhere
// signal.Notify catches the signals.
const haveSigCatch = false

func (s *Signals) catchRaw([]unix.Signal) error { panic("no raw signal handler here") }

type replaced struct{}

func (s *Signals) restore() {}
