package machinetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Init names the program a machine runs as PID 1.
type Init string

// The inits the harness knows how to boot and wait for.
const (
	InitBusybox Init = "busybox" // /bin/busybox init (Busybox rootfs)
	InitRunit   Init = "runit"   // /sbin/runit with Debian's stages
	InitS6      Init = "s6"      // /usr/bin/s6-svscan /etc/s6-scan
	InitOpenRC  Init = "openrc"  // /sbin/openrc-init
	InitSystemd Init = "systemd" // systemd-nspawn -b
)

// StateDir is where machined keeps a state file per running machine.
const StateDir = "/run/systemd/machines"

// Spec says how to start a machine.
type Spec struct {
	Init Init // default InitBusybox
	// Rootfs is the recipe to boot; default Busybox for InitBusybox,
	// Bookworm for the others.
	Rootfs         Kind
	PrivateUsers   bool     // -U: a user namespace, idmapped root
	PrivateNetwork bool     // --private-network
	Args           []string // more systemd-nspawn options
	// Prepare, if set, may change the machine's throwaway root (e.g. copy
	// a binary in) before it boots.
	Prepare func(root string) error
	// ReadyTimeout bounds each wait of the start (registration, exec,
	// init ready); default 60 s.
	ReadyTimeout time.Duration
	Logf         Logf // progress messages; nil for none
}

// Timings records how long each step of a start took, from the fork of
// systemd-nspawn.
type Timings struct {
	Overlay    time.Duration // making the throwaway root (before the fork)
	Registered time.Duration // until machined's state file appeared
	Exec       time.Duration // until the leader had exec'd the init
	Ready      time.Duration // until the init was ready to take signals
}

