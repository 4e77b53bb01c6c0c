//! Bursts: the attacks made of many short exchanges (requests reset right after they
//! are sent, connects closed at once), sent as fast as a few threads can, and the ones
//! made of connections that do all their harm up front and are then left alone
//! (pipelines never read, oversized heads). `attack.rs` sends its probes while a burst
//! runs, or while the left-alone connections are held.

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Threads sending a burst, or opening the left-alone connections.
const THREADS: usize = 4;

/// Time for one attack connection to connect, or to write what it has to write.
const PATIENCE: Duration = Duration::from_secs(1);

/// The longest a burst runs, whatever is left of its count.
const LONGEST: Duration = Duration::from_secs(60);

/// What one burst did.
#[derive(Default)]
pub struct Sent {
    /// Exchanges (or connections) done as meant.
    pub done: usize,
    /// Connects or writes that failed or timed out.
    pub failed: usize,
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sent", self.done)?;
        match self.failed {
            0 => Ok(()),
            failed => write!(f, ", {failed} failed"),
        }
    }
}

/// A burst under way in its own threads, until [`Burst::join`].
pub struct Burst {
    /// Exchanges started so far, by all threads; written only by them.
    started: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Sent>>,
}

impl Burst {
    /// `count` requests, each a new connection that writes a whole GET and then closes
    /// with SO_LINGER 0: a reset, before any answer can come.
    pub fn resets(target: SocketAddr, count: usize) -> io::Result<Burst> {
        let request = format!("GET / HTTP/1.1\r\nHost: {target}\r\n\r\n");
        Burst::start(count, move || {
            let socket = connect(target)?;
            socket.set_write_timeout(Some(PATIENCE))?;
            (&socket).write_all(request.as_bytes())?;
            socket.set_linger(Some(Duration::ZERO))
        })
    }

    /// `count` connects, each closed at once without a byte.
    pub fn connect_close(target: SocketAddr, count: usize) -> io::Result<Burst> {
        Burst::start(count, move || connect(target).map(drop))
    }

    /// Runs `one` `count` times over the threads.
    fn start(
        count: usize,
        one: impl Fn() -> io::Result<()> + Clone + Send + 'static,
    ) -> io::Result<Burst> {
        let started = Arc::new(AtomicUsize::new(0));
        let end = Instant::now() + LONGEST;
        let threads = (0..THREADS)
            .map(|i| {
                let (started, one) = (Arc::clone(&started), one.clone());
                thread::Builder::new()
                    .name(format!("burst-{i}"))
                    .spawn(move || {
                        let mut sent = Sent::default();
                        // Relaxed: each thread only needs a number no other thread took.
                        while started.fetch_add(1, Ordering::Relaxed) < count
                            && Instant::now() < end
                        {
                            match one() {
                                Ok(()) => sent.done += 1,
                                Err(_) => sent.failed += 1,
                            }
                        }
                        sent
                    })
            })
            .collect::<io::Result<_>>()?;
        Ok(Burst { started, threads })
    }

    /// Waits until `n` exchanges have started (or the burst is over), at most `longest`.
    pub fn wait_started(&self, n: usize, longest: Duration) {
        let end = Instant::now() + longest;
        // Relaxed: a progress count; nothing else is read through it.
        while self.started.load(Ordering::Relaxed) < n
            && !self.threads.iter().all(JoinHandle::is_finished)
            && Instant::now() < end
        {
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn join(self) -> Sent {
        self.threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .fold(Sent::default(), |all, one| Sent {
                done: all.done + one.done,
                failed: all.failed + one.failed,
            })
    }
}

/// `conns` connections, each writing `requests` pipelined GETs at once and never
/// reading an answer. Returns them open.
pub fn pipelines(target: SocketAddr, conns: usize, requests: usize) -> (Vec<TcpStream>, Sent) {
    let one = format!("GET / HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let all = one.repeat(requests);
    open_many(target, conns, all.as_bytes())
}

/// `conns` connections, each sending one whole request head of about `size` bytes,
/// most of it one long header field. Returns them open.
pub fn big_heads(target: SocketAddr, conns: usize, size: usize) -> (Vec<TcpStream>, Sent) {
    let start = format!("GET / HTTP/1.1\r\nHost: {target}\r\nX-Big: ");
    let fill = size.saturating_sub(start.len() + 4);
    let head = format!("{start}{}\r\n\r\n", "b".repeat(fill));
    open_many(target, conns, head.as_bytes())
}

/// Opens `conns` connections over the threads and writes `bytes` on each, within
/// [`LONGEST`] in all.
fn open_many(target: SocketAddr, conns: usize, bytes: &[u8]) -> (Vec<TcpStream>, Sent) {
    let end = Instant::now() + LONGEST;
    let next = AtomicUsize::new(0);
    let results: Vec<(Vec<TcpStream>, Sent)> = thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let (mut streams, mut sent) = (Vec::new(), Sent::default());
                    // Relaxed: as in `Burst::start`.
                    while next.fetch_add(1, Ordering::Relaxed) < conns && Instant::now() < end {
                        match open_and_write(target, bytes) {
                            Ok(stream) => {
                                streams.push(stream);
                                sent.done += 1;
                            }
                            Err(_) => sent.failed += 1,
                        }
                    }
                    (streams, sent)
                })
            })
            .collect();
        threads.into_iter().filter_map(|t| t.join().ok()).collect()
    });
    let mut all = (Vec::new(), Sent::default());
    for (streams, sent) in results {
        all.0.extend(streams);
        all.1.done += sent.done;
        all.1.failed += sent.failed;
    }
    all
}

fn open_and_write(target: SocketAddr, bytes: &[u8]) -> io::Result<TcpStream> {
    let socket = connect(target)?;
    socket.set_write_timeout(Some(PATIENCE))?;
    let mut stream = TcpStream::from(socket);
    stream.write_all(bytes)?;
    Ok(stream)
}

/// A blocking connect within [`PATIENCE`].
fn connect(target: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.connect_timeout(&SockAddr::from(target), PATIENCE)?;
    Ok(socket)
}
