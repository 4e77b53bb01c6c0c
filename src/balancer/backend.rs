//! A `Backend` is one server we forward to: its address and weight, and the live state
//! the strategies (the files beside this one) read on every pick. That state comes in
//! two kinds, kept apart because they are written so differently:
//!
//! - `Load`, the hot counters: requests in flight and the latency estimate, written by
//!   every request (through `InFlight`, which `proxy.rs` holds while it forwards);
//! - `Marks`, whether the backend may be picked: healthy (health.rs), drained and
//!   disabled (the admin interface, admin.rs), and its `Standing` (standing.rs, written
//!   by health.rs). Written rarely, each by one writer, through `pub(crate)` methods
//!   named for the event and naming their caller.
//!
//! Everything that must outlive a reload is in `Live`: a reload (reload.rs) builds new
//! `Backend`s, and one whose address was there before shares the old one's `Live`.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::clock;
use crate::metrics::Stats;
use crate::upstream::Upstream;

use super::latency::PeakEwma;
use super::standing::Standing;

/// One backend: where it is, its weight, and the live state the strategies read.
///
/// What the backend's spec says (weight, backup) is kept here; everything that must
/// outlive a reload is in `Live`, reached through `Deref`, so that a backend that stays
/// across a reload keeps its connection pool, counters and health. New live state goes
/// in `Live`.
pub struct Backend {
    pub weight: u32,
    /// A backup (`--backend ADDR,backup`) takes requests only while no primary can.
    backup: bool,
    live: Arc<Live>,
}

/// The part of a backend that outlives a reload (see `Backend`).
pub struct Live {
    pub upstream: Upstream,
    load: Load,
    marks: Marks,
    /// What happened to the requests sent here; see metrics.rs.
    stats: Stats,
}

impl Deref for Backend {
    type Target = Live;

    fn deref(&self) -> &Live {
        &self.live
    }
}

/// The fields every request writes, kept on their own cache lines so that two workers
/// counting requests on two neighbouring backends do not slow each other down (128: two
/// lines, since x86 fetches lines in pairs).
#[repr(align(128))]
#[derive(Default)]
struct Load {
    /// Requests sent to this backend whose answer is not relayed yet. Changed only
    /// through `InFlight`, so it always comes back down.
    in_flight: AtomicUsize,
    /// Time to the response head, peak-EWMA. Written only through `InFlight::record`.
    latency: PeakEwma,
}

/// Whether a backend may take new requests. Every pick reads these and almost nothing
/// writes them, so they need no cache line of their own: what every request writes
/// (`Load`, `Stats`) keeps its own lines, and shares none with them.
#[derive(Default)]
pub(crate) struct Marks {
    /// False while the active health checks count the backend as down. Written only by
    /// health.rs (`mark_down`, `mark_up`).
    healthy: AtomicBoolTrue,
    /// True while the operator drains the backend (it finishes what it has, gets nothing
    /// new). Written by the admin interface (`drain`, `enable`), and cleared when a
    /// reload carries the backend over (`carry_over`).
    drained: AtomicBool,
    /// True while the operator has taken the backend out (maintenance): like drained,
    /// and shown apart. Written by the admin interface (`disable`, `enable`), and cleared
    /// when a reload carries the backend over (`carry_over`).
    disabled: AtomicBool,
    /// Ejections, `Retry-After` pauses and slow start. Written only by health.rs, through
    /// standing.rs's write side.
    standing: Standing,
}

/// An `AtomicBool` whose default is `true`.
struct AtomicBoolTrue(AtomicBool);

impl Default for AtomicBoolTrue {
    fn default() -> Self {
        AtomicBoolTrue(AtomicBool::new(true))
    }
}

// Relaxed, for every mark below and in Backend's readers: a flip only needs to be seen
// soon, and publishes no other memory.
impl Marks {
    /// The active health checks failed `--fall` times in a row. Called only by health.rs
    /// (and tests).
    pub(crate) fn mark_down(&self) {
        self.healthy.0.store(false, Ordering::Relaxed);
    }

    /// The active health checks passed `--rise` times in a row. Called only by health.rs,
    /// which also starts the backend's slow-start ramp.
    pub(crate) fn mark_up(&self) {
        self.healthy.0.store(true, Ordering::Relaxed);
    }

    /// The operator drains the backend. Called only by the admin interface
    /// (`POST /backends/ADDR/drain`, admin.rs) and tests.
    pub(crate) fn drain(&self) {
        self.drained.store(true, Ordering::Relaxed);
    }

    /// The operator takes the backend out for maintenance. Called only by the admin
    /// interface (`POST /backends/ADDR/disable`, admin.rs) and tests.
    pub(crate) fn disable(&self) {
        self.disabled.store(true, Ordering::Relaxed);
    }

