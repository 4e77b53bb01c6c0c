//! A response to the client: status line, headers and body framing, written through
//! one reusable buffer so that a small answer leaves in a single write.
//!
//! `relay.rs` (and `admin.rs`) describe an answer as a `ResponseHead`, write it with
//! `write_head` and stream the body through the returned `BodyWriter`, over any
//! `Write`: relay's is an `Outbox` (outbox.rs), which never waits for a slow client;
//! `refuse.rs` sends refusals with `write_error`. Header policy (which fields to
//! drop) is `headers.rs`'s job; this file only adds the framing it chooses.

use super::request::Version;
use http::{HeaderMap, StatusCode};
use std::io::{self, IoSlice, Write};

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

/// The head of one response: what `write_head` needs to frame it.
#[derive(Clone, Copy, Debug)]
pub struct ResponseHead<'h> {
    /// The client's HTTP version, which decides chunked or close-delimited framing.
    pub version: Version,
    pub status: u16,
    /// Already filtered: no hop-by-hop fields, no Content-Length or Transfer-Encoding.
    pub headers: &'h HeaderMap,
    pub body: ResponseBody,
    /// For a bodiless answer to HEAD or a 304: the length the body would have had,
    /// sent as Content-Length when given (RFC 9110 §8.6). Ignored otherwise.
    pub head_length: Option<u64>,
    /// The connection may stay open after this response, as far as the caller knows.
    pub keep_alive: bool,
}

/// Writes the status line and headers of `head` into `out` (cleared first) and adds
/// framing:
/// - `None`: nothing for 1xx and 204; otherwise (HEAD, 304) `head_length` becomes
///   Content-Length when given.
/// - `Length(n)`: `Content-Length: n`.
/// - `Unknown`: `Transfer-Encoding: chunked` for HTTP/1.1; for HTTP/1.0 no framing and
///   the connection closes after the body (keep-alive is forced off).
/// - `Connection: close` when not keeping alive; `Connection: keep-alive` for an
///   HTTP/1.0 client that keeps alive.
///
/// Nothing is sent yet: the returned writer sends the head with the first buffer-full
/// of body, or at `flush` / `finish`.
pub fn write_head<'a, W: Write>(
    stream: &'a mut W,
    out: &'a mut Vec<u8>,
    head: &ResponseHead<'_>,
) -> BodyWriter<'a, W> {
    let ResponseHead {
        version,
        status,
        headers,
        body,
        head_length,
        keep_alive,
    } = *head;
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
            if let (Some(len), false) = (head_length, status < 200 || status == 204) {
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
    BodyWriter {
        stream,
        out,
        mode,
        keep_alive,
    }
}

/// A short plain-text answer, `text` plus a newline, sent in one write.
/// `extra` adds header lines such as `("Retry-After", "1")`.
pub fn write_error(
    stream: &mut impl Write,
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
pub struct BodyWriter<'a, W: Write> {
    stream: &'a mut W,
    out: &'a mut Vec<u8>,
    mode: Mode,
    keep_alive: bool,
}

