//! A request body reader: the bytes after one request head, delimited by
//! `Content-Length` or decoded from chunked framing, strictly.
//!
//! `ClientConn::body` (`conn.rs`) makes one; `proxy.rs` hands it to the upstream client
//! as the body to forward. It never reports a short body as complete: an upstream
//! client that trusts Content-Length would otherwise wait, or spin, forever.

use super::conn::{ClientConn, gone, is_timeout};
use super::request::Framing;
use crate::error::ProxyError;
use std::io::{self, Read, Write};

const BAD_CHUNK: ProxyError = ProxyError::BadRequest("bad chunked body");
/// Longest chunk-size line, extensions and CRLF included.
const MAX_SIZE_LINE: usize = 4096;
/// Most trailer bytes accepted (and dropped) after the last chunk.
const MAX_TRAILERS: usize = 8192;
/// Chunk data at least this long is read straight into the caller's buffer; shorter
/// chunks go through the connection buffer so that one read also fetches the framing.
const DIRECT_READ: u64 = 2048;

/// Reads one request body. Every failure is returned as an `io::Error` and remembered:
/// `failure()` then tells the `ProxyError` (BadRequest for framing, BodyTooLarge,
/// ClientTimeout, ClientGone for end of stream or reset). Never returns `Ok(0)` before
/// the body is complete.
pub struct BodyReader<'a> {
    conn: &'a mut ClientConn,
    framing: Framing,
    /// Body bytes not yet read (Framing::Length).
    left: u64,
    dechunker: Dechunker,
    /// "100 Continue" is still owed before the first read from the socket.
    send_continue: bool,
    max_body: Option<u64>,
    /// Body bytes returned so far.
    total: u64,
    finished: bool,
    failure: Option<ProxyError>,
    /// Set on the first failure: every later read fails the same way.
    broken: Option<io::ErrorKind>,
}

