//! Wires the balancer together: the listener, the queue, the workers, the waiting room
//! and the backends. `start` returns once the port is bound and every thread runs;
//! `Running::wait` winds it all down at shutdown (see shutdown.rs).

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
use crate::config::Config;
use crate::connection::{self, Shared};
use crate::error::ProxyError;
use crate::health::{self, Health};
use crate::http1::HeadProgress;
use crate::listener::{self, Limit};
use crate::metrics::Stats;
use crate::pool::{Pool, Sizes};
use crate::proxy::{Proxy, Scratch};
use crate::refuse::Tally;
use crate::reload::Control;
use crate::shutdown::Shutdown;
use crate::spill;
use crate::waiting_room::{Timeouts, WaitingRoom};

/// Worker stacks: a request needs little stack (buffers live on the heap), and 512
/// threads at the default 2 MiB would reserve a gigabyte of address space.
const WORKER_STACK: usize = 256 * 1024;

/// A worker beyond the first few that has had no job for this long ends (pool.rs).
const WORKER_IDLE_EXIT: Duration = Duration::from_secs(30);

/// A running balancer.
pub struct Running {
    local_addr: SocketAddr,
    /// Where the admin interface listens (`--admin`), if it does.
    admin_addr: Option<SocketAddr>,
    acceptor: thread::JoinHandle<()>,
    control: Control,
    shutdown: Arc<Shutdown>,
    /// A second handle on the listening socket, to shut it at shutdown.
    listener: TcpListener,
    /// Open client connections: shutdown waits for them to close.
    connections: Arc<Limit>,
    waiting_room: WaitingRoom,
    grace: Duration,
}

impl Running {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin interface's bound address (useful with port 0).
    /// Client connections open now (accepted and not yet closed).
    pub fn open_connections(&self) -> usize {
        self.connections.open()
    }

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

    /// Blocks until a shutdown begins, then winds down: stops accepting, closes idle
    /// keep-alive connections, lets the requests in flight finish (their answers close
    /// their connections) and returns when no client connection is left or `--grace`
    /// has passed, whichever comes first.
    pub fn wait(self) {
        self.shutdown.wait_begun();
        // Wakes the acceptor out of `accept` with EINVAL, and it returns; connection
        // attempts from now on are refused. The acceptor is not joined: at the
        // connection limit it waits for a slot, and that must not hold up the exit.
        if let Err(err) = SockRef::from(&self.listener).shutdown(std::net::Shutdown::Read) {
            eprintln!("roundhouse: cannot stop listening: {err}");
        }
        drop(self.acceptor);
        self.waiting_room.close();
        let grace = humantime::format_duration(self.grace);
        eprintln!(
            "roundhouse: stopped accepting; waiting up to {grace} for {} open connections",
            self.connections.open()
        );
        let deadline = Instant::now() + self.grace;
        while self.connections.open() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        match self.connections.open() {
            0 => eprintln!("roundhouse: stopped"),
            n => eprintln!("roundhouse: stopped after {grace} with {n} connections still open"),
        }
    }
}

/// Binds the listening port and starts every thread: the acceptor, the waiting room and
/// the workers. Returns once requests can be accepted.
pub fn start(config: Config) -> io::Result<Running> {
    let started = Instant::now();
    raise_open_files_limit(&config);
    let listener = listener::bind(
        *(config.listen.first().or(config.tls_listen.first()))
            .ok_or_else(|| io::Error::other("no --listen or --tls-listen address"))?,
        config.client_timeout,
    )?;
    let local_addr = listener.local_addr()?;

    spill::set_memory_cap(usize::try_from(config.buffer_memory).unwrap_or(usize::MAX));
    let control = Control::new(config.clone());
    let shutdown = Arc::new(Shutdown::default());
    // The counters of requests no backend was tried for: written through the tally,
    // read by the admin interface.
    let no_backend = Arc::new(Stats::default());
    let tally = Tally::new(AccessLog::new(config.log), no_backend.clone());
    let health = Arc::new(Health::new(config.health.clone()));
    let proxy = Proxy::new(
        &config,
        control.balancer(),
        shutdown.clone(),
        health.clone(),
        tally.clone(),
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
        request_buffering: config.request_buffering,
        max_body: config.max_body,
    });
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
        move |refused: Client, err| room.linger(client::refuse(&tally, refused, err))
    };
    room.start(pool.clone(), refuse.clone())?;

    let limit = Limit::new(config.max_connections.get());
    let admin_addr = match &config.admin {
        None => None,
        Some(admin) => {
            let sources = admin::Sources {
                no_backend,
                control: control.clone(),
                pool: pool.clone(),
                connections: limit.clone(),
                started,
                config_source: match &config.config_file {
                    Some(path) => format!("file {}", path.display()),
                    None => "command line".into(),
                },
            };
            Some(admin::start(admin.addr, admin.token.clone(), sources)?)
        }
    };

    let client_timeout = config.client_timeout;
    let connections = limit.clone();
    let listener_handle = listener.try_clone()?;
    let room = waiting_room.clone();
    let acceptor = thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || {
            listener::run(listener, limit, |stream, peer, slot| {
                let mut client = Client::new(stream, peer, slot, client_timeout);
                // One read that never waits: most clients send their request with the
                // connection (and TCP_DEFER_ACCEPT lets the kernel hold those that do
                // not for a moment), so most go straight to a worker.
                match client.conn.fill_head() {
                    HeadProgress::Ready => match pool.try_submit(client) {
                        Ok(()) => {}
                        // Every worker busy and the queue full: a quick 503 beats a
                        // client timeout.
                        Err(TrySendError::Full(client) | TrySendError::Disconnected(client)) => {
                            refuse(client, ProxyError::Overloaded)
                        }
                    },
                    // A worker only ever works: the waiting room waits for the head.
                    HeadProgress::Waiting { .. } => room.admit(client),
                    HeadProgress::Closed => {}
                }
            })
        })?;
    Ok(Running {
        local_addr,
        admin_addr,
        acceptor,
        control,
        shutdown,
        listener: listener_handle,
        connections,
        waiting_room,
        grace: config.grace,
    })
}

/// Each client connection is one descriptor and each pooled backend connection another;
/// the usual soft limit of 1024 would stop us far below `--max-connections`. Raise the
/// soft limit as far as the hard limit allows; if that is not enough, accept errors
/// (EMFILE) are logged and survived by the listener.
fn raise_open_files_limit(config: &Config) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let wanted =
        (config.max_connections.get() + config.workers.get() * config.backends.len() + 64) as u64;
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return;
    }
    limit.current = Some(limit.maximum.map_or(wanted, |max| max.min(wanted)));
    if let Err(err) = setrlimit(Resource::Nofile, limit) {
        eprintln!("roundhouse: cannot raise the open files limit: {err}");
    }
}
