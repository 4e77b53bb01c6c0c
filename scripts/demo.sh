#!/usr/bin/env bash
# The blog's setup, for `make run`: two demo backends on 127.0.0.1:8081 and :8082 and
# roundhouse on 127.0.0.1:8000 in front of them (its defaults). Ctrl-C, SIGTERM or
# SIGHUP stops all three: the traps below kill exactly the processes started here.
#
# Builds nothing: `make run` builds the release binaries first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Where cargo put them: ./target unless CARGO_TARGET_DIR says otherwise.
readonly TARGET=${CARGO_TARGET_DIR:-target}
readonly BACKEND=$TARGET/release/examples/backend
readonly BALANCER=$TARGET/release/roundhouse
readonly BACKEND_PORTS=(8081 8082)
readonly LISTEN_PORT=8000
readonly HOST=127.0.0.1

pids=()

say() { printf 'demo: %s\n' "$*" >&2; }

# Is something accepting TCP connections on HOST:$1? Uses bash's /dev/tcp, no tools.
listening() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Stops every process started here: SIGTERM, up to ~5 s to exit, then SIGKILL.
# Background jobs of a non-interactive shell ignore SIGINT, so a Ctrl-C reaches them
# only through this function.
# shellcheck disable=SC2317  # called from the traps below, which shellcheck does not follow
stop_all() {
    trap - INT TERM HUP EXIT
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local _ pid
    for _ in $(seq 50); do
        local alive=()
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi
        done
        ((${#alive[@]})) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            say "pid $pid ignored SIGTERM for 5 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait "${pids[@]}" 2>/dev/null || true
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all; exit 129' HUP
trap stop_all EXIT

# Waits up to ~5 s for $2 (pid) to listen on port $1; fails early if it exits.
wait_listening() {
    local port=$1 pid=$2 _
    for _ in $(seq 50); do
        listening "$port" && return 0
        kill -0 "$pid" 2>/dev/null || { say "process $pid exited before listening on :$port"; return 1; }
        sleep 0.1
    done
    say "nothing listens on :$port after 5 s"
    return 1
}

for bin in "$BACKEND" "$BALANCER"; do
    [[ -x $bin ]] || { say "$bin is missing; run 'make run' (it builds first)"; exit 1; }
done
for port in "$LISTEN_PORT" "${BACKEND_PORTS[@]}"; do
    if listening "$port"; then
        say "port $port on $HOST is already taken; stop what listens there (ss -ltnp 'sport = :$port') and retry"
        exit 1
    fi
done

for port in "${BACKEND_PORTS[@]}"; do
    # The backend logs "backend :PORT ..." on each line, so its output needs no prefix.
    "$BACKEND" --port "$port" &
    pids+=("$!")
    wait_listening "$port" "$!"
done

# $! is roundhouse itself, not the prefixing loop, which ends when roundhouse's output
# closes.
"$BALANCER" > >(while IFS= read -r line; do printf 'roundhouse | %s\n' "$line"; done) 2>&1 &
balancer=$!
pids+=("$balancer")
wait_listening "$LISTEN_PORT" "$balancer"
say "ready: curl http://$HOST:$LISTEN_PORT/hello   (Ctrl-C stops all three)"

# A trapped signal interrupts this wait; the EXIT trap stops the backends either way.
status=0
wait "$balancer" || status=$?
say "roundhouse exited with status $status"
exit "$status"
