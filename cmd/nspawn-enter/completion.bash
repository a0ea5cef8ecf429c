# bash completion for nspawn-enter; load with: source <(nspawn-enter --completion=bash)
_nspawn_enter() {
	local cur=${COMP_WORDS[COMP_CWORD]} i
	for ((i = 1; i < COMP_CWORD; i++)); do
		if [[ ${COMP_WORDS[i]} == -- ]]; then
			COMPREPLY=($(compgen -c -- "$cur"))
			return
		fi
	done
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W '--completion --help --json --keep-cgroup --keep-env --leader-env --list --no-cgroup --no-ipc --no-mount --no-network --no-pid --no-pty --no-time --no-user --no-uts --pid --pty --setenv --user --version --wd' -- "$cur"))
	else
		COMPREPLY=($(compgen -W "$(nspawn-enter --list 2>/dev/null)" -- "$cur"))
	fi
}
complete -F _nspawn_enter nspawn-enter
