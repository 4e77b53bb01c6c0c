//! Wires the balancer together: the listeners, the queue, the workers, the waiting room
//! and the backends. `start` returns once every port is bound and every thread runs;
//! `Running::wait` winds it all down at shutdown (see shutdown.rs), after the drain delay.
//! Each listener (plain `--listen`, or TLS `--tls-listen` with the certificates of
//! `tls_certs.rs`) has an acceptor thread of its own; they share everything else.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use socket2::SockRef;

use crate::access_log::AccessLog;
use crate::admin;
use crate::client::{self, Client};
use crate::config::{CertPair, Config};
use crate::connection::{self, Shared};
use crate::discovery::Discovery;
use crate::error::ProxyError;
use crate::health::{self, Health};
use crate::http1::HeadProgress;
use crate::limits::Limits;
use crate::listener::{self, Limit};
use crate::metrics::{Handshakes, Stats, Tunnels};
use crate::pool::{Pool, Sizes};
use crate::proxy::{Proxy, Scratch};
use crate::proxy_protocol::{self, Trusted};
use crate::readiness::Readiness;
use crate::redirect::Redirect;
use crate::refuse::Tally;
use crate::reload::Control;
use crate::shutdown::Shutdown;
use crate::spill;
use crate::tunnels::TunnelRoom;
use crate::waiting_room::{Timeouts, WaitingRoom};
use crate::wire::Accepting;

/// Worker stacks: a request needs little stack (buffers live on the heap), and 512
/// threads at the default 2 MiB would reserve a gigabyte of address space.
const WORKER_STACK: usize = 256 * 1024;

/// A worker beyond the first few that has had no job for this long ends (pool.rs).
const WORKER_IDLE_EXIT: Duration = Duration::from_secs(30);

/// A running balancer.
pub struct Running {
    /// The plain listeners' bound addresses, then the TLS listeners'.
    plain_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    /// Where the admin interface listens (`--admin`), if it does.
    admin_addr: Option<SocketAddr>,
    control: Control,
    shutdown: Arc<Shutdown>,
    /// What `/ready` says; told here when the listeners close.
    readiness: Arc<Readiness>,
    /// A second handle on each listening socket, to shut it at shutdown.
    listeners: Vec<TcpListener>,
    certificates: Certificates,
    /// The resolver thread of backends given by name, which a reload may start.
    discovery: Discovery,
    /// Open client connections: shutdown waits for them to close.
    connections: Arc<Limit>,
    waiting_room: WaitingRoom,
    /// Closed at the end of the grace: tunnels do not end by themselves.
    tunnels: TunnelRoom,
    grace: Duration,
}

impl Running {
    /// The first plain listener's bound address (useful with port 0), or the first TLS
    /// listener's when there is no plain one.
    pub fn local_addr(&self) -> SocketAddr {
        self.plain_addrs
            .first()
            .or(self.tls_addrs.first())
            .copied()
            .expect("a balancer has a listener")
    }

    /// Every plain listener's bound address.
    pub fn plain_addrs(&self) -> Vec<SocketAddr> {
        self.plain_addrs.clone()
    }

