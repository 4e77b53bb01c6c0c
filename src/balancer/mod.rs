//! The backend set and the choice of a backend for each request. A `Backend`
//! (backend.rs) is one server we forward to, with the live state the strategies read:
//! requests in flight, a latency estimate, and whether it may be picked at all (its
//! marks, among them its `Standing`, standing.rs). `proxy.rs` asks for `candidates()`:
//! the strategy's pick first, then every other available backend once, so that a
//! request whose connect fails can move on. Strategies live one per file beside this
//! one; each picks with atomics only (no lock) and allocates nothing per pick.
//!
//! Nothing here decides a backend's health: health.rs does, through the write methods
//! of the marks and the standing. health.rs uses this module; this module never uses
//! health.rs.

mod backend;
mod hash;
mod latency;
mod least_conn;
mod least_time;
mod p2c;
mod random;
mod round_robin;
mod standing;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderMap;

use crate::clock;
use crate::config::{AllDown, BackendSpec, Strategy};
use crate::upstream::{Settings, Upstream};

pub use backend::{Backend, InFlight, Live};

/// One open tunnel counted against its backend (`Balancer::hold`); least-conn sees it
/// as a request in flight until the tunnel closes.
pub struct Held {
    balancer: Arc<Balancer>,
    index: usize,
}

impl Held {
    pub fn backend(&self) -> &Backend {
        &self.balancer.backends[self.index]
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.balancer.backends[self.index].held_end();
    }
}
use hash::{Hash, Key, Ring, RingWalk};
use least_conn::LeastConn;
use least_time::LeastTime;
use p2c::PowerOfTwo;
use random::{Random, WeightedDraw};
pub use round_robin::RoundRobin;
pub use standing::Standing;

/// What a strategy may look at in a request: read before the header policy changes
/// anything, so that a hash key is what the client sent.
pub struct PickContext<'a> {
    pub client: IpAddr,
    /// The origin-form target: path and query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// The strategies, with the state each keeps between picks.
enum Picker {
    RoundRobin(RoundRobin),
    Random(Random),
    LeastConn(LeastConn),
    PowerOfTwo(PowerOfTwo),
    LeastTime(LeastTime),
    Hash(Hash),
}

pub struct Balancer {
    /// Empty only while every backend flag names a host that has gone (discovery.rs).
    backends: Vec<Backend>,
    picker: Picker,
    strategy_name: &'static str,
    /// `--slow-start` in milliseconds; 0 when off.
    slow_start: u64,
    /// What to do when no backend, primary or backup, is up (`--all-down`).
    all_down: AllDown,
    /// True while every backend is down and requests go to all of them anyway (logged
    /// when it starts and ends).
    failing_open: AtomicBool,
    /// Whose turn it is among the backups (or, failing open, among all).
    spare_turn: AtomicUsize,
}

impl Balancer {
    pub fn new(specs: &[BackendSpec], strategy: Strategy, settings: &Settings) -> Balancer {
        Balancer::reusing(specs, strategy, settings, &[])
    }

    /// Like `new`, but a backend among `previous` (same address, same http or https
    /// name) takes over that one's live state (connection pool, counters, health): how
    /// a reload keeps them.
    pub fn reusing(
        specs: &[BackendSpec],
        strategy: Strategy,
        settings: &Settings,
        previous: &[Backend],
    ) -> Balancer {
        let backends = specs
            .iter()
            .map(|spec| {
                let b = match previous.iter().find(|p| p.upstream.serves(spec)) {
                    Some(p) => p.sharing(spec.weight.get()),
                    None => Backend::new(Upstream::for_spec(spec, settings), spec.weight.get()),
                };
                if spec.backup { b.into_backup() } else { b }
            })
            .collect();
        Balancer::with_backends(backends, &strategy)
    }

    /// Sets slow start (`--slow-start`) and what happens when every backend is down
    /// (`--all-down`). Without it: no slow start, and no backend when all are down.
    pub fn with_failover(mut self, slow_start: Option<Duration>, all_down: AllDown) -> Balancer {
        self.slow_start = slow_start.map_or(0, |d| d.as_millis().max(1) as u64);
        self.all_down = all_down;
        self
    }

