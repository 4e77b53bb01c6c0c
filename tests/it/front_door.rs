//! The front door never falls over: every malformed or abusive input gets its status, is
//! never forwarded, and after a framing error the connection is closed so that the bytes
//! behind it are never read as a next request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use crate::support::*;

/// A valid request sent right behind each bad one: it must never be parsed or forwarded.
const FOLLOW_UP: &str = "GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Sends `bad` and [`FOLLOW_UP`] in one write. Asserts: exactly one response, with
/// `status`; then the connection is closed; the backend never saw a request head.
fn assert_refused_and_closed(bad: &[u8], status: u16, extra: &[&str]) {
    let backend = Backend::hello("forwarded");
    let lb = start_balancer(&[&backend], extra);
    let mut bytes = bad.to_vec();
    bytes.extend_from_slice(FOLLOW_UP.as_bytes());
    let (reply, ending) = raw_exchange(lb.addr, &bytes);
    let text = String::from_utf8_lossy(&reply);
    let (response, after) =
        first_response_and_rest(&reply).unwrap_or_else(|| panic!("no response: {text:?}"));
    assert_eq!(response.status, status, "got: {text:?}");
    assert!(
        after.is_empty(),
        "bytes after the error response (the follow-up answered?): {text:?}"
    );
    assert!(
        ending.is_closed(),
        "the connection stayed open after a {status}: {text:?}"
    );
    assert_eq!(
        backend.heads(),
        0,
        "forwarded, request lines: {:?}",
        backend.head_lines()
    );
}

/// Sends `bad` alone and reads one response: for errors that leave the framing intact
/// (the balancer may keep the connection). The backend must have seen nothing.
fn assert_refused(bad: &str, status: u16) {
    let backend = Backend::hello("forwarded");
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    c.send(bad);
    let r = c.response();
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(
        backend.heads(),
        0,
        "forwarded, request lines: {:?}",
        backend.head_lines()
    );
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    assert_refused_and_closed(
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
        &[],
    );
}

#[test]
fn differing_content_lengths_are_400() {
    assert_refused_and_closed(
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
        &[],
    );
}

#[test]
fn non_numeric_content_length_is_400() {
    assert_refused_and_closed(
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: +3\r\n\r\nabc",
        400,
        &[],
    );
}

#[test]
fn transfer_coding_other_than_chunked_is_501() {
    assert_refused_and_closed(
        b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        501,
        &[],
    );
}

#[test]
fn chunked_on_http10_is_400() {
    assert_refused_and_closed(
        b"POST / HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
        &[],
    );
}

#[test]
fn obs_fold_is_400() {
    assert_refused_and_closed(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\n\r\n",
        400,
        &[],
    );
}

#[test]
fn space_before_colon_is_400() {
    assert_refused_and_closed(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Thing : 1\r\n\r\n",
        400,
        &[],
    );
}

#[test]
fn nul_in_a_header_value_is_400() {
    assert_refused_and_closed(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Bad: a\0b\r\n\r\n",
        400,
        &[],
    );
}

#[test]
fn bare_lf_is_400() {
    assert_refused_and_closed(b"GET / HTTP/1.1\nHost: localhost\n\n", 400, &[]);
}

#[test]
fn bad_chunk_size_is_400_and_no_complete_request_reaches_the_backend() {
    let backend = Backend::hello("forwarded");
    let lb = start_balancer(&[&backend], &[]);
    let mut bytes = b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec();
    bytes.extend_from_slice(FOLLOW_UP.as_bytes());
    let (reply, ending) = raw_exchange(lb.addr, &bytes);
    let text = String::from_utf8_lossy(&reply);
    // The head may have gone upstream before the body turned out bad; the body never may.
    let responses = parse_responses(&reply);
    assert!(responses.len() <= 1, "more than one response: {text:?}");
    if let Some(r) = responses.first() {
        assert_eq!(r.status, 400, "{text:?}");
    }
    assert!(ending.is_closed(), "the connection stayed open: {text:?}");
    assert_eq!(
        backend.count(),
        0,
        "a complete request was forwarded: {:#?}",
        backend.requests()
    );
}

