//! Failures on the backend side and overload: which status the client gets, and that a
//! failing backend is skipped when the request never reached it.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use crate::support::*;

#[test]
fn refusing_backend_is_skipped_and_the_next_one_answers() {
    let alive = Backend::hello("alive");
    let lb = start_balancer_on(&[dead_addr(), alive.addr], &[]);
    for _ in 0..4 {
        assert_eq!(get(lb.addr, "/"), (200, "alive".to_string()));
    }
    let lb = start_balancer_on(&[alive.addr, dead_addr()], &[]);
    for _ in 0..4 {
        assert_eq!(get(lb.addr, "/"), (200, "alive".to_string()));
    }
    assert_eq!(alive.count(), 8);
}

fn assert_short_plain_text_without(r: &Response, addrs: &[SocketAddr]) {
    let body = r.body_str();
    assert!(body.len() < 200, "long error body: {body:?}");
    assert!(!body.is_empty(), "empty error body");
    let ctype = r.header("content-type").unwrap_or("");
    assert!(ctype.starts_with("text/plain"), "content-type {ctype:?}");
    for a in addrs {
        assert!(
            !body.contains(&a.to_string()) && !body.contains(&a.port().to_string()),
            "body names a backend: {body:?}"
        );
    }
    assert!(
        !body.contains("127.0.0.1"),
        "body names a backend: {body:?}"
    );
}

#[test]
fn all_backends_dead_gives_502_with_a_short_text_naming_no_backend() {
    let dead = [dead_addr(), dead_addr()];
    let lb = start_balancer_on(&dead, &[]);
    let mut c = Client::connect(lb.addr);
    let r = c.get("/");
    assert_eq!(r.status, 502, "{r:?}");
    assert_short_plain_text_without(&r, &dead);
}

#[test]
fn backend_that_never_answers_gives_504_after_the_timeout() {
    let silent = Backend::silent();
    let lb = start_balancer(&[&silent], &["--timeout", "300ms"]);
    let mut c = Client::connect(lb.addr);
    let r = c.get("/slow");
    assert_eq!(r.status, 504, "{r:?}");
    assert_short_plain_text_without(&r, &[silent.addr]);
    assert!(silent.heads() >= 1, "the request never reached the backend");
}

#[test]
fn backend_that_never_completes_the_handshake_is_skipped_after_the_connect_timeout() {
    let Some(stuck) = unanswering_listener() else {
        eprintln!("skipped: this machine completes handshakes on a full accept queue");
        return;
    };
    let alive = Backend::hello("alive");
    let lb = start_balancer_on(&[stuck.addr, alive.addr], &["--connect-timeout", "300ms"]);
    for _ in 0..2 {
        assert_eq!(get(lb.addr, "/"), (200, "alive".to_string()));
    }
}

#[test]
fn only_backend_never_completing_the_handshake_gives_502() {
    let Some(stuck) = unanswering_listener() else {
        eprintln!("skipped: this machine completes handshakes on a full accept queue");
        return;
    };
    let lb = start_balancer_on(&[stuck.addr], &["--connect-timeout", "300ms"]);
    let mut c = Client::connect(lb.addr);
    let r = c.get("/");
    assert_eq!(r.status, 502, "{r:?}");
    assert_short_plain_text_without(&r, &[stuck.addr]);
}

#[test]
fn full_queue_gets_503_with_retry_after() {
    let backend = Backend::held("done");
    let lb = start_balancer(&[&backend], &["--workers", "1", "--queue", "1"]);
    const GET: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

    // The only worker takes the first request and waits on the backend.
    let mut first = Client::connect(lb.addr);
    first.send(GET);
    wait_until("the backend to hold the first request", || {
        backend.heads() == 1
    });

    // Three more: one fits in the queue, two get 503 while the backend still holds.
    let released = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    for _ in 0..3 {
        let (tx, released, addr) = (tx.clone(), released.clone(), lb.addr);
        thread::spawn(move || {
            let mut c = Client::connect(addr);
            c.send(GET);
            let r = c.try_response(false);
            let before_release = !released.load(Ordering::SeqCst);
            let _ = tx.send((r, before_release));
        });
    }
    for _ in 0..2 {
        let (r, before_release) = rx
            .recv_timeout(PATIENCE)
            .expect("an answer while every worker is busy");
        let r = r
            .expect("read")
            .expect("a response, not a closed connection");
        assert!(before_release);
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.header("retry-after").is_some(), "no Retry-After: {r:?}");
    }
    released.store(true, Ordering::SeqCst);
    backend.release();
    assert_eq!(first.response().status, 200);
    let (r, _) = rx
        .recv_timeout(PATIENCE)
        .expect("the queued request to be served");
    let r = r.expect("read").expect("a response");
    assert_eq!((r.status, r.body_str().as_str()), (200, "done"));
    assert_eq!(backend.count(), 2);
}

