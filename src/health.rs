//! Backend health: whether a backend may take new requests, and the only place that
//! decides it. Two witnesses feed it:
//!
//! - **active checks** (`--health-path`): one thread, `run`, asks every backend for the
//!   path at jittered intervals through `Upstream::probe` (the same upstream client and
//!   settings as the requests) and flips the backend down after `--fall` failed probes
//!   in a row, up after `--rise` passing ones, so one lost probe never flaps it;
//! - **passive ejection**: `proxy.rs` reports every connect failure and timeout (and,
//!   with `--eject-on-5xx`, every 5xx answer) with `Health::failed`; `--max-fails` of
//!   them within `--fail-window` take the backend out for `--eject-time`, doubled for
//!   each consecutive ejection (capped at `MAX_EJECTION`), never more than half the
//!   backends at once (Envoy's outlier detection). A backend's `Retry-After` on a 503 or
//!   429 takes it out for that long too (`Health::answered`).
//!
//! What the request path reads is each backend's `Standing` (balancer/standing.rs) and
//! its healthy mark (balancer/backend.rs): atomics only, written only from this file,
//! through methods named for what happened (`Standing::eject`, `Marks::mark_down`...).
//! This file decides; those only store. The probe streaks are the health thread's own
//! locals, never shared. This file uses `balancer`; `balancer` never uses this file.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, header};

use crate::balancer::{Backend, Balancer};
use crate::clock::now_ms;
use crate::config::{Checks, HealthConfig};

/// The longest any ejection lasts, however often the backend failed (Envoy's default
/// `max_ejection_time`), and the longest `Retry-After` honoured: a backend that asks for
/// a day off by mistake is tried again after five minutes.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// The health policy, shared by the request path (`failed`, `answered`) and the health
/// thread (`run`).
pub struct Health {
    config: HealthConfig,
    /// Held while one ejection is decided, so that two workers cannot both take "the
    /// last allowed" backend out. Taken only when a backend reaches `--max-fails`.
    ejecting: AtomicBool,
}

impl Health {
    pub fn new(config: HealthConfig) -> Health {
        Health {
            config,
            ejecting: AtomicBool::new(false),
        }
    }

    /// Whether active checks are configured (then `run` has work to do).
    pub fn checks(&self) -> Option<&Checks> {
        self.config.checks.as_ref()
    }

    /// A request to `backend` failed in a way that counts against it: the connect failed
    /// or timed out, or the answer did not come in time. `all` is every backend (for
    /// the half-of-them rule). Lock-free; the rare ejection itself takes a flag.
    pub fn failed(&self, all: &[Backend], backend: &Backend, now: u64) {
        let Some(max_fails) = self.config.max_fails else {
            return;
        };
        let s = backend.standing();
        // Requests that were under way when it was ejected fail too: they say nothing new.
        if s.ejected_at(now) {
            return;
        }
        let window = self.config.fail_window.as_millis() as u64;
        if s.count_failure(now, window) >= max_fails.get() {
            self.eject(all, backend, now);
        }
    }

    /// Looks at an answer's status: a 503 or 429 with `Retry-After` takes the backend
    /// out for that long; with `--eject-on-5xx`, a 5xx counts as a failure. Costs one
    /// comparison for any other answer.
    pub fn answered(&self, all: &[Backend], backend: &Backend, status: u16, headers: &HeaderMap) {
        if status >= 429 {
            self.answered_at(all, backend, status, headers, now_ms());
        }
    }

    fn answered_at(
        &self,
        all: &[Backend],
        backend: &Backend,
        status: u16,
        headers: &HeaderMap,
        now: u64,
    ) {
        if status == 503 || status == 429 {
            let pause = headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, SystemTime::now()));
            if let Some(pause) = pause {
                backend
                    .standing()
                    .hold(now + pause.as_millis().max(1) as u64);
                crate::say!(
                    "roundhouse: {} answered {status} with Retry-After; out of rotation for {}",
                    backend.upstream.addr(),
                    humantime::format_duration(pause)
                );
            }
        }
        if status >= 500 && self.config.eject_on_5xx {
            self.failed(all, backend, now);
        }
    }

    /// Takes `backend` out, unless half the backends are already out.
    fn eject(&self, all: &[Backend], backend: &Backend, now: u64) {
        if self.ejecting.swap(true, Ordering::Acquire) {
            // Another worker is deciding an ejection: this failure will count again.
            return;
        }
        let s = backend.standing();
        let out = all.iter().filter(|b| b.standing().ejected_at(now)).count();
        if !s.ejected_at(now) && (out + 1) * 2 <= all.len() {
            let base = self.config.eject_time.as_millis() as u64;
            let last = s.last_ejection().map_or(0, |d| d.as_millis() as u64);
            // In for at least as long as it was last out: start again from the base time.
            let in_a_row = if now.saturating_sub(s.ejected_until()) > last.max(base) {
                0
            } else {
                s.ejections()
            };
            let length = base
                .saturating_mul(1 << in_a_row.min(20))
                .min(MAX_EJECTION.as_millis() as u64)
                .max(1);
            s.eject(now, length, in_a_row + 1);
            backend.stats().record_ejection();
            crate::say!(
                "roundhouse: {} failed {} times within {}; ejected for {} (ejection {} in a row)",
                backend.upstream.addr(),
                self.config.max_fails.map_or(0, |n| n.get()),
                humantime::format_duration(self.config.fail_window),
                humantime::format_duration(Duration::from_millis(length)),
                in_a_row + 1
            );
        }
        self.ejecting.store(false, Ordering::Release);
    }

    /// A passing probe streak ends a passive ejection early: the probe is the better
    /// witness that a backend which had died is back. A `Retry-After` pause is the
    /// backend's own word and is kept.
    fn end_ejection(&self, backend: &Backend, now: u64) {
        if !backend.standing().end_ejection(now) {
            return;
        }
        crate::say!(
            "roundhouse: {} passes its health checks; ejection ended early",
            backend.upstream.addr()
        );
    }
}

