//! TLS listeners (README "TLS"): `--tls-listen` terminates HTTPS with the
//! `--tls-cert`/`--tls-key` pairs, picked by SNI; it speaks TLS 1.2 and 1.3 with ALPN
//! `http/1.1` only and resumes sessions; a handshake waits on the event side like a
//! request head does, within `--client-timeout` in all; SIGHUP re-reads the certificates;
//! the backend is told `X-Forwarded-Proto: https`; `--https-redirect` sends plain clients
//! over; the admin interface can speak TLS too; failed handshakes are counted by reason
//! and the json log says the version and the name. The clients are rustls (with a
//! certificate check, or without one to see which certificate the server picked), curl
//! and openssl where installed, and raw sockets for what no library would send. All of
//! it needs the `tls` feature (tests.rs says so once for the module).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use rustls::client::{Resumption, Tls12Resumption};
use rustls::version::{TLS12, TLS13};
use rustls::{AlertDescription, HandshakeKind, ProtocolVersion};

use crate::admin::{Exposition, parse_exposition};
use crate::support::*;

/// The TLS alerts that refuse a ClientHello (RFC 8446 §6.2): `handshake_failure`
/// (rustls's when no cipher suite is shared, as with TLS 1.1's) and `protocol_version`.
const REFUSALS: [u8; 2] = [40, 70];

/// The listener's usual certificate: `localhost`, `site.test` and 127.0.0.1.
fn site(ca: &TestCa) -> Leaf {
    ca.issue("site", &["localhost", "site.test", "127.0.0.1"])
}

