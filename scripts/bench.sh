#!/usr/bin/env bash
# `make bench`: roundhouse side by side with nginx, HAProxy and the blog's Go balancer,
# in front of the same two nginx backends, through the shared harness (../shared/bench,
# or BENCH_HARNESS=path/to/run.sh). Loopback only; every load is bounded in time.
# Extra arguments go to the harness, e.g.  make bench ARGS="--scenarios S1,S5 --reps 3".
#
# roundhouse runs with --log off: the peers log nothing either (nginx has access_log off).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

harness=${BENCH_HARNESS:-../shared/bench/run.sh}
if [[ ! -f $harness ]]; then
    echo "bench: no harness at $harness (set BENCH_HARNESS to the shared bench/run.sh)" >&2
    exit 1
fi
for tool in wrk nginx haproxy go; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench: '$tool' is missing: apt-get install -y wrk nginx-light haproxy golang-go" >&2
        exit 1
    fi
done
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$PWD/$target_dir
binary=$target_dir/release/roundhouse
exec bash "$harness" --own "$binary --log off" "$@"
