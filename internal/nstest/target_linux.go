package nstest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
)

// The user namespace of a Spec with User set maps ids like systemd-nspawn -U:
// ids 0..IDCount-1 inside are UIDBase..UIDBase+IDCount-1 on the host, for
// users and groups alike.
const (
	UIDBase = 1556807680
	IDCount = 65536
)

// Clock offsets of the time namespace of a Spec with Time set.
const (
	MonotonicOffset = 86400 * time.Second
	BoottimeOffset  = 2 * 86400 * time.Second
)

// readyTimeout bounds each wait on a target so that a broken setup fails the
// test instead of hanging it.
const readyTimeout = 20 * time.Second

// Spec says which target to start.
type Spec struct {
	// Name is the target's hostname and appears in its marker file. It must
	// be a valid hostname; empty means "nstest".
	Name string
	// User puts the target in a user namespace mapped like systemd-nspawn -U
	// (see UIDBase); its rootfs is then owned by UIDBase, i.e. by root inside.
	User bool
	// Time puts the target in a time namespace whose monotonic and boottime
	// clocks run ahead by MonotonicOffset and BoottimeOffset.
	Time bool
}

// Target is a running target. Its rootfs is a tmpfs with /usr bind-mounted
// read-only, /bin /lib /lib64 /sbin symlinks into it, /dev (the host's,
// bound) with a devpts instance of its own on /dev/pts (as nspawn mounts),
// /proc of its own PID namespace, /tmp (mode 1777), /etc/passwd,
// /etc/group (root, alice 1000, group staff 50), /etc/hostname, /etc/marker
// and /home/alice (owned by alice). Its loopback interface is up.
type Target struct {
	Spec
	// PID is the host PID of the target's PID 1 (a `sleep infinity`),
	// valid once Start returns: every namespace and the rootfs are set up.
	PID int
	// Root is where the host sees the target's root directory
	// (/proc/PID/root).
	Root string
	// Marker is the content of the target's /etc/marker, without newline;
	// no other target nor the host has it.
	Marker string
	// UIDShift is the host uid (and gid) of the target's root: UIDBase with
	// a user namespace, else 0.
	UIDShift int

	scratch string // host directory holding the rootfs mount point
	cmd     *exec.Cmd
	waited  chan error
}

// setupScript runs as the target's PID 1 inside its new namespaces, then
// becomes `sleep infinity`. $1 is the name, $2 the rootfs mount point; it
// reports readiness on fd 3.
const setupScript = `set -eu
name=$1 root=$2
mount --make-rprivate /
mount -t tmpfs -o mode=0755 "nstest-$name" "$root"
cd "$root"
mkdir usr proc etc tmp dev root home home/alice oldroot
chmod 1777 tmp
chmod 0700 root
ln -s usr/bin bin
ln -s usr/lib lib
ln -s usr/lib64 lib64
ln -s usr/sbin sbin
mount --bind /usr usr
mount -o remount,bind,ro usr
mount --rbind /dev dev
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 "nstest-$name-pts" dev/pts
printf 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n' >etc/passwd
printf 'root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n' >etc/group
echo "$name" >etc/hostname
echo "marker-$name-$$-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')" >etc/marker
chown 1000:1000 home/alice
hostname "$name"
ip link set lo up
pivot_root . oldroot
cd /
mount -t proc proc /proc
umount -l /oldroot
rmdir /oldroot
echo ready >&3
exec 3>&- </dev/null >/dev/null 2>&1
exec sleep infinity
`

// Start starts a target as spec says and returns once it is ready. It fails
// the test if the target cannot be made (and stops it, like testenv, when
// root or unshare is missing). The target is stopped and its scratch
// directory removed when the test ends.
func Start(t testing.TB, spec Spec) *Target {
	t.Helper()
	testenv.RequireRoot(t)
	unshare := testenv.LookPath(t, "unshare")
	if spec.Name == "" {
		spec.Name = "nstest"
	}

	// The scratch directory must be searchable by the user namespace's root,
	// which has no privilege over host-owned files.
	scratch, err := os.MkdirTemp("", "nstest-"+spec.Name+"-")
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	tg := &Target{Spec: spec, scratch: scratch, waited: make(chan error, 1)}
	t.Cleanup(func() {
		if err := tg.stop(); err != nil {
			t.Errorf("nstest: stop target %s: %v", spec.Name, err)
		}
	})
	if err := os.Chmod(scratch, 0o755); err != nil {
		t.Fatalf("nstest: %v", err)
	}
	rootfs := filepath.Join(scratch, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatalf("nstest: %v", err)
	}

	args := []string{"--fork", "--kill-child", "--pid", "--mount", "--uts", "--ipc", "--net", "--cgroup"}
	if spec.Time {
		args = append(args, "--time",
			"--monotonic", strconv.Itoa(int(MonotonicOffset/time.Second)),
			"--boottime", strconv.Itoa(int(BoottimeOffset/time.Second)))
	}
	args = append(args, "/bin/sh", "-c", setupScript, "nstest-setup", spec.Name, rootfs)

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	defer r.Close()
	var out bytes.Buffer
	cmd := exec.Command(unshare, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.Dir = "/"
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.ExtraFiles = []*os.File{w}
	// Pdeathsig on unshare plus its --kill-child take the target down should
	// the test process die without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if spec.User {
		tg.UIDShift = UIDBase
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: UIDBase, Size: IDCount}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: UIDBase, Size: IDCount}}
		// nspawn leaves setgroups allowed; so must we, for nsenter's setgroups.
		cmd.SysProcAttr.GidMappingsEnableSetgroups = true
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	if err := startFromLastingThread(cmd); err != nil {
		w.Close()
		t.Fatalf("nstest: start %s: %v", cmd, err)
	}
	w.Close()
	tg.cmd = cmd
	go func() { tg.waited <- cmd.Wait() }()

	// `ready` on fd 3, or EOF when the setup failed and unshare exited.
	if err := r.SetReadDeadline(time.Now().Add(readyTimeout)); err != nil {
		t.Fatalf("nstest: %v", err)
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if line != "ready\n" {
		_ = tg.stop()
		t.Fatalf("nstest: target %s did not get ready (%v); its output:\n%s", spec.Name, err, out.String())
	}

	if err := tg.findLeader(); err != nil {
		_ = tg.stop()
		t.Fatalf("nstest: target %s: %v", spec.Name, err)
	}
	tg.Root = fmt.Sprintf("/proc/%d/root", tg.PID)
	m, err := os.ReadFile(filepath.Join(tg.Root, "etc/marker"))
	if err != nil {
		t.Fatalf("nstest: target %s: %v", spec.Name, err)
	}
	tg.Marker = strings.TrimSuffix(string(m), "\n")
	return tg
}

