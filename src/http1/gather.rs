//! Gathering a request body without waiting: the bytes after a request head, delimited by
//! `Content-Length` or decoded from chunked framing, taken from the connection buffer and
//! then from the socket only as far as it already has them, into a `Spill` (memory, then
//! a temporary file). With `--request-buffering on` a worker starts a `Gather` when it
//! reads a head with a body; if the body is not all there yet, the waiting room goes on
//! with it, and a worker forwards the request once `fill` says `Done`, at memory speed.
//!
//! The framing rules are those of `body.rs` (the streaming reader used with
//! `--request-buffering off`), and chunked framing is taken apart by the same
//! `chunked.rs` decoder, so both ways read a body alike. A gathered body is forwarded
//! with a Content-Length (its decoded size), as nginx does.

use std::io;

use super::chunked::Dechunker;
use super::conn::{ClientConn, gone};
use super::request::Framing;
use crate::error::ProxyError;
use crate::spill::Spill;

/// How far `Gather::fill` came.
#[derive(Debug)]
pub enum Gathered {
    /// The whole body is in the spill; the connection is at the next request.
    Done,
    /// The socket has nothing more for now.
    Waiting,
    /// The body is malformed or too large, or the client went away: answer (if anyone
    /// is left) and close.
    Failed(ProxyError),
}

/// One request body on its way into a spill.
#[derive(Debug)]
pub struct Gather {
    framing: Framing,
    /// Body bytes not yet taken (Framing::Length).
    left: u64,
    dechunker: Dechunker,
    /// "100 Continue" is still owed before the first read from the socket.
    send_continue: bool,
    max_body: Option<u64>,
    body: Spill,
    done: bool,
}

impl Gather {
    /// A gather of the body `framing` announces; `expect_continue`: the client waits for
    /// "100 Continue" before it sends the body.
    pub fn new(framing: Framing, expect_continue: bool, max_body: Option<u64>) -> Gather {
        let mut body = Spill::new();
        if let Framing::Length(len) = framing
            && max_body.is_none_or(|max| len <= max)
        {
            body.expect(len);
        }
        Gather {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            dechunker: Dechunker::new(),
            send_continue: expect_continue && framing.has_body(),
            max_body,
            body,
            done: !framing.has_body(),
        }
    }

    /// The body gathered: all of it once `fill` said `Done`.
    pub fn into_body(self) -> Spill {
        self.body
    }

    /// Takes body bytes from the connection's buffer, then from its socket without
    /// waiting, until the body is complete or the socket has no more for now.
    pub fn fill(&mut self, conn: &mut ClientConn) -> Gathered {
        match self.step(conn) {
            Ok(true) => {
                self.done = true;
                conn.body_done();
                Gathered::Done
            }
            Ok(false) => Gathered::Waiting,
            Err(err) => Gathered::Failed(err),
        }
    }

    fn step(&mut self, conn: &mut ClientConn) -> Result<bool, ProxyError> {
        if self.done {
            return Ok(true);
        }
        if let (Framing::Length(len), Some(max)) = (self.framing, self.max_body)
            && len > max
        {
            return Err(ProxyError::BodyTooLarge);
        }
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if !conn.buffered().is_empty() {
                if self.take_buffered(conn, &mut scratch)? {
                    return Ok(true);
                }
                continue;
            }
            self.continue_once(conn)?;
            let read = match self.framing {
                // Limited to the body, so the next request's bytes stay in the socket.
                // Straight into the spill: `--max-body` was checked against the length.
                Framing::Length(_) => {
                    let want = usize::try_from(self.left).unwrap_or(usize::MAX);
                    let read = conn.fill_spill(&mut self.body, want);
                    if let Ok(n) = read {
                        self.left -= n as u64;
                        if n > 0 && self.left == 0 {
                            return Ok(true);
                        }
                    }
                    read
                }
                Framing::Chunked => conn.fill_without_waiting(),
                Framing::None => return Ok(true),
            };
            match read {
                Ok(0) => return Err(gone("client closed in the middle of a request body")),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(ProxyError::ClientGone(err)),
            }
        }
    }

    /// Takes body bytes out of the connection buffer; true once the body is complete.
    fn take_buffered(
        &mut self,
        conn: &mut ClientConn,
        scratch: &mut [u8],
    ) -> Result<bool, ProxyError> {
        match self.framing {
            Framing::Length(_) => {
                let n = conn
                    .buffered()
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.keep(&conn.buffered()[..n])?;
                conn.consume(n);
                self.left -= n as u64;
                Ok(self.left == 0)
            }
            Framing::Chunked => {
                let (used, n) = self.dechunker.decode(conn.buffered(), scratch)?;
                conn.consume(used);
                self.keep(&scratch[..n])?;
                Ok(self.dechunker.is_done())
            }
            Framing::None => Ok(true),
        }
    }

    /// Adds decoded body bytes, within `--max-body`.
    fn keep(&mut self, bytes: &[u8]) -> Result<(), ProxyError> {
        if self
            .max_body
            .is_some_and(|max| self.body.len() + bytes.len() as u64 > max)
        {
            return Err(ProxyError::BodyTooLarge);
        }
        self.body
            .push(bytes)
            .map_err(|err| ProxyError::Buffering(err.to_string()))
    }

    fn continue_once(&mut self, conn: &mut ClientConn) -> Result<(), ProxyError> {
        if self.send_continue {
            self.send_continue = false;
            // 25 bytes on a socket that has sent nothing else: the kernel takes them.
            match conn.send_without_waiting(b"HTTP/1.1 100 Continue\r\n\r\n") {
                Ok(true) => {}
                Ok(false) => return Err(gone("client does not take 100 Continue")),
                Err(err) => return Err(ProxyError::ClientGone(err)),
            }
        }
        Ok(())
    }
}
