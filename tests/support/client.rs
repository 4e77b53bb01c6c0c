//! The client side: a connection to the balancer and a parser that reads responses
//! exactly as they came off the wire.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::*;

/// One response as the client received it.
#[derive(Clone, Debug)]
pub struct Response {
    pub version: String,
    pub status: u16,
    /// Every header line in order, as received.
    pub headers: Vec<(String, String)>,
    /// The raw head, status line to blank line included.
    pub head: Vec<u8>,
    /// The body after removing the framing (dechunked).
    pub body: Vec<u8>,
    /// False when the connection ended before the framing said the body was complete
    /// (a short Content-Length body, a chunked body without its last chunk).
    pub complete: bool,
}

impl Fields for Response {
    fn fields(&self) -> &[(String, String)] {
        &self.headers
    }
    fn body_bytes(&self) -> &[u8] {
        &self.body
    }
}

impl Response {
    fn is_chunked(&self) -> bool {
        self.headers_named("transfer-encoding")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

/// How a read from the balancer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Orderly close (read returned 0).
    Eof,
    /// Connection reset: closed too, less politely.
    Reset,
    /// Neither data nor a close within [`PATIENCE`].
    TimedOut,
}

impl Ending {
    pub fn is_closed(self) -> bool {
        self != Ending::TimedOut
    }
}

/// Reads HTTP/1.1 responses from any byte source, keeping what it read ahead.
pub struct ResponseReader<R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    /// Set once the source ended; reads then return 0.
    pub ending: Option<Ending>,
}

impl<R: Read> ResponseReader<R> {
    pub fn new(src: R) -> Self {
        ResponseReader {
            src,
            buf: Vec::new(),
            pos: 0,
            ending: None,
        }
    }

    /// The byte source.
    pub fn get_ref(&self) -> &R {
        &self.src
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.src
    }

    /// The byte source and the bytes read from it ahead of what was parsed: a tunnel's
    /// first bytes, when they came in the same read as its response head.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        let pending = self.pending().to_vec();
        (self.src, pending)
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more bytes into the buffer; Ok(0) once the source ended (EOF or reset).
    fn fill(&mut self) -> io::Result<usize> {
        if self.ending.is_some() {
            return Ok(0);
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut tmp = [0u8; 64 * 1024];
        match self.src.read(&mut tmp) {
            Ok(0) => {
                self.ending = Some(Ending::Eof);
                Ok(0)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.fill(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no data and no close from the balancer",
                ))
            }
            Err(_) => {
                // Reset, broken pipe: the connection is gone.
                self.ending = Some(Ending::Reset);
                Ok(0)
            }
        }
    }

    /// Reads one CRLF-terminated line (without the CRLF); None if the source ended first.
    fn line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.pending().windows(2).position(|w| w == b"\r\n") {
                let line = self.pending()[..i].to_vec();
                self.pos += i + 2;
                return Ok(Some(line));
            }
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
    }

    /// Passes up to `n` bytes to `sink`; returns how many there were before the end.
    fn take(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<u64> {
        let mut got = 0;
        while n > 0 {
            if self.pending().is_empty() && self.fill()? == 0 {
                break;
            }
            let k = (self.pending().len() as u64).min(n) as usize;
            sink(&self.pending()[..k]);
            self.pos += k;
            n -= k as u64;
            got += k as u64;
        }
        Ok(got)
    }

    /// Reads one response head; Ok(None) if the source ended before any byte of it.
    pub fn read_head(&mut self) -> io::Result<Option<Response>> {
        loop {
            if self.pending().windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
            if self.fill()? == 0 {
                if self.pending().is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection ended inside a response head: {:?}",
                        String::from_utf8_lossy(self.pending())
                    ),
                ));
            }
        }
        let end = self
            .pending()
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        let head = self.pending()[..end].to_vec();
        self.pos += end;
        let text = String::from_utf8_lossy(&head[..end - 4]).into_owned();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let headers = lines
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_string(), v.trim().to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        Ok(Some(Response {
            version,
            status,
            headers,
            head,
            body: Vec::new(),
            complete: false,
        }))
    }

    /// Reads the body of `resp` (a response to a HEAD request if `head_request`), passing
    /// it to `sink`; returns whether it was complete per its framing.
    pub fn read_body(
        &mut self,
        resp: &Response,
        head_request: bool,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<bool> {
        if head_request || matches!(resp.status, 100..=199 | 204 | 304) {
            return Ok(true);
        }
        if resp.is_chunked() {
            loop {
                let Some(line) = self.line()? else {
                    return Ok(false);
                };
                let line = String::from_utf8_lossy(&line).into_owned();
                let size = line.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16)
                    .map_err(|_| io::Error::other(format!("bad chunk size line {line:?}")))?;
                if size == 0 {
                    loop {
                        match self.line()? {
                            None => return Ok(false),
                            Some(l) if l.is_empty() => return Ok(true),
                            Some(_) => {}
                        }
                    }
                }
                if self.take(size, sink)? < size {
                    return Ok(false);
                }
                match self.line()? {
                    Some(l) if l.is_empty() => {}
                    Some(l) => {
                        return Err(io::Error::other(format!(
                            "no CRLF after chunk data: {:?}",
                            String::from_utf8_lossy(&l)
                        )));
                    }
                    None => return Ok(false),
                }
            }
        }
        if let Some(len) = resp.header("content-length") {
            let len: u64 = len
                .parse()
                .map_err(|_| io::Error::other(format!("bad content-length {len:?}")))?;
            return Ok(self.take(len, sink)? == len);
        }
        // Close-delimited.
        self.take(u64::MAX, sink)?;
        Ok(true)
    }

    /// Reads one whole response; Ok(None) if the source ended before it started.
    pub fn read_response(&mut self, head_request: bool) -> io::Result<Option<Response>> {
        let Some(mut resp) = self.read_head()? else {
            return Ok(None);
        };
        let mut body = Vec::new();
        resp.complete = self.read_body(&resp, head_request, &mut |b| body.extend_from_slice(b))?;
        resp.body = body;
        Ok(Some(resp))
    }

    /// Reads whatever comes until the source ends; returns those bytes and how it ended.
    pub fn rest(&mut self) -> (Vec<u8>, Ending) {
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => {
                    let rest = self.pending().to_vec();
                    self.pos = self.buf.len();
                    return (rest, Ending::TimedOut);
                }
            }
        }
        let rest = self.pending().to_vec();
        self.pos = self.buf.len();
        (rest, self.ending.unwrap())
    }
}

