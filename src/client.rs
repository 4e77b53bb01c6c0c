//! A client: one accepted connection and its place under `--max-connections`, from the
//! accept (`listener.rs`) to its close. It travels between the workers' queue (`pool.rs`,
//! served by `connection.rs`) and the waiting room (`waiting_room.rs`), which both know
//! it from here; `turn_away` refuses a whole connection when that queue is full.

use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::access_log::Entry;
use crate::config::MAX_HEAD;
use crate::error::ProxyError;
use crate::http1::ClientConn;
use crate::listener::Slot;
use crate::refuse::{self, Refusal, Tally};

/// An open client connection and its place under `--max-connections`.
pub struct Client {
    pub conn: ClientConn,
    _slot: Slot,
    /// When the connection last went on the queue for a worker: its first request's
    /// queue wait is counted from here (access log, Server-Timing).
    queued: Instant,
}

impl Client {
    /// The socket is set up once for its whole life: no Nagle delay on small answers, and
    /// constant read and write timeouts (changing them per request would cost syscalls).
    /// On Linux it inherits all three from the listener (`listener::bind`).
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        slot: Slot,
        client_timeout: Duration,
    ) -> Client {
        if !cfg!(target_os = "linux") {
            let _ = stream.set_nodelay(true);
            let _ = stream.set_read_timeout(Some(client_timeout));
            let _ = stream.set_write_timeout(Some(client_timeout));
        }
        Client {
            conn: ClientConn::new(stream, peer, MAX_HEAD),
            _slot: slot,
            queued: Instant::now(),
        }
    }

    /// Notes that the connection goes on the queue again (the waiting room saw its next
    /// request arrive).
    pub fn queued_at(&mut self, now: Instant) {
        self.queued = now;
    }

    /// How long the connection has waited for a worker since it went on the queue.
    pub fn queue_wait(&self) -> Duration {
        self.queued.elapsed()
    }
}

/// Turns a connection away when every worker is busy and the queue is full: 503 with
/// `Retry-After`, logged and counted like every refusal (`PQ`), then close. Runs on the
/// acceptor or waiting-room thread, so its socket work never blocks: whatever the
/// client already sent is read and dropped (closing a socket with unread data would
/// reset it and could destroy the 503 before the client reads it), and the answer is
/// written without waiting. The log line goes to stdout like a worker's.
pub fn turn_away(tally: &Tally, mut client: Client) {
    let mut entry = Entry::unread(client.conn.peer(), Instant::now(), Duration::ZERO);
    let stream = client.conn.stream_mut();
    let _ = stream.set_nonblocking(true);
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    let refusal = Refusal {
        error: &ProxyError::Overloaded,
        extra: &[("Retry-After", "1")],
        keep_alive: false,
    };
    refuse::answer(tally, stream, &mut Vec::new(), refusal, &mut entry, None);
    let _ = stream.shutdown(Shutdown::Write);
}
