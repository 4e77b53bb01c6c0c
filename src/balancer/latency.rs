//! A backend's latency estimate for `least-time`: a peak-EWMA of the time to the response
//! head, the estimator of Finagle and Linkerd. A sample above the estimate replaces it at
//! once (a backend that slows down is avoided at once); a sample below pulls it down
//! gradually; and with no sample at all the estimate decays towards zero, so a backend
//! that was slow once is tried again after a while instead of being starved forever
//! (Traefik's `leasttime` keeps its last average until the backend gets traffic, which
//! it never gets again).
//!
//! Estimate and timestamp share one `AtomicU64`, so a reader never sees one without the
//! other, and a writer updates both with one compare-and-swap: no lock. Times are the
//! process clock's (`clock::now_ms`), passed in so that tests can move time.

use std::sync::atomic::{AtomicU64, Ordering};

/// How fast old samples and idle time fade: after DECAY_MILLIS without a sample the
/// estimate is down to 1/e (37 %) of itself; after 5 × DECAY_MILLIS, to under 1 %.
/// Finagle's and Linkerd's default, 10 s: long enough to ride out one fast answer from a
/// slow backend, short enough that a backend that had one bad minute is retried soon.
pub const DECAY_MILLIS: f64 = 10_000.0;

/// The estimate in microseconds (an f32, in the high half) and when it was last written
/// (in the low half: the low 32 bits of the clock's milliseconds). The stamp wraps after
/// 49 days; the elapsed time is taken with wrapping arithmetic, so only a backend left
/// without a sample for 49 days would see its (long decayed) estimate come back.
#[derive(Default)]
pub struct PeakEwma(AtomicU64);

impl PeakEwma {
    /// Folds one sample (microseconds) taken at `now` (`clock::now_ms`) into the estimate.
    pub fn observe(&self, sample: f64, now: u64) {
        let now = stamp(now);
        // Relaxed: the word is self-contained (value and time together); it orders no
        // other memory. The loop only retries when another worker wrote in between.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let (value, written) = unpack(word);
                let next = if sample > value {
                    sample
                } else {
                    let w = decay(now.wrapping_sub(written));
                    value * w + sample * (1.0 - w)
                };
                Some(pack(next, now))
            });
    }

    /// The estimate at `now`: the stored one, decayed for the time since it was written.
    /// 0 before the first sample.
    pub fn cost(&self, now: u64) -> f64 {
        // Relaxed: see observe.
        let (value, written) = unpack(self.0.load(Ordering::Relaxed));
        value * decay(stamp(now).wrapping_sub(written))
    }
}

/// The part of a clock reading that the word keeps.
fn stamp(now: u64) -> u32 {
    now as u32
}

/// The weight the old estimate keeps after `elapsed` milliseconds.
fn decay(elapsed: u32) -> f64 {
    (-f64::from(elapsed) / DECAY_MILLIS).exp()
}

fn pack(value: f64, stamp: u32) -> u64 {
    (u64::from((value as f32).to_bits()) << 32) | u64::from(stamp)
}

fn unpack(word: u64) -> (f64, u32) {
    (f64::from(f32::from_bits((word >> 32) as u32)), word as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_zero_and_takes_a_peak_at_once() {
        let e = PeakEwma::default();
        assert_eq!(e.cost(0), 0.0);
        e.observe(1000.0, 0);
        assert_eq!(e.cost(0), 1000.0);
        e.observe(5000.0, 1);
        assert!((e.cost(1) - 5000.0).abs() < 1.0);
    }

    #[test]
    fn lower_samples_pull_the_estimate_down_gradually() {
        let e = PeakEwma::default();
        e.observe(10_000.0, 0);
        // One fast sample 1 s later: mostly the old estimate still.
        e.observe(100.0, 1000);
        let c = e.cost(1000);
        assert!(c > 8000.0 && c < 9100.0, "{c}");
        // Many fast samples: it converges to them.
        for t in 2..200 {
            e.observe(100.0, t * 1000);
        }
        assert!(e.cost(199_000) < 110.0);
    }

    #[test]
    fn a_slow_backend_decays_back_without_samples() {
        let e = PeakEwma::default();
        e.observe(1_000_000.0, 0); // one answer that took 1 s
        assert!(e.cost(10_000) < 370_000.0); // 1/e after one decay time
        assert!(e.cost(70_000) < 1_000.0); // under 1 ms after 70 s: tried again
    }

    #[test]
    fn time_wraps_without_harm() {
        let e = PeakEwma::default();
        e.observe(1000.0, u64::from(u32::MAX - 5));
        let c = e.cost(4); // 10 ms later, across the wrap
        assert!(c > 990.0 && c <= 1000.0, "{c}");
    }
}
