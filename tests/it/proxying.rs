//! Forwarding: what the backend receives and what the client gets back, byte for byte.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::support::*;

/// Sends one request on a fresh connection and returns the response.
fn exchange(lb: &Balancer, request: &str) -> Response {
    let mut c = Client::connect(lb.addr);
    c.send(request);
    c.response()
}

/// Header names, lower-cased, for "is there any X" checks.
fn names(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect()
}

#[test]
fn round_robin_alternates_between_two_backends() {
    let (a, b) = (Backend::hello("a"), Backend::hello("b"));
    let lb = start_balancer(&[&a, &b], &[]);
    let bodies: Vec<String> = (0..4).map(|_| get(lb.addr, "/").1).collect();
    assert_eq!(bodies, ["a", "b", "a", "b"]);
    assert_eq!((a.count(), b.count()), (2, 2));
}

#[test]
fn every_method_is_forwarded_including_extension_tokens() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &[]);
    let methods = [
        "GET",
        "POST",
        "PUT",
        "DELETE",
        "PATCH",
        "OPTIONS",
        "PURGE",
        "PROPFIND",
        "MKCOL",
        "X-CUSTOM_1",
    ];
    let mut c = Client::connect(lb.addr);
    for m in methods {
        c.send(format!(
            "{m} /m HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi"
        ));
        let r = c.response();
        assert_eq!(r.status, 200, "{m} answered {r:?}");
    }
    let seen: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(seen, methods);
    for r in backend.requests() {
        assert!(
            r.head
                .starts_with(format!("{} /m HTTP/1.1\r\n", r.method).as_bytes()),
            "{r:?}"
        );
        assert_eq!(r.body, b"hi", "{} lost its body", r.method);
    }
}

#[test]
fn request_targets_are_forwarded_byte_for_byte() {
    let backend = Backend::echo_target();
    let lb = start_balancer(&[&backend], &[]);
    let long = format!("/{}", "x".repeat(8191));
    let targets = [
        "/a%2Fb",
        "//a//b",
        "/p?q=1&r=%20",
        "/%E2%82%AC/caf%C3%A9?x=%2F%3F",
        "/a/./b/../c",
        "/?",
        long.as_str(),
    ];
    for t in targets {
        let r = exchange(&lb, &format!("GET {t} HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        assert_eq!(r.status, 200, "target {t:?}");
    }
    let reqs = backend.requests();
    assert_eq!(reqs.len(), targets.len());
    for (req, t) in reqs.iter().zip(targets) {
        assert_eq!(req.target, t);
        let line = format!("GET {t} HTTP/1.1\r\n");
        assert!(
            req.head.starts_with(line.as_bytes()),
            "request line for {t:?}: {:?}",
            req.head
        );
    }
}

#[test]
fn host_header_is_preserved() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &[]);
    exchange(
        &lb,
        "GET / HTTP/1.1\r\nHost: shop.example.test:8080\r\n\r\n",
    );
    assert_eq!(
        backend.only_request().headers_named("host"),
        ["shop.example.test:8080"]
    );
}

#[test]
fn x_forwarded_for_is_appended_to_the_clients_list() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &[]);
    exchange(
        &lb,
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    );
    exchange(&lb, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let reqs = backend.requests();
    assert_eq!(
        reqs[0].headers_named("x-forwarded-for").join(", "),
        "1.2.3.4, 127.0.0.1"
    );
    assert_eq!(reqs[1].headers_named("x-forwarded-for"), ["127.0.0.1"]);
}

#[test]
fn x_forwarded_proto_and_host_are_set() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &[]);
    exchange(&lb, "GET / HTTP/1.1\r\nHost: front.example.test\r\n\r\n");
    let req = backend.only_request();
    assert_eq!(req.headers_named("x-forwarded-proto"), ["http"]);
    assert_eq!(
        req.headers_named("x-forwarded-host"),
        ["front.example.test"]
    );
}

#[test]
fn hop_by_hop_request_headers_are_removed_including_those_named_in_connection() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &[]);
    let r = exchange(
        &lb,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, X-Trace\r\nX-Trace: 1\r\n\
         Keep-Alive: timeout=300\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\n\
         X-Kept: yes\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let req = backend.only_request();
    let seen = names(&req.headers);
    for hop in [
        "connection",
        "x-trace",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
    ] {
        assert!(
            !seen.contains(&hop.to_string()),
            "backend saw {hop}: {:?}",
            req.headers
        );
    }
    assert_eq!(req.headers_named("x-kept"), ["yes"]);
}

