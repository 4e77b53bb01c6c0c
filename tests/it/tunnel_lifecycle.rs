//! A tunnel among the other things the balancer does (README "WebSocket and Upgrade":
//! the upgrade, limits, "Reload, drain and shutdown", "Balancing"): the pick and its
//! retries, least-conn, a drain, the stop at the end of `--grace`, back-pressure, a raw
//! tunnel through a TLS listener, and the requests that are not upgraded (one with a
//! body, one to an `https://` backend). The helpers are tunnels.rs's.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::support::*;
use crate::tunnels::{assert_closed, assert_relays, spawn_balancer, tunnel, tunnels_open};

/// The next tunnel that reached one of `backends`: which one, and its end there.
fn end_at_either(backends: [&UpgradeBackend; 2]) -> (usize, BackendEnd) {
    let mut found = None;
    wait_until("the upgrade to reach a backend", || {
        found = backends
            .iter()
            .enumerate()
            .find_map(|(i, b)| b.try_next_end().map(|end| (i, end)));
        found.is_some()
    });
    found.unwrap()
}

fn admin_post(admin: SocketAddr, path: &str) {
    let mut c = Client::connect(admin);
    c.send(format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    let r = c.response();
    assert_eq!(r.status, 200, "POST {path}: {}", r.body_str());
}

#[test]
fn a_refused_connect_sends_the_upgrade_to_the_next_backend() {
    let backend = UpgradeBackend::switching();
    let lb = start_balancer_on(&[dead_addr(), backend.addr], &[]);
    // Round robin offers the dead backend first to one upgrade of every two.
    for i in 0..4 {
        let (mut client, mut server) = tunnel(lb.addr, &backend, &format!("/retried/{i}"));
        assert_relays(&mut client, &mut server, &format!("tunnel {i}"));
    }
}

#[test]
fn least_conn_counts_an_open_tunnel_as_in_flight() {
    let (a, b) = (UpgradeBackend::switching(), UpgradeBackend::switching());
    let lb = start_balancer_on(&[a.addr, b.addr], &["--strategy", "least-conn"]);
    let mut client = open_tunnel_101(lb.addr, "/held");
    let (i, mut held) = end_at_either([&a, &b]);
    let (busy, idle) = if i == 0 { (&a, &b) } else { (&b, &a) };
    let set = lb.current();
    let in_flight = |n: usize| set.backends()[n].in_flight();
    wait_until("the tunnel to count as in flight", || in_flight(i) == 1);
    let (busy_before, idle_before) = (busy.connections(), idle.connections());
    // Each plain answer says Connection: close, so each request is a connection of its
    // own: the counts say where every one went. A request counts until its worker is
    // done with it, a moment after its answer is out: each waits for the one before.
    for _ in 0..4 {
        wait_until("the last request to be done", || in_flight(1 - i) == 0);
        assert_eq!(get(lb.addr, "/plain"), (200, "plain".to_string()));
    }
    assert_eq!(
        busy.connections(),
        busy_before,
        "a request went to the tunnel's backend"
    );
    assert_eq!(idle.connections(), idle_before + 4);
    assert_eq!(in_flight(i), 1, "the tunnel's count");
    assert_relays(&mut client, &mut held.end, "the tunnel");
    drop((client, held));
    wait_until("the closed tunnel to count no more", || in_flight(i) == 0);
}

#[test]
fn a_drained_backend_keeps_its_tunnels_and_gets_no_new_upgrade() {
    let (a, b) = (UpgradeBackend::switching(), UpgradeBackend::switching());
    let lb = start_balancer_on(&[a.addr, b.addr], &["--admin", "127.0.0.1:0"]);
    let mut client = open_tunnel_101(lb.addr, "/held");
    let (i, mut held) = end_at_either([&a, &b]);
    let (drained, other) = if i == 0 { (&a, &b) } else { (&b, &a) };

    admin_post(lb.admin(), &format!("/backends/{}/drain", drained.addr));
    assert_relays(&mut client, &mut held.end, "the drained backend's tunnel");
    for n in 0..3 {
        let path = format!("/after-drain/{n}");
        let (mut c, mut s) = tunnel(lb.addr, other, &path);
        assert_relays(&mut c, &mut s, &path);
    }
    assert!(
        drained.try_next_end().is_none(),
        "an upgrade reached the drained backend"
    );
    assert_relays(
        &mut client,
        &mut held.end,
        "the drained backend's tunnel, still",
    );
}

#[test]
fn sigterm_closes_tunnels_at_the_end_of_grace_with_a_plain_close() {
    let backend = UpgradeBackend::switching();
    let mut lb = spawn_balancer(&[backend.addr], &["--grace", "2s", "--log", "json"]);
    let (mut client, mut server) = tunnel(lb.addr, &backend, "/until-the-stop");
    assert_eq!(tunnels_open(lb.admin), 1.0);

    kill_process(Pid::from_child(&lb.p.child), Signal::TERM).expect("signal the balancer");
    wait_until("the balancer to stop accepting", || {
        lb.p.stderr().contains("stopped accepting")
    });
    // Within the grace the tunnel goes on; at its end both sides are closed, with no
    // byte made up (no close frame: the balancer does not parse frames).
    assert_relays(&mut client, &mut server, "during the grace");
    assert_closed(&mut client, "the client");
    assert_closed(&mut server, "the backend");

    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = lb.p.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the balancer did not exit");
        thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.code(), Some(0), "stderr:\n{}", lb.p.stderr());
    let line = lb.p.wait_for_stdout_line("the tunnel's log line", |l| {
        l.contains("\"/until-the-stop\"")
    });
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(
        (v["status"].clone(), v["closed_by"].clone()),
        (101.into(), "shutdown".into())
    );
}

