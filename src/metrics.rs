//! Counters and their names: what the balancer counts about the requests it serves, kept
//! in atomics so that counting costs the request path no lock and no allocation. Each
//! `Backend` (balancer/) carries one `Stats`; `refuse::Tally` counts every finished
//! request with `Stats::record` (those no backend was tried for in a `Stats` of their
//! own), `trace.rs` its retries with `record_retry`, and health.rs the
//! ejections with `record_ejection`. The admin interface (`admin.rs`) reads them and
//! renders the Prometheus text and /status.json; the metric names and help texts live
//! here, next to what they count. A leaf: it uses nothing else in the crate, so that
//! whatever counts can use it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request duration histogram's buckets, in seconds (Prometheus's
/// default ladder with 1 ms in front: a balancer's answers are often faster than 5 ms).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The same bounds in microseconds, for comparing without floating point.
const BUCKET_MICROS: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// The `code` label values of `roundhouse_requests_total`: status classes, as HAProxy
/// counts them. "other" is a request that ended without a status (the client left).
pub const CODE_CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// One backend's counters (or, in `refuse::Tally`, those of requests no backend was tried
/// for).
/// Every field only grows; `record`, `record_retry` and `record_ejection` are its only
/// writers.
/// Aligned like the backend's load fields, for the same reason: every request writes
/// here, and two backends' counters must not share a cache line.
#[repr(align(128))]
#[derive(Default)]
pub struct Stats {
    /// Finished requests by status class, indexed like `CODE_CLASSES`.
    by_class: [AtomicU64; 6],
    /// Requests that ended in a 5xx status or broke off on the backend's side.
    errors: AtomicU64,
    /// Attempts on this backend that failed and were tried again (here or elsewhere).
    retries: AtomicU64,
    /// Times the health checker took this backend out of rotation.
    ejections: AtomicU64,
    /// Request durations, one count per bucket (not cumulative: the renderer adds up),
    /// the last one for everything above the largest bound.
    buckets: [AtomicU64; 13],
    /// Sum of the durations, in microseconds.
    duration_micros: AtomicU64,
}

/// A consistent-enough copy of a `Stats`, for rendering.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub by_class: [u64; 6],
    pub errors: u64,
    pub retries: u64,
    pub ejections: u64,
    /// Cumulative: `buckets[i]` counts durations up to `BUCKETS[i]`; the last is +Inf.
    pub buckets: [u64; 13],
    pub duration_seconds: f64,
}

impl Snapshot {
    /// All finished requests.
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }
}