impl<W: Write> BodyWriter<'_, W> {
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

    /// Sends the body bytes buffered so far (as one chunk when chunked), so that the
    /// client has everything written: a streamed answer goes out as it comes. Unlike
    /// `flush`, it leaves a chunk's closing CRLF alone for the next send, since the
    /// chunk's data is already out.
    pub fn send_buffered(&mut self) -> io::Result<()> {
        match self.mode {
            Mode::Chunked { open: None } => Ok(()),
            _ => self.flush(),
        }
    }

    /// Writes the size line of the chunk being buffered into the room kept for it.
    /// A size with fewer than 4 hex digits leaves a gap, closed by moving the (then
    /// short) data; an empty chunk is removed, as a 0-size chunk would end the body.
    fn close_chunk(&mut self) {
        let Mode::Chunked { open: Some(at) } = self.mode else {
            return;
        };
        self.mode = Mode::Chunked { open: None };
        let data = at + CHUNK_HEADER;
        let len = self.out.len() - data;
        if len == 0 {
            self.out.truncate(at);
            return;
        }
        let mut line = [0u8; 24];
        let line = size_line(&mut line, len as u64);
        debug_assert!(line.len() <= CHUNK_HEADER, "buffered chunk too large");
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
            match self
                .stream
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            {
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

impl<W: Write> Write for BodyWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.mode {
            Mode::Empty => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "this response has no body",
                ));
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

#[cfg(test)]
mod tests {
    use super::super::chunked::Dechunker;
    use super::super::conn::tests::socket_pair;
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;
    use std::io::Read;
    use std::net::TcpStream;
    use std::thread;

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in fields {
            map.append(name, HeaderValue::from_static(value));
        }
        map
    }

    /// Runs `respond` on the server side of a socket pair, closes it, and returns what
    /// the client received.
    fn received(respond: impl FnOnce(&mut TcpStream, &mut Vec<u8>) + Send + 'static) -> String {
        let (mut client, mut server) = socket_pair();
        let server = thread::spawn(move || {
            let mut out = Vec::new();
            respond(&mut server, &mut out);
        });
        let mut seen = Vec::new();
        client.read_to_end(&mut seen).unwrap();
        server.join().unwrap();
        String::from_utf8(seen).unwrap()
    }

    const V11: Version = Version::Http11;
    const V10: Version = Version::Http10;

    /// A `ResponseHead` as the tests spell it, with its fields as `'static` pairs.
    #[derive(Clone, Copy)]
    struct Head {
        version: Version,
        status: u16,
        fields: &'static [(&'static str, &'static str)],
        body: ResponseBody,
        head_length: Option<u64>,
        keep_alive: bool,
    }

    /// A 200 with no fields that keeps alive.
    fn head(version: Version, body: ResponseBody) -> Head {
        Head {
            version,
            status: 200,
            fields: &[],
            body,
            head_length: None,
            keep_alive: true,
        }
    }

    impl Head {
        /// Writes this head and then `writes` as the body, checks what the writer says
        /// about keep-alive, and returns what the client received.
        fn sent(self, writes: &'static [&'static [u8]], expect_keep_alive: bool) -> String {
            received(move |stream, out| {
                let fields = headers(self.fields);
                let head = ResponseHead {
                    version: self.version,
                    status: self.status,
                    headers: &fields,
                    body: self.body,
                    head_length: self.head_length,
                    keep_alive: self.keep_alive,
                };
                let mut w = write_head(stream, out, &head);
                assert_eq!(w.keep_alive(), expect_keep_alive);
                for data in writes {
                    w.write_all(data).unwrap();
                }
                w.finish().unwrap();
            })
        }
    }

    /// An HTTP/1.1 200 that keeps alive, for the tests that drive the writer by hand.
    fn ok(headers: &HeaderMap, body: ResponseBody) -> ResponseHead<'_> {
        ResponseHead {
            version: V11,
            status: 200,
            headers,
            body,
            head_length: None,
            keep_alive: true,
        }
    }

    #[test]
    fn known_length() {
        let got = Head {
            fields: &[("x-a", "1")],
            ..head(V11, ResponseBody::Length(5))
        }
        .sent(&[b"hel", b"lo"], true);
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\nContent-Length: 5\r\n\r\nhello"
        );
        let got = Head {
            status: 404,
            ..head(V10, ResponseBody::Length(0))
        }
        .sent(&[], true);
        assert_eq!(
            got,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
        let got = Head {
            keep_alive: false,
            ..head(V11, ResponseBody::Length(2))
        }
        .sent(&[b"ok"], false);
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        );
    }

    #[test]
    fn unknown_length_is_chunked_for_http_1_1() {
        let got = head(V11, ResponseBody::Unknown).sent(&[b"hello", b" world"], true);
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n"
        );
        let got = head(V11, ResponseBody::Unknown).sent(&[], true);
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        );
    }

    #[test]
    fn unknown_length_is_close_delimited_for_http_1_0() {
        let got = head(V10, ResponseBody::Unknown).sent(&[b"hello"], false);
        assert_eq!(got, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello");
    }

    #[test]
    fn bodiless_answers() {
        let bodiless = |status, head_length| Head {
            status,
            head_length,
            ..head(V11, ResponseBody::None)
        };
        let got = bodiless(204, Some(5)).sent(&[], true);
        assert_eq!(got, "HTTP/1.1 204 No Content\r\n\r\n");
        let got = Head {
            fields: &[("link", "</a>")],
            ..bodiless(103, Some(5))
        }
        .sent(&[], true);
        assert_eq!(got, "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n");
        let got = bodiless(200, Some(42)).sent(&[], true);
        assert_eq!(got, "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n");
        let got = bodiless(304, Some(7)).sent(&[], true);
        assert_eq!(
            got,
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"
        );
        let got = bodiless(200, None).sent(&[], true);
        assert_eq!(got, "HTTP/1.1 200 OK\r\n\r\n");
    }

    #[test]
    fn unknown_status_codes_say_unknown() {
        let got = Head {
            status: 599,
            ..head(V11, ResponseBody::Length(0))
        }
        .sent(&[], true);
        assert!(got.starts_with("HTTP/1.1 599 Unknown\r\n"), "{got}");
    }

    #[test]
    fn the_writer_refuses_bodies_that_do_not_fit() {
        let got = received(|stream, out| {
            let mut w = write_head(stream, out, &ok(&HeaderMap::new(), ResponseBody::Length(3)));
            assert_eq!(
                w.write(b"abcd").unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            w.write_all(b"ab").unwrap();
            assert!(w.write_all(b"cd").is_err());
            assert!(w.finish().is_err(), "2 of 3 bytes");
        });
        assert_eq!(got, "", "a short body is never sent");
        received(|stream, out| {
            let mut w = write_head(
                stream,
                out,
                &ResponseHead {
                    head_length: Some(3),
                    ..ok(&HeaderMap::new(), ResponseBody::None)
                },
            );
            assert!(w.write_all(b"x").is_err());
            assert!(w.write_all(b"").is_ok());
        });
    }

    #[test]
    fn a_small_answer_is_sent_whole_at_finish() {
        let (mut client, mut server) = socket_pair();
        client.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut w = write_head(
            &mut server,
            &mut out,
            &ok(&HeaderMap::new(), ResponseBody::Length(5)),
        );
        w.write_all(b"hello").unwrap();
        assert_eq!(
            client.read(&mut [0; 64]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        w.finish().unwrap();
        drop(server);
        client.set_nonblocking(false).unwrap();
        let mut seen = String::new();
        client.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    }

    #[test]
    fn dropping_a_chunked_writer_never_ends_the_body() {
        let got = received(|stream, out| {
            let mut w = write_head(stream, out, &ok(&HeaderMap::new(), ResponseBody::Unknown));
            w.write_all(b"part").unwrap();
            w.flush().unwrap();
            w.flush().unwrap(); // nothing new: no empty chunk, which would end the body
        });
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n"
        );
    }

    #[test]
    fn large_writes_make_exact_chunks() {
        let got = received(|stream, out| {
            let mut w = write_head(stream, out, &ok(&HeaderMap::new(), ResponseBody::Unknown));
            w.write_all(b"ab").unwrap();
            w.write_all(&[b'x'; 70_000]).unwrap();
            w.write_all(b"cd").unwrap();
            w.finish().unwrap();
        });
        let expected = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n11170\r\n{}\r\n2\r\ncd\r\n0\r\n\r\n",
            "x".repeat(70_000)
        );
        assert_eq!(got, expected);
    }

    #[test]
    fn send_buffered_sends_what_was_written_but_not_a_lone_chunk_end() {
        let (mut client, mut server) = socket_pair();
        let mut out = Vec::new();
        let mut w = write_head(
            &mut server,
            &mut out,
            &ok(&HeaderMap::new(), ResponseBody::Unknown),
        );
        let expect = |client: &mut TcpStream, what: &[u8]| {
            let mut seen = vec![0; what.len()];
            client.read_exact(&mut seen).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&seen),
                String::from_utf8_lossy(what)
            );
        };
        w.write_all(b"part").unwrap();
        w.send_buffered().unwrap();
        expect(
            &mut client,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n",
        );
        // A large write goes out at once; the CRLF after it waits for the next send.
        w.write_all(&[b'x'; 20_000]).unwrap();
        w.send_buffered().unwrap();
        let mut big = b"4e20\r\n".to_vec();
        big.extend_from_slice(&[b'x'; 20_000]);
        expect(&mut client, &big);
        client.set_nonblocking(true).unwrap();
        assert_eq!(
            client.read(&mut [0; 8]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        client.set_nonblocking(false).unwrap();
        w.finish().unwrap();
        drop(server);
        let mut rest = String::new();
        client.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "\r\n0\r\n\r\n");
    }

    #[test]
    fn write_error_is_one_plain_text_answer() {
        let got = received(|stream, out| {
            write_error(
                stream,
                out,
                503,
                "server busy, retry later",
                &[("Retry-After", "1")],
                false,
            )
            .unwrap();
        });
        assert_eq!(
            got,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 25\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver busy, retry later\n"
        );
        let got = received(|stream, out| write_error(stream, out, 400, "bad", &[], true).unwrap());
        assert_eq!(
            got,
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 4\r\n\r\nbad\n"
        );
    }

    #[test]
    fn number_formatting() {
        for n in [0, 1, 9, 10, 255, 4096, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            let mut buf = [0; 24];
            assert_eq!(size_line(&mut buf, n), format!("{n:x}\r\n").as_bytes());
        }
    }

    /// One step of a body being relayed.
    #[derive(Clone, Debug)]
    enum Step {
        Write(Vec<u8>),
        Flush,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let step = prop_oneof![
            6 => proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Step::Write),
            1 => (1usize..40_000).prop_map(|n| Step::Write(vec![b'L'; n])),
            2 => Just(Step::Flush),
        ];
        proptest::collection::vec(step, 0..20)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn chunked_output_decodes_to_what_was_written(steps in steps()) {
            let expected: Vec<u8> = steps
                .iter()
                .flat_map(|s| if let Step::Write(data) = s { data.clone() } else { Vec::new() })
                .collect();
            let (mut client, mut server) = socket_pair();
            let writer = thread::spawn(move || {
                let mut out = Vec::new();
                let mut w = write_head(&mut server, &mut out, &ok(&HeaderMap::new(), ResponseBody::Unknown));
                for step in steps {
                    match step {
                        Step::Write(data) => w.write_all(&data).unwrap(),
                        Step::Flush => w.flush().unwrap(),
                    }
                }
                w.finish().unwrap();
            });
            let mut wire = Vec::new();
            client.read_to_end(&mut wire).unwrap();
            writer.join().unwrap();
            let head_end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let mut d = Dechunker::new();
            let mut decoded = vec![0; wire.len()];
            let (used, n) = d.decode(&wire[head_end..], &mut decoded).unwrap();
            prop_assert!(d.is_done());
            prop_assert_eq!(head_end + used, wire.len());
            prop_assert_eq!(&decoded[..n], &expected[..]);
        }
    }
}