#[test]
fn http2_request_line_is_505_and_closed() {
    assert_refused_and_closed(b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n", 505, &[]);
}

#[test]
fn http2_preface_is_refused_and_closed_never_hangs() {
    let backend = Backend::hello("forwarded");
    let lb = start_balancer(&[&backend], &[]);
    let (reply, ending) = raw_exchange(lb.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let text = String::from_utf8_lossy(&reply);
    assert!(ending.is_closed(), "the connection hung: {text:?}");
    let responses = parse_responses(&reply);
    assert_eq!(responses.len(), 1, "{text:?}");
    assert!(matches!(responses[0].status, 400 | 505), "{text:?}");
    assert_eq!(backend.heads(), 0);
}

#[test]
fn missing_host_on_http11_is_400() {
    assert_refused("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400);
}

#[test]
fn two_host_headers_are_400() {
    assert_refused(
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        400,
    );
}

#[test]
fn head_over_32_kib_is_431() {
    let big = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "b".repeat(33 * 1024)
    );
    assert_refused_and_closed(big.as_bytes(), 431, &[]);
}

#[test]
fn head_just_under_32_kib_is_forwarded() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    let r = c.get_with_header("X-Big", &"b".repeat(30 * 1024));
    assert_eq!(r.status, 200);
    assert_eq!(
        backend.only_request().header("x-big").map(str::len),
        Some(30 * 1024)
    );
}

#[test]
fn stalled_head_gets_408_or_a_close_and_others_are_still_served() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &["--client-timeout", "300ms"]);
    let mut stalled = Client::connect(lb.addr);
    stalled.send("GET / HTTP/1.1\r\nHo");
    // Served while the stalled client holds its connection.
    assert_eq!(get(lb.addr, "/"), (200, "ok".to_string()));
    let (reply, ending) = stalled.rest();
    let text = String::from_utf8_lossy(&reply);
    assert!(
        ending.is_closed(),
        "the stalled connection was neither answered nor closed: {text:?}"
    );
    if !reply.is_empty() {
        assert_eq!(parse_responses(&reply)[0].status, 408, "{text:?}");
    }
    assert_eq!(get(lb.addr, "/"), (200, "ok".to_string()));
    assert_eq!(backend.count(), 2);
}

#[test]
fn head_dripped_byte_by_byte_is_cut_off_at_the_head_deadline() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &["--client-timeout", "300ms"]);
    let mut c = Client::connect(lb.addr);
    let mut writer = c.stream().try_clone().unwrap();
    let cut_off = Arc::new(AtomicBool::new(false));
    // 2000 bytes, one every 20 ms: 40 s in all, while every single read comes fast.
    let head = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}\r\n\r\n",
        "s".repeat(2000)
    );
    let dripper = {
        let cut_off = cut_off.clone();
        thread::spawn(move || {
            use std::io::Write;
            for b in head.as_bytes() {
                if cut_off.load(Ordering::SeqCst) || writer.write_all(&[*b]).is_err() {
                    return false;
                }
                thread::sleep(Duration::from_millis(20));
            }
            true
        })
    };
    let (reply, ending) = c.rest();
    cut_off.store(true, Ordering::SeqCst);
    let finished = dripper.join().unwrap();
    assert!(!finished, "the whole dripped head was accepted");
    let text = String::from_utf8_lossy(&reply);
    assert!(
        ending.is_closed(),
        "a dripping client was not cut off: {text:?}"
    );
    if !reply.is_empty() {
        assert_eq!(parse_responses(&reply)[0].status, 408, "{text:?}");
    }
    assert_eq!(backend.heads(), 0);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &["--idle-timeout", "300ms"]);
    let mut c = Client::connect(lb.addr);
    assert_eq!(c.get("/").status, 200);
    let (rest, ending) = c.rest();
    assert!(ending.is_closed(), "the idle connection was not closed");
    assert!(
        rest.is_empty(),
        "unexpected bytes on an idle connection: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn max_connections_defers_the_next_connection_until_one_closes() {
    let backend = Backend::echo_target();
    let lb = start_balancer(&[&backend], &["--max-connections", "2"]);
    let mut one = Client::connect(lb.addr);
    let mut two = Client::connect(lb.addr);
    assert_eq!(one.get("/one").status, 200);
    assert_eq!(two.get("/two").status, 200);

    let closed = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    {
        let (closed, addr) = (closed.clone(), lb.addr);
        thread::spawn(move || {
            let mut three = Client::connect(addr);
            three.send("GET /three HTTP/1.1\r\nHost: localhost\r\n\r\n");
            let r = three.try_response(false);
            let _ = tx.send((r, closed.load(Ordering::SeqCst)));
        });
    }
    // A third connection is not served while two are open. (Giving it a moment can only
    // make this check pass more slowly, never fail wrongly.)
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "a third connection was served while two were open"
    );
    closed.store(true, Ordering::SeqCst);
    drop(one);
    let (r, after_close) = rx
        .recv_timeout(PATIENCE)
        .expect("the third connection to be served once one closed");
    let r = r.expect("read").expect("a response");
    assert!(after_close);
    assert_eq!((r.status, r.body_str().as_str()), (200, "/three"));
    // The held connection still works.
    assert_eq!(two.get("/two-again").status, 200);
}

