//! Reload: the running backend set and strategy swapped for new ones without a pause.
//!
//! The balancer lives behind an `ArcSwap`. `proxy::handle` loads it once per request, with
//! no lock (arc-swap's load is a few atomic operations on slots of the worker's own), and
//! holds it to the end of the request: a request in flight finishes on the set it started
//! with, the next one takes the new set, and the old set is freed when its last request
//! ends. A backend whose address stays shares its live state with its successor
//! (`balancer::Live`): connection pool, counters, health.
//!
//! `Control` is the handle. `signals.rs` applies a config file read again on SIGHUP
//! through it, the admin interface changes weights through it, and the resolver thread
//! (`discovery.rs`) the addresses of backends given by name. Every kind of change is
//! serialised by one mutex, which the request path never takes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;

use crate::balancer::{Backend, Balancer};
use crate::clock;
use crate::config::{BackendSource, BackendSpec, Config, WEIGHT_RULE, Weight, expand};
use crate::upstream::Settings;

/// Swaps the balancer; cheap to clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    balancer: Arc<ArcSwap<Balancer>>,
    /// What the running balancer was built from: the backends and strategy as last
    /// applied (weights as last set, names' addresses as last found), the listeners'
    /// certificate pairs as last read, the drain delay as last applied, everything
    /// else as at startup.
    running: Mutex<Config>,
    /// Reloads applied so far. Written only by `apply`, while it holds `running`, and
    /// read under that lock too: the mutex orders it, so Relaxed is enough.
    generation: AtomicU64,
}

/// What a reload (or a new DNS answer) changed, for its log line.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    /// Backends that stayed (same address), came and went.
    pub kept: usize,
    pub added: usize,
    pub removed: usize,
    /// The settings that differ but only take effect after a restart, by field name
    /// (`listen`, `workers`, ...).
    pub need_restart: Vec<String>,
}

