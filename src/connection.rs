//! A client connection while a worker holds it: the worker serves its requests one after
//! another while they come back to back, then parks it in the waiting room. Connections
//! arrive here from the queue (fed by `listener.rs` and `waiting_room.rs`); each request
//! goes to `proxy::handle`.

use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::config::MAX_HEAD;
use crate::error::ProxyError;
use crate::http1::{ClientConn, HeadProgress, write_error};
use crate::listener::Slot;
use crate::pool::Backlog;
use crate::proxy::{self, Next, Proxy, Scratch};
use crate::waiting_room::WaitingRoom;

/// How long a worker waits for the next request on a connection it just served before
/// parking it. Clients that send requests back to back (wrk, a browser loading a page)
/// stay with their worker and skip two wake-ups per request; idle ones cost a worker
/// only this long. Not at all while other connections wait for a worker: with more
/// busy connections than workers, a connection keeping its worker would make the others
/// queue behind it (at 1000 connections and 512 workers, p99 went 2x nginx's).
const NEXT_REQUEST_WAIT: Duration = Duration::from_millis(2);

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
}

/// What every worker shares.
pub struct Shared {
    pub proxy: Proxy,
    pub waiting_room: WaitingRoom,
}

/// Serves requests on one connection while they keep coming, then parks it or closes it.
pub fn serve(
    shared: &Shared,
    backlog: &Backlog<Client>,
    scratch: &mut Scratch,
    mut client: Client,
) {
    // Only the first request of this turn waited in the queue; the others came straight.
    let mut queue_wait = client.queued.elapsed();
    // Its head was read before it queued: a client that left meanwhile gets nothing
    // forwarded.
    if client.conn.peer_gone() {
        return;
    }
    loop {
        // The event side (or the check below) saw this head whole: no waiting here.
        let mut head = match client.conn.take_head() {
            Ok(Some(head)) => head,
            // Closed, or idle and silent: nothing to answer.
            Ok(None) => return,
            Err(err) => {
                // After a bad head the rest of the stream cannot be trusted: answer, close.
                if let Some(status) = err.status() {
                    let _ = write_error(
                        client.conn.stream_mut(),
                        &mut scratch.out,
                        status,
                        err.client_text(),
                        &[],
                        false,
                    );
                }
                // Closes once the client has read the answer, not with a reset.
                shared.waiting_room.linger(client);
                return;
            }
        };
        if shared.proxy.shutdown.is_stopping() {
            // Shutting down: this request is the connection's last, and its answer says so.
            head.keep_alive = false;
        }
        let next = proxy::handle(&shared.proxy, &mut client.conn, head, scratch, queue_wait);
        // Also when the shutdown began during the request: close rather than park.
        if next == Next::Close || shared.proxy.shutdown.is_stopping() {
            // The client may still be sending what nobody read (a refused body): let it
            // read the answer before the close.
            if client.conn.has_buffered() {
                shared.waiting_room.linger(client);
            }
            return;
        }
        queue_wait = Duration::ZERO;
        // A pipelined request is already here, or the next one comes right away: serve it.
        // While other connections wait for a worker, "right away" means already here:
        // this worker goes to them rather than keep a connection they queue behind.
        let wait = if backlog.is_empty() {
            NEXT_REQUEST_WAIT
        } else {
            Duration::ZERO
        };
        if !client.conn.has_buffered() && !readable_within(client.conn.stream(), wait) {
            shared.waiting_room.park(client);
            return;
        }
        match client.conn.fill_head() {
            HeadProgress::Ready => {}
            // The rest of the head is the waiting room's to wait for, not a worker's.
            HeadProgress::Waiting { .. } => {
                shared.waiting_room.park(client);
                return;
            }
            HeadProgress::Closed => return,
        }
    }
}

/// Turns a connection away when every worker is busy and the queue is full: 503 with
/// `Retry-After`, then close.
pub fn turn_away(client: Client) {
    refuse(client, ProxyError::Overloaded);
}

/// Answers a connection that cannot go on with its error (`Overloaded` gets
/// `Retry-After`), then closes it. Runs on the acceptor or waiting-room thread, so it
/// never blocks: whatever the client already sent is read and dropped (closing a socket
/// with unread data would reset it and could destroy the answer before the client
/// reads it).
pub fn refuse(mut client: Client, err: ProxyError) {
    let stream = client.conn.stream_mut();
    let _ = stream.set_nonblocking(true);
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    let mut out = Vec::new();
    let status = err.status().unwrap_or(503);
    let retry_after: &[(&str, &str)] = match err {
        ProxyError::Overloaded => &[("Retry-After", "1")],
        _ => &[],
    };
    let _ = write_error(
        stream,
        &mut out,
        status,
        err.client_text(),
        retry_after,
        false,
    );
    let _ = stream.shutdown(Shutdown::Write);
}

/// Waits at most `wait` for the socket to have something to read (data, or a close).
fn readable_within(stream: &TcpStream, wait: Duration) -> bool {
    let mut fds = [PollFd::new(stream, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: wait.subsec_nanos().into(),
    };
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}