// starts are run by one goroutine locked to its OS thread for the life of
// the test process. Pdeathsig fires when the thread that forked the child
// ends, not the process, and threads do end: the runtime ends the thread of
// any goroutine that returns while locked (as nsjoin's joining goroutines
// do). Without this, a target died at random under the tests.
var starts = make(chan func())

func init() {
	go func() {
		runtime.LockOSThread()
		for f := range starts {
			f()
		}
	}()
}

// startFromLastingThread starts cmd from the thread that never ends.
func startFromLastingThread(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	starts <- func() { done <- cmd.Start() }
	return <-done
}

// findLeader sets PID to unshare's only child, the PID 1 of the new PID
// namespace, and waits (bounded) until it has become `sleep`: its comm
// says so early in execve, its environment is in place only at the end
// (a test once read an empty /proc/PID/environ in between).
func (tg *Target) findLeader() error {
	upid := tg.cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", upid, upid))
	if err != nil {
		return err
	}
	kids := strings.Fields(string(b))
	if len(kids) != 1 {
		return fmt.Errorf("unshare (pid %d) has children %q, want exactly one", upid, kids)
	}
	tg.PID, err = strconv.Atoi(kids[0])
	if err != nil {
		return err
	}
	nspid, err := NSpid(tg.PID)
	if err != nil {
		return err
	}
	if len(nspid) != 2 || nspid[1] != 1 {
		return fmt.Errorf("pid %d has NSpid %v, want [%d 1]", tg.PID, nspid, tg.PID)
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", tg.PID))
		if err != nil {
			return err
		}
		if string(comm) == "sleep\n" {
			if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", tg.PID)); err == nil && len(env) > 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d is still %q after %v, not sleep", tg.PID, bytes.TrimSpace(comm), readyTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop kills the target (its PID 1 takes the whole PID namespace and with it
// the mount namespace and tmpfs), reaps unshare and removes the scratch
// directory. It is safe to call twice.
func (tg *Target) stop() error {
	var errs []error
	if tg.cmd != nil {
		// Kill PID 1, which takes its whole PID namespace along, and let
		// unshare reap it: killing unshare first would leave PID 1 to be
		// reaped by whoever inherits it. Before PID is known (a failed
		// setup), unshare's children are PID 1.
		pids := []int{tg.PID}
		if tg.PID == 0 {
			upid := tg.cmd.Process.Pid
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", upid, upid))
			pids = nil
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
		}
		for _, pid := range pids {
			// Not reaped yet: unshare, our unreaped child, reaps it.
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
				errs = append(errs, fmt.Errorf("kill pid %d: %w", pid, err))
			}
		}
		select {
		case <-tg.waited:
		case <-time.After(readyTimeout):
			// unshare --kill-child takes its child along.
			_ = tg.cmd.Process.Kill()
			<-tg.waited
			errs = append(errs, fmt.Errorf("unshare (pid %d) did not exit within %v of its child's SIGKILL", tg.cmd.Process.Pid, readyTimeout))
		}
		tg.cmd = nil
	}
	if tg.scratch != "" {
		if err := os.RemoveAll(tg.scratch); err != nil {
			errs = append(errs, err)
		}
		tg.scratch = ""
	}
	return errors.Join(errs...)
}

// Path returns the host path of path p inside the target.
func (tg *Target) Path(p string) string {
	return filepath.Join(tg.Root, p)
}

// Namespaces returns the namespace inodes of the target's PID 1.
func (tg *Target) Namespaces(t testing.TB) map[string]uint64 {
	t.Helper()
	ns, err := Namespaces(tg.PID)
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	return ns
}

// WriteFile writes data to path inside the target, as the target's root
// with mode perm. It writes through util-linux nsenter (a test tool) because
// the host's root is no user of a user-namespaced target: its files there
// would have an unmapped owner, which the kernel refuses (EOVERFLOW).
func (tg *Target) WriteFile(t testing.TB, path, data string, perm os.FileMode) {
	t.Helper()
	nsenter := testenv.LookPath(t, "nsenter")
	cmd := exec.Command(nsenter, "-t", strconv.Itoa(tg.PID), "-a", "/bin/sh", "-c", `cat >"$1" && chmod "$2" "$1"`,
		"sh", path, fmt.Sprintf("%o", perm.Perm()))
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdin = strings.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nstest: write %s in target %s: %v\n%s", path, tg.Name, err, out)
	}
}
