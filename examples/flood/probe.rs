//! A probe: one normal request, what a real client sends while the flood goes on. Each
//! is a new connection with `GET / HTTP/1.1` and a Host, and one limit for the whole
//! exchange, from connect to the last byte of the body. `attack.rs` sends a batch of
//! probes during each attack and a few after it; a [`Tally`] counts what came back.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Why a probe was not answered.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// A whole response head with a status other than 200 (a 503 from a full queue...).
    Status(u16),
    /// The limit passed: while connecting, waiting for the answer, or reading it.
    Timeout,
    /// The connection was refused: nothing listens on the target any more.
    Refused,
    /// The balancer reset the connection.
    Reset,
    /// The balancer closed the connection before the answer was whole.
    Closed,
    /// The bytes that came back are not an HTTP/1.1 response.
    Garbled,
    /// Any other socket error.
    Other,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::Status(status) => return write!(f, "{status}"),
            Failure::Timeout => "timeout",
            Failure::Refused => "refused",
            Failure::Reset => "reset",
            Failure::Closed => "closed",
            Failure::Garbled => "garbled",
            Failure::Other => "error",
        })
    }
}

/// What a batch of probes saw.
#[derive(Default)]
pub struct Tally {
    /// The time each answered probe took.
    answered: Vec<Duration>,
    failures: BTreeMap<Failure, usize>,
}

impl Tally {
    pub fn answered(&self) -> usize {
        self.answered.len()
    }

    /// The median time of the answered probes, if any was answered.
    pub fn p50(&self) -> Option<Duration> {
        let mut times = self.answered.clone();
        times.sort();
        times.get(times.len().saturating_sub(1) / 2).copied()
    }

    pub fn max(&self) -> Option<Duration> {
        self.answered.iter().max().copied()
    }

    /// The failures by reason, most frequent first: `47 × 503, 3 × timeout`; empty when
    /// every probe was answered.
    pub fn failures(&self) -> String {
        let mut counts: Vec<(Failure, usize)> =
            self.failures.iter().map(|(&f, &n)| (f, n)).collect();
        counts.sort_by_key(|&(failure, n)| (std::cmp::Reverse(n), failure));
        let parts: Vec<String> = counts.iter().map(|(f, n)| format!("{n} × {f}")).collect();
        parts.join(", ")
    }

    fn add(&mut self, result: Result<Duration, Failure>) {
        match result {
            Ok(took) => self.answered.push(took),
            Err(failure) => *self.failures.entry(failure).or_default() += 1,
        }
    }
}

/// Sends `count` probes, `parallel` at a time (each thread one after another), and
/// tallies them. Takes at most about `count / parallel` limits.
pub fn batch(target: SocketAddr, count: usize, parallel: usize, limit: Duration) -> Tally {
    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Tally::default());
    thread::scope(|scope| {
        for _ in 0..parallel.clamp(1, count.max(1)) {
            scope.spawn(|| {
                // Relaxed: each thread only needs a number no other thread took.
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let result = get(target, limit);
                    tally.lock().unwrap().add(result);
                }
            });
        }
    });
    tally.into_inner().unwrap()
}

/// One probe: the time to a whole 200 answer, or why there was none within `limit`.
pub fn get(target: SocketAddr, limit: Duration) -> Result<Duration, Failure> {
    let started = Instant::now();
    exchange(target, started + limit, limit).map(|()| started.elapsed())
}

fn exchange(target: SocketAddr, deadline: Instant, limit: Duration) -> Result<(), Failure> {
    let mut stream = TcpStream::connect_timeout(&target, limit).map_err(failure)?;
    stream
        .set_write_timeout(Some(left(deadline)?))
        .map_err(failure)?;
    let request = format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(failure)?;

    let mut buf = Vec::with_capacity(1024);
    let (head_len, body_len) = loop {
        read_more(&mut stream, &mut buf, deadline)?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(Failure::Garbled),
            Ok(httparse::Status::Complete(head_len)) => {
                let status = response.code.unwrap_or(0);
                if status != 200 {
                    return Err(Failure::Status(status));
                }
                let length: Option<usize> = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
                break (head_len, length);
            }
        }
    };
    // Without a Content-Length the body ends where the connection does (we asked for
    // `Connection: close`), so an early end cannot be told apart; with one it can.
    match body_len {
        Some(len) => {
            while buf.len() < head_len + len {
                read_more(&mut stream, &mut buf, deadline)?;
            }
            Ok(())
        }
        None => loop {
            match read_more(&mut stream, &mut buf, deadline) {
                Ok(()) => {}
                Err(Failure::Closed) => return Ok(()),
                Err(other) => return Err(other),
            }
        },
    }
}

/// Appends what the next read brings to `buf`; the end of the stream is `Closed`.
fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<(), Failure> {
    let mut chunk = [0u8; 8192];
    stream
        .set_read_timeout(Some(left(deadline)?))
        .map_err(failure)?;
    match stream.read(&mut chunk).map_err(failure)? {
        0 => Err(Failure::Closed),
        n => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

/// The time left before `deadline`, or a timeout when there is none.
fn left(deadline: Instant) -> Result<Duration, Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Failure::Timeout)
    } else {
        Ok(left)
    }
}

fn failure(err: io::Error) -> Failure {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        io::ErrorKind::ConnectionRefused => Failure::Refused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Failure::Reset,
        io::ErrorKind::UnexpectedEof => Failure::Closed,
        _ => Failure::Other,
    }
}