    /// Every TLS listener's bound address.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls_addrs.clone()
    }

    /// Client connections open now (accepted and not yet closed).
    pub fn open_connections(&self) -> usize {
        self.connections.open()
    }

    /// What a SIGHUP re-reads besides the config file (signals.rs).
    pub fn certificates(&self) -> Certificates {
        self.certificates.clone()
    }

    /// What a SIGHUP starts when a reload brings the first backend name (signals.rs).
    pub fn discovery(&self) -> Discovery {
        self.discovery.clone()
    }

    /// The admin interface's bound address (useful with port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Reloads and runtime weight changes: see reload.rs.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The switch that stops the balancer: `begin()` it from any thread (signals.rs
    /// does, on SIGTERM and SIGINT) and `wait` winds down and returns.
    pub fn shutdown(&self) -> Arc<Shutdown> {
        self.shutdown.clone()
    }

    /// Blocks until a shutdown begins, then drains for `--drain-delay` (still accepting
    /// and serving, not ready), then winds down: stops accepting, closes idle
    /// keep-alive connections, lets the requests in flight finish (their answers close
    /// their connections) and returns when no client connection is left or `--grace`
    /// has passed, whichever comes first.
    pub fn wait(self) {
        self.shutdown.wait_begun();
        // From the configuration in use when the signal came: a reload may change it.
        // The signals thread exits at once on a second signal, so this sleep needs no
        // waking.
        let drain = self.control.config().drain_delay;
        if !drain.is_zero() {
            thread::sleep(drain);
        }
        self.readiness.set_listening(false);
        // Wakes each acceptor out of `accept` with EINVAL, and it returns; connection
        // attempts from now on are refused. The acceptors are not joined: at the
        // connection limit one waits for a slot, and that must not hold up the exit.
        for listener in &self.listeners {
            if let Err(err) = SockRef::from(listener).shutdown(std::net::Shutdown::Read) {
                crate::say!("roundhouse: cannot stop listening: {err}");
            }
        }
        self.waiting_room.close();
        let grace = humantime::format_duration(self.grace);
        crate::say!(
            "roundhouse: stopped accepting; waiting up to {grace} for {} open connections",
            self.connections.open()
        );
        let deadline = Instant::now() + self.grace;
        while self.connections.open() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if self.connections.open() > 0 {
            // Tunnels never finish on their own: the grace is all they get.
            self.tunnels.close();
            let deadline = Instant::now() + Duration::from_millis(200);
            while self.connections.open() > 0 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
        }
        match self.connections.open() {
            0 => crate::say!("roundhouse: stopped"),
            n => crate::say!("roundhouse: stopped after {grace} with {n} connections still open"),
        }
    }
}