/// A client connection to the balancer, with read and write timeouts of [`PATIENCE`].
pub struct Client {
    pub reader: ResponseReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect to the balancer"))
    }

    /// A client on a connection the caller opened (from another loopback address...).
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        let _ = stream.set_nodelay(true);
        Client {
            reader: ResponseReader::new(stream),
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.reader.src
    }

    /// Writes `bytes`; panics if that fails.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream()
            .write_all(bytes.as_ref())
            .expect("write to the balancer");
    }

    /// Writes `bytes`, ignoring failure (the balancer may close early on purpose).
    pub fn send_lossy(&mut self, bytes: impl AsRef<[u8]>) {
        let _ = self.stream().write_all(bytes.as_ref());
    }

    /// Reads the next whole response; panics if there is none.
    pub fn response(&mut self) -> Response {
        self.try_response(false)
            .expect("read a response")
            .expect("a response, not a closed connection")
    }

    /// Reads the response to a HEAD request.
    pub fn head_response(&mut self) -> Response {
        self.try_response(true)
            .expect("read a response")
            .expect("a response, not a closed connection")
    }

    pub fn try_response(&mut self, head_request: bool) -> io::Result<Option<Response>> {
        self.reader.read_response(head_request)
    }

    /// Reads until the balancer closes (or [`PATIENCE`] passes); the bytes and the ending.
    pub fn rest(&mut self) -> (Vec<u8>, Ending) {
        self.reader.rest()
    }

    /// Reads the body of the response `head` to its end, hashing as it reads: whether
    /// it ended as its framing says, its length, and its FNV-1a hash.
    pub fn hash_body(&mut self, head: &Response) -> (bool, u64, u64) {
        let mut got = Fnv::new();
        let mut len = 0u64;
        let complete = self
            .reader
            .read_body(head, false, &mut |b| {
                got.update(b);
                len += b.len() as u64;
            })
            .unwrap();
        (complete, len, got.finish())
    }

    /// Sends a GET for `path` on this connection and reads the response.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        self.response()
    }

    /// Sends a GET for `/` with one extra header and reads the response.
    pub fn get_with_header(&mut self, name: &str, value: &str) -> Response {
        self.send(format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\n{name}: {value}\r\n\r\n"
        ));
        self.response()
    }
}

/// Parses every complete response in `bytes` (none of them to a HEAD request).
pub fn parse_responses(bytes: &[u8]) -> Vec<Response> {
    let mut r = ResponseReader::new(bytes);
    let mut out = Vec::new();
    while let Ok(Some(resp)) = r.read_response(false) {
        out.push(resp);
    }
    out
}

/// Connects, writes `bytes` (ignoring write failures), and reads until the balancer
/// closes or [`PATIENCE`] passes. Returns what came back and how it ended.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, Ending) {
    let mut c = Client::connect(addr);
    c.send_lossy(bytes);
    c.rest()
}

/// Like [`raw_exchange`], only the bytes.
pub fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw_exchange(addr, bytes).0
}

/// One GET on a fresh connection: status and body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut c = Client::connect(addr);
    c.send(format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ));
    let r = c.response();
    (r.status, r.body_str())
}

/// Splits `bytes` into the first complete response (none of them to a HEAD request) and
/// whatever followed it; None if there is no complete first response.
pub fn first_response_and_rest(bytes: &[u8]) -> Option<(Response, Vec<u8>)> {
    let mut r = ResponseReader::new(bytes);
    let resp = r.read_response(false).ok()??;
    let (rest, _) = r.rest();
    Some((resp, rest))
}
