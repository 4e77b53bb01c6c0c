//! Fair limits per client (README "Running several instances", Limits per client): over
//! `--rate-limit` a client's requests get 429 with `Retry-After` and its connection stays
//! open; over `--max-connections-per-client` its new connections get 429 and close;
//! another client (here 127.0.0.2, the client socket bound to it) is not affected, and
//! every refusal is logged and counted like the others.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Instant;

use socket2::{Domain, Socket, Type};

use crate::admin::parse_exposition;
use crate::support::*;

/// A connection to `addr` from the local address `from` (a loopback address of
/// 127.0.0.0/8), so that the balancer sees another client.
fn connect_from(from: &str, addr: SocketAddr) -> Client {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local: SocketAddr = SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0);
    socket.bind(&local.into()).expect("bind the client socket");
    socket
        .connect(&addr.into())
        .expect("connect to the balancer");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    let _ = stream.set_nodelay(true);
    Client {
        reader: ResponseReader::new(stream),
    }
}

/// `roundhouse_requests_total{backend="none",code=class}`: requests no backend heard of.
fn no_backend_requests(admin: SocketAddr, class: &str) -> f64 {
    let mut c = Client::connect(admin);
    c.send("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let text = c.response().body_str();
    let metrics = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let labels = [("backend", "none"), ("code", class)];
    metrics
        .value("roundhouse_requests_total", &labels)
        .unwrap_or(0.0)
}

#[test]
fn over_the_rate_a_client_gets_429_with_retry_after_and_another_client_does_not() {
    let backend = Backend::hello("a");
    let lb = start_balancer(
        &[&backend],
        &[
            "--rate-limit",
            "10/s",
            "--rate-burst",
            "5",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let mut c = connect_from("127.0.0.1", lb.addr);
    let began = Instant::now();
    // One keep-alive connection: a 429 leaves it open for the next request.
    let statuses: Vec<u16> = (0..30)
        .map(|_| {
            let r = c.get("/");
            if r.status == 429 {
                // 10/s: the next token is at most 100 ms away.
                assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
                assert_eq!(r.header("connection"), None, "{r:?}");
            }
            r.status
        })
        .collect();
    // The bucket refills at 10/s while the burst goes on; a slow machine earns more.
    let earned = began.elapsed().as_millis() as usize / 100 + 1;
    let answered = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(answered + refused, 30, "{statuses:?}");
    assert!(statuses[..5].iter().all(|&s| s == 200), "{statuses:?}");
    assert!(
        (5..=5 + earned).contains(&answered),
        "{answered} answered, {earned} earned: {statuses:?}"
    );
    // Another client has a bucket of its own.
    let mut other = connect_from("127.0.0.2", lb.addr);
    for _ in 0..5 {
        assert_eq!(other.get("/").status, 200);
    }
    // No backend heard of the refused ones; each was counted as refused.
    assert_eq!(backend.count(), answered + 5);
    wait_until("the refusals to be counted", || {
        no_backend_requests(lb.admin(), "4xx") >= refused as f64
    });
    assert_eq!(no_backend_requests(lb.admin(), "4xx"), refused as f64);
}

#[test]
fn over_its_connections_a_client_gets_429_and_another_still_connects() {
    let backend = Backend::hello("a");
    let lb = start_balancer(&[&backend], &["--max-connections-per-client", "2"]);
    // Two connections, each answered and kept open.
    let mut held: Vec<Client> = (0..2).map(|_| connect_from("127.0.0.1", lb.addr)).collect();
    for c in &mut held {
        assert_eq!(c.get("/").status, 200);
    }
    let mut third = connect_from("127.0.0.1", lb.addr);
    third.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = third.response();
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(third.rest().1.is_closed());
    assert_eq!(backend.count(), 2);
    // Another client is not affected.
    assert_eq!(connect_from("127.0.0.2", lb.addr).get("/").status, 200);
    // A closed connection gives its place back.
    drop(held.pop());
    wait_until("a place freed by the close", || {
        let mut c = connect_from("127.0.0.1", lb.addr);
        c.send("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        c.response().status == 200
    });
}

#[test]
fn a_refusal_over_a_limit_leaves_one_log_line_with_its_termination_code() {
    let addr: SocketAddr = format!("127.0.0.1:{}", reserve_port()).parse().unwrap();
    let backend = Backend::hello("a");
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", &addr.to_string(), "--log", "json"]);
    cmd.args(["--backend", &backend.addr.to_string(), "--workers", "2"]);
    cmd.args(["--rate-limit", "1/m", "--rate-burst", "1"]);
    cmd.args(["--max-connections-per-client", "1"]);
    let p = Proc::spawn(&mut cmd);
    // The check connects from 127.0.0.1; the test's client is 127.0.0.3.
    wait_accepting(addr);
    let lines = || -> Vec<serde_json::Value> {
        p.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let mut c = connect_from("127.0.0.3", addr);
    assert_eq!(c.get("/first").status, 200);
    let r = c.get("/second");
    assert_eq!(r.status, 429, "{r:?}");
    let wait: u32 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&wait), "{r:?}");
    let mut second = connect_from("127.0.0.3", addr);
    second.send("GET /third HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(second.response().status, 429);
    wait_until("3 access-log lines", || lines().len() >= 3);
    let lines = lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let line = |target: serde_json::Value| {
        lines
            .iter()
            .find(|l| l["target"] == target)
            .unwrap_or_else(|| panic!("no line for {target}: {lines:#?}"))
    };
    let rated = line("/second".into());
    assert_eq!(rated["status"], 429, "{rated}");
    assert_eq!(rated["termination"], "PR", "{rated}");
    assert_eq!(rated["backend"], serde_json::Value::Null, "{rated}");
    // Refused before its head was read: no request in the line.
    let connection = line(serde_json::Value::Null);
    assert_eq!(connection["status"], 429, "{connection}");
    assert_eq!(connection["termination"], "PR", "{connection}");
    assert_eq!(backend.count(), 1);
}

#[test]
fn help_gives_the_limits_their_defaults_and_a_bad_rate_is_a_usage_error() {
    let (code, out, err) = run_cli(&["--help"]);
    assert_eq!(code, 0, "stderr: {err}");
    for (flag, default) in [
        ("--max-connections-per-client", "(default: 0)"),
        ("--rate-limit", "(default: off)"),
        ("--rate-burst", "(default: the rate per second, at least 1)"),
    ] {
        // From the flag's line in the list of options to the next flag's (a long
        // flag's text starts on the line below).
        let start = [" ", "\n"]
            .iter()
            .find_map(|after| out.find(&format!("\n  {flag}{after}")))
            .expect(flag)
            + 3;
        let text = &out[start..];
        let text = &text[..text.find("\n  --").unwrap_or(text.len())];
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(text.ends_with(default), "{flag}: {text}");
    }
    let (code, _, err) = run_cli(&["--listen", "127.0.0.1:0", "--rate-limit", "fast"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.trim(),
        "roundhouse: --rate-limit: 'fast' is not a rate (examples: 100/s, 6000/m, 10/h)"
    );
}
