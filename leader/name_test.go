package leader

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	good := []string{"a", "bb1", "my-machine", "web.example.com", "A1-b2.c3", strings.Repeat("x", 64), "x.y-z"}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	bad := []string{"", ".host", "../x", "..", ".", "a/b", "/etc", strings.Repeat("x", 65), "-x", "x-", "a.-b",
		"a-.b", "a..b", ".a", "a.", "a b", "a_b", "ä", "a\x00b", "a\nb", "*"}
	for _, n := range bad {
		err := ValidateName(n)
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", n, err)
		}
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a", "bb1", "../x", "a/b", ".host", "-x", "a.b", strings.Repeat("y", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		// Whatever passes is safe as a single path element under the state directory.
		if name == "" || len(name) > MaxNameLen || strings.ContainsAny(name, "/\x00") ||
			name == "." || name == ".." || strings.HasPrefix(name, ".") || strings.Contains(name, "..") ||
			strings.HasPrefix(name, "-") {
			t.Fatalf("ValidateName accepted %q", name)
		}
	})
}
