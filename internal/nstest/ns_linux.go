package nstest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Kinds names the eight kinds of namespace, as in /proc/PID/ns, in the order
// util-linux nsenter joins them.
var Kinds = []string{"user", "cgroup", "ipc", "uts", "net", "pid", "mnt", "time"}

// Namespaces returns the inode of /proc/PID/ns/KIND for every kind in Kinds.
func Namespaces(pid int) (map[string]uint64, error) {
	ns := make(map[string]uint64, len(Kinds))
	for _, k := range Kinds {
		var st syscall.Stat_t
		p := fmt.Sprintf("/proc/%d/ns/%s", pid, k)
		if err := syscall.Stat(p, &st); err != nil {
			return nil, fmt.Errorf("stat %s: %w", p, err)
		}
		ns[k] = st.Ino
	}
	return ns, nil
}

// ParseNSLink returns the inode in a /proc/PID/ns link's target, e.g.
// "net:[4026531840]" for kind "net".
func ParseNSLink(kind, link string) (uint64, error) {
	s, ok := strings.CutPrefix(link, kind+":[")
	if s, ok2 := strings.CutSuffix(s, "]"); ok && ok2 {
		return strconv.ParseUint(s, 10, 64)
	}
	return 0, fmt.Errorf("%q is not a %s namespace link", link, kind)
}

// NSpid returns the NSpid line of /proc/PID/status: the process's PID in
// each PID namespace it is in, from the host's down to its own.
func NSpid(pid int) ([]int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			var ids []int
			for _, f := range strings.Fields(rest) {
				id, err := strconv.Atoi(f)
				if err != nil {
					return nil, fmt.Errorf("pid %d: NSpid %q: %w", pid, rest, err)
				}
				ids = append(ids, id)
			}
			return ids, nil
		}
	}
	return nil, fmt.Errorf("pid %d: no NSpid in status", pid)
}
