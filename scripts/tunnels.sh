#!/usr/bin/env bash
# `make tunnels`: Upgrade tunnels (WebSocket and the like) through roundhouse, then nginx
# when it is installed, both in front of the same backend (the tunnel tool's own
# --serve-backend mode, examples/tunnels.rs). Each balancer is started fresh, and then:
#   (a) 10,000 idle tunnels held for 10 s, while the tool sends a plain GET through the
#       balancer once a second and samples the balancer's threads and RSS by PID (nginx:
#       its master and workers, summed); after the hold, one byte echoed on each tunnel;
#   (b) one tunnel streaming 2 GiB down, 3 runs, the median MB/s;
#   (c) one echo tunnel of 512 MiB (sent and read back at once), 3 runs, the median.
# Then (b) and (c) straight to the backend, the loopback's own ceiling on this machine.
# Prints one table. MB/s are 10^6 bytes a second.
#
# Loopback only; ports 18210 (roundhouse), 18211 (nginx) and 18291 (the backend), apart
# from `make run`'s and `make flood`'s. Kills only the processes it started, by PID.
# Options (make tunnels ARGS="..."): --count N (default 10000), --hold DUR (default 10s),
# --runs N (default 3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly HOST=127.0.0.1
readonly ROUNDHOUSE_PORT=18210 NGINX_PORT=18211 BACKEND_PORT=18291
readonly STREAM_BYTES=$((2 << 30)) ECHO_BYTES=$((512 << 20))
TARGET=${CARGO_TARGET_DIR:-target}
readonly BALANCER=$TARGET/release/roundhouse TOOL=$TARGET/release/examples/tunnels

count=10000 hold=10s runs=3
while (($#)); do
    case $1 in
    --count) count=${2:?--count needs a number}; shift 2 ;;
    --hold) hold=${2:?--hold needs a duration}; shift 2 ;;
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    *) printf 'tunnels.sh: unknown option %s (known: --count N, --hold DUR, --runs N)\n' "$1" >&2; exit 2 ;;
    esac
done
if ! [[ $runs =~ ^[1-9]$ ]]; then
    printf 'tunnels.sh: --runs: %s is not between 1 and 9\n' "$runs" >&2
    exit 2
fi

tmp=

say() { printf 'tunnels.sh: %s\n' "$*" >&2; }

# listening, wait_listening, stop, stop_all and the traps that stop what starts here.
# shellcheck source=scripts/processes.sh
source scripts/processes.sh
# shellcheck disable=SC2317  # called by stop_all
cleanup() { [[ -z $tmp ]] || rm -rf "$tmp"; }

