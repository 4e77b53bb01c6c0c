//! Backends that fail: active health checks, passive ejection, safe resends, a backend's
//! own `Retry-After`, backups, failing open when all are down, and draining. Each test
//! watches state changes by polling (a backend's state through `Balancer::current`, or
//! where requests land), never by timing them.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;

/// A backend answering `name` on every path but `/health`, which answers 200, or 503
/// while `sick` is set.
fn with_health(name: &'static str, sick: Arc<AtomicBool>) -> Backend {
    Backend::start(move |req, s| {
        let reply = match req.target.as_str() {
            "/health" if sick.load(Ordering::SeqCst) => response(503, &[], b"sick"),
            "/health" => response(200, &[], b"ok"),
            _ => response(200, &[], name.as_bytes()),
        };
        s.write_all(&reply)?;
        Ok(Next::KeepAlive)
    })
}

/// Requests the backend received other than health checks.
fn served(b: &Backend) -> usize {
    b.head_lines()
        .iter()
        .filter(|l| !l.contains(" /health "))
        .count()
}

/// A backend that reads each request whole, then resets the connection (RST, no answer).
fn resetting() -> Backend {
    Backend::start(|_, s| {
        reset(s);
        Ok(Next::Close)
    })
}

/// Makes the coming close of `s` a reset: SO_LINGER with a zero timeout.
fn reset(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

const CHECKS: [&str; 4] = ["--health-path", "/health", "--health-interval", "50ms"];

fn with_checks(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = CHECKS.to_vec();
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_backend_failing_its_health_path_leaves_rotation_and_comes_back_after_it_recovers() {
    let sick = Arc::new(AtomicBool::new(false));
    let a = with_health("a", sick.clone());
    let b = with_health("b", Arc::default());
    let lb = start_balancer(&[&a, &b], &with_checks(&[]));
    let set = lb.current();
    let bodies: Vec<String> = (0..4).map(|_| get(lb.addr, "/").1).collect();
    assert!(bodies.contains(&"a".into()) && bodies.contains(&"b".into()));

    sick.store(true, Ordering::SeqCst);
    wait_until("a to fail three checks in a row", || {
        !set.backends()[0].is_healthy()
    });
    let before = served(&a);
    for _ in 0..6 {
        assert_eq!(get(lb.addr, "/"), (200, "b".to_string()));
    }
    assert_eq!(served(&a), before, "a took requests while down");

    sick.store(false, Ordering::SeqCst);
    wait_until("a to pass two checks in a row", || {
        set.backends()[0].is_healthy()
    });
    let bodies: Vec<String> = (0..4).map(|_| get(lb.addr, "/").1).collect();
    assert!(bodies.contains(&"a".into()), "{bodies:?}");
}

#[test]
fn a_backend_that_keeps_failing_is_ejected_for_longer_each_time_in_a_row() {
    let alive = Backend::hello("alive");
    let lb = start_balancer_on(
        &[dead_addr(), alive.addr],
        &["--max-fails", "2", "--eject-time", "500ms"],
    );
    let set = lb.current();
    let dead = &set.backends()[0];
    // Every request is answered: a refused connect moves on to the next backend.
    wait_until("a first ejection", || {
        assert_eq!(get(lb.addr, "/"), (200, "alive".to_string()));
        dead.standing().ejections() == 1
    });
    assert_eq!(
        dead.standing().last_ejection(),
        Some(Duration::from_millis(500))
    );
    assert!(!dead.is_up());
    wait_until("the ejection to end", || dead.is_up());
    wait_until("a second ejection", || {
        assert_eq!(get(lb.addr, "/"), (200, "alive".to_string()));
        dead.standing().ejections() == 2
    });
    assert_eq!(
        dead.standing().last_ejection(),
        Some(Duration::from_millis(1000))
    );
}

#[test]
fn an_idempotent_get_is_resent_after_a_reset_before_the_answer() {
    let broken = resetting();
    let ok = Backend::hello("ok");
    let lb = start_balancer(&[&broken, &ok], &[]);
    for i in 0..4 {
        assert_eq!(get(lb.addr, &format!("/{i}")), (200, "ok".to_string()));
    }
    assert!(broken.heads() >= 1, "the resetting backend was never tried");
    assert_eq!(ok.count(), 4);
}

#[test]
fn a_put_with_a_kept_body_is_resent_whole() {
    let broken = resetting();
    let ok = Backend::body_summary();
    let lb = start_balancer(&[&broken, &ok], &[]);
    let body = vec![b'x'; 10_000];
    let mut c = Client::connect(lb.addr);
    c.send(format!(
        "PUT /doc HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    c.send(&body);
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(broken.heads(), 1);
    assert_eq!(ok.only_request().body, body);
}

fn post(addr: std::net::SocketAddr, key: Option<&str>, body: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    let key = key.map_or(String::new(), |k| format!("Idempotency-Key: {k}\r\n"));
    c.send(format!(
        "POST /pay HTTP/1.1\r\nHost: localhost\r\n{key}Content-Length: {}\r\n\r\n",
        body.len()
    ));
    c.send(body);
    c.response()
}

#[test]
fn a_post_with_idempotency_key_is_resent_after_a_reset() {
    let broken = resetting();
    let ok = Backend::body_summary();
    let lb = start_balancer(&[&broken, &ok], &[]);
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let r = post(lb.addr, Some("order-17"), &body);
    assert_eq!(r.status, 200, "{r:?}");
    let got = ok.only_request();
    assert_eq!(got.body, body);
    assert_eq!(got.header("idempotency-key"), Some("order-17"));
    assert_eq!(broken.heads(), 1);
}

#[test]
fn a_post_without_idempotency_key_is_not_resent() {
    let broken = resetting();
    let ok = Backend::body_summary();
    let lb = start_balancer(&[&broken, &ok], &[]);
    assert_eq!(post(lb.addr, None, b"pay once").status, 502);
    assert_eq!(ok.heads(), 0);
}

#[test]
fn a_post_whose_body_was_streamed_past_the_retry_buffer_is_not_resent() {
    let (one, two) = (resetting(), resetting());
    // Streamed: a body gathered whole first is always there to send again (below).
    let lb = start_balancer(
        &[&one, &two],
        &["--retry-buffer", "1k", "--request-buffering", "off"],
    );
    // Within the buffer: resent (to the other backend, which resets too).
    assert_eq!(post(lb.addr, Some("k1"), &[b'a'; 1024]).status, 502);
    wait_until("the resend", || one.heads() + two.heads() == 2);
    // Past it: sent once.
    assert_eq!(post(lb.addr, Some("k2"), &[b'b'; 4096]).status, 502);
    wait_until("the attempt", || one.heads() + two.heads() == 3);
    let three = post(lb.addr, Some("k3"), b"small");
    assert_eq!(three.status, 502);
    // The first and third were sent twice, the second once.
    wait_until("every attempt", || one.heads() + two.heads() == 5);
}

#[test]
fn a_post_whose_body_was_gathered_whole_is_resent_past_the_retry_buffer() {
    let (one, two) = (resetting(), resetting());
    let lb = start_balancer(&[&one, &two], &["--retry-buffer", "1k"]);
    // 64 KiB, far past the retry buffer, but gathered before it went out.
    assert_eq!(post(lb.addr, Some("k1"), &[b'a'; 64 * 1024]).status, 502);
    wait_until("the resend", || one.heads() + two.heads() == 2);
}

#[test]
fn a_backends_retry_after_takes_it_out_and_its_answer_is_relayed() {
    let busy = Backend::raw(response(503, &[("Retry-After", "120")], b"busy"));
    let ok = Backend::hello("ok");
    let lb = start_balancer(&[&busy, &ok], &[]);
    let mut c = Client::connect(lb.addr);
    let r = c.get("/");
    assert_eq!((r.status, r.body_str().as_str()), (503, "busy"));
    assert_eq!(r.header("retry-after"), Some("120"));
    for _ in 0..6 {
        assert_eq!(c.get("/").body_str(), "ok");
    }
    assert_eq!(busy.count(), 1);
    assert!(!lb.current().backends()[0].is_up());
}

#[test]
fn a_backup_takes_requests_only_while_no_primary_is_up() {
    let sick = Arc::new(AtomicBool::new(false));
    let primary = with_health("primary", sick.clone());
    let spare = with_health("spare", Arc::default());
    let backup = format!("{},backup", spare.addr);
    let mut extra: Vec<&str> = with_checks(&[]);
    extra.extend(["--backend", backup.as_str()]);
    let lb = start_balancer(&[&primary], &extra);
    let set = lb.current();
    for _ in 0..4 {
        assert_eq!(get(lb.addr, "/"), (200, "primary".to_string()));
    }
    assert_eq!(served(&spare), 0);

    sick.store(true, Ordering::SeqCst);
    wait_until("the primary to go down", || !set.backends()[0].is_healthy());
    for _ in 0..4 {
        assert_eq!(get(lb.addr, "/"), (200, "spare".to_string()));
    }
    sick.store(false, Ordering::SeqCst);
    wait_until("the primary to come back", || {
        set.backends()[0].is_healthy()
    });
    for _ in 0..4 {
        assert_eq!(get(lb.addr, "/"), (200, "primary".to_string()));
    }
}

#[test]
fn when_every_backend_is_down_requests_go_to_them_anyway() {
    let sick = Arc::new(AtomicBool::new(true));
    let a = with_health("a", sick.clone());
    let b = with_health("b", sick.clone());
    let all_down = |lb: &Balancer| {
        let set = lb.current();
        wait_until("every backend to be down", || {
            set.backends().iter().all(|b| !b.is_healthy())
        });
    };
    let lb = start_balancer(&[&a, &b], &with_checks(&["--fall", "1"]));
    all_down(&lb);
    let (status, body) = get(lb.addr, "/");
    assert_eq!(status, 200);
    assert!(body == "a" || body == "b", "{body}");

    let strict = start_balancer(
        &[&a, &b],
        &with_checks(&["--fall", "1", "--all-down", "503"]),
    );
    all_down(&strict);
    assert_eq!(get(strict.addr, "/").0, 503);
}

#[test]
fn a_draining_backend_gets_no_new_requests_while_its_request_finishes() {
    let held = Backend::held("held");
    let other = Backend::hello("other");
    let lb = start_balancer(&[&held, &other], &["--admin", "127.0.0.1:0"]);
    let mut first = Client::connect(lb.addr);
    first.send("GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n");
    wait_until("the held backend to get the first request", || {
        held.heads() == 1
    });
    let set = lb.current();
    // Drained as an operator drains it: the admin interface is the only writer.
    let mut admin = Client::connect(lb.admin());
    admin.send(format!(
        "POST /backends/{}/drain HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        held.addr
    ));
    assert_eq!(
        admin.response().status,
        200,
        "drain through the admin interface"
    );
    for _ in 0..4 {
        assert_eq!(get(lb.addr, "/"), (200, "other".to_string()));
    }
    assert_eq!(held.heads(), 1);
    held.release();
    let r = first.response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "held"));
    wait_until("the drained backend to have nothing in flight", || {
        set.backends()[0].in_flight() == 0
    });
}

#[test]
fn a_bad_health_flag_is_a_usage_error() {
    for (args, flag) in [
        (&["--all-down", "maybe"][..], "--all-down"),
        (&["--health-path", "health"], "--health-path"),
        (
            &["--health-path", "/", "--health-status", "600"],
            "--health-status",
        ),
        (&["--retry-buffer", "lots"], "--retry-buffer"),
        (&["--backend", "127.0.0.1:9,spare"], "--backend"),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let (code, _, err) = run_cli(&all);
        assert_eq!(code, 2, "{all:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{all:?}: {err}");
        assert!(err.contains(flag), "{all:?}: {err}");
    }
}
