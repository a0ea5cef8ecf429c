#compdef nspawn-enter
# zsh completion for nspawn-enter: source <(nspawn-enter --completion=zsh), or save as _nspawn-enter in $fpath
_nspawn_enter() {
	local -a machines
	if (( ${words[(I)--]} && ${words[(I)--]} < CURRENT )); then
		_command_names
	elif [[ $PREFIX == -* ]]; then
		compadd -- --completion --help --json --keep-cgroup --keep-env --leader-env --list --no-cgroup --no-ipc --no-mount --no-network --no-pid --no-pty --no-time --no-user --no-uts --pid --pty --setenv --user --version --wd
	else
		machines=(${(f)"$(nspawn-enter --list 2>/dev/null)"})
		compadd -a machines
	fi
}
# Sourced: register; autoloaded from a file _nspawn-enter in $fpath: complete now.
if [[ $funcstack[1] == _nspawn-enter ]]; then
	_nspawn_enter "$@"
else
	compdef _nspawn_enter nspawn-enter
fi
