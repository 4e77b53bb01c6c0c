//! A response to the client: status line, headers and body framing, written through
//! one reusable buffer so that a small answer leaves in a single write.
//!
//! `proxy.rs` relays a backend's answer with `write_head` and a `BodyWriter`;
//! `connection.rs` sends refusals with `write_error`. Header policy (which fields to
//! drop) is `headers.rs`'s job; this file only adds the framing it chooses.

use super::request::Version;
use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use ureq::http::{HeaderMap, StatusCode};

/// Buffered body bytes are sent once the buffer holds this much.
const FLUSH_AT: usize = 16 * 1024;
/// Room kept for a buffered chunk's size line: 4 hex digits (a buffered chunk is
/// smaller than 0x10000 bytes) and CRLF.
const CHUNK_HEADER: usize = 6;

/// What the response body will be, as far as framing goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ResponseBody {
    /// No body: HEAD, 1xx, 204, 304.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Not known in advance: chunked for HTTP/1.1 clients, close-delimited for HTTP/1.0.
    Unknown,
}

/// Writes the status line and `headers` into `out` (cleared first) and adds framing:
/// - `None`: nothing for 1xx and 204; otherwise (HEAD, 304) `head_len`, the backend's
///   length, becomes Content-Length when given.
/// - `Length(n)`: `Content-Length: n`.
/// - `Unknown`: `Transfer-Encoding: chunked` for HTTP/1.1; for HTTP/1.0 no framing and
///   the connection closes after the body (keep-alive is forced off).
/// - `Connection: close` when not keeping alive; `Connection: keep-alive` for an
///   HTTP/1.0 client that keeps alive.
///
/// `headers` must already be filtered: no hop-by-hop fields, no Content-Length or
/// Transfer-Encoding. Nothing is sent yet: the returned writer sends the head with the
/// first buffer-full of body, or at `flush` / `finish`.
#[allow(clippy::too_many_arguments)] // the contract's shape; each is one plain value
pub fn write_head<'a>(
    stream: &'a mut TcpStream,
    out: &'a mut Vec<u8>,
    version: Version,
    status: u16,
    headers: &HeaderMap,
    body: ResponseBody,
    head_len: Option<u64>,
    keep_alive: bool,
) -> BodyWriter<'a> {
    out.clear();
    status_line(out, status);
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let (mode, keep_alive) = match body {
        ResponseBody::None => {
            if let (Some(len), false) = (head_len, status < 200 || status == 204) {
                content_length(out, len);
            }
            (Mode::Empty, keep_alive)
        }
        ResponseBody::Length(len) => {
            content_length(out, len);
            (Mode::Length { left: len }, keep_alive)
        }
        ResponseBody::Unknown if version == Version::Http11 => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            (Mode::Chunked { open: None }, keep_alive)
        }
        // An HTTP/1.0 client learns where the body ends from the close.
        ResponseBody::Unknown => (Mode::UntilClose, false),
    };
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    BodyWriter { stream, out, mode, keep_alive }
}

/// A short plain-text answer, `text` plus a newline, sent in one write.
/// `extra` adds header lines such as `("Retry-After", "1")`.
pub fn write_error(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    status: u16,
    text: &str,
    extra: &[(&str, &str)],
    keep_alive: bool,
) -> io::Result<()> {
    out.clear();
    status_line(out, status);
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    content_length(out, text.len() as u64 + 1);
    for (name, value) in extra {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    let result = stream.write_all(out);
    out.clear();
    result
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// No body may be written.
    Empty,
    /// This many body bytes are still owed.
    Length { left: u64 },
    /// `open`: where the size line of the chunk being buffered starts in `out`.
    Chunked { open: Option<usize> },
    /// The body ends when the connection closes.
    UntilClose,
}

/// Writes a response body (after the head already in `out`). Bytes are buffered and
/// sent when the buffer passes 16 KiB, on `flush`, or on `finish`; with chunked
/// framing each send carries one chunk. Writing past the announced Content-Length,
/// or any body where none is allowed, is an error.
///
/// Dropping the writer without `finish` sends nothing more: that is how a broken
/// upstream body is passed on (close the socket, never invent the end of the body).
#[derive(Debug)]
pub struct BodyWriter<'a> {
    stream: &'a mut TcpStream,
    out: &'a mut Vec<u8>,
    mode: Mode,
    keep_alive: bool,
}

