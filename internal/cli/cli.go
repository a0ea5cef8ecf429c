// Package cli is the command-line glue both programs share: parsing with
// kong (usage errors exit 2), and messages on stderr that read well on a
// terminal and in the journal.
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

	"github.com/alecthomas/kong"
	"github.com/nspawn-tools/nspawn-tools/leader"
	"golang.org/x/sys/unix"
)

// ExitUsage is the exit status for a command line that does not parse.
const ExitUsage = 2

// extras are the options both programs have beside their own.
type extras struct {
	Version    kong.VersionFlag `help:"Print the version, the commit it was built from and the Go version, and exit."`
	List       bool             `name:"list" help:"Print the names of the running machines, one a line, and exit."`
	JSON       bool             `name:"json" help:"With --list: print the machines as JSON (name, leader, class, service, root, unit, id)."`
	Completion string           `name:"completion" placeholder:"SHELL" enum:"bash,zsh,fish," default:"" help:"Print a completion script for bash, zsh or fish, and exit."`
	Man        bool             `name:"man" hidden:"" help:"Print the man page (roff) and exit."`
}

// ParseDoc parses args (without the program name) into grammar, a kong
// struct, with doc as its help. It handles the shared options --help, --version,
// --list, --json, --completion and --man, which exit 0. A usage error
// prints one line and a hint and exits ExitUsage.
func ParseDoc(doc *Doc, grammar any, args []string, opts ...kong.Option) *kong.Context {
	CheckOpenFiles(doc.Name)
	var x extras
	parser, err := newParser(doc, grammar, &x, opts...)
	if err != nil {
		panic(err) // a broken grammar is a programming error
	}
	ctx, err := parser.Parse(args)
	if err != nil {
		msg := New(doc.Name)
		msg.Error("%v", err)
		msg.Hint("see '%s --help'", doc.Name)
		os.Exit(ExitUsage)
	}
	switch {
	case x.Man:
		fmt.Print(doc.ManPage(parser.Model))
	case x.Completion != "":
		script, err := Completion(x.Completion, doc.Name, parser.Model)
		if err != nil {
			New(doc.Name).Error("%v", err)
			os.Exit(ExitUsage)
		}
		fmt.Print(script)
	case x.List:
		if err := printMachines(os.Stdout, x.JSON); err != nil {
			New(doc.Name).Error("%v", err)
			os.Exit(1)
		}
	case x.JSON:
		New(doc.Name).Error("--json goes with --list")
		os.Exit(ExitUsage)
	default:
		return ctx
	}
	os.Exit(0)
	return nil
}

// NewParser returns the kong parser ParseDoc uses for grammar, shared
// options included; for tests that compare another parser with it.
func NewParser(doc *Doc, grammar any, opts ...kong.Option) (*kong.Kong, error) {
	return newParser(doc, grammar, new(extras), opts...)
}

func newParser(doc *Doc, grammar any, x *extras, opts ...kong.Option) (*kong.Kong, error) {
	opts = append([]kong.Option{
		kong.Name(doc.Name),
		kong.Description(doc.help()),
		kong.Exit(os.Exit),
		kong.Vars{"version": Version(doc.Name)},
		kong.ConfigureHelp(kong.HelpOptions{Compact: true, NoExpandSubcommands: true}),
		kong.Embed(x),
	}, opts...)
	return kong.New(grammar, opts...)
}

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
