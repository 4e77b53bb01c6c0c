//! The Prometheus text exposition format (version 0.0.4) of every counter and gauge:
//! one `# HELP` and one `# TYPE` line per family, then its samples. The names, types
//! and help texts are `metrics.rs`'s; this file only lays them out.

use std::fmt::Write;

use crate::balancer::Backend;
use crate::metrics::{
    self, BUCKETS, CODE_CLASSES, Family, HANDSHAKE_FAILURES, Snapshot, TUNNEL_CLOSES,
};

use super::Sources;

/// The label value of requests that found no backend.
const NO_BACKEND: &str = "none";

pub fn render(sources: &Sources) -> String {
    let balancer = sources.balancer();
    let backends = balancer.backends();
    let mut rows: Vec<(String, Snapshot)> = backends
        .iter()
        .map(|b| {
            (
                label_value(&b.upstream.addr().to_string()),
                b.stats().snapshot(),
            )
        })
        .collect();
    rows.push((NO_BACKEND.into(), sources.no_backend.snapshot()));
    let mut out = String::with_capacity(2048 + rows.len() * 2048);

    header(&mut out, &metrics::REQUESTS);
    for (backend, s) in &rows {
        for (class, count) in CODE_CLASSES.iter().zip(s.by_class) {
            let _ = writeln!(
                out,
                "{}{{backend=\"{backend}\",code=\"{class}\"}} {count}",
                metrics::REQUESTS.name
            );
        }
    }
    counter(&mut out, &metrics::ERRORS, &rows, |s| s.errors);

    header(&mut out, &metrics::DURATION);
    let name = metrics::DURATION.name;
    for (backend, s) in &rows {
        for (bound, count) in BUCKETS.iter().zip(s.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{backend=\"{backend}\",le=\"{bound}\"}} {count}"
            );
        }
        let count = s.buckets[BUCKETS.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{backend=\"{backend}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "{name}_sum{{backend=\"{backend}\"}} {}",
            s.duration_seconds
        );
        let _ = writeln!(out, "{name}_count{{backend=\"{backend}\"}} {count}");
    }

    let backend_rows = &rows[..backends.len()];
    counter(&mut out, &metrics::RETRIES, backend_rows, |s| s.retries);
    counter(&mut out, &metrics::EJECTIONS, backend_rows, |s| s.ejections);

    let per_backend = |out: &mut String, family: &Family, value: fn(&Backend) -> f64| {
        header(out, family);
        for ((backend, _), b) in backend_rows.iter().zip(backends) {
            let _ = writeln!(out, "{}{{backend=\"{backend}\"}} {}", family.name, value(b));
        }
    };
    per_backend(&mut out, &metrics::BACKEND_UP, |b| {
        f64::from(u8::from(b.is_up()))
    });
    per_backend(&mut out, &metrics::BACKEND_IN_FLIGHT, |b| {
        b.in_flight() as f64
    });
    per_backend(&mut out, &metrics::BACKEND_WEIGHT, |b| f64::from(b.weight));
    per_backend(&mut out, &metrics::BACKEND_LATENCY, |b| {
        b.latency_micros() / 1e6
    });

    let handshakes = &sources.handshakes;
    header(&mut out, &metrics::TLS_HANDSHAKES);
    let _ = writeln!(
        out,
        "{} {}",
        metrics::TLS_HANDSHAKES.name,
        handshakes.done()
    );
    header(&mut out, &metrics::TLS_HANDSHAKE_FAILURES);
    for (reason, count) in HANDSHAKE_FAILURES.iter().zip(handshakes.failed()) {
        let name = metrics::TLS_HANDSHAKE_FAILURES.name;
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
    }

    let tunnels = &sources.tunnels;
    gauge(&mut out, &metrics::TUNNELS_OPEN, tunnels.open() as f64);
    header(&mut out, &metrics::TUNNELS_OPENED);
    let _ = writeln!(out, "{} {}", metrics::TUNNELS_OPENED.name, tunnels.opened());
    header(&mut out, &metrics::TUNNELS_CLOSED);
    for (reason, count) in TUNNEL_CLOSES.iter().zip(tunnels.closed()) {
        let name = metrics::TUNNELS_CLOSED.name;
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
    }
    header(&mut out, &metrics::TUNNEL_BYTES);
    let (up, down) = tunnels.bytes();
    for (direction, count) in [("up", up), ("down", down)] {
        let name = metrics::TUNNEL_BYTES.name;
        let _ = writeln!(out, "{name}{{direction=\"{direction}\"}} {count}");
    }

    let pool = &sources.pool;
    let workers = pool.workers();
    gauge(&mut out, &metrics::QUEUE_DEPTH, pool.queued() as f64);
    gauge(&mut out, &metrics::WORKERS, workers as f64);
    gauge(&mut out, &metrics::WORKERS_BUSY, pool.busy() as f64);
    gauge(
        &mut out,
        &metrics::CONNECTIONS_OPEN,
        sources.connections.open() as f64,
    );
    gauge(
        &mut out,
        &metrics::UPTIME,
        sources.started.elapsed().as_secs_f64(),
    );
    out
}

fn header(out: &mut String, family: &Family) {
    let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
    let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
}

fn counter(
    out: &mut String,
    family: &Family,
    rows: &[(String, Snapshot)],
    value: fn(&Snapshot) -> u64,
) {
    header(out, family);
    for (backend, s) in rows {
        let _ = writeln!(out, "{}{{backend=\"{backend}\"}} {}", family.name, value(s));
    }
}

fn gauge(out: &mut String, family: &Family, value: f64) {
    header(out, family);
    let _ = writeln!(out, "{} {value}", family.name);
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("[::1]:80"), "[::1]:80");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
