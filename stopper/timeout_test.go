package stopper

import (
	"strconv"
	"testing"
	"time"
)

func TestParseTimeout(t *testing.T) {
	good := map[string]time.Duration{
		"60": time.Minute, "0": 0, "0s": 0, "2.5": 2500 * time.Millisecond, ".5": 500 * time.Millisecond,
		"90s": 90 * time.Second, "2m": 2 * time.Minute, "1m30s": 90 * time.Second, "1h": time.Hour, "250ms": 250 * time.Millisecond,
	}
	for in, want := range good {
		got, err := ParseTimeout(in)
		if err != nil || got != want {
			t.Errorf("ParseTimeout(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", "-1", "-5s", "+5s", "+5", "s", "5x", "1e3", "ten", " 5", "5 ", ".", "1..2", "0x10",
		"99999999999", "9999999999999999999999h", "inf", "NaN",
	} {
		if got, err := ParseTimeout(in); err == nil {
			t.Errorf("ParseTimeout(%q) = %v, want an error", in, got)
		}
	}
}

func FuzzParseTimeout(f *testing.F) {
	for _, s := range []string{"60", "0", "2.5", "90s", "2m", "1h2m3.5s", "-1", "+5s", "1e3", "99999999999", ".5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseTimeout(s)
		if err != nil {
			if d != 0 {
				t.Fatalf("ParseTimeout(%q) = %v with error %v", s, d, err)
			}
			return
		}
		if d < 0 {
			t.Fatalf("ParseTimeout(%q) = %v, negative", s, d)
		}
		if n, err := strconv.ParseUint(s, 10, 32); err == nil && d != time.Duration(n)*time.Second {
			t.Fatalf("ParseTimeout(%q) = %v, want %d seconds", s, d, n)
		}
		if back, err := ParseTimeout(d.String()); err != nil || back != d {
			t.Fatalf("ParseTimeout(%q) = %v; ParseTimeout(%q) = %v, %v", s, d, d.String(), back, err)
		}
	})
}