/// Writes the bytes of `pattern` into `sender` without blocking until no byte has gone
/// in for a while (the tunnel is full) or `cap` bytes went in; returns how many did,
/// and what is left of a chunk that went in only in part.
fn fill_until_stalled(sender: &mut TunnelEnd, pattern: &mut Pattern, cap: u64) -> (u64, Vec<u8>) {
    sender.stream.set_nonblocking(true).unwrap();
    let mut sent = 0u64;
    let mut chunk = Vec::new();
    let mut stalled_since = None::<Instant>;
    while sent < cap {
        if chunk.is_empty() {
            chunk = vec![0u8; 64 * 1024];
            let n = pattern.fill(&mut chunk);
            chunk.truncate(n);
        }
        match sender.stream.write(&chunk) {
            Ok(n) => {
                chunk.drain(..n);
                sent += n as u64;
                stalled_since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                // A pause longer than any relay step: the tunnel is full, not slow. On a
                // loaded machine this may stop early, which only weakens the check.
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("write into the tunnel after {sent} bytes: {e}"),
        }
    }
    sender.stream.set_nonblocking(false).unwrap();
    (sent, chunk)
}

/// A sender faster than its receiver is held back once the tunnel's buffers are full
/// (the balancer stops reading it), and every byte arrives, in order, once the receiver
/// reads. Both ways.
#[test]
fn a_full_tunnel_holds_the_sender_back_and_loses_no_byte() {
    // Far more than the balancer's two 64 KiB buffers and the kernel's on four sockets
    // (a receive buffer may grow to tcp_rmem's maximum, 32 MiB on some machines): a
    // tunnel that takes this much without stalling buffers without end.
    const CAP: u64 = 160 << 20;
    const AFTER: u64 = 4 << 20;
    let backend = UpgradeBackend::switching();
    let lb = start_balancer_on(&[backend.addr], &[]);
    for (seed, direction) in [(1u64, "down"), (2, "up")] {
        let (client, server) = tunnel(lb.addr, &backend, &format!("/flood-{direction}"));
        let (mut sender, mut receiver) = if direction == "down" {
            (server, client)
        } else {
            (client, server)
        };
        let mut pattern = Pattern::new(seed, CAP + AFTER);
        let (held, rest_of_chunk) = fill_until_stalled(&mut sender, &mut pattern, CAP);
        assert!(
            held < CAP,
            "{direction}: {held} bytes went in and the sender never stalled"
        );

        let total = held + AFTER;
        let writer = thread::spawn(move || {
            sender.send(&rest_of_chunk);
            let mut left = AFTER - rest_of_chunk.len() as u64;
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                let n = pattern.fill(&mut buf[..(left.min(64 * 1024)) as usize]);
                sender.send(&buf[..n]);
                left -= n as u64;
            }
            sender
        });
        let mut got = Fnv::new();
        let mut left = total;
        while left > 0 {
            let n = left.min(1 << 20);
            got.update(&receiver.read_n(n as usize));
            left -= n;
        }
        assert_eq!(
            got.finish(),
            Pattern::hash_of(seed, total),
            "{direction}: the {total} bytes came changed"
        );
        let _sender = writer.join().expect("the writer");
    }
}

