//! Wires the balancer together: the listener, the queue, the workers, the waiting room
//! and the backends. `start` returns once the port is bound and every thread runs.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::TrySendError;

use crate::access_log::AccessLog;
use crate::balancer::Balancer;
use crate::config::Config;
use crate::connection::{self, Client, Shared};
use crate::listener;
use crate::pool::Pool;
use crate::proxy::{Proxy, Scratch};
use crate::upstream::Settings;
use crate::waiting_room::WaitingRoom;

/// Worker stacks: a request needs little stack (buffers live on the heap), and 512
/// threads at the default 2 MiB would reserve a gigabyte of address space.
const WORKER_STACK: usize = 256 * 1024;

/// A running balancer.
pub struct Running {
    local_addr: SocketAddr,
    acceptor: thread::JoinHandle<()>,
}

impl Running {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Blocks for as long as the balancer runs.
    pub fn wait(self) {
        let _ = self.acceptor.join();
    }
}

/// Binds the listening port and starts every thread: the acceptor, the waiting room and
/// the workers. Returns once requests can be accepted.
pub fn start(config: Config) -> io::Result<Running> {
    raise_open_files_limit(&config);
    let listener = listener::bind(config.listen, config.client_timeout)?;
    let local_addr = listener.local_addr()?;

    let settings = Settings {
        connect_timeout: config.connect_timeout,
        timeout: config.timeout,
        pool_size: config.workers.get(),
    };
    let proxy = Proxy {
        balancer: Balancer::new(&config.backends, config.strategy, &settings),
        max_body: config.max_body,
        log: AccessLog::new(config.log),
    };

    let (waiting_room, room) = WaitingRoom::new(config.idle_timeout)?;
    let shared = Arc::new(Shared {
        proxy,
        waiting_room,
        client_timeout: config.client_timeout,
    });
    // Connections with a request ready wait in the pool's queue for a worker.
    let pool = Pool::start(config.workers, config.queue, WORKER_STACK, move |_| {
        let shared = shared.clone();
        let mut scratch = Scratch::default();
        move |client| connection::serve(&shared, &mut scratch, client)
    })?;
    room.start(pool.clone(), connection::turn_away)?;

    let client_timeout = config.client_timeout;
    let max_connections = config.max_connections.get();
    let acceptor = thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || {
            listener::run(listener, max_connections, |stream, peer, slot| {
                let client = Client::new(stream, peer, slot, client_timeout);
                match pool.try_submit(client) {
                    Ok(()) => {}
                    // Every worker busy and the queue full: a quick 503 beats a client timeout.
                    Err(TrySendError::Full(client) | TrySendError::Disconnected(client)) => {
                        connection::turn_away(client)
                    }
                }
            })
        })?;
    Ok(Running {
        local_addr,
        acceptor,
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
