//! A client connection while a worker holds it: the worker serves its requests one after
//! another while they come back to back, then parks it in the waiting room. Connections
//! arrive here from the queue (fed by `listener.rs` and `waiting_room.rs`); each request
//! goes to `proxy::handle`, and a head that cannot be read is refused here (`refuse.rs`).
//! An answer that its client has not taken whole goes to the waiting room to be written
//! out, and the connection with it. The connection itself is a `Client` (client.rs).

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::access_log::Entry;
use crate::client::{Client, Gathering};
use crate::error::ProxyError;
use crate::http1::{Gather, Gathered, HeadProgress, RequestHead};
use crate::outbox;
use crate::pool::Backlog;
use crate::proxy::{self, Body, Next, Proxy, Scratch, Upgraded};
use crate::redirect::Redirect;
use crate::refuse::{self, Refusal, Tally};
use crate::shutdown::Shutdown;
use crate::tunnels::TunnelRoom;
use crate::waiting_room::WaitingRoom;

/// How long a worker waits for the next request on a connection it just served before
/// parking it. Clients that send requests back to back (wrk, a browser loading a page)
/// stay with their worker and skip two wake-ups per request; idle ones cost a worker
/// only this long. Not at all while other connections wait for a worker: with more
/// busy connections than workers, a connection keeping its worker would make the others
/// queue behind it (at 1000 connections and 512 workers, p99 went 2x nginx's).
const NEXT_REQUEST_WAIT: Duration = Duration::from_millis(2);

/// The most a worker spends waiting for the rest of a request body that streams in
/// fast, before the waiting room takes it over: an upload at network speed is gathered
/// at once, and a slow one costs a worker this long at most.
const BODY_WAIT: Duration = Duration::from_millis(10);

/// What every worker shares.
pub struct Shared {
    pub proxy: Proxy,
    /// Where a refused head is logged and counted.
    pub tally: Tally,
    /// Once begun, a redirect's answer closes its connection (`proxy.rs` decides for
    /// the proxied ones).
    pub shutdown: Arc<Shutdown>,
    pub waiting_room: WaitingRoom,
    /// Where a connection goes once its upgrade is accepted (`101`).
    pub tunnels: TunnelRoom,
    /// `--request-buffering`: a request body is gathered whole before it is forwarded.
    pub request_buffering: bool,
    /// `--max-body`, which a gathered body is held to.
    pub max_body: Option<u64>,
    /// `--https-redirect`: where requests on plain listeners are sent instead.
    pub redirect: Option<Redirect>,
}

