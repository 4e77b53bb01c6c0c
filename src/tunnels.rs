//! The tunnel room: the event side of Upgrade tunnels (WebSocket and the like). Once a
//! backend has answered an upgrade with `101` (`proxy/upgrade.rs`, on a worker), the
//! worker hands the client connection and the backend's socket over here and takes its
//! next job; from then on both sockets belong to this one thread and its epoll set,
//! which relays bytes each way without blocking. A tunnel costs two sockets and two
//! bounded buffers, never a thread, however long it stays open.
//!
//! Each direction has a buffer of `BUFFER` bytes; a full one stops reading the side that
//! fills it until the other side has taken some (back-pressure), so a fast sender never
//! makes us hold more. What either side sent before the tunnel opened (the client's bytes
//! after its request head, the backend's after its `101`) goes first. A FIN from one
//! side shuts the write side of the other once its buffer is out (half-close); the tunnel
//! ends when both directions have ended, when a side fails, when no byte moved either way
//! for `--tunnel-idle-timeout` (checked once a second), or at the end of `--grace` at
//! shutdown: then both sockets are closed as they are (frames are not parsed, so no
//! WebSocket close frame is made up). On a TLS listener the client's side is decrypted
//! and sealed by its own session (`wire.rs`); the backend's side is plain TCP. Each
//! tunnel leaves one access-log line when it closes. Written on `polling`, like the
//! waiting room.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use http::{HeaderValue, Method};
use polling::{Event, Events, Poller};
use rustix::net::{RecvFlags, SendFlags, recv, send};
use slab::Slab;

use crate::access_log::{Entry, RequestLine, TunnelEnd};
use crate::balancer::Held;
use crate::client::Client;
use crate::http1::Version;
use crate::metrics::{TUNNEL_CLOSES, Tunnels};
use crate::refuse::Tally;

/// Each direction's buffer: what one side sent and the other has not taken yet.
const BUFFER: usize = 64 * 1024;

/// What one readiness event may move through one tunnel, so that one busy tunnel cannot
/// keep the room from the others; a tunnel that had more to move is served again at the
/// next turn, without waiting for an event.
const STEP: usize = 256 * 1024;

/// How often idle tunnels are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// A connection whose upgrade a backend accepted, on its way to the room.
pub struct Tunnel {
    pub client: Client,
    /// The backend's socket, its `101` read.
    pub backend: TcpStream,
    /// For the backend: what the client sent after its request head.
    pub up: Vec<u8>,
    /// For the client: what the backend sent after its `101`.
    pub down: Vec<u8>,
    /// What the access-log line says when the tunnel closes.
    pub log: TunnelLog,
    /// The tunnel counts against its backend while it is open (least-conn sees it).
    pub held: Held,
}

/// The request that opened a tunnel, for its log line.
pub struct TunnelLog {
    pub method: Method,
    pub target: String,
    pub version: Version,
    /// When its head was read: the line's duration is the tunnel's whole life.
    pub started: Instant,
    pub request_id: Option<HeaderValue>,
}

/// Why a tunnel closed, in the order of `metrics::TUNNEL_CLOSES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    /// The client closed its side first, or its socket failed.
    Client,
    Backend,
    Idle,
    Shutdown,
    /// A TLS record that does not decrypt, or a socket the room cannot watch.
    Error,
}

/// The handle workers hand tunnels to the room with.
#[derive(Clone)]
pub struct TunnelRoom {
    arrivals: Sender<Tunnel>,
    poller: Arc<Poller>,
    /// Set at the end of `--grace`: every tunnel is closed.
    closing: Arc<AtomicBool>,
}

impl TunnelRoom {
    /// Starts the tunnel thread. `idle`: `--tunnel-idle-timeout`; `tally` logs each
    /// tunnel's line when it closes; `counts` is where tunnels are counted.
    pub fn start(idle: Duration, tally: Tally, counts: Arc<Tunnels>) -> io::Result<TunnelRoom> {
        let poller = Arc::new(Poller::new()?);
        let (arrivals, arrivals_rx) = unbounded();
        let closing = Arc::new(AtomicBool::new(false));
        let room = Room {
            poller: poller.clone(),
            arrivals: arrivals_rx,
            closing: closing.clone(),
            open: Slab::new(),
            again: Vec::new(),
            idle,
            tally,
            counts,
            scratch: vec![0; BUFFER],
        };
        thread::Builder::new()
            .name("tunnels".into())
            .spawn(move || room.run())?;
        Ok(TunnelRoom {
            arrivals,
            poller,
            closing,
        })
    }

    /// Takes over a tunnel: from now on the room relays it.
    pub fn carry(&self, tunnel: Tunnel) {
        if self.arrivals.send(tunnel).is_ok() {
            let _ = self.poller.notify();
        }
    }

    /// At the end of `--grace`: closes every tunnel (counted and logged as `shutdown`).
    pub fn close(&self) {
        // Relaxed: the room reads it after the wake-up below, and acts on it eventually.
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.poller.notify();
    }
}

