//! The waiting room: idle keep-alive connections wait here, in one thread and one epoll
//! set, instead of each holding a worker. When a parked connection turns readable (its
//! next request is arriving, or it closed) it goes back on the workers' queue; when it
//! stays idle past `--idle-timeout` it is closed. `connection.rs` parks connections here.
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

use crate::pool::Pool;
use polling::{Event, Events, Poller};
use slab::Slab;

use crate::client::Client;

/// The handle workers use to park a connection.
#[derive(Clone)]
pub struct WaitingRoom {
    arrivals: Sender<Client>,
    poller: Arc<Poller>,
    /// Set at shutdown by `close`: nothing is parked any more.
    closed: Arc<AtomicBool>,
}

impl WaitingRoom {
    /// Makes the waiting room: the handle workers park connections with, and the room
    /// itself, to be started with `Room::start` once the pool it feeds exists.
    pub fn new(idle_timeout: Duration) -> io::Result<(WaitingRoom, Room)> {
        let poller = Arc::new(Poller::new()?);
        let (arrivals, arrivals_rx) = unbounded();
        let closed = Arc::new(AtomicBool::new(false));
        let room = Room {
            closed: closed.clone(),
            poller: poller.clone(),
            arrivals: arrivals_rx,
            parked: Slab::new(),
            expiry: VecDeque::new(),
            next_seq: 0,
            idle_timeout,
        };
        Ok((
            WaitingRoom {
                arrivals,
                poller,
                closed,
            },
            room,
        ))
    }

    /// Parks an idle connection until its next request arrives or it times out. After
    /// `close`, closes it instead.
    pub fn park(&self, client: Client) {
        // Relaxed: a connection parked in a race with `close` is closed by the room
        // (which checks after taking arrivals) or, once the room is gone, by the failed send.
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if self.arrivals.send(client).is_ok() {
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
    /// Tells this stay apart from a later one in the same slab slot.
    seq: u64,
}

/// The waiting room's own side: the parked connections, run by its thread.
pub struct Room {
    closed: Arc<AtomicBool>,
    poller: Arc<Poller>,
    arrivals: Receiver<Client>,
    parked: Slab<Parked>,
    /// (deadline, slab key, seq) in deadline order: every stay lasts the same idle
    /// timeout, so arrival order is deadline order. Entries of connections that already
    /// left are skipped when they come up.
    expiry: VecDeque<(Instant, usize, u64)>,
    next_seq: u64,
    idle_timeout: Duration,
}

impl Room {
    /// Starts the waiting-room thread. Readable connections go to the workers; a full
    /// queue gets them turned away by `on_full`.
    pub fn start(
        self,
        ready: Pool<Client>,
        on_full: impl Fn(Client) + Send + 'static,
    ) -> io::Result<()> {
        thread::Builder::new()
            .name("waiting-room".into())
            .spawn(move || self.run(ready, on_full))
            .map(drop)
    }

    fn run(mut self, ready: Pool<Client>, on_full: impl Fn(Client)) {
        let mut events = Events::new();
        loop {
            let timeout = self
                .expiry
                .front()
                .map(|(deadline, _, _)| deadline.saturating_duration_since(Instant::now()));
            events.clear();
            if let Err(err) = self.poller.wait(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    eprintln!("roundhouse: waiting room: {err}");
                }
                continue;
            }
            // One clock read for the batch: when these connections went on the queue.
            let now = Instant::now();
            for event in events.iter() {
                let Some(parked) = self.parked.try_remove(event.key) else {
                    continue;
                };
                let _ = self.poller.delete(parked.client.conn.stream());
                let mut client = parked.client;
                client.queued_at(now);
                match ready.try_submit(client) {
                    Ok(()) => {}
                    Err(TrySendError::Full(client)) => on_full(client),
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
            while let Ok(client) = self.arrivals.try_recv() {
                self.admit(client);
            }
            if self.closed.load(Ordering::Relaxed) {
                self.close_all();
                // Dropping `arrivals` makes later `park`s close their connection.
                return;
            }
            self.expire(Instant::now());
        }
    }

    fn admit(&mut self, client: Client) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = self.parked.vacant_entry();
        let key = entry.key();
        // SAFETY (polling's contract): the socket is deleted from the poller before it is
        // closed, since it only leaves this struct through `try_remove` followed by
        // `delete` (in `run` and `expire`).
        let added = unsafe { self.poller.add(client.conn.stream(), Event::readable(key)) };
        if let Err(err) = added {
            eprintln!("roundhouse: waiting room: cannot watch a connection: {err}");
            return;
        }
        entry.insert(Parked { client, seq });
        self.expiry
            .push_back((Instant::now() + self.idle_timeout, key, seq));
    }

    /// Closes every parked connection (shutdown).
    fn close_all(&mut self) {
        for parked in self.parked.drain() {
            let _ = self.poller.delete(parked.client.conn.stream());
        }
        self.expiry.clear();
    }

    /// Closes the connections that stayed idle past their deadline.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, key, seq)) = self.expiry.front() {
            if deadline > now {
                break;
            }
            self.expiry.pop_front();
            if self.parked.get(key).is_some_and(|p| p.seq == seq) {
                let parked = self.parked.remove(key);
                let _ = self.poller.delete(parked.client.conn.stream());
                // Dropping the client closes the socket and frees its connection slot.
            }
        }
    }
}
