//! The waiting room: the event side of the front door. Every client connection waits
//! here, in one thread and one epoll set, whenever it has nothing for a worker to do:
//! a new connection until its first request head is whole, an idle keep-alive
//! connection until its next one is, a head that arrives in pieces until its last piece.
//! A waiting connection costs its socket and a small buffer, never a thread.
//!
//! This is the rule that makes a thread pool safe at the edge: **a worker only ever
//! works; all waiting for a client happens here.** When a parked connection turns
//! readable, the room reads what is there without blocking (`ClientConn::fill_head`);
//! once a whole head is buffered the connection goes on the workers' queue. A head that
//! is not whole by its deadline gets 408; a new or idle connection that stays silent
//! past its deadline is closed. The acceptor (`server.rs`) sends new connections here
//! when their first bytes are not a whole head yet; `connection.rs` parks connections
//! here between requests. A connection closing after an error answer while its client
//! may still be sending lingers here too: its write side is shut, and what the client
//! sends is read and dropped for a moment, so that the client reads the answer instead
//! of a reset (nginx's lingering close). With `--request-buffering on` a request body
//! the client sends slowly is gathered here too (`http1::Gather`, into a spill buffer)
//! before a worker forwards the request, so a slow upload holds no worker either. And
//! the end of an answer that a slow client has not taken yet is written out here, as
//! the client takes it, while the worker that relayed it goes on to its next job (write
//! completion: `write_out.rs`).
//!
//! Written on `polling` (a thin epoll wrapper): the standard library has no readiness API,
//! and a whole event loop crate would bring a runtime we do not want.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, unbounded};
use polling::{Event, Events, Poller};
use slab::Slab;

use crate::client::Client;
use crate::error::ProxyError;
use crate::http1::{Gathered, HeadProgress};
use crate::pool::Pool;

mod write_out;

use write_out::{Handing, Unsent, WriteOut};

/// The handle the acceptor and the workers hand connections to the room with.
#[derive(Clone)]
pub struct WaitingRoom {
    arrivals: Sender<(Client, Phase)>,
    poller: Arc<Poller>,
    /// Set at shutdown by `close`: nothing is parked any more.
    closed: Arc<AtomicBool>,
    /// Connections whose answer is to be written out, with its end (`write_out`).
    write_outs: Sender<WriteOut>,
    /// Hand-overs on their way, and whether the room still takes them (`Handing`).
    handing: Handing,
}

/// What a connection waits for, which says how long it may wait.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Between two requests, nothing buffered: up to `--idle-timeout` for the next one.
    Idle,
    /// A request head is due: the first one of a new connection, or the rest of one
    /// already started. The whole head has `--client-timeout` from then.
    Head,
    /// A request body is due (`Client::gathering`): `--client-timeout` at most between
    /// two pieces of it.
    Body,
    /// Answered and closing: the client's last bytes are read and dropped, for
    /// `LINGER` and `LINGER_BYTES` at most.
    Linger,
    /// The end of an answer is written as the client takes it: `--client-timeout` at
    /// most without progress (write_out.rs).
    WriteOut,
}

/// How long a closing connection lingers, and how much of what its client still sends
/// is read before it is closed anyway.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// What one readiness event may drop of a lingering client's bytes, so that one client
/// sending fast cannot keep the room from the others.
const LINGER_STEP: usize = 64 * 1024;

/// The two timeouts of a wait.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// `--idle-timeout`.
    pub idle: Duration,
    /// `--client-timeout`: for a whole request head.
    pub head: Duration,
}

impl WaitingRoom {
    /// Makes the waiting room: the handle to park connections with, and the room
    /// itself, to be started with `Room::start` once the pool it feeds exists.
    pub fn new(timeouts: Timeouts) -> io::Result<(WaitingRoom, Room)> {
        let poller = Arc::new(Poller::new()?);
        let (arrivals, arrivals_rx) = unbounded();
        let (write_outs, write_outs_rx) = unbounded();
        let handing = Handing::default();
        let closed = Arc::new(AtomicBool::new(false));
        let room = Room {
            closed: closed.clone(),
            poller: poller.clone(),
            arrivals: arrivals_rx,
            write_outs: write_outs_rx,
            handing: handing.clone(),
            write_expiry: VecDeque::new(),
            reread: Vec::new(),
            parked: Slab::new(),
            idle_expiry: VecDeque::new(),
            head_expiry: VecDeque::new(),
            linger_expiry: VecDeque::new(),
            next_seq: 0,
            timeouts,
        };
        Ok((
            WaitingRoom {
                arrivals,
                poller,
                closed,
                write_outs,
                handing,
            },
            room,
        ))
    }

