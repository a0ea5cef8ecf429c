package stopper

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// ErrBadDuration is wrapped by every error ParseTimeout returns.
var ErrBadDuration = errors.New("invalid duration")

// ParseTimeout parses a wait limit: seconds as the original nspawn-stop took
// them ("60", "2.5") or a Go duration ("90s", "2m", "1m30s"). 0 means no
// limit. Negative values, signs, units alone and values that overflow are
// errors.
func ParseTimeout(s string) (time.Duration, error) {
	bad := func(why string) (time.Duration, error) {
		return 0, fmt.Errorf("%w %q: %s", ErrBadDuration, s, why)
	}
	if s == "" {
		return bad("empty")
	}
	if c := s[0]; !(c >= '0' && c <= '9' || c == '.') {
		return bad("want seconds (60) or a duration (90s, 2m), not negative")
	}
	if secondsOnly(s) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return bad("not a number of seconds")
		}
		if f*float64(time.Second) >= math.MaxInt64 {
			return bad("too large")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return bad("want seconds (60) or a duration (90s, 2m)")
	}
	return d, nil
}

// secondsOnly reports whether s is digits with at most one decimal point.
func secondsOnly(s string) bool {
	dot := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.' && !dot:
			dot = true
		case c < '0' || c > '9':
			return false
		}
	}
	return s != "."
}
