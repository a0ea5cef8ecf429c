// Package cli is the command-line glue both programs share: parsing with
// kong (usage errors exit 2), and messages on stderr that read well on a
// terminal and in the journal.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"
	"golang.org/x/sys/unix"
)

// ExitUsage is the exit status for a command line that does not parse.
const ExitUsage = 2

// Parse parses args (without the program name) into grammar, a kong struct.
// --help prints help and exits 0; a usage error prints one line and a hint
// and exits ExitUsage.
func Parse(name, description string, grammar any, args []string, opts ...kong.Option) *kong.Context {
	opts = append([]kong.Option{
		kong.Name(name),
		kong.Description(description),
		kong.Exit(os.Exit),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true, NoExpandSubcommands: true}),
	}, opts...)
	parser, err := kong.New(grammar, opts...)
	if err != nil {
		panic(err) // a broken grammar is a programming error
	}
	ctx, err := parser.Parse(args)
	if err != nil {
		msg := New(name)
		msg.Error("%v", err)
		msg.Hint("see '%s --help'", name)
		os.Exit(ExitUsage)
	}
	return ctx
}

// Messages writes a program's one-line messages to stderr. When stderr is
// the journal (systemd sets JOURNAL_STREAM to its device:inode), each line
// carries an sd-daemon priority prefix such as "<3>".
type Messages struct {
	Prog    string
	W       io.Writer
	journal bool
}

// New returns Messages for prog on stderr.
func New(prog string) *Messages {
	return &Messages{Prog: prog, W: os.Stderr, journal: isJournal(os.Stderr)}
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