/// Binds every listening port and starts every thread: the acceptors, the waiting room
/// and the workers. Returns once requests can be accepted.
pub fn start(config: Config) -> io::Result<Running> {
    let started = Instant::now();
    raise_open_files_limit(&config);
    let handshakes = Arc::new(Handshakes::default());
    let proxy_refusals = Arc::new(proxy_protocol::Refusals::default());
    let (certificates, tls) = tls_accepting(&config, &handshakes);
    // First: with --reuse-port, an instance started on another's admin port must fail
    // before its proxy listeners join the others' and take a share of their connections.
    let admin_listener = config
        .admin
        .as_ref()
        .map(|a| admin::bind(a.addr))
        .transpose()?;
    let mut listeners = Vec::new();
    for (addrs, accepting, flag) in [
        (&config.listen, &Accepting::Plain, "--listen"),
        (&config.tls_listen, &tls, "--tls-listen"),
    ] {
        for &addr in addrs {
            let listener = listener::bind(addr, config.client_timeout, config.reuse_port)
                .map_err(|err| io::Error::new(err.kind(), format!("{flag} {addr}: {err}")))?;
            listeners.push((listener, accepting.clone()));
        }
    }
    let bound = |tls: bool| -> io::Result<Vec<SocketAddr>> {
        listeners
            .iter()
            .filter(|(_, accepting)| accepting.is_tls() == tls)
            .map(|(listener, _)| listener.local_addr())
            .collect()
    };
    let (plain_addrs, tls_addrs) = (bound(false)?, bound(true)?);

    spill::set_memory_cap(usize::try_from(config.buffer_memory).unwrap_or(usize::MAX));
    let control = Control::new(config.clone());
    let shutdown = Arc::new(Shutdown::default());
    // Listening once the acceptors below run; the admin interface reads it.
    let readiness = Arc::new(Readiness::new(shutdown.clone()));
    // The counters of requests no backend was tried for: written through the tally,
    // read by the admin interface.
    let no_backend = Arc::new(Stats::default());
    let tally = Tally::new(AccessLog::new(config.log), no_backend.clone());
    let health = Arc::new(Health::new(config.health.clone()));
    // Upgrade tunnels: counted by the workers that open them and the room that carries
    // them, read by the admin interface.
    let tunnel_counts = Arc::new(Tunnels::default());
    // Per client: connections counted by the acceptors, requests by the workers.
    let limits = Limits::new(&config);
    let tunnels = TunnelRoom::start(
        config.tunnel_idle_timeout,
        tally.clone(),
        tunnel_counts.clone(),
    )?;
    let proxy = Proxy::new(
        &config,
        control.balancer(),
        shutdown.clone(),
        health.clone(),
        tally.clone(),
        tunnel_counts.clone(),
        limits.clone(),
    );

    let (waiting_room, room) = WaitingRoom::new(Timeouts {
        idle: config.idle_timeout,
        head: config.client_timeout,
    })?;
    let shared = Arc::new(Shared {
        proxy,
        tally: tally.clone(),
        shutdown: shutdown.clone(),
        waiting_room: waiting_room.clone(),
        tunnels: tunnels.clone(),
        request_buffering: config.request_buffering,
        max_body: config.max_body,
        redirect: config
            .https_redirect
            .then(|| Redirect::new(tls_addrs.first().map(SocketAddr::port))),
    });
    // Backends given by name are looked up again on a thread of their own.
    let discovery = Discovery::new(control.clone(), shutdown.clone());
    discovery.ensure()?;
    if config.health.checks.is_some() {
        let control = control.clone();
        thread::Builder::new()
            .name("health".into())
            .spawn(move || health::run(|| control.current(), &health))?;
    }
    // Connections with a request ready wait in the pool's queue for a worker.
    let pool = Pool::start(
        Sizes {
            workers: config.workers,
            queue: config.queue,
            stack_size: WORKER_STACK,
            idle_exit: WORKER_IDLE_EXIT,
        },
        move |_, backlog| {
            let shared = shared.clone();
            let mut scratch = Scratch::default();
            move |client| connection::serve(&shared, &backlog, &mut scratch, client)
        },
    )?;
    // The acceptor and the waiting room both turn connections away at a full queue,
    // and the room answers a head past its deadline; each refused connection then
    // lingers in the room until its client has read the answer.
    let refuse = {
        let room = waiting_room.clone();
        move |refused: Client, err| {
            if let Some(answered) = client::refuse(&tally, refused, err) {
                room.linger(answered);
            }
        }
    };
    room.start(pool.clone(), refuse.clone())?;

    let limit = Limit::new(config.max_connections.get());
    let admin_addr = match config.admin.as_ref().zip(admin_listener) {
        None => None,
        Some((admin, listener)) => {
            let sources = admin::Sources {
                no_backend,
                control: control.clone(),
                pool: pool.clone(),
                connections: limit.clone(),
                handshakes: handshakes.clone(),
                tunnels: tunnel_counts,
                proxy_refusals: proxy_refusals.clone(),
                readiness: readiness.clone(),
                started,
                config_source: match &config.config_file {
                    Some(path) => format!("file {}", path.display()),
                    None => "command line".into(),
                },
            };
            let accepting = if admin.tls {
                tls.clone()
            } else {
                Accepting::Plain
            };
            Some(admin::start(
                listener,
                admin.token.clone(),
                sources,
                accepting,
            )?)
        }
    };

    let client_timeout = config.client_timeout;
    // `--proxy-protocol`: who may send a PROXY header, and the count of those refused.
    let proxy_header = config
        .proxy_protocol
        .then(|| Trusted::new(config.trusted_proxies.clone()));
    let mut handles = Vec::new();
    for (listener, accepting) in listeners {
        handles.push(listener.try_clone()?);
        let (limit, limits, pool, room, refuse) = (
            limit.clone(),
            limits.clone(),
            pool.clone(),
            waiting_room.clone(),
            refuse.clone(),
        );
        let (proxy_header, proxy_refusals) = (proxy_header.clone(), proxy_refusals.clone());
        thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || {
                listener::run(listener, limit, |stream, peer, slot| {
                    let Some(wire) = accepting.wire() else {
                        return;
                    };
                    let mut client = Client::new(stream, peer, slot, client_timeout).over(wire);
                    let mut over_limit = false;
                    if let Some(trusted) = &proxy_header {
                        // Anyone else could claim to be anyone.
                        if !trusted.contains(peer.ip()) {
                            return proxy_refusals.record_untrusted();
                        }
                        client.conn.expect_proxy_header(proxy_refusals.clone());
                        // Counted once the header names the client: below, or in the
                        // waiting room if the header comes later.
                        client.admit_after_header(limits.clone());
                    } else {
                        let place = limits.admit(client.conn.peer().ip());
                        over_limit = place.is_none();
                        client.hold(place.unwrap_or_default());
                    }
                    // One read that never waits: most clients send their request (or
                    // their TLS ClientHello) with the connection, and TCP_DEFER_ACCEPT
                    // lets the kernel hold those that do not for a moment, so most go
                    // straight to a worker.
                    match client.conn.fill_head() {
                        // Not a request: nothing to answer or log, over the limit or not.
                        HeadProgress::Closed => {}
                        // A client over its connections gets 429 at once, whatever it
                        // has sent so far.
                        _ if over_limit || !client.admit_now() => {
                            refuse(client, ProxyError::TooManyConnections)
                        }
                        HeadProgress::Ready => match pool.try_submit(client) {
                            Ok(()) => {}
                            // Every worker busy and the queue full: a quick 503 beats a
                            // client timeout.
                            Err(
                                TrySendError::Full(client) | TrySendError::Disconnected(client),
                            ) => refuse(client, ProxyError::Overloaded),
                        },
                        // A worker only ever works: the waiting room waits for the head.
                        HeadProgress::Waiting { .. } => room.admit(client),
                    }
                })
            })?;
    }
    readiness.set_listening(true);
    Ok(Running {
        plain_addrs,
        tls_addrs,
        admin_addr,
        control,
        shutdown,
        readiness,
        listeners: handles,
        certificates,
        discovery,
        connections: limit,
        waiting_room,
        tunnels,
        grace: config.grace,
    })
}

