//! `make tunnels`: the tunnel tool. A tunnel is what an HTTP/1.1 `Upgrade` (WebSocket and
//! the like) becomes once the backend has answered `101 Switching Protocols`: a byte
//! stream each way through the balancer. The tool measures what tunnels cost a balancer
//! on loopback, in four modes, one per run:
//!
//! - `--serve-backend ADDR`: the upgrade backend every balancer sits in front of. It
//!   answers an upgrade request with `101` and then echoes what it reads, or, for the
//!   target `/stream?bytes=N`, writes N bytes as fast as it can and closes; a plain
//!   request (no `Upgrade`) gets `200 hello`.
//! - `--idle ADDR --count N --hold DUR`: opens N tunnels through the balancer, holds them
//!   idle for DUR while it sends a plain GET through the balancer once a second and
//!   samples the balancer's threads and RSS (`--pid`, the flood tool's sampler), then
//!   sends one byte on every tunnel, counts the echoes, and closes them all.
//! - `--stream ADDR --bytes N`: one tunnel to `/stream?bytes=N`, read to the end.
//! - `--echo ADDR --bytes N`: one tunnel; one thread sends N bytes while another reads
//!   their echo.
//!
//! The measuring modes print one line of `name=value` fields on stdout (what
//! `scripts/tunnels.sh` reads to make its table), their progress on stderr. MB/s counts
//! 10^6 bytes a second of the N bytes (the echo mode's too: N bytes went each way), timed
//! from the `101` to the last byte read.
//!
//! Loopback only: every address must be a loopback one. Every loop is bounded in count
//! and time, and the backend exits by itself after [`LIFETIME`]. By hand:
//!
//! ```text
//! target/release/examples/tunnels --serve-backend 127.0.0.1:18091 &
//! target/release/roundhouse --listen 127.0.0.1:18010 --backend 127.0.0.1:18091 --log off &
//! target/release/examples/tunnels --idle 127.0.0.1:18010 --count 1000 --hold 5s --pid $!
//! target/release/examples/tunnels --stream 127.0.0.1:18010 --bytes 1073741824
//! ```

#[path = "flood/sample.rs"]
mod sample;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{self, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Measures Upgrade tunnels through a balancer on loopback: many idle ones, or one fast
/// one; or serves as their backend.
#[derive(argh::FromArgs)]
struct Args {
    /// serve as the upgrade backend on this loopback address: `101` then an echo, or N
    /// bytes for `/stream?bytes=N`; `200` to a plain request
    #[argh(option)]
    serve_backend: Option<String>,

    /// open --count tunnels through the balancer at this loopback address, hold them
    /// idle for --hold, then close them
    #[argh(option)]
    idle: Option<String>,

    /// tunnels the idle mode opens (default: 10000, at most 50000)
    #[argh(option, default = "10_000")]
    count: usize,

    /// how long the idle mode holds its tunnels (default: 10s, at most 4m)
    #[argh(option, default = "String::from(\"10s\")")]
    hold: String,

    /// a process of the balancer whose threads and resident memory are sampled while
    /// the idle tunnels are held; repeat it for several processes, whose figures are
    /// summed (default: none)
    #[argh(option)]
    pid: Vec<u32>,

    /// one tunnel through the balancer at this loopback address to `/stream?bytes=N`,
    /// read to its end
    #[argh(option)]
    stream: Option<String>,

    /// one tunnel through the balancer at this loopback address: send --bytes and read
    /// their echo at the same time
    #[argh(option)]
    echo: Option<String>,

