//! A request body reader: the bytes after one request head, delimited by
//! `Content-Length` or decoded from chunked framing, strictly, read from the client's
//! socket through its connection buffer.
//!
//! `ClientConn::body` (`conn.rs`) makes one; the chunked framing is taken apart by
//! `chunked.rs`, which never touches the socket; `proxy.rs` hands the reader to the
//! upstream client as the body to forward. It never reports a short body as complete:
//! an upstream client that trusts Content-Length would otherwise wait, or spin,
//! forever.

use super::chunked::Dechunker;
use super::conn::{ClientConn, gone, is_timeout};
use super::request::Framing;
use crate::error::ProxyError;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Chunk data at least this long is read straight into the caller's buffer; shorter
/// chunks go through the connection buffer so that one read also fetches the framing.
const DIRECT_READ: u64 = 2048;

/// A body streamed at the client's pace (`--request-buffering off`) holds a worker, so
/// it must keep up a minimum rate once this long has passed: Apache's mod_reqtimeout
/// default (`body=20,MinRate=500`). Below it the request gets 408.
const BODY_RATE_GRACE: Duration = Duration::from_secs(20);
const MIN_BODY_RATE: u64 = 500;

/// Whether `bytes` in `elapsed` is below the minimum body rate.
fn too_slow(bytes: u64, elapsed: Duration) -> bool {
    elapsed > BODY_RATE_GRACE && bytes < MIN_BODY_RATE.saturating_mul(elapsed.as_secs())
}

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
    /// When the first read from the socket began, for the minimum rate.
    since: Option<Instant>,
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
            since: None,
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
            let n = match self.conn.read_direct(&mut out[..want]) {
                Ok(0) => return Err(gone("client closed in the middle of a request body")),
                Ok(n) => n,
                Err(err) => return Err(socket_error(err)),
            };
            self.keep_pace(n)?;
            n
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
                        self.keep_pace(n)?;
                        return self.count(n);
                    }
                    Err(err) => return Err(socket_error(err)),
                }
            }
            match self.conn.fill() {
                Ok(0) => return Err(gone("client closed in the middle of a request body")),
                Ok(n) => self.keep_pace(n)?,
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

    /// After a read of `n` bytes from the socket: fails once the body, from its first
    /// read on, comes slower than the minimum rate. `total` counts decoded bytes, so
    /// `n` covers what this read brought before it is counted.
    fn keep_pace(&mut self, n: usize) -> Result<(), ProxyError> {
        let since = *self.since.get_or_insert_with(Instant::now);
        if too_slow(self.total + n as u64, since.elapsed()) {
            return Err(ProxyError::ClientTimeout);
        }
        Ok(())
    }

    fn continue_once(&mut self) -> Result<(), ProxyError> {
        if self.send_continue {
            self.send_continue = false;
            self.conn
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

#[cfg(test)]
mod tests {
    use super::super::chunked::tests::{chunk_parts, encode};
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
        conn.write_all(b"answer").unwrap();
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

    #[test]
    fn a_streamed_body_must_keep_the_minimum_rate_after_its_grace() {
        let s = Duration::from_secs;
        // Within the grace anything goes; after it, 500 bytes a second on average.
        assert!(!too_slow(0, s(20)));
        assert!(too_slow(10_000, s(21)));
        assert!(!too_slow(10_500, s(21)));
        assert!(!too_slow(1 << 30, s(3600)));
    }
}
