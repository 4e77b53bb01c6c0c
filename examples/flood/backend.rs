//! The backend mode (`--serve-backend ADDR`): the server every balancer under attack
//! sits in front of, so that all of them proxy to the same thing. `GET /1m` answers
//! 1 MiB (the slow reader's answer), anything else `hello world!`; a request body is
//! read and thrown away. HTTP/1.1 with keep-alive, one thread per connection: the
//! balancers hold at most a few thousand connections to it, and it must never be the
//! bottleneck of an attack.
//!
//! Bounded like the rest of the tool: at most [`MAX_CONNECTIONS`] at once (more are
//! closed at accept), a timeout on every read and write, and the process exits by
//! itself after [`LIFETIME`] if nobody stopped it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Connections served at once; beyond that a new one is closed as soon as accepted.
const MAX_CONNECTIONS: usize = 8192;

/// The longest pause in a read or a write before the connection is dropped: longer
/// than any attack keeps a request open.
const PATIENCE: Duration = Duration::from_secs(60);

/// The process ends by itself after this long, so that a flood run killed hard leaves
/// no backend behind for long.
const LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The largest request head accepted (the big-heads attack sends 30 KB ones, and a
/// balancer may forward them).
const MAX_HEAD: usize = 64 * 1024;

/// A connection thread needs little: its buffers are on the heap.
const STACK: usize = 128 * 1024;

const HELLO: &[u8] = b"hello world!\n";

/// Size of the `/1m` answer.
const ONE_MIB: usize = 1 << 20;

/// Serves every address in its own accept thread until [`LIFETIME`] has passed.
pub fn serve(addrs: &[SocketAddr]) -> Result<(), String> {
    let live = Arc::new(AtomicUsize::new(0));
    let listeners = addrs
        .iter()
        .map(|&addr| {
            TcpListener::bind(addr)
                .map_err(|err| format!("--serve-backend: cannot listen on {addr}: {err}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (listener, addr) in listeners.into_iter().zip(addrs) {
        let live = Arc::clone(&live);
        thread::Builder::new()
            .name(format!("accept-{}", addr.port()))
            .spawn(move || accept(&listener, &live))
            .map_err(|err| format!("cannot start a thread: {err}"))?;
        eprintln!("flood: backend listening on http://{addr}/ and http://{addr}/1m");
    }
    thread::sleep(LIFETIME);
    eprintln!("flood: backend ran for {LIFETIME:?}; exiting");
    process::exit(0);
}

/// Counts one connection against [`MAX_CONNECTIONS`] for as long as it lives.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        // Relaxed: a cap on a count, not a hand-over of any other memory.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn accept(listener: &TcpListener, live: &Arc<AtomicUsize>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // EMFILE and the like: wait a moment rather than spin.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        // Relaxed: see `Live`.
        if live.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            live.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let guard = Live(Arc::clone(live));
        let spawned = thread::Builder::new().stack_size(STACK).spawn(move || {
            let _guard = guard;
            let _ = connection(stream);
        });
        if spawned.is_err() {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Serves requests on one connection until the client closes it or asks to.
fn connection(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let request = loop {
            match head(&buf)? {
                Some(request) => break request,
                None if buf.len() >= MAX_HEAD => {
                    return answer(&mut stream, 431, b"head too large\n", true);
                }
                None => {}
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        buf.drain(..request.head_len);
        if request.chunked {
            return answer(
                &mut stream,
                501,
                b"chunked bodies are not served here\n",
                true,
            );
        }
        // Throw the body away: what is buffered first, then the rest from the socket.
        let mut left = request.body_len;
        let buffered = left.min(buf.len());
        buf.drain(..buffered);
        left -= buffered;
        while left > 0 {
            let want = left.min(chunk.len());
            let n = stream.read(&mut chunk[..want])?;
            if n == 0 {
                return Ok(());
            }
            left -= n;
        }
        if request.one_mib {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {ONE_MIB}\r\n\r\n"
            )?;
            let block = [b'x'; 16 * 1024];
            for _ in 0..ONE_MIB / block.len() {
                stream.write_all(&block)?;
            }
        } else {
            answer(&mut stream, 200, HELLO, false)?;
        }
        if request.close {
            return Ok(());
        }
    }
}

/// What the server needs to know of one request head.
struct Head {
    head_len: usize,
    body_len: usize,
    chunked: bool,
    one_mib: bool,
    close: bool,
}

/// Parses the head at the start of `buf`; `None` while it is incomplete.
fn head(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
    };
    let value = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    let body_len = match value("content-length") {
        Some(len) => len
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?,
        None => 0,
    };
    let connection = value("connection").unwrap_or_default();
    let close = if request.version == Some(0) {
        !connection.contains("keep-alive")
    } else {
        connection.contains("close")
    };
    Ok(Some(Head {
        head_len,
        body_len,
        chunked: value("transfer-encoding").is_some(),
        one_mib: request.path == Some("/1m"),
        close,
    }))
}

fn answer(stream: &mut TcpStream, status: u16, body: &[u8], close: bool) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        431 => "Request Header Fields Too Large",
        _ => "Not Implemented",
    };
    let connection = if close { "Connection: close\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    stream.write_all(&out)
}
