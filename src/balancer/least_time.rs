//! Least time: each request goes to the backend with the lowest expected wait, its
//! latency estimate (peak-EWMA of the time to the response head, see latency.rs) times
//! its requests in flight plus one, divided by its weight: Finagle's and Linkerd's
//! "peak EWMA" balancer, scanned over every backend like least-conn.
//!
//! A backend never heard from has no estimate: it costs 0 while idle, so it is tried,
//! but a penalty while a request is in flight there, so one stuck first request does not
//! draw every other one. Estimates decay while a backend gets no answers, so a backend
//! that was slow once is tried again within a minute or so. Ties go round-robin, as in
//! least-conn.

use super::{Backend, RoundRobin, lowest};

/// The cost of a backend with requests in flight but no estimate yet: above any real
/// one (an hour, in microseconds), and growing with what is in flight.
const UNKNOWN_BUSY: f64 = 3.6e9;

pub struct LeastTime {
    turns: RoundRobin,
}

impl LeastTime {
    pub fn new(weights: &[u32]) -> LeastTime {
        LeastTime {
            turns: RoundRobin::new(weights),
        }
    }

    /// `now` is `clock::now_ms()`, passed in so that tests can move time.
    pub fn pick(&self, backends: &[Backend], now: u64) -> Option<usize> {
        lowest(
            backends,
            self.turns.next_in_turn(),
            |b| cost(b, now),
            |a, b| a < b,
        )
    }
}

/// The expected wait at `backend`, per unit of weight.
fn cost(backend: &Backend, now: u64) -> f64 {
    let latency = backend.latency().cost(now);
    let in_flight = backend.in_flight() as f64;
    let wait = if latency == 0.0 && in_flight > 0.0 {
        UNKNOWN_BUSY * in_flight
    } else {
        latency * (in_flight + 1.0)
    };
    wait / f64::from(backend.weight)
}

#[cfg(test)]
mod tests {
    use super::super::testing::backends;
    use super::*;

    fn observe(b: &Backend, micros: f64, now: u64) {
        b.latency().observe(micros, now);
    }

    #[test]
    fn the_fast_backend_wins() {
        let set = backends(&[1, 1]);
        observe(&set[0], 50_000.0, 0);
        observe(&set[1], 1_000.0, 0);
        let lt = LeastTime::new(&[1, 1]);
        for _ in 0..4 {
            assert_eq!(lt.pick(&set, 10), Some(1));
        }
    }

    #[test]
    fn requests_in_flight_multiply_the_wait() {
        let set = backends(&[1, 1]);
        observe(&set[0], 3_000.0, 0);
        observe(&set[1], 1_000.0, 0);
        let lt = LeastTime::new(&[1, 1]);
        // 1 ms × (3 + 1) against 3 ms × 1: the slower, idle one.
        let _busy: Vec<_> = (0..3).map(|_| set[1].start()).collect();
        assert_eq!(lt.pick(&set, 0), Some(0));
    }

    #[test]
    fn unknown_backends_are_tried_when_idle_and_avoided_when_busy() {
        let set = backends(&[1, 1]);
        observe(&set[0], 1_000.0, 0);
        let lt = LeastTime::new(&[1, 1]);
        assert_eq!(lt.pick(&set, 0), Some(1));
        let _stuck = set[1].start();
        assert_eq!(lt.pick(&set, 0), Some(0));
    }

    #[test]
    fn a_backend_that_was_slow_once_is_tried_again() {
        let set = backends(&[1, 1]);
        observe(&set[0], 1_000_000.0, 0); // one answer after 1 s
        let lt = LeastTime::new(&[1, 1]);
        // b keeps answering in 2 ms.
        let mut now = 0;
        while lt.pick(&set, now) == Some(1) {
            observe(&set[1], 2_000.0, now);
            now += 100;
            assert!(now < 120_000, "a was never tried again");
        }
        // 1 s decays under 2 ms after ln(500) ≈ 6.2 decay times, 62 s.
        assert!(now > 50_000, "tried again too soon, at {now} ms");
    }

    #[test]
    fn idle_ties_alternate() {
        let set = backends(&[1, 1]);
        let lt = LeastTime::new(&[1, 1]);
        let picks: Vec<_> = (0..4).map(|_| lt.pick(&set, 0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }
}
