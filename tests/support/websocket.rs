//! Both ends of a tunnel through the balancer, for tests/it/tunnels.rs. A tunnel is what
//! a connection becomes once the backend answered its upgrade request with `101`: bytes
//! relayed both ways until either side closes. Here:
//! - a WebSocket echo backend on tungstenite (blocking, one thread per connection), and
//!   the WebSocket client's handshake over any stream, TCP or TLS;
//! - a backend that answers an upgrade by hand, in one write, and hands its socket to the
//!   test ([`UpgradeBackend`]), and a client that sends an upgrade request by hand
//!   ([`open_tunnel`]): each end is then a [`TunnelEnd`] that the test writes, reads,
//!   half-closes or drops as it likes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use tungstenite::handshake::client::Response as WsResponse;
use tungstenite::handshake::derive_accept_key;
use tungstenite::handshake::server::{Request as WsUpgrade, Response as WsAnswer};
use tungstenite::{Message, WebSocket};

use super::*;

/// The key of every hand-written upgrade request: RFC 6455's own example (§1.3), whose
/// accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

// The WebSocket echo backend.

/// A WebSocket echo server on 127.0.0.1:0: every text and binary message goes back as it
/// came, a ping is answered with its pong (tungstenite does that), and a close frame is
/// answered, after which the server closes the TCP connection.
pub struct WsEchoBackend {
    pub addr: SocketAddr,
    seen: Arc<WsSeen>,
}

/// What the echo backend saw, shared with its connection threads.
#[derive(Default)]
struct WsSeen {
    /// The header fields of each upgrade request, in order of arrival (names in lower
    /// case, as the `http` crate keeps them).
    upgrades: Mutex<Vec<Vec<(String, String)>>>,
    /// Connections whose close handshake completed: a close frame came, was answered,
    /// and tungstenite then called the connection closed.
    clean_closes: AtomicUsize,
    /// Connections that ended any other way (a failed handshake, a reset, an EOF without
    /// a close frame, a read timeout).
    broken: AtomicUsize,
}

impl WsEchoBackend {
    pub fn start() -> WsEchoBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the websocket backend");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(WsSeen::default());
        let shared = seen.clone();
        thread::Builder::new()
            .name(format!("ws-backend-{}", addr.port()))
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let seen = shared.clone();
                    thread::spawn(move || {
                        let counter = match echo(stream, &seen) {
                            Ok(()) => &seen.clean_closes,
                            Err(_) => &seen.broken,
                        };
                        counter.fetch_add(1, Ordering::SeqCst);
                    });
                }
            })
            .unwrap();
        WsEchoBackend { addr, seen }
    }

    /// The header fields of every upgrade request received, in order.
    pub fn upgrades(&self) -> Vec<Vec<(String, String)>> {
        self.seen.upgrades.lock().unwrap().clone()
    }

    /// Connections that ended with a completed close handshake.
    pub fn clean_closes(&self) -> usize {
        self.seen.clean_closes.load(Ordering::SeqCst)
    }

    /// Connections that ended any other way.
    pub fn broken(&self) -> usize {
        self.seen.broken.load(Ordering::SeqCst)
    }
}

/// Serves one connection: the handshake, then echoes until the close handshake is done
/// (Ok) or anything else ends it (the error).
// The callback's large error type is tungstenite's signature, not a choice made here.
#[allow(clippy::result_large_err)]
fn echo(stream: TcpStream, seen: &WsSeen) -> Result<(), String> {
    // Longer than any test: a test that fails leaves no thread behind for long.
    stream
        .set_read_timeout(Some(PATIENCE * 6))
        .map_err(|e| e.to_string())?;
    let record = |req: &WsUpgrade, answer: WsAnswer| {
        let fields = req
            .headers()
            .iter()
            .map(|(n, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_string(), v)
            })
            .collect();
        seen.upgrades.lock().unwrap().push(fields);
        Ok(answer)
    };
    let mut ws = tungstenite::accept_hdr(stream, record).map_err(|e| e.to_string())?;
    let mut close_came = false;
    loop {
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                ws.send(m).map_err(|e| e.to_string())?;
            }
            // The answer is queued by tungstenite and written by the next read.
            Ok(Message::Close(_)) => close_came = true,
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) if close_came => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

// The WebSocket client.

/// The client's handshake for `url` over `stream` (a TCP or TLS connection to the
/// balancer): the socket and the `101` answer. Panics with tungstenite's reason if the
/// handshake fails (an answer other than `101`, a wrong `Sec-WebSocket-Accept`...).
pub fn ws_handshake<S: Read + Write>(stream: S, url: &str) -> (WebSocket<S>, WsResponse) {
    tungstenite::client(url, stream)
        .unwrap_or_else(|e| panic!("the websocket handshake for {url}: {e}"))
}

