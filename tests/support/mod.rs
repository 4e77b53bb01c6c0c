//! Helpers for the integration tests, all on real loopback sockets bound to port 0:
//! a scripted raw-TCP backend that records what it received, a balancer started
//! in-process or as a child process, and a small HTTP/1.1 client that reads responses
//! exactly as they came off the wire.
//!
//! Nothing here sleeps for a fixed time to "let things settle": readiness is polled,
//! and every wait on the test side is bounded by [`PATIENCE`].

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest the test side waits for anything: a read, a condition, a child process.
/// Generous on purpose (a loaded 2-core machine must not make a test flaky); a passing
/// test never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds, panicking with `what` after [`PATIENCE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        if Instant::now() > deadline {
            panic!("gave up waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------
// Data for the big transfers: a cheap deterministic byte stream and a 64-bit hash.

/// FNV-1a, 64 bits: enough to tell whether 64 MiB arrived intact and in order.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.update(bytes);
    h.finish()
}

/// `len` pseudo-random bytes from `seed` (splitmix64, little-endian words). The bytes
/// depend only on the seed and the position, not on the sizes of the reads.
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
    remaining: u64,
}

impl Pattern {
    pub fn new(seed: u64, len: u64) -> Pattern {
        Pattern {
            state: seed,
            word: [0; 8],
            used: 8,
            remaining: len,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Fills the front of `buf` with the next bytes; returns how many (0 at the end).
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        let mut i = 0;
        while i < n {
            if self.used == 8 {
                if n - i >= 8 {
                    // Fast path: whole words.
                    let w = self.next_word();
                    buf[i..i + 8].copy_from_slice(&w);
                    i += 8;
                    continue;
                }
                self.word = self.next_word();
                self.used = 0;
            }
            buf[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        self.remaining -= n as u64;
        n
    }

    /// The hash of the whole stream, computed without holding it.
    pub fn hash_of(seed: u64, len: u64) -> u64 {
        let mut p = Pattern::new(seed, len);
        let mut h = Fnv::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = p.fill(&mut buf);
            if n == 0 {
                return h.finish();
            }
            h.update(&buf[..n]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The scripted backend.

/// One request as a backend received it on its raw socket.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: String,
    /// Every header line in order, as received (name case kept, value trimmed).
    pub headers: Vec<(String, String)>,
    /// The raw head, request line to blank line included.
    pub head: Vec<u8>,
    /// The body, or its first [`BODY_KEPT`] bytes for big uploads.
    pub body: Vec<u8>,
    pub body_len: u64,
    pub body_hash: u64,
}

/// How much of a request body the backend keeps; the rest is only hashed.
pub const BODY_KEPT: usize = 1 << 20;

impl Request {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Every value of the header `name`, in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the backend does with its connection after answering.
pub enum Next {
    KeepAlive,
    Close,
}

type Handler = dyn Fn(&Request, &mut TcpStream) -> io::Result<Next> + Send + Sync;

/// What a backend saw, shared with its connection threads.
#[derive(Default)]
struct Seen {
    /// Requests received completely (head and whole body).
    requests: Mutex<Vec<Request>>,
    /// Request heads received, complete bodies or not.
    heads: AtomicUsize,
    /// The request line of each head received.
    head_lines: Mutex<Vec<String>>,
    /// TCP connections accepted.
    connections: AtomicUsize,
}

/// A gate that held requests wait behind until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn wait(&self) {
        let (open, cv) = &*self.0;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }
    pub fn open(&self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
}

/// A raw-TCP HTTP/1.1 backend on 127.0.0.1:0, one thread per connection, keep-alive
/// capable. Its behaviour is a closure over each complete request, which writes whatever
/// bytes it likes to the socket.
pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    gate: Gate,
}

impl Backend {
    /// A backend answering each request with `handler`.
    pub fn start(
        handler: impl Fn(&Request, &mut TcpStream) -> io::Result<Next> + Send + Sync + 'static,
    ) -> Backend {
        Backend::start_gated(Gate::default(), handler)
    }

    fn start_gated(
        gate: Gate,
        handler: impl Fn(&Request, &mut TcpStream) -> io::Result<Next> + Send + Sync + 'static,
    ) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let handler: Arc<Handler> = Arc::new(handler);
        {
            let seen = seen.clone();
            thread::Builder::new()
                .name(format!("backend-{}", addr.port()))
                .spawn(move || {
                    for stream in listener.incoming() {
                        let Ok(stream) = stream else { continue };
                        seen.connections.fetch_add(1, Ordering::SeqCst);
                        let (seen, handler) = (seen.clone(), handler.clone());
                        thread::spawn(move || serve_backend_conn(stream, &seen, &*handler));
                    }
                })
                .unwrap();
        }
        Backend { addr, seen, gate }
    }

    /// Answers every request with 200 and the body `body`.
    pub fn hello(body: &str) -> Backend {
        let reply = response(200, &[("Content-Type", "text/plain")], body.as_bytes());
        Backend::raw(reply)
    }

    /// Answers every request with `bytes` (which must frame themselves) and keeps the
    /// connection open.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Backend {
        let bytes = bytes.into();
        Backend::start(move |_, s| {
            s.write_all(&bytes)?;
            Ok(Next::KeepAlive)
        })
    }

    /// Answers every request with `bytes`, then closes the connection.
    pub fn raw_then_close(bytes: impl Into<Vec<u8>>) -> Backend {
        let bytes = bytes.into();
        Backend::start(move |_, s| {
            s.write_all(&bytes)?;
            Ok(Next::Close)
        })
    }

    /// Answers 200 with the request-target as the body.
    pub fn echo_target() -> Backend {
        Backend::start(|req, s| {
            s.write_all(&response(200, &[], req.target.as_bytes()))?;
            Ok(Next::KeepAlive)
        })
    }

    /// Answers 200 with `"{body_len} {body_hash:016x}"`: what it received, in short.
    pub fn body_summary() -> Backend {
        Backend::start(|req, s| {
            let text = format!("{} {:016x}", req.body_len, req.body_hash);
            s.write_all(&response(200, &[], text.as_bytes()))?;
            Ok(Next::KeepAlive)
        })
    }

    /// Holds every request until [`Backend::release`], then answers 200 `body`.
    pub fn held(body: &str) -> Backend {
        let gate = Gate::default();
        let reply = response(200, &[], body.as_bytes());
        let g = gate.clone();
        Backend::start_gated(gate, move |_, s| {
            g.wait();
            s.write_all(&reply)?;
            Ok(Next::KeepAlive)
        })
    }

    /// Reads each request and never answers (until the backend is dropped).
    pub fn silent() -> Backend {
        Backend::held("too late")
    }

    /// Answers with `len` bytes of `Pattern::new(seed, len)`, framed by Content-Length or
    /// chunked, generated while writing.
    pub fn download(seed: u64, len: u64, chunked: bool) -> Backend {
        Backend::start(move |_, s| {
            let mut out = io::BufWriter::with_capacity(256 * 1024, s);
            if chunked {
                out.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            } else {
                write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n")?;
            }
            let mut p = Pattern::new(seed, len);
            // Odd chunk sizes, so that chunk boundaries do not line up with anything.
            let mut buf = vec![0; 65_521];
            loop {
                let n = p.fill(&mut buf);
                if n == 0 {
                    break;
                }
                if chunked {
                    write!(out, "{n:x}\r\n")?;
                    out.write_all(&buf[..n])?;
                    out.write_all(b"\r\n")?;
                } else {
                    out.write_all(&buf[..n])?;
                }
            }
            if chunked {
                out.write_all(b"0\r\n\r\n")?;
            }
            out.flush()?;
            Ok(Next::KeepAlive)
        })
    }

    /// Lets every held request through.
    pub fn release(&self) {
        self.gate.open();
    }

    /// Every request received completely, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.requests.lock().unwrap().clone()
    }

    /// The only request received; panics if there were none or several.
    pub fn only_request(&self) -> Request {
        let mut reqs = self.requests();
        assert_eq!(
            reqs.len(),
            1,
            "backend expected exactly one request, got {reqs:#?}"
        );
        reqs.pop().unwrap()
    }

    /// How many requests arrived completely.
    pub fn count(&self) -> usize {
        self.seen.requests.lock().unwrap().len()
    }

    /// How many request heads arrived, complete bodies or not.
    pub fn heads(&self) -> usize {
        self.seen.heads.load(Ordering::SeqCst)
    }

    /// The request line of every head received, complete bodies or not.
    pub fn head_lines(&self) -> Vec<String> {
        self.seen.head_lines.lock().unwrap().clone()
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Let held connection threads finish.
        self.gate.open();
    }
}

/// A complete response with a Content-Length (none for 1xx, 204 and 304).
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if !matches!(status, 100..=199 | 204 | 304) {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        304 => "Not Modified",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

fn serve_backend_conn(stream: TcpStream, seen: &Seen, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    while let Ok(Some(mut req)) = read_request_head(&mut reader) {
        let line = req.head.split(|&b| b == b'\n').next().unwrap_or_default();
        seen.head_lines
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(line).trim_end().to_string());
        seen.heads.fetch_add(1, Ordering::SeqCst);
        if read_request_body(&mut reader, &mut req).is_err() {
            break;
        }
        seen.requests.lock().unwrap().push(req.clone());
        match handler(&req, reader.get_mut()) {
            Ok(Next::KeepAlive) => continue,
            _ => break,
        }
    }
    let _ = reader.get_mut().shutdown(Shutdown::Both);
}

fn read_request_head(r: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut head = Vec::new();
    let mut lines = Vec::new();
    loop {
        let start = head.len();
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = &head[start..];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        lines.push(String::from_utf8_lossy(line).into_owned());
        if head.len() > 1 << 20 {
            return Err(io::Error::other("request head too big"));
        }
    }
    let mut parts = lines[0].splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let version = parts.next().unwrap_or("").to_string();
    let headers = lines[1..]
        .iter()
        .map(|l| match l.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim().to_string()),
            None => (l.clone(), String::new()),
        })
        .collect();
    Ok(Some(Request {
        method,
        target,
        version,
        headers,
        head,
        body: Vec::new(),
        body_len: 0,
        body_hash: Fnv::new().finish(),
    }))
}