impl Stats {
    /// Counts one finished request: its status (0 when none was sent), how long it took
    /// from its head to the end of its answer, and whether it failed on the backend's
    /// side. Three relaxed increments and a short scan of the bucket bounds.
    pub fn record(&self, status: u16, took: Duration, backend_fault: bool) {
        // Relaxed throughout: counters; a scrape only needs each value, not an order.
        let class = match status {
            100..=599 => usize::from(status / 100),
            _ => 0,
        };
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        if backend_fault || status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKET_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKET_MICROS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts a retry: an attempt on this backend failed and the request is tried again.
    /// The one hook for every place that retries (`trace::Attempts::retry`, which
    /// `proxy::forward` calls).
    pub fn record_retry(&self) {
        // Relaxed: a counter.
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an ejection: this backend is taken out of rotation after failing. The one
    /// hook for the health checker (health.rs).
    pub fn record_ejection(&self) {
        // Relaxed: a counter.
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut buckets = [0; 13];
        let mut total = 0;
        for (out, count) in buckets.iter_mut().zip(&self.buckets) {
            total += get(count);
            *out = total;
        }
        // The sum is read after the buckets: it may include a request the buckets missed
        // (a scrape racing a request), never the other way round by more than that one.
        Snapshot {
            by_class: std::array::from_fn(|i| get(&self.by_class[i])),
            errors: get(&self.errors),
            retries: get(&self.retries),
            ejections: get(&self.ejections),
            buckets,
            duration_seconds: get(&self.duration_micros) as f64 / 1e6,
        }
    }
}

/// The `reason` label values of `roundhouse_tunnels_closed_total`, in the order of
/// `tunnel::Closed`.
pub const TUNNEL_CLOSES: [&str; 5] = ["client", "backend", "idle", "shutdown", "error"];

/// The Upgrade tunnels (tunnel/): open now, opened, closed by reason, bytes each way.
/// `try_open` (a worker taking a place under `--max-tunnels`) and `close` (the tunnel
/// thread, or a worker whose upgrade did not happen) are the only writers of `open`;
/// the tunnel thread alone writes the rest.
#[derive(Debug, Default)]
pub struct Tunnels {
    open: AtomicU64,
    opened: AtomicU64,
    /// Indexed like `TUNNEL_CLOSES`.
    closed: [AtomicU64; 5],
    /// Client to backend, and backend to client.
    up: AtomicU64,
    down: AtomicU64,
}

impl Tunnels {
    /// Takes a place for one more tunnel if fewer than `max` are open.
    pub fn try_open(&self, max: usize) -> bool {
        // Relaxed: a count compared and changed in one atomic step; it orders nothing else.
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < max as u64).then_some(open + 1)
            })
            .is_ok()
    }

    /// The place taken by `try_open` is given back: the tunnel ended (`reason`, an
    /// index of `TUNNEL_CLOSES`), or it never opened (`None`).
    pub fn close(&self, reason: Option<usize>) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(reason) = reason {
            self.closed[reason].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A tunnel the event side took over.
    pub fn record_opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes relayed: `up` from the client to the backend, `down` the other way.
    pub fn record_bytes(&self, up: u64, down: u64) {
        self.up.fetch_add(up, Ordering::Relaxed);
        self.down.fetch_add(down, Ordering::Relaxed);
    }

    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Closes by reason, indexed like `TUNNEL_CLOSES`.
    pub fn closed(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.closed[i].load(Ordering::Relaxed))
    }

    /// (up, down) bytes so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

/// The `reason` label values of `roundhouse_tls_handshake_failures_total`, in the
/// order of `tls_session::Failure`.
pub const HANDSHAKE_FAILURES: [&str; 6] = [
    "protocol",
    "certificate",
    "timeout",
    "not_tls",
    "closed",
    "other",
];

/// The TLS listeners' handshakes: those completed and those that failed, by reason.
/// Written by `tls_session::Session` alone (when a handshake completes, and when a
/// session whose handshake never completed ends), so every TLS connection counts once.
#[derive(Debug, Default)]
pub struct Handshakes {
    done: AtomicU64,
    /// Indexed like `HANDSHAKE_FAILURES`.
    failed: [AtomicU64; 6],
}