impl<'a> BodyReader<'a> {
    pub(super) fn new(
        conn: &'a mut ClientConn,
        framing: Framing,
        expect_continue: bool,
        max_body: Option<u64>,
    ) -> BodyReader<'a> {
        let finished = !framing.has_body();
        if finished {
            conn.body_done();
        }
        BodyReader {
            conn,
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            dechunker: Dechunker::new(),
            send_continue: expect_continue && !finished,
            max_body,
            total: 0,
            finished,
            failure: None,
            broken: None,
        }
    }

    /// Takes the remembered failure, if a read failed.
    pub fn failure(&mut self) -> Option<ProxyError> {
        self.failure.take()
    }

    /// The whole body, chunked trailers included, has been consumed.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn read_length(&mut self, out: &mut [u8]) -> Result<usize, ProxyError> {
        if self.max_body.is_some_and(|max| self.left > max) {
            return Err(ProxyError::BodyTooLarge);
        }
        let want = out
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let buffered = self.conn.buffered();
        let n = if buffered.is_empty() {
            self.continue_once()?;
            // Limited to the body, so the next request's bytes stay in the socket.
            match self.conn.read_direct(&mut out[..want]) {
                Ok(0) => return Err(gone("client closed in the middle of a request body")),
                Ok(n) => n,
                Err(err) => return Err(socket_error(err)),
            }
        } else {
            let n = want.min(buffered.len());
            out[..n].copy_from_slice(&buffered[..n]);
            self.conn.consume(n);
            n
        };
        self.left -= n as u64;
        self.total += n as u64;
        if self.left == 0 {
            self.end();
        }
        Ok(n)
    }

    fn read_chunked(&mut self, out: &mut [u8]) -> Result<usize, ProxyError> {
        loop {
            if !self.conn.buffered().is_empty() {
                let (used, n) = self.dechunker.decode(self.conn.buffered(), out)?;
                self.conn.consume(used);
                if n > 0 {
                    self.count(n)?;
                }
                if self.dechunker.is_done() {
                    // The last data may have come with the end: never wait for more.
                    self.end();
                    return Ok(n);
                }
                if n > 0 {
                    return Ok(n);
                }
                // Every buffered byte was framing: read more.
            }
            self.continue_once()?;
            let data_left = self.dechunker.data_left();
            if data_left >= DIRECT_READ {
                let want = out
                    .len()
                    .min(usize::try_from(data_left).unwrap_or(usize::MAX));
                match self.conn.read_direct(&mut out[..want]) {
                    Ok(0) => return Err(gone("client closed in the middle of a request body")),
                    Ok(n) => {
                        self.dechunker.skip_data(n as u64);
                        return self.count(n);
                    }
                    Err(err) => return Err(socket_error(err)),
                }
            }
            match self.conn.fill() {
                Ok(0) => return Err(gone("client closed in the middle of a request body")),
                Ok(_) => {}
                Err(err) => return Err(socket_error(err)),
            }
        }
    }

    /// Counts `n` decoded bytes against `max_body`.
    fn count(&mut self, n: usize) -> Result<usize, ProxyError> {
        self.total += n as u64;
        if self.max_body.is_some_and(|max| self.total > max) {
            return Err(ProxyError::BodyTooLarge);
        }
        Ok(n)
    }

    fn continue_once(&mut self) -> Result<(), ProxyError> {
        if self.send_continue {
            self.send_continue = false;
            let stream = self.conn.stream_mut();
            stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(ProxyError::ClientGone)?;
        }
        Ok(())
    }

    fn end(&mut self) {
        self.finished = true;
        self.conn.body_done();
    }

    /// Remembers `err` and returns its io::Error twin.
    fn fail(&mut self, err: ProxyError) -> io::Error {
        let kind = match &err {
            ProxyError::ClientTimeout => io::ErrorKind::TimedOut,
            ProxyError::ClientGone(io) => io.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        let io_err = io::Error::new(kind, err.to_string());
        self.broken = Some(kind);
        self.failure = Some(err);
        io_err
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(kind) = self.broken {
            return Err(io::Error::new(kind, "request body already failed"));
        }
        if self.finished || out.is_empty() {
            return Ok(0);
        }
        let result = match self.framing {
            Framing::Length(_) => self.read_length(out),
            Framing::Chunked => self.read_chunked(out),
            Framing::None => Ok(0),
        };
        result.map_err(|err| self.fail(err))
    }
}

fn socket_error(err: io::Error) -> ProxyError {
    if is_timeout(&err) {
        ProxyError::ClientTimeout
    } else {
        ProxyError::ClientGone(err)
    }
}

/// Where the chunked decoder stands (RFC 9112 §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size: the value so far and how many digits.
    Size {
        value: u64,
        digits: u8,
    },
    /// Whitespace after the size, before a `;`.
    SizeSpace {
        value: u64,
    },
    /// Chunk extensions, up to the CR; their content is not interpreted.
    Ext {
        value: u64,
    },
    /// The LF ending a size line.
    SizeLf {
        value: u64,
    },
    /// Chunk data, this many bytes left.
    Data(u64),
    /// The CR, then the LF, after chunk data.
    DataCr,
    DataLf,
    /// Start of a trailer line, or of the final empty line.
    LineStart,
    /// Inside a trailer field line, and its LF.
    Trailer,
    TrailerLf,
    /// The LF of the final empty line.
    LastLf,
    Done,
}

/// A strict, allocation-free decoder of chunked framing. It is fed whatever bytes
/// arrived and copies chunk data out; trailers are checked for shape and dropped.
#[derive(Debug)]
pub(crate) struct Dechunker {
    state: State,
    /// Bytes of the current size line, or of all trailers.
    line: usize,
}

impl Dechunker {
    pub(crate) fn new() -> Dechunker {
        Dechunker {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line: 0,
        }
    }

