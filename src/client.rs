//! A client: one accepted connection and its places under `--max-connections` and
//! `--max-connections-per-client`, from the accept (`listener.rs`) to its close. It travels between the workers' queue (`pool.rs`,
//! served by `connection.rs`) and the waiting room (`waiting_room.rs`), which both know
//! it from here; `refuse` turns a whole connection away from the event side (a full
//! queue, a head past its deadline, a client over its connections).

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access_log::{Entry, RequestLine};
use crate::config::MAX_HEAD;
use crate::error::ProxyError;
use crate::http1::{ClientConn, Gather, RequestHead};
use crate::limits::{ClientSlot, Limits};
use crate::listener::Slot;
use crate::refuse::{self, Refusal, Tally};
use crate::wire::Wire;

/// A request whose head a worker read and whose body is gathered before any backend
/// hears of it (`--request-buffering`): by the waiting room while the client sends it,
/// until a worker forwards the whole.
pub struct Gathering {
    pub head: RequestHead,
    pub gather: Gather,
    /// When the head was read: the request's time in the log counts from here.
    pub started: Instant,
}

/// An open client connection and its places under `--max-connections` and
/// `--max-connections-per-client`.
pub struct Client {
    pub conn: ClientConn,
    /// The request whose body is being gathered, if any. Boxed: few connections have
    /// one, and every idle connection would otherwise carry its size.
    pub gathering: Option<Box<Gathering>>,
    _slot: Slot,
    /// Its client's place (limits.rs), given back with the connection; empty until
    /// `hold` is called.
    _per_client: ClientSlot,
    /// `--max-connections-per-client` behind `--proxy-protocol`: the count waits until
    /// the PROXY header has named the client (`admit_now`).
    admission: Option<Arc<Limits>>,
    /// When the connection last went on the queue for a worker: its first request's
    /// queue wait is counted from here (access log, Server-Timing).
    queued: Instant,
    /// A TLS connection's handshake must be done by then (`--client-timeout` after the
    /// accept), however many flights it takes.
    handshake_due: Instant,
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
            gathering: None,
            _slot: slot,
            _per_client: ClientSlot::default(),
            admission: None,
            queued: Instant::now(),
            handshake_due: Instant::now() + client_timeout,
        }
    }

    /// The connection over `wire`: a TLS listener's, whose handshake is due first.
    pub fn over(mut self, wire: Wire) -> Client {
        self.conn = self.conn.over(wire);
        self
    }

    /// Keeps `place` (`Limits::admit`) for as long as the connection lives.
    pub fn hold(&mut self, place: ClientSlot) {
        self._per_client = place;
    }

    /// The connection is counted under `limits` once its PROXY header has named its
    /// client, not before: the peer it came from is the L4 balancer.
    pub fn admit_after_header(&mut self, limits: Arc<Limits>) {
        self.admission = Some(limits);
    }

    /// Counts the connection against its client, now that the client is known (see
    /// `admit_after_header`); false when the client is over its connections. Until the
    /// header has come, and once counted, true at no cost.
    pub fn admit_now(&mut self) -> bool {
        if self.admission.is_none() || self.conn.proxy_header_due() {
            return true;
        }
        let limits = self.admission.take().expect("checked above");
        match limits.admit(self.conn.peer().ip()) {
            Some(place) => {
                self.hold(place);
                true
            }
            None => false,
        }
    }

    /// While a TLS handshake is under way: when it must be done.
    pub fn handshake_deadline(&self) -> Option<Instant> {
        self.conn.handshaking().then_some(self.handshake_due)
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

/// Refuses a whole connection from the event side: 503 with `Retry-After` when every
/// worker is busy and the queue is full (`PQ`), 429 with `Retry-After` when its client
/// holds `--max-connections-per-client` already (`PR`), 408 when its head or body did
/// not arrive in time (`cR`), 400 or 413 for a body that cannot be gathered (`PR`); logged
/// and counted like every refusal. Runs on the acceptor or waiting-room thread, so its
/// socket work never blocks: whatever the client already sent is read and dropped, and
/// the answer is written without waiting. The write side is shut after the answer; the
/// caller lets the connection linger in the waiting room until the client has read it
/// (closing a socket with unread input would reset it and could destroy the answer).
/// The log line goes to stdout like a worker's. A TLS connection whose handshake is
/// not done cannot be answered in HTTP: it is closed (`None`), and its session counts
/// the failed handshake.
pub fn refuse(tally: &Tally, mut client: Client, error: ProxyError) -> Option<Client> {
    #[cfg(feature = "tls")]
    if client.conn.handshaking() {
        if matches!(error, ProxyError::ClientTimeout) {
            client.conn.handshake_timed_out();
        }
        return None;
    }
    // A request whose body could not be gathered has its head: the line says which.
    let gathering = client.gathering.take();
    let mut entry = match &gathering {
        Some(g) => Entry {
            request: Some(RequestLine {
                method: g.head.method.as_str(),
                target: &g.head.target,
                version: g.head.version,
            }),
            ..Entry::unread(client.conn.peer(), g.started, Duration::ZERO)
        },
        None => Entry::unread(client.conn.peer(), Instant::now(), Duration::ZERO),
    };
    let _ = client.conn.stream().set_nonblocking(true);
    let _ = client.conn.discard_input(usize::MAX);
    let retry_after: &[(&str, &str)] = match error {
        ProxyError::Overloaded | ProxyError::TooManyConnections => &[("Retry-After", "1")],
        _ => &[],
    };
    let refusal = Refusal {
        error: &error,
        extra: retry_after,
        keep_alive: false,
    };
    refuse::answer(
        tally,
        &mut client.conn,
        &mut Vec::new(),
        refusal,
        &mut entry,
        None,
    );
    client.conn.shut_write();
    Some(client)
}
