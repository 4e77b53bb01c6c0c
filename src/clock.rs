//! The process clock: milliseconds since the process first read it, as one `u64`. It is
//! the clock of every time kept in an atomic: a backend's ejections, pauses and slow start
//! (balancer/standing.rs, set by health.rs), its latency estimate (balancer/latency.rs)
//! and the seconds of the retry budget (retry.rs), so that they all count from the same
//! instant. A leaf: it uses nothing else in the crate.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the first call in this process. Never 0 (the first millisecond
/// reads 1), so that 0 can mean "none" in an atomic.
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// `now_ms` for an instant already taken (a request's start), without another clock
/// read. An instant from before the first call reads 1.
pub fn ms_at(t: Instant) -> u64 {
    t.saturating_duration_since(*epoch()).as_millis() as u64 + 1
}

fn epoch() -> &'static Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn starts_above_zero_and_agrees_with_instants() {
        let first = now_ms();
        assert!(first >= 1);
        let later = Instant::now() + Duration::from_millis(250);
        assert!(ms_at(later) >= first + 250);
    }
}
