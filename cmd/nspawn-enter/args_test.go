package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/nspawn-tools/nspawn-tools/internal/cli"
	"github.com/nspawn-tools/nspawn-tools/nsjoin"
)

// kongParse parses args with the grammar of record, without exiting.
func kongParse(t testing.TB, args []string) (grammar, nsjoin.Set, error) {
	var g grammar
	keep := keepOptions()
	p, err := cli.NewParser(doc, &g, kong.Embed(keep.Interface()))
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Parse(args)
	return g, keepSet(keep), err
}

// checkAgree fails the test if quickParse accepts args and kong parses
// them differently or not at all. It returns whether quickParse accepted.
func checkAgree(t testing.TB, args []string) bool {
	t.Helper()
	qg, qkeep, ok := quickParse(args)
	if !ok {
		return false
	}
	kg, kkeep, err := kongParse(t, args)
	if err != nil {
		t.Errorf("%q: quickParse accepts it, kong says: %v", args, err)
		return true
	}
	if !reflect.DeepEqual(qg, kg) || qkeep != kkeep {
		t.Errorf("%q: quickParse gives %+v keep %s, kong %+v keep %s", args, qg, qkeep, kg, kkeep)
	}
	return true
}

func TestQuickParseAgreesWithKong(t *testing.T) {
	accepted := [][]string{
		{},
		{"web"},
		{"--pid", "4242"},
		{"--pid=4242"},
		{"web", "-u", "alice", "--wd", "/srv"},
		{"--user=alice:wheel", "web", "--wd=/"},
		{"web", "--keep-env", "--no-pty", "--keep-cgroup"},
		{"web", "--leader-env", "--pty"},
		{"web", "--setenv", "A=1", "--setenv=B=2", "--setenv", "A=3"},
		{"web", "--no-network", "--no-pid", "--no-user", "--no-cgroup", "--no-ipc", "--no-uts", "--no-mount", "--no-time"},
		{"--pid", "1", "web"},
		{"web", "--setenv", "X=-1"},
	}
	for _, args := range accepted {
		if !checkAgree(t, args) {
			t.Errorf("%q: quickParse does not take this plain command line", args)
		}
	}
	// Left to kong: help, shared options, errors, and forms quickParse
	// does not read.
	rejected := [][]string{
		{"--help"}, {"-h"}, {"--version"}, {"--list"}, {"--list", "--json"}, {"--completion", "bash"}, {"--man"},
		{"web", "other"}, {"--bogus"}, {"-x"}, {""}, {"-"},
		{"--pid"}, {"--pid", "0"}, {"--pid", "010"}, {"--pid", "0x10"}, {"--pid", "-1"}, {"--pid", "+5"}, {"--pid", "1e3"},
		{"--pid", "12345678901"}, {"--pid", "1", "--pid", "2"},
		{"-ualice"}, {"-u=alice"}, {"--user"}, {"--user", ""}, {"--user", "-1"}, {"--user=a", "-u", "b"},
		{"--wd"}, {"--wd", "-x"}, {"--setenv"},
		{"--keep-env", "--leader-env"}, {"--pty", "--no-pty"}, {"--pty", "--pty"}, {"--pty=true"}, {"--no-network=false"},
		{"--no-network", "--no-network"}, {"--no-net"}, {"--no-mnt"}, {"--no-"},
	}
	for _, args := range rejected {
		if checkAgree(t, args) {
			t.Errorf("%q: quickParse takes a command line it should leave to kong", args)
		}
	}
}

// FuzzQuickParse: wherever quickParse accepts a command line, kong reads
// it the same way.
func FuzzQuickParse(f *testing.F) {
	for _, s := range []string{"web", "--pid 4242", "web -u alice --wd /srv", "web --setenv A=1 --setenv=B=2",
		"--no-network --no-pid web", "web --keep-env --no-pty", "--user=a:b web", "--pid=7 --leader-env --pty"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, " ")
		if s == "" {
			args = nil
		}
		checkAgree(t, args)
	})
}
