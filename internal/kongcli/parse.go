// Package kongcli is the part of the command-line glue that needs kong:
// parsing a command line with it (nspawn-stop), and rendering the help,
// the man page and the completion scripts from its model of a grammar.
// nspawn-enter does not link it: its parser is its own, checked against
// kong by its tests, and its texts are rendered here by a test and
// committed.
package kongcli

import (
	"bytes"
	"fmt"
	"os"

	"github.com/alecthomas/kong"
	"github.com/nspawn-tools/nspawn-tools/internal/cli"
)

// extras are the options both programs have beside their own.
type extras struct {
	Version    kong.VersionFlag `help:"Print the version, the commit it was built from and the Go version, and exit."`
	List       bool             `name:"list" help:"Print the names of the running machines, one a line, and exit."`
	JSON       bool             `name:"json" help:"With --list: print the machines as JSON (name, leader, class, service, root, unit, id)."`
	Completion string           `name:"completion" placeholder:"SHELL" enum:"bash,zsh,fish," default:"" help:"Print a completion script for bash, zsh or fish, and exit."`
	Man        bool             `name:"man" hidden:"" help:"Print the man page (roff) and exit."`
}

func (x *extras) shared() cli.Shared {
	return cli.Shared{List: x.List, JSON: x.JSON, Man: x.Man, Completion: x.Completion}
}

// ParseDoc parses args (without the program name) into grammar, a kong
// struct, with doc as its help. It handles the shared options --help,
// --version, --list, --json, --completion and --man, which exit 0. A usage
// error prints one line and a hint and exits cli.ExitUsage.
func ParseDoc(doc *cli.Doc, grammar any, args []string, opts ...kong.Option) *kong.Context {
	cli.CheckOpenFiles(doc.Name)
	var x extras
	parser, err := newParser(doc, grammar, &x, opts...)
	if err != nil {
		panic(err) // a broken grammar is a programming error
	}
	ctx, err := parser.Parse(args)
	if err != nil {
		cli.UsageError(doc.Name, err)
	}
	cli.DoShared(doc.Name, x.shared(), func() string { return ManPage(doc, parser.Model) },
		func(shell string) (string, error) { return Completion(shell, doc.Name, parser.Model) })
	return ctx
}

func newParser(doc *cli.Doc, grammar any, x *extras, opts ...kong.Option) (*kong.Kong, error) {
	opts = append([]kong.Option{
		kong.Name(doc.Name),
		kong.Description(doc.HelpDescription()),
		kong.Exit(os.Exit),
		kong.Vars{"version": cli.Version(doc.Name)},
		kong.ConfigureHelp(kong.HelpOptions{Compact: true, NoExpandSubcommands: true}),
		kong.Embed(x),
	}, opts...)
	return kong.New(grammar, opts...)
}

// Outcome is what ParseDoc makes of a command line, without exiting: for
// tests that compare another parser with kong.
type Outcome struct {
	Help    bool  // kong printed the help (--help, -h) and would exit 0
	Version bool  // kong printed the version and would exit 0
	Err     error // a usage error
	Shared  cli.Shared
}

// exited is what the parser's Exit panics with.
type exited int

// capturing returns a parser like ParseDoc's whose output goes to the
// returned buffer and whose Exit panics (see parseCaught).
func capturing(doc *cli.Doc, grammar any, x *extras, opts []kong.Option) (*kong.Kong, *bytes.Buffer, error) {
	var out bytes.Buffer
	opts = append(opts, kong.Exit(func(code int) { panic(exited(code)) }), kong.Writers(&out, &out))
	parser, err := newParser(doc, grammar, x, opts...)
	return parser, &out, err
}

// parseCaught parses args with a parser from capturing; printed reports
// that kong printed the help or the version and exited 0.
func parseCaught(parser *kong.Kong, args []string) (printed bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			if code, ok := r.(exited); !ok || code != 0 {
				panic(r)
			}
			printed, err = true, nil
		}
	}()
	_, err = parser.Parse(args)
	return false, err
}

// Parse parses args into grammar as ParseDoc does, but returns what it
// made of them instead of acting on it. Shared options are reported, not
// done.
func Parse(doc *cli.Doc, grammar any, args []string, opts ...kong.Option) Outcome {
	var x extras
	parser, stdout, err := capturing(doc, grammar, &x, opts)
	if err != nil {
		panic(err)
	}
	printed, err := parseCaught(parser, args)
	switch {
	case err != nil:
		return Outcome{Err: err}
	case printed && stdout.String() == cli.Version(doc.Name)+"\n":
		return Outcome{Version: true}
	case printed:
		return Outcome{Help: true}
	}
	return Outcome{Shared: x.shared()}
}

// Texts are a program's help, man page and completion scripts, as kong
// renders them from its model: what ParseDoc prints for --help (80
// columns wide, as on a terminal that wide or none), --man and
// --completion.
type Texts struct {
	Help, Man  string
	Completion map[string]string // by shell
}

// Shells are the shells --completion knows.
var Shells = []string{"bash", "zsh", "fish"}

// Render renders the texts of doc and grammar.
func Render(doc *cli.Doc, grammar any, opts ...kong.Option) (Texts, error) {
	var x extras
	parser, stdout, err := capturing(doc, grammar, &x, opts)
	if err != nil {
		return Texts{}, err
	}
	printed, err := parseCaught(parser, []string{"--help"})
	switch {
	case err != nil:
		return Texts{}, fmt.Errorf("kong --help: %w", err)
	case !printed:
		return Texts{}, fmt.Errorf("kong --help did not print the help")
	}
	t := Texts{Help: stdout.String(), Man: ManPage(doc, parser.Model), Completion: map[string]string{}}
	for _, sh := range Shells {
		if t.Completion[sh], err = Completion(sh, doc.Name, parser.Model); err != nil {
			return Texts{}, err
		}
	}
	return t, nil
}
