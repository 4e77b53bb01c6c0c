//! Helpers for the integration tests, all on real loopback sockets bound to port 0:
//! a scripted raw-TCP backend that records what it received, a balancer started
//! in-process or as a child process, a small HTTP/1.1 client that reads responses
//! exactly as they came off the wire, and both ends of a WebSocket or raw tunnel.
//!
//! Nothing here sleeps for a fixed time to "let things settle": readiness is polled,
//! and every wait on the test side is bounded by [`PATIENCE`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

mod backend;
mod client;
mod data;
mod dns;
mod process;
#[cfg(feature = "tls")]
mod tls;
mod websocket;

pub use backend::*;
pub use client::*;
pub use data::*;
pub use dns::*;
#[cfg(feature = "tls")]
pub use tls::*;
pub use websocket::*;

/// What a request seen by a test backend and a response seen by a test client share:
/// header lines in order, as received, and a body.
pub trait Fields {
    fn fields(&self) -> &[(String, String)];
    fn body_bytes(&self) -> &[u8];

    /// The first value of the header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).into_iter().next()
    }

    /// Every value of the header `name`, in order.
    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.fields()
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn body_str(&self) -> String {
        String::from_utf8_lossy(self.body_bytes()).into_owned()
    }
}
pub use process::*;

/// The longest the test side waits for anything: a read, a condition, a child process.
/// Generous on purpose (a loaded 2-core machine must not make a test flaky); a passing
/// test never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds, panicking with `what` after [`PATIENCE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        if Instant::now() > deadline {
            panic!("gave up waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

// The balancer, in-process.

/// A balancer running in this process. Keep it alive for as long as the test uses it.
pub struct Balancer {
    pub addr: SocketAddr,
    _running: roundhouse::Running,
}

impl Balancer {
    /// The admin interface's address; panics unless started with `--admin`.
    pub fn admin(&self) -> SocketAddr {
        self._running.admin_addr().expect("started with --admin")
    }

    /// The bound `--tls-listen` addresses, in the order given.
    #[cfg(feature = "tls")]
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self._running.tls_addrs()
    }

    /// Client connections the balancer holds open now.
    pub fn open_connections(&self) -> usize {
        self._running.open_connections()
    }

    /// Reloads and the resolver thread, as SIGHUP drives them.
    pub fn control(&self) -> roundhouse::reload::Control {
        self._running.control()
    }

    /// The backend set in use now, to look at (or change) a backend's state directly.
    pub fn current(&self) -> std::sync::Arc<roundhouse::balancer::Balancer> {
        self._running.control().current()
    }
}

/// Starts a balancer in front of `backends`, listening on 127.0.0.1:0, with 4 workers and
/// logging off unless `extra` says otherwise.
pub fn start_balancer(backends: &[&Backend], extra: &[&str]) -> Balancer {
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    start_balancer_on(&addrs, extra)
}

/// Like [`start_balancer`], with backend addresses (dead ones, for example).
pub fn start_balancer_on(backends: &[SocketAddr], extra: &[&str]) -> Balancer {
    let mut args: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into()];
    args.extend(balancer_args(backends, extra));
    start_balancer_with(&args)
}

/// The arguments for `backends` and `extra`, with 4 workers and logging off unless
/// `extra` says otherwise; no listener.
pub fn balancer_args(backends: &[SocketAddr], extra: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for b in backends {
        args.push("--backend".into());
        args.push(b.to_string());
    }
    if !extra.contains(&"--workers") {
        args.extend(["--workers".into(), "4".into()]);
    }
    if !extra.contains(&"--log") {
        args.extend(["--log".into(), "off".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts a balancer in this process with exactly `args`.
pub fn start_balancer_with(args: &[String]) -> Balancer {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = roundhouse::Config::from_args(&refs[..])
        .unwrap_or_else(|e| panic!("config from {args:?}: {e}"));
    let running = roundhouse::start(config).expect("start the balancer");
    let addr = running.local_addr();
    Balancer {
        addr,
        _running: running,
    }
}