    /// A new connection whose first request head is not whole yet: it waits here for
    /// the rest, `--client-timeout` at most.
    pub fn admit(&self, client: Client) {
        self.send(client, Phase::Head);
    }

    /// A connection between requests, or in a TLS handshake that waits for the client's
    /// next flight (by the handshake's one deadline). With part of the next head
    /// already buffered, the rest of it has `--client-timeout`; with nothing, the next request may take
    /// `--idle-timeout` to begin. After `close`, the connection is closed instead.
    pub fn park(&self, mut client: Client) {
        let phase = if client.conn.handshaking() || client.conn.has_buffered() {
            Phase::Head
        } else {
            client.conn.release_buffer();
            Phase::Idle
        };
        self.send(client, phase);
    }

    /// A request whose body has not all arrived (`client.gathering` holds it): it waits
    /// here for the rest, then goes to a worker whole.
    pub fn gather(&self, client: Client) {
        self.send(client, Phase::Body);
    }

    /// A connection that was answered and must close while its client may still be
    /// sending (an error answer, a body left unread): shuts the write side now, so the
    /// answer is followed by a clean end, and reads what comes until the client closes
    /// too or the linger ends.
    pub fn linger(&self, mut client: Client) {
        client.conn.shut_write();
        self.send(client, Phase::Linger);
    }

    fn send(&self, client: Client, phase: Phase) {
        // Relaxed: a connection parked in a race with `close` is closed by the room
        // (which checks after taking arrivals) or, once the room is gone, by the failed send.
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if self.arrivals.send((client, phase)).is_ok() {
            // Wake the room so that it registers the connection now.
            let _ = self.poller.notify();
        }
    }

    /// Shutdown: closes every parked connection, and any parked from now on. A request
    /// that already arrived on one is still served (the room hands it to the workers).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let _ = self.poller.notify();
    }
}

struct Parked {
    client: Client,
    phase: Phase,
    /// Until when it may wait; an expiry entry for another deadline is stale.
    deadline: Instant,
    /// Bytes dropped while lingering.
    dropped: usize,
    /// Tells this stay apart from a later one in the same slab slot.
    seq: u64,
    /// The end of the answer being written out (`Phase::WriteOut` only).
    unsent: Option<Box<Unsent>>,
}

/// The waiting room's own side: the parked connections, run by its thread, which is
/// the only writer of everything here.
pub struct Room {
    closed: Arc<AtomicBool>,
    poller: Arc<Poller>,
    arrivals: Receiver<(Client, Phase)>,
    write_outs: Receiver<WriteOut>,
    /// Shared with the handles (`Handing`).
    handing: Handing,
    parked: Slab<Parked>,
    /// (deadline, slab key, seq) in deadline order, one queue per phase: every wait in a
    /// phase lasts the same time, so the order deadlines are set in is deadline order
    /// (but for a TLS handshake's, which was set at its accept: `enter` puts it in its
    /// place).
    /// Entries of connections that left, or moved to another deadline, are skipped
    /// when they come up.
    idle_expiry: VecDeque<(Instant, usize, u64)>,
    head_expiry: VecDeque<(Instant, usize, u64)>,
    linger_expiry: VecDeque<(Instant, usize, u64)>,
    /// Ordered by deadline too, but each deadline moves with the progress of its
    /// write-out, so entries are put back in order (`expire_write_outs`).
    write_expiry: VecDeque<(Instant, usize, u64)>,
    next_seq: u64,
    timeouts: Timeouts,
    /// Where a write-out's spilled file part is read back (one for all, made when first
    /// needed).
    reread: Vec<u8>,
}

impl Room {
    /// Starts the waiting-room thread. Connections with a whole head go to the workers;
    /// `refuse` answers one that cannot go on (a full queue, a head past its deadline)
    /// with its error, without blocking.
    pub fn start(
        self,
        ready: Pool<Client>,
        refuse: impl Fn(Client, ProxyError) + Send + 'static,
    ) -> io::Result<()> {
        thread::Builder::new()
            .name("waiting-room".into())
            .spawn(move || self.run(ready, refuse))
            .map(drop)
    }

