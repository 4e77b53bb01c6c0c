//! What one request went through on its way to a backend: which backends were tried,
//! why each retry happened, and how long the answering one took. `proxy.rs` keeps one
//! `Attempts` per request while it forwards; the access log prints its retries and
//! times, and with `--trace-header` the answer carries it to the client as
//! `X-Roundhouse-Trace` (why this backend) and `Server-Timing` (where the time went).
//! With the flag off, nothing here formats or allocates.

use std::fmt::Write;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::balancer::{Backend, Balancer, Candidates};
use crate::config::StrategyKind;
use crate::error::ProxyError;

pub static X_ROUNDHOUSE_TRACE: HeaderName = HeaderName::from_static("x-roundhouse-trace");
pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Candidates listed in a trace; a larger set is cut short (headers have limits).
const LISTED: usize = 16;

/// One request's attempts.
pub struct Attempts<'p> {
    /// The backend that answered, or the last one tried.
    pub last: Option<&'p Backend>,
    /// Failed attempts that were tried again.
    pub retries: u32,
    /// From sending the request to the answer's head, for the attempt that got one.
    pub upstream: Option<Duration>,
    /// The TCP connect of the answering attempt, when it opened a new connection.
    pub connect: Option<Duration>,
    /// The `X-Roundhouse-Trace` text so far; `None` unless `--trace-header`.
    notes: Option<String>,
}

impl<'p> Attempts<'p> {
    pub fn new(tracing: bool) -> Attempts<'p> {
        Attempts {
            last: None,
            retries: 0,
            upstream: None,
            connect: None,
            notes: tracing.then(String::new),
        }
    }

    /// Notes the strategy and the candidates in order, each with the score its strategy
    /// went by, as they stand right after the pick.
    pub fn candidates(&mut self, balancer: &Balancer, candidates: &Candidates<'_>) {
        let Some(notes) = &mut self.notes else { return };
        let strategy = balancer.strategy_name();
        let _ = write!(notes, "{strategy}; candidates:");
        let mut shown = 0;
        for backend in candidates.clone() {
            if shown == LISTED {
                let more = candidates.clone().count() - LISTED;
                let _ = write!(notes, " and {more} more");
                break;
            }
            let sep = if shown == 0 { " " } else { ", " };
            let _ = write!(notes, "{sep}{}", backend.upstream.addr());
            score(notes, StrategyKind::from_name(strategy), backend);
            shown += 1;
        }
        if shown == 0 {
            notes.push_str(" none available");
        }
    }

    /// An attempt on `backend` begins.
    pub fn attempt(&mut self, backend: &'p Backend) {
        self.last = Some(backend);
    }

    /// The attempt on `backend` failed with `err` and the request is tried again: counted
    /// for the metrics and the log, and noted with its reason.
    pub fn retry(&mut self, backend: &'p Backend, err: &ProxyError) {
        self.retries += 1;
        backend.stats().record_retry();
        if let Some(notes) = &mut self.notes {
            let _ = write!(notes, "; retry after {err}");
        }
    }

    /// The attempt in progress got the answer's head after `took`, `connect` of it
    /// spent opening a new connection.
    pub fn answered(&mut self, took: Duration, connect: Option<Duration>) {
        self.upstream = Some(took);
        self.connect = connect;
    }

    /// The trace headers for the answer: nothing unless `--trace-header`.
    pub fn add_headers(&self, queue_wait: Duration, headers: &mut HeaderMap) {
        let Some((trace, timing)) = self.header_values(queue_wait) else {
            return;
        };
        headers.insert(X_ROUNDHOUSE_TRACE.clone(), trace);
        headers.insert(SERVER_TIMING.clone(), timing);
    }

    /// `X-Roundhouse-Trace` and `Server-Timing` (W3C Server Timing, durations in ms).
    pub fn header_values(&self, queue_wait: Duration) -> Option<(HeaderValue, HeaderValue)> {
        let notes = self.notes.as_ref()?;
        let mut trace = notes.clone();
        match self.last {
            Some(b) if self.upstream.is_some() => {
                let _ = write!(trace, "; answered by {}", b.upstream.addr());
            }
            Some(b) => {
                let _ = write!(trace, "; failed at {}", b.upstream.addr());
            }
            None => {}
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut timing = format!("queue;dur={:.3};desc=\"queue wait\"", ms(queue_wait));
        if let Some(connect) = self.connect {
            let _ = write!(timing, ", connect;dur={:.3}", ms(connect));
        }
        if let Some(upstream) = self.upstream {
            let _ = write!(
                timing,
                ", upstream;dur={:.3};desc=\"backend time to response head\"",
                ms(upstream)
            );
        }
        Some((header_value(trace), header_value(timing)))
    }
}

