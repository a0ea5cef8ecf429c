package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nspawn-tools/nspawn-tools/internal/machinetest"
	"github.com/nspawn-tools/nspawn-tools/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(machinetest.RunTests(m)) }

var programs = []string{"nspawn-enter", "nspawn-stop"}

// TestManPagesCurrent: the committed man pages are what the programs
// generate now (go generate ./cmd/... rewrites them), and roff takes them
// without a warning.
func TestManPagesCurrent(t *testing.T) {
	for _, prog := range programs {
		out, err := exec.Command(testenv.Binary(t, prog), "--man").Output()
		if err != nil {
			t.Fatalf("%s --man: %v", prog, err)
		}
		committed, err := os.ReadFile(filepath.Join("..", "..", "cmd", prog, prog+".1"))
		if err != nil {
			t.Fatalf("%v (run go generate ./cmd/...)", err)
		}
		if string(out) != string(committed) {
			t.Errorf("cmd/%s/%s.1 differs from what %s --man prints: run go generate ./cmd/...", prog, prog, prog)
		}
		for _, want := range []string{".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH EXIT STATUS", ".SH EXAMPLES", ".SH SEE ALSO"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("%s.1 lacks %s", prog, want)
			}
		}
		groff := testenv.LookPath(t, "groff")
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = strings.NewReader(string(out))
		if warn, err := cmd.CombinedOutput(); err != nil || len(warn) > 0 {
			t.Errorf("groff on %s.1: %v\n%s", prog, err, warn)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, prog := range programs {
		out, err := exec.Command(testenv.Binary(t, prog), "--version").Output()
		if err != nil {
			t.Fatalf("%s --version: %v", prog, err)
		}
		re := regexp.MustCompile(`^` + prog + ` \S+ \(commit [0-9a-f]{12}|unknown(, modified)?, go1\.\d+`)
		if !re.Match(out) {
			t.Errorf("%s --version printed %q", prog, out)
		}
	}
}

// TestListAndCompletion: with a real machine registered, --list names it,
// --list --json gives its leader, and the bash, zsh and fish completion
// scripts complete its name and the options.
func TestListAndCompletion(t *testing.T) {
	machinetest.Require(t, machinetest.Busybox)
	m := machinetest.Start(t, machinetest.Name("compl"), machinetest.Spec{})
	for _, prog := range programs {
		bin := testenv.Binary(t, prog)
		t.Setenv("PATH", filepath.Dir(bin)+":"+os.Getenv("PATH"))
		out, err := exec.Command(bin, "--list").Output()
		if err != nil || !strings.Contains("\n"+string(out), "\n"+m.Name+"\n") {
			t.Errorf("%s --list: %q, %v; want a line %s", prog, out, err, m.Name)
		}
		out, err = exec.Command(bin, "--list", "--json").Output()
		var list []struct {
			Name   string `json:"name"`
			Leader int    `json:"leader"`
		}
		if err != nil || json.Unmarshal(out, &list) != nil {
			t.Fatalf("%s --list --json: %q, %v", prog, out, err)
		}
		found := false
		for _, e := range list {
			found = found || e.Name == m.Name && e.Leader == m.Leader
		}
		if !found {
			t.Errorf("%s --list --json: %s lacks %s with leader %d", prog, out, m.Name, m.Leader)
		}
		prefix := m.Name[:len(m.Name)-2]
		t.Run(prog+"/bash", func(t *testing.T) {
			script := fmt.Sprintf(`source <(%[1]s --completion=bash)
fn=_${0//-/_}
COMP_WORDS=(%[1]s %[2]q); COMP_CWORD=1; $fn; printf '%%s\n' "${COMPREPLY[@]}"
COMP_WORDS=(%[1]s --no-netw); COMP_CWORD=1; $fn; printf '%%s\n' "${COMPREPLY[@]}"`, prog, prefix)
			out := shell(t, "bash", "-c", script, prog)
			for _, want := range []string{m.Name, "--no-network"} {
				if prog == "nspawn-stop" && want == "--no-network" {
					continue
				}
				if !strings.Contains(out, want+"\n") {
					t.Errorf("bash completion printed %q, want %s", out, want)
				}
			}
		})
		t.Run(prog+"/fish", func(t *testing.T) {
			out := shell(t, "fish", "-c", fmt.Sprintf(`%[1]s --completion=fish | source; complete -C'%[1]s %[2]s'; complete -C'%[1]s --dry'`, prog, prefix))
			if !strings.Contains(out, m.Name) {
				t.Errorf("fish completion printed %q, want %s", out, m.Name)
			}
		})
		t.Run(prog+"/zsh", func(t *testing.T) {
			// A real interactive zsh on a pty: type the prefix, TAB, then
			// turn the line into a print and run it.
			script := fmt.Sprintf(`zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z 'PS1="%%%% "; autoload -Uz compinit; compinit -u -D; source <(%[1]s --completion=zsh)'
zpty -w -n z $'%[1]s %[2]s\t'
sleep 1
zpty -w z $'\C-aprint -r -- DONE: '
buf=
for i in {1..100}; do
  while zpty -r -t z chunk; do buf+=$chunk; done
  [[ $buf == *"DONE: %[1]s "* ]] && break
  sleep 0.1
done
zpty -d z
print -r -- "$buf"`, prog, prefix)
			out := shell(t, "zsh", "-f", "-c", script)
			if !strings.Contains(out, "DONE: "+prog+" "+m.Name) {
				t.Errorf("zsh did not complete %s to %s:\n%q", prefix, m.Name, out)
			}
			// Installed as a file _PROG in $fpath, autoloaded by compinit.
			fpath := t.TempDir()
			gen, err := exec.Command(bin, "--completion=zsh").Output()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(fpath, "_"+prog), gen, 0o644); err != nil {
				t.Fatal(err)
			}
			autoload := strings.Replace(script, "source <("+prog+" --completion=zsh)", "true", 1)
			autoload = strings.Replace(autoload, "PS1=", "fpath=("+fpath+" $fpath); PS1=", 1)
			out = shell(t, "zsh", "-f", "-c", autoload)
			if !strings.Contains(out, "DONE: "+prog+" "+m.Name) {
				t.Errorf("zsh (autoloaded from $fpath) did not complete %s to %s:\n%q", prefix, m.Name, out)
			}
		})
	}
}

func shell(t *testing.T, sh string, args ...string) string {
	t.Helper()
	path := testenv.LookPath(t, sh)
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", sh, err, out)
	}
	return string(out)
}

// TestReproducibleBuild: two builds as the README gives them, each with a
// cache of its own and in a directory of its own, give the same bytes.
func TestReproducibleBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the standard library twice")
	}
	gobin := testenv.LookPath(t, "go")
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	var sums [2]map[string][]byte
	for i := range sums {
		out, cache := t.TempDir(), t.TempDir()
		cmd := exec.Command(gobin, "build", "-trimpath", "-buildvcs=auto", "-ldflags=-s -w", "-o", out+"/", "./cmd/...")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOCACHE="+cache)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %d: %v\n%s", i, err, b)
		}
		sums[i] = map[string][]byte{}
		for _, prog := range programs {
			b, err := os.ReadFile(filepath.Join(out, prog))
			if err != nil {
				t.Fatal(err)
			}
			sums[i][prog] = b
		}
	}
	for _, prog := range programs {
		if string(sums[0][prog]) != string(sums[1][prog]) {
			t.Errorf("%s: two builds differ (%d and %d bytes)", prog, len(sums[0][prog]), len(sums[1][prog]))
		}
	}
}