fn read_request_body(r: &mut BufReader<TcpStream>, req: &mut Request) -> io::Result<()> {
    let mut hash = Fnv::new();
    let mut take =
        |r: &mut BufReader<TcpStream>, req: &mut Request, mut n: u64| -> io::Result<()> {
            while n > 0 {
                let buf = r.fill_buf()?;
                if buf.is_empty() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let k = (buf.len() as u64).min(n) as usize;
                hash.update(&buf[..k]);
                let keep = BODY_KEPT.saturating_sub(req.body.len()).min(k);
                req.body.extend_from_slice(&buf[..keep]);
                req.body_len += k as u64;
                r.consume(k);
                n -= k as u64;
            }
            Ok(())
        };
    let chunked = req
        .headers_named("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let line = read_crlf_line(r)?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                while !read_crlf_line(r)?.is_empty() {}
                break;
            }
            take(r, req, size)?;
            if !read_crlf_line(r)?.is_empty() {
                return Err(io::Error::other("no CRLF after chunk data"));
            }
        }
    } else if let Some(len) = req.header("content-length") {
        let len: u64 = len
            .parse()
            .map_err(|_| io::Error::other("bad content-length"))?;
        take(r, req, len)?;
    }
    req.body_hash = hash.finish();
    Ok(())
}

