#!/usr/bin/env bash
# How roundhouse's cost grows: req/s and peak RSS at 10, 100, 1,000 and 5,000 client
# connections (2 backends), and with 2, 16 and 64 backends (100 connections). Backends
# are one nginx serving `hello world!` on consecutive ports from 18101. Loopback only,
# each load bounded by DURATION seconds; only the PIDs started here are stopped.
#   scripts/scale.sh [DURATION]        (needs wrk and nginx)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

duration=${1:-5}
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$PWD/$target_dir
binary=$target_dir/release/roundhouse
listen=127.0.0.1:18100
work=$(mktemp -d "${TMPDIR:-/tmp}/rhscale.XXXXXX")
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# One nginx, one listener per backend port.
{
    echo "daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/error.log warn;"
    echo "events { worker_connections 16384; }"
    echo "http { access_log off; keepalive_requests 10000000;"
    for d in client_body proxy fastcgi uwsgi scgi; do echo "${d}_temp_path $work/$d;"; done
    for port in $(seq 18101 18164); do echo "server { listen 127.0.0.1:$port; location / { return 200 'hello world!'; } }"; done
    echo "}"
} > "$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0; sleep 0.05; done; echo "scale: $1 never listened" >&2; exit 1; }
wait_port 127.0.0.1:18164

# run BACKENDS CONNS: starts roundhouse fresh, prints one table row.
run() {
    local backends=$1 conns=$2 args=() port
    for port in $(seq 18101 $((18100 + backends))); do args+=(--backend "127.0.0.1:$port"); done
    "$binary" --listen "$listen" --log off "${args[@]}" > "$work/rh.log" 2>&1 & local rh=$!
    pids+=("$rh")
    wait_port "$listen"
    local rps
    rps=$(wrk -t2 -c"$conns" -d"${duration}s" "http://$listen/" 2>/dev/null | awk '/Requests\/sec/ {printf "%.0f", $2}')
    local hwm threads
    hwm=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$rh/status")
    threads=$(awk '/Threads/ {print $2}' "/proc/$rh/status")
    kill "$rh"; wait "$rh" 2>/dev/null || true
    printf '| %s | %s | %s | %s | %s |\n' "$conns" "$backends" "$rps" "$hwm" "$threads"
}

echo "| client connections | backends | req/s | peak RSS MiB | threads |"
echo "|--:|--:|--:|--:|--:|"
for conns in 10 100 1000 5000; do run 2 "$conns"; done
for backends in 16 64; do run "$backends" 100; done
