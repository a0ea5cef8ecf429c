package stopper

import (
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseSignal(t *testing.T) {
	good := map[string]unix.Signal{
		"SIGPWR": unix.SIGPWR, "PWR": unix.SIGPWR, "pwr": unix.SIGPWR, "SigPwr": unix.SIGPWR, "30": unix.SIGPWR,
		"TERM": unix.SIGTERM, "15": unix.SIGTERM, "usr2": unix.SIGUSR2, "SIGKILL": unix.SIGKILL, "1": unix.SIGHUP,
		"RTMIN": 34, "SIGRTMIN": 34, "RTMIN+0": 34, "RTMIN+4": 38, "SIGRTMIN+4": 38, "sigrtmin+3": 37,
		"RTMAX": 64, "RTMAX-0": 64, "RTMAX-2": 62, "RTMIN+30": 64, "RTMAX-30": 34, "38": 38, "64": 64,
		"IOT": unix.SIGABRT, "POLL": unix.SIGIO, "SIGIO": unix.SIGIO,
	}
	for in, want := range good {
		got, err := ParseSignal(in)
		if err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", "0", "65", "32", "33", "-15", "+15", "015", "00", " TERM", "TERM ", "SIG", "SIGSIGTERM", "auto",
		"RTMIN-1", "RTMAX+1", "RTMIN+31", "RTMIN+", "RTMIN+04", "RTMIN4", "RTMAX--2", "TERM\x00", "ſigterm",
		"99999999999999999999", "1e1", "0x1e", "SIG30", "RT MIN",
	} {
		if got, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) = %d, want an error", in, got)
		}
	}
}

// TestRTMINNumbering pins the numbering kill -l prints (measured with bash
// and procps kill on Debian 12): 34 is SIGRTMIN, 38 is SIGRTMIN+4, 50 is
// SIGRTMAX-14.
func TestRTMINNumbering(t *testing.T) {
	for sig, want := range map[unix.Signal]string{
		34: "SIGRTMIN", 37: "SIGRTMIN+3", 38: "SIGRTMIN+4", 49: "SIGRTMIN+15", 50: "SIGRTMAX-14",
		63: "SIGRTMAX-1", 64: "SIGRTMAX", 30: "SIGPWR", 12: "SIGUSR2", 32: "signal 32",
	} {
		if got := SignalName(sig); got != want {
			t.Errorf("SignalName(%d) = %q, want %q", sig, got, want)
		}
	}
}

func TestSignalSetString(t *testing.T) {
	set := SignalSet(0x20014a07) // busybox init's rt_sigtimedwait set, measured
	if got, want := set.String(), "HUP INT QUIT USR1 USR2 TERM CHLD PWR"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if SignalSet(0).String() != "none" || set.Has(0) || set.Has(65) || !set.Has(unix.SIGUSR2) {
		t.Error("Has or String wrong at the edges")
	}
}

func FuzzParseSignal(f *testing.F) {
	for _, s := range []string{"SIGPWR", "pwr", "30", "RTMIN+4", "SIGRTMAX-2", "32", "0", "RTMIN+", "-1", "ſigterm", "IOT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := ParseSignal(s)
		if err != nil {
			if sig != 0 {
				t.Fatalf("ParseSignal(%q) = %d with error %v", s, sig, err)
			}
			return
		}
		if sig < 1 || sig > 64 || sig == 32 || sig == 33 {
			t.Fatalf("ParseSignal(%q) = %d, out of range", s, sig)
		}
		for _, c := range []byte(s) {
			if c >= 0x80 || c <= ' ' {
				t.Fatalf("ParseSignal(%q) accepted a byte %#x", s, c)
			}
		}
		name := SignalName(sig)
		for _, again := range []string{name, strings.TrimPrefix(name, "SIG"), strings.ToLower(name), strconv.Itoa(int(sig))} {
			if back, err := ParseSignal(again); err != nil || back != sig {
				t.Fatalf("ParseSignal(%q) = %d; ParseSignal(%q) = %d, %v", s, sig, again, back, err)
			}
		}
	})
}