    /// A balancer over backends built by the caller (benchmarks and tests).
    pub fn with_backends(backends: Vec<Backend>, strategy: &Strategy) -> Balancer {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let ring = || {
            let addrs: Vec<_> = backends.iter().map(|b| b.upstream.addr()).collect();
            Ring::new(&addrs, &weights)
        };
        let picker = match strategy {
            Strategy::RoundRobin => Picker::RoundRobin(RoundRobin::new(&weights)),
            Strategy::Random => Picker::Random(Random::new(WeightedDraw::new(&weights))),
            Strategy::LeastConn => Picker::LeastConn(LeastConn::new(&weights)),
            Strategy::PowerOfTwo => {
                Picker::PowerOfTwo(PowerOfTwo::new(WeightedDraw::new(&weights)))
            }
            Strategy::LeastTime => Picker::LeastTime(LeastTime::new(&weights)),
            Strategy::IpHash => Picker::Hash(Hash::new(ring(), Key::ClientNetwork, None)),
            Strategy::Hash {
                key,
                balance_factor,
            } => Picker::Hash(Hash::new(ring(), Key::from(key), *balance_factor)),
        };
        Balancer {
            backends,
            picker,
            strategy_name: strategy.name(),
            slow_start: 0,
            all_down: AllDown::Unavailable,
            failing_open: AtomicBool::new(false),
            spare_turn: AtomicUsize::new(0),
        }
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Counts a tunnel against `backend` (one of this balancer's) for as long as the
    /// guard lives, like `Backend::start`, but owning the balancer: a tunnel outlives its
    /// request, and any reload that swaps the balancer meanwhile.
    pub fn hold(self: &Arc<Balancer>, backend: &Backend) -> Option<Held> {
        let index = self
            .backends
            .iter()
            .position(|b| std::ptr::eq(b, backend))?;
        self.backends[index].held_start();
        Some(Held {
            balancer: self.clone(),
            index,
        })
    }

    pub fn strategy_name(&self) -> &'static str {
        self.strategy_name
    }

    /// The backends to try for one request, in order: the strategy's pick (made now,
    /// once), then the other available backends once each, then the backups that are
    /// up. For the hashing strategies the others come in ring order, which is where the
    /// key would go if the pick were removed; for the rest, in index order from the
    /// pick. When no primary is available: the backups that are up, in turn; when none
    /// is either, every backend not drained or disabled with `--all-down fail-open`, or
    /// nothing. Lazy and allocation-free; a clone replays the same order.
    pub fn candidates(&self, ctx: &PickContext<'_>) -> Candidates<'_> {
        let backends = &self.backends[..];
        if backends.is_empty() {
            // Every name has gone (discovery.rs): no strategy has anything to pick from.
            return Candidates {
                backends,
                pick: None,
                started: false,
                rest: Rest::Wrap(1),
                admit: Admit::Any,
                tail: 0,
            };
        }
        let (first, rest) = match &self.picker {
            Picker::RoundRobin(s) => (s.pick(backends), Rest::Wrap(1)),
            Picker::Random(s) => (s.pick(backends, below), Rest::Wrap(1)),
            Picker::LeastConn(s) => (s.pick(backends), Rest::Wrap(1)),
            Picker::PowerOfTwo(s) => (s.pick(backends, below), Rest::Wrap(1)),
            Picker::LeastTime(s) => (s.pick(backends, clock::now_ms()), Rest::Wrap(1)),
            Picker::Hash(s) => match s.pick(backends, ctx) {
                Some((first, walk)) => (Some(first), Rest::Ring(walk)),
                None => (None, Rest::Wrap(1)),
            },
        };
        let Some(mut first) = first else {
            return self.spares();
        };
        // Slow start only for the strategies that spread load; a hashed key stays put.
        if self.slow_start != 0
            && !matches!(self.picker, Picker::Hash(_))
            && !self.ramped_up(&backends[first])
        {
            // This turn goes to the next available backend; the ramping one stays a
            // fallback.
            let n = backends.len();
            if let Some(next) = (1..n)
                .map(|k| (first + k) % n)
                .find(|&i| backends[i].is_available())
            {
                first = next;
            }
        }
        self.stop_failing_open();
        Candidates {
            backends,
            pick: Some(first),
            started: false,
            rest,
            admit: Admit::Primary,
            tail: 0,
        }
    }

    /// Whether `backend` takes this turn under slow start: always at full weight; while
    /// it ramps up, with a chance growing linearly from 10 % to 100 % over
    /// `--slow-start`, so its share of requests grows the same way.
    fn ramped_up(&self, backend: &Backend) -> bool {
        match backend.standing().ramp_share(self.slow_start) {
            Some(share) => fastrand::f64() < share,
            None => true,
        }
    }

    /// Logs the end of failing open, once: some backend is up again. One relaxed load
    /// per request otherwise.
    fn stop_failing_open(&self) {
        // Relaxed: a log line's trigger; a late or doubled line is harmless.
        if self.failing_open.load(Ordering::Relaxed)
            && self.failing_open.swap(false, Ordering::Relaxed)
        {
            crate::say!("roundhouse: a backend is up again; no longer failing open");
        }
    }

    /// The candidates when no primary is available: the backups, else all (failing open).
    fn spares(&self) -> Candidates<'_> {
        let backends = &self.backends[..];
        let n = backends.len();
        // Relaxed: see RoundRobin::turn.
        let turn = self.spare_turn.fetch_add(1, Ordering::Relaxed);
        let first = |admit: Admit| {
            (0..n)
                .map(|k| (turn + k) % n)
                .find(|&i| admit.admits(&backends[i]))
        };
        let (pick, admit) = match first(Admit::Backup) {
            Some(i) => {
                self.stop_failing_open();
                (Some(i), Admit::Backup)
            }
            None if self.all_down == AllDown::FailOpen => {
                let pick = first(Admit::Any);
                // Relaxed: see candidates.
                if pick.is_some() && !self.failing_open.swap(true, Ordering::Relaxed) {
                    crate::say!(
                        "roundhouse: every backend is down; failing open: requests go to all of them"
                    );
                }
                (pick, Admit::Any)
            }
            None => (None, Admit::Any),
        };
        Candidates {
            backends,
            pick,
            started: false,
            rest: Rest::Wrap(1),
            admit,
            tail: n,
        }
    }
}

/// The order `candidates` yields; see there.
#[derive(Clone)]
pub struct Candidates<'a> {
    backends: &'a [Backend],
    /// The strategy's pick; `None` when nothing was available.
    pick: Option<usize>,
    /// Whether the pick was yielded already.
    started: bool,
    rest: Rest<'a>,
    /// Which backends `Rest::Wrap` yields.
    admit: Admit,
    /// After the rest, the next index to look at for a backup that is up; the length of
    /// `backends` when there is no such tail.
    tail: usize,
}

