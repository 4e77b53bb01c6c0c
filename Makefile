# Plain targets over cargo. Every cargo command takes --locked: the build uses exactly
# the versions in Cargo.lock and fails rather than update it.

CARGO ?= cargo

.PHONY: all build run test check clean

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

# What CI should hold the code to: formatting, lints, tests, docs; warnings are errors.
check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) test --locked
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps

clean:
	$(CARGO) clean