/// One tunnel while the room holds it.
struct Open {
    tunnel: Tunnel,
    /// Wire bytes for the client: sealed already on a TLS connection.
    down: Vec<u8>,
    client_eof: bool,
    backend_eof: bool,
    /// The write side of each socket is shut (after the other side's FIN).
    client_shut: bool,
    backend_shut: bool,
    /// When a byte last moved either way.
    last: Instant,
    up_bytes: u64,
    down_bytes: u64,
    /// Who ended first, once someone did.
    ended: Option<Closed>,
}

/// The room's own side, run by its thread, the only writer of everything here.
struct Room {
    poller: Arc<Poller>,
    arrivals: Receiver<Tunnel>,
    closing: Arc<AtomicBool>,
    /// Keys in the poller: `2 * slab key` for the client's socket, `+ 1` for the backend's.
    open: Slab<Open>,
    /// Tunnels that stopped at `STEP` with more to move.
    again: Vec<usize>,
    idle: Duration,
    tally: Tally,
    counts: Arc<Tunnels>,
    /// Where a read lands before it is buffered (one for all).
    scratch: Vec<u8>,
}

/// What a pump found.
enum Pumped {
    /// Both sides are watched again.
    Watching,
    /// Stopped at `STEP`: serve again at the next turn.
    More,
    Done(Closed),
}

impl Room {
    fn run(mut self) {
        let mut events = Events::new();
        let mut swept = Instant::now();
        loop {
            let wait = if self.again.is_empty() {
                SWEEP
            } else {
                Duration::ZERO
            };
            events.clear();
            if let Err(err) = self.poller.wait(&mut events, Some(wait)) {
                if err.kind() != io::ErrorKind::Interrupted {
                    crate::say!("roundhouse: tunnels: {err}");
                }
                continue;
            }
            let mut ready: Vec<usize> = std::mem::take(&mut self.again);
            ready.extend(events.iter().map(|event| event.key / 2));
            ready.sort_unstable();
            ready.dedup();
            for key in ready {
                if self.open.contains(key) {
                    self.serve(key);
                }
            }
            while let Ok(tunnel) = self.arrivals.try_recv() {
                self.enter(tunnel);
            }
            // Relaxed: see `TunnelRoom::close`.
            if self.closing.load(Ordering::Relaxed) {
                let keys: Vec<usize> = self.open.iter().map(|(key, _)| key).collect();
                for key in keys {
                    self.end(key, Closed::Shutdown);
                }
            }
            if swept.elapsed() >= SWEEP {
                swept = Instant::now();
                self.sweep(swept);
            }
        }
    }

    fn enter(&mut self, tunnel: Tunnel) {
        let entry = self.open.vacant_entry();
        let key = entry.key();
        // SAFETY (polling's contract): both sockets are deleted from the poller before
        // they are closed: they leave only through `end`, which deletes them.
        let added = unsafe {
            self.poller
                .add(tunnel.client.conn.stream(), Event::none(2 * key))
                .and_then(|()| self.poller.add(&tunnel.backend, Event::none(2 * key + 1)))
        };
        let mut open = Open {
            down: Vec::with_capacity(tunnel.down.len()),
            client_eof: false,
            backend_eof: false,
            client_shut: false,
            backend_shut: false,
            last: Instant::now(),
            up_bytes: 0,
            down_bytes: 0,
            ended: None,
            tunnel,
        };
        let early = std::mem::take(&mut open.tunnel.down);
        let sealed = open.tunnel.client.conn.seal_into(&early, &mut open.down);
        entry.insert(open);
        self.counts.record_opened();
        if let Err(err) = added.and(sealed) {
            crate::say!("roundhouse: tunnels: cannot carry a tunnel: {err}");
            return self.end(key, Closed::Error);
        }
        // Whatever came early goes out now.
        self.serve(key);
    }

    /// Moves what can move through tunnel `key`, then watches it again or ends it.
    fn serve(&mut self, key: usize) {
        match self.pump(key) {
            Pumped::Watching => {}
            Pumped::More => self.again.push(key),
            Pumped::Done(why) => self.end(key, why),
        }
    }

