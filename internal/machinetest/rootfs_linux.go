package machinetest

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Kind names a root file system recipe.
type Kind string

// The recipes. Every machine started from them writes the file
// ReadyMarker once its init is up (a service under runit, s6, OpenRC or
// systemd; a respawn entry of busybox init).
const (
	// Busybox is a static busybox with its applet links, os-release,
	// passwd, group and an inittab (about 2 MB, under a second).
	Busybox Kind = "busybox"
	// Bookworm is Debian 12 minbase with systemd, systemd-sysv, dbus,
	// runit, s6 and openrc, one test service configured for each.
	Bookworm Kind = "bookworm"
	// Trixie is Debian 13 minbase with systemd 257, dbus and
	// systemd-container (so machines can be nested inside it).
	Trixie Kind = "trixie"
)

// ReadyMarker is the file (inside the machine) its test service creates.
const ReadyMarker = "/run/nspawntest-ready"

// recipeVersion changes whenever the Go code that builds a rootfs changes
// in a way the recipe data does not show.
const recipeVersion = "3"

// DefaultCacheDir is where built root file systems are kept unless
// NSPAWN_TOOLS_TEST_CACHE names another directory.
const DefaultCacheDir = "/var/cache/nspawn-tools-test"

// CacheDir is the directory root file systems are cached in.
func CacheDir() string {
	if d := os.Getenv("NSPAWN_TOOLS_TEST_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// file is one file a recipe writes after the base is in place. A mode
// with os.ModeSymlink makes a symlink to data; append adds to a file.
type file struct {
	path   string
	mode   os.FileMode
	data   string
	append bool
}

type recipe struct {
	kind        Kind
	suite       string   // debootstrap suite, "" for busybox
	include     []string // debootstrap --include
	files       []file
	remove      []string
	fingerprint string // identity of inputs outside the recipe (the busybox binary)
}

// key is the cache directory name: kind plus a hash of everything that
// goes into the build.
func (r *recipe) key() string {
	h := sha256.New()
	fmt.Fprintf(h, "version %s\nkind %s\nsuite %s\ninclude %q\nremove %q\nfingerprint %s\n",
		recipeVersion, r.kind, r.suite, r.include, r.remove, r.fingerprint)
	for _, f := range r.files {
		fmt.Fprintf(h, "file %q %o %v %q\n", f.path, uint32(f.mode), f.append, f.data)
	}
	return string(r.kind) + "-" + hex.EncodeToString(h.Sum(nil))[:16]
}

const serviceScript = `#!/bin/sh
touch ` + ReadyMarker + `
exec sleep infinity
`

const openrcScript = `#!/sbin/openrc-run
description="nspawn-tools test service"
command=/bin/sleep
command_args=infinity
command_background=yes
pidfile=/run/nspawntest.pid
start_post() {
	touch ` + ReadyMarker + `
}
`

const systemdUnit = `[Unit]
Description=nspawn-tools test service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/touch ` + ReadyMarker + `

[Install]
WantedBy=multi-user.target
`

func recipeFor(kind Kind) (*recipe, error) {
	switch kind {
	case Busybox:
		sum, err := fileSHA256("/bin/busybox")
		if err != nil {
			return nil, fmt.Errorf("machinetest: busybox rootfs needs /bin/busybox (busybox-static): %w", err)
		}
		return &recipe{
			kind:        kind,
			fingerprint: "busybox " + sum,
			files: []file{
				{path: "/etc/os-release", mode: 0o644, data: "ID=busybox\nNAME=BusyBox\nPRETTY_NAME=\"BusyBox test rootfs\"\n"},
				{path: "/etc/passwd", mode: 0o644, data: "root:x:0:0:root:/root:/bin/sh\n"},
				{path: "/etc/group", mode: 0o644, data: "root:x:0:\n"},
				{path: "/etc/inittab", mode: 0o644, data: "::sysinit:/bin/echo nspawntest: sysinit\n" +
					"::respawn:/bin/sh -c 'touch " + ReadyMarker + "; exec sleep 2147483647'\n" +
					"::shutdown:/bin/echo nspawntest: shutdown\n"},
			},
		}, nil
	case Bookworm:
		return &recipe{
			kind:    kind,
			suite:   "bookworm",
			include: []string{"systemd", "systemd-sysv", "dbus", "runit", "s6", "openrc"},
			remove:  []string{"/etc/hostname"},
			files: []file{
				// an empty machine-id: each boot gets its own (nspawn picks one)
				{path: "/etc/machine-id", mode: 0o444, data: ""},
				// runit: Debian's stages; stage 2 runs runsvdir on /etc/service
				{path: "/etc/sv/nspawntest/run", mode: 0o755, data: serviceScript},
				{path: "/etc/runit/runsvdir/default/nspawntest", mode: os.ModeSymlink, data: "/etc/sv/nspawntest"},
				// s6-svscan as PID 1 on /etc/s6-scan
				{path: "/etc/s6-scan/nspawntest/run", mode: 0o755, data: serviceScript},
				{path: "/etc/s6-scan/.s6-svscan/finish", mode: 0o755, data: "#!/bin/sh\necho nspawntest: s6-svscan finish\nexit 0\n"},
				// OpenRC: one service in the default runlevel
				{path: "/etc/init.d/nspawntest", mode: 0o755, data: openrcScript},
				{path: "/etc/runlevels/default/nspawntest", mode: os.ModeSymlink, data: "/etc/init.d/nspawntest"},
				{path: "/etc/rc.conf", append: true, data: "\n# nspawn-tools test\nrc_sys=\"systemd-nspawn\"\n"},
				// systemd
				{path: "/etc/systemd/system/nspawntest.service", mode: 0o644, data: systemdUnit},
				{path: "/etc/systemd/system/multi-user.target.wants/nspawntest.service", mode: os.ModeSymlink, data: "/etc/systemd/system/nspawntest.service"},
			},
		}, nil
	case Trixie:
		return &recipe{
			kind:    kind,
			suite:   "trixie",
			include: []string{"systemd", "systemd-sysv", "dbus", "systemd-container"},
			remove:  []string{"/etc/hostname"},
			files: []file{
				{path: "/etc/machine-id", mode: 0o444, data: ""},
				{path: "/etc/systemd/system/nspawntest.service", mode: 0o644, data: systemdUnit},
				{path: "/etc/systemd/system/multi-user.target.wants/nspawntest.service", mode: os.ModeSymlink, data: "/etc/systemd/system/nspawntest.service"},
			},
		}, nil
	}
	return nil, fmt.Errorf("machinetest: unknown rootfs kind %q", kind)
}

// Rootfs returns the directory of a built root file system of the given
// kind, building it into the cache first if needed. Builds are atomic (a
// temporary directory renamed into place) and serialised between
// processes with a lock file. Never write into the returned directory:
// machines run on a throwaway overlay of it.
func Rootfs(kind Kind, logf Logf) (string, error) {
	r, err := recipeFor(kind)
	if err != nil {
		return "", err
	}
	cache := CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("machinetest: %w", err)
	}
	key := r.key()
	final := filepath.Join(cache, key)
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	lk, err := unix.Open(filepath.Join(cache, "."+key+".lock"), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", fmt.Errorf("machinetest: %w", err)
	}
	defer unix.Close(lk)
	if err := unix.Flock(lk, unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("machinetest: lock rootfs cache: %w", err)
	}
	if _, err := os.Stat(final); err == nil {
		return final, nil // another process built it meanwhile
	}
	tmp := filepath.Join(cache, ".tmp-"+key)
	if err := removeTree(tmp); err != nil { // left by an interrupted build
		return "", err
	}
	logf.printf("machinetest: building %s rootfs into %s", kind, final)
	t0 := time.Now()
	err = r.build(tmp)
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		removeTree(tmp)
		return "", fmt.Errorf("machinetest: build %s rootfs: %w", kind, err)
	}
	logf.printf("machinetest: built %s rootfs in %v (%s)", kind, time.Since(t0).Round(10*time.Millisecond), duSize(final))
	return final, nil
}

