# Plain targets over cargo. Every cargo command takes --locked: the build uses exactly
# the versions in Cargo.lock and fails rather than update it.

CARGO ?= cargo

.PHONY: all build run test lint check clean bench bench-scale bench-pick bench-limits chaos flood tunnels

all: build

# Release builds of roundhouse and the demo backend (examples/backend.rs).
build:
	$(CARGO) build --release --locked --bins --examples

# The blog's setup: backends on 127.0.0.1:8081 and :8082, roundhouse on :8000.
# Ctrl-C stops all three.
run: build
	scripts/demo.sh

# The whole test suite: unit, integration and doc tests.
test:
	$(CARGO) test --locked

# The gates CI runs before the tests: formatting, lints and docs (warnings are errors),
# and the build without TLS.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps
# The TLS-free build (`--no-default-features`) must keep building; its own target
# directory leaves the default build alone.
	$(CARGO) build --locked --no-default-features --target-dir target/no-tls

# What CI holds the code to: the gates, then the tests (.ci/run does the same).
check: lint test

# The full harness, S1-S8: side by side with nginx, HAProxy, the blog's Go balancer, and
# Apache httpd and Caddy when installed (needs wrk, nginx-light, haproxy, golang-go,
# openssl and the shared harness; see README "Benchmark"); about 15-25 minutes.
# Pass harness options with ARGS, e.g. make bench ARGS="--scenarios S1,S5 --reps 3".
bench: build
	scripts/bench.sh $(ARGS)

# Do clients notice when backends die? 3 demo backends behind roundhouse, one killed
# (SIGKILL) and restarted every 2 s for 60 s while 8 clients send GETs; prints requests
# sent, failed and the worst latency. Loopback only; kills only what it started.
# Pass options with ARGS, e.g. make chaos ARGS="--seconds 20 --lb-arg=--health-path --lb-arg=/".
chaos: build
	$(CARGO) run --release --locked --example chaos -- $(ARGS)

# Silent, slow and abrupt clients (held connections, slowloris, slow uploads and reads,
# resets, connect storms, unread pipelines, big heads) against roundhouse, then nginx and
# HAProxy when installed, while normal requests go through; prints a table per balancer
# (README "Reliability under floods"). Loopback only, about 2-3 minutes per balancer;
# builds first. Pass options with ARGS, e.g. make flood ARGS="--scale 0.2 --attacks silent".
flood:
	scripts/flood.sh $(ARGS)

# What Upgrade tunnels cost: 10,000 idle ones held 10 s (threads, RSS, and whether a
# plain GET is answered meanwhile), then one tunnel's MB/s streaming 2 GiB down and
# echoing 512 MiB, through roundhouse and then nginx when installed; prints one table
# (README "WebSocket and Upgrade"). Loopback only, about 2-3 minutes; builds first.
# Pass options with ARGS, e.g. make tunnels ARGS="--count 2000 --runs 1".
tunnels:
	scripts/tunnels.sh $(ARGS)

# ns per pick for every strategy, 2/16/256 backends, 1/2/8 threads (no network).
bench-pick:
	$(CARGO) bench --locked --bench pick

# ns per --rate-limit token and per --max-connections-per-client place, 1/2 threads.
bench-limits:
	$(CARGO) bench --locked --bench limits

# How req/s and memory grow with client connections and backends (needs wrk, nginx).
bench-scale: build
	scripts/scale.sh

clean:
	$(CARGO) clean
