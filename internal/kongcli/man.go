package kongcli

import (
	"fmt"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/nspawn-tools/nspawn-tools/internal/cli"
)

// ManPage renders the man page of the program d documents, whose kong
// model is app.
func ManPage(d *cli.Doc, app *kong.Application) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH %s 1 \"\" \"nspawn-tools\" \"User Commands\"\n", roffText(strings.ToUpper(d.Name)))
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", roffText(d.Name), roffText(d.Summary))
	b.WriteString(".SH SYNOPSIS\n")
	for _, s := range d.Synopsis {
		fmt.Fprintf(&b, ".B %s\n%s\n.br\n", roffText(d.Name), roffText(s))
	}
	b.WriteString(".SH DESCRIPTION\n")
	writeParagraphs(&b, d.Description)
	b.WriteString(".SH OPTIONS\n")
	for _, group := range app.AllFlags(true) {
		for _, f := range group {
			fmt.Fprintf(&b, ".TP\n.B %s\n%s\n", roffText(flagSynopsis(f)), roffText(f.Help))
		}
	}
	for _, p := range app.Positional {
		fmt.Fprintf(&b, ".TP\n.I %s\n%s\n", roffText(strings.ToUpper(p.Name)), roffText(p.Help))
	}
	for _, s := range d.Notes {
		fmt.Fprintf(&b, ".SH %s\n", roffText(strings.ToUpper(s.Title)))
		writeParagraphs(&b, s.Text)
	}
	b.WriteString(".SH EXIT STATUS\n")
	for _, r := range d.ExitStatus {
		fmt.Fprintf(&b, ".TP\n.B %s\n%s\n", roffText(r.Left), roffText(r.Right))
	}
	b.WriteString(".SH EXAMPLES\n")
	for _, r := range d.Examples {
		fmt.Fprintf(&b, ".TP\n.B %s\n%s\n", roffText(r.Left), roffText(r.Right))
	}
	b.WriteString(".SH SEE ALSO\n")
	for i, s := range d.SeeAlso {
		sep := ",\n"
		if i == len(d.SeeAlso)-1 {
			sep = "\n"
		}
		fmt.Fprintf(&b, ".BR %s%s", manRef(roffText(s)), sep)
	}
	return b.String()
}

// manRef writes a reference "name(1)" as "name (1)", for .BR; anything
// else is left as it is. (Not a regexp: one compiled at package
// initialisation costs every run of the tools, not only --man.)
func manRef(s string) string {
	name, rest, ok := strings.Cut(s, "(")
	if !ok || name == "" || len(rest) != 2 || rest[0] < '0' || rest[0] > '9' || rest[1] != ')' {
		return s
	}
	return name + " (" + rest[:1] + ")"
}

// flagSynopsis is "-u, --user=USER[:GROUP]" or "--no-pty".
func flagSynopsis(f *kong.Flag) string {
	s := "--" + f.Name
	if f.Short != 0 {
		s = "-" + string(f.Short) + ", " + s
	}
	if !f.IsBool() {
		s += "=" + f.FormatPlaceHolder()
	}
	return s
}

func writeParagraphs(b *strings.Builder, text string) {
	for i, p := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		b.WriteString(roffText(strings.Join(strings.Fields(p), " ")) + "\n")
	}
}

// roffText escapes text for roff: backslashes, and a leading dot or quote
// that roff would take for a request.
func roffText(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}