/// What the health thread remembers of one backend between probes.
#[derive(Clone, Copy, Default)]
struct Streak {
    /// Probes passed (failed) in a row.
    passed: u32,
    failed: u32,
    /// The passive ejection this streak has seen start (its end time): a new one resets
    /// `passed_since`, so only probes after the ejection can end it.
    ejection_seen: u64,
    passed_since: u32,
}

/// The health thread: probes every backend once per `--health-interval` (each with its
/// own jitter, so probes do not arrive in bursts) and flips backends up and down after a
/// streak. `current` gives the balancer in use (a reload may swap it: then the
/// schedule and streaks start again for the new set). Runs until `Health::stop`;
/// returns at once when active checks are off. Probes are sequential: a backend that
/// hangs delays the next probe by up to `--health-timeout`.
pub fn run<B: Deref<Target = Balancer>>(current: impl Fn() -> B, health: &Health) {
    let Some(checks) = health.checks() else {
        return;
    };
    let mut seen: *const Balancer = std::ptr::null();
    let mut next: Vec<Instant> = Vec::new();
    let mut streaks: Vec<Streak> = Vec::new();
    // The thread lives as long as the process: shutdown ends both.
    loop {
        let balancer = current();
        let backends = balancer.backends();
        if !std::ptr::eq(seen, &*balancer) || next.len() != backends.len() {
            seen = &*balancer;
            // The first probes are spread over one interval.
            let start = Instant::now();
            next = backends
                .iter()
                .map(|_| start + checks.interval.mul_f64(fastrand::f64()))
                .collect();
            streaks = vec![Streak::default(); backends.len()];
        }
        let Some((i, &when)) = next.iter().enumerate().min_by_key(|(_, t)| **t) else {
            // No backend to probe (every name has gone, discovery.rs): until the set
            // fills again.
            drop(balancer);
            thread::sleep(checks.interval);
            continue;
        };
        let now = Instant::now();
        if when > now {
            // Wake at least once per interval to notice `stop` and reloads.
            drop(balancer);
            thread::sleep((when - now).min(checks.interval));
            continue;
        }
        let backend = &backends[i];
        let passed = match backend.upstream.probe(&checks.path, checks.timeout) {
            Ok(status) => (checks.status.0..=checks.status.1).contains(&status),
            Err(_) => false,
        };
        observe(health, checks, backend, &mut streaks[i], passed, now_ms());
        // ±10 % around the interval.
        next[i] = Instant::now() + checks.interval.mul_f64(0.9 + 0.2 * fastrand::f64());
    }
}

