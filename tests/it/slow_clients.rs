//! Clients never hold a worker: silent, slow and vanished clients wait on the event
//! side (the waiting room), so that a couple of workers still serve everyone else.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

#[test]
fn silent_and_slowloris_connections_do_not_stop_a_normal_request() {
    let backend = Backend::hello("ok");
    // A long head deadline: nothing here may be cut off before the normal request.
    let lb = start_balancer(&[&backend], &["--workers", "2", "--client-timeout", "60s"]);
    let silent: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(lb.addr).unwrap())
        .collect();
    let mut slow: Vec<Client> = (0..50)
        .map(|_| {
            let mut c = Client::connect(lb.addr);
            c.send("GET / HTTP/1.1\r\nHo");
            c
        })
        .collect();
    wait_until("the balancer accepted all 100 connections", || {
        lb.open_connections() >= 100
    });
    // Another byte each: still no whole head anywhere.
    for c in &mut slow {
        c.send("s");
    }
    assert_eq!(get(lb.addr, "/"), (200, "ok".to_string()));
    assert_eq!(backend.count(), 1);
    drop(silent);
}

#[test]
fn a_head_sent_in_pieces_waits_while_the_only_worker_serves_others() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &["--workers", "1", "--client-timeout", "60s"]);
    let mut pieces = Client::connect(lb.addr);
    pieces.send("GET /pieces HTTP/1.1\r\n");
    wait_until("the balancer accepted the connection", || {
        lb.open_connections() == 1
    });
    assert_eq!(get(lb.addr, "/one"), (200, "ok".to_string()));
    pieces.send("Host: localhost\r\n");
    assert_eq!(get(lb.addr, "/two"), (200, "ok".to_string()));
    pieces.send("\r\n");
    assert_eq!(pieces.response().status, 200);
    let targets: Vec<String> = backend.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/one", "/two", "/pieces"]);
}

#[test]
fn a_request_whose_client_reset_before_a_worker_took_it_never_reaches_the_backend() {
    let backend = Backend::held("held");
    let lb = start_balancer(&[&backend], &["--workers", "1"]);
    // The only worker waits on the backend with this request.
    let mut first = Client::connect(lb.addr);
    first.send("GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n");
    wait_until("the first request reached the backend", || {
        backend.heads() == 1
    });
    // Meanwhile a client sends a whole request and resets the connection.
    let gone = TcpStream::connect(lb.addr).unwrap();
    (&gone)
        .write_all(b"GET /gone HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    wait_until("the balancer accepted the second connection", || {
        lb.open_connections() == 2
    });
    socket2::SockRef::from(&gone)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(gone);
    backend.release();
    assert_eq!(first.response().status, 200);
    drop(first);
    assert_eq!(get(lb.addr, "/after"), (200, "held".to_string()));
    assert_eq!(
        backend.head_lines(),
        ["GET /first HTTP/1.1", "GET /after HTTP/1.1"]
    );
}

#[test]
fn an_error_answer_is_read_whole_by_a_client_that_kept_sending() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &["--max-body", "1k"]);
    let mut c = Client::connect(lb.addr);
    // The whole upload goes out before the client reads anything: the 413 is decided
    // from the head, and the body is still coming when the balancer closes.
    c.send("POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n\r\n");
    let mut writer = c.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = [b'x'; 16 * 1024];
        (0..16)
            .take_while(|_| writer.write_all(&chunk).is_ok())
            .count()
    });
    sender.join().unwrap();
    let (reply, ending) = c.rest();
    let text = String::from_utf8_lossy(&reply);
    let responses = parse_responses(&reply);
    assert_eq!(responses.len(), 1, "{ending:?}: {text:?}");
    assert_eq!(responses[0].status, 413, "{text:?}");
    assert!(ending == Ending::Eof, "reset after the answer: {text:?}");
    assert_eq!(backend.heads(), 0);
}

#[test]
fn a_slow_upload_waits_on_the_event_side_and_arrives_whole() {
    let backend = Backend::body_summary();
    // A long pause limit: the upload must not be cut off before the other requests.
    let lb = start_balancer(&[&backend], &["--workers", "1", "--client-timeout", "60s"]);
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut slow = Client::connect(lb.addr);
    slow.send("POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n");
    slow.send(&body[..10]);
    wait_until("the balancer accepted the upload", || {
        lb.open_connections() == 1
    });
    // While the upload stalls, the only worker serves another client...
    let (status, _) = get(lb.addr, "/other");
    assert_eq!(status, 200);
    // ...and no byte of the upload has reached the backend yet.
    assert_eq!(backend.head_lines(), ["GET /other HTTP/1.1"]);
    slow.send(&body[10..50_000]);
    assert_eq!(get(lb.addr, "/again").0, 200);
    slow.send(&body[50_000..]);
    let r = slow.response();
    assert_eq!(r.status, 200);
    let up = backend
        .requests()
        .into_iter()
        .find(|r| r.target == "/up")
        .unwrap();
    assert_eq!((up.body_len, up.body_hash), (100_000, fnv(&body)));
}

#[test]
fn a_slow_chunked_upload_is_gathered_and_forwarded_with_its_length() {
    let backend = Backend::body_summary();
    // A long pause limit: the upload must not be cut off before the other requests.
    let lb = start_balancer(&[&backend], &["--workers", "1", "--client-timeout", "60s"]);
    let mut slow = Client::connect(lb.addr);
    slow.send("POST /up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    slow.send("5\r\nhello\r\n");
    wait_until("the balancer accepted the upload", || {
        lb.open_connections() == 1
    });
    assert_eq!(get(lb.addr, "/other").0, 200);
    slow.send("6\r\n world\r\n0\r\n\r\n");
    assert_eq!(slow.response().status, 200);
    let up = backend
        .requests()
        .into_iter()
        .find(|r| r.target == "/up")
        .unwrap();
    assert_eq!(up.body, b"hello world");
    assert_eq!(up.header("content-length"), Some("11"));
    assert_eq!(up.header("transfer-encoding"), None);
}

#[test]
fn every_accepted_request_is_forwarded_once_or_answered_with_its_error() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let backend = Backend::held("ok");
    let lb = start_balancer(&[&backend], &["--workers", "2", "--queue", "4"]);
    let refused = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..40)
        .map(|i| {
            let refused = refused.clone();
            let addr = lb.addr;
            std::thread::spawn(move || {
                let (status, _) = get(addr, &format!("/{i}"));
                if status == 503 {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                status
            })
        })
        .collect();
    // Two requests at the backend, four in the queue: the other 34 are turned away.
    wait_until("34 requests turned away", || {
        refused.load(Ordering::SeqCst) == 34
    });
    assert_eq!(backend.heads(), 2);
    backend.release();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(ok + refused.load(Ordering::SeqCst), 40, "{statuses:?}");
    // Each answered request reached the backend exactly once; no refused one did.
    assert_eq!(ok, 6);
    assert_eq!(backend.count(), 6);
}