func (r *recipe) build(dir string) error {
	if r.suite == "" {
		if err := buildBusybox(dir); err != nil {
			return err
		}
	} else if err := debootstrap(dir, r.suite, r.include); err != nil {
		return err
	}
	for _, p := range r.remove {
		if err := os.Remove(filepath.Join(dir, p)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	for _, f := range r.files {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		switch {
		case f.mode&os.ModeSymlink != 0:
			os.Remove(p)
			if err := os.Symlink(f.data, p); err != nil {
				return err
			}
		case f.append:
			fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				return err
			}
			_, err = fh.WriteString(f.data)
			if e := fh.Close(); err == nil {
				err = e
			}
			if err != nil {
				return err
			}
		default:
			os.Remove(p)
			if err := os.WriteFile(p, []byte(f.data), f.mode.Perm()); err != nil {
				return err
			}
			if err := os.Chmod(p, f.mode.Perm()); err != nil {
				return err
			}
		}
	}
	return nil
}

func buildBusybox(dir string) error {
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "root", "usr/bin", "usr/sbin", "var"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	if err := copyFile("/bin/busybox", filepath.Join(dir, "bin/busybox"), 0o755); err != nil {
		return err
	}
	out, err := exec.Command("/bin/busybox", "--list-full").Output()
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		p := filepath.Join(dir, applet)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.Symlink("/bin/busybox", p); err != nil {
			return err
		}
	}
	return nil
}

