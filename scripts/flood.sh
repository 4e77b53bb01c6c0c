#!/usr/bin/env bash
# `make flood`: the flood tool (examples/flood/) against roundhouse, then nginx, then
# HAProxy when they are installed, each in front of the same two backends (the tool's
# own --serve-backend mode: `/` and a 1 MiB `/1m`). Prints one table per balancer.
#
# Each balancer is started fresh for its run, sampled by PID (nginx: its master and
# workers), and stopped after it. Loopback only; ports 18000-18002 and 18081-18082,
# apart from `make run`'s. Kills only the processes it started, by PID.
# Extra arguments go to the flood tool, e.g.  make flood ARGS="--scale 0.2".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly HOST=127.0.0.1
readonly ROUNDHOUSE_PORT=18000 NGINX_PORT=18001 HAPROXY_PORT=18002
readonly BACKEND_PORTS=(18081 18082)
TARGET=${CARGO_TARGET_DIR:-target}
readonly BALANCER=$TARGET/release/roundhouse FLOOD=$TARGET/release/examples/flood

tmp=

say() { printf 'flood.sh: %s\n' "$*" >&2; }

# listening, wait_listening, stop, stop_all and the traps that stop what starts here.
# shellcheck source=scripts/processes.sh
source scripts/processes.sh
# shellcheck disable=SC2317  # called by stop_all
cleanup() { [[ -z $tmp ]] || rm -rf "$tmp"; }

# Renders contrib/flood/$1 into $tmp/$2 with this run's directory and ports.
render() {
    sed -e "s|@DIR@|$tmp|g" -e "s|@PORT@|$3|g" \
        -e "s|@BACKEND1@|${BACKEND_PORTS[0]}|g" -e "s|@BACKEND2@|${BACKEND_PORTS[1]}|g" \
        "contrib/flood/$1" >"$tmp/$2"
}

# Runs the flood tool against label $1 on port $2, sampling the PIDs that follow;
# the table goes to $tmp/tables.md, the progress to stderr.
flood() {
    local label=$1 port=$2
    shift 2
    local pid_args=() pid
    for pid in "$@"; do pid_args+=(--pid "$pid"); done
    say "flooding $label on $HOST:$port"
    local started=$SECONDS
    "$FLOOD" --target "$HOST:$port" --label "$label" "${pid_args[@]}" "${ARGS[@]}" >>"$tmp/tables.md"
    say "$label done in $((SECONDS - started)) s"
}

ARGS=("$@")

# 3000 held connections on each side need more than the usual 1024 open files; a
# container may cap the hard limit below 65536, and its limit is then the best we get.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < 12000)); then
    say "the open-files limit is $(ulimit -n); the silent attack needs about 12000 (or pass --scale)"
fi

${CARGO:-cargo} build --release --locked --bins --examples

for port in "$ROUNDHOUSE_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "${BACKEND_PORTS[@]}"; do
    if listening "$port"; then
        say "port $port on $HOST is already taken; stop what listens there (ss -ltnp 'sport = :$port') and retry"
        exit 1
    fi
done
tmp=$(mktemp -d -t roundhouse-flood.XXXXXX)
# nginx's workers run as another user; they must reach their temp directories.
chmod 755 "$tmp"

backend_args=()
for port in "${BACKEND_PORTS[@]}"; do backend_args+=(--serve-backend "$HOST:$port"); done
"$FLOOD" "${backend_args[@]}" 2>"$tmp/backend.log" &
pids+=("$!")
for port in "${BACKEND_PORTS[@]}"; do wait_listening "$port" "$!"; done

# roundhouse with its default flags; --log off as the peers log nothing either.
"$BALANCER" --listen "$HOST:$ROUNDHOUSE_PORT" \
    --backend "$HOST:${BACKEND_PORTS[0]}" --backend "$HOST:${BACKEND_PORTS[1]}" \
    --log off 2>"$tmp/roundhouse.log" &
balancer=$!
pids+=("$balancer")
wait_listening "$ROUNDHOUSE_PORT" "$balancer"
flood roundhouse "$ROUNDHOUSE_PORT" "$balancer"
stop "$balancer"

if command -v nginx >/dev/null; then
    render nginx.conf.in nginx.conf "$NGINX_PORT"
    nginx -c "$tmp/nginx.conf" -p "$tmp" -e "$tmp/nginx-error.log" &
    balancer=$!
    pids+=("$balancer")
    wait_listening "$NGINX_PORT" "$balancer"
    # The master and its workers, whose figures the tool sums.
    read -r -a workers <<<"$(nginx_workers "$balancer")"
    flood nginx "$NGINX_PORT" "$balancer" "${workers[@]}"
    stop "$balancer"
else
    say "nginx is not installed (apt-get install -y nginx-light); skipping it"
fi

if command -v haproxy >/dev/null; then
    render haproxy.cfg.in haproxy.cfg "$HAPROXY_PORT"
    haproxy -db -f "$tmp/haproxy.cfg" 2>"$tmp/haproxy.log" &
    balancer=$!
    pids+=("$balancer")
    wait_listening "$HAPROXY_PORT" "$balancer"
    flood HAProxy "$HAPROXY_PORT" "$balancer"
    stop "$balancer"
else
    say "haproxy is not installed (apt-get install -y haproxy); skipping it"
fi

printf '\nflood at %s (commit %s), %s cores, load %s\n' "$(date -u +%Y-%m-%d)" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(nproc)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
cat "$tmp/tables.md"