fn read_crlf_line(r: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 || !line.ends_with(b"\r\n") {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// An address where nothing listens: bound to port 0, then released.
pub fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A listener whose accept queue is full, so that a new connect never completes its
/// handshake (Linux drops the SYN). Keep the value alive as long as the address is used.
/// `None` if this machine does not behave that way.
pub struct Unanswering {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<socket2::Socket>,
}

pub fn unanswering_listener() -> Option<Unanswering> {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).ok()?;
    listener.listen(0).ok()?;
    let addr = listener.local_addr().ok()?.as_socket()?;
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
        match s.connect_timeout(&addr.into(), Duration::from_millis(500)) {
            Ok(()) => fillers.push(s),
            Err(_) => {
                return Some(Unanswering {
                    addr,
                    _listener: listener,
                    _fillers: fillers,
                });
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// The balancer.

/// A balancer running in this process. Keep it alive for as long as the test uses it.
pub struct Balancer {
    pub addr: SocketAddr,
    _running: roundhouse::Running,
}

/// Starts a balancer in front of `backends`, listening on 127.0.0.1:0, with 4 workers and
/// logging off unless `extra` says otherwise.
pub fn start_balancer(backends: &[&Backend], extra: &[&str]) -> Balancer {
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    start_balancer_on(&addrs, extra)
}

/// Like [`start_balancer`], with backend addresses (dead ones, for example).
pub fn start_balancer_on(backends: &[SocketAddr], extra: &[&str]) -> Balancer {
    let mut args: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into()];
    for b in backends {
        args.push("--backend".into());
        args.push(b.to_string());
    }
    if !extra.contains(&"--workers") {
        args.extend(["--workers".into(), "4".into()]);
    }
    if !extra.contains(&"--log") {
        args.extend(["--log".into(), "off".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = roundhouse::Config::from_args(&refs[..])
        .unwrap_or_else(|e| panic!("config from {args:?}: {e}"));
    let running = roundhouse::start(config).expect("start the balancer");
    let addr = running.local_addr();
    Balancer {
        addr,
        _running: running,
    }
}

// ---------------------------------------------------------------------------------------
// The client side.

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

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
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
        let stream = TcpStream::connect(addr).expect("connect to the balancer");
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

// ---------------------------------------------------------------------------------------
// The binary as a child process.

pub const BIN: &str = env!("CARGO_BIN_EXE_roundhouse");

/// A port that was free a moment ago (bound to port 0, then released).
pub fn reserve_port() -> u16 {
    dead_addr().port()
}

/// Polls until something accepts connections on `addr`.
pub fn wait_accepting(addr: SocketAddr) {
    wait_until(&format!("something accepting on {addr}"), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    });
}

/// Runs the binary to completion (killed after [`PATIENCE`]): exit code, stdout, stderr.
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let mut p = Proc::spawn(Command::new(BIN).args(args));
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "roundhouse {args:?} did not exit"
        );
        thread::sleep(Duration::from_millis(5));
    };
    // The output threads finish once the pipes close.
    wait_until("the child's output to end", || p.output_done());
    (status.code().unwrap_or(-1), p.stdout(), p.stderr())
}

/// A child process whose stdout and stderr are collected by two threads. Killed on drop.
pub struct Proc {
    pub child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    done: Arc<AtomicUsize>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn roundhouse");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let done = Arc::new(AtomicUsize::new(0));
        fn collect(
            src: impl Read + Send + 'static,
            into: Arc<Mutex<String>>,
            done: Arc<AtomicUsize>,
        ) {
            thread::spawn(move || {
                let mut r = BufReader::new(src);
                let mut line = Vec::new();
                while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    into.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&line));
                    line.clear();
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        collect(child.stdout.take().unwrap(), out.clone(), done.clone());
        collect(child.stderr.take().unwrap(), err.clone(), done.clone());
        Proc {
            child,
            out,
            err,
            done,
        }
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }
    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }
    fn output_done(&self) -> bool {
        self.done.load(Ordering::SeqCst) == 2
    }

    /// Polls until stdout has a line for which `pred` holds; returns that line.
    pub fn wait_for_stdout_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut found = None;
        let deadline = Instant::now() + PATIENCE;
        while found.is_none() {
            found = self.stdout().lines().find(|l| pred(l)).map(str::to_string);
            if found.is_none() {
                assert!(
                    Instant::now() < deadline,
                    "no stdout line: {what}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
                thread::sleep(Duration::from_millis(5));
            }
        }
        found.unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