/// A WebSocket client connected through the balancer at `lb` to `path`.
pub fn ws_connect(lb: SocketAddr, path: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(lb).expect("connect to the balancer");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    let _ = stream.set_nodelay(true);
    ws_handshake(stream, &format!("ws://localhost{path}")).0
}

/// The next message, from a read that must succeed.
pub fn ws_read<S: Read + Write>(ws: &mut WebSocket<S>) -> Message {
    ws.read()
        .unwrap_or_else(|e| panic!("read a websocket message: {e}"))
}

/// Starts the close handshake from the client and drives it to its end: the server's
/// close frame must come back, then the connection must end as tungstenite expects (the
/// server closes it). Err says what happened instead.
pub fn ws_close<S: Read + Write>(ws: &mut WebSocket<S>) -> Result<(), String> {
    ws.close(None)
        .map_err(|e| format!("send the close frame: {e}"))?;
    let mut answered = false;
    // A close answer, then the end: anything more than a few reads is wrong.
    for _ in 0..8 {
        match ws.read() {
            Ok(Message::Close(_)) => answered = true,
            Ok(other) => return Err(format!("a message after the close frame: {other:?}")),
            Err(tungstenite::Error::ConnectionClosed) if answered => return Ok(()),
            Err(tungstenite::Error::ConnectionClosed) => {
                return Err("closed without answering the close frame".into());
            }
            Err(e) => return Err(format!("answered: {answered}, then: {e}")),
        }
    }
    Err("the close handshake did not end".into())
}

// The hand-written ends.

/// One end of a tunnel seen from outside the balancer: its socket, and the bytes already
/// read from it behind the HTTP head (they came in the same read).
pub struct TunnelEnd {
    pub stream: TcpStream,
    early: Vec<u8>,
}

impl TunnelEnd {
    /// Reads and writes on `stream` time out after [`PATIENCE`].
    pub fn new(stream: TcpStream, early: Vec<u8>) -> TunnelEnd {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        let _ = stream.set_nodelay(true);
        TunnelEnd { stream, early }
    }

    /// Writes `bytes`; panics if that fails.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .write_all(bytes.as_ref())
            .expect("write into the tunnel");
    }

    /// Reads exactly `n` bytes, those read ahead first; panics on a close, an error or
    /// after [`PATIENCE`] without a byte.
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut got: Vec<u8> = self.early.drain(..n.min(self.early.len())).collect();
        let mut buf = vec![0u8; 64 * 1024];
        while got.len() < n {
            let want = (n - got.len()).min(buf.len());
            match self.stream.read(&mut buf[..want]) {
                Ok(0) => panic!("the tunnel closed after {} of {n} bytes", got.len()),
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read from the tunnel after {} of {n} bytes: {e}", got.len()),
            }
        }
        got
    }

    /// Reads until the other side closes (or [`PATIENCE`] passes without a byte): the
    /// bytes, those read ahead first, and how it ended.
    pub fn rest(&mut self) -> (Vec<u8>, Ending) {
        let mut got = std::mem::take(&mut self.early);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return (got, Ending::Eof),
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return (got, Ending::TimedOut);
                }
                Err(_) => return (got, Ending::Reset),
            }
        }
    }

    /// Sends a FIN: this side writes no more, and can still read.
    pub fn shutdown_write(&self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shut the tunnel's write side");
    }

    /// Drops the socket with a reset instead of a FIN, as a crashed peer's kernel does
    /// when data was left unread, or a process killed with SO_LINGER 0.
    pub fn reset(self) {
        let sock = socket2::SockRef::from(&self.stream);
        sock.set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0 on the tunnel's socket");
    }

    /// Whether the socket is open with nothing to read at this moment.
    pub fn quiet(&self) -> bool {
        if !self.early.is_empty() {
            return false;
        }
        self.stream.set_nonblocking(true).unwrap();
        let quiet = matches!((&self.stream).read(&mut [0u8; 1]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        self.stream.set_nonblocking(false).unwrap();
        quiet
    }
}

/// The head of a WebSocket upgrade request for `path`, as a browser sends it.
pub fn upgrade_head(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n\r\n"
    )
}

/// Sends an upgrade request for `path` to the balancer at `lb`, `early` in the same
/// write right behind its head, and reads the answer's head: the head, and the
/// connection as the client's end of a tunnel (what came behind the head included).
pub fn open_tunnel(lb: SocketAddr, path: &str, early: &[u8]) -> (Response, TunnelEnd) {
    let stream = TcpStream::connect(lb).expect("connect to the balancer");
    let mut end = TunnelEnd::new(stream, Vec::new());
    let mut bytes = upgrade_head(path).into_bytes();
    bytes.extend_from_slice(early);
    end.send(bytes);
    let mut reader = ResponseReader::new(end.stream);
    let head = reader
        .read_head()
        .unwrap_or_else(|e| panic!("read the answer to the upgrade of {path}: {e}"))
        .unwrap_or_else(|| panic!("the balancer closed instead of answering {path}"));
    let (stream, early) = reader.into_parts();
    (head, TunnelEnd::new(stream, early))
}

