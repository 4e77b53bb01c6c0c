//! The scripted backend: a raw-TCP HTTP/1.1 server that records every request it
//! receives, plus addresses where no backend answers.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use super::*;

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

impl Fields for Request {
    fn fields(&self) -> &[(String, String)] {
        &self.headers
    }
    fn body_bytes(&self) -> &[u8] {
        &self.body
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
        Backend::serve(listener, gate, handler)
    }

    fn serve(
        listener: TcpListener,
        gate: Gate,
        handler: impl Fn(&Request, &mut TcpStream) -> io::Result<Next> + Send + Sync + 'static,
    ) -> Backend {
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

    /// On `listener` (another loopback address than 127.0.0.1, say): answers 200 `body`
    /// at once, except that a request for `/held` waits for [`Backend::release`].
    pub fn hello_on(listener: TcpListener, body: &str) -> Backend {
        let gate = Gate::default();
        let reply = response(200, &[], body.as_bytes());
        let g = gate.clone();
        Backend::serve(listener, gate, move |req, s| {
            if req.target == "/held" {
                g.wait();
            }
            s.write_all(&reply)?;
            Ok(Next::KeepAlive)
        })
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
            write_pattern(s, seed, len, chunked)?;
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

/// One listener on each of `ips` (loopback addresses), all on the same port: as the
/// addresses of one name would be.
pub fn same_port(ips: &[&str]) -> Vec<TcpListener> {
    for _ in 0..50 {
        let first = TcpListener::bind((ips[0], 0)).expect("bind a loopback address");
        let port = first.local_addr().unwrap().port();
        let rest: Result<Vec<_>, _> = ips[1..]
            .iter()
            .map(|ip| TcpListener::bind((*ip, port)))
            .collect();
        if let Ok(rest) = rest {
            return std::iter::once(first).chain(rest).collect();
        }
    }
    panic!("no port free on all of {ips:?}");
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

/// Writes a 200 answer of `len` bytes of `Pattern::new(seed, len)`, framed by
/// Content-Length or chunked.
pub fn write_pattern(s: &mut TcpStream, seed: u64, len: u64, chunked: bool) -> io::Result<()> {
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
    out.flush()
}
