package main_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nspawn-tools/nspawn-tools/internal/nstest"
	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
	"golang.org/x/sys/unix"
)

// terminal is a pseudo-terminal pair of the test's own, standing for the
// terminal of a user who runs nspawn-enter: the program runs on slave, the
// test types into and reads from master.
type terminal struct {
	master *os.File
	mfd    int
	slave  *os.File
	sfd    int

	mu       sync.Mutex
	out      bytes.Buffer // all that came out of master
	readDone chan struct{}
	reading  sync.Mutex // held: the test reads nothing, like a slow terminal
}

// newTerminal opens a pty pair with the given window size.
func newTerminal(t *testing.T, rows, cols uint16) *terminal {
	t.Helper()
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		testenv.Unavailable(t, "open /dev/ptmx: %v", err)
	}
	// A non-blocking descriptor makes a pollable os.File: Close ends a Read.
	tm := &terminal{master: os.NewFile(uintptr(mfd), "ptmx"), mfd: mfd, readDone: make(chan struct{})}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		tm.master.Close()
		t.Fatalf("unlock pty: %v", err)
	}
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		tm.master.Close()
		t.Fatalf("TIOCGPTPEER: %v", errno)
	}
	tm.slave, tm.sfd = os.NewFile(sfd, "pts"), int(sfd)
	tm.setSize(t, rows, cols)
	go func() {
		defer close(tm.readDone)
		buf := make([]byte, 4096)
		for {
			tm.reading.Lock()
			n, err := tm.master.Read(buf)
			tm.reading.Unlock()
			tm.mu.Lock()
			tm.out.Write(buf[:n])
			tm.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		tm.master.Close()
		tm.slave.Close()
		<-tm.readDone
	})
	return tm
}

func (tm *terminal) setSize(t *testing.T, rows, cols uint16) {
	t.Helper()
	if err := unix.IoctlSetWinsize(tm.mfd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatalf("TIOCSWINSZ: %v", err)
	}
}

// output returns all the program wrote so far.
func (tm *terminal) output() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.String()
}

