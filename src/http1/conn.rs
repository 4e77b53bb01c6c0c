//! A client connection: the accepted socket and its read buffer.
//!
//! A request head is assembled on the event side: the acceptor and the waiting room call
//! `fill_head`, which reads only what the socket already has (never waiting), until a
//! whole head is buffered. Only then does a worker take the connection, and its
//! `take_head` parses the head without touching the socket. The worker then reads the
//! body with `body` (`body.rs`) and writes the answer through an `outbox` (or, for a
//! short answer of its own, the connection's `Write`). Every read and write goes through
//! the connection's `Wire` (wire.rs): plain, or a TLS session whose handshake
//! `fill_head` and `handshake` carry out on the same terms as a head. The buffer
//! outlives each request: bytes read past one request (a pipelined next request) wait
//! in it for the next head. (`read_head`, which waits for
//! the client, is for the admin interface's own threads only.)

use super::body::BodyReader;
use super::request::{self, Framing, RequestHead};
use crate::error::ProxyError;
use crate::outbox::{self, Outbox};
use crate::proxy_protocol::{self, Parsed};
use crate::spill::Spill;
#[cfg(feature = "tls")]
use crate::tls_session::{self, Failure, Step};
use crate::wire::{TlsInfo, Wire};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::net::{RecvFlags, recv};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// The buffer's starting size: enough for a typical head and a small body.
const INITIAL_BUF: usize = 4096;

/// One client's socket and the bytes read from it but not yet consumed.
pub struct ClientConn {
    stream: TcpStream,
    /// Plain or TLS: every read and write of the client's bytes goes through it.
    wire: Wire,
    peer: SocketAddr,
    /// Unconsumed bytes are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_head: usize,
    /// The last request announced a body that has not been read to its end. Its bytes
    /// must never be parsed as the next request, so `read_head` refuses to go on.
    unread_body: bool,
    /// How far `fill_head` has scanned the pending head for its end, so that a head
    /// arriving in pieces is scanned once, not once per piece.
    scanned: usize,
    /// `--proxy-protocol`: a PROXY header is due before anything else; where a missing
    /// or malformed one is counted.
    proxy_header: Option<Arc<proxy_protocol::Refusals>>,
}

/// How far the next request head has come, as `fill_head` finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadProgress {
    /// A whole head is buffered, or what is buffered is certainly no valid head (a bad
    /// line ending, too large): either way a worker can answer without waiting.
    Ready,
    /// The socket has nothing more for now. `started`: part of a head is buffered.
    Waiting { started: bool },
    /// The client closed or reset the connection, or it cannot carry another request
    /// (a body was left unread): there is nothing to answer.
    Closed,
}

impl ClientConn {
    /// `max_head`: the largest request head accepted (32 KiB by default). The buffer
    /// starts at 4 KiB and grows up to `max_head` only when a head needs it.
    pub fn new(stream: TcpStream, peer: SocketAddr, max_head: usize) -> ClientConn {
        let max_head = max_head.max(1);
        ClientConn {
            stream,
            wire: Wire::Plain,
            peer,
            // Allocated at the first read: a connection that never sends costs none.
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_head,
            unread_body: false,
            scanned: 0,
            proxy_header: None,
        }
    }

    /// A PROXY header is still due: `peer` is not the client yet.
    pub fn proxy_header_due(&self) -> bool {
        self.proxy_header.is_some()
    }

    /// The connection starts with a PROXY header (`--proxy-protocol`): `fill_head` reads
    /// it first, and its client becomes `peer`; `refusals` counts a bad one.
    pub fn expect_proxy_header(&mut self, refusals: Arc<proxy_protocol::Refusals>) {
        self.proxy_header = Some(refusals);
    }

    /// The same connection over `wire` (a TLS session whose handshake is due).
    pub fn over(mut self, wire: Wire) -> ClientConn {
        self.wire = wire;
        self
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// For poll/epoll registration, and the write-outs of what an `Outbox` kept (wire
    /// bytes, already sealed). Everything else reads and writes through the wire.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn is_tls(&self) -> bool {
        self.wire.is_tls()
    }

