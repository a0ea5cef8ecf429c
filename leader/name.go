// Package leader turns a machine name (or a PID) into a pinned leader process:
// a pidfd and a /proc directory that are both known to refer to the process
// machined registered, never to a process that reused its PID.
package leader

import (
	"errors"
	"fmt"
)

// MaxNameLen is the longest machine name machined accepts (HOST_NAME_MAX).
const MaxNameLen = 64

// HostName is machined's name for the host itself; it is not a machine one can enter.
const HostName = ".host"

// ErrInvalidName is wrapped by every error ValidateName returns.
var ErrInvalidName = errors.New("invalid machine name")

// ValidateName checks name against machined's rules for machine names (the
// rules for host names): 1 to 64 characters of [A-Za-z0-9.-], dot-separated
// labels that are not empty and neither start nor end with "-". It is called
// before any path is built from the name, so "../x" or "a/b" never reach the
// file system.
func ValidateName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidName, name, why)
	}
	switch {
	case name == "":
		return bad("empty")
	case name == HostName:
		return bad("it names the host itself, not a machine")
	case len(name) > MaxNameLen:
		return bad(fmt.Sprintf("longer than %d characters", MaxNameLen))
	}
	labelStart := true // at the start of the name or right after a dot
	hyphen := false    // the previous character was '-'
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if labelStart {
				return bad("empty label (leading dot or \"..\")")
			}
			if hyphen {
				return bad("a label ends with \"-\"")
			}
			labelStart, hyphen = true, false
		case c == '-':
			if labelStart {
				return bad("a label starts with \"-\"")
			}
			hyphen = true
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			labelStart, hyphen = false, false
		default:
			return bad(fmt.Sprintf("character %q not allowed (only A-Z a-z 0-9 . -)", c))
		}
	}
	if labelStart {
		return bad("ends with a dot")
	}
	if hyphen {
		return bad("ends with \"-\"")
	}
	return nil
}