/// Serves requests on one connection while they keep coming, then parks it or closes it.
pub fn serve(
    shared: &Shared,
    backlog: &Backlog<Client>,
    scratch: &mut Scratch,
    mut client: Client,
) {
    // Only the first request of this turn waited in the queue; the others came straight.
    let mut queue_wait = client.queue_wait();
    // Its head was read before it queued: a client that left meanwhile gets nothing
    // forwarded.
    if client.conn.peer_gone() {
        return;
    }
    // A TLS flight arrived: its crypto is a worker's work, the next flight the room's wait.
    #[cfg(feature = "tls")]
    if client.conn.handshaking() {
        match handshake(shared, backlog, scratch, client) {
            Some(established) => client = established,
            None => return,
        }
    }
    loop {
        let started = Instant::now();
        let (head, body, started) = match client.gathering.take() {
            // The waiting room gathered this request's body: it goes out now, whole.
            Some(done) => (
                done.head,
                Body::Buffered(done.gather.into_body()),
                done.started,
            ),
            // The event side (or the check below) saw this head whole: no waiting here.
            None => match client.conn.take_head() {
                Ok(Some(head)) => match body_of(shared, backlog, &mut client, head, started) {
                    Some((head, body)) => (head, body, started),
                    None => {
                        // The rest of a slow upload is the event side's to wait for.
                        shared.waiting_room.gather(client);
                        return;
                    }
                },
                // Closed, or idle and silent: not a request, nothing to answer or log.
                Ok(None) => return,
                Err(err) => {
                    // After a bad head the rest of the stream cannot be trusted.
                    let entry = Entry::unread(client.conn.peer(), started, queue_wait);
                    return refuse_and_close(shared, scratch, client, &err, entry);
                }
            },
        };
        let upgrade = head.upgrade.is_some() && (shared.redirect.is_none() || client.conn.is_tls());
        let (next, unsent) = match (&shared.redirect, &body) {
            // A tunnel: the worker's part is the exchange up to the backend's answer.
            _ if upgrade => {
                let proxy = &shared.proxy;
                let upgraded =
                    proxy::upgrade(proxy, &mut client.conn, head, scratch, started, queue_wait);
                match upgraded {
                    Upgraded::Switched(switched) => {
                        return shared.tunnels.carry(switched.with(client));
                    }
                    // Answered and closing: the client may still be sending (the tunnel's
                    // first bytes), so the connection lingers, after the write-out of
                    // the answer's end if there is one (which lingers after it too).
                    Upgraded::Answered(None) => return shared.waiting_room.linger(client),
                    Upgraded::Answered(unsent) => (Next::Close, unsent),
                }
            }
            // A body that failed is answered as the error it is.
            (Some(redirect), Body::Streamed | Body::Buffered(_)) if !client.conn.is_tls() => {
                // A body not gathered is unread: the connection cannot go on.
                let read = matches!(body, Body::Buffered(_)) || !head.framing.has_body();
                let entry = Entry::unread(client.conn.peer(), started, queue_wait);
                let keep_alive = redirect.answer(
                    &shared.tally,
                    &mut client.conn,
                    &head,
                    read && !shared.shutdown.is_stopping(),
                    &mut scratch.out,
                    entry,
                );
                (
                    if keep_alive {
                        Next::KeepAlive
                    } else {
                        Next::Close
                    },
                    None,
                )
            }
            _ => proxy::handle(
                &shared.proxy,
                &mut client.conn,
                head,
                body,
                scratch,
                started,
                queue_wait,
            ),
        };
        // Not when a shutdown began after the answer, which did not say `Connection:
        // close`: its client may be sending the next request already. During the drain
        // delay that request is answered (and that answer closes); once the waiting room
        // is closed, parking closes the connection.
        let closing = next == Next::Close;
        if let Some(unsent) = unsent {
            // The backend's answer is all read, but the client has not taken all of it: the
            // event side writes the rest as the client takes it, then parks or closes the
            // connection, and this worker goes to its next job.
            if let Err(back) = shared.waiting_room.write_out(client, unsent, !closing) {
                // The room takes no more (shutdown): the answer is finished here, as far
                // as the write timeout lets it, and the connection closed.
                let (client, mut unsent) = *back;
                let _ = outbox::write_rest(client.conn.stream(), &mut unsent, &mut Vec::new());
            }
            return;
        }
        if closing {
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

/// Where the body of the request `head` comes from. With `--request-buffering on` it is
/// gathered whole first. While it streams in fast (each pause under `NEXT_REQUEST_WAIT`,
/// `BODY_WAIT` in all, and no other connection waiting for a worker), the worker
/// gathers it itself: an upload that arrives at network speed costs no trip through the
/// waiting room. Otherwise `None`: the request waits in `client.gathering` for the
/// waiting room to gather the rest, and the worker goes on.
fn body_of(
    shared: &Shared,
    backlog: &Backlog<Client>,
    client: &mut Client,
    head: RequestHead,
    started: Instant,
) -> Option<(RequestHead, Body)> {
    if !shared.request_buffering || !head.framing.has_body() {
        return Some((head, Body::Streamed));
    }
    let mut gather = Gather::new(head.framing, head.expect_continue, shared.max_body);
    let until = Instant::now() + BODY_WAIT;
    loop {
        match gather.fill(&mut client.conn) {
            Gathered::Done => return Some((head, Body::Buffered(gather.into_body()))),
            Gathered::Failed(err) => return Some((head, Body::Failed(err))),
            Gathered::Waiting => {
                let fast = backlog.is_empty()
                    && Instant::now() < until
                    && readable_within(client.conn.stream(), NEXT_REQUEST_WAIT);
                if !fast {
                    client.gathering = Some(Box::new(Gathering {
                        head,
                        gather,
                        started,
                    }));
                    return None;
                }
            }
        }
    }
}

/// Runs a TLS handshake over the client's flight that the event side gathered, and
/// waits a moment for the client's answer to ours (it usually follows at once), as for
/// a next request; otherwise the connection goes back to the waiting room until the next
/// flight, by the handshake's one deadline. Returns the connection once it is
/// established and its first request head is whole. Plain HTTP on a TLS port gets a
/// plain 400 (as nginx answers it), logged and counted like every refusal.
#[cfg(feature = "tls")]
fn handshake(
    shared: &Shared,
    backlog: &Backlog<Client>,
    scratch: &mut Scratch,
    mut client: Client,
) -> Option<Client> {
    use crate::tls_session::{Failure, Step};
    loop {
        match client.conn.handshake() {
            Step::Done => break,
            Step::More => {
                let soon =
                    backlog.is_empty() && readable_within(client.conn.stream(), NEXT_REQUEST_WAIT);
                if !soon {
                    shared.waiting_room.park(client);
                    return None;
                }
                match client.conn.fill_head() {
                    HeadProgress::Ready => {}
                    HeadProgress::Waiting { .. } => {
                        shared.waiting_room.park(client);
                        return None;
                    }
                    HeadProgress::Closed => return None,
                }
            }
            Step::Failed(Failure::NotTls) => {
                let err = ProxyError::BadRequest("plain HTTP sent to an HTTPS port");
                let entry = Entry::unread(client.conn.peer(), Instant::now(), Duration::ZERO);
                refuse_and_close(shared, scratch, client, &err, entry);
                return None;
            }
            // The session counts why; rustls has said it to the client in an alert.
            Step::Failed(_) => return None,
        }
    }
    // The client's first request may have come with its last flight.
    match client.conn.fill_head() {
        HeadProgress::Ready => Some(client),
        HeadProgress::Waiting { .. } => {
            shared.waiting_room.park(client);
            None
        }
        HeadProgress::Closed => None,
    }
}

/// Answers a connection that cannot go on with `err`'s status (logged and counted with
/// `entry`), then lets it linger in the waiting room until the client has read the
/// answer: closed then, not reset.
fn refuse_and_close(
    shared: &Shared,
    scratch: &mut Scratch,
    mut client: Client,
    err: &ProxyError,
    mut entry: Entry<'_>,
) {
    let refusal = Refusal {
        error: err,
        extra: &[],
        keep_alive: false,
    };
    let (tally, out) = (&shared.tally, &mut scratch.out);
    refuse::answer(tally, &mut client.conn, out, refusal, &mut entry, None);
    shared.waiting_room.linger(client);
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
