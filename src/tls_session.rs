//! A TLS session: one client connection's `rustls::ServerConnection` on a TLS listener,
//! and the few things the front door asks of it. `wire.rs` is its only user: a
//! `ClientConn` (http1/conn.rs) reads and writes through its `Wire`, which is plain or
//! one of these; the certificates and the rustls configuration are `tls_certs.rs`'s.
//!
//! rustls is sans-IO, which is what lets a TLS connection follow the front door's rule
//! (a worker only ever works): the waiting room reads the client's handshake bytes
//! without looking into them and wakes a worker once a whole TLS record is there
//! (`record_complete`); the worker hands them to `handshake`, which runs the crypto and
//! writes the answering flight without waiting. After the handshake, `read` decrypts
//! (never waiting, or waiting as the socket's timeout allows), and `seal` encrypts an
//! answer into bytes that the outbox then sends or keeps exactly like a plain answer.
//! Needs the `tls` cargo feature.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustix::net::{RecvFlags, SendFlags, recv, send};
use rustls::{AlertDescription, Error, ProtocolVersion, ServerConfig, ServerConnection};

use crate::metrics::{HANDSHAKE_FAILURES, Handshakes};

/// The largest TLS record a client may send: 2^14 bytes of payload plus the most any
/// cipher adds (RFC 8446 §5.2), plus the 5-byte record header. The waiting room's buffer
/// for handshake bytes may grow to this even under a small `--max-head`.
pub const MAX_RECORD: usize = 5 + (1 << 14) + 256;

/// How a handshake went after the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Established: what follows is application data.
    Done,
    /// The client's next flight is due.
    More,
    Failed(Failure),
}

/// Why a handshake failed, as counted (`roundhouse_tls_handshake_failures_total`), in
/// the order of `metrics::HANDSHAKE_FAILURES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No version, cipher suite, group or ALPN protocol both sides speak (TLS 1.1, an
    /// h2-only client).
    Protocol,
    /// The client refused our certificate.
    Certificate,
    /// Not done within `--client-timeout`.
    Timeout,
    /// Plain HTTP on a TLS port.
    NotTls,
    /// The client closed or reset the connection first.
    Closed,
    Other,
}

impl Failure {
    /// The metric's `reason` label.
    pub fn label(self) -> &'static str {
        HANDSHAKE_FAILURES[self as usize]
    }

    fn of(err: &Error) -> Failure {
        use AlertDescription as A;
        match err {
            Error::PeerIncompatible(_) | Error::NoApplicationProtocol => Failure::Protocol,
            Error::AlertReceived(
                A::ProtocolVersion
                | A::HandshakeFailure
                | A::InsufficientSecurity
                | A::NoApplicationProtocol,
            ) => Failure::Protocol,
            Error::AlertReceived(
                A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied,
            ) => Failure::Certificate,
            _ => Failure::Other,
        }
    }
}

/// Whether `raw`, the client's bytes so far, gives a worker something to do: a whole
/// TLS record is there (or the bytes are not TLS at all, which a worker refuses).
/// rustls does not say whether the bytes it buffered hold a whole record, so the
/// waiting room keeps them itself and looks at the 5-byte record header: its content
/// type (20 to 24) and length.
pub fn record_complete(raw: &[u8]) -> bool {
    match raw {
        [kind, ..] if !(20..=24).contains(kind) => true,
        [_, _, _, hi, lo, rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            rest.len() >= len || 5 + len > MAX_RECORD
        }
        _ => false,
    }
}

/// One client's TLS session (see the module docs). It counts its handshake once, in
/// `counts`: as done when it completes, or as failed, for the reason it was given
/// (`Closed` if none), when the session ends without one.
#[derive(Debug)]
pub struct Session {
    tls: ServerConnection,
    /// Some of the client's bytes went to rustls: later ones are not the first.
    started: bool,
    counts: Arc<Handshakes>,
    /// Why the handshake failed, once it did.
    failure: Option<Failure>,
}

impl Session {
    /// A session for a connection just accepted; `None` only if rustls refuses the
    /// configuration, which `tls_certs::server_config` makes valid.
    pub fn new(config: &Arc<ServerConfig>, counts: &Arc<Handshakes>) -> Option<Session> {
        let mut tls = ServerConnection::new(config.clone()).ok()?;
        // `seal` takes every answer's bytes out at once: rustls need not bound them.
        tls.set_buffer_limit(None);
        Some(Session {
            tls,
            started: false,
            counts: counts.clone(),
            failure: None,
        })
    }

    /// The handshake ran out of time (`--client-timeout`): what it counts as.
    pub fn timed_out(&mut self) {
        self.failure.get_or_insert(Failure::Timeout);
    }

    pub fn handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Runs the handshake over `raw`, the client's bytes so far (all of them are taken),
    /// and writes what rustls answers without waiting: the server's flight, or the
    /// alert that ends a failed handshake. A flight is a few kilobytes, which an
    /// accepted socket's send buffer takes whole; one it does not take is a failure,
    /// not a wait.
    pub fn handshake(&mut self, stream: &TcpStream, raw: &[u8]) -> Step {
        let step = self.step(stream, raw);
        match step {
            Step::Done => self.counts.record_done(),
            Step::Failed(failure) => self.failure = Some(failure),
            Step::More => {}
        }
        step
    }

