//! Running several instances (README "Running several instances"): two processes on one
//! port with `--reuse-port`, the `/live` and `/ready` probes, and a SIGTERM with
//! `--drain-delay` that turns `/ready` off at once and keeps serving until the delay
//! ends. The processes are the binary, signalled by their PID.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::support::*;

fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", reserve_port()).parse().unwrap()
}

/// Starts the binary with `args` and waits until it accepts on `addr`.
fn spawn(addr: SocketAddr, args: &[&str]) -> Proc {
    let p = Proc::spawn(Command::new(BIN).args(args));
    wait_accepting(addr);
    p
}

/// A probe as a kubelet sends it: `Host: IP:PORT`, no token, on a fresh connection.
fn probe(admin: SocketAddr, method: &str, path: &str) -> Response {
    let mut c = Client::connect(admin);
    c.send(format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nUser-Agent: kube-probe/1.31\r\n\
         Connection: close\r\n\r\n"
    ));
    if method == "HEAD" {
        c.head_response()
    } else {
        c.response()
    }
}

/// The status and body of a GET probe.
fn probe_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let r = probe(admin, "GET", path);
    (r.status, r.body_str())
}

/// The access log lines on a child's stdout (the seed format's).
fn logged_requests(p: &Proc) -> usize {
    p.stdout()
        .lines()
        .filter(|l| l.starts_with("Received request from"))
        .count()
}

#[test]
fn two_instances_with_reuse_port_share_one_port_and_both_serve() {
    let backend = Backend::hello("ok");
    let addr = free_addr();
    let (listen, backend_addr) = (addr.to_string(), backend.addr.to_string());
    let args = [
        "--reuse-port",
        "--listen",
        &listen,
        "--backend",
        &backend_addr,
        "--workers",
        "2",
        "--log",
        "seed",
    ];
    let admin = free_addr().to_string();
    let a = spawn(addr, &[&args[..], &["--admin", &admin]].concat());
    let b = Proc::spawn(Command::new(BIN).args(args));
    b.wait_for_stdout_line("the second instance to listen", |l| {
        l.starts_with("roundhouse listening on")
    });
    // Without the flag the port is taken: SO_REUSEPORT is what lets the two share it.
    let (code, _, stderr) = run_cli(&["--listen", &listen, "--backend", &backend_addr]);
    assert_eq!(code, 2, "stderr:\n{stderr}");
    assert!(stderr.contains("cannot listen"), "stderr:\n{stderr}");
    // The admin port is never shared: a third instance on a's would answer its probes.
    let (code, _, stderr) = run_cli(&[&args[..], &["--admin", &admin]].concat());
    assert_eq!(code, 2, "stderr:\n{stderr}");
    assert!(stderr.contains("--admin"), "stderr:\n{stderr}");

    // The kernel picks a listener by a hash of each connection's addresses, so fresh
    // connections (a new source port each) land on both: 40 all on one would happen
    // once in 2^39 runs.
    const REQUESTS: usize = 40;
    for _ in 0..REQUESTS {
        assert_eq!(get(addr, "/"), (200, "ok".to_string()));
    }
    wait_until("every request in one of the two logs", || {
        logged_requests(&a) + logged_requests(&b) == REQUESTS
    });
    let (by_a, by_b) = (logged_requests(&a), logged_requests(&b));
    assert!(by_a > 0 && by_b > 0, "a answered {by_a}, b {by_b}");
}

#[test]
fn live_and_ready_answer_probes_without_the_token() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(
        &[&backend],
        &["--admin", "127.0.0.1:0", "--admin-token", "secret"],
    );
    let admin = lb.admin();
    assert_eq!(probe_get(admin, "/live"), (200, "live\n".to_string()));
    let ready = probe(admin, "GET", "/ready");
    assert_eq!(
        (ready.status, ready.body_str()),
        (200, "ready\n".to_string())
    );
    assert_eq!(
        ready.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    for path in ["/live", "/ready"] {
        let head = probe(admin, "HEAD", path);
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} has a body");
    }
    // The token still guards everything else, from the same prober.
    assert_eq!(probe(admin, "GET", "/metrics").status, 401);
    assert_eq!(probe(admin, "POST", "/ready").status, 401);
}

#[test]
fn ready_is_503_while_every_backend_is_down() {
    let dead = [dead_addr(), dead_addr()];
    let lb = start_balancer_on(
        &dead,
        &[
            "--admin",
            "127.0.0.1:0",
            "--health-path",
            "/health",
            "--health-interval",
            "50ms",
            "--fall",
            "1",
        ],
    );
    let admin = lb.admin();
    wait_until("the health checks to take both backends out", || {
        lb.current().backends().iter().all(|b| !b.is_healthy())
    });
    assert_eq!(
        probe_get(admin, "/ready"),
        (503, "not ready: no backend up\n".to_string())
    );
    // Not ready is not dead: the process serves, so a liveness probe leaves it running.
    assert_eq!(probe_get(admin, "/live"), (200, "live\n".to_string()));
}

#[test]
fn sigterm_with_a_drain_delay_turns_ready_off_at_once_and_serves_until_the_delay_ends() {
    const DRAIN: Duration = Duration::from_secs(2);
    let backend = Backend::hello("ok");
    let (addr, admin) = (free_addr(), free_addr());
    let (listen, admin_flag, backend_addr) = (
        addr.to_string(),
        admin.to_string(),
        backend.addr.to_string(),
    );
    let mut p = spawn(
        addr,
        &[
            "--listen",
            &listen,
            "--admin",
            &admin_flag,
            "--backend",
            &backend_addr,
            "--drain-delay",
            "2s",
            "--log",
            "off",
        ],
    );
    wait_accepting(admin);
    assert_eq!(probe_get(admin, "/ready"), (200, "ready\n".to_string()));
    let mut kept = Client::connect(addr);
    let r = kept.get("/");
    assert_eq!((r.status, r.header("connection")), (200, None));

    let signalled = Instant::now();
    kill_process(Pid::from_child(&p.child), Signal::TERM).expect("signal the balancer");
    wait_until("/ready to say the shutdown", || {
        probe_get(admin, "/ready") == (503, "not ready: shutting down\n".to_string())
    });
    assert!(
        signalled.elapsed() < DRAIN,
        "/ready took {:?} to turn off",
        signalled.elapsed()
    );
    assert_eq!(probe_get(admin, "/live"), (200, "live\n".to_string()));

    // A keep-alive connection from before the signal is served, and told to go.
    let r = kept.get("/");
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    // New connections are still accepted and served; each answer closes its connection.
    // The loop stops well before the delay ends: a connection the kernel has completed
    // but roundhouse not yet accepted when the listener closes would be reset.
    let mut served = 0;
    while signalled.elapsed() < DRAIN / 2 && served < 10_000 {
        let mut c = Client::connect(addr);
        let r = c.get("/");
        assert_eq!(
            (r.status, r.body_str().as_str(), r.header("connection")),
            (200, "ok", Some("close")),
            "request {served} after SIGTERM"
        );
        served += 1;
    }
    assert!(served > 0, "no request was made during the delay");
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited during the drain delay"
    );

    assert_eq!(p.exit_code(), 0, "stderr:\n{}", p.stderr());
    assert!(
        signalled.elapsed() >= DRAIN,
        "exited {:?} after SIGTERM, within the drain delay",
        signalled.elapsed()
    );
    assert!(
        p.stderr().contains("still serving for 2s"),
        "stderr:\n{}",
        p.stderr()
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "something still accepts after the exit"
    );
}