/// Which backends a candidate list admits after its pick.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Available primaries (`Backend::is_available`).
    Primary,
    /// Backups that are up.
    Backup,
    /// Every backend the operator has not taken out (failing open).
    Any,
}

impl Admit {
    fn admits(self, b: &Backend) -> bool {
        match self {
            Admit::Primary => b.is_available(),
            Admit::Backup => b.is_backup() && b.is_up(),
            Admit::Any => !b.is_drained() && !b.is_disabled(),
        }
    }
}

#[derive(Clone)]
enum Rest<'a> {
    /// The next offset from the pick, in index order.
    Wrap(usize),
    /// The distinct backends in ring order from the key's point.
    Ring(RingWalk<'a>),
}

impl<'a> Iterator for Candidates<'a> {
    type Item = &'a Backend;

    fn next(&mut self) -> Option<&'a Backend> {
        let backends = self.backends;
        // Nothing was available when the pick was made: nothing to fall back on either.
        let pick = self.pick?;
        if !self.started {
            self.started = true;
            return Some(&backends[pick]);
        }
        let next = match &mut self.rest {
            Rest::Wrap(offset) => {
                let mut found = None;
                while *offset < backends.len() {
                    let i = (pick + *offset) % backends.len();
                    *offset += 1;
                    if self.admit.admits(&backends[i]) {
                        found = Some(&backends[i]);
                        break;
                    }
                }
                found
            }
            Rest::Ring(walk) => walk
                .find(|&i| i != pick && backends[i].is_available())
                .map(|i| &backends[i]),
        };
        if next.is_some() {
            return next;
        }
        // The primaries are used up: the backups that are up, in index order.
        while self.tail < backends.len() {
            let i = self.tail;
            self.tail += 1;
            if Admit::Backup.admits(&backends[i]) {
                return Some(&backends[i]);
            }
        }
        None
    }
}

/// A random number below `n`, from this thread's own generator (fastrand's, seeded
/// once per thread): no lock, no shared cache line.
fn below(n: u64) -> u64 {
    fastrand::u64(..n)
}

