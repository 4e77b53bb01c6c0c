//! The backend set and the choice of a backend for each request. `proxy.rs` asks for
//! `candidates()`: the strategy's pick first, then every other backend once, so that a
//! request whose connect fails can move on. Strategies live one per file beside this one.

mod round_robin;

use crate::config::{BackendSpec, Strategy};
use crate::upstream::{Settings, Upstream};

pub use round_robin::RoundRobin;

/// One backend: where it is and how to reach it.
pub struct Backend {
    pub upstream: Upstream,
    pub weight: u32,
}

pub struct Balancer {
    /// Never empty (config.rs guarantees at least one backend).
    backends: Vec<Backend>,
    strategy: RoundRobin,
    strategy_name: &'static str,
}

impl Balancer {
    pub fn new(specs: &[BackendSpec], strategy: Strategy, settings: &Settings) -> Balancer {
        let backends: Vec<Backend> = specs
            .iter()
            .map(|spec| Backend {
                upstream: Upstream::new(spec.addr, settings),
                weight: spec.weight.get(),
            })
            .collect();
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let strategy_impl = match strategy {
            Strategy::RoundRobin => RoundRobin::new(&weights),
        };
        Balancer {
            backends,
            strategy: strategy_impl,
            strategy_name: strategy.name(),
        }
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    pub fn strategy_name(&self) -> &'static str {
        self.strategy_name
    }

    /// The backends to try for one request, in order: the strategy's pick, then the
    /// others once each (wrapping around from the pick).
    pub fn candidates(&self) -> impl Iterator<Item = &Backend> + Clone {
        let first = self.strategy.pick();
        let n = self.backends.len();
        (0..n).map(move |i| &self.backends[(first + i) % n])
    }
}
