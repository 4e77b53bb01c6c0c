//! A backend's standing with the health policy: whether it is out of rotation for a
//! while (a passive ejection, or a pause its own `Retry-After` asked for), whether it is
//! ramping up after coming back (slow start), and the counts passive ejection keeps. One
//! `Standing` per backend, among its marks (backend.rs); all of it atomics, on the
//! process clock (`clock::now_ms`).
//!
//! The file has two sides. The read side (`is_out`, `ramp_share`, `ramp_from`,
//! `ejections`, `last_ejection`) is for everyone: the strategies on every pick, the admin
//! interface, health.rs itself. The write side is health.rs's alone: the policy (how
//! many failures, how long, how many backends at once) is decided there, and these
//! methods only store its decisions. One exception: reload.rs starts the slow-start
//! ramp of a backend that a DNS answer has just added (`start_ramp`). They are `pub(crate)` because health.rs is not
//! inside `balancer/`, which is as narrow as Rust can say it; each is named for a health
//! event and names health.rs as its one caller. The read side writes one thing only: it
//! clears a deadline it finds passed (`is_out`, `ramp_share`), with a compare-exchange
//! that loses to any new value health.rs stored meanwhile, so later reads skip the clock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock;

// Relaxed everywhere in this file: each field is self-contained. The request path only
// needs to see a deadline soon, no other memory hangs on any of them, and fetch_max and
// compare_exchange keep the later of two writes where two may race.

/// One backend's standing; see the module docs for who writes what.
#[derive(Default)]
pub struct Standing {
    /// Until when (`clock::now_ms`) the backend takes no new requests: a passive ejection
    /// or a `Retry-After`. 0: it is in. Set by health.rs (`hold`, `eject`,
    /// `end_ejection`); cleared once passed by `is_out`.
    out_until: AtomicU64,
    /// When the backend last came back (a flip up, or the end of its time out): where
    /// slow start ramps from. 0: at full weight. Set by health.rs (`start_ramp`, `hold`,
    /// `end_ejection`); cleared once the ramp is over by `ramp_share`.
    ramp_from: AtomicU64,
    /// Start of the current failure window, and the failures counted in it. Written only
    /// by health.rs (`count_failure`, `eject`).
    window_start: AtomicU64,
    fails: AtomicU32,
    /// End of the current (or last) passive ejection; the half-of-the-backends rule counts
    /// these, not `Retry-After` holds. Written only by health.rs (`eject`,
    /// `end_ejection`).
    ejected_until: AtomicU64,
    /// Passive ejections in a row, each twice as long as the one before; back to 0 once
    /// the backend stays in for as long as it was last out. Written only by health.rs
    /// (`eject`).
    ejections: AtomicU32,
    /// How long the last passive ejection was, in milliseconds. Written only by
    /// health.rs (`eject`).
    last_ejection: AtomicU64,
}

/// The read side.
impl Standing {
    /// True while the backend is ejected or asked for a pause. Reads the clock only
    /// while a deadline is set.
    pub fn is_out(&self) -> bool {
        let until = self.out_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if clock::now_ms() < until {
            return true;
        }
        // Time is up: clear it so that later reads skip the clock. A new deadline set in
        // between wins (the exchange fails).
        let _ = self
            .out_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        false
    }

    /// While the backend ramps up after coming back, the share of its turns it takes,
    /// growing linearly from 10 % to 100 % over `length` milliseconds (`--slow-start`);
    /// `None` at full weight. A ramp found over is cleared, unless a new one began
    /// meanwhile, so that later calls read no clock.
    pub fn ramp_share(&self, length: u64) -> Option<f64> {
        let from = self.ramp_from()?;
        let elapsed = clock::now_ms().saturating_sub(from);
        if elapsed >= length {
            let _ = self
                .ramp_from
                .compare_exchange(from, 0, Ordering::Relaxed, Ordering::Relaxed);
            return None;
        }
        Some((elapsed as f64 / length as f64).max(0.1))
    }

    /// When the backend came back, for slow start; `None` when it runs at full weight.
    pub fn ramp_from(&self) -> Option<u64> {
        match self.ramp_from.load(Ordering::Relaxed) {
            0 => None,
            from => Some(from),
        }
    }

    /// Passive ejections in a row (0 when the backend has not been ejected lately).
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// How long the last passive ejection was; `None` if there was none.
    pub fn last_ejection(&self) -> Option<Duration> {
        match self.last_ejection.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// End of the current or last passive ejection (`clock::now_ms`); 0 if none.
    pub(crate) fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    /// Whether a passive ejection is running at `now`.
    pub(crate) fn ejected_at(&self, now: u64) -> bool {
        now < self.ejected_until()
    }
}

/// The write side: health.rs's only (see the module docs).
impl Standing {
    /// Counts one failure at `now` in a window of `window` milliseconds, starting a new
    /// window if the current one is over, and returns the failures in it. Called only
    /// by health.rs (`Health::failed`). A failure counted in the wrong window at the
    /// edge changes nothing that matters.
    pub(crate) fn count_failure(&self, now: u64, window: u64) -> u32 {
        let start = self.window_start.load(Ordering::Relaxed);
        if now.saturating_sub(start) > window
            && self
                .window_start
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.fails.store(1, Ordering::Relaxed);
            1
        } else {
            self.fails.fetch_add(1, Ordering::Relaxed) + 1
        }
    }

    /// Takes the backend out until `until` (or longer, if it was already out longer),
    /// and ramps it up from then. Called only by health.rs: for a `Retry-After`
    /// (`Health::answered`), and through `eject`.
    pub(crate) fn hold(&self, until: u64) {
        self.out_until.fetch_max(until, Ordering::Relaxed);
        self.ramp_from.fetch_max(until, Ordering::Relaxed);
    }

    /// Ejects the backend at `now` for `length` milliseconds, as ejection `in_a_row` of
    /// a row, and starts a fresh failure window. Called only by health.rs
    /// (`Health::eject`), which holds its ejection flag meanwhile.
    pub(crate) fn eject(&self, now: u64, length: u64, in_a_row: u32) {
        self.ejected_until.store(now + length, Ordering::Relaxed);
        self.last_ejection.store(length, Ordering::Relaxed);
        self.ejections.store(in_a_row, Ordering::Relaxed);
        self.fails.store(0, Ordering::Relaxed);
        self.window_start.store(now, Ordering::Relaxed);
        self.hold(now + length);
    }

    /// Ends a running passive ejection at `now` and ramps up from then; a longer pause
    /// asked for meanwhile (`Retry-After`) is kept. False if no ejection was running.
    /// Called only by health.rs (`Health::end_ejection`, after a passing probe streak).
    pub(crate) fn end_ejection(&self, now: u64) -> bool {
        let until = self.ejected_until();
        if now >= until {
            return false;
        }
        self.ejected_until.store(now, Ordering::Relaxed);
        let _ = self
            .out_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        self.ramp_from.store(now, Ordering::Relaxed);
        true
    }

    /// Starts a slow-start ramp at `from`: the backend has just come back up, or just
    /// appeared. Called only by health.rs (its probe streak flipped the backend up), by
    /// reload.rs (`Control::resolved`: a DNS answer added it), and by tests.
    pub(crate) fn start_ramp(&self, from: u64) {
        self.ramp_from.store(from, Ordering::Relaxed);
    }
}

#[cfg(test)]
impl Standing {
    /// `is_out` at a given time, without clearing anything.
    pub(crate) fn is_out_at(&self, now: u64) -> bool {
        now < self.out_until.load(Ordering::Relaxed)
    }
}
