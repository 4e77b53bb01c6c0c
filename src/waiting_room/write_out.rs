//! Write completion: the end of an answer that its client has not taken yet, written out
//! by the waiting room as the client takes it (`Phase::WriteOut`). A worker relays an
//! answer at its backend's pace through an `Outbox` (outbox.rs), which keeps what the
//! client cannot take yet in a `Spill`; once the backend's answer is complete, the
//! worker hands the connection and that spill over with `WaitingRoom::write_out` and
//! takes its next job.
//!
//! The room writes from the spill whenever the socket is writable, without waiting, at
//! most `WRITE_STEP` bytes per readiness event so that one fast reader cannot keep it
//! from the others. A client that takes nothing for `--client-timeout` is closed. Once
//! the spill is empty, a keep-alive connection goes on as if the worker had parked it,
//! and a closing one lingers.

use super::*;

use std::sync::atomic::AtomicUsize;

use crossbeam_channel::SendError;

use crate::outbox::{self, Pace};
use crate::spill::Spill;

/// What one readiness event may write of one answer.
const WRITE_STEP: usize = 256 * 1024;

/// Set in `Handing` once the room takes no more write-outs (it is closing).
const CLOSING: usize = 1 << (usize::BITS - 1);

/// Write-outs under way from the workers to the room, and `CLOSING`. A worker adds one
/// before it sends (and takes it off again if it does not send after all), the room
/// takes one off for each it receives; the room sets `CLOSING` when it closes, and
/// leaves once no write-out is under way or held. One atomic for both, so that a worker
/// sees `CLOSING` or is counted, never neither.
///
/// Every access is a read-modify-write, Relaxed: such operations on one location are
/// ordered among themselves, which is all the count needs; the write-out itself
/// travels through the channel, which orders its own contents.
pub(super) type Handing = Arc<AtomicUsize>;

/// A connection on its way to the room, with the end of its answer.
pub(super) struct WriteOut {
    client: Client,
    unsent: Unsent,
}

/// The end of an answer, held while it is written out.
pub(super) struct Unsent {
    spill: Spill,
    /// Whether the connection may carry another request once the answer is out.
    keep_alive: bool,
}

impl WaitingRoom {
    /// Hands over a connection whose answer is complete but not yet taken whole by its
    /// client: the room writes `unsent` out as the client takes it, with
    /// `--client-timeout` at most between two writes that make progress, then parks the
    /// connection (`keep_alive`) or closes it. Gives both back when the room takes no
    /// more (shutdown): the caller then writes the rest itself.
    pub fn write_out(
        &self,
        client: Client,
        unsent: Spill,
        keep_alive: bool,
    ) -> Result<(), Box<(Client, Spill)>> {
        // Relaxed: see `Handing`.
        if self.handing.fetch_add(1, Ordering::Relaxed) & CLOSING != 0 {
            self.handing.fetch_sub(1, Ordering::Relaxed);
            return Err(Box::new((client, unsent)));
        }
        let sent = self.write_outs.send(WriteOut {
            client,
            unsent: Unsent {
                spill: unsent,
                keep_alive,
            },
        });
        match sent {
            Ok(()) => {
                // Wake the room so that it starts writing now.
                let _ = self.poller.notify();
                Ok(())
            }
            // The room is gone: only when everything is winding down.
            Err(SendError(w)) => {
                self.handing.fetch_sub(1, Ordering::Relaxed);
                Err(Box::new((w.client, w.unsent.spill)))
            }
        }
    }
}

impl Room {
    /// Takes in the write-outs handed over since the last look.
    pub(super) fn take_write_outs(&mut self) {
        while let Ok(WriteOut { client, unsent }) = self.write_outs.try_recv() {
            // Relaxed: see `Handing`.
            self.handing.fetch_sub(1, Ordering::Relaxed);
            self.enter(client, Phase::WriteOut, Some(Box::new(unsent)));
        }
    }