/// A plain GET of `/` sent without TLS.
const PLAIN_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// The admin interface's metrics, read over plain HTTP.
fn metrics(admin: SocketAddr) -> Exposition {
    let mut c = Client::connect(admin);
    c.send("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    exposition(c.response())
}

fn exposition(r: Response) -> Exposition {
    assert_eq!(r.status, 200, "GET /metrics: {}", r.body_str());
    let text = r.body_str();
    parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// `roundhouse_tls_handshake_failures_total` for `reason`, 0 when absent.
fn failures(m: &Exposition, reason: &str) -> f64 {
    m.value(
        "roundhouse_tls_handshake_failures_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// Whether `stream` is still open: nothing to read and no close.
fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let open = matches!((&*stream).read(&mut [0u8; 1]),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

#[test]
fn curl_and_a_rustls_client_get_the_backends_answer() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("over tls");
    let (_lb, tls) = start_tls_balancer(&[&backend], &[&leaf], &[]);

    let mut conn = TlsClient::new(&ca)
        .connect(tls, "localhost")
        .expect("a handshake");
    assert_eq!(conn.alpn().as_deref(), Some(&b"http/1.1"[..]));
    let r = conn.get("/hello");
    assert_eq!((r.status, r.body_str()), (200, "over tls".into()));
    // Kept alive like a plain connection.
    assert_eq!(conn.get("/again").status, 200);
    let targets: Vec<String> = backend.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/hello", "/again"]);

    // curl offers h2 and http/1.1; it must get http/1.1 and its answer.
    let port = tls.port();
    let url = format!("https://site.test:{port}/curl");
    let resolve = format!("site.test:{port}:127.0.0.1");
    let Some((code, out, err)) = run_tool(Command::new("curl").args([
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        &ca.ca_path(),
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_code} %{http_version}",
        &url,
    ])) else {
        eprintln!("note: curl is not installed; its half of this test is skipped");
        return;
    };
    assert_eq!(code, 0, "curl failed: {err}");
    assert_eq!(out, "over tls\n200 1.1", "{err}");
}

/// A request body read to its end leaves the next, pipelined request in rustls's
/// buffer, decrypted, where no readiness event announces it: it must be served, not
/// parked until the client gives up.
#[test]
fn a_pipelined_request_decrypted_behind_a_body_is_served() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    for buffering in ["on", "off"] {
        let (_lb, tls) =
            start_tls_balancer(&[&backend], &[&leaf], &["--request-buffering", buffering]);
        let mut conn = TlsClient::new(&ca)
            .connect(tls, "localhost")
            .expect("a handshake");
        let body = vec![b'x'; 6000];
        let mut both =
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6000\r\n\r\n".to_vec();
        both.extend_from_slice(&body);
        both.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n");
        conn.send(&both);
        assert_eq!(conn.response().status, 200, "request buffering {buffering}");
        assert_eq!(conn.response().status, 200, "request buffering {buffering}");
    }
    let seen: Vec<(String, usize)> = backend
        .requests()
        .into_iter()
        .map(|r| (r.target, r.body.len()))
        .collect();
    let one = [("/upload".to_string(), 6000), ("/next".to_string(), 0)];
    assert_eq!(seen, [one.clone(), one].concat());
}

#[test]
fn sni_picks_the_certificate_and_no_sni_gets_the_first() {
    let ca = TestCa::new();
    let a = ca.issue("a", &["a.test", "127.0.0.1"]);
    let b = ca.issue("b", &["b.test"]);
    let c = ca.issue("c", &["*.c.test"]);
    let backend = Backend::hello("ok");
    let (_lb, tls) = start_tls_balancer(&[&backend], &[&a, &b, &c], &[]);
    let named = [("a", &a), ("b", &b), ("c", &c)];
    let which = |der: &[u8]| {
        named
            .iter()
            .find(|(_, leaf)| leaf.cert.as_ref() == der)
            .map_or("none of them", |(name, _)| *name)
    };
    for (name, want) in [
        ("a.test", "a"),
        ("b.test", "b"),
        ("B.Test", "b"),
        // An IP address is never sent as SNI.
        ("127.0.0.1", "a"),
        ("x.c.test", "c"),
        // A wildcard covers one label.
        ("y.x.c.test", "a"),
        ("c.test", "a"),
        ("unknown.test", "a"),
    ] {
        // A new client each time: a resumed session would bring back the last certificate.
        let conn = TlsClient::any_certificate()
            .connect(tls, name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(which(&conn.peer_cert()), want, "the certificate for {name}");
    }
    // And each checks out for its name with a client that checks.
    for name in ["a.test", "b.test", "127.0.0.1", "x.c.test"] {
        let mut conn = TlsClient::new(&ca)
            .connect(tls, name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(conn.get("/").status, 200, "{name}");
    }
}

#[test]
fn a_chain_file_is_served_whole() {
    let ca = TestCa::new();
    let leaf = ca.issue_chained("chained", &["localhost"]);
    let backend = Backend::hello("ok");
    let (_lb, tls) = start_tls_balancer(&[&backend], &[&leaf], &[]);
    // The client trusts the root alone: the intermediate must come from the server.
    let mut conn = TlsClient::new(&ca)
        .connect(tls, "localhost")
        .expect("a handshake through the intermediate");
    assert_eq!(conn.peer_chain().len(), 2);
    assert_eq!(conn.get("/").status, 200);
}

#[test]
fn without_a_plain_listener_the_first_tls_listener_is_the_local_address() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    let mut args: Vec<String> = ["--tls-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"]
        .map(String::from)
        .into();
    args.extend(leaf.tls_args());
    args.extend(balancer_args(&[backend.addr], &[]));
    let lb = start_balancer_with(&args);
    let tls = lb.tls_addrs();
    assert_eq!(tls.len(), 2, "{tls:?}");
    assert_ne!(tls[0], tls[1]);
    assert_eq!(lb.addr, tls[0]);
    for addr in tls {
        let mut conn = TlsClient::new(&ca).connect(addr, "localhost").unwrap();
        assert_eq!(conn.get("/").status, 200, "{addr}");
    }
}

#[test]
fn tls_1_1_and_an_h2_only_client_are_refused_promptly_and_others_still_served() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    let (_lb, tls) = start_tls_balancer(&[&backend], &[&leaf], &[]);

    // TLS 1.1 from a raw socket: an alert or a close, never a hang (reads time out after
    // PATIENCE, which `rest` reports).
    let mut old = Client::connect(tls);
    old.send(tls11_client_hello());
    let (reply, ending) = old.rest();
    assert!(ending.is_closed(), "a TLS 1.1 client was left hanging");
    assert!(
        reply.is_empty() || REFUSALS.iter().any(|&a| is_alert(&reply, a)),
        "not a refusing alert: {reply:?}"
    );

    // openssl's TLS 1.1, where installed; SECLEVEL=0 lets it offer 1.1 at all.
    let target = tls.to_string();
    let openssl = run_tool(Command::new("openssl").args([
        "s_client",
        "-connect",
        &target,
        "-tls1_1",
        "-cipher",
        "DEFAULT@SECLEVEL=0",
    ]));
    match openssl {
        None => eprintln!("note: openssl is not installed; its TLS 1.1 client is skipped"),
        Some((code, out, err)) => {
            assert_ne!(code, 0, "openssl spoke TLS 1.1: {out}");
            // The refusal came from the server, not from openssl's own settings.
            assert!(
                REFUSALS
                    .iter()
                    .any(|a| err.contains(&format!("SSL alert number {a}"))),
                "stderr: {err}"
            );
        }
    }

    let mut h2 = client_config(Some(&ca), TLS12_AND_13);
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let started = Instant::now();
    let refused = TlsClient::from_config(h2)
        .connect(tls, "localhost")
        .err()
        .expect("an h2-only client was accepted");
    assert_eq!(
        tls_error(&refused),
        Some(&rustls::Error::AlertReceived(
            AlertDescription::NoApplicationProtocol
        )),
        "{refused} after {:?}",
        started.elapsed()
    );

    let mut conn = TlsClient::new(&ca).connect(tls, "localhost").unwrap();
    assert_eq!(conn.get("/").status, 200);
    assert_eq!(backend.count(), 1);
}

#[test]
fn plain_http_on_a_tls_port_gets_a_plain_400_and_a_close() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("forwarded");
    let (_lb, tls) = start_tls_balancer(&[&backend], &[&leaf], &[]);
    let (reply, ending) = raw_exchange(tls, PLAIN_GET);
    let text = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with(b"HTTP/1.1 400 "), "{text:?}");
    let (response, after) = first_response_and_rest(&reply).expect("a whole response");
    assert_eq!(response.status, 400, "{text:?}");
    assert!(after.is_empty(), "{text:?}");
    assert_eq!(ending, Ending::Eof, "{text:?}");
    assert_eq!(backend.heads(), 0);
    // The port still speaks TLS.
    let mut conn = TlsClient::new(&ca).connect(tls, "localhost").unwrap();
    assert_eq!(conn.get("/").status, 200);
}