    pub fn tls_info(&self) -> TlsInfo<'_> {
        self.wire.info()
    }

    /// A TLS connection whose handshake is not done: what is buffered are handshake
    /// records, for `handshake`.
    pub fn handshaking(&self) -> bool {
        self.wire.handshaking()
    }

    /// The writer of an answer to this client, which never waits (outbox.rs).
    pub fn outbox(&mut self) -> Outbox<'_> {
        Outbox::new(&self.stream, &mut self.wire)
    }

    // For a tunnel (tunnels.rs), once the connection stops carrying HTTP.

    /// Takes the bytes read but not consumed: what the client sent after the request
    /// that opened a tunnel, for the backend.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf[self.start..self.end].to_vec();
        (self.start, self.end) = (0, 0);
        self.buf = Vec::new();
        self.unread_body = false;
        rest
    }

    /// Reads what the client sent, without waiting (`WouldBlock`: nothing yet), past the
    /// buffer (which `take_buffered` emptied). Ok(0) is its end.
    pub fn read_now(&mut self, out: &mut [u8]) -> io::Result<usize> {
        debug_assert_eq!(self.start, self.end, "direct read with unconsumed bytes");
        self.wire.read(&self.stream, out, false)
    }

    /// Appends `bytes` to `out` as they go on the wire to this client: sealed on a TLS
    /// connection, as they are otherwise.
    pub fn seal_into(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.wire.seal(&[io::IoSlice::new(bytes)], out)? {
            out.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Shuts the write side after the last answer (see `Wire::shut_write`).
    pub fn shut_write(&mut self) {
        self.wire.shut_write(&self.stream);
    }

    /// Bytes already read but not consumed (a pipelined next request): serve now rather
    /// than park. Also true while a body is left unread, so that the next `read_head`
    /// promptly answers `None` (close) instead of the connection idling first; and
    /// while a TLS session holds decrypted bytes not read yet, which no readiness
    /// event would announce. Handshake bytes are not a request.
    pub fn has_buffered(&mut self) -> bool {
        (self.start < self.end && !self.wire.handshaking())
            || self.unread_body
            || self.wire.has_pending()
    }

    /// Reads what the socket already holds, without waiting, until a whole request head
    /// is buffered. The event side (acceptor, waiting room) calls this; a worker takes
    /// the connection only once it says `Ready`. Stops reading once a head is complete:
    /// what follows it stays in the kernel until the head's request is served.
    pub fn fill_head(&mut self) -> HeadProgress {
        if self.unread_body {
            return HeadProgress::Closed;
        }
        if self.proxy_header.is_some() {
            match self.fill_proxy_header() {
                HeadProgress::Ready => {}
                waiting_or_closed => return waiting_or_closed,
            }
        }
        #[cfg(feature = "tls")]
        if self.wire.handshaking() {
            return self.fill_handshake();
        }
        loop {
            if self.skip_empty_lines() {
                self.scanned = 0;
            }
            let pending = &self.buf[self.start..self.end];
            match request::scan_head(pending, &mut self.scanned) {
                Ok(None) if pending.len() < self.max_head => {}
                // Complete, malformed or too large: `take_head` says which.
                _ => return HeadProgress::Ready,
            }
            let started = self.start < self.end;
            self.make_room(self.max_head);
            let end = self.end;
            match self.wire.read(&self.stream, &mut self.buf[end..], false) {
                Ok(0) => return HeadProgress::Closed,
                Ok(n) => self.end += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing yet: the wait costs no buffer.
                    if !started {
                        self.release_buffer();
                    }
                    return HeadProgress::Waiting { started };
                }
                // Reset or failed: a client that is gone gets nothing forwarded.
                Err(_) => return HeadProgress::Closed,
            }
        }
    }

    /// `fill_head` while a PROXY header is due: reads the client's bytes as they are
    /// (before any TLS) until the header is whole (`Ready`: consumed, and `peer` is its
    /// client), more may come (`Waiting`), or it is missing or malformed (`Closed`).
    fn fill_proxy_header(&mut self) -> HeadProgress {
        loop {
            match proxy_protocol::parse(&self.buf[self.start..self.end]) {
                Parsed::Header { len, client } => {
                    self.consume(len);
                    if let Some(client) = client {
                        self.peer = client;
                    }
                    self.proxy_header = None;
                    return HeadProgress::Ready;
                }
                Parsed::Malformed => {
                    if let Some(refusals) = self.proxy_header.take() {
                        refusals.record_malformed();
                    }
                    return HeadProgress::Closed;
                }
                Parsed::Incomplete => {}
            }
            if let Some(progress) = self.read_raw(proxy_protocol::MAX_HEADER) {
                return progress;
            }
        }
    }

    /// One read, without waiting, of the client's bytes as they are (a PROXY header, TLS
    /// records: nothing decrypted), into the buffer grown up to `max_head` or `at_least`:
    /// `None` when bytes came (or the read was interrupted) and the caller looks again;
    /// otherwise what `fill_head` says (nothing more for now, or the client is gone).
    fn read_raw(&mut self, at_least: usize) -> Option<HeadProgress> {
        self.make_room(self.max_head.max(at_least));
        let end = self.end;
        match recv(&self.stream, &mut self.buf[end..], RecvFlags::DONTWAIT) {
            Ok((_, 0)) => Some(HeadProgress::Closed),
            Ok((_, n)) => {
                self.end += n;
                None
            }
            Err(rustix::io::Errno::INTR) => None,
            Err(rustix::io::Errno::WOULDBLOCK) => Some(HeadProgress::Waiting { started: true }),
            Err(_) => Some(HeadProgress::Closed),
        }
    }

    /// `fill_head` while a TLS handshake is due: reads the client's bytes as they are
    /// (no crypto on the event side) until a whole TLS record is buffered, which is
    /// `Ready` for a worker's `handshake`.
    #[cfg(feature = "tls")]
    fn fill_handshake(&mut self) -> HeadProgress {
        loop {
            if tls_session::record_complete(&self.buf[self.start..self.end]) {
                return HeadProgress::Ready;
            }
            if let Some(progress) = self.read_raw(tls_session::MAX_RECORD) {
                return progress;
            }
        }
    }

    /// Runs the TLS handshake over the records `fill_head` buffered: a worker's turn,
    /// the crypto included. After `Step::Done` the buffer is empty and the connection
    /// reads requests; `Step::Failed(Failure::NotTls)` leaves the bytes (plain HTTP)
    /// and the connection plain, for a 400 the client can read.
    #[cfg(feature = "tls")]
    pub fn handshake(&mut self) -> Step {
        let raw = &self.buf[self.start..self.end];
        let step = self.wire.handshake(&self.stream, raw);
        if step == Step::Failed(Failure::NotTls) {
            self.wire = Wire::Plain;
            return step;
        }
        (self.start, self.end) = (0, 0);
        self.release_buffer();
        step
    }

    /// The handshake did not finish by its deadline (the connection is closed next).
    #[cfg(feature = "tls")]
    pub fn handshake_timed_out(&mut self) {
        self.wire.handshake_timed_out();
    }

    /// A whole TLS handshake, waiting for the client until `deadline`: for the admin
    /// interface's own threads only (the front door's handshakes never wait).
    #[cfg(feature = "tls")]
    pub fn handshake_waiting(&mut self, deadline: Instant) -> Result<(), Failure> {
        while self.wire.handshaking() {
            match self.fill_head() {
                HeadProgress::Ready => match self.handshake() {
                    Step::Done => return Ok(()),
                    Step::More => {}
                    Step::Failed(failure) => return Err(failure),
                },
                HeadProgress::Waiting { .. } => {
                    if !self.wait_readable(deadline).unwrap_or(false) {
                        return Err(Failure::Timeout);
                    }
                }
                HeadProgress::Closed => return Err(Failure::Closed),
            }
        }
        Ok(())
    }

    /// The request head `fill_head` found `Ready`, parsed without any IO. `Ok(None)`:
    /// no head is buffered after all (the caller did not ask `fill_head` first, or the
    /// last request's body was left unread), so there is nothing to answer.
    pub fn take_head(&mut self) -> Result<Option<RequestHead>, ProxyError> {
        if self.unread_body {
            return Ok(None);
        }
        self.skip_empty_lines();
        let pending = &self.buf[self.start..self.end];
        let Some(len) = request::scan_head(pending, &mut self.scanned)? else {
            return if pending.len() >= self.max_head {
                Err(ProxyError::HeadTooLarge)
            } else {
                Ok(None)
            };
        };
        let head = request::parse_complete(&pending[..len]);
        self.consume(len);
        self.scanned = 0;
        let head = head?;
        self.unread_body = head.framing.has_body();
        Ok(Some(head))
    }

    /// Whether the client closed or reset the connection since its request was read:
    /// one non-blocking peek. A request that waited in the queue is checked with this
    /// before it is forwarded, so that nothing reaches a backend for a client that is
    /// gone.
    pub fn peer_gone(&self) -> bool {
        let mut byte = [0u8; 1];
        match recv(
            &self.stream,
            &mut byte,
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        ) {
            // A close (FIN) or a reset; pipelined bytes or nothing yet mean it is there.
            Ok((_, 0)) => true,
            Ok(_) => false,
            Err(err) => !matches!(err, rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR),
        }
    }

    /// Reads and drops what the client sends, without waiting, up to `limit` bytes: for
    /// a connection that closes after an answer while the client may still be sending
    /// (lingering close). Returns the bytes dropped and whether the client closed (or
    /// the socket failed), after which there is nothing left to wait for.
    pub fn discard_input(&mut self, limit: usize) -> (usize, bool) {
        (self.start, self.end) = (0, 0);
        self.buf = Vec::new();
        self.unread_body = false;
        let mut sink = [0u8; 16 * 1024];
        let mut dropped = 0;
        while dropped < limit {
            let room = sink.len().min(limit - dropped);
            match recv(&self.stream, &mut sink[..room], RecvFlags::DONTWAIT) {
                Ok((_, 0)) => return (dropped, true),
                Ok((_, n)) => dropped += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return (dropped, false),
                Err(_) => return (dropped, true),
            }
        }
        (dropped, false)
    }

    /// Reads one request head.
    ///
    /// The caller has set SO_RCVTIMEO: the first read relies on it. If the head is not
    /// complete after that, each later read first polls for the time left until
    /// `deadline`, so a client dripping bytes is cut off (`ProxyError::ClientTimeout`).
    ///
    /// Returns `Ok(None)` when there is nothing to answer, just a socket to close: the
    /// client closed or went quiet before sending any byte of a new request, or the
    /// previous request's body was not read to its end.
    pub fn read_head(&mut self, deadline: Instant) -> Result<Option<RequestHead>, ProxyError> {
        if self.unread_body {
            return Ok(None);
        }
        #[cfg(feature = "tls")]
        if self.wire.handshaking() && self.handshake_waiting(deadline).is_err() {
            return Ok(None);
        }
        let mut scanned = 0;
        let mut first_read = true;
        loop {
            if self.skip_empty_lines() {
                scanned = 0;
            }
            let pending = &self.buf[self.start..self.end];
            if let Some(len) = request::scan_head(pending, &mut scanned)? {
                let head = request::parse_complete(&pending[..len]);
                self.consume(len);
                let head = head?;
                self.unread_body = head.framing.has_body();
                return Ok(Some(head));
            }
            if pending.len() >= self.max_head {
                return Err(ProxyError::HeadTooLarge);
            }
            self.make_room(self.max_head);
            let started = self.start < self.end;
            if !first_read && !self.wire.has_pending() && !self.wait_readable(deadline)? {
                return if started {
                    Err(ProxyError::ClientTimeout)
                } else {
                    Ok(None)
                };
            }
            first_read = false;
            let end = self.end;
            match self.wire.read(&self.stream, &mut self.buf[end..], true) {
                Ok(0) if !started => return Ok(None),
                Ok(0) => return Err(gone("client closed in the middle of a request head")),
                Ok(n) => self.end += n,
                Err(err) if is_timeout(&err) => {
                    return if started {
                        Err(ProxyError::ClientTimeout)
                    } else {
                        Ok(None)
                    };
                }
                Err(err) if !started && is_disconnect(&err) => return Ok(None),
                Err(err) => return Err(ProxyError::ClientGone(err)),
            }
        }
    }

    /// A reader of this request's body: the buffered bytes first, then the socket.
    /// `expect_continue`: "HTTP/1.1 100 Continue" is written before the first read from
    /// the socket (never if the body is empty or already buffered). `max_body`: more
    /// body bytes than this is `ProxyError::BodyTooLarge`; a larger Content-Length fails
    /// on the first read.
    pub fn body(
        &mut self,
        framing: Framing,
        expect_continue: bool,
        max_body: Option<u64>,
    ) -> BodyReader<'_> {
        BodyReader::new(self, framing, expect_continue, max_body)
    }

    /// RFC 9112 §2.2: empty lines before a request line are ignored. Returns true if
    /// any were skipped.
    fn skip_empty_lines(&mut self) -> bool {
        let before = self.start;
        while self.buf[self.start..self.end].starts_with(b"\r\n") {
            self.start += 2;
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        self.start != before
    }

    /// Makes space at the end of the buffer: slide the unconsumed bytes to the front,
    /// or else grow (doubling, up to `limit`).
    fn make_room(&mut self, limit: usize) {
        if self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        } else {
            let floor = INITIAL_BUF.min(limit);
            let size = (self.buf.len() * 2).clamp(floor, limit);
            self.buf.resize(size, 0);
        }
    }

    /// Gives the buffer back while the connection waits with nothing buffered, so that
    /// an idle connection costs its socket and this struct, not a buffer. The next read
    /// allocates it again.
    pub fn release_buffer(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            self.buf = Vec::new();
        }
    }

    /// Waits until the socket is readable or `deadline` passes (false).
    fn wait_readable(&self, deadline: Instant) -> Result<bool, ProxyError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let timeout = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            });
            let mut fds = [PollFd::new(&self.stream, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                // Readable, hung up or failed: the read that follows tells which.
                Ok(n) if n > 0 => return Ok(true),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(err) => return Err(ProxyError::ClientGone(err.into())),
            }
        }
    }

    // Used by `body.rs`.

    /// The unconsumed bytes.
    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Reads from the socket into the (empty) buffer. Ok(0) is end of stream.
    pub(super) fn fill(&mut self) -> io::Result<usize> {
        debug_assert_eq!(self.start, self.end, "fill with unconsumed bytes");
        if self.buf.is_empty() {
            self.buf.resize(INITIAL_BUF.min(self.max_head), 0);
        }
        let n = self.wire.read(&self.stream, &mut self.buf, true)?;
        (self.start, self.end) = (0, n);
        Ok(n)
    }

    /// Reads what the socket already has into the (empty) buffer, without waiting.
    /// Ok(0) is end of stream; `WouldBlock`, nothing there yet.
    pub(super) fn fill_without_waiting(&mut self) -> io::Result<usize> {
        debug_assert_eq!(self.start, self.end, "fill with unconsumed bytes");
        if self.buf.is_empty() {
            self.buf.resize(INITIAL_BUF.min(self.max_head), 0);
        }
        let n = self.wire.read(&self.stream, &mut self.buf, false)?;
        (self.start, self.end) = (0, n);
        Ok(n)
    }

    /// Reads what the socket already has, up to `want` bytes, straight into `spill`
    /// (the buffer must be empty, or bytes would be reordered). Ok(0) is end of
    /// stream; `WouldBlock`, nothing there yet.
    pub(super) fn fill_spill(&mut self, spill: &mut Spill, want: usize) -> io::Result<usize> {
        debug_assert_eq!(self.start, self.end, "direct read with unconsumed bytes");
        let (wire, stream) = (&mut self.wire, &self.stream);
        spill.recv_with(want, |out| wire.read_uninit(stream, out))
    }

    /// Reads from the socket straight into `out`, bypassing the buffer (which must be
    /// empty, or bytes would be reordered).
    pub(super) fn read_direct(&mut self, out: &mut [u8]) -> io::Result<usize> {
        debug_assert_eq!(self.start, self.end, "direct read with unconsumed bytes");
        self.wire.read(&self.stream, out, true)
    }

    /// Sends `bytes` (a `100 Continue`) without waiting: false when the client did not
    /// take them all at once.
    pub(super) fn send_without_waiting(&mut self, bytes: &[u8]) -> io::Result<bool> {
        let mut outbox = self.outbox();
        outbox.write_all(bytes)?;
        Ok(outbox.into_unsent().is_none())
    }

    /// The current request's body has been read to its end.
    pub(super) fn body_done(&mut self) {
        self.unread_body = false;
    }
}