# The value of field $1 in the tool's line $2 (name=value, space-separated), or "-".
field() {
    local value
    value=$(sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2")
    printf '%s' "${value:--}"
}

# "median (the runs, sorted)" of the numbers given; "failed" for a run that printed none.
median() {
    local sorted
    mapfile -t sorted < <(printf '%s\n' "$@" | sort -g)
    local middle=${sorted[$((($# - 1) / 2))]}
    local IFS=,
    printf '%s (%s)' "$middle" "${sorted[*]}"
}

# Runs the tool's mode $1 ($2 bytes) against port $3, $runs times: the median MB/s.
throughput() {
    local mode=$1 bytes=$2 port=$3 line values=() _
    for _ in $(seq "$runs"); do
        line=$("$TOOL" "--$mode" "$HOST:$port" --bytes "$bytes") || line=
        values+=("$(field mb_per_s "$line" | sed 's/^-$/failed/')")
    done
    median "${values[@]}"
}

# Measures label $1 on port $2, sampling the PIDs that follow; appends its row.
measure() {
    local label=$1 port=$2
    shift 2
    local pid_args=() pid
    for pid in "$@"; do pid_args+=(--pid "$pid"); done
    say "$label: $count idle tunnels for $hold"
    local line
    line=$("$TOOL" --idle "$HOST:$port" --count "$count" --hold "$hold" "${pid_args[@]}") || line=
    say "$label: streaming $STREAM_BYTES bytes, $runs runs"
    local stream echo
    stream=$(throughput stream "$STREAM_BYTES" "$port")
    say "$label: echoing $ECHO_BYTES bytes, $runs runs"
    echo=$(throughput echo "$ECHO_BYTES" "$port")
    printf '| %s | %s/%s | %s | %s | %s | %s | %s | %s |\n' "$label" \
        "$(field opened "$line")" "$count" "$(field gets "$line")" "$(field echoed "$line")" \
        "$(field threads "$line")" "$(field rss_mib "$line")" "$stream" "$echo" >>"$tmp/rows.md"
}

# Every tunnel is a descriptor in the tool; raise the limit as far as we may.
ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)

${CARGO:-cargo} build --release --locked --bins --examples

for port in "$ROUNDHOUSE_PORT" "$NGINX_PORT" "$BACKEND_PORT"; do
    if listening "$port"; then
        say "port $port on $HOST is already taken; stop what listens there (ss -ltnp 'sport = :$port') and retry"
        exit 1
    fi
done
tmp=$(mktemp -d -t roundhouse-tunnels.XXXXXX)
# nginx's workers run as another user; they must reach their temp directories.
chmod 755 "$tmp"

"$TOOL" --serve-backend "$HOST:$BACKEND_PORT" 2>"$tmp/backend.log" &
pids+=("$!")
wait_listening "$BACKEND_PORT" "$!"

"$BALANCER" --listen "$HOST:$ROUNDHOUSE_PORT" --backend "$HOST:$BACKEND_PORT" \
    --workers 4 --max-connections 20000 --log off 2>"$tmp/roundhouse.log" &
balancer=$!
pids+=("$balancer")
wait_listening "$ROUNDHOUSE_PORT" "$balancer"
measure roundhouse "$ROUNDHOUSE_PORT" "$balancer"
stop "$balancer"

notes=()
if command -v nginx >/dev/null; then
    sed -e "s|@DIR@|$tmp|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@BACKEND@|$BACKEND_PORT|g" \
        -e "s|@NOFILE@|$nofile|g" contrib/tunnels/nginx.conf.in >"$tmp/nginx.conf"
    nginx -c "$tmp/nginx.conf" -p "$tmp" -e "$tmp/nginx-error.log" &
    balancer=$!
    pids+=("$balancer")
    wait_listening "$NGINX_PORT" "$balancer"
    # The master and its workers, whose figures the tool sums.
    read -r -a workers <<<"$(nginx_workers "$balancer")"
    measure nginx "$NGINX_PORT" "$balancer" "${workers[@]}"
    stop "$balancer"
else
    say "nginx is not installed (apt-get install -y nginx-light); skipping it"
    notes+=("nginx is not installed (apt-get install -y nginx-light): no nginx row")
fi

say "direct to the backend: streaming and echoing, $runs runs each"
printf '| direct (no balancer) | - | - | - | - | - | %s | %s |\n' \
    "$(throughput stream "$STREAM_BYTES" "$BACKEND_PORT")" \
    "$(throughput echo "$ECHO_BYTES" "$BACKEND_PORT")" >>"$tmp/rows.md"

# A one-process balancer holds two descriptors a tunnel (client and backend) and needs a
# few more of its own, and two for every other request it serves.
if ((nofile < 2 * count + 64)); then
    notes+=("the open-files hard limit here is $nofile a process; a one-process balancer holds two a tunnel, so it cannot hold $count tunnels and serve a GET beside them")
fi

printf '\ntunnels at %s (commit %s), %s cores, load %s\n\n' "$(date -u +%Y-%m-%d)" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(nproc)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| balancer | idle tunnels open | GETs answered while held | tunnels echoing after | threads | RSS MiB | stream MB/s, median (runs) | echo MB/s, median (runs) |\n'
printf '|---|--:|--:|--:|--:|--:|--:|--:|\n'
cat "$tmp/rows.md"
for note in "${notes[@]}"; do printf '\nnote: %s\n' "$note"; done
