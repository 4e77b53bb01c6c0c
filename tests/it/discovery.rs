//! Backends found by DNS: `--backend svc.test:PORT` looked up at a DNS server of the
//! test's own (`--resolver`) every second, whose answer the test changes, while a client
//! keeps sending requests. The backends listen on 127.0.0.2 and 127.0.0.3, on one port,
//! as the addresses of one name do.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::support::*;

const NAME: &str = "svc.test";

/// How long a change of the answer may take to show: the interval (1 s), a lookup, and
/// room for a loaded machine.
const BOUND: Duration = Duration::from_secs(5);

/// Polls `cond` until it holds, panicking with `what` after `bound`.
fn within(bound: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {bound:?}: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The DNS server, the backend on 127.0.0.2 ("a") and the one on 127.0.0.3 ("b").
fn setup() -> (DnsServer, Backend, Backend) {
    let mut listeners = same_port(&["127.0.0.2", "127.0.0.3"]).into_iter();
    let a = Backend::hello_on(listeners.next().unwrap(), "a");
    let b = Backend::hello_on(listeners.next().unwrap(), "b");
    (DnsServer::start(), a, b)
}

/// The flags for `svc.test` on `port`, looked up at `dns` every second.
fn flags(dns: &DnsServer, port: u16) -> Vec<String> {
    let backend = format!("{NAME}:{port}");
    let resolver = dns.resolver();
    [
        "--backend",
        &backend,
        "--resolver",
        &resolver,
        "--resolve-interval",
        "1s",
        "--workers",
        "4",
        "--log",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start(dns: &DnsServer, port: u16) -> Balancer {
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".into()];
    args.extend(flags(dns, port));
    start_balancer_with(&args)
}

/// The addresses of the backend set in use now.
fn set(lb: &Balancer) -> Vec<String> {
    lb.current()
        .backends()
        .iter()
        .map(|b| b.upstream.addr().to_string())
        .collect()
}

/// One GET of `path` on a fresh connection; None when anything goes wrong.
fn try_get(addr: SocketAddr, path: &str) -> Got {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(PATIENCE)).ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).ok()?;
    let r = ResponseReader::new(s).read_response(false).ok()??;
    Some((r.status, r.body_str()))
}

/// What one request got: status and body, or None for no answer at all.
type Got = Option<(u16, String)>;

/// A client in a loop, one request at a time, each on a fresh connection, until
/// stopped; at most 20,000 requests or 60 s.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    /// Every answer that was not 200.
    failures: Arc<Mutex<Vec<Got>>>,
    thread: JoinHandle<()>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, answered, failures) = (stop.clone(), answered.clone(), failures.clone());
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                for _ in 0..20_000 {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    let answer = try_get(addr, "/");
                    if !matches!(answer, Some((200, _))) {
                        failures.lock().unwrap().push(answer);
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Load {
            stop,
            answered,
            failures,
            thread,
        }
    }

    /// Waits until `n` more requests are answered: each of them was sent after the call.
    fn more(&self, n: usize) {
        let target = self.answered.load(Ordering::SeqCst) + n + 1;
        wait_until("the client's requests", || {
            self.answered.load(Ordering::SeqCst) >= target
        });
    }

    /// Stops the client: how many requests it made, and the failures.
    fn finish(self) -> (usize, Vec<Got>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (self.answered.load(Ordering::SeqCst), failures)
    }
}

#[test]
fn the_set_follows_the_answers_and_no_request_fails() {
    let (dns, a, b) = setup();
    let port = a.addr.port();
    let (at_a, at_b) = (a.addr.to_string(), b.addr.to_string());
    dns.set(NAME, &["127.0.0.2"]);
    let lb = start(&dns, port);
    assert_eq!(set(&lb), std::slice::from_ref(&at_a));
    let load = Load::start(lb.addr);
    // A request that waits on a until the test lets it go.
    let held = {
        let addr = lb.addr;
        thread::spawn(move || try_get(addr, "/held"))
    };
    wait_until("the held request to reach a", || {
        a.requests().iter().any(|r| r.target == "/held")
    });

    // A second address: it gets traffic within a bounded wait.
    dns.set(NAME, &["127.0.0.3", "127.0.0.2"]);
    within(BOUND, "b to get requests", || b.count() > 0);
    assert_eq!(set(&lb), [at_a.clone(), at_b.clone()], "sorted");

    // a's address goes: once the set has changed, a gets no new request...
    dns.set(NAME, &["127.0.0.3"]);
    within(BOUND, "the set to drop a", || set(&lb) == [at_b.clone()]);
    // (a request that picked a just before the swap may still be on its way)
    load.more(2);
    let at_a_then = a.count();
    load.more(50);
    assert_eq!(
        a.count(),
        at_a_then,
        "a got requests after its address went"
    );
    // ...and the request in flight on it finishes there.
    a.release();
    assert_eq!(held.join().unwrap(), Some((200, "a".to_string())));

    // The server stops answering: a failed lookup keeps the set.
    let asked = dns.queries(NAME);
    dns.silence(NAME);
    // One lookup asks twice (one retry), and the third query is the next lookup's.
    wait_until("two lookups to go unanswered", || {
        dns.queries(NAME) >= asked + 3
    });
    assert_eq!(set(&lb), std::slice::from_ref(&at_b));
    load.more(10);

    let (answered, failures) = load.finish();
    assert!(answered > 100, "only {answered} requests");
    assert_eq!(failures, [], "of {answered} requests");
}