#[test]
fn silent_and_trickling_tls_clients_do_not_stop_a_normal_request() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    // A long handshake deadline: nothing here may be cut off before the normal request.
    let (lb, tls) = start_tls_balancer(
        &[&backend],
        &[&leaf],
        &["--workers", "2", "--client-timeout", "60s"],
    );
    let connect = |_| {
        let s = TcpStream::connect(tls).unwrap();
        s.set_nodelay(true).unwrap();
        s
    };
    let silent: Vec<TcpStream> = (0..200).map(connect).collect();
    let trickling: Vec<TcpStream> = (0..200).map(connect).collect();
    wait_until("the balancer accepted all 400 connections", || {
        lb.open_connections() >= 400
    });

    // One byte of a real ClientHello per connection per round, a round every 100 ms, for
    // at most 100 rounds and never the whole hello.
    let hello = TlsClient::new(&ca).client_hello("localhost");
    let last_round = 100.min(hello.len() - 1);
    let rounds = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let (rounds, stop) = (rounds.clone(), stop.clone());
        thread::spawn(move || {
            let mut failed = 0;
            for byte in &hello[..last_round] {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                for mut s in &trickling {
                    failed += usize::from(s.write_all(&[*byte]).is_err());
                }
                rounds.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(100));
            }
            (failed, trickling)
        })
    };
    wait_until("three rounds of trickling", || {
        rounds.load(Ordering::SeqCst) >= 3
    });

    let mut conn = TlsClient::new(&ca).connect(tls, "localhost").unwrap();
    let r = conn.get("/normal");
    assert_eq!((r.status, r.body_str()), (200, "ok".into()));
    let during = rounds.load(Ordering::SeqCst);

    stop.store(true, Ordering::SeqCst);
    let (failed, trickling) = trickler.join().unwrap();
    assert!(
        during < last_round,
        "the trickling was over before the normal request was answered"
    );
    // They were held, not dropped.
    assert_eq!(failed, 0, "writes of trickling clients failed");
    assert!(silent.iter().all(still_open), "a silent client was closed");
    assert!(
        trickling.iter().all(still_open),
        "a trickling client was closed"
    );
    assert_eq!(backend.count(), 1);
}