#[test]
fn body_over_max_body_is_413() {
    let body = "x".repeat(2048);
    let req = format!("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2048\r\n\r\n{body}");
    assert_refused_and_closed(req.as_bytes(), 413, &["--max-body", "1k"]);
}

#[test]
fn chunked_body_over_max_body_is_413_and_never_completes_upstream() {
    let backend = Backend::hello("forwarded");
    let lb = start_balancer(&[&backend], &["--max-body", "1k"]);
    let chunk = "x".repeat(512);
    let mut req =
        "POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_string();
    for _ in 0..4 {
        req.push_str(&format!("200\r\n{chunk}\r\n"));
    }
    req.push_str("0\r\n\r\n");
    req.push_str(FOLLOW_UP);
    let (reply, ending) = raw_exchange(lb.addr, req.as_bytes());
    let text = String::from_utf8_lossy(&reply);
    let responses = parse_responses(&reply);
    assert_eq!(responses.len(), 1, "{text:?}");
    assert_eq!(responses[0].status, 413, "{text:?}");
    assert!(ending.is_closed(), "{text:?}");
    assert_eq!(backend.count(), 0, "a complete request was forwarded");
}

#[test]
fn body_within_max_body_is_forwarded() {
    let backend = Backend::body_summary();
    let lb = start_balancer(&[&backend], &["--max-body", "1k"]);
    let mut c = Client::connect(lb.addr);
    c.send(format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 512\r\n\r\n{}",
        "y".repeat(512)
    ));
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(backend.only_request().body_len, 512);
}

#[test]
fn smuggled_request_after_a_framing_error_is_never_parsed() {
    assert_refused_and_closed(
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
        400,
        &[],
    );
}

#[test]
fn unknown_expectation_is_417() {
    assert_refused(
        "POST / HTTP/1.1\r\nHost: localhost\r\nExpect: the-unexpected\r\nContent-Length: 3\r\n\r\nabc",
        417,
    );
}

#[test]
fn connect_method_is_501() {
    assert_refused(
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        501,
    );
}

#[test]
fn fragment_in_the_request_target_is_400() {
    // ureq would drop the `#...` silently; a target is forwarded byte for byte or not at all.
    assert_refused_and_closed(
        b"GET /page#top HTTP/1.1\r\nHost: localhost\r\n\r\n",
        400,
        &[],
    );
}

#[test]
fn silent_client_is_closed_after_the_client_timeout() {
    // Connects and never sends a byte: its worker must not wait forever.
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &["--client-timeout", "300ms"]);
    let mut silent = Client::connect(lb.addr);
    let (rest, ending) = silent.rest();
    assert!(ending.is_closed(), "a silent connection stayed open");
    assert!(
        rest.is_empty(),
        "unexpected bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
    // And the balancer still serves.
    assert_eq!(get(lb.addr, "/").0, 200);
}
