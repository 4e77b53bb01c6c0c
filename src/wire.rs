//! The wire: how a client connection's bytes travel, in the clear or in a TLS session
//! (`tls_session.rs`, with the `tls` feature). A `ClientConn` (http1/conn.rs) reads
//! through its `Wire`, and an `Outbox` (outbox.rs) seals what it writes with it; above
//! those two, nothing knows whether a connection is TLS. The waiting room, the spills
//! and the write-outs handle wire bytes only: for a TLS connection an answer is sealed
//! before it is sent or kept, so what is kept is already what goes on the wire.

use std::io::{self, IoSlice, Read};
use std::mem::MaybeUninit;
use std::net::TcpStream;
#[cfg(feature = "tls")]
use std::sync::Arc;

use rustix::net::{RecvFlags, recv};

#[cfg(feature = "tls")]
use crate::metrics::Handshakes;
#[cfg(feature = "tls")]
use crate::tls_session::{Session, Step};

/// What a listener gives each connection it accepts: a plain wire, or a TLS session of
/// its own, whose handshake is due first.
#[derive(Clone, Debug)]
pub enum Accepting {
    Plain,
    #[cfg(feature = "tls")]
    Tls {
        config: Arc<rustls::ServerConfig>,
        /// Where the sessions count their handshakes.
        counts: Arc<Handshakes>,
    },
}

impl Accepting {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Accepting::Plain)
    }

    /// The wire of a connection just accepted; `None` if no TLS session can be made
    /// for it (rustls refused the configuration), and it is closed.
    pub fn wire(&self) -> Option<Wire> {
        match self {
            Accepting::Plain => Some(Wire::Plain),
            #[cfg(feature = "tls")]
            Accepting::Tls { config, counts } => {
                Session::new(config, counts).map(|session| Wire::Tls(Box::new(session)))
            }
        }
    }
}

/// A client connection's transport.
#[derive(Debug)]
pub enum Wire {
    Plain,
    /// Boxed: a session is a few kilobytes, and most connections have none.
    #[cfg(feature = "tls")]
    Tls(Box<Session>),
}

/// What the log says about a connection's TLS.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsInfo<'a> {
    /// "TLSv1.3" or "TLSv1.2"; `None` for a plain connection.
    pub version: Option<&'static str>,
    /// The name the client asked for (SNI).
    pub server_name: Option<&'a str>,
}

impl Wire {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Wire::Plain)
    }

    /// A TLS connection whose handshake is not done: its bytes so far are handshake
    /// records for `handshake`, not a request.
    pub fn handshaking(&self) -> bool {
        match self {
            Wire::Plain => false,
            #[cfg(feature = "tls")]
            Wire::Tls(session) => session.handshaking(),
        }
    }

    /// Runs a TLS handshake over the client's bytes so far (see `Session::handshake`).
    #[cfg(feature = "tls")]
    pub fn handshake(&mut self, stream: &TcpStream, raw: &[u8]) -> Step {
        match self {
            Wire::Plain => Step::Done,
            Wire::Tls(session) => session.handshake(stream, raw),
        }
    }

    /// The handshake ran out of time: what its failure counts as.
    #[cfg(feature = "tls")]
    pub fn handshake_timed_out(&mut self) {
        if let Wire::Tls(session) = self {
            session.timed_out();
        }
    }

    /// Reads into `out` what the client sent: without waiting (`wait` false:
    /// `WouldBlock` when nothing is there yet) or as the socket's read timeout allows.
    /// Ok(0) is the end of the stream.
    pub fn read(&mut self, stream: &TcpStream, out: &mut [u8], wait: bool) -> io::Result<usize> {
        match self {
            Wire::Plain if wait => loop {
                match (&mut &*stream).read(out) {
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    other => return other,
                }
            },
            Wire::Plain => loop {
                match recv(stream, &mut *out, RecvFlags::DONTWAIT) {
                    Err(rustix::io::Errno::INTR) => {}
                    other => return other.map(|(n, _)| n).map_err(io::Error::from),
                }
            },
            #[cfg(feature = "tls")]
            Wire::Tls(session) => session.read(stream, out, wait),
        }
    }

    /// `read` without waiting into memory not yet initialized: a plain connection
    /// receives straight into it (a spill's spare capacity, with no copy on the way).
    /// Returns how many bytes at the front of `out` are now initialized.
    pub fn read_uninit(
        &mut self,
        stream: &TcpStream,
        out: &mut [MaybeUninit<u8>],
    ) -> io::Result<usize> {
        match self {
            Wire::Plain => loop {
                match recv(stream, &mut *out, RecvFlags::DONTWAIT) {
                    Err(rustix::io::Errno::INTR) => {}
                    other => return other.map(|(got, _)| got.0.len()).map_err(io::Error::from),
                }
            },
            #[cfg(feature = "tls")]
            Wire::Tls(session) => {
                // rustls decrypts into initialized memory only.
                out.fill(MaybeUninit::new(0));
                // SAFETY: every byte of `out` was just initialized.
                let out = unsafe { &mut *(out as *mut [MaybeUninit<u8>] as *mut [u8]) };
                session.read(stream, out, false)
            }
        }
    }

    /// Whether bytes the client sent are already decrypted and waiting in the TLS
    /// session, where no readiness event will announce them.
    pub fn has_pending(&mut self) -> bool {
        match self {
            Wire::Plain => false,
            #[cfg(feature = "tls")]
            Wire::Tls(session) => session.has_plaintext(),
        }
    }

    /// Seals `bufs` for the wire into `out` (see `Session::seal`); false for a plain
    /// connection, whose bytes go out as they are.
    pub fn seal(&mut self, bufs: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<bool> {
        match self {
            Wire::Plain => {
                let _ = (bufs, out);
                Ok(false)
            }
            #[cfg(feature = "tls")]
            Wire::Tls(session) => session.seal(bufs, out).map(|()| true),
        }
    }

    /// Shuts the write side after the last answer (a TLS session says close_notify first).
    pub fn shut_write(&mut self, stream: &TcpStream) {
        #[cfg(feature = "tls")]
        if let Wire::Tls(session) = self
            && !session.handshaking()
        {
            session.close_notify(stream);
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }

    pub fn info(&self) -> TlsInfo<'_> {
        match self {
            Wire::Plain => TlsInfo::default(),
            #[cfg(feature = "tls")]
            Wire::Tls(session) => TlsInfo {
                version: session.version(),
                server_name: session.server_name(),
            },
        }
    }
}
