//! roundhouse: an HTTP/1.1 load balancer on plain threads and blocking sockets.
//!
//! The rule that shapes it: **a worker only ever works; all waiting for a client
//! happens on the event side** (`waiting_room`: one thread, one epoll set). The path of
//! one request, file by file:
//!
//! 1. `listener` accepts a connection (at most `--max-connections` at once) and makes it
//!    a `client`; the acceptor reads once without waiting. A whole request head goes on
//!    a bounded queue (a full queue gets 503 right there, `client::refuse`, and a client
//!    over its connections in `limits` gets 429); anything less goes to the
//!    `waiting_room`, which reads the rest as it comes and queues the connection once
//!    the head is whole.
//! 2. `pool` runs worker threads, started as the load needs them up to `--workers`,
//!    that take connections off the queue.
//! 3. `connection` serves one connection: it parses the buffered head with `http1` (our
//!    own strict HTTP/1.1 front door on httparse), has its body gathered whole first
//!    (`http1::Gather` into a `spill`, by the waiting room if the client is slow), and
//!    hands the request to `proxy`.
//! 4. `proxy` is the main path: `limits` takes the request's token of `--rate-limit`,
//!    `balancer` picks a backend, `target` and `headers` shape the request, `upstream`
//!    forwards it and `relay` streams the answer back through `http1` and an `outbox`,
//!    which never waits for the client: what it cannot take yet is kept in a `spill`. A
//!    backend that fails is reported to `health` (which alone decides which backends
//!    are up, with one thread of active checks); a request whose backend broke off
//!    before answering is sent again when `retry` says it is safe and affordable.
//! 5. Whatever roundhouse answers itself (a head it refuses, a full queue, a failure
//!    `error` gives a status) goes out through `refuse`, which also writes the
//!    `access_log` line and counts it, as it does for every relayed answer.
//! 6. Back in `connection`, the worker hands an answer its client has not taken whole
//!    to the waiting room, which writes it out; it serves the next request if it comes
//!    at once, or parks the connection in the waiting room, which queues it again when
//!    the next head is whole.
//!
//! `server` wires these together; `cli`, `config` and `config_file` read the command
//! line and the `--config` file. `signals` turns SIGHUP into a `reload` and SIGTERM into
//! a graceful `shutdown`. A backend given by host name is looked up with `dns`, and
//! again and again by the resolver thread of `discovery`, which changes the backend set
//! through `reload`.
//!
//! Along the way each request is counted in `metrics` (atomics only), notes its
//! attempts in a `trace` (the `--trace-header` answer headers) and gets a `request_id`;
//! `admin` serves the counters, a JSON status, the status page, backend changes and the
//! `/live` and `/ready` probes (`readiness`) on a port of its own (`--admin`).

/// Writes one line to stderr like `eprintln!`, but never panics: when whoever reads our
/// output is gone (a pipe closed first, as a terminal's Ctrl-C can do), a failed write
/// must not take down the thread that had something to say (the signal thread, the
/// waiting room). Every message of the balancer goes through this.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod access_log;
pub mod admin;
pub mod balancer;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod config_file;
pub mod connection;
pub mod discovery;
pub mod dns;
pub mod error;
pub mod headers;
pub mod health;
pub mod http1;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod outbox;
#[cfg(feature = "tls")]
pub mod pem;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod readiness;
pub mod redirect;
pub mod refuse;
pub mod relay;
pub mod reload;
pub mod request_id;
pub mod retry;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod spill;
pub mod target;
#[cfg(feature = "tls")]
pub mod tls_certs;
#[cfg(feature = "tls")]
pub mod tls_session;
pub mod trace;
pub mod tunnels;
pub mod upstream;
pub mod waiting_room;
pub mod wire;

pub use config::Config;
pub use error::ProxyError;
pub use server::{Running, start};