    /// bytes the stream and echo modes move (default: 1073741824, at most 64 GiB)
    #[argh(option, default = "1 << 30")]
    bytes: u64,
}

/// One run's work, its values in bounds.
enum Mode {
    Backend(SocketAddr),
    Idle {
        target: SocketAddr,
        count: usize,
        hold: Duration,
        pids: Vec<u32>,
    },
    Stream {
        target: SocketAddr,
        bytes: u64,
    },
    Echo {
        target: SocketAddr,
        bytes: u64,
    },
}

const MAX_COUNT: usize = 50_000;

/// Shorter than the sampler's own limit, so the sampler covers every hold.
const MAX_HOLD: Duration = Duration::from_secs(240);

const MAX_BYTES: u64 = 64 << 30;

/// The size of every bulk read and write, in the tool and in the backend.
const BLOCK: usize = 64 * 1024;

/// The longest wait for one read or write: longer than any hold, in the tool and in
/// the backend.
const PATIENCE: Duration = Duration::from_secs(300);

/// The longest a stream or echo run may take in all.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// The idle mode's limit on opening its tunnels, and on checking their echoes.
const OPEN_LIMIT: Duration = Duration::from_secs(300);
const CHECK_LIMIT: Duration = Duration::from_secs(30);

/// Threads that open the idle tunnels side by side.
const OPENERS: usize = 4;

/// The time one plain GET, or one upgrade exchange, may take.
const EXCHANGE: Duration = Duration::from_secs(5);

/// The largest head read, by the backend and by the tool.
const MAX_HEAD: usize = 16 * 1024;

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let mode = match validate(&args) {
        Ok(mode) => mode,
        Err(err) => {
            eprintln!("tunnels: {err}");
            return ExitCode::from(2);
        }
    };
    let done = match mode {
        Mode::Backend(addr) => serve(addr),
        Mode::Idle {
            target,
            count,
            hold,
            pids,
        } => idle(target, count, hold, &pids),
        Mode::Stream { target, bytes } => stream(target, bytes),
        Mode::Echo { target, bytes } => echo(target, bytes),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tunnels: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Turns the flags as typed into one mode; the error names the flag and the value.
fn validate(args: &Args) -> Result<Mode, String> {
    let modes = [
        ("--serve-backend", &args.serve_backend),
        ("--idle", &args.idle),
        ("--stream", &args.stream),
        ("--echo", &args.echo),
    ];
    let mut given = modes
        .iter()
        .filter_map(|(flag, addr)| Some((*flag, addr.as_ref()?)));
    let (flag, typed) = given.next().ok_or(
        "say what to do: --serve-backend, --idle, --stream or --echo, each with an address",
    )?;
    if let Some((other, _)) = given.next() {
        return Err(format!("{flag} and {other}: one mode a run"));
    }
    let addr = loopback(typed).map_err(|why| format!("{flag}: {why}"))?;
    if !(1..=MAX_BYTES).contains(&args.bytes) {
        return Err(format!(
            "--bytes: '{}' is not between 1 and {MAX_BYTES}",
            args.bytes
        ));
    }
    Ok(match flag {
        "--serve-backend" => Mode::Backend(addr),
        "--stream" => Mode::Stream {
            target: addr,
            bytes: args.bytes,
        },
        "--echo" => Mode::Echo {
            target: addr,
            bytes: args.bytes,
        },
        _ => {
            if !(1..=MAX_COUNT).contains(&args.count) {
                return Err(format!(
                    "--count: '{}' is not between 1 and {MAX_COUNT}",
                    args.count
                ));
            }
            let hold = humantime::parse_duration(&args.hold)
                .ok()
                .filter(|d| !d.is_zero() && *d <= MAX_HOLD)
                .ok_or_else(|| {
                    format!(
                        "--hold: '{}' is not a duration between 1ms and 4m (examples: 500ms, 10s)",
                        args.hold
                    )
                })?;
            Mode::Idle {
                target: addr,
                count: args.count,
                hold,
                pids: args.pid.clone(),
            }
        }
    })
}

/// Parses a host:port that must be on loopback: this tool never goes anywhere else.
fn loopback(typed: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = typed
        .parse()
        .map_err(|_| format!("'{typed}' is not ip:port (example: 127.0.0.1:18010)"))?;
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!("'{typed}' is not a loopback address"))
    }
}