#[test]
fn backend_closing_each_keep_alive_connection_does_not_fail_requests() {
    // Keep-alive framing, then a close: by the next request every pooled connection to
    // this backend is stale.
    let backend = Backend::raw_then_close(response(200, &[], b"ok"));
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    for i in 0..10 {
        let r = c.get(&format!("/{i}"));
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "ok"),
            "request {i}"
        );
    }
    assert_eq!(backend.count(), 10);
}

/// A backend that answers the first request on each connection and keeps it open, then
/// closes the connection when the next request arrives on it, without answering: what a
/// backend that gave up on an idle pooled connection looks like to the balancer.
fn backend_closing_on_second_request() -> Backend {
    let served = std::sync::Mutex::new(std::collections::HashSet::new());
    Backend::start(move |_, stream| {
        let peer = stream.peer_addr()?;
        if served.lock().unwrap().insert(peer) {
            stream.write_all(&response(200, &[], b"ok"))?;
            Ok(Next::KeepAlive)
        } else {
            Ok(Next::Close)
        }
    })
}

#[test]
fn idempotent_request_is_resent_once_when_the_backend_closes_before_answering() {
    let backend = backend_closing_on_second_request();
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    assert_eq!(c.get("/first").status, 200);
    // Goes out on the pooled connection, which the backend closes: sent again on a
    // fresh connection, where it is answered.
    let r = c.get("/second");
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    assert_eq!(
        backend.head_lines(),
        [
            "GET /first HTTP/1.1",
            "GET /second HTTP/1.1",
            "GET /second HTTP/1.1"
        ]
    );
    assert_eq!(backend.connections(), 2);
}

#[test]
fn request_with_a_body_is_not_resent_when_the_backend_closes_before_answering() {
    let backend = backend_closing_on_second_request();
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    assert_eq!(c.get("/first").status, 200);
    c.send("POST /order HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.response();
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(
        backend.head_lines(),
        ["GET /first HTTP/1.1", "POST /order HTTP/1.1"]
    );
}

#[test]
fn a_waiting_connection_is_served_while_another_client_keeps_the_only_worker_busy() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &["--workers", "1"]);
    // The busy client sends requests back to back on one connection, well within the
    // 2 ms a worker waits for the next one, until the other client has its answer.
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (addr, answered, stop) = (lb.addr, answered.clone(), stop.clone());
        thread::spawn(move || {
            let mut c = Client::connect(addr);
            // Bounded, in case the other client is never served.
            for _ in 0..200_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                assert_eq!(c.get("/").status, 200);
                answered.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    wait_until("the busy client's first answers", || {
        answered.load(Ordering::SeqCst) >= 10
    });
    let mut other = Client::connect(lb.addr);
    other.send("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let before = answered.load(Ordering::SeqCst);
    assert_eq!(other.response().status, 200);
    let meanwhile = answered.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::SeqCst);
    busy.join().unwrap();
    // Once the other connection waits in the queue, the worker finishes the busy
    // client's current request and goes to it. Without that, the busy client kept the
    // worker for thousands more, until it happened to pause for 2 ms. The margin is for
    // the acceptor thread, which may be slow to queue the other connection on a loaded
    // machine.
    assert!(
        meanwhile < 200,
        "the busy client got {meanwhile} answers while the other connection waited"
    );
}
