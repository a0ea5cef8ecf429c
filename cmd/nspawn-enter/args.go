package main

import (
	_ "embed" // the texts kong renders, committed
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/nspawn-tools/nspawn-tools/internal/cli"
	"github.com/nspawn-tools/nspawn-tools/nsjoin"
)

// nspawn-enter does not link kong: its package initialisation, and that of
// what it imports, cost every run about 0.3 ms (measured), a tenth of a
// whole nspawn-enter run. The grammar of record is still the kong struct
// grammar with the --no-<namespace> options and the shared ones: the help,
// the man page and the completion scripts are what kong renders from it
// (TestTexts writes them: go generate ./cmd/nspawn-enter), and parse is
// checked against kong's parser by TestParseAgreesWithKong and FuzzParse.

//go:generate go test -run TestTexts -update .

var (
	//go:embed help.txt
	helpText string
	//go:embed nspawn-enter.1
	manText string
	//go:embed completion.bash
	bashCompletion string
	//go:embed completion.zsh
	zshCompletion string
	//go:embed completion.fish
	fishCompletion string
)

// completion returns the completion script for shell.
func completion(shell string) (string, error) {
	switch shell {
	case "bash":
		return bashCompletion, nil
	case "zsh":
		return zshCompletion, nil
	case "fish":
		return fishCompletion, nil
	}
	return "", fmt.Errorf("no completion for shell %q (bash, zsh or fish)", shell)
}

// parseArgs parses the options (the command line before "--") and does
// what the shared ones ask (--help, --version, --man, --completion,
// --list), which exit; a usage error exits 2.
func parseArgs(args []string) (grammar, nsjoin.Set) {
	cli.CheckOpenFiles(prog)
	r, err := parse(args)
	switch {
	case err != nil:
		cli.UsageError(prog, err)
	case r.printed == printHelp:
		fmt.Print(helpText)
		os.Exit(0)
	case r.printed == printVersion:
		fmt.Println(cli.Version(prog))
		os.Exit(0)
	}
	cli.DoShared(prog, r.shared, func() string { return manText }, completion)
	return r.g, r.keep
}

// request is what a command line asks of nspawn-enter.
type request struct {
	g       grammar
	keep    nsjoin.Set
	printed printed // the first of --help and --version given
	shared  cli.Shared
}

// printed is what --help or --version print.
type printed int

const (
	printNothing printed = iota
	printHelp
	printVersion
)

// token is a piece of the command line, as kong's scanner types them: an
// argument as given, a value after "=" in --flag=value, or what follows
// the letter of a short flag (-uroot).
type token struct {
	kind tokenKind
	text string
}

type tokenKind int

const (
	argToken tokenKind = iota
	valueToken
	tailToken
)

// isValue reports whether t may be a flag's value: a typed value, "-", or
// an argument that does not start with "-".
func (t token) isValue() bool {
	return t.kind != argToken || t.text == "-" || !strings.HasPrefix(t.text, "-")
}

// parser reads a command line the way kong does for this grammar.
type parser struct {
	r     request
	toks  []token         // what is left, the next first
	named bool            // the machine name was given
	given map[string]bool // the flags of xorPairs given
}

// xorPairs are the flags that exclude each other, even given as =false.
var xorPairs = [][2]string{{"--keep-env", "--leader-env"}, {"--pty", "--no-pty"}}

// parse parses the options as kong parses them with grammar: flags in
// the forms --flag, --flag=VALUE, --flag VALUE, -u VALUE, -uVALUE, the
// letters of short flags run together (-hu root); a repeated flag's last
// value counts, --setenv's all; a value may not look like a flag unless
// given with "=" or run together. --help and --version win over the checks
// made once the flags are read (--completion's shell, exclusive flags),
// not over an error in reading them.
func parse(args []string) (request, error) {
	p := &parser{toks: make([]token, len(args)), given: map[string]bool{}}
	for i, a := range args {
		p.toks[i] = token{argToken, a}
	}
	for len(p.toks) > 0 {
		t := p.pop()
		var name string
		switch {
		case t.kind == valueToken:
			return request{}, fmt.Errorf("unexpected flag argument %q", t.text)
		case t.kind == tailToken:
			p.pushTail(t.text[1:])
			name = "-" + t.text[:1]
		case strings.HasPrefix(t.text, "--"):
			var value string
			var ok bool
			if name, value, ok = strings.Cut(t.text, "="); ok {
				p.push(token{valueToken, value})
			}
		case t.text != "-" && strings.HasPrefix(t.text, "-"):
			p.pushTail(t.text[2:])
			name = t.text[:2]
		case p.named:
			return request{}, fmt.Errorf("unexpected argument %s", t.text)
		default:
			p.r.g.Machine, p.named = t.text, true
			continue
		}
		if err := p.flag(name); err != nil {
			return request{}, err
		}
	}
	if p.r.printed != printNothing {
		return p.r, nil
	}
	switch p.r.shared.Completion {
	case "", "bash", "zsh", "fish":
	default:
		return request{}, fmt.Errorf("--completion knows bash, zsh and fish, not %q", p.r.shared.Completion)
	}
	for _, pair := range xorPairs {
		if p.given[pair[0]] && p.given[pair[1]] {
			return request{}, fmt.Errorf("%s and %s can't be used together", pair[0], pair[1])
		}
	}
	return p.r, nil
}