impl Control {
    /// Builds the first balancer from `config`.
    pub fn new(config: Config) -> Control {
        let balancer = build(&config, &[]);
        Control {
            inner: Arc::new(Inner {
                balancer: Arc::new(ArcSwap::from_pointee(balancer)),
                running: Mutex::new(config),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The swappable balancer, for `proxy::Proxy`.
    pub fn balancer(&self) -> Arc<ArcSwap<Balancer>> {
        self.inner.balancer.clone()
    }

    /// The balancer in use now. Requests that started before a swap may still be on an
    /// older one.
    pub fn current(&self) -> Arc<Balancer> {
        self.inner.balancer.load_full()
    }

    /// The configuration in use now (see `Inner::running`).
    pub fn config(&self) -> Config {
        self.running().clone()
    }

    /// The configuration in use now and its generation, which every reload changes: for
    /// the resolver thread, whose lookups count only for the generation they were made
    /// for (`resolved`).
    pub fn generation_and_config(&self) -> (u64, Config) {
        let running = self.running();
        // Relaxed: see Inner::generation.
        (
            self.inner.generation.load(Ordering::Relaxed),
            running.clone(),
        )
    }

    /// Switches to the backends and strategy of `new` (a reloaded config file) and takes
    /// its certificate pairs, which the TLS listeners read again on SIGHUP, its drain
    /// delay, which `server::Running::wait` reads when a shutdown begins, and its
    /// backend names and how they are looked up, which the resolver thread then looks
    /// up. Drains, disables and weights set at runtime are undone: the file says what
    /// runs. Other settings that differ are listed in `need_restart` and left as they
    /// are.
    pub fn apply(&self, new: &Config) -> Applied {
        let mut running = self.running();
        let before = self.current();
        let mut applied = diff(&addrs(before.backends()), &new.backends);
        applied.need_restart = need_restart(&running, new);
        for b in before.backends() {
            if new
                .backends
                .iter()
                .any(|spec| spec.addr == b.upstream.addr())
            {
                b.marks().carry_over();
            }
        }
        running.backends = new.backends.clone();
        running.backend_sources = new.backend_sources.clone();
        running.resolve_interval = new.resolve_interval;
        running.resolver = new.resolver.clone();
        // Relaxed: see Inner::generation.
        self.inner.generation.fetch_add(1, Ordering::Relaxed);
        running.default_backends = new.default_backends;
        running.strategy = new.strategy.clone();
        running.listener_tls = new.listener_tls.clone();
        running.drain_delay = new.drain_delay;
        // The TLS files are read again with every load; the same flags name the same
        // files, so an https backend added now gets them (even the first one, for which
        // the running config had not loaded them).
        if new.backend_tls == running.backend_tls {
            running.tls = new.tls.clone();
        }
        self.swap(&running, before.backends());
        applied
    }

    /// Switches to the addresses the resolver thread found for the backend flags of
    /// `generation`: a backend whose address stays keeps its live state, its drain and
    /// the weight set at runtime; one that is new ramps up with `--slow-start`; one that
    /// has gone gets no new request, and those in flight finish on the old set. `None`
    /// when the set stays as it is, or when a reload came since the lookups began (they
    /// were of flags that no longer run).
    pub fn resolved(&self, generation: u64, sources: Vec<BackendSource>) -> Option<Applied> {
        let mut running = self.running();
        // Relaxed: see Inner::generation.
        if self.inner.generation.load(Ordering::Relaxed) != generation {
            return None;
        }
        let mut backends = expand(&sources);
        for spec in &mut backends {
            let same = |old: &&BackendSpec| {
                old.addr == spec.addr && old.https == spec.https && old.backup == spec.backup
            };
            if let Some(old) = running.backends.iter().find(same) {
                spec.weight = old.weight;
            }
        }
        running.backend_sources = sources;
        if backends == running.backends {
            return None;
        }
        let before = self.current();
        let applied = diff(&addrs(before.backends()), &backends);
        running.backends = backends;
        let balancer = build(&running, before.backends());
        if running.health.slow_start.is_some() {
            let now = clock::now_ms().max(1);
            let old = addrs(before.backends());
            for b in balancer.backends() {
                if !old.contains(&b.upstream.addr()) {
                    b.standing().start_ramp(now);
                }
            }
        }
        self.inner.balancer.store(Arc::new(balancer));
        Some(applied)
    }

    /// Sets one backend's weight, from 1 to 1000, until the next reload. The strategies
    /// work from weights fixed when the balancer is built, so this builds a new balancer
    /// from the running specs with that one weight changed, and swaps it in.
    pub fn set_weight(&self, addr: SocketAddr, weight: u32) -> Result<(), String> {
        let weight =
            Weight::new(weight).ok_or_else(|| format!("weight {weight} is not {WEIGHT_RULE}"))?;
        let mut running = self.running();
        let mut found = false;
        for spec in running.backends.iter_mut().filter(|s| s.addr == addr) {
            spec.weight = weight;
            found = true;
        }
        if !found {
            return Err(format!("no backend {addr}"));
        }
        self.swap(&running, self.current().backends());
        Ok(())
    }

    fn running(&self) -> MutexGuard<'_, Config> {
        // A panic while holding the lock left a complete Config (every change is made
        // on fields of it, then swapped): still good to use.
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn swap(&self, config: &Config, previous: &[Backend]) {
        self.inner.balancer.store(Arc::new(build(config, previous)));
    }
}

fn addrs(backends: &[Backend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.upstream.addr()).collect()
}

/// How the backend set changes from the addresses `before` to `after`, by address: the
/// backends of `before` that stay and those that go, and those of `after` that are new.
fn diff(before: &[SocketAddr], after: &[BackendSpec]) -> Applied {
    let kept = before
        .iter()
        .filter(|addr| after.iter().any(|spec| spec.addr == **addr))
        .count();
    Applied {
        kept,
        removed: before.len() - kept,
        added: after
            .iter()
            .filter(|spec| !before.contains(&spec.addr))
            .count(),
        need_restart: Vec::new(),
    }
}

/// The balancer for `config`, sharing the live state of `previous` backends by address.
fn build(config: &Config, previous: &[Backend]) -> Balancer {
    let settings = Settings {
        connect_timeout: config.connect_timeout,
        timeout: config.timeout,
        workers: config.workers.get(),
        backends: config.backends.len(),
        tls: config.tls.clone(),
    };
    Balancer::reusing(
        &config.backends,
        config.strategy.clone(),
        &settings,
        previous,
    )
    .with_failover(config.health.slow_start, config.health.all_down)
}

/// The fields of `new` that differ from `running` and that a reload does not apply, in
/// the order `Config` declares them. Every field is named here, without `..`: a field
/// added to `Config` does not compile until someone decides whether a reload applies it.
fn need_restart(running: &Config, new: &Config) -> Vec<String> {
    let Config {
        listen,
        tls_listen,
        https_redirect,
        proxy_protocol,
        trusted_proxies,
        // What a reload applies: the listeners' certificates are read again on every
        // SIGHUP (signals.rs), so new paths are taken too...
        listener_tls: _,
        backends: _,
        default_backends: _,
        strategy: _,
        // ...the backend names and how they are looked up (the resolver thread reads
        // them every round)...
        backend_sources: _,
        resolve_interval: _,
        resolver: _,
        // Read from the files at start: what the flags below name.
        tls: _,
        backend_tls,
        workers,
        queue,
        max_connections,
        connect_timeout,
        timeout,
        client_timeout,
        idle_timeout,
        max_tunnels,
        tunnel_idle_timeout,
        reuse_port,
        // Read when a shutdown begins, from the configuration in use then.
        drain_delay: _,
        // Built once at start (server.rs, limits.rs): a change takes a restart.
        max_connections_per_client,
        rate_limit,
        max_body,
        request_buffering,
        buffer_memory,
        log,
        admin,
        trace_header,
        health,
        retry,
        grace,
        // ...and what only says where the configuration came from.
        config_file: _,
    } = new;
    let differs = [
        ("listen", *listen != running.listen),
        ("tls_listen", *tls_listen != running.tls_listen),
        ("https_redirect", *https_redirect != running.https_redirect),
        ("proxy_protocol", *proxy_protocol != running.proxy_protocol),
        (
            "trusted_proxies",
            *trusted_proxies != running.trusted_proxies,
        ),
        ("backend_tls", *backend_tls != running.backend_tls),
        ("workers", *workers != running.workers),
        ("queue", *queue != running.queue),
        (
            "max_connections",
            *max_connections != running.max_connections,
        ),
        (
            "connect_timeout",
            *connect_timeout != running.connect_timeout,
        ),
        ("timeout", *timeout != running.timeout),
        ("client_timeout", *client_timeout != running.client_timeout),
        ("idle_timeout", *idle_timeout != running.idle_timeout),
        ("max_tunnels", *max_tunnels != running.max_tunnels),
        (
            "tunnel_idle_timeout",
            *tunnel_idle_timeout != running.tunnel_idle_timeout,
        ),
        ("reuse_port", *reuse_port != running.reuse_port),
        (
            "max_connections_per_client",
            *max_connections_per_client != running.max_connections_per_client,
        ),
        ("rate_limit", *rate_limit != running.rate_limit),
        ("max_body", *max_body != running.max_body),
        (
            "request_buffering",
            *request_buffering != running.request_buffering,
        ),
        ("buffer_memory", *buffer_memory != running.buffer_memory),
        ("log", *log != running.log),
        ("admin", *admin != running.admin),
        ("trace_header", *trace_header != running.trace_header),
        ("health", *health != running.health),
        ("retry", *retry != running.retry),
        ("grace", *grace != running.grace),
    ];
    differs
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut all = args.to_vec();
        for (flag, value) in [("--listen", "127.0.0.1:0"), ("--workers", "2")] {
            if !args.contains(&flag) {
                all.extend([flag, value]);
            }
        }
        Config::from_args(&all).unwrap()
    }

    fn addrs(balancer: &Balancer) -> Vec<String> {
        balancer
            .backends()
            .iter()
            .map(|b| format!("{} w{}", b.upstream.addr(), b.weight))
            .collect()
    }

    #[cfg(feature = "tls")]
    #[test]
    fn the_tls_flags_need_a_restart_and_a_first_https_backend_gets_them() {
        let control = Control::new(config(&["--backend", "127.0.0.1:9001"]));
        assert!(!control.config().tls.loaded());
        let insecure = config(&["--backend", "https://localhost:9001", "--backend-insecure"]);
        assert_eq!(control.apply(&insecure).need_restart, ["backend_tls"]);
        assert!(!control.config().tls.loaded());
        let https = config(&["--backend", "https://localhost:9002"]);
        assert!(control.apply(&https).need_restart.is_empty());
        assert!(control.config().tls.loaded());
    }

    #[test]
    fn the_listeners_and_the_redirect_need_a_restart() {
        let running = config(&["--backend", "127.0.0.1:9001"]);
        let more = config(&[
            "--backend",
            "127.0.0.1:9001",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:1",
        ]);
        assert_eq!(need_restart(&running, &more), ["listen"]);
        let redirect = config(&["--backend", "127.0.0.1:9001", "--https-redirect"]);
        assert_eq!(need_restart(&running, &redirect), ["https_redirect"]);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_listeners_and_admin_tls_need_a_restart_and_new_certificates_do_not() {
        use crate::config::test_pairs;
        let dir = tempfile::tempdir().unwrap();
        let a = test_pairs::write(dir.path(), "a", None);
        let b = test_pairs::write(dir.path(), "b", None);
        let tls = |pair: &crate::config::CertPair, extra: &[&str]| {
            let (cert, key) = (
                pair.cert.display().to_string(),
                pair.key.display().to_string(),
            );
            let mut args = vec!["--backend", "127.0.0.1:9001", "--admin", "127.0.0.1:9090"];
            args.extend(["--tls-cert", &cert, "--tls-key", &key]);
            args.extend_from_slice(extra);
            config(&args)
        };
        let on_9443 = ["--tls-listen", "127.0.0.1:9443"];
        let control = Control::new(tls(&a, &on_9443));
        let applied = control.apply(&tls(&b, &on_9443));
        assert_eq!(applied.need_restart, Vec::<String>::new());
        assert_eq!(
            control.config().listener_tls.pairs,
            std::slice::from_ref(&b)
        );

        let running = control.config();
        let moved = tls(&b, &["--tls-listen", "127.0.0.1:9444"]);
        assert_eq!(need_restart(&running, &moved), ["tls_listen"]);
        let admin_tls = tls(&b, &["--tls-listen", "127.0.0.1:9443", "--admin-tls"]);
        assert_eq!(need_restart(&running, &admin_tls), ["admin"]);
    }

    #[test]
    fn a_reload_keeps_the_live_state_of_backends_that_stay() {
        let control = Control::new(config(&[
            "--backend",
            "127.0.0.1:9001",
            "--backend",
            "127.0.0.1:9002",
        ]));
        let old = control.current();
        let guard = old.backends()[1].start();
        old.backends()[1].marks().drain();

        let applied = control.apply(&config(&[
            "--backend",
            "127.0.0.1:9002,weight=3",
            "--backend",
            "127.0.0.1:9003",
            "--strategy",
            "least-conn",
        ]));
        assert_eq!(
            applied,
            Applied {
                kept: 1,
                added: 1,
                removed: 1,
                need_restart: vec![]
            }
        );
        let new = control.current();
        assert_eq!(addrs(&new), ["127.0.0.1:9002 w3", "127.0.0.1:9003 w1"]);
        assert_eq!(new.strategy_name(), "least-conn");
        // The request in flight on the old set counts on the new one too...
        assert_eq!(new.backends()[0].in_flight(), 1);
        drop(guard);
        assert_eq!(new.backends()[0].in_flight(), 0);
        // ...and the drain, a runtime change, ended with the reload.
        assert!(!new.backends()[0].is_drained());
        // The old set is still whole for whoever holds it.
        assert_eq!(addrs(&old), ["127.0.0.1:9001 w1", "127.0.0.1:9002 w1"]);
    }

    #[test]
    fn a_weight_change_swaps_the_set_until_the_next_reload() {
        let start = config(&["--backend", "127.0.0.1:9001", "--backend", "127.0.0.1:9002"]);
        let control = Control::new(start.clone());
        control.current().backends()[0]
            .start()
            .record(Duration::from_millis(5));
        control
            .set_weight("127.0.0.1:9001".parse().unwrap(), 7)
            .unwrap();
        let now = control.current();
        assert_eq!(addrs(&now), ["127.0.0.1:9001 w7", "127.0.0.1:9002 w1"]);
        assert!(now.backends()[0].latency_micros() > 0.0, "latency was lost");
        assert_eq!(control.config().backends[0].weight.get(), 7);

        let err = control
            .set_weight("127.0.0.1:9009".parse().unwrap(), 2)
            .unwrap_err();
        assert!(err.contains("127.0.0.1:9009"), "{err}");
        assert!(
            control
                .set_weight("127.0.0.1:9001".parse().unwrap(), 0)
                .is_err()
        );
        assert!(
            control
                .set_weight("127.0.0.1:9001".parse().unwrap(), 1001)
                .is_err()
        );

        control.apply(&start);
        assert_eq!(
            addrs(&control.current()),
            ["127.0.0.1:9001 w1", "127.0.0.1:9002 w1"]
        );
    }

    #[test]
    fn the_diff_counts_by_address() {
        let spec = |addr: &str| config(&["--backend", addr]).backends[0].clone();
        let before: Vec<SocketAddr> = ["10.0.0.1:80", "10.0.0.2:80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let after = [
            spec("10.0.0.2:80"),
            spec("10.0.0.3:80"),
            spec("10.0.0.4:80"),
        ];
        let applied = diff(&before, &after);
        assert_eq!((applied.kept, applied.added, applied.removed), (1, 2, 1));
        let applied = diff(&before, &[]);
        assert_eq!((applied.kept, applied.added, applied.removed), (0, 0, 2));
        let applied = diff(&[], &after[..1]);
        assert_eq!((applied.kept, applied.added, applied.removed), (0, 1, 0));
    }

    #[test]
    fn new_addresses_keep_what_stays_and_ramp_up_what_comes() {
        let control = Control::new(config(&[
            "--backend",
            "localhost:9001",
            "--backend",
            "127.0.0.9:9009,backup",
            "--slow-start",
            "1h",
        ]));
        let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
        let (generation, running) = control.generation_and_config();
        // localhost may have ::1 too: from one address.
        let mut sources = running.backend_sources.clone();
        sources[0].addrs = sources[0].at(&[ip("127.0.0.1")]);
        control.resolved(generation, sources.clone());
        let old = control.current();
        let first = old.backends()[0].upstream.addr();
        let held = old.backends()[0].start();
        old.backends()[0].marks().drain();
        control.set_weight(first, 4).unwrap();

        sources[0].addrs = sources[0].at(&[first.ip(), ip("127.0.0.2")]);
        let applied = control.resolved(generation, sources.clone()).unwrap();
        assert_eq!((applied.kept, applied.added, applied.removed), (2, 1, 0));
        let new = control.current();
        let at = |addr: &str| -> &Backend {
            let addr: SocketAddr = addr.parse().unwrap();
            new.backends()
                .iter()
                .find(|b| b.upstream.addr() == addr)
                .unwrap()
        };
        // What stays keeps its counters, its drain and its runtime weight...
        let kept = at(&first.to_string());
        assert_eq!(
            (kept.in_flight(), kept.is_drained(), kept.weight),
            (1, true, 4)
        );
        assert_eq!(kept.standing().ramp_from(), None);
        // ...what comes ramps up with --slow-start, and the typed backup stays last.
        assert!(at("127.0.0.2:9001").standing().ramp_from().is_some());
        assert!(new.backends().last().unwrap().is_backup());
        assert_eq!(control.config().backend_sources, sources);
        // The same answer again changes nothing.
        assert_eq!(control.resolved(generation, sources.clone()), None);

        sources[0].addrs = sources[0].at(&[ip("127.0.0.2")]);
        let applied = control.resolved(generation, sources.clone()).unwrap();
        assert_eq!((applied.kept, applied.added, applied.removed), (2, 0, 1));
        // The request in flight on the address that went ends on the set it began on.
        assert_eq!(old.backends()[0].in_flight(), 1);
        drop(held);
        assert_eq!(old.backends()[0].in_flight(), 0);
        assert_eq!(control.current().backends().len(), 2);

        // Lookups made before a reload do not count after it.
        control.apply(&config(&["--backend", "localhost:9003"]));
        sources[0].addrs.clear();
        assert_eq!(control.resolved(generation, sources), None);
        let (now, running) = control.generation_and_config();
        assert_ne!(now, generation);
        assert_eq!(running.backends[0].addr.port(), 9003);
        // A name that has gone leaves no backend.
        let mut gone = running.backend_sources.clone();
        gone[0].addrs.clear();
        assert_eq!(control.resolved(now, gone).map(|a| a.removed), Some(1));
        assert!(control.current().backends().is_empty());
    }

    #[test]
    fn settings_a_reload_cannot_apply_are_named() {
        let control = Control::new(config(&["--backend", "127.0.0.1:9001"]));
        let applied = control.apply(&config(&[
            "--backend",
            "127.0.0.1:9001",
            "--listen",
            "127.0.0.1:1",
            "--workers",
            "9",
            "--timeout",
            "5s",
            "--strategy",
            "random",
        ]));
        assert_eq!(applied.need_restart, ["listen", "workers", "timeout"]);
        // What needs a restart is left as it runs.
        assert_eq!(control.config().workers.get(), 2);
        assert_eq!(control.current().strategy_name(), "random");
    }

    #[test]
    fn the_tunnel_limits_need_a_restart() {
        let running = config(&["--backend", "127.0.0.1:9001"]);
        let fewer = config(&["--backend", "127.0.0.1:9001", "--max-tunnels", "10"]);
        assert_eq!(need_restart(&running, &fewer), ["max_tunnels"]);
        let longer = config(&["--backend", "127.0.0.1:9001", "--tunnel-idle-timeout", "1h"]);
        assert_eq!(need_restart(&running, &longer), ["tunnel_idle_timeout"]);
    }

    #[test]
    fn reuse_port_needs_a_restart_and_a_drain_delay_is_applied() {
        let control = Control::new(config(&["--backend", "127.0.0.1:9001"]));
        let applied = control.apply(&config(&[
            "--backend",
            "127.0.0.1:9001",
            "--reuse-port",
            "--drain-delay",
            "7s",
        ]));
        assert_eq!(applied.need_restart, ["reuse_port"]);
        assert!(!control.config().reuse_port);
        assert_eq!(control.config().drain_delay, Duration::from_secs(7));
    }

    #[test]
    fn the_limits_per_client_need_a_restart() {
        let b = ["--backend", "127.0.0.1:9001"];
        let running = config(&b);
        let capped = config(&[&b[..], &["--max-connections-per-client", "4"]].concat());
        assert_eq!(
            need_restart(&running, &capped),
            ["max_connections_per_client"]
        );
        let limited = config(&[&b[..], &["--rate-limit", "5/s"]].concat());
        assert_eq!(need_restart(&running, &limited), ["rate_limit"]);
        let burst = config(&[&b[..], &["--rate-limit", "5/s", "--rate-burst", "9"]].concat());
        assert_eq!(need_restart(&limited, &burst), ["rate_limit"]);
    }

    #[test]
    fn workers_need_a_restart_and_backends_do_not() {
        let running = config(&["--backend", "127.0.0.1:9001"]);
        let more_workers = config(&["--backend", "127.0.0.1:9001", "--workers", "3"]);
        assert_eq!(need_restart(&running, &more_workers), ["workers"]);
        let other_backends = config(&[
            "--backend",
            "127.0.0.1:9002,weight=4",
            "--backend",
            "127.0.0.1:9003,backup",
            "--strategy",
            "hash",
        ]);
        assert_eq!(
            need_restart(&running, &other_backends),
            Vec::<String>::new()
        );
        assert_eq!(need_restart(&running, &running), Vec::<String>::new());
        let names = config(&[
            "--backend",
            "127.0.0.1:9001",
            "--resolve-interval",
            "0s",
            "--resolver",
            "127.0.0.1:53",
        ]);
        assert_eq!(need_restart(&running, &names), Vec::<String>::new());
        let health = config(&["--backend", "127.0.0.1:9001", "--max-fails", "0"]);
        assert_eq!(need_restart(&running, &health), ["health"]);
    }
}
