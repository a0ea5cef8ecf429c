package main

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

// cleanups is the program's list of things to undo, run last-in first-out
// at the end or on SIGINT/SIGTERM, whichever comes first.
type cleanups struct {
	mu     sync.Mutex
	fs     []func()
	failed bool // a cleanup reported an error
}

func (c *cleanups) add(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fs = append(c.fs, f)
}

func (c *cleanups) run() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.fs) - 1; i >= 0; i-- {
		c.fs[i]()
	}
	c.fs = nil
}

func (c *cleanups) fail() {
	c.failed = true // only called from a cleanup, under mu
}

// harness is the testing.TB handed to the test harnesses (internal/nstest):
// Fatalf and Skipf end the call with a panic that attempt recovers, Cleanup
// adds to the program's cleanups. The embedded TB is nil: a method the
// harnesses do not use would panic rather than do the wrong thing.
type harness struct {
	testing.TB
	c *cleanups
}

// harnessStop is the panic value of a harness's Fatalf or Skipf.
type harnessStop struct{ msg string }

func (h harness) Helper()      {}
func (h harness) Name() string { return "bench" }

func (h harness) Logf(format string, args ...any) { logf(format, args...) }

// Errorf is only called from the harnesses' cleanups.
func (h harness) Errorf(format string, args ...any) {
	logf("cleanup: "+format, args...)
	h.c.fail()
}

func (h harness) Fatalf(format string, args ...any) {
	panic(harnessStop{fmt.Sprintf(format, args...)})
}

func (h harness) Skipf(format string, args ...any) {
	panic(harnessStop{fmt.Sprintf(format, args...)})
}

func (h harness) Cleanup(f func()) { h.c.add(f) }

// attempt runs f, which uses a harness, and turns a Fatalf or Skipf in it
// into an error.
func attempt(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s, ok := r.(harnessStop)
			if !ok {
				panic(r)
			}
			err = errors.New(s.msg)
		}
	}()
	f()
	return nil
}