#[test]
fn hop_by_hop_response_headers_are_removed_including_those_named_in_connection() {
    let backend = Backend::raw(response(
        200,
        &[
            ("Connection", "X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("X-Public", "yes"),
        ],
        b"ok",
    ));
    let lb = start_balancer(&[&backend], &[]);
    let r = exchange(&lb, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    let seen = names(&r.headers);
    assert!(
        !seen.contains(&"x-secret".to_string()),
        "client saw X-Secret: {:?}",
        r.headers
    );
    assert!(
        !seen.contains(&"keep-alive".to_string()),
        "client saw Keep-Alive: {:?}",
        r.headers
    );
    for v in r.headers_named("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-secret"),
            "backend's Connection leaked: {v}"
        );
    }
    assert_eq!(r.header("x-public"), Some("yes"));
}

#[test]
fn repeated_response_headers_arrive_as_separate_lines() {
    let backend = Backend::raw(response(
        200,
        &[
            ("Set-Cookie", "a=1; Path=/"),
            ("Set-Cookie", "b=2; Path=/; HttpOnly"),
        ],
        b"ok",
    ));
    let lb = start_balancer(&[&backend], &[]);
    let r = exchange(&lb, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(
        r.headers_named("set-cookie"),
        ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    );
}

#[test]
fn nothing_is_injected_into_the_request() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &[]);
    exchange(&lb, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let req = backend.only_request();
    let seen = names(&req.headers);
    for injected in ["accept-encoding", "user-agent", "accept", "expect", "te"] {
        assert!(
            !seen.contains(&injected.to_string()),
            "backend saw {injected}: {:?}",
            req.headers
        );
    }
    assert!(req.body.is_empty());
}

/// `gzip("hello, compressed world\n")`.
const GZIPPED: [u8; 44] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0xd7,
    0x51, 0x48, 0xce, 0xcf, 0x2d, 0x28, 0x4a, 0x2d, 0x2e, 0x4e, 0x4d, 0x51, 0x28, 0xcf, 0x2f, 0xca,
    0x49, 0xe1, 0x02, 0x00, 0x3f, 0xba, 0x39, 0x3c, 0x18, 0x00, 0x00, 0x00,
];

#[test]
fn gzip_body_passes_byte_identical_with_its_content_encoding() {
    let backend = Backend::raw(response(
        200,
        &[("Content-Encoding", "gzip"), ("Content-Type", "text/plain")],
        &GZIPPED,
    ));
    let lb = start_balancer(&[&backend], &[]);
    let r = exchange(
        &lb,
        "GET / HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, GZIPPED);
    assert_eq!(
        backend.only_request().headers_named("accept-encoding"),
        ["gzip"]
    );
}

#[test]
fn backend_server_and_date_headers_are_kept() {
    let date = "Tue, 01 Jan 2030 00:00:00 GMT";
    let backend = Backend::raw(response(
        200,
        &[("Server", "test-backend/1.0"), ("Date", date)],
        b"ok",
    ));
    let lb = start_balancer(&[&backend], &[]);
    let r = exchange(&lb, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.headers_named("server"), ["test-backend/1.0"]);
    assert_eq!(r.headers_named("date"), [date]);
}

#[test]
fn error_statuses_are_relayed_with_their_bodies() {
    let not_found = Backend::raw(response(
        404,
        &[("Content-Type", "text/plain")],
        b"no such page",
    ));
    let lb = start_balancer(&[&not_found], &[]);
    let r = exchange(&lb, "GET /missing HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (404, "no such page"));

    let broken = Backend::raw(response(500, &[("Content-Type", "text/plain")], b"boom"));
    let lb = start_balancer(&[&broken], &[]);
    let r = exchange(&lb, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (500, "boom"));
}

#[test]
fn a_500_is_not_retried_on_another_backend() {
    let reply = response(500, &[], b"boom");
    let (a, b) = (Backend::raw(reply.clone()), Backend::raw(reply));
    let lb = start_balancer(&[&a, &b], &[]);
    let r = exchange(
        &lb,
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(r.status, 500);
    assert_eq!(
        a.count() + b.count(),
        1,
        "the request was sent more than once"
    );
}

#[test]
fn redirects_are_relayed_not_followed() {
    let backend = Backend::raw(response(302, &[("Location", "/elsewhere")], b"moved"));
    let lb = start_balancer(&[&backend], &[]);
    let r = exchange(&lb, "GET /here HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/elsewhere"));
    assert_eq!(r.body_str(), "moved");
    assert_eq!(backend.count(), 1, "the redirect was followed");
    assert_eq!(backend.only_request().target, "/here");
}

#[test]
fn head_is_answered_without_body_but_with_the_backends_content_length() {
    let backend = Backend::start(|req, s| {
        if req.method == "HEAD" {
            s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain\r\n\r\n",
            )?;
        } else {
            s.write_all(&response(200, &[], b"after"))?;
        }
        Ok(Next::KeepAlive)
    });
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    c.send("HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = c.head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1234"));
    // Had any body byte followed, this next response would not parse.
    let next = c.get("/after");
    assert_eq!((next.status, next.body_str().as_str()), (200, "after"));
}