/// The TLS side of the listeners: one certificate resolver (which a SIGHUP reloads) and
/// one rustls configuration for every TLS listener and the admin interface's TLS.
#[cfg(feature = "tls")]
fn tls_accepting(config: &Config, counts: &Arc<Handshakes>) -> (Certificates, Accepting) {
    use crate::tls_certs::{Resolver, server_config};
    let Some(certs) = &config.listener_tls.certs else {
        return (Certificates::default(), Accepting::Plain);
    };
    let resolver = Arc::new(Resolver::new(certs.clone()));
    let accepting = Accepting::Tls {
        config: Arc::new(server_config(resolver.clone())),
        counts: counts.clone(),
    };
    (
        Certificates {
            resolver: Some(resolver),
        },
        accepting,
    )
}

#[cfg(not(feature = "tls"))]
fn tls_accepting(_: &Config, _: &Arc<Handshakes>) -> (Certificates, Accepting) {
    (Certificates::default(), Accepting::Plain)
}

/// The TLS listeners' certificates, which a SIGHUP reads again (signals.rs): new
/// handshakes get the new ones, established connections keep theirs. Empty without
/// TLS listeners.
#[derive(Clone, Default)]
pub struct Certificates {
    #[cfg(feature = "tls")]
    resolver: Option<Arc<crate::tls_certs::Resolver>>,
}

impl Certificates {
    /// Whether there are certificates to reload.
    pub fn any(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.resolver.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Reads `pairs` again and swaps them in, and says so on stderr; a pair that does
    /// not load keeps the old certificates, and the line says why.
    pub fn reload(&self, pairs: &[CertPair]) {
        #[cfg(feature = "tls")]
        if let Some(resolver) = &self.resolver {
            match resolver.reload(pairs) {
                Ok(warnings) => {
                    crate::say!("roundhouse: reloaded {} TLS certificates", pairs.len());
                    for warning in warnings {
                        crate::say!("roundhouse: warning: {warning}");
                    }
                }
                Err(err) => {
                    crate::say!(
                        "roundhouse: TLS certificates not reloaded, the old ones stay: {err}"
                    )
                }
            }
        }
        #[cfg(not(feature = "tls"))]
        let _ = pairs;
    }
}

/// Each client connection is one descriptor and each pooled backend connection another;
/// the usual soft limit of 1024 would stop us far below `--max-connections`. Raise the
/// soft limit as far as the hard limit allows; if that is not enough, accept errors
/// (EMFILE) are logged and survived by the listener.
fn raise_open_files_limit(config: &Config) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    // A tunnel holds a backend socket beside its client's, outside the pools.
    let tunnels = config.max_tunnels.min(config.max_connections.get());
    let wanted = (config.max_connections.get()
        + tunnels
        + config.workers.get() * config.backends.len()
        + 64) as u64;
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return;
    }
    limit.current = Some(limit.maximum.map_or(wanted, |max| max.min(wanted)));
    if let Err(err) = setrlimit(Resource::Nofile, limit) {
        crate::say!("roundhouse: cannot raise the open files limit: {err}");
    }
}
