//! `make chaos`: do clients notice when backends die? Starts three demo backends
//! (`examples/backend.rs`) and roundhouse in front of them, all on 127.0.0.1, then sends
//! GETs from a few keep-alive clients for 60 s while, every 2 s, one backend is killed
//! (SIGKILL, no goodbye) and restarted on its port half a second later, in turn. Prints
//! the requests sent, how many failed (and why), and the worst latency.
//!
//! Bounded and local: it runs for `--seconds`, talks to loopback only, and kills only
//! the processes it started, by their own PIDs (`Child::kill`); all of them are stopped
//! when it ends, whatever way it ends.
//!
//! Run `make chaos`, or after `make build`:
//! `target/release/examples/chaos --seconds 20 --lb-arg=--health-path --lb-arg=/`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Backends killed and restarted while clients send GETs through roundhouse.
#[derive(argh::FromArgs)]
struct Args {
    /// how long to send requests, in seconds (default: 60, at most 600)
    #[argh(option, default = "60")]
    seconds: u64,

    /// backends behind roundhouse (default: 3)
    #[argh(option, default = "3")]
    backends: usize,

    /// milliseconds between two kills (default: 2000)
    #[argh(option, default = "2000")]
    every_ms: u64,

    /// milliseconds a killed backend stays down before it is restarted (default: 500)
    #[argh(option, default = "500")]
    down_ms: u64,

    /// client threads, each with one keep-alive connection (default: 8)
    #[argh(option, default = "8")]
    clients: usize,

    /// one more roundhouse flag, e.g. --lb-arg=--health-path --lb-arg=/ (repeatable;
    /// default: none besides --log off and --workers 32)
    #[argh(option)]
    lb_arg: Vec<String>,

    /// where roundhouse's stderr goes (default: discarded)
    #[argh(option)]
    lb_stderr: Option<PathBuf>,
}

/// Every process this run started; killed (by PID, through `Child`) when dropped.
#[derive(Default)]
struct Children(Mutex<Vec<(String, Child)>>);

impl Children {
    fn spawn(&self, name: &str, cmd: &mut Command) -> io::Result<()> {
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
        self.0.lock().unwrap().push((name.to_owned(), child));
        Ok(())
    }

    /// Kills the process started as `name` and waits for it.
    fn kill(&self, name: &str) {
        let mut all = self.0.lock().unwrap();
        if let Some(i) = all.iter().position(|(n, _)| n == name) {
            let (_, mut child) = all.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in self.0.get_mut().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one client thread saw.
#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    /// Failures by reason: a status other than 200, or a broken exchange.
    failed: Vec<String>,
    worst: Duration,
    latencies: Vec<Duration>,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("chaos: {err}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> io::Result<bool> {
    let seconds = args.seconds.clamp(1, 600);
    let bin = binaries()?;
    let children = Children::default();

    let ports: Vec<u16> = (0..args.backends.max(1))
        .map(|_| free_port())
        .collect::<io::Result<_>>()?;
    for &port in &ports {
        start_backend(&children, &bin.backend, port)?;
    }
    let listen = free_port()?;
    let mut lb = Command::new(&bin.roundhouse);
    lb.args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--log", "off", "--workers", "32"]);
    for port in &ports {
        lb.args(["--backend", &format!("127.0.0.1:{port}")]);
    }
    lb.args(&args.lb_arg);
    lb.stderr(match &args.lb_stderr {
        Some(path) => Stdio::from(std::fs::File::create(path)?),
        None => Stdio::null(),
    });
    children.spawn("roundhouse", &mut lb)?;
    let lb_addr = SocketAddr::from(([127, 0, 0, 1], listen));
    wait_accepting(lb_addr)?;
    println!(
        "chaos: {} backends behind roundhouse on {lb_addr}; {} clients for {seconds} s; one \
         backend killed every {} ms, down {} ms",
        ports.len(),
        args.clients,
        args.every_ms,
        args.down_ms
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..args.clients.max(1))
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || client(lb_addr, &stop))
        })
        .collect();