    fn run(mut self, ready: Pool<Client>, refuse: impl Fn(Client, ProxyError)) {
        let mut events = Events::new();
        loop {
            let timeout = self.next_deadline().map(|deadline| {
                // Rounded up: a wake-up just before the deadline would find nothing due.
                deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(1)
            });
            events.clear();
            if let Err(err) = self.poller.wait(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    crate::say!("roundhouse: waiting room: {err}");
                }
                continue;
            }
            // One clock read for the batch: when these connections went on the queue.
            let now = Instant::now();
            for event in events.iter() {
                let key = event.key;
                let Some(parked) = self.parked.get_mut(key) else {
                    continue;
                };
                if parked.phase == Phase::Body {
                    self.gather_some(key, now, &ready, &refuse);
                    continue;
                }
                if parked.phase == Phase::WriteOut {
                    self.write_some(key, now, &ready, &refuse);
                    continue;
                }
                if parked.phase == Phase::Linger {
                    let (n, closed) = parked.client.conn.discard_input(LINGER_STEP);
                    parked.dropped += n;
                    if closed || parked.dropped >= LINGER_BYTES {
                        drop(self.leave(key));
                    } else {
                        self.watch(key);
                    }
                    continue;
                }
                let progress = parked.client.conn.fill_head();
                // A PROXY header that came just now names the client: it is counted.
                if progress != HeadProgress::Closed && !parked.client.admit_now() {
                    let client = self.leave(key);
                    refuse(client, ProxyError::TooManyConnections);
                    continue;
                }
                match progress {
                    HeadProgress::Ready => {
                        let mut client = self.leave(key);
                        client.queued_at(now);
                        match ready.try_submit(client) {
                            Ok(()) => {}
                            Err(TrySendError::Full(client)) => {
                                refuse(client, ProxyError::Overloaded)
                            }
                            Err(TrySendError::Disconnected(_)) => return,
                        }
                    }
                    // Dropping the client closes the socket and frees its slot.
                    HeadProgress::Closed => drop(self.leave(key)),
                    HeadProgress::Waiting { started } => {
                        let parked = &mut self.parked[key];
                        if started && parked.phase == Phase::Idle {
                            // The next request began: its head has a deadline of its own.
                            parked.phase = Phase::Head;
                            parked.deadline = now + self.timeouts.head;
                            self.head_expiry
                                .push_back((parked.deadline, key, parked.seq));
                        }
                        self.watch(key);
                    }
                }
            }
            while let Ok((client, phase)) = self.arrivals.try_recv() {
                self.enter(client, phase, None);
            }
            self.take_write_outs();
            if self.closed.load(Ordering::Relaxed) {
                self.close_all();
                if !self.still_writing_out() {
                    // Dropping `arrivals` makes later `park`s close their connection.
                    return;
                }
            }
            self.expire(Instant::now(), &refuse);
            self.expire_write_outs(Instant::now());
        }
    }

    /// A request body arrived in part: gathers what is there, and queues the request
    /// for a worker once the body is whole. A body that stalls gets another
    /// `--client-timeout` after each piece; a malformed or too large one is refused.
    fn gather_some(
        &mut self,
        key: usize,
        now: Instant,
        ready: &Pool<Client>,
        refuse: &impl Fn(Client, ProxyError),
    ) {
        let parked = &mut self.parked[key];
        let client = &mut parked.client;
        let gathering = client.gathering.as_mut().expect("a body to gather");
        match gathering.gather.fill(&mut client.conn) {
            Gathered::Done => {
                let mut client = self.leave(key);
                client.queued_at(now);
                if let Err(TrySendError::Full(client)) = ready.try_submit(client) {
                    refuse(client, ProxyError::Overloaded);
                }
            }
            Gathered::Waiting => {
                parked.deadline = now + self.timeouts.head;
                self.head_expiry
                    .push_back((parked.deadline, key, parked.seq));
                self.watch(key);
            }
            Gathered::Failed(err) => {
                let client = self.leave(key);
                if err.status().is_some() {
                    refuse(client, err);
                }
            }
        }
    }

    /// Takes a connection in, watched for what its phase waits on: writability for a
    /// write-out (`unsent` is its answer's end), readability otherwise.
    fn enter(&mut self, client: Client, phase: Phase, unsent: Option<Box<Unsent>>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let deadline = match client.handshake_deadline().filter(|_| phase == Phase::Head) {
            Some(due) => due,
            None => {
                Instant::now()
                    + match phase {
                        Phase::Idle => self.timeouts.idle,
                        Phase::Head | Phase::Body | Phase::WriteOut => self.timeouts.head,
                        Phase::Linger => LINGER,
                    }
            }
        };
        let entry = self.parked.vacant_entry();
        let key = entry.key();
        let interest = match phase {
            Phase::WriteOut => Event::writable(key),
            _ => Event::readable(key),
        };
        // SAFETY (polling's contract): the socket is deleted from the poller before it is
        // closed, since it only leaves this struct through `leave`, which deletes it.
        let added = unsafe { self.poller.add(client.conn.stream(), interest) };
        if let Err(err) = added {
            crate::say!("roundhouse: waiting room: cannot watch a connection: {err}");
            return;
        }
        entry.insert(Parked {
            client,
            phase,
            deadline,
            dropped: 0,
            seq,
            unsent,
        });
        // A handshake's deadline was set at its accept: it may come before others queued.
        let queue = self.expiry(phase);
        let at = queue.partition_point(|e| e.0 <= deadline);
        queue.insert(at, (deadline, key, seq));
    }

    /// Watches a parked connection again: epoll reports each one once (oneshot) until
    /// it is re-armed.
    fn watch(&mut self, key: usize) {
        let stream = self.parked[key].client.conn.stream();
        if let Err(err) = self.poller.modify(stream, Event::readable(key)) {
            crate::say!("roundhouse: waiting room: cannot watch a connection: {err}");
            drop(self.leave(key));
        }
    }

    /// Takes a connection out of the room (and out of the poller).
    fn leave(&mut self, key: usize) -> Client {
        let parked = self.parked.remove(key);
        let _ = self.poller.delete(parked.client.conn.stream());
        parked.client
    }

    fn expiry(&mut self, phase: Phase) -> &mut VecDeque<(Instant, usize, u64)> {
        match phase {
            Phase::Idle => &mut self.idle_expiry,
            Phase::Head | Phase::Body => &mut self.head_expiry,
            Phase::Linger => &mut self.linger_expiry,
            Phase::WriteOut => &mut self.write_expiry,
        }
    }

    /// The earliest deadline of any phase.
    fn next_deadline(&self) -> Option<Instant> {
        [
            &self.idle_expiry,
            &self.head_expiry,
            &self.linger_expiry,
            &self.write_expiry,
        ]
        .into_iter()
        .filter_map(|q| q.front().map(|e| e.0))
        .min()
    }

    /// Closes every parked connection (shutdown), but those being written out: they
    /// are requests in flight, closed once their answer is out.
    fn close_all(&mut self) {
        let poller = &self.poller;
        self.parked.retain(|_, parked| {
            let writing = parked.phase == Phase::WriteOut;
            if !writing {
                let _ = poller.delete(parked.client.conn.stream());
            }
            writing
        });
        self.idle_expiry.clear();
        self.head_expiry.clear();
        self.linger_expiry.clear();
    }

    /// Ends the waits that passed their deadline: a silent or lingering connection is
    /// closed, a started head or a body that stalled gets 408.
    fn expire(&mut self, now: Instant, refuse: &impl Fn(Client, ProxyError)) {
        // Heads and bodies share one queue (one timeout); the others have their own.
        for phase in [Phase::Idle, Phase::Head, Phase::Linger] {
            loop {
                let queue = self.expiry(phase);
                let Some(&(deadline, key, seq)) = queue.front() else {
                    break;
                };
                if deadline > now {
                    break;
                }
                queue.pop_front();
                let current = self
                    .parked
                    .get(key)
                    .is_some_and(|p| p.seq == seq && p.deadline == deadline);
                if !current {
                    continue;
                }
                let mut client = self.leave(key);
                let due = client.gathering.is_some()
                    || client.conn.handshaking()
                    || client.conn.has_buffered();
                if phase == Phase::Head && due {
                    refuse(client, ProxyError::ClientTimeout);
                }
                // Otherwise dropping the client closes the socket and frees its slot.
            }
        }
    }
}