    fn pump(&mut self, key: usize) -> Pumped {
        let open = &mut self.open[key];
        let mut moved = 0;
        loop {
            let before = moved;
            // Client to backend.
            if !open.client_eof && open.tunnel.up.len() < BUFFER {
                let room = (BUFFER - open.tunnel.up.len()).min(self.scratch.len());
                match open.tunnel.client.conn.read_now(&mut self.scratch[..room]) {
                    Ok(0) => {
                        open.client_eof = true;
                        open.ended.get_or_insert(Closed::Client);
                    }
                    Ok(n) => {
                        open.tunnel.up.extend_from_slice(&self.scratch[..n]);
                        moved += n;
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                        return Pumped::Done(Closed::Error);
                    }
                    Err(_) => return Pumped::Done(Closed::Client),
                }
            }
            if !open.tunnel.up.is_empty() {
                match send_now(&open.tunnel.backend, &open.tunnel.up) {
                    Ok(n) => {
                        open.tunnel.up.drain(..n);
                        open.up_bytes += n as u64;
                        moved += n;
                    }
                    Err(_) => return Pumped::Done(Closed::Backend),
                }
            }
            if open.client_eof && open.tunnel.up.is_empty() && !open.backend_shut {
                open.backend_shut = true;
                let _ = open.tunnel.backend.shutdown(Shutdown::Write);
            }
            // Backend to client.
            if !open.backend_eof && open.down.len() < BUFFER {
                let room = (BUFFER - open.down.len()).min(self.scratch.len());
                match recv_now(&open.tunnel.backend, &mut self.scratch[..room]) {
                    Ok(0) => {
                        open.backend_eof = true;
                        open.ended.get_or_insert(Closed::Backend);
                    }
                    Ok(n) => {
                        let conn = &mut open.tunnel.client.conn;
                        if conn.seal_into(&self.scratch[..n], &mut open.down).is_err() {
                            return Pumped::Done(Closed::Error);
                        }
                        open.down_bytes += n as u64;
                        moved += n;
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Pumped::Done(Closed::Backend),
                }
            }
            if !open.down.is_empty() {
                match send_now(open.tunnel.client.conn.stream(), &open.down) {
                    Ok(n) => {
                        open.down.drain(..n);
                        moved += n;
                    }
                    Err(_) => return Pumped::Done(Closed::Client),
                }
            }
            if open.backend_eof && open.down.is_empty() && !open.client_shut {
                open.client_shut = true;
                open.tunnel.client.conn.shut_write();
            }
            if open.client_shut && open.backend_shut {
                return Pumped::Done(open.ended.unwrap_or(Closed::Client));
            }
            if moved == before {
                break;
            }
            if moved >= STEP {
                open.last = Instant::now();
                return Pumped::More;
            }
        }
        if moved > 0 {
            open.last = Instant::now();
        }
        // Watch each socket for what it may do now (oneshot: once per arming).
        let client = Event::new(
            2 * key,
            !open.client_eof && open.tunnel.up.len() < BUFFER,
            !open.down.is_empty(),
        );
        let backend = Event::new(
            2 * key + 1,
            !open.backend_eof && open.down.len() < BUFFER,
            !open.tunnel.up.is_empty(),
        );
        let watched = self
            .poller
            .modify(open.tunnel.client.conn.stream(), client)
            .and_then(|()| self.poller.modify(&open.tunnel.backend, backend));
        match watched {
            Ok(()) => Pumped::Watching,
            Err(_) => Pumped::Done(Closed::Error),
        }
    }

    /// Closes the tunnels in which no byte moved for `--tunnel-idle-timeout`, and gives
    /// back the buffers of those quiet for a sweep, so that an idle tunnel costs its two
    /// sockets and no buffer.
    fn sweep(&mut self, now: Instant) {
        for (_, open) in self.open.iter_mut() {
            if now.duration_since(open.last) >= SWEEP {
                if open.tunnel.up.is_empty() {
                    open.tunnel.up = Vec::new();
                }
                if open.down.is_empty() {
                    open.down = Vec::new();
                }
            }
        }
        let idle: Vec<usize> = self
            .open
            .iter()
            .filter(|(_, open)| now.duration_since(open.last) >= self.idle)
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            self.end(key, Closed::Idle);
        }
    }

    /// Takes tunnel `key` out, closes both sockets, counts it and writes its log line.
    fn end(&mut self, key: usize, why: Closed) {
        let open = self.open.remove(key);
        let _ = self.poller.delete(open.tunnel.client.conn.stream());
        let _ = self.poller.delete(&open.tunnel.backend);
        let reason = why as usize;
        self.counts.record_bytes(open.up_bytes, open.down_bytes);
        self.counts.close(Some(reason));
        let log = &open.tunnel.log;
        let backend = open.tunnel.held.backend();
        let tls = open.tunnel.client.conn.tls_info();
        let entry = Entry {
            backend: Some(backend.upstream.addr()),
            request: Some(RequestLine {
                method: log.method.as_str(),
                target: &log.target,
                version: log.version,
            }),
            status: 101,
            bytes: open.down_bytes,
            request_id: log.request_id.as_ref(),
            tls: tls.version,
            sni: tls.server_name,
            tunnel: Some(TunnelEnd {
                bytes_up: open.up_bytes,
                closed_by: TUNNEL_CLOSES[reason],
            }),
            ..Entry::unread(open.tunnel.client.conn.peer(), log.started, Duration::ZERO)
        };
        self.tally.log_tunnel(&entry);
        // Dropping the tunnel closes both sockets, gives back the client's connection
        // slot and the backend's in-flight count.
    }
}

/// One `send` that never waits: how much the socket took (0 when it is full).
fn send_now(socket: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        // NOSIGNAL: a side that is gone is an error here, not a SIGPIPE.
        match send(socket, bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(0),
            Err(err) => return Err(err.into()),
        }
    }
}

/// One `recv` that never waits: `WouldBlock` when nothing is there.
fn recv_now(socket: &TcpStream, out: &mut [u8]) -> io::Result<usize> {
    loop {
        match recv(socket, &mut *out, RecvFlags::DONTWAIT) {
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}
