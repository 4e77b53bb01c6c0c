//! Our TCP transport for ureq: plain connections to a backend whose liveness check is one
//! non-blocking peek. `Upstream` (mod.rs beside this file) plugs it into every Agent.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::proxy_protocol;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

use super::buffers::LentBuffers;

thread_local! {
    /// The last connect made on this thread and how long it took. ureq connects on the
    /// calling thread, inside `Agent::run`, and does not report the time; `Upstream::send`
    /// clears this before an exchange and reads it after.
    static LAST_CONNECT: Cell<Option<Duration>> = const { Cell::new(None) };

    /// The client of the request this thread sends now, for a `,send-proxy` backend's
    /// PROXY header; ureq connects on this thread, and a send-proxy connection is used
    /// for that one request. Set by `for_client` (proxy.rs, before each send); `None`
    /// (the health thread) makes a LOCAL header.
    static CLIENT: Cell<Option<SocketAddr>> = const { Cell::new(None) };
}

/// Names the client of the requests this thread sends from now on (see `CLIENT`).
pub fn for_client(client: SocketAddr) {
    CLIENT.set(Some(client));
}

/// Forgets the last connect, before an exchange that may or may not open one.
pub(super) fn clear_last_connect() {
    LAST_CONNECT.set(None);
}

/// How long the connect of the exchange just made took, if it opened a connection.
pub(super) fn take_last_connect() -> Option<Duration> {
    LAST_CONNECT.take()
}

/// Opens plain TCP connections to a backend for ureq, like ureq's own connector, but
/// yields a `TcpTransport` whose liveness check costs one syscall instead of six. ureq
/// asks whether a pooled connection is still open before every reuse, that is on almost
/// every request. No crate offers this for ureq's transport API, hence this hand-written
/// piece; everything else (pooling, HTTP) stays ureq's.
#[derive(Debug, Clone, Copy)]
pub(super) struct TcpConnector {
    /// `,send-proxy`: each connection starts with a PROXY v2 header.
    pub(super) send_proxy: bool,
}

impl Connector<()> for TcpConnector {
    type Out = TcpTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _: Option<()>,
    ) -> Result<Option<TcpTransport>, ureq::Error> {
        let limit = details.timeout.not_zero().map(|t| *t);
        let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to connect to");
        for addr in details.addrs.iter() {
            let started = Instant::now();
            let attempt = match limit {
                Some(limit) => TcpStream::connect_timeout(addr, limit),
                None => TcpStream::connect(addr),
            };
            match attempt {
                Ok(mut stream) => {
                    LAST_CONNECT.set(Some(started.elapsed()));
                    stream.set_nodelay(details.config.no_delay())?;
                    if self.send_proxy {
                        let header = proxy_protocol::v2_header(CLIENT.get(), *addr);
                        stream.write_all(&header)?;
                    }
                    let buffers = LentBuffers::new(details.config.output_buffer_size());
                    return Ok(Some(TcpTransport {
                        stream,
                        buffers,
                        read_timeout: None,
                        write_timeout: None,
                        answered: false,
                    }));
                }
                Err(err) if err.kind() == io::ErrorKind::TimedOut => {
                    return Err(ureq::Error::Timeout(details.timeout.reason));
                }
                Err(err) => last = err,
            }
        }
        Err(ureq::Error::Io(last))
    }
}

/// One TCP connection to a backend, with the buffers it borrows while in use.
#[derive(Debug)]
pub(super) struct TcpTransport {
    stream: TcpStream,
    buffers: LentBuffers,
    /// The socket timeouts last set: setsockopt only when they change.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Bytes were read since the last liveness check: the next check is ureq handing
    /// the connection back to its pool, right after the answer's last read (see
    /// `is_open`).
    answered: bool,
}

impl TcpTransport {
    /// The timeout to apply now; an expired one is an error before any IO.
    fn next(timeout: NextTimeout) -> Result<(NextTimeout, Option<Duration>), ureq::Error> {
        if timeout.after.is_zero() {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        Ok((timeout, timeout.not_zero().map(|t| *t)))
    }
}

impl Transport for TcpTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let (timeout, limit) = Self::next(timeout.for_write())?;
        if limit != self.write_timeout {
            self.stream.set_write_timeout(limit)?;
            self.write_timeout = limit;
        }
        match self.stream.write_all(&self.buffers.output()[..amount]) {
            Ok(()) => Ok(()),
            Err(err) if is_timeout(&err) => Err(ureq::Error::Timeout(timeout.reason)),
            Err(err) => Err(err.into()),
        }
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let (timeout, limit) = Self::next(timeout.for_read())?;
        if limit != self.read_timeout {
            self.stream.set_read_timeout(limit)?;
            self.read_timeout = limit;
        }
        let input = self.buffers.input_append_buf();
        let read = loop {
            match self.stream.read(input) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match read {
            Ok(n) => {
                self.buffers.input_appended(n);
                self.answered = true;
                Ok(n > 0)
            }
            Err(err) if is_timeout(&err) => Err(ureq::Error::Timeout(timeout.reason)),
            Err(err) => Err(err.into()),
        }
    }

    /// Open means: nothing to read and not closed. One non-blocking peek says both; a
    /// byte that nobody asked for (or an EOF) means the connection cannot be reused.
    ///
    /// ureq asks twice per exchange: when it returns the connection to its pool, just
    /// after reading the answer, and when it takes it out again for the next request.
    /// Only the second peek is made: whatever the first would have caught (bytes
    /// after the answer's end, a close) is still there to see when the connection is
    /// taken, and a connection is never used without that check. One syscall fewer per
    /// request. The first is where the connection goes idle: its buffers go back to
    /// this thread (buffers.rs).
    fn is_open(&mut self) -> bool {
        use rustix::net::{RecvFlags, recv};
        if std::mem::take(&mut self.answered) {
            self.buffers.give_back();
            return true;
        }
        let mut byte = [0u8; 1];
        matches!(
            recv(
                &self.stream,
                &mut byte,
                RecvFlags::PEEK | RecvFlags::DONTWAIT
            ),
            Err(rustix::io::Errno::WOULDBLOCK)
        )
    }
}

/// A socket timeout shows as WouldBlock or TimedOut, depending on the platform.
fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
