package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
)

// TestTargets checks each kind of target: which namespaces are its own, its
// rootfs, hostname, PID 1, id mapping and clock offsets.
func TestTargets(t *testing.T) {
	self, err := Namespaces(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range []Spec{
		{Name: "plain"},
		{Name: "user", User: true},
		{Name: "time", Time: true},
		{Name: "usertime", User: true, Time: true},
	} {
		t.Run(spec.Name, func(t *testing.T) {
			tg := Start(t, spec)

			ns := tg.Namespaces(t)
			for _, k := range Kinds {
				own := k != "user" && k != "time" || k == "user" && spec.User || k == "time" && spec.Time
				if own == (ns[k] == self[k]) {
					t.Errorf("%s namespace %d, host's %d: want own=%v", k, ns[k], self[k], own)
				}
			}

			nspid, err := NSpid(tg.PID)
			if err != nil {
				t.Fatal(err)
			}
			if len(nspid) != 2 || nspid[0] != tg.PID || nspid[1] != 1 {
				t.Errorf("NSpid %v, want [%d 1]", nspid, tg.PID)
			}
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", tg.PID)); string(comm) != "sleep\n" {
				t.Errorf("PID 1 is %q, want sleep", comm)
			}

			marker, err := os.ReadFile(tg.Path("/etc/marker"))
			if err != nil || string(marker) != tg.Marker+"\n" || !strings.HasPrefix(tg.Marker, "marker-"+spec.Name+"-") {
				t.Errorf("marker %q (%v), Marker %q", marker, err, tg.Marker)
			}
			if _, err := os.Stat("/etc/marker"); err == nil {
				t.Errorf("the host has /etc/marker: the targets' markers would not be theirs")
			}
			if h, err := os.ReadFile(tg.Path("/etc/hostname")); err != nil || string(h) != spec.Name+"\n" {
				t.Errorf("/etc/hostname %q (%v)", h, err)
			}

			// The rootfs belongs to the target's root; alice's home to alice.
			base := uint32(tg.UIDShift)
			if spec.User && tg.UIDShift != UIDBase || !spec.User && tg.UIDShift != 0 {
				t.Errorf("UIDShift %d", tg.UIDShift)
			}
			for p, want := range map[string]uint32{"/": base, "/etc/marker": base, "/home/alice": base + 1000} {
				var st syscall.Stat_t
				if err := syscall.Stat(tg.Path(p), &st); err != nil {
					t.Errorf("stat %s: %v", p, err)
				} else if st.Uid != want || st.Gid != want {
					t.Errorf("%s owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, want, want)
				}
			}
			var st syscall.Stat_t
			if err := syscall.Stat(tg.Path("/tmp"), &st); err != nil || st.Mode&0o7777 != 0o1777 {
				t.Errorf("/tmp mode %o (%v)", st.Mode&0o7777, err)
			}
			if err := os.WriteFile(tg.Path("/usr/nstest-probe"), nil, 0o644); err == nil {
				os.Remove(tg.Path("/usr/nstest-probe"))
				t.Errorf("the target's /usr is writable")
			}

			tg.WriteFile(t, "/tmp/written", "data\n", 0o640)
			if err := syscall.Stat(tg.Path("/tmp/written"), &st); err != nil || st.Uid != base || st.Gid != base || st.Mode&0o7777 != 0o640 {
				t.Errorf("WriteFile: owner %d:%d mode %o (%v), want %d:%d 640", st.Uid, st.Gid, st.Mode&0o7777, err, base, base)
			}
			if b, err := os.ReadFile(tg.Path("/tmp/written")); err != nil || string(b) != "data\n" {
				t.Errorf("WriteFile wrote %q (%v)", b, err)
			}

			wantMap := "0 0 4294967295"
			if spec.User {
				wantMap = fmt.Sprintf("0 %d %d", UIDBase, IDCount)
			}
			for _, f := range []string{"uid_map", "gid_map"} {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", tg.PID, f))
				if got := strings.Join(strings.Fields(string(b)), " "); err != nil || got != wantMap {
					t.Errorf("%s %q (%v), want %q", f, got, err, wantMap)
				}
			}
			if spec.User {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/setgroups", tg.PID))
				if err != nil || string(b) != "allow\n" {
					t.Errorf("setgroups %q (%v), want allow", b, err)
				}
			}

			offsets, err := os.ReadFile(fmt.Sprintf("/proc/%d/timens_offsets", tg.PID))
			if err != nil {
				t.Fatal(err)
			}
			wantOffsets := "monotonic 0 0\nboottime 0 0\n"
			if spec.Time {
				wantOffsets = fmt.Sprintf("monotonic %d 0\nboottime %d 0\n",
					MonotonicOffset/time.Second, BoottimeOffset/time.Second)
			}
			if got := strings.Join(strings.Fields(string(offsets)), " "); got != strings.Join(strings.Fields(wantOffsets), " ") {
				t.Errorf("timens_offsets %q, want %q", offsets, wantOffsets)
			}
		})
	}
}

// TestTargetsFromInside looks at the targets with util-linux nsenter, the
// oracle the product is compared with: hostname, /etc, uptime, ids, lo.
func TestTargetsFromInside(t *testing.T) {
	nsenter := testenv.LookPath(t, "nsenter")
	hostUp := uptime(t)
	for _, spec := range []Spec{
		{Name: "plain"},
		{Name: "user", User: true},
		{Name: "time", Time: true},
	} {
		t.Run(spec.Name, func(t *testing.T) {
			tg := Start(t, spec)
			cmd := exec.Command(nsenter, "-t", strconv.Itoa(tg.PID), "-a", "/bin/sh", "-c",
				`hostname; cat /etc/marker; read up idle </proc/uptime; echo "${up%.*}"; id -u; pwd -P; ip -o link show lo`)
			cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", cmd, err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 6 {
				t.Fatalf("output %q", out)
			}
			if lines[0] != spec.Name || lines[1] != tg.Marker || lines[3] != "0" || lines[4] != "/" {
				t.Errorf("hostname, marker, uid, cwd = %q, want %q %q 0 /", lines, spec.Name, tg.Marker)
			}
			if !strings.Contains(lines[5], "LOOPBACK,UP") {
				t.Errorf("lo: %q, want it up", lines[5])
			}
			up, err := strconv.ParseInt(lines[2], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			// The boottime offset (two days) dwarfs the seconds between
			// the two readings: no timing is asserted here.
			shift := up - hostUp
			if spec.Time && shift < int64(BoottimeOffset/time.Second)-3600 || !spec.Time && (shift < -3600 || shift > 3600) {
				t.Errorf("uptime inside %d s, host %d s: time namespace=%v", up, hostUp, spec.Time)
			}
		})
	}
}

// TestCleanup checks that a stopped target leaves no process, mount or
// directory behind.
func TestCleanup(t *testing.T) {
	var tg *Target
	var scratch string
	t.Run("start", func(t *testing.T) {
		tg = Start(t, Spec{Name: "gone", User: true, Time: true})
		scratch = tg.scratch
		if _, err := os.Stat(scratch); err != nil {
			t.Fatal(err)
		}
	})
	if tg == nil || t.Failed() {
		t.FailNow()
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", tg.PID)); err == nil {
		t.Errorf("PID 1 (pid %d) still exists", tg.PID)
	}
	if _, err := os.Stat(scratch); !os.IsNotExist(err) {
		t.Errorf("scratch directory %s: %v, want it removed", scratch, err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), "nstest") {
		t.Errorf("nstest mounts left on the host:\n%s", mounts)
	}
}

func uptime(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	f, _, _ := strings.Cut(string(b), ".")
	up, err := strconv.ParseInt(f, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return up
}