/// Raises the soft open-files limit to the hard one and returns it: every tunnel is a
/// descriptor here, and the usual 1024 is far from 10,000.
fn raise_open_files() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(err) = setrlimit(Resource::Nofile, limit) {
            eprintln!("tunnels: cannot raise the open files limit: {err}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

// The backend.

/// Connections served at once, beyond which a new one is closed at accept: room for
/// the largest --count and the balancers' own connections.
const MAX_CONNECTIONS: usize = MAX_COUNT + 1024;

/// The backend ends by itself after this long, so that a run killed hard leaves no
/// backend behind for long.
const LIFETIME: Duration = Duration::from_secs(30 * 60);

/// A connection thread needs little: its buffers are on the heap. 10,000 idle tunnels
/// are 10,000 threads here.
const STACK: usize = 64 * 1024;

const HELLO: &[u8] = b"hello\n";

/// Serves `addr` until [`LIFETIME`] has passed, one thread per connection.
fn serve(addr: SocketAddr) -> Result<(), String> {
    raise_open_files();
    let listener = TcpListener::bind(addr)
        .map_err(|err| format!("--serve-backend: cannot listen on {addr}: {err}"))?;
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept(&listener))
        .map_err(|err| format!("cannot start a thread: {err}"))?;
    eprintln!("tunnels: backend listening on http://{addr}/ and http://{addr}/stream?bytes=N");
    thread::sleep(LIFETIME);
    eprintln!("tunnels: backend ran for {LIFETIME:?}; exiting");
    process::exit(0);
}

fn accept(listener: &TcpListener) {
    let live = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // EMFILE and the like: wait a moment rather than spin.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        // Relaxed: a cap on a count, not a hand-over of any other memory.
        if live.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            live.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let live = Arc::clone(&live);
        let spawned = thread::Builder::new().stack_size(STACK).spawn(move || {
            let _ = connection(stream);
            // Relaxed: see above.
            live.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Answers plain requests until the client closes or asks to; an upgrade ends them.
fn connection(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some((head, len)) = read_request(&mut stream, &mut buf)? else {
            return Ok(());
        };
        buf.drain(..len);
        if !head.upgrade {
            let close = head.close || head.body;
            let connection = if close { "Connection: close\r\n" } else { "" };
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n",
                HELLO.len()
            )?;
            stream.write_all(HELLO)?;
            if close {
                return Ok(());
            }
            continue;
        }
        stream.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )?;
        return match head.stream {
            Some(bytes) => stream_out(stream, bytes),
            None => echo_back(stream, &buf),
        };
    }
}

/// What the backend needs of one request head.
struct RequestHead {
    upgrade: bool,
    /// `Some(N)` for `/stream?bytes=N`.
    stream: Option<u64>,
    close: bool,
    body: bool,
}

/// Reads one request head into `buf`: the head and its length, `None` at a clean end.
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> io::Result<Option<(RequestHead, usize)>> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut fields);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let has = |name: &str, token: &str| {
                    request.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case(name)
                            && String::from_utf8_lossy(h.value)
                                .split(',')
                                .any(|t| token.is_empty() || t.trim().eq_ignore_ascii_case(token))
                    })
                };
                let head = RequestHead {
                    upgrade: has("upgrade", "") && has("connection", "upgrade"),
                    stream: request
                        .path
                        .and_then(|path| path.strip_prefix("/stream?bytes="))
                        .and_then(|n| n.parse().ok())
                        .map(|n: u64| n.min(MAX_BYTES)),
                    close: has("connection", "close"),
                    body: has("content-length", "") || has("transfer-encoding", ""),
                };
                return Ok(Some((head, len)));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(invalid("request head too large")),
            Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes `bytes` bytes, then waits for the client's close (its FIN, relayed by the
/// balancer once it has read them all): closing first, with anything unread on our
/// side, could reset the connection under the bytes still in flight.
fn stream_out(mut stream: TcpStream, bytes: u64) -> io::Result<()> {
    write_filler(&mut stream, b'x', bytes)?;
    stream.shutdown(Shutdown::Write)?;
    drain(&mut stream)
}

/// Writes `bytes` copies of `byte`, a block at a time.
fn write_filler(out: &mut impl Write, byte: u8, bytes: u64) -> io::Result<()> {
    let block = vec![byte; BLOCK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Echoes what the client sent after its head, then everything it sends; its FIN
/// is answered with ours.
fn echo_back(mut stream: TcpStream, early: &[u8]) -> io::Result<()> {
    stream.write_all(early)?;
    let mut chunk = vec![0u8; BLOCK];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return stream.shutdown(Shutdown::Write);
        }
        stream.write_all(&chunk[..n])?;
    }
}

/// Reads and drops until the peer closes; bounded by the peer and by [`PATIENCE`].
fn drain(stream: &mut TcpStream) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    while stream.read(&mut chunk)? > 0 {}
    Ok(())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

// The measuring modes.

