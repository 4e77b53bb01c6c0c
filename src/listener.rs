//! The listener: binds the proxy port and accepts client connections, never more than
//! `--max-connections` open at once. It never dies on an accept error: EMFILE and the
//! like are logged and accepting resumes. Each accepted connection goes to the handler
//! that `server.rs` passes in (which queues it for a worker).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// Room for a burst of connects (std's default backlog is 128): 1000 clients connecting
/// at once should wait in the kernel, not get SYN-dropped.
const BACKLOG: i32 = 4096;

/// Binds and listens. On Linux an accepted socket is a copy of the listening one and
/// inherits TCP_NODELAY and its read and write timeouts, so setting them here once spares
/// three syscalls on every connection (`client::Client::new` sets them elsewhere).
/// The read timeout also makes `accept` wake up now and then, which `run` shrugs off.
///
/// With `reuse_port` (`--reuse-port`) the socket gets SO_REUSEPORT, so that other
/// processes of the same user may bind the same port: the kernel then spreads new
/// connections over all of their listeners, by a hash of each connection's addresses.
/// What it does not do is move the connections waiting in one listener's accept queue
/// to the others when that listener closes: those are reset (unless Linux 5.14's
/// `net.ipv4.tcp_migrate_req` is set). The README says how to stop one instance of
/// several without that.
pub fn bind(
    addr: SocketAddr,
    client_timeout: Duration,
    reuse_port: bool,
) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if cfg!(target_os = "linux") {
        socket.set_tcp_nodelay(true)?;
        socket.set_read_timeout(Some(client_timeout))?;
        socket.set_write_timeout(Some(client_timeout))?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    defer_accept(&socket);
    Ok(socket.into())
}

/// Linux's TCP_DEFER_ACCEPT (nginx's `deferred`): `accept` returns a connection only once
/// its first bytes have arrived, or after about a second without any, when the kernel
/// hands it over anyway. A client that connects and sends at once, the common case, is
/// then accepted with its request already there and goes straight to a worker; one that
/// stays silent waits in the kernel for that second, then in the waiting room. Neither
/// socket2 nor rustix has this option, hence libc (already in the tree through them).
fn defer_accept(socket: &Socket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let seconds: libc::c_int = 1;
        // SAFETY: a valid socket, and a pointer to an int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&seconds as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            crate::say!(
                "roundhouse: TCP_DEFER_ACCEPT: {}",
                io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Counts open client connections, of every listener. Each listener's acceptor waits
/// (parked) while the count is at the limit; dropping a `Slot` frees one and wakes them.
/// Each acceptor checks before it accepts, so with several listeners the count may pass
/// the limit by one per listener.
pub struct Limit {
    open: AtomicUsize,
    max: usize,
    /// The threads that wait at the limit: those in `run`, each added as it starts
    /// (the lock is taken then, and at the limit only).
    acceptors: Mutex<Vec<Thread>>,
}

/// One open client connection's place under the limit; held for the connection's life.
pub struct Slot(Arc<Limit>);

impl Drop for Slot {
    fn drop(&mut self) {
        // Only the acceptors wait, and only when we were at the limit.
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == self.0.max {
            let acceptors = self.0.acceptors.lock().unwrap_or_else(|e| e.into_inner());
            for acceptor in acceptors.iter() {
                acceptor.unpark();
            }
        }
    }
}

impl Limit {
    /// A limit of `max` open connections, for the `run` of every listener; the admin
    /// interface reads it.
    pub fn new(max: usize) -> Arc<Limit> {
        Arc::new(Limit {
            open: AtomicUsize::new(0),
            max,
            acceptors: Mutex::new(Vec::new()),
        })
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Accepts on the calling thread until the listener is shut down, handing each
/// connection and its slot under `limit` to `on_accept`.
pub fn run(
    listener: TcpListener,
    limit: Arc<Limit>,
    mut on_accept: impl FnMut(TcpStream, SocketAddr, Slot),
) {
    limit
        .acceptors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(thread::current());
    let max = limit.max;
    let mut last_complaint: Option<Instant> = None;
    loop {
        // Wait for a free slot; park() may wake spuriously, hence the loop.
        while limit.open() >= max {
            thread::park();
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                limit.open.fetch_add(1, Ordering::AcqRel);
                on_accept(stream, peer, Slot(limit.clone()));
            }
            Err(err) if is_transient(&err) => {}
            // EINVAL: the socket no longer listens. `server::Running::wait` shuts it down
            // at shutdown, which is also how it wakes us out of `accept`.
            Err(err) if err.kind() == io::ErrorKind::InvalidInput => return,
            Err(err) => {
                // Out of file descriptors or memory: say so (at most once a second), give
                // the others a moment to close connections, and go on accepting.
                if last_complaint.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    crate::say!(
                        "roundhouse: accept failed: {err} ({} connections open); retrying",
                        limit.open()
                    );
                    last_complaint = Some(Instant::now());
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Errors about one connection that died in the backlog, not about the listener.
fn is_transient(err: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}
