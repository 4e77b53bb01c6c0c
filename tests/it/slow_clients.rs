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
    // The second worker may still be writing its request when the last refusal lands.
    wait_until("both workers' requests at the backend", || {
        backend.heads() == 2
    });
    backend.release();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(ok + refused.load(Ordering::SeqCst), 40, "{statuses:?}");
    // Each answered request reached the backend exactly once; no refused one did.
    assert_eq!(ok, 6);
    assert_eq!(backend.count(), 6);
}

/// The big answer of the slow-reader tests: more than any socket buffers hold.
const BIG: u64 = 8 << 20;

/// A backend answering `/big` with `BIG` pattern bytes of `seed` (Content-Length) and
/// anything else with 200 `ok`.
fn big_or_small(seed: u64) -> Backend {
    Backend::start(move |req, s| {
        if req.target == "/big" {
            write_pattern(s, seed, BIG, false)?;
        } else {
            s.write_all(&response(200, &[], b"ok"))?;
        }
        Ok(Next::KeepAlive)
    })
}

/// A client whose socket takes little in: a small receive buffer and small segments,
/// set before the connect (else loopback's buffers take a whole answer in at once).
fn slow_reader(addr: std::net::SocketAddr) -> Client {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.set_tcp_mss(1460).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    Client {
        reader: ResponseReader::new(stream),
    }
}

/// Reads the big answer on `c` and checks it is whole and in order.
fn read_big(c: &mut Client, seed: u64) {
    let head = c.reader.read_head().unwrap().expect("a response");
    assert_eq!(head.status, 200);
    let (complete, len, hash) = c.hash_body(&head);
    assert!(complete, "the answer ended early, after {len} bytes");
    assert_eq!(hash, Pattern::hash_of(seed, BIG), "the answer changed");
}

#[test]
fn a_slow_reader_of_a_large_answer_does_not_hold_the_only_worker() {
    let backend = big_or_small(31);
    let lb = start_balancer(&[&backend], &["--workers", "1", "--client-timeout", "60s"]);
    let mut slow = slow_reader(lb.addr);
    slow.send("GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    wait_until("the backend got the big request", || backend.heads() == 1);
    // The slow client reads nothing yet: the only worker must be free all the same.
    assert_eq!(get(lb.addr, "/small"), (200, "ok".to_string()));
    read_big(&mut slow, 31);
    // Then the close it asked for, not a reset.
    let (rest, ending) = slow.rest();
    assert_eq!((rest.len(), ending), (0, Ending::Eof));
}

#[test]
fn a_reader_that_takes_nothing_for_the_client_timeout_is_closed() {
    let backend = big_or_small(33);
    let lb = start_balancer(&[&backend], &["--workers", "1", "--client-timeout", "1s"]);
    let mut slow = slow_reader(lb.addr);
    slow.send("GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n");
    wait_until("the backend got the big request", || backend.heads() == 1);
    wait_until("the balancer closed the silent reader", || {
        lb.open_connections() == 0
    });
    // What the socket held, then the end: never the whole answer.
    let (bytes, ending) = slow.rest();
    assert!(ending.is_closed(), "left open");
    assert!((bytes.len() as u64) < BIG, "the whole answer came");
}

#[test]
fn a_connection_goes_on_after_its_answer_was_written_out() {
    let backend = big_or_small(32);
    let lb = start_balancer(&[&backend], &["--workers", "1", "--client-timeout", "60s"]);
    let mut slow = slow_reader(lb.addr);
    slow.send("GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n");
    wait_until("the backend got the big request", || backend.heads() == 1);
    assert_eq!(get(lb.addr, "/small"), (200, "ok".to_string()));
    // Sent while the answer is still being written out, and answered after it.
    slow.send("GET /pipelined HTTP/1.1\r\nHost: localhost\r\n\r\n");
    read_big(&mut slow, 32);
    let r = slow.response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    // And once idle, the next request on the same connection.
    let r = slow.get("/later");
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    let targets: Vec<String> = backend.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/big", "/small", "/pipelined", "/later"]);
    assert_eq!(
        backend.connections(),
        1,
        "the backend connection was not reused"
    );
}

#[test]
fn a_streamed_answer_reaches_its_reader_piece_by_piece() {
    let gate = Gate::default();
    let backend = {
        let gate = gate.clone();
        Backend::start(move |_, s| {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")?;
            s.write_all(b"Transfer-Encoding: chunked\r\n\r\n")?;
            s.write_all(b"d\r\ndata: first\n\n\r\n")?;
            // The rest only once the client has the first event.
            gate.wait();
            s.write_all(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")?;
            Ok(Next::KeepAlive)
        })
    };
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    c.send("GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let head = c.reader.read_head().unwrap().expect("a response");
    assert_eq!(head.status, 200);
    let mut body = Vec::new();
    let complete = c.reader.read_body(&head, false, &mut |b| {
        body.extend_from_slice(b);
        if body == b"data: first\n\n" {
            gate.open();
        }
    });
    // Whatever happened, the backend's thread may end.
    gate.open();
    let text = String::from_utf8_lossy(&body);
    assert!(
        complete.is_ok_and(|whole| whole),
        "the first event did not come alone: {text:?}"
    );
    assert_eq!(text, "data: first\n\ndata: second\n\n");
}

#[test]
fn an_answer_being_written_out_at_shutdown_is_finished_before_the_exit() {
    use rustix::process::{Pid, Signal, kill_process};
    let backend = big_or_small(34);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", reserve_port()).parse().unwrap();
    let (listen, backend_addr) = (addr.to_string(), backend.addr.to_string());
    let mut p = Proc::spawn(std::process::Command::new(BIN).args([
        "--listen",
        &listen,
        "--backend",
        &backend_addr,
        "--workers",
        "1",
        "--client-timeout",
        "60s",
    ]));
    wait_accepting(addr);
    let mut slow = slow_reader(addr);
    slow.send("GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n");
    wait_until("the backend got the big request", || backend.heads() == 1);
    // The answer is with the event side once the only worker serves another client.
    assert_eq!(get(addr, "/small"), (200, "ok".to_string()));

    kill_process(Pid::from_child(&p.child), Signal::TERM).expect("signal the balancer");
    wait_until("the balancer to stop accepting", || {
        p.stderr().contains("stopped accepting")
    });
    read_big(&mut slow, 34);
    let (rest, ending) = slow.rest();
    assert_eq!(
        (rest.len(), ending),
        (0, Ending::Eof),
        "closed after the answer"
    );
    wait_until("the balancer to exit", || {
        p.child.try_wait().unwrap().is_some()
    });
    let status = p.child.try_wait().unwrap().unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr());
}