/// Opens one tunnel to `target` for the request target `path`: the socket after the
/// `101`, and what came behind that answer's head.
fn open(target: SocketAddr, path: &str) -> Result<(TcpStream, Vec<u8>), String> {
    let mut stream = TcpStream::connect_timeout(&target, EXCHANGE)
        .map_err(|err| format!("cannot connect: {err}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: cm91bmRob3VzZSB0dW5uZWw=\r\n\r\n"
    );
    let (status, rest) = exchange(&mut stream, request.as_bytes())
        .map_err(|err| format!("the upgrade failed: {err}"))?;
    if status != 101 {
        return Err(format!("the upgrade was answered {status}"));
    }
    stream.set_nodelay(true).map_err(|err| err.to_string())?;
    Ok((stream, rest))
}

/// Writes `request` and reads the answer's head, within [`EXCHANGE`]: its status and
/// the bytes behind the head.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    let deadline = Instant::now() + EXCHANGE;
    stream.set_write_timeout(Some(EXCHANGE))?;
    stream.write_all(request)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut answer = httparse::Response::new(&mut fields);
        match answer.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                return Ok((answer.code.unwrap_or(0), buf[len..].to_vec()));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(invalid("answer head too large")),
            Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The idle mode: opens, holds, checks and closes `count` tunnels.
fn idle(target: SocketAddr, count: usize, hold: Duration, pids: &[u32]) -> Result<(), String> {
    let limit = raise_open_files();
    if limit < count as u64 + 64 {
        eprintln!("tunnels: the open files limit is {limit}; {count} tunnels need a little more");
    }
    let started = Instant::now();
    let mut tunnels = open_many(target, count);
    eprintln!(
        "tunnels: {} of {count} tunnels open in {:.1} s; holding them for {hold:?}",
        tunnels.len(),
        started.elapsed().as_secs_f64()
    );
    let sampler = sample::Sampler::start(pids);
    let (mut sent, mut answered, mut slowest) = (0, 0, Duration::ZERO);
    let end = Instant::now() + hold;
    while Instant::now() < end {
        let next = Instant::now() + Duration::from_secs(1);
        sent += 1;
        let asked = Instant::now();
        match get(target) {
            Ok(200) => {
                answered += 1;
                slowest = slowest.max(asked.elapsed());
            }
            Ok(status) => eprintln!("tunnels: a plain GET was answered {status}"),
            Err(err) => eprintln!("tunnels: a plain GET failed: {err}"),
        }
        thread::sleep(next.min(end).saturating_duration_since(Instant::now()));
    }
    let peaks = sampler.finish();
    let opened = tunnels.len();
    let echoed = echo_each(&mut tunnels);
    let alive = sample::alive(pids);
    drop(tunnels);
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    println!(
        "opened={opened} count={count} echoed={echoed} gets={answered}/{sent} get_max_ms={} threads={} rss_mib={} alive={}",
        slowest.as_millis(),
        or_dash(peaks.threads.map(|t| t.to_string())),
        or_dash(peaks.rss_kib.map(|k| format!("{:.1}", k as f64 / 1024.0))),
        if alive { "yes" } else { "no" },
    );
    Ok(())
}

/// Opens up to `count` tunnels from [`OPENERS`] threads, within [`OPEN_LIMIT`]; the
/// first failure of each kind is told on stderr, and the failures counted.
fn open_many(target: SocketAddr, count: usize) -> Vec<TcpStream> {
    let deadline = Instant::now() + OPEN_LIMIT;
    let openers: Vec<_> = (0..OPENERS)
        .map(|i| {
            let share = count / OPENERS + usize::from(i < count % OPENERS);
            thread::spawn(move || {
                let (mut open_ones, mut failed, mut told) = (Vec::new(), 0, Vec::new());
                for _ in 0..share {
                    if Instant::now() >= deadline {
                        failed += 1;
                        continue;
                    }
                    match open(target, "/idle") {
                        Ok((stream, _)) => open_ones.push(stream),
                        Err(err) => {
                            failed += 1;
                            let kind: String = err.chars().take_while(|c| *c != ':').collect();
                            if !told.contains(&kind) {
                                eprintln!("tunnels: a tunnel did not open: {err}");
                                told.push(kind);
                            }
                        }
                    }
                }
                (open_ones, failed)
            })
        })
        .collect();
    let mut tunnels = Vec::with_capacity(count);
    let mut failed = 0;
    for opener in openers {
        let (open_ones, lost) = opener.join().unwrap_or_default();
        tunnels.extend(open_ones);
        failed += lost;
    }
    if failed > 0 {
        eprintln!("tunnels: {failed} of {count} tunnels did not open");
    }
    tunnels
}

/// One plain GET through the balancer, `Connection: close`: its status.
fn get(target: SocketAddr) -> io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&target, EXCHANGE)?;
    let request = format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    exchange(&mut stream, request.as_bytes()).map(|(status, _)| status)
}

