// Package nsjoin runs a command inside the namespaces, root and working
// directory of a pinned leader process: which namespaces to join (Plan), the
// joins themselves, credentials, and the exit status of the command.
package nsjoin

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Namespace is one kind of Linux namespace.
type Namespace struct {
	Proc   string // name under /proc/PID/ns/
	Option string // the command-line name: --no-<Option>
	Clone  int    // CLONE_NEW* flag
	Help   string // what leaving it out means, for --help
}

// Namespaces lists every kind, in the order util-linux nsenter joins them.
// This table drives the --no-* options, the plan and the messages.
var Namespaces = []Namespace{
	{"user", "user", unix.CLONE_NEWUSER, "Keep the caller's user namespace; credentials stay the caller's unless --user is given."},
	{"cgroup", "cgroup", unix.CLONE_NEWCGROUP, "Keep the caller's cgroup namespace."},
	{"ipc", "ipc", unix.CLONE_NEWIPC, "Keep the caller's IPC namespace."},
	{"uts", "uts", unix.CLONE_NEWUTS, "Keep the caller's host name (UTS namespace)."},
	{"net", "network", unix.CLONE_NEWNET, "Keep the caller's network namespace (the host's interfaces)."},
	{"pid", "pid", unix.CLONE_NEWPID, "Keep the caller's PID namespace."},
	{"mnt", "mount", unix.CLONE_NEWNS, "Keep the caller's mount namespace (the host's file systems; no chroot)."},
	{"time", "time", unix.CLONE_NEWTIME, "Keep the caller's time namespace."},
}

// Set is a set of namespace kinds, as CLONE_NEW* flags.
type Set int

// Has reports whether ns is in the set.
func (s Set) Has(ns Namespace) bool { return int(s)&ns.Clone != 0 }

// String lists the set's members by /proc name, in join order: "user,mnt".
func (s Set) String() string {
	var names []string
	for _, ns := range Namespaces {
		if s.Has(ns) {
			names = append(names, ns.Proc)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// threadKinds can be joined by one locked OS thread of a multithreaded
// process; the others (user, time) only by a single-threaded process.
const threadKinds = Set(unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWNET | unix.CLONE_NEWPID | unix.CLONE_NEWCGROUP)

// Plan says what to join.
type Plan struct {
	Join Set // namespaces of the leader to join
	Same Set // the leader's namespaces that are the caller's already
	Kept Set // namespaces the caller asked to keep
}

// ErrNamespaceMissing: the leader lacks a namespace kind the kernel has.
var ErrNamespaceMissing = errors.New("namespace missing")

// NewPlan compares the namespaces of the leader (an O_PATH descriptor of
// its /proc/PID directory) with the caller's and leaves out those in keep.
// A kind the kernel lacks (no /proc/self/ns entry) is skipped silently; one
// the leader lacks while we have it is an error.
func NewPlan(leaderDir int, keep Set) (Plan, error) {
	self, err := unix.Open("/proc/self", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Plan{}, fmt.Errorf("open /proc/self: %w", err)
	}
	defer unix.Close(self)
	var p Plan
	var mine, theirs [64]byte
	for _, ns := range Namespaces {
		// The link reads "mnt:[4026531841]": the kind and the namespace's
		// inode, so equal links are the same namespace. Reading it costs
		// half a stat, which makes an nsfs inode each time.
		n, err := unix.Readlinkat(self, "ns/"+ns.Proc, mine[:])
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // this kernel has no such namespace
			}
			return Plan{}, fmt.Errorf("read /proc/self/ns/%s: %w", ns.Proc, err)
		}
		m, err := unix.Readlinkat(leaderDir, "ns/"+ns.Proc, theirs[:])
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return Plan{}, fmt.Errorf("%s namespace of the leader: %w", ns.Proc, ErrNamespaceMissing)
			}
			return Plan{}, fmt.Errorf("%s namespace of the leader: %w", ns.Proc, err)
		}
		switch {
		case keep.Has(ns):
			p.Kept |= Set(ns.Clone)
		case string(mine[:n]) == string(theirs[:m]):
			p.Same |= Set(ns.Clone)
		default:
			p.Join |= Set(ns.Clone)
		}
	}
	return p, nil
}