    /// The operator puts the backend back: neither drained nor disabled. Called only by
    /// the admin interface (`POST /backends/ADDR/enable`, admin.rs).
    pub(crate) fn enable(&self) {
        self.drained.store(false, Ordering::Relaxed);
        self.disabled.store(false, Ordering::Relaxed);
    }

    /// A reload keeps this backend: its health and standing carry over (they are the
    /// server's, and the new `Backend` shares them), but the operator's drain and disable
    /// are undone, since the reloaded file says what runs. Called only by reload.rs
    /// (`Control::apply`).
    pub(crate) fn carry_over(&self) {
        self.drained.store(false, Ordering::Relaxed);
        self.disabled.store(false, Ordering::Relaxed);
    }
}

impl Backend {
    pub fn new(upstream: Upstream, weight: u32) -> Backend {
        let live = Live {
            upstream,
            load: Load::default(),
            marks: Marks::default(),
            stats: Stats::default(),
        };
        Backend {
            weight: weight.max(1),
            backup: false,
            live: Arc::new(live),
        }
    }

    /// A new backend for the same server, with this one's live state and `weight`: how
    /// `Balancer::reusing` keeps the state of a backend that stays across a reload.
    pub(super) fn sharing(&self, weight: u32) -> Backend {
        Backend {
            weight: weight.max(1),
            backup: false,
            live: self.live.clone(),
        }
    }

    /// Makes this a backup backend (see `is_available`).
    pub fn into_backup(mut self) -> Backend {
        self.backup = true;
        self
    }

    pub fn is_backup(&self) -> bool {
        self.backup
    }

    /// Whether a strategy may pick this backend: a primary that is up. Backups are
    /// offered by `Balancer::candidates` only when no primary is.
    pub fn is_available(&self) -> bool {
        !self.backup && self.is_up()
    }

    /// Whether the backend may take new requests: healthy, not drained, not disabled,
    /// not ejected or paused by its own `Retry-After`.
    pub fn is_up(&self) -> bool {
        let m = &self.marks;
        m.healthy.0.load(Ordering::Relaxed)
            && !m.drained.load(Ordering::Relaxed)
            && !m.disabled.load(Ordering::Relaxed)
            && !m.standing.is_out()
    }

    /// Ejections, pauses and slow start, as health.rs keeps them (see standing.rs).
    pub fn standing(&self) -> &Standing {
        &self.marks.standing
    }

    /// Whether the health checker counts this backend as up.
    pub fn is_healthy(&self) -> bool {
        self.marks.healthy.0.load(Ordering::Relaxed)
    }

    pub fn is_drained(&self) -> bool {
        self.marks.drained.load(Ordering::Relaxed)
    }

    pub fn is_disabled(&self) -> bool {
        self.marks.disabled.load(Ordering::Relaxed)
    }

    /// The marks, to change them: each change is a method named for its event, and each
    /// has one caller.
    pub(crate) fn marks(&self) -> &Marks {
        &self.marks
    }

    /// The counters of the requests sent to this backend.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Requests sent to this backend and not yet relayed back.
    pub fn in_flight(&self) -> usize {
        // Relaxed: a strategy's snapshot of the load is a hint; no memory hangs on it.
        self.load.in_flight.load(Ordering::Relaxed)
    }

    /// The latency estimate at this moment, in microseconds (0 before any answer).
    pub fn latency_micros(&self) -> f64 {
        self.load.latency.cost(clock::now_ms())
    }

    /// The latency estimate itself, for least-time's cost at a given time.
    pub(super) fn latency(&self) -> &PeakEwma {
        &self.load.latency
    }

    /// Counts one request against this backend until the guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        // Relaxed: a counter; only its value matters, not ordering with other memory.
        self.load.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }
}

/// Counts one request against a backend for as long as it lives: `proxy.rs` takes it
/// just before sending and drops it once the answer is relayed or the attempt failed.
pub struct InFlight<'a>(&'a Backend);

impl InFlight<'_> {
    /// Records how long the backend took to send its response head.
    pub fn record(&self, time_to_head: Duration) {
        self.0
            .load
            .latency
            .observe(time_to_head.as_secs_f64() * 1e6, clock::now_ms());
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Relaxed: see Backend::start.
        self.0.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Backend {
    /// `start` for a tunnel, whose guard (`balancer::Held`) owns the balancer: its count
    /// goes down in `held_end`, called by that guard alone.
    pub(super) fn held_start(&self) {
        // Relaxed: see Backend::start.
        self.load.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn held_end(&self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