// waitFor waits (bounded) until the output contains s.
func (tm *terminal) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(runTimeout)
	for !strings.Contains(tm.output(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("%q did not come out within %v; output so far:\n%q", s, runTimeout, tm.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// typeIn writes s to the terminal as if typed.
func (tm *terminal) typeIn(t *testing.T, s string) {
	t.Helper()
	if _, err := tm.master.Write([]byte(s)); err != nil {
		t.Fatalf("type %q: %v", s, err)
	}
}

// termios returns the terminal's modes.
func (tm *terminal) termios(t *testing.T) unix.Termios {
	t.Helper()
	tio, err := unix.IoctlGetTermios(tm.sfd, unix.TCGETS)
	if err != nil {
		t.Fatalf("TCGETS: %v", err)
	}
	return *tio
}

// checkRestored fails the test if the terminal's modes are not initial.
func (tm *terminal) checkRestored(t *testing.T, initial unix.Termios) {
	t.Helper()
	if after := tm.termios(t); after != initial {
		t.Errorf("the caller's terminal was not restored:\n before %+v\n  after %+v", initial, after)
	}
}

// queued returns how many bytes of input wait to be read on the terminal:
// what a program that reads the terminal (the user's shell) would get.
func (tm *terminal) queued(t *testing.T) int {
	t.Helper()
	n, err := unix.IoctlGetInt(tm.sfd, unix.TIOCINQ) // FIONREAD
	if err != nil {
		t.Fatalf("TIOCINQ: %v", err)
	}
	return n
}

// start runs prog on the terminal as a user's shell would: in a session of
// its own whose controlling terminal it is, with stdin, stdout and stderr
// on it.
func (tm *terminal) start(t *testing.T, prog string, args ...string) *session {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Env = append(env, "TERM=xterm")
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tm.slave, tm.slave, tm.slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &session{cmd: cmd, tm: tm, waited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(s.waited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.waited:
		default:
			_ = cmd.Process.Kill() // ours, by pid
			<-s.waited
		}
	})
	return s
}

// session is nspawn-enter running on a terminal.
type session struct {
	cmd    *exec.Cmd
	tm     *terminal
	waited chan struct{}
}

// wait waits (bounded) for nspawn-enter to end and says how: "exit N" or
// "signal NAME".
func (s *session) wait(t *testing.T) string {
	t.Helper()
	select {
	case <-s.waited:
	case <-time.After(runTimeout):
		_ = s.cmd.Process.Kill()
		<-s.waited
		t.Fatalf("%s: did not exit within %v; output:\n%q", s.cmd, runTimeout, s.tm.output())
	}
	return result{state: s.cmd.ProcessState}.status()
}

// lines returns the output's lines, without their "\r\n".
func lines(out string) []string {
	return strings.Split(strings.TrimSuffix(strings.ReplaceAll(out, "\r\n", "\n"), "\n"), "\n")
}

// TestPTY runs nspawn-enter on a terminal, where it gives the command a
// terminal of the target's own devpts and relays to the caller's.
func TestPTY(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	var hostPts unix.Stat_t
	if err := unix.Stat("/dev/pts", &hostPts); err != nil {
		t.Fatal(err)
	}

	for _, spec := range []nstest.Spec{{Name: "pty"}, {Name: "pty-user", User: true}} {
		t.Run(spec.Name, func(t *testing.T) {
			tg := nstest.Start(t, spec)
			var targetPts unix.Stat_t
			if err := unix.Stat(tg.Path("/dev/pts"), &targetPts); err != nil {
				t.Fatal(err)
			}
			if targetPts.Dev == hostPts.Dev {
				t.Fatalf("the target's /dev/pts is the host's (device %d): the test would prove nothing", hostPts.Dev)
			}

			// The command's stdin, stdout and stderr are one pty of the
			// target's devpts, its controlling terminal in a session of
			// its own.
			t.Run("machine's own terminal", func(t *testing.T) {
				tm := newTerminal(t, 40, 120)
				before := children(t)
				s := tm.start(t, enter, enterArgs(tg.PID, nil, "/bin/sh", "-c",
					`tty; stat -L -c %d /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2; stat -c %d /dev/pts
read -r pid comm state ppid pgrp sid ttynr rest </proc/self/stat; echo "$sid $ttynr $$"; echo end`)...)
				status := s.wait(t)
				checkNoStrays(t, before, tg)
				tm.waitFor(t, "end\r\n")
				out := lines(tm.output())
				if status != "exit 0" || len(out) != 7 {
					t.Fatalf("want exit 0 and 7 lines: %s\n%q", status, tm.output())
				}
				if !regexp.MustCompile(`^/dev/pts/[0-9]+$`).MatchString(out[0]) {
					t.Errorf("tty says %q, want /dev/pts/N", out[0])
				}
				want := strconv.FormatUint(targetPts.Dev, 10)
				for i, name := range []string{"stdin", "stdout", "stderr", "/dev/pts inside"} {
					if out[i+1] != want {
						t.Errorf("%s is on device %s; the target's devpts is %d, the host's %d", name, out[i+1], targetPts.Dev, hostPts.Dev)
					}
				}
				if f := strings.Fields(out[5]); len(f) != 3 || f[0] != f[2] || f[1] == "0" {
					t.Errorf("session, tty_nr, pid = %q: want a session of its own with a controlling terminal", out[5])
				}
			})

			// stty size inside follows the caller's window.
			t.Run("window size", func(t *testing.T) {
				tm := newTerminal(t, 40, 120)
				s := tm.start(t, enter, enterArgs(tg.PID, nil, "/bin/sh", "-c",
					`stty size; while read -r x; do stty size; done; echo bye`)...)
				// The size is the caller's from the start: the command may
				// ask at once.
				tm.waitFor(t, "\r\n")
				if first := tm.output(); !strings.HasPrefix(first, "40 120\r\n") {
					t.Fatalf("the first stty size said %q, want the caller's 40 120", first)
				}
				tm.setSize(t, 50, 100)
				// The kernel sends SIGWINCH to the terminal's foreground
				// group; send it too, as a terminal emulator would.
				if err := s.cmd.Process.Signal(syscall.SIGWINCH); err != nil {
					t.Fatal(err)
				}
				deadline := time.Now().Add(runTimeout)
				for !strings.Contains(tm.output(), "50 100\r\n") {
					if time.Now().After(deadline) {
						t.Fatalf("stty size never said 50 100:\n%q", tm.output())
					}
					tm.typeIn(t, "\r")
					time.Sleep(100 * time.Millisecond)
				}
				tm.typeIn(t, "\x04")
				if status := s.wait(t); status != "exit 0" {
					t.Errorf("want exit 0, got %s\n%q", status, tm.output())
				}
				tm.waitFor(t, "bye")
			})

			// ^C reaches the command through the machine's terminal, not
			// nspawn-enter: the caller's terminal is raw while it runs and
			// as it was afterwards.
			t.Run("Ctrl-C", func(t *testing.T) {
				tm := newTerminal(t, 40, 120)
				initial := tm.termios(t)
				before := children(t)
				s := tm.start(t, enter, enterArgs(tg.PID, nil, "/bin/sh", "-c", "echo ready; exec cat")...)
				tm.waitFor(t, "ready\r\n")
				if raw := tm.termios(t); raw.Lflag&(unix.ISIG|unix.ICANON|unix.ECHO) != 0 {
					t.Errorf("while the command runs the caller's terminal has lflag %#o: ISIG, ICANON or ECHO on", raw.Lflag)
				}
				tm.typeIn(t, "\x03")
				if status := s.wait(t); status != "signal interrupt" {
					t.Errorf("want nspawn-enter to end like cat, by SIGINT; got %s\n%q", status, tm.output())
				}
				checkNoStrays(t, before, tg)
				tm.checkRestored(t, initial)
			})

			// The command's shell traps SIGINT: ^C interrupts cat, and
			// nspawn-enter lives on to pass the shell's exit status.
			t.Run("Ctrl-C trapped", func(t *testing.T) {
				tm := newTerminal(t, 40, 120)
				initial := tm.termios(t)
				// "ready" comes from the process that becomes cat, so that
				// ^C cannot reach the shell alone, before cat runs.
				s := tm.start(t, enter, enterArgs(tg.PID, nil, "/bin/sh", "-c", `trap "echo caught" INT; /bin/sh -c 'echo ready; exec cat'; echo after; exit 5`)...)
				tm.waitFor(t, "ready\r\n")
				tm.typeIn(t, "\x03")
				if status := s.wait(t); status != "exit 5" {
					t.Errorf("want exit 5, got %s\n%q", status, tm.output())
				}
				tm.waitFor(t, "after\r\n")
				if !strings.Contains(tm.output(), "caught\r\n") {
					t.Errorf("the shell did not catch SIGINT:\n%q", tm.output())
				}
				tm.checkRestored(t, initial)
			})

			// The terminal is restored when the command is killed, and when
			// nspawn-enter is told to stop.
			for _, c := range []struct {
				name, script string
				signal       syscall.Signal // sent to nspawn-enter after ready
				want         string
			}{
				{"command killed", "echo ready; kill -KILL $$", 0, "signal killed"},
				{"nspawn-enter terminated", "echo ready; exec cat", syscall.SIGTERM, "signal terminated"},
				{"nspawn-enter hung up", "echo ready; exec cat", syscall.SIGHUP, "signal hangup"},
			} {
				t.Run(c.name, func(t *testing.T) {
					tm := newTerminal(t, 40, 120)
					initial := tm.termios(t)
					before := children(t)
					s := tm.start(t, enter, enterArgs(tg.PID, nil, "/bin/sh", "-c", c.script)...)
					tm.waitFor(t, "ready\r\n")
					if c.signal != 0 {
						if err := s.cmd.Process.Signal(c.signal); err != nil {
							t.Fatal(err)
						}
					}
					if status := s.wait(t); status != c.want {
						t.Errorf("want %s, got %s\n%q", c.want, status, tm.output())
					}
					checkNoStrays(t, before, tg)
					tm.checkRestored(t, initial)
				})
			}

			// Stdout not a terminal: no pty, the bytes pass unchanged.
			t.Run("byte-exact output", func(t *testing.T) {
				tm := newTerminal(t, 40, 120)
				initial := tm.termios(t)
				want, err := os.ReadFile("/usr/bin/stat")
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range []struct {
					cmd  string
					want string
				}{
					{`printf 'a\r\nb\000c'`, "a\r\nb\x00c"},
					{`cat /usr/bin/stat`, string(want)},
				} {
					cmd := exec.Command(enter, enterArgs(tg.PID, nil, "/bin/sh", "-c", c.cmd)...)
					cmd.Env = append(env, "TERM=xterm")
					cmd.Stdin = tm.slave // a terminal, but stdout is not
					var stdout, stderr bytes.Buffer
					cmd.Stdout, cmd.Stderr = &stdout, &stderr
					cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
					cmd.WaitDelay = 5 * time.Second
					done := make(chan error, 1)
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					go func() { done <- cmd.Wait() }()
					select {
					case err := <-done:
						if err != nil || stdout.String() != c.want || stderr.Len() != 0 {
							t.Errorf("%q: %v, %d bytes, want %d; stderr %q; first bytes %q", c.cmd, err, stdout.Len(), len(c.want), stderr.String(), head(stdout.String()))
						}
					case <-time.After(runTimeout):
						_ = cmd.Process.Kill()
						<-done
						t.Fatalf("%q: did not finish within %v", c.cmd, runTimeout)
					}
				}
				if after := tm.termios(t); after != initial {
					t.Errorf("the caller's terminal changed:\n before %+v\n  after %+v", initial, after)
				}
			})

			// No command: the login shell, interactive on the machine's
			// terminal.
			t.Run("login shell", func(t *testing.T) {
				tm := newTerminal(t, 40, 120)
				initial := tm.termios(t)
				before := children(t)
				s := tm.start(t, enter, enterArgs(tg.PID, nil)...)
				tm.typeIn(t, "echo \"shell=$0 tty=$(tty)\"; exit 6\r")
				if status := s.wait(t); status != "exit 6" {
					t.Errorf("want exit 6, got %s\n%q", status, tm.output())
				}
				checkNoStrays(t, before, tg)
				tm.waitFor(t, "shell=-sh tty=/dev/pts/")
				tm.checkRestored(t, initial)
			})

			// --pty without a terminal: the command still gets one.
			t.Run("--pty from pipes", func(t *testing.T) {
				r := run(t, "", enter, enterArgs(tg.PID, []string{"--pty"}, "/bin/sh", "-c", "tty; exit 4")...)
				if r.status() != "exit 4" || !regexp.MustCompile(`^/dev/pts/[0-9]+\r\n$`).MatchString(r.stdout) {
					t.Errorf("want exit 4 and /dev/pts/N\n%v", r)
				}
			})
		})
	}
}

// TestPTYEnds checks the ends of a session on a pty: all the output the
// command wrote reaches the caller's terminal however slow it is, and the
// end of the caller's input reaches the command.
func TestPTYEnds(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	tg := nstest.Start(t, nstest.Spec{Name: "pty-ends", User: true})

	// A terminal that takes its time (a slow link, a serial console):
	// what the command wrote before it exited must all come out, however
	// long the caller's terminal blocks nspawn-enter's writes.
	t.Run("slow terminal", func(t *testing.T) {
		tm := newTerminal(t, 40, 120)
		tm.reading.Lock()
		held := true
		defer func() {
			if held {
				tm.reading.Unlock()
			}
		}()
		before := children(t)
		s := tm.start(t, enter, enterArgs(tg.PID, nil, "/bin/sh", "-c", `head -c 20000 /dev/zero | tr '\000' a; echo; echo END`)...)
		// Hold the terminal until the command has exited (nspawn-enter
		// has reaped it), and a while longer.
		deadline := time.Now().Add(runTimeout)
		for len(testenv.Descendants(t, s.cmd.Process.Pid)) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the command did not exit within %v", runTimeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Second)
		tm.reading.Unlock()
		held = false
		if status := s.wait(t); status != "exit 0" {
			t.Errorf("want exit 0, got %s", status)
		}
		checkNoStrays(t, before, tg)
		want := strings.Repeat("a", 20000) + "\r\nEND\r\n"
		// nspawn-enter has exited: what it passed on is in the terminal.
		deadline = time.Now().Add(5 * time.Second)
		for len(tm.output()) < len(want) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if out := tm.output(); out != want {
			t.Errorf("the terminal got %d bytes ending in %q; want %d ending in %q", len(out), out[max(0, len(out)-16):], len(want), want[len(want)-16:])
		}
	})

	// --pty with input from a pipe: at its end the command must see the
	// end of its input too, not wait for more forever.
	t.Run("--pty input ends", func(t *testing.T) {
		before := children(t)
		// Also when runIn gives up: the killed nspawn-enter leaves the
		// command to us, the subreaper, to reap.
		t.Cleanup(func() { checkNoStrays(t, before, tg) })
		r := runIn(t, env, quickTimeout, enter, enterArgs(tg.PID, []string{"--pty"}, "/bin/sh", "-c", "cat; echo cat-ended")...)
		if !strings.Contains(r.stdout, "cat-ended") {
			t.Errorf("want cat to see the end of its input\n%v", r)
		}
	})
}

func head(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// injectScript pushes "x\n" into the input of its terminal (fd 0, or
// /dev/tty) with TIOCSTI, then says how much input its terminal holds.
const injectScript = `import fcntl, struct, sys, termios
tty = None if sys.argv[1] == "fd0" else open("/dev/tty", "rb+", buffering=0)
fd = 0 if tty is None else tty.fileno()
for c in b"x\n":
    fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))
n = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
print("queued", n)
`

// TestPTYInjection checks that TIOCSTI from inside cannot push input into
// the caller's terminal: with --no-pty (the command shares the caller's
// terminal) it does, which shows the probe works; with the machine's own
// pty it lands there and the caller's terminal has nothing to read.
func TestPTYInjection(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		testenv.Unavailable(t, "needs /usr/bin/python3 (the target's /usr is the host's): %v", err)
	}
	if b, err := os.ReadFile("/proc/sys/dev/tty/legacy_tiocsti"); err == nil && strings.TrimSpace(string(b)) == "0" {
		testenv.Unavailable(t, "TIOCSTI is disabled here (dev.tty.legacy_tiocsti = 0): the probe cannot inject")
	}
	for _, spec := range []nstest.Spec{{Name: "tiocsti"}, {Name: "tiocsti-user", User: true}} {
		t.Run(spec.Name, func(t *testing.T) {
			tg := nstest.Start(t, spec)
			for _, via := range []string{"fd0", "tty"} {
				t.Run(via, func(t *testing.T) {
					t.Run("--no-pty", func(t *testing.T) {
						tm := newTerminal(t, 40, 120)
						s := tm.start(t, enter, enterArgs(tg.PID, []string{"--no-pty"}, "/usr/bin/python3", "-c", injectScript, via)...)
						if status := s.wait(t); status != "exit 0" {
							t.Fatalf("want exit 0, got %s\n%q", status, tm.output())
						}
						tm.waitFor(t, "queued 2")
						if n := tm.queued(t); n != 2 {
							t.Errorf("the caller's terminal holds %d bytes of input, want the 2 injected: the probe does not work", n)
						}
						if err := unix.IoctlSetInt(tm.sfd, unix.TCFLSH, unix.TCIFLUSH); err != nil {
							t.Fatal(err)
						}
					})
					t.Run("pty", func(t *testing.T) {
						tm := newTerminal(t, 40, 120)
						before := children(t)
						s := tm.start(t, enter, enterArgs(tg.PID, nil, "/usr/bin/python3", "-c", injectScript, via)...)
						if status := s.wait(t); status != "exit 0" {
							t.Fatalf("want exit 0, got %s\n%q", status, tm.output())
						}
						checkNoStrays(t, before, tg)
						// Injected into the machine's terminal, at once.
						tm.waitFor(t, "queued 2")
						if n := tm.queued(t); n != 0 {
							t.Errorf("the caller's terminal holds %d bytes of input injected from inside", n)
						}
					})
				})
			}
		})
	}
}

// TestPTYHostileDevpts gives a target a /dev/pts/ptmx, or a /dev/pts, that
// is a symlink which, followed from the host, leads to the host's devpts:
// nspawn-enter must refuse to make a pty there (exit 125), never hand the
// command a terminal of the host's.
func TestPTYHostileDevpts(t *testing.T) {
	enter := testenv.Binary(t, "nspawn-enter")
	nsenter := testenv.LookPath(t, "nsenter")
	var hostPts unix.Stat_t
	if err := unix.Stat("/dev/pts", &hostPts); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		setup string // run in the target's mount namespace
		check string // the path that, from the host, must lead to the host's devpts
	}{
		{"ptmx symlink", "mount -t tmpfs nstest-hostile /dev/pts && ln -s /dev/pts/ptmx /dev/pts/ptmx", "/dev/pts/ptmx"},
		{"pts symlink", "mount -t tmpfs nstest-hostile /dev && ln -s /dev/pts /dev/pts", "/dev/pts"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tg := nstest.Start(t, nstest.Spec{Name: "hostile-pts"})
			setup := exec.Command(nsenter, "-t", strconv.Itoa(tg.PID), "-m", "/bin/sh", "-c", c.setup)
			setup.Env = env
			if out, err := setup.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", setup, err, out)
			}
			var st unix.Stat_t
			if err := unix.Stat(tg.Path(c.check), &st); err != nil || st.Dev != hostPts.Dev {
				t.Fatalf("from the host, the target's %s is on device %d (%v), not the host's devpts %d: the test would prove nothing", c.check, st.Dev, err, hostPts.Dev)
			}
			for _, flags := range [][]string{{"--pty"}, {"--pty", "--no-mount"}} {
				t.Run(fmt.Sprintf("%q", flags), func(t *testing.T) {
					before := children(t)
					r := run(t, "", enter, enterArgs(tg.PID, flags, "/bin/sh", "-c", "tty; echo did-run")...)
					checkNoStrays(t, before, tg)
					if r.status() != "exit 125" || r.stdout != "" {
						t.Errorf("want exit 125 and no output\n%v", r)
					}
					if err := checkErrline(r.stderr); err != nil {
						t.Error(err)
					}
				})
			}
			// On a terminal, too: no fallback to the caller's.
			t.Run("on a terminal", func(t *testing.T) {
				tm := newTerminal(t, 40, 120)
				initial := tm.termios(t)
				s := tm.start(t, enter, enterArgs(tg.PID, nil, "/bin/sh", "-c", "tty; echo did-run")...)
				if status := s.wait(t); status != "exit 125" {
					t.Errorf("want exit 125, got %s\n%q", status, tm.output())
				}
				if strings.Contains(tm.output(), "did-run") {
					t.Errorf("the command ran:\n%q", tm.output())
				}
				if after := tm.termios(t); after != initial {
					t.Errorf("the caller's terminal changed:\n before %+v\n  after %+v", initial, after)
				}
			})
		})
	}
}