/// The score `strategy` compares, after the backend's address; lower wins where a
/// score is compared at all.
fn score(out: &mut String, strategy: Option<StrategyKind>, b: &Backend) {
    let (in_flight, weight) = (b.in_flight(), b.weight);
    let _ = match strategy {
        Some(StrategyKind::LeastConn | StrategyKind::PowerOfTwo) => write!(
            out,
            " load={:.3} ({in_flight} in flight / weight {weight})",
            in_flight as f64 / f64::from(weight)
        ),
        Some(StrategyKind::LeastTime) => {
            let latency = b.latency_micros() / 1000.0;
            write!(
                out,
                " cost={:.3} ({latency:.3} ms x ({in_flight} in flight + 1) / weight {weight})",
                latency * (in_flight + 1) as f64 / f64::from(weight)
            )
        }
        // Round robin and random go by weight alone; the hashes by ring order, which is
        // the order listed.
        Some(
            StrategyKind::RoundRobin
            | StrategyKind::Random
            | StrategyKind::IpHash
            | StrategyKind::Hash,
        )
        | None => write!(out, " weight={weight}"),
    };
}

/// A header value from our own text: anything a header cannot carry (an error text
/// quoting odd bytes) becomes `?`.
fn header_value(text: String) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::try_from(clean).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::PickContext;
    use crate::config::Strategy;
    use crate::upstream::{Settings, Upstream};

    fn balancer(strategy: Strategy) -> Balancer {
        let settings = Settings {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            workers: 1,
            backends: 2,
            tls: Default::default(),
        };
        let backends = ["10.0.0.1:80", "10.0.0.2:80"]
            .iter()
            .map(|a| Backend::new(Upstream::new(a.parse().unwrap(), &settings), 2))
            .collect();
        Balancer::with_backends(backends, &strategy)
    }

    #[test]
    fn off_means_no_headers() {
        let a = Attempts::new(false);
        let mut h = HeaderMap::new();
        a.add_headers(Duration::ZERO, &mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn names_the_strategy_the_scores_the_retry_and_the_answer() {
        let b = balancer(Strategy::LeastConn);
        let headers = HeaderMap::new();
        let ctx = PickContext {
            client: "192.0.2.1".parse().unwrap(),
            path: "/",
            headers: &headers,
        };
        let candidates = b.candidates(&ctx);
        let mut a = Attempts::new(true);
        a.candidates(&b, &candidates);
        let [first, second] = [&b.backends()[0], &b.backends()[1]];
        a.attempt(first);
        a.retry(
            first,
            &ProxyError::Connect {
                backend: first.upstream.addr(),
                detail: "refused\u{7}".into(),
            },
        );
        a.attempt(second);
        a.answered(Duration::from_millis(2), Some(Duration::from_micros(300)));
        let (trace, timing) = a.header_values(Duration::from_micros(50)).unwrap();
        let trace = trace.to_str().unwrap();
        assert!(
            trace.starts_with("least-conn; candidates: 10.0.0."),
            "{trace}"
        );
        assert!(
            trace.contains("load=0.000 (0 in flight / weight 2)"),
            "{trace}"
        );
        assert!(
            trace.contains("; retry after connect to 10.0.0.1:80 failed: refused?"),
            "{trace}"
        );
        assert!(trace.ends_with("; answered by 10.0.0.2:80"), "{trace}");
        assert_eq!(
            timing.to_str().unwrap(),
            "queue;dur=0.050;desc=\"queue wait\", connect;dur=0.300, \
             upstream;dur=2.000;desc=\"backend time to response head\""
        );
        assert_eq!(a.retries, 1);
        assert_eq!(first.stats().snapshot().retries, 1);
    }
}
