//! A refusal: an answer roundhouse makes itself instead of relaying a backend's, for a
//! `ProxyError` (a bad head, a full queue, no backend, a backend that failed). Every one
//! goes through `answer`, which writes it, logs it and counts it, wherever it happens:
//! `connection.rs` for a head it cannot read, `client.rs` for a connection turned away
//! at a full queue, `proxy.rs` for a request that could not be proxied.
//!
//! `Tally` is where every finished request is written down, refused or relayed: its
//! access-log line (`access_log.rs`) and its counters (`metrics.rs`).

use std::sync::Arc;
use std::time::Duration;

use crate::access_log::{AccessLog, Entry};
use crate::balancer::Backend;
use crate::error::ProxyError;
use crate::http1::{ClientConn, write_error};
use crate::metrics::Stats;

/// The access log and the counters of requests that no backend was tried for. Cloned
/// into every thread that answers clients: the workers, the acceptor and the waiting
/// room.
#[derive(Clone)]
pub struct Tally {
    log: AccessLog,
    /// Rendered as `backend="none"`; the admin interface reads the same `Arc`.
    no_backend: Arc<Stats>,
}

impl Tally {
    pub fn new(log: AccessLog, no_backend: Arc<Stats>) -> Tally {
        Tally { log, no_backend }
    }

    /// Whether the request's Referer and User-Agent are worth keeping for the line.
    pub fn wants_client_fields(&self) -> bool {
        self.log.wants_client_fields()
    }

    /// Counts one finished request against `backend`, the one that answered or was
    /// tried last (`None`: no backend was tried), then writes its line. `error` says why
    /// it failed, if it did. Counted first, so that a line on stdout means the count is
    /// already there.
    pub fn record(&self, entry: &Entry<'_>, backend: Option<&Backend>, error: Option<&ProxyError>) {
        let stats = backend.map_or(&*self.no_backend, Backend::stats);
        let backend_fault = error.is_some_and(ProxyError::backend_fault);
        stats.record(entry.status, entry.started.elapsed(), backend_fault);
        self.log.write(entry, error);
    }

    /// A tunnel's request, in two parts: counted when its `101` is relayed (`took`: from
    /// its head to the `101`, so that tunnels do not stretch the request durations), and
    /// its line written when the tunnel closes (`log_tunnel`).
    pub fn count_upgrade(&self, backend: &Backend, took: Duration) {
        backend.stats().record(101, took, false);
    }

    /// The line of a tunnel that closed, counted already by `count_upgrade`.
    pub fn log_tunnel(&self, entry: &Entry<'_>) {
        self.log.write(entry, None);
    }
}

/// One answer roundhouse makes itself.
pub struct Refusal<'a> {
    pub error: &'a ProxyError,
    /// Header lines sent with it, such as `("Retry-After", "1")`.
    pub extra: &'a [(&'a str, &'a str)],
    /// Whether the answer leaves the connection open for another request.
    pub keep_alive: bool,
}

/// Answers `refusal.error` on `stream` with its status and short text (nothing when
/// there is nobody left to answer: `ClientGone`), then logs and counts it through
/// `tally` with `entry` (its status is set here) and `backend` (see `Tally::record`).
/// `out` is the buffer the answer is written through. Returns whether the connection
/// may carry another request: the answer kept it alive and went out whole.
///
/// Never blocks longer than a write to `stream` does: on a non-blocking socket (the
/// acceptor's and the waiting room's turn-aways) an answer that does not fit in the
/// socket buffer is cut short, not waited for.
pub fn answer(
    tally: &Tally,
    conn: &mut ClientConn,
    out: &mut Vec<u8>,
    refusal: Refusal<'_>,
    entry: &mut Entry<'_>,
    backend: Option<&Backend>,
) -> bool {
    let err = refusal.error;
    let written = match err.status() {
        Some(status) => {
            entry.status = status;
            let text = err.client_text();
            write_error(conn, out, status, text, refusal.extra, refusal.keep_alive).is_ok()
        }
        None => false,
    };
    tally.record(entry, backend, Some(err));
    written && refusal.keep_alive
}
