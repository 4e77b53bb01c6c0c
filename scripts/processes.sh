# Shared by demo.sh, flood.sh and tunnels.sh (sourced, not run): start processes, wait for their
# ports, and stop exactly the processes started here, by PID. The sourcing script sets
# HOST, defines `say`, and keeps the PIDs it starts in the array `pids`; it may define
# `cleanup`, which `stop_all` calls last.

pids=()

# Is something accepting TCP connections on HOST:$1? bash's /dev/tcp, no tools.
listening() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Waits up to $3 seconds (default 10) for pid $2 to listen on port $1; fails early if
# it exits.
wait_listening() {
    local port=$1 pid=$2 seconds=${3:-10} _
    for _ in $(seq $((seconds * 10))); do
        listening "$port" && return 0
        kill -0 "$pid" 2>/dev/null || { say "process $pid exited before listening on :$port"; return 1; }
        sleep 0.1
    done
    say "nothing listens on :$port after $seconds s"
    return 1
}

# Stops one process started here: SIGTERM, up to ~5 s to exit, then SIGKILL; and
# forgets it.
stop() {
    local pid=$1 _
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid ignored SIGTERM for 5 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    local kept=() p
    for p in "${pids[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    pids=("${kept[@]}")
}

# Stops every process started here. Background jobs of a non-interactive shell ignore
# SIGINT, so a Ctrl-C reaches them only through this function, from the traps below.
# shellcheck disable=SC2317  # called from the traps, which shellcheck does not follow
stop_all() {
    trap - INT TERM HUP EXIT
    local pid
    for pid in "${pids[@]}"; do stop "$pid"; done
    if declare -F cleanup >/dev/null; then cleanup; fi
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all; exit 129' HUP
trap stop_all EXIT

# The worker PIDs of the nginx master $1, printed on one line: they are forked after it
# binds its port, so this waits up to ~5 s for at least two.
nginx_workers() {
    local master=$1 _ workers=()
    for _ in $(seq 50); do
        read -r -a workers <"/proc/$master/task/$master/children" || true
        ((${#workers[@]} >= 2)) && break
        sleep 0.1
    done
    echo "${workers[@]}"
}