#[test]
fn half_a_client_hello_is_closed_at_the_handshake_deadline_and_counted() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    let (lb, tls) = start_tls_balancer(
        &[&backend],
        &[&leaf],
        &["--client-timeout", "1s", "--admin", "127.0.0.1:0"],
    );
    let hello = TlsClient::new(&ca).client_hello("localhost");
    let mut half = Client::connect(tls);
    let started = Instant::now();
    half.send(&hello[..hello.len() / 2]);
    // Reads wait up to PATIENCE: the close must come before.
    let (_, ending) = half.rest();
    let waited = started.elapsed();
    assert!(
        ending.is_closed(),
        "half a ClientHello was held past PATIENCE"
    );
    assert!(
        waited >= Duration::from_millis(800),
        "closed after {waited:?}, before the 1 s deadline"
    );
    wait_until("the timeout to be counted", || {
        failures(&metrics(lb.admin()), "timeout") >= 1.0
    });
    assert_eq!(failures(&metrics(lb.admin()), "timeout"), 1.0);
}

#[test]
fn a_trickled_client_hello_is_cut_off_at_the_handshake_deadline() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    let (_lb, tls) = start_tls_balancer(&[&backend], &[&leaf], &["--client-timeout", "1s"]);
    let hello = TlsClient::new(&ca).client_hello("localhost");
    let mut c = Client::connect(tls);
    let mut writer = c.stream().try_clone().unwrap();
    let cut_off = Arc::new(AtomicBool::new(false));
    // One byte every 50 ms: each read comes fast, the whole hello would take > 10 s.
    assert!(hello.len() > 200, "a ClientHello of {} bytes", hello.len());
    let dripper = {
        let cut_off = cut_off.clone();
        thread::spawn(move || {
            for b in &hello {
                if cut_off.load(Ordering::SeqCst) || writer.write_all(&[*b]).is_err() {
                    return false;
                }
                thread::sleep(Duration::from_millis(50));
            }
            true
        })
    };
    let (_, ending) = c.rest();
    cut_off.store(true, Ordering::SeqCst);
    let finished = dripper.join().unwrap();
    assert!(ending.is_closed(), "a trickling handshake was not cut off");
    assert!(!finished, "the whole trickled ClientHello was taken");
}

/// The ClientHello in records of a few bytes each: every record is whole, so each one
/// goes to a worker and back to the waiting room, and only a deadline for the whole
/// handshake (not one per wait) stops it.
#[test]
fn a_client_hello_in_many_small_records_is_cut_off_at_the_handshake_deadline() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    let (_lb, tls) = start_tls_balancer(&[&backend], &[&leaf], &["--client-timeout", "1s"]);
    let hello = TlsClient::new(&ca).client_hello("localhost");
    // The handshake message, after the first record's 5-byte header, 4 bytes a record.
    let message = hello[5..].to_vec();
    let mut c = Client::connect(tls);
    let mut writer = c.stream().try_clone().unwrap();
    let cut_off = Arc::new(AtomicBool::new(false));
    // 50 records and more, one every 60 ms: 3 s and more in all, each pause far below 1 s.
    assert!(
        message.len() / 4 > 50,
        "a ClientHello of {} bytes",
        hello.len()
    );
    let dripper = {
        let cut_off = cut_off.clone();
        thread::spawn(move || {
            for piece in message.chunks(4) {
                let record = [&[22, 3, 1, 0, piece.len() as u8][..], piece].concat();
                if cut_off.load(Ordering::SeqCst) || writer.write_all(&record).is_err() {
                    return false;
                }
                thread::sleep(Duration::from_millis(60));
            }
            true
        })
    };
    let (_, ending) = c.rest();
    cut_off.store(true, Ordering::SeqCst);
    let finished = dripper.join().unwrap();
    assert!(
        ending.is_closed(),
        "a handshake in small records was not cut off"
    );
    assert!(
        !finished,
        "the whole ClientHello was taken, record by record"
    );
}