    /// The last chunk and the trailers have been consumed.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes left in the current chunk (0 when not inside data).
    pub(crate) fn data_left(&self) -> u64 {
        if let State::Data(left) = self.state {
            left
        } else {
            0
        }
    }

    /// Records `n <= data_left()` data bytes the caller took from the wire itself.
    pub(crate) fn skip_data(&mut self, n: u64) {
        let left = self.data_left();
        debug_assert!(n <= left);
        self.state = if n >= left {
            State::DataCr
        } else {
            State::Data(left - n)
        };
    }

    /// Decodes from `input`, copying chunk data into `out`. Returns (bytes of `input`
    /// used, bytes written to `out`); stops when `input` is used up, `out` is full, or
    /// the body is done (the rest of `input` belongs to the next request).
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, usize), ProxyError> {
        let (mut used, mut written) = (0, 0);
        while used < input.len() {
            if let State::Data(left) = self.state {
                let n = (input.len() - used)
                    .min(out.len() - written)
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                if n == 0 {
                    break; // `out` is full
                }
                out[written..written + n].copy_from_slice(&input[used..used + n]);
                (used, written) = (used + n, written + n);
                self.skip_data(n as u64);
                continue;
            }
            if self.state == State::Done {
                break;
            }
            self.step(input[used])?;
            used += 1;
        }
        Ok((used, written))
    }

    /// Advances over one framing byte.
    fn step(&mut self, b: u8) -> Result<(), ProxyError> {
        use State::*;
        if matches!(
            self.state,
            Size { .. } | SizeSpace { .. } | Ext { .. } | SizeLf { .. }
        ) {
            self.line += 1;
            if self.line > MAX_SIZE_LINE {
                return Err(BAD_CHUNK);
            }
        } else if matches!(self.state, LineStart | Trailer | TrailerLf | LastLf) {
            self.line += 1;
            if self.line > MAX_TRAILERS {
                return Err(BAD_CHUNK);
            }
        }
        self.state = match (self.state, b) {
            (Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                if digits == 16 {
                    return Err(BAD_CHUNK); // would overflow a u64
                }
                let digit = (b as char).to_digit(16).unwrap_or(0);
                Size {
                    value: value << 4 | u64::from(digit),
                    digits: digits + 1,
                }
            }
            (Size { digits: 0, .. }, _) => return Err(BAD_CHUNK),
            (Size { value, .. } | SizeSpace { value }, b' ' | b'\t') => SizeSpace { value },
            (Size { value, .. } | SizeSpace { value }, b';') => Ext { value },
            (Size { value, .. } | Ext { value }, b'\r') => SizeLf { value },
            (Ext { value }, b'\t' | b' '..=b'~' | 0x80..=0xff) => Ext { value },
            (SizeLf { value: 0 }, b'\n') => {
                self.line = 0;
                LineStart
            }
            (SizeLf { value }, b'\n') => Data(value),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.line = 0;
                Size {
                    value: 0,
                    digits: 0,
                }
            }
            (LineStart, b'\r') => LastLf,
            (LineStart, _) if is_tchar(b) => Trailer,
            (Trailer, b'\r') => TrailerLf,
            (Trailer, b'\t' | b' '..=b'~' | 0x80..=0xff) => Trailer,
            (TrailerLf, b'\n') => LineStart,
            (LastLf, b'\n') => Done,
            _ => return Err(BAD_CHUNK),
        };
        Ok(())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::super::conn::tests::{client_conn, later};
    use super::*;
    use proptest::prelude::*;
    use std::net::{Shutdown, TcpStream};
    use std::thread;

    /// Sends `head_and_body`, reads the head, and returns the client and the connection.
    fn posted(head_and_body: &[u8]) -> (TcpStream, ClientConn, Framing, bool) {
        let (mut client, mut conn) = client_conn(32 * 1024);
        client.write_all(head_and_body).unwrap();
        let head = conn.read_head(later()).unwrap().unwrap();
        (client, conn, head.framing, head.expect_continue)
    }

    fn chunked(body: &str) -> Vec<u8> {
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
            .into_bytes()
    }

    /// Reads to the end; on failure returns the io error kind and the remembered failure.
    fn read_all(body: &mut BodyReader<'_>) -> Result<Vec<u8>, (io::ErrorKind, ProxyError)> {
        let mut out = Vec::new();
        match body.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(err) => Err((err.kind(), body.failure().expect("failure remembered"))),
        }
    }

    /// Decodes `input` in one go with a Dechunker: (decoded, bytes of input used).
    fn dechunk(input: &[u8]) -> Result<(Vec<u8>, usize), ProxyError> {
        let mut d = Dechunker::new();
        let mut out = vec![0; input.len()];
        let (used, n) = d.decode(input, &mut out)?;
        if !d.is_done() {
            return Err(ProxyError::BadRequest("not done"));
        }
        out.truncate(n);
        Ok((out, used))
    }

    fn dechunk_err(input: &str) {
        match dechunk(input.as_bytes()) {
            Err(ProxyError::BadRequest("bad chunked body")) => {}
            other => panic!("{input:?}: {other:?}"),
        }
    }

    #[test]
    fn length_body_reads_the_buffer_then_the_socket() {
        let (mut client, mut conn, framing, _) =
            posted(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello");
        assert_eq!(framing, Framing::Length(11));
        assert_eq!(conn.buffered(), b"hello");
        client.write_all(b" world").unwrap();
        let mut body = conn.body(framing, false, None);
        assert_eq!(read_all(&mut body).unwrap(), b"hello world");
        assert!(body.is_finished());
    }

    #[test]
    fn length_body_stops_at_its_end() {
        let (_client, mut conn, framing, _) =
            posted(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n");
        assert_eq!(
            read_all(&mut conn.body(framing, false, None)).unwrap(),
            b"ok"
        );
        assert_eq!(conn.buffered(), b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn length_body_ending_early_is_client_gone_and_stays_failed() {
        let (client, mut conn, framing, _) =
            posted(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
        client.shutdown(Shutdown::Write).unwrap();
        let mut body = conn.body(framing, false, None);
        let (kind, failure) = read_all(&mut body).unwrap_err();
        assert_eq!(kind, io::ErrorKind::UnexpectedEof);
        assert!(matches!(failure, ProxyError::ClientGone(_)));
        assert!(
            body.read(&mut [0; 8]).is_err(),
            "never Ok(0) after a failure"
        );
        assert!(!body.is_finished());
    }

    #[test]
    fn length_over_max_body_fails_on_the_first_read_without_100_continue() {
        let (mut client, mut conn, framing, expect) = posted(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n",
        );
        assert!(expect);
        let mut body = conn.body(framing, expect, Some(99));
        let (kind, failure) = read_all(&mut body).unwrap_err();
        assert_eq!(kind, io::ErrorKind::InvalidData);
        assert!(matches!(failure, ProxyError::BodyTooLarge));
        drop(conn);
        let mut seen = Vec::new();
        client.read_to_end(&mut seen).unwrap();
        assert_eq!(seen, b"");
    }

    #[test]
    fn a_body_timeout_is_client_timeout() {
        let (_client, mut conn, framing, _) =
            posted(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n");
        conn.stream()
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        let (kind, failure) = read_all(&mut conn.body(framing, false, None)).unwrap_err();
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(matches!(failure, ProxyError::ClientTimeout));
    }

    #[test]
    fn continue_is_sent_once_before_the_first_socket_read() {
        let (mut client, mut conn, framing, expect) = posted(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
        );
        let sender = thread::spawn(move || {
            let mut interim = [0; 25];
            client.read_exact(&mut interim).unwrap();
            assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
            client.write_all(b"01234").unwrap();
            // Wait for the server's marker: nothing else may come before it.
            let mut rest = [0; 4];
            client.read_exact(&mut rest).unwrap();
            assert_eq!(&rest, b"half");
            client.write_all(b"56789").unwrap();
            let mut tail = Vec::new();
            client.read_to_end(&mut tail).unwrap();
            assert_eq!(tail, b"done");
        });
        let mut marker = conn.stream().try_clone().unwrap();
        let mut body = conn.body(framing, expect, None);
        let mut got = [0; 10];
        let mut n = 0;
        while n < 5 {
            n += body.read(&mut got[n..]).unwrap();
        }
        marker.write_all(b"half").unwrap();
        body.read_exact(&mut got[n..]).unwrap();
        assert_eq!(&got, b"0123456789");
        assert!(body.is_finished());
        marker.write_all(b"done").unwrap();
        drop((conn, marker));
        sender.join().unwrap();
    }

    #[test]
    fn no_continue_when_the_body_is_already_buffered() {
        let (mut client, mut conn, framing, expect) = posted(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi",
        );
        assert_eq!(
            read_all(&mut conn.body(framing, expect, None)).unwrap(),
            b"hi"
        );
        conn.stream_mut().write_all(b"answer").unwrap();
        drop(conn);
        let mut seen = Vec::new();
        client.read_to_end(&mut seen).unwrap();
        assert_eq!(seen, b"answer");
    }

    #[test]
    fn no_continue_for_an_empty_body() {
        let (mut client, mut conn, framing, expect) = posted(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n",
        );
        let mut body = conn.body(framing, expect, None);
        assert!(body.is_finished());
        assert_eq!(read_all(&mut body).unwrap(), b"");
        drop(conn);
        let mut seen = Vec::new();
        client.read_to_end(&mut seen).unwrap();
        assert_eq!(seen, b"");
    }

    #[test]
    fn chunked_body_over_a_socket_with_trailers_then_the_next_request() {
        let (mut client, mut conn, framing, _) = posted(&chunked("5;ext=1\r\nhello\r\n"));
        let big = "x".repeat(20_000);
        let rest = format!(
            "{:x}\r\n{big}\r\n0\r\nX-Trailer: t\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
            big.len()
        );
        client.write_all(rest.as_bytes()).unwrap();
        let mut body = conn.body(framing, false, Some(20_005));
        assert_eq!(
            read_all(&mut body).unwrap(),
            format!("hello{big}").as_bytes()
        );
        assert!(body.is_finished());
        assert_eq!(conn.read_head(later()).unwrap().unwrap().target, "/next");
    }

    #[test]
    fn chunked_body_ending_with_the_stream_quiet_is_complete() {
        // The client sends nothing more and keeps the socket open: the read that
        // returns the last data must not be followed by a wait.
        let (_client, mut conn, framing, _) = posted(&chunked("3\r\nabc\r\n0\r\n\r\n"));
        let mut body = conn.body(framing, false, None);
        let mut out = [0; 16];
        assert_eq!(body.read(&mut out).unwrap(), 3);
        assert!(body.is_finished());
        assert_eq!(body.read(&mut out).unwrap(), 0);
        assert!(!conn.has_buffered());
    }

    #[test]
    fn chunked_body_failures() {
        type Check = fn(&ProxyError) -> bool;
        let cases: [(&str, Check); 4] = [
            ("zz\r\n", |e| {
                matches!(e, ProxyError::BadRequest("bad chunked body"))
            }),
            ("5\r\nhelloX\r\n", |e| {
                matches!(e, ProxyError::BadRequest("bad chunked body"))
            }),
            ("5\r\nhel", |e| matches!(e, ProxyError::ClientGone(_))),
            ("8\r\n12345678\r\n0\r\n\r\n", |e| {
                matches!(e, ProxyError::BodyTooLarge)
            }),
        ];
        for (body, expected) in cases {
            let (client, mut conn, framing, _) = posted(&chunked(body));
            client.shutdown(Shutdown::Write).unwrap();
            let (_, failure) = read_all(&mut conn.body(framing, false, Some(7))).unwrap_err();
            assert!(expected(&failure), "{body:?}: {failure:?}");
        }
    }

    #[test]
    fn dechunker_accepts_what_the_rfc_allows() {
        assert_eq!(dechunk(b"0\r\n\r\n").unwrap(), (vec![], 5));
        assert_eq!(dechunk(b"3\r\nabc\r\n0\r\n\r\n").unwrap().0, b"abc");
        assert_eq!(
            dechunk(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap().0,
            b"0123456789"
        );
        assert_eq!(
            dechunk(b"000000000000000a\r\n0123456789\r\n0\r\n\r\n")
                .unwrap()
                .0,
            b"0123456789"
        );
        assert_eq!(
            dechunk(b"3;a=b;c=\"d e\"\r\nabc\r\n0;x\r\n\r\n").unwrap().0,
            b"abc"
        );
        assert_eq!(dechunk(b"3 ;a\r\nabc\r\n0\r\n\r\n").unwrap().0, b"abc");
        let (data, used) = dechunk(b"1\r\na\r\n0\r\nA: 1\r\nB: 2\r\n\r\nNEXT").unwrap();
        assert_eq!(
            (data.as_slice(), used),
            (&b"a"[..], 23),
            "trailers dropped, next request kept"
        );
    }

    #[test]
    fn dechunker_refuses_what_the_rfc_does_not() {
        for bad in [
            "g\r\n",                   // not hex
            "\r\n",                    // no size
            "+5\r\nhello\r\n",         // sign
            " 5\r\nhello\r\n",         // space before
            "0x5\r\nhello\r\n",        // prefix
            "5 \r\nhello\r\n",         // whitespace not followed by an extension
            "5\nhello\r\n",            // bare LF in the size line
            "5\r\rhello\r\n",          // CR without LF
            "5\r\nhello\n",            // no CR after data
            "5\r\nhelloX\r\n",         // data longer than announced
            "5\r\nhello\r\r",          // no LF after data
            "5;a\x01\r\nhello\r\n",    // control byte in an extension
            "00000000000000001\r\n",   // 17 digits
            "0\r\n\n",                 // bare LF ending the trailers
            "0\r\n: x\r\n\r\n",        // trailer without a name
            "0\r\n x\r\n\r\n",         // obs-fold in the trailers
            "0\r\nA: 1\nB: 2\r\n\r\n", // bare LF in a trailer
            "0\r\n\rX",                // CR without LF at the end
        ] {
            dechunk_err(bad);
        }
        dechunk_err(&format!(
            "5;{}\r\nhello\r\n0\r\n\r\n",
            "e".repeat(MAX_SIZE_LINE)
        ));
        dechunk_err(&format!("0\r\nX: {}\r\n\r\n", "v".repeat(MAX_TRAILERS)));
        // Just inside both bounds.
        let ext = "e".repeat(MAX_SIZE_LINE - "5;\r\n".len());
        assert_eq!(
            dechunk(format!("5;{ext}\r\nhello\r\n0\r\n\r\n").as_bytes())
                .unwrap()
                .0,
            b"hello"
        );
        let value = "v".repeat(MAX_TRAILERS - "0\r\nX: \r\n\r\n".len() + "0\r\n".len());
        assert!(dechunk(format!("0\r\nX: {value}\r\n\r\n").as_bytes()).is_ok());
    }

    #[test]
    fn dechunker_stops_when_out_is_full() {
        let mut d = Dechunker::new();
        let mut out = [0; 2];
        assert_eq!(d.decode(b"5\r\nhello\r\n", &mut out).unwrap(), (5, 2));
        assert_eq!(d.data_left(), 3);
        assert_eq!(d.decode(b"llo\r\n0\r\n\r\n", &mut out).unwrap(), (2, 2));
        assert_eq!(d.decode(b"o\r\n0\r\n\r\n", &mut out).unwrap(), (8, 1));
        assert!(d.is_done());
    }

    /// Encodes `body` as chunks of the given sizes, with optional extensions and trailers.
    fn encode(body: &[u8], sizes: &[usize], ext: &str, trailers: &[(String, String)]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut rest = body;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).clamp(1, rest.len());
            wire.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
            wire.extend_from_slice(&rest[..n]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        wire.extend_from_slice(format!("0{ext}\r\n").as_bytes());
        for (name, value) in trailers {
            wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    /// A body, its chunk sizes, the extension put on every size line, and trailers.
    type ChunkedCase = (Vec<u8>, Vec<usize>, String, Vec<(String, String)>);

    fn chunk_parts() -> impl Strategy<Value = ChunkedCase> {
        (
            proptest::collection::vec(any::<u8>(), 0..3000),
            proptest::collection::vec(1usize..600, 1..8),
            prop_oneof![
                Just(String::new()),
                "(;[a-z]{1,5}(=[a-z0-9]{1,5})?){1,3}",
                Just(" ; q=\"a b\"".to_string())
            ],
            proptest::collection::vec(("[A-Za-z-]{1,10}", "[ -~]{0,20}"), 0..3),
        )
    }

    proptest! {
        #[test]
        fn dechunker_never_panics(
            input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'0'), Just(b';'), any::<u8>()], 0..512),
            out_len in 0usize..64,
            splits in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let mut d = Dechunker::new();
            let mut out = vec![0; out_len];
            let mut at = 0;
            for step in splits.iter().cycle().take(1000) {
                let end = (at + step).min(input.len());
                match d.decode(&input[at..end], &mut out) {
                    Ok((used, n)) => {
                        prop_assert!(used <= end - at && n <= out.len());
                        at += used;
                    }
                    Err(_) => break,
                }
                if at == input.len() || d.is_done() {
                    break;
                }
            }
        }

        #[test]
        fn dechunker_round_trips(
            (body, sizes, ext, trailers) in chunk_parts(),
            feeds in proptest::collection::vec(1usize..700, 1..8),
            out_len in 1usize..700,
        ) {
            let mut wire = encode(&body, &sizes, &ext, &trailers);
            wire.extend_from_slice(b"NEXT");
            let mut d = Dechunker::new();
            let mut decoded = Vec::new();
            let mut out = vec![0; out_len];
            let mut at = 0;
            let mut feeds = feeds.iter().cycle();
            while !d.is_done() {
                let end = (at + feeds.next().unwrap()).min(wire.len());
                let (used, n) = d.decode(&wire[at..end], &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
                decoded.extend_from_slice(&out[..n]);
                at += used;
            }
            prop_assert_eq!(&decoded, &body);
            prop_assert_eq!(&wire[at..], b"NEXT");
        }
    }

    proptest! {
        // Sockets are slower than pure decoding: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn body_reader_round_trips_chunked_bodies((body, sizes, ext, trailers) in chunk_parts()) {
            let mut wire = chunked("");
            wire.extend_from_slice(&encode(&body, &sizes, &ext, &trailers));
            wire.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
            let (mut client, mut conn) = client_conn(32 * 1024);
            // Written in pieces from another thread so that reads see partial framing.
            let writer = thread::spawn(move || {
                for piece in wire.chunks(977) {
                    client.write_all(piece).unwrap();
                }
                client
            });
            let head = conn.read_head(later()).unwrap().unwrap();
            let mut reader = conn.body(head.framing, false, None);
            let decoded = read_all(&mut reader).map_err(|(_, e)| TestCaseError::fail(e.to_string()))?;
            prop_assert!(reader.is_finished());
            prop_assert_eq!(&decoded, &body);
            prop_assert_eq!(conn.read_head(later()).unwrap().unwrap().target, "/next");
            drop(writer.join().unwrap());
        }
    }
}