impl BodyWriter<'_> {
    /// Ends the body (the terminating chunk, or a check that the announced length was
    /// written) and sends everything. Call it only when the upstream body ended
    /// cleanly.
    pub fn finish(mut self) -> io::Result<()> {
        match self.mode {
            Mode::Length { left } if left > 0 => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("response body {left} bytes short of its content-length"),
                ));
            }
            Mode::Chunked { .. } => {
                self.close_chunk();
                self.out.extend_from_slice(b"0\r\n\r\n");
            }
            _ => {}
        }
        self.send()
    }

    /// False when the connection must close after this response (it was asked to, or
    /// the body is close-delimited).
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Writes the size line of the chunk being buffered into the room kept for it.
    /// A size with fewer than 4 hex digits leaves a gap, closed by moving the (then
    /// short) data; an empty chunk is removed, as a 0-size chunk would end the body.
    fn close_chunk(&mut self) {
        let Mode::Chunked { open: Some(at) } = self.mode else { return };
        self.mode = Mode::Chunked { open: None };
        let data = at + CHUNK_HEADER;
        let len = self.out.len() - data;
        if len == 0 {
            self.out.truncate(at);
            return;
        }
        let mut line = [0u8; 24];
        let line = size_line(&mut line, len as u64);
        let start = data - line.len();
        self.out[start..data].copy_from_slice(line);
        if start > at {
            self.out.copy_within(start.., at);
            self.out.truncate(self.out.len() - (start - at));
        }
        self.out.extend_from_slice(b"\r\n");
    }

    /// Sends the buffer.
    fn send(&mut self) -> io::Result<()> {
        let result = self.stream.write_all(self.out);
        self.out.clear();
        result
    }

    /// Sends the buffer, then `body`, in one vectored write when the kernel takes both.
    fn send_with(&mut self, body: &[u8]) -> io::Result<()> {
        let (mut head, mut body) = (&self.out[..], body);
        while !head.is_empty() {
            match self.stream.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) if n < head.len() => head = &head[n..],
                Ok(n) => {
                    body = &body[n - head.len()..];
                    head = &[];
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        self.out.clear();
        self.stream.write_all(body)
    }
}

impl Write for BodyWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.mode {
            Mode::Empty => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "this response has no body"));
            }
            Mode::Length { left } => {
                if buf.len() as u64 > *left {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "response body longer than its content-length",
                    ));
                }
                *left -= buf.len() as u64;
            }
            Mode::Chunked { open } if buf.len() < FLUSH_AT && open.is_none() => {
                *open = Some(self.out.len());
                self.out.extend_from_slice(&[0; CHUNK_HEADER]);
            }
            Mode::Chunked { .. } | Mode::UntilClose => {}
        }
        // A large write goes out at once, without a copy into the buffer.
        if buf.len() >= FLUSH_AT {
            if let Mode::Chunked { .. } = self.mode {
                self.close_chunk();
                let mut line = [0u8; 24];
                let line = size_line(&mut line, buf.len() as u64);
                self.out.extend_from_slice(line);
                self.send_with(buf)?;
                // The CRLF after this chunk's data leaves with the next send.
                self.out.extend_from_slice(b"\r\n");
            } else {
                self.send_with(buf)?;
            }
            return Ok(buf.len());
        }
        self.out.extend_from_slice(buf);
        if self.out.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(buf.len())
    }

    /// Sends everything buffered, as one chunk when chunked.
    fn flush(&mut self) -> io::Result<()> {
        self.close_chunk();
        if !self.out.is_empty() {
            self.send()?;
        }
        self.stream.flush()
    }
}

fn status_line(out: &mut Vec<u8>, status: u16) {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Unknown");
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn content_length(out: &mut Vec<u8>, len: u64) {
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, len);
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `len` in hex followed by CRLF, written at the end of `buf`.
fn size_line(buf: &mut [u8; 24], mut len: u64) -> &[u8] {
    let mut i = buf.len() - 2;
    buf[i..].copy_from_slice(b"\r\n");
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(len & 0xf) as usize];
        len >>= 4;
        if len == 0 {
            break;
        }
    }
    &buf[i..]
}