impl Handshakes {
    pub fn record_done(&self) {
        // Relaxed: a counter read on its own, ordered with nothing else.
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// `reason` indexes `HANDSHAKE_FAILURES`.
    pub fn record_failure(&self, reason: usize) {
        self.failed[reason].fetch_add(1, Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Failures by reason, indexed like `HANDSHAKE_FAILURES`.
    pub fn failed(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.failed[i].load(Ordering::Relaxed))
    }
}

/// One metric family's name, type and help text, as the exposition format wants them.
pub struct Family {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
}

const fn family(name: &'static str, kind: &'static str, help: &'static str) -> Family {
    Family { name, kind, help }
}

pub const REQUESTS: Family = family(
    "roundhouse_requests_total",
    "counter",
    "Requests answered, by backend and status class (backend \"none\": no backend was tried).",
);
pub const ERRORS: Family = family(
    "roundhouse_request_errors_total",
    "counter",
    "Requests that ended in a 5xx status or broke off on the backend's side.",
);
pub const DURATION: Family = family(
    "roundhouse_request_duration_seconds",
    "histogram",
    "Time from the request head to the end of the answer.",
);
pub const RETRIES: Family = family(
    "roundhouse_retries_total",
    "counter",
    "Attempts on a backend that failed and were tried again.",
);
pub const EJECTIONS: Family = family(
    "roundhouse_ejections_total",
    "counter",
    "Times a backend was taken out of rotation after failing.",
);
pub const TLS_HANDSHAKES: Family = family(
    "roundhouse_tls_handshakes_total",
    "counter",
    "TLS handshakes completed on the TLS listeners.",
);
pub const TLS_HANDSHAKE_FAILURES: Family = family(
    "roundhouse_tls_handshake_failures_total",
    "counter",
    "TLS handshakes that failed, by reason: protocol (no shared version, cipher or ALPN protocol), certificate (the client refused ours), timeout, not_tls (plain HTTP), closed (the client left), other.",
);
pub const TUNNELS_OPEN: Family = family(
    "roundhouse_tunnels_open",
    "gauge",
    "Upgrade tunnels (WebSocket...) open now.",
);
pub const TUNNELS_OPENED: Family = family(
    "roundhouse_tunnels_opened_total",
    "counter",
    "Upgrade tunnels opened (a 101 relayed).",
);
pub const TUNNELS_CLOSED: Family = family(
    "roundhouse_tunnels_closed_total",
    "counter",
    "Upgrade tunnels closed, by reason: client or backend (that side closed first or failed), idle (--tunnel-idle-timeout), shutdown (the end of --grace), error.",
);
pub const TUNNEL_BYTES: Family = family(
    "roundhouse_tunnel_bytes_total",
    "counter",
    "Bytes relayed through tunnels, by direction: up (client to backend) and down.",
);
pub const BACKEND_UP: Family = family(
    "roundhouse_backend_up",
    "gauge",
    "1 when the backend may be picked for new requests, else 0.",
);
pub const BACKEND_IN_FLIGHT: Family = family(
    "roundhouse_backend_in_flight",
    "gauge",
    "Requests sent to the backend whose answer is not relayed yet.",
);
pub const BACKEND_WEIGHT: Family = family(
    "roundhouse_backend_weight",
    "gauge",
    "The backend's weight.",
);
pub const BACKEND_LATENCY: Family = family(
    "roundhouse_backend_latency_seconds",
    "gauge",
    "Peak-EWMA estimate of the backend's time to response head.",
);
pub const QUEUE_DEPTH: Family = family(
    "roundhouse_queue_depth",
    "gauge",
    "Connections with a request ready, waiting for a worker.",
);
pub const WORKERS: Family = family("roundhouse_workers", "gauge", "Worker threads started.");
pub const WORKERS_BUSY: Family = family(
    "roundhouse_workers_busy",
    "gauge",
    "Worker threads serving a connection.",
);
pub const CONNECTIONS_OPEN: Family = family(
    "roundhouse_connections_open",
    "gauge",
    "Client connections open.",
);
pub const UPTIME: Family = family(
    "roundhouse_uptime_seconds",
    "gauge",
    "Seconds since the balancer started.",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_lands_in_its_class_and_bucket() {
        let s = Stats::default();
        s.record(200, Duration::from_micros(700), false);
        s.record(503, Duration::from_millis(30), false);
        s.record(0, Duration::from_secs(60), true);
        let snap = s.snapshot();
        assert_eq!(snap.by_class, [1, 0, 1, 0, 0, 1]);
        assert_eq!(snap.errors, 2);
        assert_eq!(snap.requests(), 3);
        // 0.7 ms in the first bucket, 30 ms in the 50 ms one, 60 s only in +Inf.
        assert_eq!(snap.buckets[0], 1);
        assert_eq!(snap.buckets[4], 1);
        assert_eq!(snap.buckets[5], 2);
        assert_eq!(snap.buckets[11], 2);
        assert_eq!(snap.buckets[12], 3);
        assert!((snap.duration_seconds - 60.0307).abs() < 1e-9);
    }

    #[test]
    fn bounds_agree() {
        for (s, us) in BUCKETS.iter().zip(BUCKET_MICROS) {
            assert_eq!((s * 1e6).round() as u64, us);
        }
    }
}
