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

say() { printf 'demo: %s\n' "$*" >&2; }

# listening, wait_listening, stop_all and the traps that stop what starts here.
# shellcheck source=scripts/processes.sh
source scripts/processes.sh

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
    wait_listening "$port" "$!" 5
done

# $! is roundhouse itself, not the prefixing loop, which ends when roundhouse's output
# closes.
"$BALANCER" > >(while IFS= read -r line; do printf 'roundhouse | %s\n' "$line"; done) 2>&1 &
balancer=$!
pids+=("$balancer")
wait_listening "$LISTEN_PORT" "$balancer" 5
say "ready: curl http://$HOST:$LISTEN_PORT/hello   (Ctrl-C stops all three)"

# A trapped signal interrupts this wait; the EXIT trap stops the backends either way.
status=0
wait "$balancer" || status=$?
say "roundhouse exited with status $status"
exit "$status"
