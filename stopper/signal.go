package stopper

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Real-time signals as user space numbers them. The kernel's first
// real-time signal is 32, but glibc keeps 32 and 33 for its threads, so
// every init (and kill -l) calls 34 SIGRTMIN: systemd's SIGRTMIN+4
// (poweroff) is signal 38.
const (
	SIGRTMIN = unix.Signal(34)
	SIGRTMAX = unix.Signal(64)
)

// ErrBadSignal is wrapped by every error ParseSignal returns.
var ErrBadSignal = errors.New("invalid signal")

// aliases are the second names some signals have (kill -l prints POLL).
var aliases = map[string]unix.Signal{"IOT": unix.SIGABRT, "POLL": unix.SIGIO, "CLD": unix.SIGCHLD}

// ParseSignal parses a signal name or number, as kill(1) takes them:
// "SIGPWR", "PWR", "pwr", "30", "RTMIN+4", "SIGRTMAX-2". Names are
// case-insensitive; numbers are decimal without sign or leading zero, 1 to
// 64. Signals 32 and 33 are refused: glibc reserves them and no init
// uses them. The result always prints back (SignalName) to itself.
func ParseSignal(s string) (unix.Signal, error) {
	bad := func(why string) (unix.Signal, error) {
		return 0, fmt.Errorf("%w %q: %s", ErrBadSignal, s, why)
	}
	if s == "" {
		return bad("empty")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '-') {
			return bad("not a signal name or number")
		}
	}
	if s[0] >= '0' && s[0] <= '9' {
		n, ok := decimal(s)
		if !ok || n < 1 || n > int(SIGRTMAX) {
			return bad(fmt.Sprintf("not a number from 1 to %d", SIGRTMAX))
		}
		if n == 32 || n == 33 {
			return bad("reserved by the C library")
		}
		return unix.Signal(n), nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if rest, ok := strings.CutPrefix(name, "RTMIN"); ok {
		return realtime(s, rest, '+', SIGRTMIN)
	}
	if rest, ok := strings.CutPrefix(name, "RTMAX"); ok {
		return realtime(s, rest, '-', SIGRTMAX)
	}
	if sig := unix.SignalNum("SIG" + name); sig != 0 {
		return sig, nil
	}
	if sig, ok := aliases[name]; ok {
		return sig, nil
	}
	return bad("unknown signal name (see kill -l)")
}

// realtime parses the "+N" after RTMIN or the "-N" after RTMAX.
func realtime(s, rest string, sign byte, base unix.Signal) (unix.Signal, error) {
	if rest == "" {
		return base, nil
	}
	n, ok := decimal(rest[1:])
	if rest[0] != sign || !ok || n > int(SIGRTMAX-SIGRTMIN) {
		return 0, fmt.Errorf("%w %q: want RTMIN+N or RTMAX-N with N from 0 to %d", ErrBadSignal, s, SIGRTMAX-SIGRTMIN)
	}
	if sign == '+' {
		return base + unix.Signal(n), nil
	}
	return base - unix.Signal(n), nil
}

// decimal parses digits without sign or leading zero, up to 9 of them.
func decimal(s string) (int, bool) {
	if s == "" || len(s) > 9 || s[0] == '0' && len(s) > 1 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// SignalName names sig as kill -l does, with the SIG prefix: "SIGPWR",
// "SIGRTMIN+4", "SIGRTMAX-2"; "signal N" for a number without a name.
func SignalName(sig unix.Signal) string {
	switch {
	case sig >= SIGRTMIN && sig <= SIGRTMAX:
		if off := sig - SIGRTMIN; off == 0 {
			return "SIGRTMIN"
		} else if off <= (SIGRTMAX-SIGRTMIN)/2 {
			return "SIGRTMIN+" + strconv.Itoa(int(off))
		}
		if off := SIGRTMAX - sig; off > 0 {
			return "SIGRTMAX-" + strconv.Itoa(int(off))
		}
		return "SIGRTMAX"
	case unix.SignalName(sig) != "":
		return unix.SignalName(sig)
	}
	return "signal " + strconv.Itoa(int(sig))
}

// SignalSet is a set of signals 1 to 64, bit N-1 for signal N: the form of
// the masks in /proc/PID/status.
type SignalSet uint64

// Has reports whether sig is in the set.
func (s SignalSet) Has(sig unix.Signal) bool {
	return sig >= 1 && sig <= 64 && s&(1<<(sig-1)) != 0
}

// String lists the set's signals without the SIG prefix: "INT TERM RTMIN+4",
// "none" when empty.
func (s SignalSet) String() string {
	var names []string
	for sig := unix.Signal(1); sig <= 64; sig++ {
		if s.Has(sig) {
			names = append(names, strings.TrimPrefix(SignalName(sig), "SIG"))
		}
	}
	if names == nil {
		return "none"
	}
	return strings.Join(names, " ")
}
