package main

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/alecthomas/kong"
	"github.com/nspawn-tools/nspawn-tools/internal/kongcli"
	"github.com/nspawn-tools/nspawn-tools/nsjoin"
)

// keepOptions builds a struct type with one bool field per namespace kind,
// tagged for kong as --no-<option>: with grammar, the grammar of record.
func keepOptions() reflect.Value {
	fields := make([]reflect.StructField, len(nsjoin.Namespaces))
	for i, ns := range nsjoin.Namespaces {
		fields[i] = reflect.StructField{
			Name: "No" + strings.ToUpper(ns.Option[:1]) + ns.Option[1:],
			Type: reflect.TypeOf(false),
			Tag:  reflect.StructTag(fmt.Sprintf(`name:"no-%s" help:%q`, ns.Option, ns.Help)),
		}
	}
	return reflect.New(reflect.StructOf(fields))
}

// keepSet returns the namespaces whose --no-<option> is set in v, a
// pointer to the struct keepOptions builds.
func keepSet(v reflect.Value) nsjoin.Set {
	var set nsjoin.Set
	for i, ns := range nsjoin.Namespaces {
		if v.Elem().Field(i).Bool() {
			set |= nsjoin.Set(ns.Clone)
		}
	}
	return set
}

// kongParse parses args with the grammar of record, as kong would.
func kongParse(args []string) (request, kongcli.Outcome) {
	var r request
	keep := keepOptions()
	out := kongcli.Parse(doc, &r.g, args, kong.Embed(keep.Interface()))
	r.keep, r.shared = keepSet(keep), out.Shared
	switch {
	case out.Help:
		r.printed = printHelp
	case out.Version:
		r.printed = printVersion
	}
	return r, out
}

// checkAgree fails the test unless parse and kong both refuse args, or
// both read them the same way. It returns parse's error.
func checkAgree(t testing.TB, args []string) error {
	t.Helper()
	ours, err := parse(args)
	theirs, out := kongParse(args)
	switch {
	case err != nil && out.Err != nil:
		return err
	case err != nil:
		t.Errorf("%q: parse refuses it (%v), kong reads %+v", args, err, theirs)
	case out.Err != nil:
		t.Errorf("%q: parse reads %+v, kong refuses it: %v", args, ours, out.Err)
	case ours.printed != printNothing || theirs.printed != printNothing:
		if ours.printed != theirs.printed {
			t.Errorf("%q: parse prints %d, kong %d", args, ours.printed, theirs.printed)
		}
	case !reflect.DeepEqual(asKongStores(ours), theirs):
		t.Errorf("%q: parse reads\n%+v\nkong\n%+v", args, ours, theirs)
	}
	return err
}

// asKongStores returns r with its strings as kong stores them: kong passes
// string values through encoding/json, which replaces each byte that is
// not UTF-8 with U+FFFD. parse keeps them as given (a directory's name
// need not be UTF-8).
func asKongStores(r request) request {
	fix := func(s string) string {
		var b strings.Builder
		for i := 0; i < len(s); {
			c, n := utf8.DecodeRuneInString(s[i:])
			if c == utf8.RuneError && n == 1 {
				b.WriteString("\uFFFD")
			} else {
				b.WriteString(s[i : i+n])
			}
			i += n
		}
		return b.String()
	}
	r.g.Machine, r.g.User, r.g.WD = fix(r.g.Machine), fix(r.g.User), fix(r.g.WD)
	r.shared.Completion = fix(r.shared.Completion)
	if r.g.Setenv != nil {
		env := make([]string, len(r.g.Setenv))
		for i, e := range r.g.Setenv {
			env[i] = fix(e)
		}
		r.g.Setenv = env
	}
	return r
}