#[test]
fn the_backend_is_told_https_over_tls_and_http_on_the_plain_listener() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    let (lb, tls) = start_tls_balancer(&[&backend], &[&leaf], &[]);
    let mut conn = TlsClient::new(&ca).connect(tls, "localhost").unwrap();
    // What a client claims is replaced, both ways.
    conn.send("GET /tls HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: http\r\n\r\n");
    assert_eq!(conn.response().status, 200);
    let mut plain = Client::connect(lb.addr);
    assert_eq!(
        plain.get_with_header("X-Forwarded-Proto", "https").status,
        200
    );
    let seen: Vec<(String, Vec<String>)> = backend
        .requests()
        .iter()
        .map(|r| {
            let proto = r.headers_named("x-forwarded-proto");
            (
                r.target.clone(),
                proto.into_iter().map(String::from).collect(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("/tls".to_string(), vec!["https".to_string()]),
            ("/".to_string(), vec!["http".to_string()])
        ]
    );
}

#[test]
fn https_redirect_sends_plain_clients_to_the_tls_port() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    let (lb, tls) = start_tls_balancer(&[&backend], &[&leaf], &["--https-redirect"]);
    let port = tls.port();
    assert_ne!(port, 443);
    let target = "/same/target?q=1&r=a%20b";
    for (host, location) in [
        (
            "example.test:8080",
            format!("https://example.test:{port}{target}"),
        ),
        (
            "example.test",
            format!("https://example.test:{port}{target}"),
        ),
        ("[::1]:8080", format!("https://[::1]:{port}{target}")),
    ] {
        let mut c = Client::connect(lb.addr);
        c.send(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        let r = c.response();
        assert_eq!(r.status, 308, "Host: {host}: {r:?}");
        assert_eq!(
            r.header("location"),
            Some(location.as_str()),
            "Host: {host}"
        );
    }
    assert_eq!(backend.heads(), 0, "{:?}", backend.head_lines());
    // The TLS listener proxies as ever.
    let mut conn = TlsClient::new(&ca).connect(tls, "localhost").unwrap();
    assert_eq!(conn.get(target).status, 200);
    assert_eq!(backend.head_lines(), [format!("GET {target} HTTP/1.1")]);
}

#[test]
fn sighup_rereads_the_certificates_and_a_broken_file_keeps_the_old_ones() {
    let ca = TestCa::new();
    let names = ["localhost", "127.0.0.1"];
    let (a, b) = (ca.issue("a", &names), ca.issue("b", &names));
    let (cert, key) = (ca.dir().join("live.pem"), ca.dir().join("live.key"));
    a.write_to(&cert, &key);
    let backend = Backend::hello("ok");
    let plain = format!("127.0.0.1:{}", reserve_port());
    let tls: SocketAddr = format!("127.0.0.1:{}", reserve_port()).parse().unwrap();
    let (cert_name, key_name) = (cert.display().to_string(), key.display().to_string());
    let p = Proc::spawn(Command::new(BIN).args([
        "--listen",
        &plain,
        "--tls-listen",
        &tls.to_string(),
        "--tls-cert",
        &cert_name,
        "--tls-key",
        &key_name,
        "--workers",
        "2",
        "--log",
        "off",
        "--backend",
        &backend.addr.to_string(),
    ]));
    wait_accepting(tls);
    let hup = || kill_process(Pid::from_child(&p.child), Signal::HUP).expect("signal the balancer");
    // A new client each time: a resumed session would not show the server's certificate.
    let served = || {
        TlsClient::new(&ca)
            .connect(tls, "localhost")
            .map(|c| c.peer_cert())
            .ok()
    };
    assert!(served() == Some(a.cert.clone()), "A at start");
    let mut before = TlsClient::new(&ca).connect(tls, "localhost").unwrap();
    assert_eq!(before.get("/one").status, 200);

    b.write_to(&cert, &key);
    hup();
    wait_until("new handshakes to get certificate B", || {
        served() == Some(b.cert.clone())
    });

    let said = p.stderr().len();
    std::fs::write(&cert, "not a certificate\n").unwrap();
    hup();
    wait_until("stderr to say why the broken file was not taken", || {
        p.stderr()[said..].contains(&cert_name)
    });
    for _ in 0..3 {
        assert!(served() == Some(b.cert.clone()), "B after a broken reload");
    }
    // Established before both reloads, still served.
    assert_eq!(before.get("/two").status, 200);
    assert_eq!(before.peer_cert(), a.cert);
}

#[test]
fn a_second_connection_resumes_the_session() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    let (_lb, tls) = start_tls_balancer(&[&backend], &[&leaf], &[]);
    let tls13 = client_config(Some(&ca), &[&TLS13]);
    let tls12 = client_config(Some(&ca), &[&TLS12]);
    // Without tickets a TLS 1.2 client resumes by session id, from the server's cache.
    let mut session_id = client_config(Some(&ca), &[&TLS12]);
    session_id.resumption =
        Resumption::in_memory_sessions(8).tls12_resumption(Tls12Resumption::SessionIdOnly);
    for (what, config, version) in [
        ("TLS 1.3", tls13, ProtocolVersion::TLSv1_3),
        ("TLS 1.2 with a ticket", tls12, ProtocolVersion::TLSv1_2),
        (
            "TLS 1.2 by session id",
            session_id,
            ProtocolVersion::TLSv1_2,
        ),
    ] {
        let client = TlsClient::from_config(config);
        let mut first = client.connect(tls, "localhost").unwrap();
        // The answer comes after the tickets: once it is read, the client holds them.
        assert_eq!(first.get("/").status, 200, "{what}");
        assert_eq!(first.handshake_kind(), HandshakeKind::Full, "{what}");
        drop(first);
        let mut second = client.connect(tls, "localhost").unwrap();
        assert_eq!(second.handshake_kind(), HandshakeKind::Resumed, "{what}");
        assert_eq!(second.version(), version, "{what}");
        assert_eq!(second.get("/").status, 200, "{what}");
    }

    // openssl's -reconnect, with a ticket and by session id. TLS 1.2 only: s_client
    // reconnects before it reads a TLS 1.3 ticket, so it never resumes 1.3.
    let target = tls.to_string();
    for tickets in [&[][..], &["-no_ticket"]] {
        let Some((code, out, err)) = run_tool(
            Command::new("openssl")
                .args(["s_client", "-connect", &target, "-servername", "localhost"])
                .args(["-CAfile", &ca.ca_path(), "-reconnect", "-tls1_2"])
                .args(tickets),
        ) else {
            eprintln!("note: openssl is not installed; s_client -reconnect is skipped");
            return;
        };
        assert_eq!(code, 0, "openssl {tickets:?}: {err}");
        assert!(
            out.contains("Verify return code: 0 (ok)"),
            "{tickets:?}: {out}"
        );
        // One full handshake, then five resumed ones.
        let reused = out.matches("Reused, TLSv1.2").count();
        assert_eq!(reused, 5, "{tickets:?}: {out}");
    }
}

