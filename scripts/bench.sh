#!/usr/bin/env bash
# `make bench`: roundhouse side by side with nginx, HAProxy, the blog's Go balancer and,
# when they are installed, Apache httpd (event MPM) and Caddy, in front of the same two
# nginx backends, with wrk straight at one backend (`direct`) as the physical limit,
# through the shared harness (../shared/bench, or BENCH_HARNESS=path/to/run.sh): every
# scenario, S1-S8, TLS ones included. Loopback only; every load is bounded in time.
# Extra arguments go to the harness and win over these, e.g.
#   make bench ARGS="--scenarios S1,S5 --reps 3"
#   make bench ARGS="--balancers nginx,own"
#
# roundhouse runs with --log off: the peers log nothing either (nginx has access_log off).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

harness=${BENCH_HARNESS:-../shared/bench/run.sh}
if [[ ! -f $harness ]]; then
    echo "bench: no harness at $harness (set BENCH_HARNESS to the shared bench/run.sh)" >&2
    exit 1
fi
for tool in wrk nginx haproxy go openssl; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench: '$tool' is missing: apt-get install -y wrk nginx-light haproxy golang-go openssl (and apache2 caddy for those peers)" >&2
        exit 1
    fi
done
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$PWD/$target_dir
binary=$target_dir/release/roundhouse
# Every peer that is installed; the harness refuses a named one that is not.
balancers=direct,nginx,haproxy
command -v apache2 >/dev/null && balancers+=,apache
command -v caddy >/dev/null && balancers+=,caddy
balancers+=,goseed,own
echo "bench: balancers $balancers" >&2
exec bash "$harness" --balancers "$balancers" --own "$binary --log off" "$@"