/// Folds one probe result into the backend's streak and flips it when the streak is long
/// enough.
fn observe(
    health: &Health,
    checks: &Checks,
    backend: &Backend,
    streak: &mut Streak,
    passed: bool,
    now: u64,
) {
    let s = backend.standing();
    let ejection = s.ejected_until();
    if ejection != streak.ejection_seen {
        streak.ejection_seen = ejection;
        streak.passed_since = 0;
    }
    let addr = backend.upstream.addr();
    if passed {
        streak.passed += 1;
        streak.failed = 0;
        streak.passed_since += 1;
        if !backend.is_healthy() && streak.passed >= checks.rise.get() {
            backend.marks().mark_up();
            s.start_ramp(now);
            crate::say!(
                "roundhouse: {addr} is up ({} health checks passed)",
                streak.passed
            );
        }
        if s.ejected_at(now) && streak.passed_since >= checks.rise.get() {
            health.end_ejection(backend, now);
        }
    } else {
        streak.failed += 1;
        streak.passed = 0;
        streak.passed_since = 0;
        if backend.is_healthy() && streak.failed >= checks.fall.get() {
            backend.marks().mark_down();
            crate::say!(
                "roundhouse: {addr} is down ({} health checks failed)",
                streak.failed
            );
        }
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, as a pause
/// from `now`, capped at `MAX_EJECTION`. `None` for a date in the past, zero, or
/// anything unreadable.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let pause = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is "very long": capped below.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .ok()?
    };
    (!pause.is_zero()).then(|| pause.min(MAX_EJECTION))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::balancer::testing::backends;
    use crate::config::AllDown;

    fn config(max_fails: u32) -> HealthConfig {
        HealthConfig {
            checks: None,
            max_fails: NonZeroU32::new(max_fails),
            fail_window: Duration::from_secs(10),
            eject_time: Duration::from_secs(1),
            eject_on_5xx: false,
            slow_start: None,
            all_down: AllDown::FailOpen,
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_caps_them() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(MAX_EJECTION)
        );
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), None);
        assert_eq!(retry_after("0", now), None);
        assert_eq!(retry_after("-5", now), None);
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn max_fails_within_the_window_eject_and_each_ejection_in_a_row_doubles() {
        let set = backends(&[1, 1, 1, 1]);
        let health = Health::new(config(3));
        let b = &set[0];
        health.failed(&set, b, 1_000);
        health.failed(&set, b, 1_001);
        assert!(!b.standing().is_out_at(1_002));
        health.failed(&set, b, 1_002);
        assert!(b.standing().is_out_at(1_003));
        assert_eq!(b.standing().ejections(), 1);
        assert_eq!(b.stats().snapshot().ejections, 1, "counted for /metrics");
        assert_eq!(b.standing().last_ejection(), Some(Duration::from_secs(1)));
        // Back at 2_002; fails again at once: twice as long.
        for t in 2_010..2_013 {
            health.failed(&set, b, t);
        }
        assert_eq!(b.standing().ejections(), 2);
        assert_eq!(b.standing().last_ejection(), Some(Duration::from_secs(2)));
        // Then in for longer than it was out: back to the base time.
        for t in 10_000..10_003 {
            health.failed(&set, b, t);
        }
        assert_eq!(b.standing().ejections(), 1);
        assert_eq!(b.standing().last_ejection(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let set = backends(&[1, 1]);
        let health = Health::new(config(2));
        health.failed(&set, &set[0], 1_000);
        health.failed(&set, &set[0], 20_000);
        assert_eq!(set[0].standing().ejections(), 0);
        health.failed(&set, &set[0], 20_001);
        assert_eq!(set[0].standing().ejections(), 1);
    }

    #[test]
    fn at_most_half_the_backends_are_ejected() {
        let set = backends(&[1, 1, 1]);
        let health = Health::new(config(1));
        for b in &set {
            health.failed(&set, b, 1_000);
        }
        let out = set.iter().filter(|b| b.standing().ejections() > 0).count();
        assert_eq!(out, 1);
        let one = backends(&[1]);
        health.failed(&one, &one[0], 1_000);
        assert_eq!(one[0].standing().ejections(), 0);
    }

    #[test]
    fn retry_after_on_503_holds_the_backend_and_5xx_counts_only_when_asked() {
        let set = backends(&[1, 1]);
        let health = Health::new(config(1));
        let mut headers = HeaderMap::new();
        health.answered_at(&set, &set[0], 500, &headers, 1_000);
        assert_eq!(set[0].standing().ejections(), 0);
        headers.insert(header::RETRY_AFTER, "3".parse().unwrap());
        health.answered_at(&set, &set[1], 503, &headers, 1_000);
        assert!(set[1].standing().is_out_at(3_999));
        assert!(!set[1].standing().is_out_at(4_000));
        assert_eq!(set[1].standing().ejections(), 0);

        let health = Health::new(HealthConfig {
            eject_on_5xx: true,
            ..config(1)
        });
        health.answered_at(&set, &set[0], 502, &HeaderMap::new(), 1_000);
        assert_eq!(set[0].standing().ejections(), 1);
    }

    #[test]
    fn a_streak_flips_health_and_ends_an_ejection_early() {
        let set = backends(&[1, 1]);
        let checks = Checks {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            status: (200, 399),
            rise: NonZeroU32::new(2).unwrap(),
            fall: NonZeroU32::new(3).unwrap(),
        };
        let health = Health::new(config(1));
        let b = &set[0];
        let mut streak = Streak::default();
        for (i, passed) in [false, false, true, false, false].into_iter().enumerate() {
            observe(&health, &checks, b, &mut streak, passed, 100 + i as u64);
            assert!(b.is_healthy(), "flipped after probe {i}");
        }
        observe(&health, &checks, b, &mut streak, false, 200);
        assert!(!b.is_healthy());
        observe(&health, &checks, b, &mut streak, true, 300);
        assert!(!b.is_healthy());
        observe(&health, &checks, b, &mut streak, true, 400);
        assert!(b.is_healthy());
        assert_eq!(b.standing().ramp_from(), Some(400));

        // Ejected at 1_000 for a second: two passing probes after that end it.
        health.failed(&set, b, 1_000);
        assert!(b.standing().is_out_at(1_001));
        observe(&health, &checks, b, &mut streak, true, 1_100);
        assert!(b.standing().is_out_at(1_101));
        observe(&health, &checks, b, &mut streak, true, 1_200);
        assert!(!b.standing().is_out_at(1_201));
    }
}
