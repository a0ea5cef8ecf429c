package kongcli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
)

// Completion returns a completion script for shell (bash, zsh or fish)
// that completes the program's options and, as arguments, the names of the
// running machines (which the program prints with --list).
func Completion(shell, prog string, app *kong.Application) (string, error) {
	var flags []string
	help := map[string]string{}
	for _, group := range app.AllFlags(true) {
		for _, f := range group {
			flags = append(flags, "--"+f.Name)
			help[f.Name] = strings.SplitN(f.Help, ". ", 2)[0]
		}
	}
	sort.Strings(flags)
	fn := "_" + strings.ReplaceAll(prog, "-", "_")
	switch shell {
	case "bash":
		return fmt.Sprintf(`# bash completion for %[1]s; load with: source <(%[1]s --completion=bash)
%[2]s() {
	local cur=${COMP_WORDS[COMP_CWORD]} i
	for ((i = 1; i < COMP_CWORD; i++)); do
		if [[ ${COMP_WORDS[i]} == -- ]]; then
			COMPREPLY=($(compgen -c -- "$cur"))
			return
		fi
	done
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W '%[3]s' -- "$cur"))
	else
		COMPREPLY=($(compgen -W "$(%[1]s --list 2>/dev/null)" -- "$cur"))
	fi
}
complete -F %[2]s %[1]s
`, prog, fn, strings.Join(flags, " ")), nil
	case "zsh":
		return fmt.Sprintf(`#compdef %[1]s
# zsh completion for %[1]s: source <(%[1]s --completion=zsh), or save as _%[1]s in $fpath
%[2]s() {
	local -a machines
	if (( ${words[(I)--]} && ${words[(I)--]} < CURRENT )); then
		_command_names
	elif [[ $PREFIX == -* ]]; then
		compadd -- %[3]s
	else
		machines=(${(f)"$(%[1]s --list 2>/dev/null)"})
		compadd -a machines
	fi
}
# Sourced: register; autoloaded from a file _%[1]s in $fpath: complete now.
if [[ $funcstack[1] == _%[1]s ]]; then
	%[2]s "$@"
else
	compdef %[2]s %[1]s
fi
`, prog, fn, strings.Join(flags, " ")), nil
	case "fish":
		var b strings.Builder
		fmt.Fprintf(&b, "# fish completion for %[1]s; load with: %[1]s --completion=fish | source\n", prog)
		fmt.Fprintf(&b, "complete -c %[1]s -f -n 'not contains -- -- (commandline -opc)' -a '(%[1]s --list 2>/dev/null)'\n", prog)
		for _, f := range flags {
			name := strings.TrimPrefix(f, "--")
			fmt.Fprintf(&b, "complete -c %s -n 'not contains -- -- (commandline -opc)' -l %s -d %s\n", prog, name, fishQuote(help[name]))
		}
		return b.String(), nil
	}
	return "", fmt.Errorf("no completion for shell %q (bash, zsh or fish)", shell)
}

func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(strings.TrimSuffix(s, ".")) + "'"
}