/// The available backend with the lowest score, scanning from `start` (the round-robin
/// turn) so that equal scores go to whoever's turn it is. `lower(a, b)`: score `a` beats
/// `b` strictly. Shared by least-conn and least-time, which differ only in the score.
fn lowest<S>(
    backends: &[Backend],
    start: usize,
    score: impl Fn(&Backend) -> S,
    lower: impl Fn(&S, &S) -> bool,
) -> Option<usize> {
    let n = backends.len();
    let mut best: Option<(usize, S)> = None;
    for i in (0..n).map(|k| (start + k) % n) {
        let b = &backends[i];
        if !b.is_available() {
            continue;
        }
        let s = score(b);
        if best.as_ref().is_none_or(|(_, best)| lower(&s, best)) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// Whether `load_a / weight_a < load_b / weight_b`, without dividing.
fn lighter(load_a: u64, weight_a: u32, load_b: u64, weight_b: u32) -> bool {
    u128::from(load_a) * u128::from(weight_b) < u128::from(load_b) * u128::from(weight_a)
}

/// The greatest common divisor of `weights` (1 when there is none): round robin and
/// the hash ring divide the weights by it first, so that 2:2 behaves like 1:1 with a
/// shorter schedule or a smaller ring.
fn common_divisor(weights: &[u32]) -> u32 {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    weights.iter().copied().fold(0, gcd).max(1)
}

/// Backends for the strategies' unit tests: addresses nobody connects to.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;

    pub fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080)))
            .collect()
    }

    pub fn backends(weights: &[u32]) -> Vec<Backend> {
        let settings = Settings {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            workers: 1,
            backends: weights.len(),
            tls: Default::default(),
        };
        addrs(weights.len())
            .into_iter()
            .zip(weights)
            .map(|(addr, &w)| Backend::new(Upstream::new(addr, &settings), w))
            .collect()
    }

    /// How often each index came out of `pick` in `picks` calls; panics on `None`.
    pub fn counts(n: usize, picks: usize, mut pick: impl FnMut() -> Option<usize>) -> Vec<usize> {
        let mut counts = vec![0; n];
        for _ in 0..picks {
            counts[pick().expect("a pick")] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::{ProptestConfig, any, prop_assert, prop_assert_eq, proptest};

    use super::testing::backends;
    use super::*;
    use crate::config::{HashKey, Strategy};

    fn every_strategy() -> Vec<Strategy> {
        vec![
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::LeastConn,
            Strategy::PowerOfTwo,
            Strategy::LeastTime,
            Strategy::IpHash,
            Strategy::Hash {
                key: HashKey::Cookie("sid".into()),
                balance_factor: None,
            },
            Strategy::Hash {
                key: HashKey::Path,
                balance_factor: Some(1.0),
            },
            Strategy::Hash {
                key: HashKey::Ip,
                balance_factor: Some(1.5),
            },
        ]
    }

    fn context<'a>(headers: &'a HeaderMap, path: &'a str) -> PickContext<'a> {
        PickContext {
            client: "192.0.2.7".parse().unwrap(),
            path,
            headers,
        }
    }

    /// Index of a backend in the balancer, by address.
    fn index(balancer: &Balancer, b: &Backend) -> usize {
        balancer
            .backends()
            .iter()
            .position(|x| std::ptr::eq(x, b))
            .unwrap()
    }

    #[test]
    fn candidates_are_the_pick_then_every_other_available_backend_once() {
        for strategy in every_strategy() {
            let balancer = Balancer::with_backends(backends(&[1, 2, 1, 1]), &strategy);
            balancer.backends()[2].marks().mark_down();
            let headers = HeaderMap::new();
            let order: Vec<usize> = balancer
                .candidates(&context(&headers, "/"))
                .map(|b| index(&balancer, b))
                .collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 3], "{strategy:?}: {order:?}");
        }
    }

    #[test]
    fn an_empty_set_has_no_candidate() {
        for strategy in every_strategy() {
            let balancer = Balancer::with_backends(Vec::new(), &strategy)
                .with_failover(Some(Duration::from_secs(1)), AllDown::FailOpen);
            let headers = HeaderMap::new();
            assert_eq!(balancer.candidates(&context(&headers, "/")).count(), 0);
        }
    }

    #[test]
    fn no_available_backend_means_no_candidate() {
        for strategy in every_strategy() {
            let balancer = Balancer::with_backends(backends(&[1, 1]), &strategy);
            balancer.backends()[0].marks().mark_down();
            balancer.backends()[1].marks().drain();
            let headers = HeaderMap::new();
            assert_eq!(balancer.candidates(&context(&headers, "/")).count(), 0);
        }
    }

    fn backups(weights: &[u32], backup: &[usize]) -> Vec<Backend> {
        backends(weights)
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                if backup.contains(&i) {
                    b.into_backup()
                } else {
                    b
                }
            })
            .collect()
    }

    #[test]
    fn backups_come_last_and_alone_when_no_primary_is_up() {
        for strategy in every_strategy() {
            let balancer = Balancer::with_backends(backups(&[1, 1, 1, 1], &[1, 3]), &strategy);
            let headers = HeaderMap::new();
            let order = |b: &Balancer| -> Vec<usize> {
                b.candidates(&context(&headers, "/"))
                    .map(|x| index(b, x))
                    .collect()
            };
            let got = order(&balancer);
            assert_eq!(got[2..], [1, 3], "{strategy:?}: {got:?}");
            balancer.backends()[0].marks().mark_down();
            balancer.backends()[2].marks().drain();
            let mut got = order(&balancer);
            got.sort();
            assert_eq!(got, [1, 3], "{strategy:?}");
            balancer.backends()[3].marks().mark_down();
            assert_eq!(order(&balancer), [1], "{strategy:?}");
            balancer.backends()[1].marks().mark_down();
            assert_eq!(order(&balancer), [0usize; 0], "{strategy:?}");
            // Failing open: every backend the operator has not taken out.
            let balancer = balancer.with_failover(None, AllDown::FailOpen);
            let mut got = order(&balancer);
            got.sort();
            assert_eq!(got, [0, 1, 3], "{strategy:?}");
        }
    }

    #[test]
    fn a_backend_in_slow_start_gets_a_share_growing_from_a_tenth() {
        let balancer = Balancer::with_backends(backends(&[1, 1]), &Strategy::RoundRobin)
            .with_failover(Some(Duration::from_secs(3600)), AllDown::Unavailable);
        let headers = HeaderMap::new();
        let first = |b: &Balancer| index(b, b.candidates(&context(&headers, "/")).next().unwrap());
        balancer.backends()[0]
            .standing()
            .start_ramp(clock::now_ms());
        let to_0 = (0..2000).filter(|_| first(&balancer) == 0).count();
        // Half the turns are its own, a tenth of those taken: about 100.
        assert!((40..=200).contains(&to_0), "{to_0}");
        // The ramp is over: its full share again.
        let balancer = balancer.with_failover(Some(Duration::from_millis(1)), AllDown::Unavailable);
        while clock::now_ms() < 5 {}
        balancer.backends()[0].standing().start_ramp(1);
        let to_0 = (0..2000).filter(|_| first(&balancer) == 0).count();
        assert_eq!(to_0, 1000);
        assert_eq!(balancer.backends()[0].standing().ramp_from(), None);
    }

    #[test]
    fn the_in_flight_guard_counts_up_and_back_down() {
        let set = backends(&[1]);
        {
            let _a = set[0].start();
            let _b = set[0].start();
            assert_eq!(set[0].in_flight(), 2);
        }
        assert_eq!(set[0].in_flight(), 0);
        set[0].start().record(Duration::from_millis(3));
        assert!((set[0].latency_micros() - 3000.0).abs() < 10.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the weights, availability and load: no panic, and the candidates
        /// are exactly the available backends, each once, the pick first.
        #[test]
        fn picks_are_available_distinct_and_complete(
            spec in proptest::collection::vec((1u32..=30, any::<bool>(), 0usize..4), 1..10),
            strategy in 0usize..9,
            cookie in "[a-z0-9]{0,6}",
            path in "/[a-z]{0,4}",
        ) {
            let strategy = &every_strategy()[strategy];
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let balancer = Balancer::with_backends(backends(&weights), strategy);
            let mut held = Vec::new();
            for (b, &(_, available, in_flight)) in balancer.backends().iter().zip(&spec) {
                if !available {
                    b.marks().mark_down();
                }
                held.extend((0..in_flight).map(|_| b.start()));
                if in_flight > 1 {
                    b.start().record(Duration::from_micros(in_flight as u64 * 700));
                }
            }
            let mut headers = HeaderMap::new();
            headers.insert("cookie", HeaderValue::from_str(&format!("sid={cookie}")).unwrap());
            let expected: Vec<usize> = (0..spec.len()).filter(|&i| spec[i].1).collect();
            for _ in 0..3 {
                let mut got: Vec<usize> = balancer
                    .candidates(&context(&headers, &path))
                    .map(|b| index(&balancer, b))
                    .collect();
                prop_assert!(got.iter().all(|&i| spec[i].1), "{got:?}");
                got.sort();
                prop_assert_eq!(&got, &expected);
            }
        }
    }
}
