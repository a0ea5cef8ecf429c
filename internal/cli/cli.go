// Package cli is the command-line glue both programs share, without kong
// (whose package initialisation every start of a program that links it
// pays): the shared options, usage errors (exit 2), and messages on stderr
// that read well on a terminal and in the journal. Package kongcli parses
// with kong and renders help, man page and completion scripts from its
// model.
package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/nspawn-tools/nspawn-tools/leader"
	"golang.org/x/sys/unix"
)

// ExitUsage is the exit status for a command line that does not parse.
const ExitUsage = 2

// MinOpenFiles is the lowest limit on open files the programs work with;
// below it the Go runtime itself may fail to start its poller, and dies.
const MinOpenFiles = 32

// CheckOpenFiles exits with a clear message (status 125) when the limit on
// open files is below MinOpenFiles. The Go runtime has raised the soft
// limit to the hard one at start, so that is what is compared.
func CheckOpenFiles(prog string) {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur < MinOpenFiles {
		msg := New(prog)
		msg.Error("the limit on open files is %d; %s needs at least %d", lim.Cur, prog, MinOpenFiles)
		msg.Hint("raise it, e.g. with ulimit -n %d", MinOpenFiles*64)
		os.Exit(125)
	}
}

// Version is "PROG VERSION (commit C[, modified], GOVERSION)" from the
// build information the Go toolchain embeds.
func Version(prog string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return prog + " (no build information)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
			if len(rev) > 12 {
				rev = rev[:12]
			}
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if rev == "" {
		rev = "unknown"
	}
	return fmt.Sprintf("%s %s (commit %s%s, %s)", prog, v, rev, modified, bi.GoVersion)
}

// Shared are the options both programs have beside their own (--help and
// --version aside, which print and exit as soon as they are read).
type Shared struct {
	List, JSON, Man bool
	Completion      string // a shell, or "" for none
}

// DoShared does what s asks for: print the man page, a completion script
// or the running machines, and exit. It returns only when s asks for none
// of them. --json without --list is a usage error.
func DoShared(prog string, s Shared, man func() string, completion func(shell string) (string, error)) {
	switch {
	case s.Man:
		fmt.Print(man())
	case s.Completion != "":
		script, err := completion(s.Completion)
		if err != nil {
			New(prog).Error("%v", err)
			os.Exit(ExitUsage)
		}
		fmt.Print(script)
	case s.List:
		if err := printMachines(os.Stdout, s.JSON); err != nil {
			New(prog).Error("%v", err)
			os.Exit(1)
		}
	case s.JSON:
		New(prog).Error("--json goes with --list")
		os.Exit(ExitUsage)
	default:
		return
	}
	os.Exit(0)
}

// UsageError reports a command line that does not parse, with a hint,
// and exits ExitUsage.
func UsageError(prog string, err error) {
	msg := New(prog)
	msg.Error("%v", err)
	msg.Hint("see '%s --help'", prog)
	os.Exit(ExitUsage)
}

// printMachines writes the running machines: names one a line, or JSON.
func printMachines(w io.Writer, asJSON bool) error {
	machines := leader.Machines(nil)
	if !asJSON {
		for _, m := range machines {
			fmt.Fprintln(w, m.Name)
		}
		return nil
	}
	type machine struct {
		Name    string `json:"name"`
		Leader  int    `json:"leader"`
		Class   string `json:"class,omitempty"`
		Service string `json:"service,omitempty"`
		Root    string `json:"root,omitempty"`
		Unit    string `json:"unit,omitempty"`
		ID      string `json:"id,omitempty"`
	}
	out := []machine{}
	for _, m := range machines {
		out = append(out, machine{m.Name, m.Leader, m.Class, m.Service, m.Root, m.Scope, m.ID})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// Messages writes a program's one-line messages to stderr. When stderr is
// the journal (systemd sets JOURNAL_STREAM to its device:inode), each line
// carries an sd-daemon priority prefix such as "<3>".
type Messages struct {
	Prog string
	W    io.Writer
	// journal: stderr is the journal; checked at the first line, not in
	// New: most runs print nothing, and the first Getenv copies the whole
	// environment.
	checked, journal bool
}

// New returns Messages for prog on stderr.
func New(prog string) *Messages {
	return &Messages{Prog: prog, W: os.Stderr}
}

// Syslog priorities used as sd-daemon prefixes.
const (
	prioErr     = 3
	prioWarning = 4
	prioNotice  = 5
	prioInfo    = 6
)

func (m *Messages) line(prio int, kind, format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	text = strings.ReplaceAll(text, "\n", " ")
	prefix := ""
	if !m.checked {
		m.checked, m.journal = true, isJournal(os.Stderr)
	}
	if m.journal {
		prefix = "<" + strconv.Itoa(prio) + ">"
	}
	if kind != "" {
		kind += ": "
	}
	fmt.Fprintf(m.W, "%s%s: %s%s\n", prefix, m.Prog, kind, text)
}

// Error writes "prog: error: ...".
func (m *Messages) Error(format string, args ...any) { m.line(prioErr, "error", format, args...) }

// Hint writes "prog: hint: ...", advice that follows an error.
func (m *Messages) Hint(format string, args ...any) { m.line(prioNotice, "hint", format, args...) }

// Warning writes "prog: warning: ...".
func (m *Messages) Warning(format string, args ...any) {
	m.line(prioWarning, "warning", format, args...)
}

// Info writes "prog: ...", one event on a line.
func (m *Messages) Info(format string, args ...any) { m.line(prioInfo, "", format, args...) }

// isJournal reports whether f is the stream JOURNAL_STREAM names.
func isJournal(f *os.File) bool {
	v := os.Getenv("JOURNAL_STREAM")
	dev, ino, ok := strings.Cut(v, ":")
	if !ok {
		return false
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	return strconv.FormatUint(st.Dev, 10) == dev && strconv.FormatUint(st.Ino, 10) == ino
}

// NotRoot reports whether err comes from a missing privilege, for a hint.
func NotRoot(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}