func TestParseAgreesWithKong(t *testing.T) {
	valid := [][]string{
		{},
		{"web"},
		{"--pid", "4242"},
		{"--pid=4242"},
		{"--pid", "0x10"}, {"--pid", "010"}, {"--pid", "+5"}, {"--pid", "1_000"}, {"--pid", "0"}, {"--pid=-1"},
		{"web", "-u", "alice", "--wd", "/srv"},
		{"--user=alice:wheel", "web", "--wd=/"},
		{"-ualice"}, {"-u=alice"}, {"-u-1"}, {"--user=-1"}, {"--user="}, {"--user", "-"}, {"-u", "a", "-u", "b"},
		{"web", "--keep-env", "--no-pty", "--keep-cgroup"},
		{"web", "--leader-env", "--pty"},
		{"web", "--setenv", "A=1", "--setenv=B=2", "--setenv", "A=3"},
		{"web", "--setenv=", "--setenv=-x"},
		{"web", "--no-network", "--no-pid", "--no-user", "--no-cgroup", "--no-ipc", "--no-uts", "--no-mount", "--no-time"},
		{"--no-network=false", "--no-pid=yes", "--no-time=0", "--pty=TRUE", "--keep-cgroup=No"},
		{"--no-network", "--no-network=false"},
		{"--pid", "1", "web"},
		{"web", "--setenv", "X=-1"},
		{"-"}, {""}, {"", "--pid", "1"}, {"\x8a", "--wd=\xff\xfe/", "--setenv", "A=\xe9"},
		{"--pty", "--pty"},
		{"--help"}, {"-h"}, {"-hh"}, {"--help=false"}, {"--version"}, {"--version", "--help"}, {"--help", "--version"},
		{"-h", "--pty", "--no-pty"}, {"--help", "--completion", "tcsh"}, {"-hu", "x"},
		{"--list"}, {"--list", "--json"}, {"--json"}, {"--list=false", "--json"}, {"--completion", "bash"}, {"--completion="},
		{"--man"}, {"--man", "--list"},
	}
	for _, args := range valid {
		if err := checkAgree(t, args); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
	invalid := [][]string{
		{"web", "other"}, {"--bogus"}, {"-x"}, {"-é"}, {"--=x"}, {"--no-"}, {"--no-net"}, {"--no-mnt"},
		{"--pid"}, {"--pid="}, {"--pid", "abc"}, {"--pid", "1e3"}, {"--pid", "99999999999999999999"}, {"--pid", "--pty"}, {"--pid", "-1"},
		{"--user"}, {"--user", "-1"}, {"-u"}, {"--user", "--pty"}, {"--wd"}, {"--wd", "-x"}, {"--setenv"}, {"--setenv", "-x"},
		{"--keep-env", "--leader-env"}, {"--pty", "--no-pty"}, {"--pty=false", "--no-pty"}, {"--pty=maybe"},
		{"--completion", "tcsh"}, {"--completion"}, {"--help=maybe"}, {"-hx"}, {"--help", "--bogus"}, {"--bogus", "--help"},
	}
	for _, args := range invalid {
		if err := checkAgree(t, args); err == nil {
			t.Errorf("%q: parse takes it", args)
		}
	}
}

// FuzzParse: parse and kong agree on every command line (the part before
// "--", which is all that main parses).
func FuzzParse(f *testing.F) {
	for _, s := range []string{"web", "--pid 4242", "web -u alice --wd /srv", "web --setenv A=1 --setenv=B=2",
		"--no-network --no-pid web", "web --keep-env --no-pty", "--user=a:b web", "--pid=7 --leader-env --pty",
		"-hu x", "--list --json", "--completion=zsh", "--pty=no --no-pty", "-u-x --pid 0x1f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, " ")
		if s == "" {
			args = nil
		}
		opts, _ := splitCommand(args)
		checkAgree(t, opts)
	})
}

var update = flag.Bool("update", false, "rewrite the texts TestTexts checks")

// TestTexts: the help, man page and completion scripts nspawn-enter
// prints are what kong renders from the grammar of record now; -update
// (go generate) writes them.
func TestTexts(t *testing.T) {
	texts, err := kongcli.Render(doc, &grammar{}, kong.Embed(keepOptions().Interface()))
	if err != nil {
		t.Fatal(err)
	}
	files := []struct {
		name, rendered, embedded string
	}{
		{"help.txt", texts.Help, helpText},
		{prog + ".1", texts.Man, manText},
		{"completion.bash", texts.Completion["bash"], bashCompletion},
		{"completion.zsh", texts.Completion["zsh"], zshCompletion},
		{"completion.fish", texts.Completion["fish"], fishCompletion},
	}
	for _, f := range files {
		if *update {
			if err := os.WriteFile(f.name, []byte(f.rendered), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if f.rendered != f.embedded {
			t.Errorf("cmd/nspawn-enter/%s is not what kong renders now: run go generate ./cmd/nspawn-enter", f.name)
		}
	}
}

// TestParseErrors: each usage error names what is wrong.
func TestParseErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "unknown flag --bogus"},
		{[]string{"-x"}, "unknown flag -x"},
		{[]string{"web", "db"}, "unexpected argument db"},
		{[]string{"--pid"}, "--pid wants a value (a process ID)"},
		{[]string{"--pid", "x1"}, `--pid wants a process ID, not "x1"`},
		{[]string{"-u"}, "--user wants a value (USER[:GROUP])"},
		{[]string{"--wd", "--pty"}, `--wd wants a value, not the flag "--pty" (a value that starts with "-" goes as --wd=--pty)`},
		{[]string{"--pty=maybe"}, "--pty=maybe: the value must be true, 1, yes, false, 0 or no"},
		{[]string{"--no-pty", "--pty"}, "--pty and --no-pty can't be used together"},
		{[]string{"--leader-env", "--keep-env=false"}, "--keep-env and --leader-env can't be used together"},
		{[]string{"--completion", "tcsh"}, `--completion knows bash, zsh and fish, not "tcsh"`},
	} {
		_, err := parse(c.args)
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: error %v, want %s", c.args, err, c.want)
		}
	}
}