/// [`open_tunnel`] that must get a `101`.
pub fn open_tunnel_101(lb: SocketAddr, path: &str) -> TunnelEnd {
    let (head, end) = open_tunnel(lb, path, b"");
    assert_eq!(
        head.status,
        101,
        "the upgrade of {path}: {}",
        String::from_utf8_lossy(&head.head)
    );
    end
}

/// A `101 Switching Protocols` to the WebSocket upgrade `req`, with its accept value.
pub fn switching_protocols(req: &Request) -> Vec<u8> {
    let key = req.header("sec-websocket-key").unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes()
}

/// The backend's end of one connection that asked for an upgrade: its request, and the
/// socket after the answer went out (after a `101`, the backend's end of the tunnel).
pub struct BackendEnd {
    pub request: Request,
    pub end: TunnelEnd,
}

type Answer = dyn Fn(&Request) -> Vec<u8> + Send + Sync;

/// A raw-TCP backend on 127.0.0.1:0 that reads one request head per connection and
/// writes what `answer` makes of it, in one write. A connection whose request asked for
/// an upgrade is then handed to the test, open, in order of arrival
/// ([`UpgradeBackend::next_end`]); any other is closed.
pub struct UpgradeBackend {
    pub addr: SocketAddr,
    ends: Mutex<mpsc::Receiver<BackendEnd>>,
    connections: Arc<AtomicUsize>,
}

impl UpgradeBackend {
    pub fn start(answer: impl Fn(&Request) -> Vec<u8> + Send + Sync + 'static) -> UpgradeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upgrade backend");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let answer: Arc<Answer> = Arc::new(answer);
        let accepted = connections.clone();
        thread::Builder::new()
            .name(format!("upgrade-backend-{}", addr.port()))
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (tx, answer) = (tx.clone(), answer.clone());
                    // A short thread: the head, the answer, the hand-over.
                    thread::spawn(move || {
                        if let Ok(Some(end)) = answer_one(stream, &*answer) {
                            let _ = tx.send(end);
                        }
                    });
                }
            })
            .unwrap();
        UpgradeBackend {
            addr,
            ends: Mutex::new(rx),
            connections,
        }
    }

    /// Switches every upgrade request to the tunnel at once; a request without
    /// `Upgrade` gets `200 plain` and a close.
    pub fn switching() -> UpgradeBackend {
        UpgradeBackend::switching_then(b"")
    }

    /// Like [`UpgradeBackend::switching`], `first` written behind the `101` in the same
    /// write: the backend speaks first, before the client sent a byte through.
    pub fn switching_then(first: &[u8]) -> UpgradeBackend {
        let first = first.to_vec();
        UpgradeBackend::start(move |req| {
            if req.header("upgrade").is_none() {
                return response(200, &[("Connection", "close")], b"plain");
            }
            let mut out = switching_protocols(req);
            out.extend_from_slice(&first);
            out
        })
    }

    /// Answers every request with `bytes` (which frame themselves).
    pub fn answering(bytes: Vec<u8>) -> UpgradeBackend {
        UpgradeBackend::start(move |_| bytes.clone())
    }

    /// The next connection handed over; panics if none comes within [`PATIENCE`].
    pub fn next_end(&self) -> BackendEnd {
        self.ends
            .lock()
            .unwrap()
            .recv_timeout(PATIENCE)
            .expect("an upgrade request at the backend")
    }

    /// The next connection handed over if one already was.
    pub fn try_next_end(&self) -> Option<BackendEnd> {
        self.ends.lock().unwrap().try_recv().ok()
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Reads one request head from `stream`, writes the answer, and returns the connection
/// if the request asked for an upgrade.
fn answer_one(mut stream: TcpStream, answer: &Answer) -> io::Result<Option<BackendEnd>> {
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        got.extend_from_slice(&buf[..n]);
    };
    let request = parse_head(&got[..end]);
    stream.write_all(&answer(&request))?;
    if request.header("upgrade").is_none() {
        let _ = stream.shutdown(Shutdown::Both);
        return Ok(None);
    }
    let early = got[end..].to_vec();
    Ok(Some(BackendEnd {
        request,
        end: TunnelEnd::new(stream, early),
    }))
}

/// A request head, CRLF CRLF included, as a [`Request`] without a body.
fn parse_head(head: &[u8]) -> Request {
    let text = String::from_utf8_lossy(&head[..head.len() - 4]).into_owned();
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().splitn(3, ' ');
    let mut part = || parts.next().unwrap_or_default().to_string();
    let (method, target, version) = (part(), part(), part());
    let headers = lines
        .map(|l| match l.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    Request {
        method,
        target,
        version,
        headers,
        head: head.to_vec(),
        body: Vec::new(),
        body_len: 0,
        body_hash: Fnv::new().finish(),
    }
}
