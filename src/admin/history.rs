//! A few minutes of per-second request and error counts for each backend: what the
//! status page draws its sparklines from, so that a freshly opened page shows the recent
//! past, not a blank. The admin sampler thread calls `sample` once a second; the request
//! path never sees this (it only bumps the counters that are sampled).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::balancer::Backend;

/// How often the counters are sampled.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept per backend: three minutes.
pub const SAMPLES: usize = 180;

/// The series of every backend, by address (a reload may replace the `Backend` but not
/// its history).
#[derive(Default)]
pub struct History(Mutex<HashMap<SocketAddr, Series>>);

#[derive(Default)]
struct Series {
    /// The totals at the last sample.
    requests: u64,
    errors: u64,
    /// Per-interval counts, oldest first.
    per_interval: VecDeque<(u32, u32)>,
}

impl History {
    /// Takes one sample of every backend's counters; backends no longer in the set are
    /// forgotten.
    pub fn sample(&self, backends: &[Backend]) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|addr, _| backends.iter().any(|b| b.upstream.addr() == *addr));
        for backend in backends {
            let snap = backend.stats().snapshot();
            let (requests, errors) = (snap.requests(), snap.errors);
            let series = all
                .entry(backend.upstream.addr())
                .or_insert_with(|| Series {
                    requests,
                    errors,
                    ..Series::default()
                });
            // Counters only grow, unless a reload replaced the backend's: count from there.
            let delta = |now: u64, before: u64| {
                u32::try_from(now.saturating_sub(before)).unwrap_or(u32::MAX)
            };
            let point = (
                delta(requests, series.requests),
                delta(errors, series.errors),
            );
            (series.requests, series.errors) = (requests, errors);
            if series.per_interval.len() == SAMPLES {
                series.per_interval.pop_front();
            }
            series.per_interval.push_back(point);
        }
    }

    /// Requests and errors per second for `addr`, oldest first.
    pub fn series(&self, addr: SocketAddr) -> (Vec<u32>, Vec<u32>) {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let points = all.get(&addr).map(|s| &s.per_interval);
        points.map_or_else(Default::default, |p| p.iter().copied().unzip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::testing;

    #[test]
    fn keeps_per_interval_counts_and_forgets_removed_backends() {
        let backends = testing::backends(&[1]);
        let addr = backends[0].upstream.addr();
        let history = History::default();
        let served = |n: usize, status: u16| {
            for _ in 0..n {
                backends[0].stats().record(status, Duration::ZERO, false);
            }
        };
        served(2, 200);
        history.sample(&backends);
        served(3, 200);
        served(1, 502);
        history.sample(&backends);
        history.sample(&backends);
        // The first sample is the baseline: what came before it is not a rate.
        assert_eq!(history.series(addr), (vec![0, 4, 0], vec![0, 1, 0]));
        history.sample(&[]);
        assert_eq!(history.series(addr), (vec![], vec![]));
    }

    #[test]
    fn keeps_at_most_the_window() {
        let backends = testing::backends(&[1]);
        let addr = backends[0].upstream.addr();
        let history = History::default();
        for _ in 0..SAMPLES + 10 {
            history.sample(&backends);
        }
        assert_eq!(history.series(addr).0.len(), SAMPLES);
    }
}