#[test]
fn no_address_counts_only_when_the_next_lookup_says_so_too() {
    let (dns, a, b) = setup();
    let port = a.addr.port();
    dns.set(NAME, &["127.0.0.2"]);
    let lb = start(&dns, port);
    assert_eq!(try_get(lb.addr, "/"), Some((200, "a".to_string())));

    // Each answer waits a little: the test sees the next query arrive before the
    // resolver thread can have its answer.
    dns.delay(Duration::from_millis(300));
    dns.nxdomain(NAME);
    wait_until("one NXDOMAIN answer", || dns.nxdomains(NAME) >= 1);
    // The next lookup has begun: the first one's answer was taken, and kept the set.
    let asked = dns.queries(NAME);
    wait_until("the next lookup", || dns.queries(NAME) > asked);
    assert_eq!(
        set(&lb),
        [a.addr.to_string()],
        "one NXDOMAIN emptied the set"
    );
    assert_eq!(try_get(lb.addr, "/"), Some((200, "a".to_string())));

    // The second one in a row takes effect: no backend, 503.
    within(BOUND, "the second NXDOMAIN to empty the set", || {
        set(&lb).is_empty()
    });
    let (status, _) = try_get(lb.addr, "/").expect("an answer");
    assert_eq!(status, 503);

    // The name comes back.
    dns.set(NAME, &["127.0.0.3"]);
    within(BOUND, "b to get requests", || {
        try_get(lb.addr, "/") == Some((200, "b".to_string()))
    });
    assert!(b.count() > 0);
}

#[test]
fn a_reload_brings_its_names_to_the_resolver_thread() {
    let (dns, a, b) = setup();
    let port = a.addr.port();
    dns.set(NAME, &["127.0.0.2"]);
    let listen = format!("127.0.0.1:{}", reserve_port());
    let path = std::env::temp_dir().join(format!(
        "roundhouse-test-{}-discovery.toml",
        std::process::id()
    ));
    let file = |backend: &str| {
        let text = format!(
            "listen = \"{listen}\"\nworkers = 2\nlog = \"off\"\nresolver = \"{}\"\n\
             resolve_interval = \"1s\"\n\n[[backend]]\naddress = \"{backend}\"\n",
            dns.resolver()
        );
        std::fs::write(&path, text).expect("write the config file");
    };
    // An address at first: no name to look up, no resolver thread.
    file(&b.addr.to_string());
    let p = Proc::spawn(Command::new(BIN).args(["--config", path.to_str().unwrap()]));
    let addr: SocketAddr = listen.parse().unwrap();
    wait_accepting(addr);
    assert_eq!(try_get(addr, "/"), Some((200, "b".to_string())));

    // The reload names svc.test: looked up at once, and again from then on.
    file(&format!("{NAME}:{port}"));
    kill_process(Pid::from_child(&p.child), Signal::HUP).expect("signal the balancer");
    wait_until("the reload", || p.stderr().contains("reloaded"));
    assert_eq!(try_get(addr, "/"), Some((200, "a".to_string())));
    dns.set(NAME, &["127.0.0.3"]);
    within(BOUND, "the new answer to be used", || {
        try_get(addr, "/") == Some((200, "b".to_string()))
    });
    let _ = std::fs::remove_file(&path);
    assert!(
        p.stderr()
            .contains(&format!("{NAME}:{port} resolves to {}", b.addr)),
        "stderr:\n{}",
        p.stderr()
    );
}