#[test]
fn the_admin_interface_over_tls_counts_failed_handshakes_by_reason() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    let (lb, tls) = start_tls_balancer(
        &[&backend],
        &[&leaf],
        &["--admin", "127.0.0.1:0", "--admin-tls"],
    );
    let mut conn = TlsClient::new(&ca).connect(tls, "localhost").unwrap();
    assert_eq!(conn.get("/").status, 200);
    drop(conn);

    // protocol: no ALPN protocol in common.
    let mut h2 = client_config(Some(&ca), TLS12_AND_13);
    h2.alpn_protocols = vec![b"h2".to_vec()];
    assert!(
        TlsClient::from_config(h2)
            .connect(tls, "localhost")
            .is_err()
    );
    // certificate: a client that trusts another CA refuses ours, and so does one that
    // asks for a name it does not cover.
    let other = TestCa::new();
    assert!(TlsClient::new(&other).connect(tls, "localhost").is_err());
    assert!(TlsClient::new(&ca).connect(tls, "other.test").is_err());
    // not_tls: plain HTTP.
    assert!(raw_request(tls, PLAIN_GET).starts_with(b"HTTP/1.1 400 "));
    // closed: half a ClientHello, then the client leaves.
    let hello = TlsClient::new(&ca).client_hello("localhost");
    let mut gone = Client::connect(tls);
    gone.send(&hello[..hello.len() / 2]);
    drop(gone);

    let scrape = || {
        let mut admin = TlsClient::new(&ca)
            .connect(lb.admin(), "localhost")
            .expect("a handshake with the admin interface");
        exposition(admin.get("/metrics"))
    };
    let want = [
        ("protocol", 1.0),
        ("certificate", 2.0),
        ("not_tls", 1.0),
        ("closed", 1.0),
    ];
    let mut m = scrape();
    wait_until("every failure to be counted", || {
        m = scrape();
        want.iter().all(|(reason, n)| failures(&m, reason) >= *n)
    });
    for (reason, n) in want.iter().chain(&[("timeout", 0.0), ("other", 0.0)]) {
        assert_eq!(failures(&m, reason), *n, "reason {reason}");
    }
    let completed = m.value("roundhouse_tls_handshakes_total", &[]);
    assert!(completed.is_some_and(|n| n >= 1.0), "{completed:?}");

    // The admin port does not answer in plain text.
    let (reply, _) = raw_exchange(lb.admin(), PLAIN_GET);
    assert!(
        !String::from_utf8_lossy(&reply).contains("roundhouse_"),
        "metrics over plain HTTP"
    );
}

