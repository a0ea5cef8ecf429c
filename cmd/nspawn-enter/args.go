package main

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/alecthomas/kong"
	"github.com/nspawn-tools/nspawn-tools/internal/cli"
	"github.com/nspawn-tools/nspawn-tools/nsjoin"
)

// parseArgs parses the options (the command line before "--").
//
// Building kong's model of the grammar takes about three quarters of the
// instructions nspawn-enter runs before it touches the machine (callgrind:
// 2.7 of 3.6 million). So the plain command lines most runs have are read
// by quickParse, and everything else (--help, --version, every error) by
// kong, the grammar of record. A test checks that the two agree wherever
// quickParse accepts a command line.
func parseArgs(args []string) (grammar, nsjoin.Set) {
	if g, keep, ok := quickParse(args); ok {
		cli.CheckOpenFiles(prog) // as ParseDoc does
		return g, keep
	}
	var g grammar
	keep := keepOptions()
	cli.ParseDoc(doc, &g, args, kong.Embed(keep.Interface()))
	return g, keepSet(keep)
}

// keepOptions builds a struct type with one bool field per namespace kind,
// tagged for kong as --no-<option>.
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

// Flags quickParse knows, as bits for finding repeats.
const (
	seenPID = 1 << iota
	seenUser
	seenWD
	seenKeepEnv
	seenLeaderEnv
	seenPTY
	seenNoPTY
	seenKeepCgroup
	seenKeep // seenKeep << i is --no-<Namespaces[i].Option>
)

// quickParse parses a command line made only of a machine name and the
// grammar's own options, each at most once (--setenv repeated), in the
// forms --opt VALUE, --opt=VALUE and -u VALUE, with values that neither
// are empty nor start with "-", all valid UTF-8. Anything else returns
// ok == false.
func quickParse(args []string) (g grammar, keep nsjoin.Set, ok bool) {
	var seen uint
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "" || !utf8.ValidString(a) {
			return g, 0, false // kong has its own way with invalid UTF-8
		}
		if a[0] != '-' {
			if g.Machine != "" {
				return g, 0, false
			}
			g.Machine = a
			continue
		}
		name, value, hasValue := strings.Cut(a, "=")
		if name == "-u" {
			if hasValue {
				return g, 0, false
			}
			name = "--user"
		}
		var bit uint
		switch name {
		case "--pid", "--user", "--wd", "--setenv":
			if !hasValue {
				if i+1 == len(args) || !utf8.ValidString(args[i+1]) {
					return g, 0, false
				}
				i++
				value = args[i]
			}
			if value == "" || value[0] == '-' {
				return g, 0, false
			}
			switch name {
			case "--pid":
				// Plain decimal only: kong decides what else is a number.
				if len(value) > 9 || value[0] == '0' || strings.Trim(value, "0123456789") != "" {
					return g, 0, false
				}
				pid, _ := strconv.Atoi(value)
				g.PID, bit = &pid, seenPID
			case "--user":
				g.User, bit = value, seenUser
			case "--wd":
				g.WD, bit = value, seenWD
			case "--setenv":
				g.Setenv = append(g.Setenv, value)
			}
		default:
			if hasValue {
				return g, 0, false
			}
			switch name {
			case "--keep-env":
				g.KeepEnv, bit = true, seenKeepEnv
			case "--leader-env":
				g.LeaderEnv, bit = true, seenLeaderEnv
			case "--pty":
				g.PTY, bit = true, seenPTY
			case "--no-pty":
				g.NoPTY, bit = true, seenNoPTY
			case "--keep-cgroup":
				g.KeepCgroup, bit = true, seenKeepCgroup
			default:
				i := namespaceOption(name)
				if i < 0 {
					return g, 0, false
				}
				keep |= nsjoin.Set(nsjoin.Namespaces[i].Clone)
				bit = seenKeep << i
			}
		}
		if seen&bit != 0 {
			return g, 0, false
		}
		seen |= bit
	}
	if g.KeepEnv && g.LeaderEnv || g.PTY && g.NoPTY {
		return g, 0, false // kong says why
	}
	return g, keep, true
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
