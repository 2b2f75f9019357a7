# Start, watch and stop a daemon with a pid file; fill in a configuration template.
# Sourced by tools/ceph-dev-cluster and tools/glance-api-dev (bash, set -euo pipefail).
#
#   daemon_start CWD PIDFILE LOG CMD...
#       Runs CMD detached: in its own session (setsid), in CWD, stdin /dev/null, stdout
#       and stderr appended to LOG, no descriptor above 2 inherited (so a flock the
#       caller holds stays the caller's). The pid is written to PIDFILE before CMD is
#       exec'd (same pid, which is also the session id). Returns once PIDFILE exists;
#       fails after 5 s.
#   daemon_pid PIDFILE MARK
#       Prints the pid from PIDFILE if that process is alive (not a zombie) and its
#       command line contains MARK, which guards against a reused pid; else fails.
#   daemon_stop PIDFILE MARK [PIDFILE MARK]...
#       SIGTERM to each daemon that daemon_pid finds (logged as the pid file's name
#       without .pid), then waits up to
#       DAEMON_STOP_WAIT seconds (default 10) until every process of their sessions
#       (the daemon and whatever it forked) has exited, SIGKILLs what is left and waits
#       up to 5 s more. Removes the pid files; fails if a process survives.
#   daemon_kill PIDFILE MARK
#       SIGKILL to the daemon daemon_pid finds, then waits up to 10 s until every
#       process of its session has exited; fails if it was not running or survives.
#       The pid file stays (daemon_start replaces it).
#   daemon_paused PID
#       True if the process is stopped (SIGSTOP), false if it runs or is gone.
#   render TEMPLATE OUT NAME=VALUE...
#       Copies TEMPLATE to OUT with every @NAME@ replaced by VALUE, taken literally;
#       fails if OUT would still hold a @PLACEHOLDER@.
#
# Waits are polls of /proc, 0.1 s apart; nothing here needs ps or pgrep.

# shellcheck shell=bash

daemon_start() {
	local cwd=$1 pidfile=$2 log=$3 i
	shift 3
	rm -f -- "$pidfile"
	(
		cd -- "$cwd" || exit 1
		# shellcheck disable=SC2016 # expanded by the inner bash
		exec setsid bash -c '
			for fd in /proc/$$/fd/*; do
				fd=${fd##*/}
				((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
			done
			echo $$ >"$1"
			shift
			exec "$@"' daemon-start "$pidfile" "$@" </dev/null >>"$log" 2>&1
	) &
	disown $! # no "Killed" job notices from the caller's shell
	for ((i = 0; i < 100; i++)); do
		[[ -s $pidfile ]] && return 0
		sleep 0.05
	done
	return 1
}

# _daemon_state PID: the process state letter (R, S, Z, ...); fails if there is none.
_daemon_state() {
	local stat
	read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
	stat=${stat##*) } # after "pid (comm) ", comm may hold spaces and parentheses
	printf '%s\n' "${stat%% *}"
}

_daemon_alive() {
	local state
	state=$(_daemon_state "$1") || return 1
	[[ $state != Z && $state != X ]]
}

daemon_pid() {
	local pidfile=$1 mark=$2 pid cmdline
	[[ -r $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] && _daemon_alive "$pid" || return 1
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	[[ $cmdline == *"$mark"* ]] || return 1
	printf '%s\n' "$pid"
}

# _daemon_sessions SID...: the live processes of these sessions.
_daemon_sessions() {
	local f stat pid fields
	for f in /proc/[0-9]*/stat; do
		read -r stat 2>/dev/null <"$f" || continue
		pid=${stat%% *}
		read -r -a fields <<<"${stat##*) }" # state ppid pgrp session ...
		[[ ${fields[0]} != Z && ${fields[0]} != X ]] || continue
		[[ " $* " == *" ${fields[3]} "* ]] && printf '%s\n' "$pid"
	done
	return 0
}

# _daemon_wait SECONDS SID...: until no process of these sessions is left.
_daemon_wait() {
	local i ticks=$(($1 * 10))
	shift
	for ((i = 0; i < ticks; i++)); do
		[[ -z $(_daemon_sessions "$@") ]] && return 0
		sleep 0.1
	done
	[[ -z $(_daemon_sessions "$@") ]]
}

daemon_stop() {
	local sids=() pidfiles=() pid name left
	while (($# >= 2)); do
		pidfiles+=("$1")
		if pid=$(daemon_pid "$1" "$2"); then
			sids+=("$pid")
			name=${1##*/}
			printf '%s: stopping %s (pid %s)\n' "${PROG:-daemon}" "${name%.pid}" "$pid" >&2
			kill -TERM "$pid" 2>/dev/null || true
		fi
		shift 2
	done
	if ((${#sids[@]})) && ! _daemon_wait "${DAEMON_STOP_WAIT:-10}" "${sids[@]}"; then
		left=$(_daemon_sessions "${sids[@]}" | tr '\n' ' ')
		printf '%s: still running %s s after SIGTERM, sending SIGKILL to %s\n' \
			"${PROG:-daemon}" "${DAEMON_STOP_WAIT:-10}" "$left" >&2
		# shellcheck disable=SC2086 # one pid per word
		kill -KILL $left 2>/dev/null || true
		if ! _daemon_wait 5 "${sids[@]}"; then
			printf '%s: processes still alive after SIGKILL: %s\n' "${PROG:-daemon}" \
				"$(_daemon_sessions "${sids[@]}" | tr '\n' ' ')" >&2
			return 1 # the pid files stay, so that a later stop finds them
		fi
	fi
	rm -f -- "${pidfiles[@]}"
}

daemon_kill() {
	local pid
	pid=$(daemon_pid "$1" "$2") || return 1
	kill -KILL "$pid" 2>/dev/null || true
	_daemon_wait 10 "$pid"
}

daemon_paused() {
	[[ $(_daemon_state "$1" 2>/dev/null) == T ]]
}

render() {
	local template=$1 out=$2 text pair
	shift 2
	text=$(<"$template") || return 1
	for pair; do
		# quoted replacement: an & or \ in the value stays what it is
		text=${text//"@${pair%%=*}@"/"${pair#*=}"}
	done
	if [[ $text =~ @[A-Z][A-Z_]*@ ]]; then
		printf '%s: %s: no value for %s\n' "${PROG:-render}" "$template" "${BASH_REMATCH[0]}" >&2
		return 1
	fi
	printf '%s\n' "$text" >"$out"
}