    /// The socket of a write-out is writable (or failed): writes what it takes, then
    /// watches it again, or moves the connection on once the answer is out.
    pub(super) fn write_some(
        &mut self,
        key: usize,
        now: Instant,
        ready: &Pool<Client>,
        refuse: &impl Fn(Client, ProxyError),
    ) {
        let parked = &mut self.parked[key];
        let Some(unsent) = parked.unsent.as_mut() else {
            return drop(self.leave(key));
        };
        let stream = parked.client.conn.stream();
        let mut written = 0;
        let failed = loop {
            if unsent.spill.is_empty() || written >= WRITE_STEP {
                break false;
            }
            match outbox::send_front(stream, &mut unsent.spill, &mut self.reread, Pace::Now) {
                Ok(0) => break false,
                Ok(n) => written += n,
                // The client is gone (or the spill's file failed): what is left is lost.
                Err(_) => break true,
            }
        };
        if written > 0 {
            // A pause limit, not a deadline for the whole answer.
            parked.deadline = now + self.timeouts.head;
        }
        if failed {
            drop(self.leave(key));
        } else if unsent.spill.is_empty() {
            let keep_alive = unsent.keep_alive;
            parked.unsent = None;
            self.written_out(key, keep_alive, now, ready, refuse);
        } else if let Err(err) = self
            .poller
            .modify(parked.client.conn.stream(), Event::writable(key))
        {
            crate::say!("roundhouse: waiting room: cannot watch a connection: {err}");
            drop(self.leave(key));
        }
    }

    /// The answer is out: a keep-alive connection goes on as `WaitingRoom::park` would
    /// have it (its next head may already be here, whole or begun); a closing one (or
    /// any, once the room is closing) shuts its write side and lingers, so that the
    /// client reads the end of the answer and then the close, never a reset.
    fn written_out(
        &mut self,
        key: usize,
        keep_alive: bool,
        now: Instant,
        ready: &Pool<Client>,
        refuse: &impl Fn(Client, ProxyError),
    ) {
        // Relaxed: as in `WaitingRoom::send`; a connection parked just before the close
        // is closed by `close_all`.
        if !keep_alive || self.closed.load(Ordering::Relaxed) {
            let parked = &mut self.parked[key];
            parked.client.conn.shut_write();
            self.move_to(key, Phase::Linger, now + LINGER);
            return;
        }
        let parked = &mut self.parked[key];
        match parked.client.conn.fill_head() {
            HeadProgress::Ready => {
                let mut client = self.leave(key);
                client.queued_at(now);
                if let Err(TrySendError::Full(client)) = ready.try_submit(client) {
                    refuse(client, ProxyError::Overloaded);
                }
            }
            HeadProgress::Closed => drop(self.leave(key)),
            HeadProgress::Waiting { started: true } => {
                self.move_to(key, Phase::Head, now + self.timeouts.head)
            }
            HeadProgress::Waiting { started: false } => {
                parked.client.conn.release_buffer();
                self.move_to(key, Phase::Idle, now + self.timeouts.idle);
            }
        }
    }

    /// Moves a connection that was written out to another phase, with its deadline
    /// there, and watches it for reading.
    fn move_to(&mut self, key: usize, phase: Phase, deadline: Instant) {
        let parked = &mut self.parked[key];
        parked.phase = phase;
        parked.deadline = deadline;
        let seq = parked.seq;
        self.expiry(phase).push_back((deadline, key, seq));
        self.watch(key);
    }

    /// Ends the write-outs whose client took nothing for `--client-timeout`. An entry
    /// whose connection made progress since comes back at its new deadline: one entry
    /// per write-out, however many writes it takes.
    pub(super) fn expire_write_outs(&mut self, now: Instant) {
        while let Some(&(deadline, key, seq)) = self.write_expiry.front() {
            if deadline > now {
                break;
            }
            self.write_expiry.pop_front();
            let Some(parked) = self.parked.get(key) else {
                continue;
            };
            if parked.seq != seq || parked.phase != Phase::WriteOut {
                continue;
            }
            if parked.deadline > deadline {
                // Later entries may be due before this one: keep the queue in order.
                let next = parked.deadline;
                let at = self.write_expiry.partition_point(|e| e.0 <= next);
                self.write_expiry.insert(at, (next, key, seq));
                continue;
            }
            // What it did not take is dropped with it.
            drop(self.leave(key));
        }
    }

    /// At shutdown: takes no more write-outs from now on, and says whether any is still
    /// under way or held (the room stays until they are out: requests in flight).
    pub(super) fn still_writing_out(&mut self) -> bool {
        // Relaxed: see `Handing`.
        let handing = self.handing.fetch_or(CLOSING, Ordering::Relaxed);
        handing & !CLOSING > 0
            || self
                .parked
                .iter()
                .any(|(_, parked)| parked.phase == Phase::WriteOut)
    }
}