// Machine is a running systemd-nspawn machine started by the harness.
type Machine struct {
	Name      string  // machine name (and host name inside)
	NspawnPID int     // systemd-nspawn, a child of this process
	Leader    int     // the machine's PID 1, as seen from the host
	Root      string  // the throwaway root directory it runs on
	Base      string  // the cached rootfs under the overlay (read only)
	Spec      Spec    // what it was started with
	Timings   Timings // how long the start took
	Log       string  // file with systemd-nspawn's output

	cmd       *exec.Cmd
	done      chan struct{}
	scratch   string
	cgroups   []string // unit-named cgroup in each hierarchy
	cgfd      int
	pidfd     int
	closeOnce sync.Once
	closeErr  error
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$`)

var nameSeq struct {
	sync.Mutex
	used map[string]int
}

// Name makes a machine name from base that no other test process uses at
// the same time: "nt-BASE-PID" (and a counter when base repeats).
func Name(base string) string {
	nameSeq.Lock()
	defer nameSeq.Unlock()
	if nameSeq.used == nil {
		nameSeq.used = map[string]int{}
	}
	n := nameSeq.used[base]
	nameSeq.used[base]++
	if n == 0 {
		return fmt.Sprintf("nt-%s-%d", base, os.Getpid())
	}
	return fmt.Sprintf("nt-%s-%d-%d", base, os.Getpid(), n)
}

// CgroupRoots are the cgroup hierarchies nspawn uses on this host: the
// cgroup2 one first (where the unit-named cgroup is made), then the
// name=systemd v1 one on a hybrid host.
func CgroupRoots() []string {
	isType := func(p string, magic int64) bool {
		var st unix.Statfs_t
		return unix.Statfs(p, &st) == nil && int64(st.Type) == magic
	}
	switch {
	case isType("/sys/fs/cgroup", unix.CGROUP2_SUPER_MAGIC):
		return []string{"/sys/fs/cgroup"}
	case isType("/sys/fs/cgroup/unified", unix.CGROUP2_SUPER_MAGIC):
		return []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"}
	default:
		return []string{"/sys/fs/cgroup/systemd"}
	}
}

// CgroupName is the unit-named cgroup a machine's nspawn runs in.
func CgroupName(machine string) string { return "nspawntest-" + machine + ".scope" }

// Launch starts a machine and waits until its init is ready. The caller
// must Close it. Tests use Start instead.
func Launch(name string, spec Spec) (m *Machine, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("machinetest: needs root")
	}
	if !nameRE.MatchString(name) || len(name) > 64 {
		return nil, fmt.Errorf("machinetest: bad machine name %q", name)
	}
	if spec.Init == "" {
		spec.Init = InitBusybox
	}
	if spec.Rootfs == "" {
		spec.Rootfs = Bookworm
		if spec.Init == InitBusybox {
			spec.Rootfs = Busybox
		}
	}
	if spec.ReadyTimeout == 0 {
		spec.ReadyTimeout = 60 * time.Second
	}
	logf := spec.Logf
	nspawn, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		return nil, fmt.Errorf("machinetest: %w", err)
	}
	var initArgs []string
	switch spec.Init {
	case InitBusybox:
		initArgs = []string{"/bin/busybox", "init"}
	case InitRunit:
		initArgs = []string{"/sbin/runit"}
	case InitS6:
		initArgs = []string{"/usr/bin/s6-svscan", "/etc/s6-scan"}
	case InitOpenRC:
		initArgs = []string{"/sbin/openrc-init"}
	case InitSystemd:
	default:
		return nil, fmt.Errorf("machinetest: unknown init %q", spec.Init)
	}
	if _, err := os.Lstat(filepath.Join(StateDir, name)); err == nil {
		return nil, fmt.Errorf("machinetest: machine %q is already registered", name)
	}
	base, err := Rootfs(spec.Rootfs, logf)
	if err != nil {
		return nil, err
	}
	if err := EnsureMachined(logf); err != nil {
		return nil, err
	}

	m = &Machine{Name: name, Spec: spec, Base: base, cgfd: -1, pidfd: -1, done: make(chan struct{})}
	defer func() {
		if err != nil {
			if cerr := m.Close(); cerr != nil {
				err = fmt.Errorf("%w; and cleaning up: %v", err, cerr)
			}
			m = nil
		}
	}()

	t0 := time.Now()
	m.scratch, err = os.MkdirTemp("", "nspawntest-"+name+"-")
	if err != nil {
		return m, fmt.Errorf("machinetest: %w", err)
	}
	m.Root = filepath.Join(m.scratch, "root")
	m.Log = filepath.Join(m.scratch, "nspawn.log")
	if err := overlay(base, m.scratch, m.Root, spec.PrivateUsers); err != nil {
		return m, err
	}
	if spec.Prepare != nil {
		if err := spec.Prepare(m.Root); err != nil {
			return m, fmt.Errorf("machinetest: prepare %s: %w", name, err)
		}
	}
	m.Timings.Overlay = time.Since(t0)

	// The unit-named cgroup: machined derives the machine's unit from it.
	roots := CgroupRoots()
	for _, r := range roots {
		m.cgroups = append(m.cgroups, filepath.Join(r, CgroupName(name)))
	}
	for _, cg := range m.cgroups {
		if err := removeCgroup(cg); err != nil {
			return m, fmt.Errorf("machinetest: stale cgroup: %w", err)
		}
	}
	if err := os.Mkdir(m.cgroups[0], 0o755); err != nil {
		return m, fmt.Errorf("machinetest: %w", err)
	}
	m.cgfd, err = unix.Open(m.cgroups[0], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return m, fmt.Errorf("machinetest: %w", err)
	}

	args := []string{"--keep-unit", "--machine=" + name, "--settings=no", "--link-journal=no", "-D", m.Root}
	if spec.PrivateUsers {
		args = append(args, "-U")
	}
	if spec.PrivateNetwork {
		args = append(args, "--private-network")
	}
	args = append(args, spec.Args...)
	if spec.Init == InitSystemd {
		args = append(args, "-b")
	} else {
		args = append(args, "--")
		args = append(args, initArgs...)
	}
	logFile, err := os.Create(m.Log)
	if err != nil {
		return m, fmt.Errorf("machinetest: %w", err)
	}
	defer logFile.Close()
	m.cmd = exec.Command(nspawn, args...)
	m.cmd.Stdout, m.cmd.Stderr = logFile, logFile
	// clone3(CLONE_INTO_CGROUP): nspawn is born in the unit-named cgroup.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: m.cgfd}
	logf.printf("machinetest: %s: systemd-nspawn %s", name, strings.Join(args, " "))
	t0 = time.Now()
	if err := m.cmd.Start(); err != nil {
		m.cmd = nil
		close(m.done)
		return m, fmt.Errorf("machinetest: start systemd-nspawn: %w", err)
	}
	m.NspawnPID = m.cmd.Process.Pid
	go func() { m.cmd.Wait(); close(m.done) }()

	failed := func(format string, args ...any) error {
		log, _ := os.ReadFile(m.Log)
		return fmt.Errorf("machinetest: machine %s: %s\n--- systemd-nspawn output:\n%s", name, fmt.Sprintf(format, args...), tail(string(log), 40))
	}
	// 1. machined's state file, and the LEADER it names
	var leaderPID int
	if err := m.poll(spec.ReadyTimeout, func() (bool, error) {
		st, err := ReadStateFile(filepath.Join(StateDir, name))
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		leaderPID, err = strconv.Atoi(st["LEADER"])
		return err == nil && leaderPID > 0, nil
	}); err != nil {
		return m, failed("not registered with machined: %v", err)
	}
	m.Timings.Registered = time.Since(t0)
	m.pidfd, err = unix.PidfdOpen(leaderPID, 0)
	if err != nil {
		return m, failed("pidfd_open(LEADER=%d): %v", leaderPID, err)
	}
	if ppid, _ := parentOf(leaderPID); ppid != m.NspawnPID {
		return m, failed("LEADER=%d is not a child of systemd-nspawn (pid %d) but of %d", leaderPID, m.NspawnPID, ppid)
	}
	m.Leader = leaderPID
	// 2. machined registers the leader before it has exec'd the init
	if err := m.poll(spec.ReadyTimeout, func() (bool, error) {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", leaderPID))
		if err != nil {
			return false, err
		}
		return strings.TrimSpace(string(comm)) != "systemd-nspawn", nil
	}); err != nil {
		return m, failed("leader %d never exec'd the init: %v", leaderPID, err)
	}
	m.Timings.Exec = time.Since(t0)
	// 3. the init is up: its test service ran (and systemd says running)
	marker := fmt.Sprintf("/proc/%d/root%s", leaderPID, ReadyMarker)
	if err := m.poll(spec.ReadyTimeout, func() (bool, error) {
		if _, err := os.Stat(marker); err != nil {
			return false, nil
		}
		if spec.Init != InitSystemd {
			return true, nil
		}
		out, _ := m.Command("systemctl", "is-system-running").Output()
		s := strings.TrimSpace(string(out))
		return s == "running" || s == "degraded", nil
	}); err != nil {
		return m, failed("%s init not ready: %v", spec.Init, err)
	}
	m.Timings.Ready = time.Since(t0)
	logf.printf("machinetest: %s up: nspawn pid %d, leader %d (%s); overlay %v, registered %v, exec %v, ready %v",
		name, m.NspawnPID, m.Leader, spec.Init, rnd(m.Timings.Overlay), rnd(m.Timings.Registered), rnd(m.Timings.Exec), rnd(m.Timings.Ready))
	return m, nil
}

func rnd(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// poll calls check every 20 ms until it says done, fails, the limit
// passes, or systemd-nspawn exits.
func (m *Machine) poll(limit time.Duration, check func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := check()
		if ok {
			return nil
		}
		if m.Exited() {
			return fmt.Errorf("systemd-nspawn exited (%s); last check: %v", m.cmd.ProcessState, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v (last check: %v)", limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// overlay mounts an overlayfs of base (read only) with its upper and work
// directories in scratch on root, so nothing reaches the cache. nspawn -U
// cannot idmap an overlayfs: it chowns the whole tree, which copies every
// file up unless metacopy is on (then only metadata: 33 MB, not 261, for
// the Debian rootfs).
func overlay(base, scratch, root string, metacopy bool) error {
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(scratch, d), 0o755); err != nil {
			return fmt.Errorf("machinetest: %w", err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", base, filepath.Join(scratch, "upper"), filepath.Join(scratch, "work"))
	if metacopy {
		opts += ",metacopy=on"
	}
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("machinetest: mount overlay (%s): %w", opts, err)
	}
	return nil
}

// ReadStateFile parses a machined state file (KEY=VALUE lines).
func ReadStateFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			st[k] = v
		}
	}
	return st, nil
}

// parentOf is the PPID of pid, from /proc/PID/stat.
func parentOf(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: bad format", pid)
	}
	return strconv.Atoi(f[1])
}

// Exited reports whether systemd-nspawn has exited.
func (m *Machine) Exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// Wait waits at most timeout for systemd-nspawn to exit and returns its
// exit status (128+N when a signal N killed it).
func (m *Machine) Wait(timeout time.Duration) (int, error) {
	select {
	case <-m.done:
	case <-time.After(timeout):
		return -1, fmt.Errorf("machinetest: machine %s: systemd-nspawn (pid %d) still running after %v", m.Name, m.NspawnPID, timeout)
	}
	if m.cmd == nil {
		return -1, errors.New("machinetest: systemd-nspawn never started")
	}
	ps := m.cmd.ProcessState
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ps.ExitCode(), nil
}

// String names the machine for messages.
func (m *Machine) String() string {
	return fmt.Sprintf("machine %s (nspawn %d, leader %d, %s)", m.Name, m.NspawnPID, m.Leader, m.Spec.Init)
}

// Command is util-linux nsenter running argv in all the leader's
// namespaces: a test oracle, never the product. Use it only while the
// machine runs: once it has exited, its leader's PID may name another
// process (Output checks).
func (m *Machine) Command(argv ...string) *exec.Cmd {
	args := append([]string{"-t", strconv.Itoa(m.Leader), "-a", "--"}, argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	return cmd
}

// Output runs argv inside the machine (Command) and returns its standard
// output; the error carries its standard error.
func (m *Machine) Output(argv ...string) (string, error) {
	if m.Exited() {
		return "", fmt.Errorf("machinetest: machine %s has exited", m.Name)
	}
	cmd := m.Command(argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("nsenter %s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// StateFile is the path of the machine's machined state file.
func (m *Machine) StateFile() string { return filepath.Join(StateDir, m.Name) }

// Cgroups are the machine's unit-named cgroup directories (one per hierarchy).
func (m *Machine) Cgroups() []string { return append([]string(nil), m.cgroups...) }

// Scratch is the directory holding the overlay and the log; Close removes it.
func (m *Machine) Scratch() string { return m.scratch }

// Close stops the machine if it still runs (SIGKILL to its leader, then
// to everything in its cgroup) and removes all it left: the state file,
// the cgroups in every hierarchy, the overlay mount and the scratch
// directory. It is safe to call more than once.
func (m *Machine) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Machine) close() error {
	var errs []error
	if m.cmd != nil && !m.Exited() {
		// The leader (PID 1 inside) takes SIGKILL from the host; nspawn then
		// exits and unregisters the machine.
		if m.pidfd >= 0 {
			unix.PidfdSendSignal(m.pidfd, unix.SIGKILL, nil, 0)
		}
		select {
		case <-m.done:
		case <-time.After(15 * time.Second):
			killCgroup(m.cgroups[0])
			select {
			case <-m.done:
			case <-time.After(10 * time.Second):
				errs = append(errs, fmt.Errorf("systemd-nspawn %d survived SIGKILL", m.NspawnPID))
			}
		}
	}
	// Anything left in our cgroups is ours: kill it.
	for _, cg := range m.cgroups {
		if err := drainCgroup(cg, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if m.pidfd >= 0 {
		unix.Close(m.pidfd)
		m.pidfd = -1
	}
	if m.cgfd >= 0 {
		unix.Close(m.cgfd)
		m.cgfd = -1
	}
	if m.cmd != nil {
		if err := m.unregister(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, cg := range m.cgroups {
		if err := removeCgroup(cg); err != nil {
			errs = append(errs, err)
		}
	}
	// nspawn refuses to remove this one when /run is not a tmpfs.
	os.Remove(filepath.Join("/run/systemd/nspawn/propagate", m.Name))
	if m.scratch != "" {
		if err := removeTree(m.scratch); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("machinetest: cleaning up machine %s: %w", m.Name, err)
	}
	return nil
}

// unregister makes sure machined has forgotten the machine: nspawn
// unregisters it when it exits normally; after a SIGKILL ask machined.
func (m *Machine) unregister() error {
	path := m.StateFile()
	gone := func() bool {
		_, err := os.Lstat(path)
		return errors.Is(err, os.ErrNotExist)
	}
	for end := time.Now().Add(2 * time.Second); !gone() && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	if gone() {
		return nil
	}
	out, err := exec.Command("busctl", "--system", "call", "org.freedesktop.machine1", "/org/freedesktop/machine1",
		"org.freedesktop.machine1.Manager", "UnregisterMachine", "s", m.Name).CombinedOutput()
	for end := time.Now().Add(5 * time.Second); !gone() && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	if !gone() {
		return fmt.Errorf("state file %s still there (UnregisterMachine: %v %s)", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// killCgroup SIGKILLs every process in cg and below (cgroup.kill on
// cgroup2; each PID of cgroup.procs on v1).
func killCgroup(cg string) {
	if err := os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0); err == nil {
		return
	}
	filepath.WalkDir(cg, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		for _, pid := range cgroupPIDs(p) {
			unix.Kill(pid, unix.SIGKILL)
		}
		return nil
	})
}

// cgroupPIDs lists the processes directly in one cgroup directory.
func cgroupPIDs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// populated reports whether any process is in cg or below.
func populated(cg string) bool {
	any := false
	filepath.WalkDir(cg, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && len(cgroupPIDs(p)) > 0 {
			any = true
		}
		return nil
	})
	return any
}

// drainCgroup kills whatever is left in cg and waits until it is empty.
func drainCgroup(cg string, limit time.Duration) error {
	if _, err := os.Stat(cg); err != nil {
		return nil
	}
	deadline := time.Now().Add(limit)
	for populated(cg) {
		killCgroup(cg)
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s still has processes after %v", cg, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// removeCgroup removes cg and its sub-cgroups (nspawn leaves payload/ and
// supervisor/), deepest first. It fails if a process is still in them.
func removeCgroup(cg string) error {
	if _, err := os.Stat(cg); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var dirs []string
	filepath.WalkDir(cg, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		var err error
		for try := 0; try < 50; try++ { // a just-emptied cgroup may be busy for a moment
			if err = unix.Rmdir(dirs[i]); err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}
