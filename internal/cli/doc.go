package cli

import (
	"fmt"
	"strings"
)

// Doc is a program's documentation. It is the one source of the --help
// text and of the man page, which also lists the kong flags.
type Doc struct {
	Name        string
	Summary     string   // one line, for the NAME section
	Synopsis    []string // usage lines, without the program name
	Description string   // paragraphs separated by blank lines
	ExitStatus  []Row    // code, meaning
	Examples    []Row    // command, what it does
	Notes       []Section
	SeeAlso     []string // e.g. "nspawn-stop(1)"
}

// Row is one line of a two-column table.
type Row struct{ Left, Right string }

// Section is a titled block of paragraphs.
type Section struct{ Title, Text string }

// HelpDescription is the --help description: synopsis, description, exit status.
// Indented lines are kept as they are by kong's help formatter.
func (d *Doc) HelpDescription() string {
	var b strings.Builder
	if len(d.Synopsis) > 0 {
		b.WriteString("Synopsis:\n\n")
		for _, s := range d.Synopsis {
			fmt.Fprintf(&b, "  %s %s\n", d.Name, s)
		}
		b.WriteString("\n")
	}
	b.WriteString(d.Description + "\n")
	if len(d.ExitStatus) > 0 {
		b.WriteString("\nExit status:\n\n")
	}
	for _, r := range d.ExitStatus {
		fmt.Fprintf(&b, "  %-6s %s\n", r.Left, r.Right)
	}
	return strings.TrimRight(b.String(), "\n")
}