    let end = Instant::now() + Duration::from_secs(seconds);
    let mut kills = 0usize;
    let mut next_kill = Instant::now() + Duration::from_millis(args.every_ms);
    while Instant::now() < end {
        let now = Instant::now();
        if now < next_kill {
            thread::sleep((next_kill - now).min(end - now));
            continue;
        }
        let port = ports[kills % ports.len()];
        children.kill(&format!("backend-{port}"));
        thread::sleep(Duration::from_millis(args.down_ms));
        start_backend(&children, &bin.backend, port)?;
        kills += 1;
        next_kill += Duration::from_millis(args.every_ms);
    }
    stop.store(true, Ordering::Relaxed);

    let mut total = Tally::default();
    for c in clients {
        let t = c.join().expect("client thread");
        total.sent += t.sent;
        total.ok += t.ok;
        total.failed.extend(t.failed);
        total.worst = total.worst.max(t.worst);
        total.latencies.extend(t.latencies);
    }
    total.latencies.sort();
    let p99 = total
        .latencies
        .get(total.latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    println!(
        "chaos: {kills} kills; requests sent {}, ok {}, failed {}; worst latency {:.1} ms \
         (p99 {:.2} ms)",
        total.sent,
        total.ok,
        total.failed.len(),
        total.worst.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    let mut reasons = total.failed.clone();
    reasons.sort();
    reasons.dedup();
    for reason in reasons {
        let n = total.failed.iter().filter(|r| **r == reason).count();
        println!("chaos:   {n} × {reason}");
    }
    Ok(total.failed.is_empty())
}

/// The roundhouse binary and the demo backend, next to this example in cargo's target
/// directory (`make chaos` builds them first).
struct Binaries {
    roundhouse: PathBuf,
    backend: PathBuf,
}

fn binaries() -> io::Result<Binaries> {
    let exe = std::env::current_exe()?;
    let examples = exe.parent().unwrap_or(Path::new("."));
    let found = Binaries {
        roundhouse: examples
            .parent()
            .unwrap_or(Path::new("."))
            .join("roundhouse"),
        backend: examples.join("backend"),
    };
    for path in [&found.roundhouse, &found.backend] {
        if !path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is missing; run `make build` first", path.display()),
            ));
        }
    }
    Ok(found)
}

fn start_backend(children: &Children, bin: &Path, port: u16) -> io::Result<()> {
    children.spawn(
        &format!("backend-{port}"),
        Command::new(bin)
            .args(["--port", &port.to_string()])
            .stderr(Stdio::null()),
    )?;
    wait_accepting(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A port that was free a moment ago, below Linux's ephemeral range (32768 and up): a
/// backend that is down must not have its port taken as the source port of some
/// connection, and a connect to a dead port in that range can connect to itself.
fn free_port() -> io::Result<u16> {
    for _ in 0..100 {
        let port = fastrand::u16(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free port in 20000-32000",
    ))
}

fn wait_accepting(addr: SocketAddr) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing accepts on {addr}"),
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// One client: GET after GET on a keep-alive connection (a new one after any failure)
/// until `stop`.
fn client(addr: SocketAddr, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        tally.sent += 1;
        let result = match conn.as_mut() {
            Some(c) => exchange(c),
            None => TcpStream::connect(addr).and_then(|s| {
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                s.set_nodelay(true)?;
                let c = conn.insert(BufReader::new(s));
                exchange(c)
            }),
        };
        let took = started.elapsed();
        tally.worst = tally.worst.max(took);
        tally.latencies.push(took);
        match result {
            Ok((200, keep_alive)) => {
                tally.ok += 1;
                if !keep_alive {
                    conn = None;
                }
            }
            Ok((status, _)) => {
                tally.failed.push(format!("status {status}"));
                conn = None;
            }
            Err(err) => {
                tally.failed.push(format!("{:?}", err.kind()));
                conn = None;
            }
        }
    }
    tally
}

/// Sends one GET and reads the answer: (status, whether the connection stays open).
fn exchange(conn: &mut BufReader<TcpStream>) -> io::Result<(u16, bool)> {
    conn.get_mut()
        .write_all(b"GET /chaos HTTP/1.1\r\nHost: chaos\r\n\r\n")?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
    let (mut length, mut keep_alive) = (0usize, true);
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad length"))?;
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                keep_alive = false;
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok((status, keep_alive))
}