#[test]
fn the_json_log_says_the_tls_version_and_the_name() {
    let ca = TestCa::new();
    let leaf = site(&ca);
    let backend = Backend::hello("ok");
    let plain: SocketAddr = format!("127.0.0.1:{}", reserve_port()).parse().unwrap();
    let tls: SocketAddr = format!("127.0.0.1:{}", reserve_port()).parse().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--listen",
        &plain.to_string(),
        "--tls-listen",
        &tls.to_string(),
    ])
    .args(leaf.tls_args())
    .args(["--workers", "2", "--log", "json"])
    .args(["--backend", &backend.addr.to_string()]);
    let p = Proc::spawn(&mut cmd);
    wait_accepting(tls);
    wait_accepting(plain);

    let tls12 = TlsClient::from_config(client_config(Some(&ca), &[&TLS12]));
    for (client, name, target) in [
        (TlsClient::new(&ca), "site.test", "/v13"),
        (tls12, "localhost", "/v12"),
        (TlsClient::new(&ca), "127.0.0.1", "/no-sni"),
    ] {
        let mut conn = client.connect(tls, name).unwrap();
        assert_eq!(conn.get(target).status, 200, "{target}");
    }
    assert_eq!(Client::connect(plain).get("/plain").status, 200);

    for (target, tls, sni) in [
        ("/v13", "\"TLSv1.3\"", "\"site.test\""),
        ("/v12", "\"TLSv1.2\"", "\"localhost\""),
        ("/no-sni", "\"TLSv1.3\"", "null"),
        ("/plain", "null", "null"),
    ] {
        let line = p.wait_for_stdout_line(&format!("the log line of {target}"), |l| {
            l.contains(&format!("\"target\":\"{target}\""))
        });
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(v["tls"].to_string(), tls, "{line}");
        assert_eq!(v["sni"].to_string(), sni, "{line}");
    }
}
