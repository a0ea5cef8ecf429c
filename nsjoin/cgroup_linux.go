package nsjoin

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nspawn-tools/nspawn-tools/leader"
	"golang.org/x/sys/unix"
)

// cgroups are the leader's control groups, opened on the host: the cgroup
// v2 directory (the command is cloned into it) and, on hybrid hosts, the
// cgroup.procs file of its name=systemd v1 group (the command writes
// itself into it before joining the user namespace).
type cgroups struct {
	v2Dir   int // -1: none
	v1Procs int // -1: none
}

func (c *cgroups) close() {
	if c.v2Dir >= 0 {
		unix.Close(c.v2Dir)
	}
	if c.v1Procs >= 0 {
		unix.Close(c.v1Procs)
	}
	c.v2Dir, c.v1Procs = -1, -1
}

// openCgroups finds the leader's groups in the hierarchies mounted here.
func openCgroups(l *leader.Leader) (cgroups, error) {
	c := cgroups{v2Dir: -1, v1Procs: -1}
	data, err := l.ReadProc("cgroup")
	if err != nil {
		return c, err
	}
	// Moving a process between cgroups is costly (≈5 ms a hierarchy,
	// measured here): none is made where the caller is already there.
	var own []byte
	if f, err := openFile("/proc/self/cgroup"); err == nil {
		own, _ = io.ReadAll(f)
		f.Close()
	}
	mine := strings.Split(string(own), "\n")
	var v2Path, v1Path string
	for _, line := range strings.Split(string(bytes.TrimSpace(data)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 || !strings.HasPrefix(f[2], "/") || strings.Contains(f[2], "/..") || slices.Contains(mine, line) {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			v2Path = f[2]
		case f[1] == "name=systemd":
			v1Path = f[2]
		}
	}
	if v2Path == "" && v1Path == "" {
		return c, nil
	}
	v2Mount, v1Mount, err := cgroupMounts()
	if err != nil {
		return c, err
	}
	if v2Path != "" && v2Mount != "" {
		fd, err := unix.Open(filepath.Join(v2Mount, v2Path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return c, fmt.Errorf("open cgroup %s: %w", v2Path, err)
		}
		c.v2Dir = fd
	}
	if v1Path != "" && v1Mount != "" {
		fd, err := unix.Open(filepath.Join(v1Mount, v1Path, "cgroup.procs"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			c.close()
			return c, fmt.Errorf("open name=systemd cgroup %s: %w", v1Path, err)
		}
		c.v1Procs = fd
	}
	return c, nil
}

// cgroupMounts returns where the cgroup v2 hierarchy and the name=systemd
// v1 hierarchy are mounted (their roots), "" for one that is not.
func cgroupMounts() (v2, v1 string, err error) {
	f, err := openFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 5 || len(b) < 3 || a[3] != "/" {
			continue
		}
		switch {
		case b[0] == "cgroup2" && v2 == "":
			v2 = unescapeMount(a[4])
		case b[0] == "cgroup" && v1 == "" && hasOption(b[2], "name=systemd"):
			v1 = unescapeMount(a[4])
		}
	}
	return v2, v1, sc.Err()
}

func hasOption(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var n int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &n); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
