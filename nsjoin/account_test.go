package nsjoin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// machineAt builds a Machine whose root is a directory of files.
func machineAt(t *testing.T, files map[string]string) (*Machine, string) {
	t.Helper()
	root := t.TempDir()
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &Machine{root: fd}, root
}

const passwd = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\nbob:x:1001:1001::/home/bob:\n"
const group = "root:x:0:\nalice:x:1000:\nstaff:x:50:alice,bob\nwheel:x:10:bob\nbad\n"

func TestLookupUser(t *testing.T) {
	m, root := machineAt(t, map[string]string{"etc/passwd": passwd, "etc/group": group, "bin/sh": "", "home/alice/.keep": ""})
	if err := os.Chmod(filepath.Join(root, "bin/sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec   string
		uid    uint32
		gid    uint32
		groups []uint32
		home   string
		shell  string
	}{
		{"0", 0, 0, []uint32{0}, "/root", "/bin/sh"},
		{"alice", 1000, 1000, []uint32{1000, 50}, "/home/alice", "/bin/sh"}, // /bin/bash is missing: /bin/sh
		{"1000", 1000, 1000, []uint32{1000, 50}, "/home/alice", "/bin/sh"},
		{"bob", 1001, 1001, []uint32{1001, 50, 10}, "/home/bob", "/bin/sh"},
		{"alice:wheel", 1000, 10, []uint32{10}, "/home/alice", "/bin/sh"},
		{"alice:77", 1000, 77, []uint32{77}, "/home/alice", "/bin/sh"},
		{"4242", 4242, 4242, []uint32{4242}, "/", "/bin/sh"},
	}
	for _, tt := range tests {
		u, err := m.LookupUser(tt.spec)
		if err != nil {
			t.Errorf("%s: %v", tt.spec, err)
			continue
		}
		if u.UID != tt.uid || u.GID != tt.gid || !slices.Equal(u.Groups, tt.groups) || u.Home != tt.home || u.Shell != tt.shell {
			t.Errorf("%s: got %+v", tt.spec, u)
		}
	}
	for _, spec := range []string{"nosuch", "alice:nogroup", "", ":", "alice:", "4294967295"} {
		if _, err := m.LookupUser(spec); !errors.Is(err, ErrNoUser) {
			t.Errorf("%q: %v, want ErrNoUser", spec, err)
		}
	}
}

// LookupAccount reads /etc/passwd only: a group file LookupUser refuses
// does not matter to it.
func TestLookupAccount(t *testing.T) {
	long := "big:x:60:" + strings.Repeat("u,", maxAccountLine) + "u\n"
	m, _ := machineAt(t, map[string]string{"etc/passwd": passwd, "etc/group": group + long})
	a, err := m.LookupAccount("alice")
	if err != nil || a.UID != 1000 || a.GID != 1000 || a.Home != "/home/alice" || a.Shell != "/bin/sh" {
		t.Errorf("alice: %+v, %v", a, err)
	}
	if a, err := m.LookupAccount("0"); err != nil || a.Name != "root" || a.Home != "/root" {
		t.Errorf("0: %+v, %v", a, err)
	}
	if _, err := m.LookupUser("alice"); err == nil || !strings.Contains(err.Error(), "/etc/group has a line longer than 64 KiB") {
		t.Errorf("LookupUser with a group line over %d bytes: %v", maxAccountLine, err)
	}
	for _, user := range []string{"nosuch", "", "4294967295"} {
		if _, err := m.LookupAccount(user); !errors.Is(err, ErrNoUser) {
			t.Errorf("%q: %v, want ErrNoUser", user, err)
		}
	}
}

// TestHostileMachineFiles: an absolute symlink in the machine resolves in
// the machine's root, never on the host; FIFOs are refused at once.
func TestHostileMachineFiles(t *testing.T) {
	host := filepath.Join(t.TempDir(), "host-passwd")
	if err := os.WriteFile(host, []byte("root:x:0:0::/host-only:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, root := machineAt(t, map[string]string{"etc/group": group})
	if err := os.Symlink(host, filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../.."+host, filepath.Join(root, "etc/group2")); err != nil {
		t.Fatal(err)
	}
	u, err := m.LookupUser("0")
	if err != nil || u.Home == "/host-only" {
		t.Errorf("symlinked passwd: %+v, %v (the host's file was read)", u, err)
	}
	if f, err := m.Open("/etc/group2"); err == nil {
		f.Close()
		t.Error("a relative symlink climbing out of the machine was followed")
	}
	if err := unix.Mkfifo(filepath.Join(root, "etc/passwd.fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(root, "etc/passwd"))
	if err := os.Rename(filepath.Join(root, "etc/passwd.fifo"), filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := m.LookupUser("alice"); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNoUser) {
			t.Errorf("FIFO passwd: %v, want ErrNoUser", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("LookupUser blocked on a FIFO /etc/passwd")
	}
}

func TestHugePasswd(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < maxAccountFile+1<<20; i++ {
		fmt.Fprintf(&b, "user%d:x:%d:%d::/home/u:/bin/sh\n", i, i+2000, i+2000)
	}
	b.WriteString("late:x:7:7::/late:/bin/sh\n")
	b.WriteString(strings.Repeat("x", 200<<10) + "\n")
	m, _ := machineAt(t, map[string]string{"etc/passwd": b.String()})
	if _, err := m.LookupUser("user5"); err != nil {
		t.Errorf("early user: %v", err)
	}
	// Past the read limit the rest is not looked at.
	if u, err := m.LookupUser("late"); err == nil {
		t.Errorf("a user past %d bytes was found: %+v", maxAccountFile, u)
	}
}

func FuzzParsePasswdLine(f *testing.F) {
	for _, l := range strings.Split(passwd, "\n") {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line string) {
		a, err := ParsePasswdLine(line)
		if err != nil {
			if !errors.Is(err, ErrBadPasswdLine) {
				t.Fatalf("error %v does not wrap ErrBadPasswdLine", err)
			}
			return
		}
		if a.Name == "" || strings.ContainsAny(a.Name, ":\n") || strings.ContainsAny(a.Shell+a.Home, ":\n") {
			t.Fatalf("accepted %q as %+v", line, a)
		}
	})
}

func FuzzParseGroupLine(f *testing.F) {
	for _, l := range strings.Split(group, "\n") {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line string) {
		g, err := ParseGroupLine(line)
		if err != nil {
			if !errors.Is(err, ErrBadGroupLine) {
				t.Fatalf("error %v does not wrap ErrBadGroupLine", err)
			}
			return
		}
		for _, m := range g.Members {
			if m == "" || strings.ContainsAny(m, ",:") {
				t.Fatalf("accepted member %q in %q", m, line)
			}
		}
	})
}
