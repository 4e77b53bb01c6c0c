//! `/status.json`: the balancer at this moment, for the status page and for scripts.
//! Each backend with its state, weight, load, counters and latency estimate, then the
//! queue, the workers, the open connections, the uptime and where the configuration
//! came from.

use serde_json::{Value, json};

use crate::balancer::Backend;

use super::Sources;
use super::history::History;

pub fn render(sources: &Sources, history: &History) -> Value {
    let balancer = sources.balancer();
    let backends: Vec<Value> = balancer
        .backends()
        .iter()
        .map(|b| {
            let mut row = backend(b);
            let (requests, errors) = history.series(b.upstream.addr());
            row["history"] = json!({
                "interval_seconds": super::history::INTERVAL.as_secs_f64(),
                "requests": requests,
                "errors": errors,
            });
            row
        })
        .collect();
    let pool = &sources.pool;
    let none = sources.no_backend.snapshot();
    json!({
        "strategy": balancer.strategy_name(),
        "uptime_seconds": round3(sources.started.elapsed().as_secs_f64()),
        "config_source": sources.config_source,
        "queue_depth": pool.queued(),
        "workers": pool.workers(),
        "workers_busy": pool.busy(),
        "connections_open": sources.connections.open(),
        "requests_without_backend": none.requests(),
        "backends": backends,
    })
}

/// One backend's row (also the answer to a change through the admin API).
pub fn backend(b: &Backend) -> Value {
    let s = b.stats().snapshot();
    json!({
        "address": b.upstream.addr().to_string(),
        "state": state(b),
        "weight": b.weight,
        "in_flight": b.in_flight(),
        "requests": s.requests(),
        "errors": s.errors,
        "retries": s.retries,
        "ejections": s.ejections,
        "latency_ms": round3(b.latency_micros() / 1000.0),
    })
}

/// What the operator should read first: a backend taken out by hand says so before
/// its health does.
fn state(b: &Backend) -> &'static str {
    if b.is_disabled() {
        "disabled"
    } else if b.is_drained() {
        "draining"
    } else if !b.is_healthy() {
        "down"
    } else if b.standing().is_out() {
        "ejected"
    } else if b.is_backup() {
        "backup"
    } else {
        "up"
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