#[test]
fn no_content_and_not_modified_come_without_a_body() {
    let backend = Backend::start(|req, s| {
        match req.target.as_str() {
            "/204" => s.write_all(b"HTTP/1.1 204 No Content\r\nX-Which: 204\r\n\r\n")?,
            "/304" => s.write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")?,
            _ => s.write_all(&response(200, &[], b"after"))?,
        }
        Ok(Next::KeepAlive)
    });
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    let r = c.get("/204");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-which"), Some("204"));
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(
        r.header("content-length"),
        None,
        "RFC 9110 §8.6: no Content-Length in a 204"
    );
    let r = c.get("/304");
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.header("transfer-encoding"), None);
    // Had any body byte followed either, this would not parse.
    let next = c.get("/after");
    assert_eq!((next.status, next.body_str().as_str()), (200, "after"));
}

#[test]
fn http10_client_gets_a_chunked_backend_response_close_delimited() {
    let backend = Backend::raw(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let lb = start_balancer(&[&backend], &[]);
    let (bytes, ending) = raw_exchange(lb.addr, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
    assert!(
        ending.is_closed(),
        "the connection was not closed at the end of the body"
    );
    let r = &parse_responses(&bytes)[0];
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("transfer-encoding"),
        None,
        "chunked sent to an HTTP/1.0 client"
    );
    let start = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&bytes[start..], b"hello, world");
}