/// However the connection ends, a TLS client hears close_notify before the close.
impl Drop for ClientConn {
    fn drop(&mut self) {
        self.wire.close_notify(&self.stream);
    }
}

/// An answer written whole, waiting for the client as the socket's write timeout
/// allows: refusals (`refuse.rs`), a `100 Continue`, the admin interface's answers. On
/// a non-blocking socket (the event side's refusals) what does not fit is cut short.
impl Write for ClientConn {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut outbox = self.outbox();
        outbox.write_all(bytes)?;
        if let Some(mut rest) = outbox.into_unsent() {
            outbox::write_rest(&self.stream, &mut rest, &mut Vec::new())?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What SO_RCVTIMEO expiring looks like.
pub(super) fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_disconnect(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

pub(super) fn gone(why: &'static str) -> ProxyError {
    ProxyError::ClientGone(io::Error::new(io::ErrorKind::UnexpectedEof, why))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{Shutdown, TcpListener};
    use std::thread;
    use std::time::Duration;

    /// A connected pair on loopback: (client side, server side). Both time out after a
    /// few seconds so that a broken test fails instead of hanging.
    pub(in crate::http1) fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        for s in [&client, &server] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        (client, server)
    }

    /// A client socket and the server's ClientConn for it.
    pub(in crate::http1) fn client_conn(max_head: usize) -> (TcpStream, ClientConn) {
        let (client, server) = socket_pair();
        let peer = server.peer_addr().unwrap();
        (client, ClientConn::new(server, peer, max_head))
    }

    pub(in crate::http1) fn later() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";

    #[test]
    fn reads_one_head() {
        let (mut client, mut conn) = client_conn(32 * 1024);
        assert_eq!(conn.peer(), client.local_addr().unwrap());
        client.write_all(GET).unwrap();
        let head = conn.read_head(later()).unwrap().unwrap();
        assert_eq!(head.target, "/a");
        assert!(!conn.has_buffered());
        assert_eq!(conn.buf.len(), INITIAL_BUF);
    }

    #[test]
    fn pipelined_heads_come_out_in_order() {
        let (mut client, mut conn) = client_conn(32 * 1024);
        client
            .write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        assert_eq!(conn.read_head(later()).unwrap().unwrap().target, "/1");
        assert!(conn.has_buffered());
        assert_eq!(conn.read_head(later()).unwrap().unwrap().target, "/2");
        assert!(!conn.has_buffered());
        client.shutdown(Shutdown::Write).unwrap();
        assert!(conn.read_head(later()).unwrap().is_none());
    }

    #[test]
    fn a_head_split_over_many_reads_is_assembled() {
        let (mut client, mut conn) = client_conn(32 * 1024);
        let writer = thread::spawn(move || {
            for &b in GET {
                client.write_all(&[b]).unwrap();
            }
            client
        });
        assert_eq!(conn.read_head(later()).unwrap().unwrap().target, "/a");
        drop(writer.join().unwrap());
    }

    #[test]
    fn close_before_a_request_is_none() {
        let (client, mut conn) = client_conn(32 * 1024);
        drop(client);
        assert!(conn.read_head(later()).unwrap().is_none());

        // Empty lines alone are not a request either.
        let (mut client, mut conn) = client_conn(32 * 1024);
        client.write_all(b"\r\n\r\n").unwrap();
        drop(client);
        assert!(conn.read_head(later()).unwrap().is_none());
    }

    #[test]
    fn close_in_the_middle_of_a_head_is_client_gone() {
        let (mut client, mut conn) = client_conn(32 * 1024);
        client.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
        drop(client);
        match conn.read_head(later()) {
            Err(ProxyError::ClientGone(err)) => {
                assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn quiet_client_times_out_as_none() {
        let (_client, mut conn) = client_conn(32 * 1024);
        conn.stream()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(conn.read_head(later()).unwrap().is_none());
    }

    #[test]
    fn dripping_client_is_cut_off_at_the_deadline() {
        let (mut client, mut conn) = client_conn(32 * 1024);
        // Sends the first byte at once, then one byte every 20 ms until the server
        // gives up and closes (a write then fails).
        let drip = thread::spawn(move || {
            let mut bytes = b"GET /".iter().chain(std::iter::repeat(&b'a'));
            while client.write_all(&[*bytes.next().unwrap()]).is_ok() {
                thread::sleep(Duration::from_millis(20));
            }
        });
        let deadline = Instant::now() + Duration::from_millis(300);
        assert!(matches!(
            conn.read_head(deadline),
            Err(ProxyError::ClientTimeout)
        ));
        drop(conn);
        drip.join().unwrap();
    }

    #[test]
    fn bare_lf_is_refused_without_waiting_for_the_rest() {
        let (mut client, mut conn) = client_conn(32 * 1024);
        // The head never ends: only the eager check can answer before the timeout.
        client.write_all(b"GET / HTTP/1.1\nHost: a\r\n").unwrap();
        assert!(matches!(
            conn.read_head(later()),
            Err(ProxyError::BadRequest("bad line ending in request head"))
        ));
    }

    #[test]
    fn the_buffer_grows_for_a_long_head_up_to_max_head() {
        let (mut client, mut conn) = client_conn(32 * 1024);
        let target = format!("/{}", "%2F/".repeat(2500));
        client
            .write_all(format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(conn.read_head(later()).unwrap().unwrap().target, target);
        assert!(conn.buf.len() > INITIAL_BUF && conn.buf.len() <= 32 * 1024);
    }

    #[test]
    fn heads_longer_than_max_head_are_refused() {
        let head = |len: usize| {
            let fixed = "GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n".len();
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
                "x".repeat(len - fixed)
            )
        };
        let (mut client, mut conn) = client_conn(100);
        client.write_all(head(100).as_bytes()).unwrap();
        assert!(conn.read_head(later()).unwrap().is_some());

        let (mut client, mut conn) = client_conn(100);
        client.write_all(head(101).as_bytes()).unwrap();
        assert!(matches!(
            conn.read_head(later()),
            Err(ProxyError::HeadTooLarge)
        ));

        let (mut client, mut conn) = client_conn(32 * 1024);
        client.write_all(&[b'a'; 40 * 1024]).unwrap();
        assert!(matches!(
            conn.read_head(later()),
            Err(ProxyError::HeadTooLarge)
        ));
    }

    #[test]
    fn an_unread_body_ends_the_connection() {
        let (mut client, mut conn) = client_conn(32 * 1024);
        client
            .write_all(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 14\r\n\r\nGET / HTTP/1.1\r\n",
            )
            .unwrap();
        assert_eq!(
            conn.read_head(later()).unwrap().unwrap().framing,
            Framing::Length(14)
        );
        assert!(conn.has_buffered());
        // The body's bytes look like a request: they must not be served as one.
        assert!(conn.read_head(later()).unwrap().is_none());
    }

    #[test]
    fn a_body_read_to_its_end_lets_the_next_request_through() {
        let (mut client, mut conn) = client_conn(32 * 1024);
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let head = conn.read_head(later()).unwrap().unwrap();
        let mut body = Vec::new();
        conn.body(head.framing, false, None)
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(body, b"abc");
        assert_eq!(conn.read_head(later()).unwrap().unwrap().target, "/next");
    }
}