func debootstrap(dir, suite string, include []string) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return err
	}
	mirror, err := Mirror()
	if err != nil {
		return err
	}
	logPath := dir + ".log"
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer os.Remove(logPath)
	defer logf.Close()
	args := []string{"--variant=minbase"}
	if len(include) > 0 {
		args = append(args, "--include="+strings.Join(include, ","))
	}
	args = append(args, suite, dir, mirror)
	cmd := exec.Command("debootstrap", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		unmountUnder(dir)
		log, _ := os.ReadFile(logPath)
		return fmt.Errorf("debootstrap %s: %w\n%s", strings.Join(args, " "), err, tail(string(log), 30))
	}
	return unmountUnder(dir)
}

var mirrorRE = regexp.MustCompile(`^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?(?:\s|$)`)

// Mirror is the Debian mirror to debootstrap from: NSPAWN_TOOLS_TEST_MIRROR,
// else the first .../debian URI of the host's apt sources.
func Mirror() (string, error) {
	if m := os.Getenv("NSPAWN_TOOLS_TEST_MIRROR"); m != "" {
		return m, nil
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	more, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	files = append(append(files, more...), "/etc/apt/sources.list")
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if m := mirrorRE.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
				f.Close()
				return m[1], nil
			}
		}
		f.Close()
	}
	return "", errors.New("machinetest: no Debian mirror in the apt sources; set NSPAWN_TOOLS_TEST_MIRROR")
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount at or below dir.
func unmountUnder(dir string) error {
	var errs []error
	for _, mp := range mountsUnder(dir) {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// removeTree unmounts whatever is mounted below dir, then removes it; it
// refuses to remove a tree that still has mounts in it.
func removeTree(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unmountUnder(dir); err != nil {
		return err
	}
	if m := mountsUnder(dir); len(m) > 0 {
		return fmt.Errorf("machinetest: not removing %s: still mounted: %v", dir, m)
	}
	return os.RemoveAll(dir)
}

func duSize(dir string) string {
	out, err := exec.Command("du", "-sh", dir).Output()
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(out)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