/// Sends one byte on every tunnel, then counts the tunnels that echo it, within
/// [`CHECK_LIMIT`] for them all.
fn echo_each(tunnels: &mut [TcpStream]) -> usize {
    let deadline = Instant::now() + CHECK_LIMIT;
    let sent: Vec<bool> = tunnels
        .iter_mut()
        .map(|tunnel| tunnel.write_all(b"?").is_ok())
        .collect();
    let mut echoed = 0;
    for (tunnel, _) in tunnels.iter_mut().zip(sent).filter(|(_, sent)| *sent) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tunnel.set_read_timeout(Some(left)).is_err() {
            break;
        }
        let mut byte = [0u8; 1];
        if matches!(tunnel.read(&mut byte), Ok(1)) && byte == *b"?" {
            echoed += 1;
        }
    }
    echoed
}

/// The stream mode: one tunnel to `/stream?bytes=N`, read to its end.
fn stream(target: SocketAddr, bytes: u64) -> Result<(), String> {
    let (mut tunnel, early) = open(target, &format!("/stream?bytes={bytes}"))?;
    let started = Instant::now();
    let read = read_up_to(&mut tunnel, bytes, early.len() as u64, started)?;
    let took = started.elapsed();
    if read != bytes {
        return Err(format!("the stream ended after {read} of {bytes} bytes"));
    }
    report(bytes, took);
    Ok(())
}

/// The echo mode: one tunnel; a thread sends `bytes` bytes while this one reads them
/// back. The tunnel is closed only once they are all back: nginx ends a tunnel as soon
/// as one side's FIN has been passed on, so a half-close would cut the echo short.
fn echo(target: SocketAddr, bytes: u64) -> Result<(), String> {
    let (mut tunnel, early) = open(target, "/echo")?;
    let mut writer = tunnel.try_clone().map_err(|err| err.to_string())?;
    writer
        .set_write_timeout(Some(PATIENCE))
        .map_err(|err| err.to_string())?;
    let started = Instant::now();
    let sender = thread::spawn(move || write_filler(&mut writer, b'e', bytes));
    let read = read_up_to(&mut tunnel, bytes, early.len() as u64, started);
    let took = started.elapsed();
    // Unblocks the sender if the read ended early.
    let _ = tunnel.shutdown(Shutdown::Both);
    let sent = sender
        .join()
        .map_err(|_| "the sending thread panicked".to_owned())?;
    let read = read?;
    sent.map_err(|err| format!("sending failed: {err}"))?;
    if read != bytes {
        return Err(format!("the echo ended after {read} of {bytes} bytes"));
    }
    report(bytes, took);
    Ok(())
}

/// Reads until `bytes` have come (counting the `already` that came with the `101`) or
/// the tunnel ends, within [`RUN_LIMIT`] of `started`: how many came.
fn read_up_to(
    tunnel: &mut TcpStream,
    bytes: u64,
    already: u64,
    started: Instant,
) -> Result<u64, String> {
    tunnel
        .set_read_timeout(Some(PATIENCE))
        .map_err(|err| err.to_string())?;
    let mut chunk = vec![0u8; BLOCK];
    let mut read = already;
    while read < bytes {
        if started.elapsed() > RUN_LIMIT {
            return Err(format!(
                "{read} of {bytes} bytes after {RUN_LIMIT:?}; giving up"
            ));
        }
        match tunnel.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => read += n as u64,
            Err(err) => return Err(format!("reading failed after {read} bytes: {err}")),
        }
    }
    Ok(read)
}

fn report(bytes: u64, took: Duration) {
    let seconds = took.as_secs_f64();
    println!(
        "bytes={bytes} seconds={seconds:.3} mb_per_s={:.0}",
        bytes as f64 / seconds / 1e6
    );
}