#[test]
fn an_upgrade_with_a_body_is_proxied_as_a_plain_request() {
    let backend = Backend::hello("plain");
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    c.send(
        "POST /with-body HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nContent-Length: 5\r\n\r\nhello",
    );
    let r = c.response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "plain"));
    assert_eq!(r.header("upgrade"), None);
    let seen = backend.only_request();
    assert_eq!(
        (seen.target.as_str(), seen.body.as_slice()),
        ("/with-body", &b"hello"[..])
    );
    assert_eq!(seen.header("upgrade"), None, "{seen:?}");
    let connection = seen
        .headers_named("connection")
        .join(",")
        .to_ascii_lowercase();
    assert!(!connection.contains("upgrade"), "{seen:?}");
}

#[cfg(feature = "tls")]
#[test]
fn an_upgrade_to_an_https_backend_gets_501() {
    let ca = TestCa::new();
    let backend = TlsBackend::start(&ca.issue("server", &["localhost"]), None);
    let url = format!("https://localhost:{}", backend.addr.port());
    let lb = start_balancer_on(&[], &["--backend", &url, "--backend-ca", &ca.ca_path()]);
    let (head, _end) = open_tunnel(lb.addr, "/ws", b"");
    assert_eq!(head.status, 501, "{}", String::from_utf8_lossy(&head.head));
    // A plain request still goes to it.
    assert_eq!(get(lb.addr, "/"), (200, "secure".to_string()));
}

/// Over TLS, bytes behind the upgrade head arrive in the same record as the head, and
/// come out of rustls with it, where no readiness event announces them: they must reach
/// the backend all the same. Then bytes both ways, and a half-close from the client
/// (close_notify and a FIN) that the backend sees as EOF while it can still answer.
#[cfg(feature = "tls")]
#[test]
fn a_tls_tunnel_passes_early_bytes_and_a_half_close() {
    use std::io::Read;
    let ca = TestCa::new();
    let leaf = ca.issue("site", &["localhost"]);
    let backend = UpgradeBackend::switching_then(b"hello from behind");
    let (_lb, tls) = start_tls_balancer_on(&[backend.addr], &[&leaf], &[]);
    let mut stream = TlsClient::new(&ca)
        .connect_stream(tls, "localhost")
        .expect("a TLS handshake");
    let mut first = upgrade_head("/tls-raw").into_bytes();
    first.extend_from_slice(b"right behind the head");
    stream.write_all(&first).unwrap();
    stream.flush().unwrap();

    let mut reader = ResponseReader::new(stream);
    let head = reader
        .read_head()
        .expect("read the answer")
        .expect("an answer");
    assert_eq!(head.status, 101, "{}", String::from_utf8_lossy(&head.head));
    let (mut stream, mut got) = reader.into_parts();
    let mut server = backend.next_end();
    assert_eq!(server.end.read_n(21), b"right behind the head");
    let mut read_exact = |stream: &mut dyn io::Read, n: usize| -> Vec<u8> {
        while got.len() < n {
            let mut buf = [0u8; 4096];
            let k = stream.read(&mut buf).expect("read over TLS");
            assert!(
                k > 0,
                "the TLS tunnel closed after {} of {n} bytes",
                got.len()
            );
            got.extend_from_slice(&buf[..k]);
        }
        got.drain(..n).collect()
    };
    assert_eq!(read_exact(&mut stream, 17), b"hello from behind");

    stream.write_all(b"up over tls").unwrap();
    stream.flush().unwrap();
    assert_eq!(server.end.read_n(11), b"up over tls");
    server.end.send("down over tls");
    assert_eq!(read_exact(&mut stream, 13), b"down over tls");

    stream.conn.send_close_notify();
    stream.flush().unwrap();
    stream.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        server.end.rest(),
        (Vec::new(), Ending::Eof),
        "the client's FIN"
    );
    server.end.send("a last answer");
    assert_eq!(read_exact(&mut stream, 13), b"a last answer");
    drop(server);
    // The backend's FIN comes to the client as close_notify, then a FIN: a clean end.
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => {}
        other => panic!("not a clean end of the tunnel: {other:?}"),
    }
}