    fn step(&mut self, stream: &TcpStream, mut raw: &[u8]) -> Step {
        // A TLS connection starts with a record type byte (20 to 24); HTTP, with a method.
        if !self.started && raw.first().is_some_and(u8::is_ascii_alphabetic) {
            return Step::Failed(Failure::NotTls);
        }
        self.started = true;
        while !raw.is_empty() {
            if self.tls.read_tls(&mut raw).is_err() {
                return Step::Failed(Failure::Other);
            }
            if let Err(err) = self.tls.process_new_packets() {
                let _ = self.send_now(stream);
                return Step::Failed(Failure::of(&err));
            }
        }
        match self.send_now(stream) {
            Ok(true) => {}
            Ok(false) => return Step::Failed(Failure::Other),
            Err(_) => return Step::Failed(Failure::Closed),
        }
        if self.tls.is_handshaking() {
            Step::More
        } else {
            Step::Done
        }
    }

    /// Reads decrypted bytes into `out`: those rustls already holds, then what the
    /// socket brings, without waiting (`wait` false: `WouldBlock` when nothing is
    /// there) or as long as the socket's read timeout allows. Ok(0) is the end, with or
    /// without the client's close_notify (HTTP's own framing tells a cut-off body).
    pub fn read(&mut self, stream: &TcpStream, out: &mut [u8], wait: bool) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(out) {
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(err) if err.kind() != io::ErrorKind::WouldBlock => return Err(err),
                Err(_) => {}
            }
            let read = if wait {
                self.tls.read_tls(&mut Waiting(stream))
            } else {
                self.tls.read_tls(&mut NotWaiting(stream))
            };
            read?;
            let processed = self.tls.process_new_packets();
            // A key update's answer, or the alert of a failure.
            if self.tls.wants_write() {
                let _ = self.send_now(stream);
            }
            if let Err(err) = processed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
        }
    }

    /// Whether rustls holds decrypted bytes nobody read yet: the connection has a
    /// request to serve even though its socket may have nothing more.
    pub fn has_plaintext(&mut self) -> bool {
        self.tls
            .process_new_packets()
            .is_ok_and(|state| state.plaintext_bytes_to_read() > 0)
    }

    /// Encrypts `bufs` and appends the records to `out`, behind anything rustls still
    /// had to send (session tickets after the handshake), so that `out` is the next
    /// bytes on the wire, in order.
    pub fn seal(&mut self, bufs: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
        for buf in bufs {
            self.tls.writer().write_all(buf)?;
        }
        while self.tls.wants_write() {
            self.tls.write_tls(out)?;
        }
        Ok(())
    }

    /// Before the write side is shut: tells the client, so that it can tell our close
    /// from a cut connection.
    pub fn close_notify(&mut self, stream: &TcpStream) {
        self.tls.send_close_notify();
        let _ = self.send_now(stream);
    }

    /// "TLSv1.3" or "TLSv1.2", for the log.
    pub fn version(&self) -> Option<&'static str> {
        match self.tls.protocol_version()? {
            ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            _ => None,
        }
    }

    /// The name the client asked for (SNI), if it did.
    pub fn server_name(&self) -> Option<&str> {
        self.tls.server_name()
    }

    /// Writes what rustls has to send without waiting; false when the socket did not
    /// take it all.
    fn send_now(&mut self, stream: &TcpStream) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut NotWaiting(stream)) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.tls.is_handshaking() {
            let failure = self.failure.unwrap_or(Failure::Closed);
            self.counts.record_failure(failure as usize);
        }
    }
}

/// The socket, read and written without waiting (`MSG_DONTWAIT`), whatever its mode.
struct NotWaiting<'a>(&'a TcpStream);

impl Read for NotWaiting<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match recv(self.0, &mut *out, RecvFlags::DONTWAIT) {
                Err(rustix::io::Errno::INTR) => {}
                other => return other.map(|(n, _)| n).map_err(io::Error::from),
            }
        }
    }
}

impl Write for NotWaiting<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        loop {
            // NOSIGNAL: a client that is gone is an error here, not a SIGPIPE.
            match send(self.0, bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Err(rustix::io::Errno::INTR) => {}
                other => return other.map_err(io::Error::from),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The socket, read as its read timeout allows.
struct Waiting<'a>(&'a TcpStream);

impl Read for Waiting<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&mut &*self.0).read(out) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_complete_once_its_header_and_length_are_there() {
        // A handshake record of 3 bytes.
        let record = [22, 3, 1, 0, 3, 1, 2, 3];
        for cut in 0..record.len() {
            assert!(!record_complete(&record[..cut]), "{cut} bytes");
        }
        assert!(record_complete(&record));
        assert!(record_complete(&[record.as_slice(), &[22, 3]].concat()));
    }

    #[test]
    fn bytes_that_are_not_tls_or_too_long_a_record_are_for_a_worker_at_once() {
        assert!(record_complete(b"G"));
        assert!(record_complete(&[22, 3, 1, 0xff, 0xff]));
        assert!(!record_complete(&[22, 3, 1, 0x40, 0x00]));
    }
}