func (p *parser) pop() token {
	t := p.toks[0]
	p.toks = p.toks[1:]
	return t
}

func (p *parser) push(t token) { p.toks = append([]token{t}, p.toks...) }

func (p *parser) pushTail(tail string) {
	if tail != "" {
		p.push(token{tailToken, tail})
	}
}

// value pops the value of flag name.
func (p *parser) value(name, what string) (string, error) {
	if len(p.toks) == 0 {
		return "", fmt.Errorf("%s wants a value (%s)", name, what)
	}
	t := p.pop()
	if !t.isValue() {
		return "", fmt.Errorf("%s wants a value, not the flag %q (a value that starts with \"-\" goes as %s=%s)", name, t.text, name, t.text)
	}
	return t.text, nil
}

// boolValue pops the value of a bool flag given as --flag=VALUE; a bool
// flag given without one is true.
func (p *parser) boolValue(name string) (bool, error) {
	if len(p.toks) == 0 || p.toks[0].kind != valueToken {
		return true, nil
	}
	switch v := strings.ToLower(p.pop().text); v {
	case "true", "1", "yes":
		return true, nil
	case "false", "0", "no":
		return false, nil
	default:
		return false, fmt.Errorf("%s=%s: the value must be true, 1, yes, false, 0 or no", name, v)
	}
}

// flag reads flag name ("--name" or "-x") and its value.
func (p *parser) flag(name string) error {
	g := &p.r.g
	var err error
	switch name {
	case "--pid":
		var v string
		if v, err = p.value(name, "a process ID"); err == nil {
			var n int64
			if n, err = strconv.ParseInt(v, 0, strconv.IntSize); err != nil {
				return fmt.Errorf("--pid wants a process ID, not %q", v)
			}
			pid := int(n)
			g.PID = &pid
		}
	case "--user", "-u":
		g.User, err = p.value("--user", "USER[:GROUP]")
	case "--wd":
		g.WD, err = p.value(name, "a directory")
	case "--setenv":
		var v string
		if v, err = p.value(name, "KEY=VALUE"); err == nil {
			g.Setenv = append(g.Setenv, v)
		}
	case "--completion":
		p.r.shared.Completion, err = p.value(name, "bash, zsh or fish")
	case "--help", "-h", "--version":
		if _, err = p.boolValue(name); err == nil && p.r.printed == printNothing {
			p.r.printed = printHelp
			if name == "--version" {
				p.r.printed = printVersion
			}
		}
	default:
		if i := namespaceOption(name); i >= 0 {
			var set bool
			if set, err = p.boolValue(name); err == nil {
				keep := nsjoin.Set(nsjoin.Namespaces[i].Clone)
				p.r.keep &^= keep
				if set {
					p.r.keep |= keep
				}
			}
			return err
		}
		b := p.boolFlag(name)
		if b == nil {
			return fmt.Errorf("unknown flag %s", name)
		}
		*b, err = p.boolValue(name)
		p.given[name] = err == nil
	}
	return err
}

// boolFlag returns where the bool flag name is kept, or nil.
func (p *parser) boolFlag(name string) *bool {
	g, s := &p.r.g, &p.r.shared
	switch name {
	case "--keep-env":
		return &g.KeepEnv
	case "--leader-env":
		return &g.LeaderEnv
	case "--pty":
		return &g.PTY
	case "--no-pty":
		return &g.NoPTY
	case "--keep-cgroup":
		return &g.KeepCgroup
	case "--list":
		return &s.List
	case "--json":
		return &s.JSON
	case "--man":
		return &s.Man
	}
	return nil
}

// namespaceOption returns the index in nsjoin.Namespaces of the kind whose
// --no-<option> is name, or -1.
func namespaceOption(name string) int {
	opt, ok := strings.CutPrefix(name, "--no-")
	if !ok {
		return -1
	}
	for i, ns := range nsjoin.Namespaces {
		if ns.Option == opt {
			return i
		}
	}
	return -1
}