#[test]
fn http11_client_gets_an_unknown_length_response_chunked() {
    let backend =
        Backend::raw_then_close("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
    let lb = start_balancer(&[&backend], &[]);
    let r = exchange(&lb, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers_named("transfer-encoding"), ["chunked"]);
    assert!(r.complete, "no terminating chunk");
    assert_eq!(r.body_str(), "until the end");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let backend = Backend::echo_target();
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    for i in 0..5 {
        let r = c.get(&format!("/n{i}"));
        assert_eq!((r.status, r.body_str()), (200, format!("/n{i}")));
    }
    assert_eq!(backend.count(), 5);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = Backend::echo_target();
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    c.send(
        "GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n\
         POST /second HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nbody\
         GET /third HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    let bodies: Vec<String> = (0..3).map(|_| c.response().body_str()).collect();
    assert_eq!(bodies, ["/first", "/second", "/third"]);
    assert_eq!(backend.requests()[1].body, b"body");
}

#[test]
fn expect_100_continue_gets_100_before_the_body_and_is_not_forwarded() {
    let backend = Backend::start(|req, s| {
        s.write_all(&response(
            200,
            &[],
            format!("got {}", req.body_str()).as_bytes(),
        ))?;
        Ok(Next::KeepAlive)
    });
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    c.send(
        "PUT /up HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = c.response();
    assert_eq!(
        interim.status, 100,
        "expected 100 Continue before sending the body: {interim:?}"
    );
    assert!(
        interim.head.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        String::from_utf8_lossy(&interim.head)
    );
    c.send("hello");
    let r = c.response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "got hello"));
    let req = backend.only_request();
    assert_eq!(
        req.header("expect"),
        None,
        "Expect was forwarded: {:?}",
        req.headers
    );
}

#[test]
fn backend_dying_mid_response_closes_the_client_connection_without_faking_the_rest() {
    let backend =
        Backend::raw_then_close("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
    let lb = start_balancer(&[&backend], &[]);
    let (bytes, ending) = raw_exchange(lb.addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(ending.is_closed(), "the client connection was left open");
    let r = &parse_responses_lenient(&bytes);
    if let Some(r) = r {
        if r.status == 200 {
            assert_eq!(r.header("content-length"), Some("1000"));
            assert!(
                !r.complete,
                "a complete 1000-byte body was invented: {} bytes",
                r.body.len()
            );
        } else {
            assert_eq!(r.status, 502, "{r:?}");
        }
    }
}

#[test]
fn backend_dying_mid_chunked_response_never_gets_a_terminating_chunk() {
    let backend = Backend::raw_then_close(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
    );
    let lb = start_balancer(&[&backend], &[]);
    let (bytes, ending) = raw_exchange(lb.addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(ending.is_closed(), "the client connection was left open");
    if let Some(r) = parse_responses_lenient(&bytes) {
        if r.status == 200 {
            assert!(
                !r.complete,
                "the terminating chunk was invented: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(!bytes.ends_with(b"0\r\n\r\n"));
        } else {
            assert_eq!(r.status, 502, "{r:?}");
        }
    }
}

/// The first response in `bytes`, complete or not; None if not even its head arrived.
fn parse_responses_lenient(bytes: &[u8]) -> Option<Response> {
    let mut r = ResponseReader::new(bytes);
    let mut resp = r.read_head().ok()??;
    let mut body = Vec::new();
    resp.complete = r
        .read_body(&resp, false, &mut |b| body.extend_from_slice(b))
        .unwrap_or(false);
    resp.body = body;
    Some(resp)
}

#[test]
fn client_connection_close_is_honoured_after_the_response() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    c.send("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    let (rest, ending) = c.rest();
    assert!(
        ending.is_closed(),
        "the connection stayed open after Connection: close"
    );
    assert!(rest.is_empty());
}

#[test]
fn http10_client_without_keep_alive_is_closed_after_the_response() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &[]);
    let (bytes, ending) = raw_exchange(lb.addr, b"GET / HTTP/1.0\r\n\r\n");
    assert!(ending.is_closed(), "an HTTP/1.0 connection stayed open");
    let (r, rest) = first_response_and_rest(&bytes).expect("a response");
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    assert!(rest.is_empty());
}

#[test]
fn a_backend_connection_with_bytes_past_the_answer_is_never_reused() {
    // Each answer says 2 bytes; 30 ms later the backend sends more, which answer
    // nothing. By then roundhouse has read the answer and pooled the connection: the
    // check made when the pool hands it out again must see the stray bytes, so the next
    // request gets a fresh connection and a clean "ok", never "GARBAGE" read as the head
    // of its answer.
    let stray = Arc::new(AtomicUsize::new(0));
    let backend = Backend::start({
        let stray = stray.clone();
        move |_, s| {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
            thread::sleep(Duration::from_millis(30));
            s.write_all(b"GARBAGE\r\n\r\n")?;
            stray.fetch_add(1, Ordering::SeqCst);
            Ok(Next::KeepAlive)
        }
    });
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    for sent in 1..=4 {
        let r = c.get("/");
        assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
        wait_until("the stray bytes sent", || {
            stray.load(Ordering::SeqCst) == sent
        });
    }
    assert_eq!(backend.count(), 4);
    assert_eq!(
        backend.connections(),
        4,
        "a connection with stray bytes was reused"
    );
}

#[test]
fn an_answer_head_up_to_64_kib_is_relayed_and_a_larger_one_is_a_502() {
    // One header field of `len` bytes: the head is a little more than that.
    let answer = |len: usize| {
        let field = "v".repeat(len);
        response(200, &[("X-Big", field.as_str())], b"ok")
    };
    let fits = Backend::raw(answer(60 * 1024));
    let lb = start_balancer(&[&fits], &[]);
    let r = Client::connect(lb.addr).get("/");
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    assert_eq!(r.header("x-big").map(str::len), Some(60 * 1024));

    let too_big = Backend::raw(answer(65 * 1024));
    let lb = start_balancer(&[&too_big], &[]);
    let r = Client::connect(lb.addr).get("/");
    assert_eq!(r.status, 502, "{r:?}");
}

#[test]
fn sequential_requests_reuse_one_backend_connection() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &[]);
    // Ten on one client connection, ten more on a fresh client connection each: the
    // backend side is pooled apart from the client side.
    let mut c = Client::connect(lb.addr);
    for _ in 0..10 {
        assert_eq!(c.get("/").status, 200);
    }
    for _ in 0..10 {
        assert_eq!(get(lb.addr, "/").0, 200);
    }
    assert_eq!(backend.count(), 20);
    assert_eq!(backend.connections(), 1, "a backend connection per request");
}
