//! Every answer the balancer makes itself (a refused request head, a full queue) leaves
//! exactly one access-log line, with its status and termination code, and exactly one
//! count in `roundhouse_requests_total{backend="none"}` (README "Operations"). A
//! connection closed without a byte sent is not a request and leaves neither.

use std::net::SocketAddr;
use std::process::Command;

use crate::support::*;

/// The binary with the json log and the admin interface, each on a reserved port.
struct Logged {
    p: Proc,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Logged {
    fn start(backends: &[SocketAddr], extra: &[&str]) -> Logged {
        let port = || -> SocketAddr { format!("127.0.0.1:{}", reserve_port()).parse().unwrap() };
        let (addr, admin) = (port(), port());
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", &addr.to_string(), "--admin", &admin.to_string()]);
        cmd.args(["--log", "json"]);
        for b in backends {
            cmd.args(["--backend", &b.to_string()]);
        }
        if !extra.contains(&"--workers") {
            cmd.args(["--workers", "2"]);
        }
        cmd.args(extra);
        let p = Proc::spawn(&mut cmd);
        // Each check connects and closes without sending a byte: no log line, no count.
        wait_accepting(addr);
        wait_accepting(admin);
        Logged { p, addr, admin }
    }

    /// Every access-log line so far (the startup line is not JSON).
    fn lines(&self) -> Vec<serde_json::Value> {
        self.p
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for `n` access-log lines and returns them.
    fn wait_for_lines(&self, n: usize) -> Vec<serde_json::Value> {
        wait_until(&format!("{n} access-log lines"), || self.lines().len() >= n);
        self.lines()
    }

    /// `roundhouse_requests_total{backend="none",code=class}` on /metrics.
    fn no_backend_requests(&self, class: &str) -> u64 {
        let mut c = Client::connect(self.admin);
        c.send("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 200, "{r:?}");
        let sample = format!("roundhouse_requests_total{{backend=\"none\",code=\"{class}\"}} ");
        let text = r.body_str();
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(&sample))
            .unwrap_or_else(|| panic!("no {sample:?} in\n{text}"));
        value.parse().unwrap_or_else(|e| panic!("{value:?}: {e}"))
    }
}

/// Sends `bad` as a whole request head and asserts: the client gets `status`, the
/// process logs exactly one line for it (status, termination `PR`, no request line),
/// and `class` of the requests without a backend counts exactly one. The backend
/// never hears of it.
fn assert_refused_head_is_logged_and_counted(bad: &[u8], status: u16, class: &str) {
    let backend = Backend::hello("forwarded");
    let lb = Logged::start(&[backend.addr], &[]);
    assert_eq!(lb.no_backend_requests(class), 0);

    let (reply, _) = raw_exchange(lb.addr, bad);
    let text = String::from_utf8_lossy(&reply);
    let responses = parse_responses(&reply);
    assert_eq!(responses.len(), 1, "{text:?}");
    assert_eq!(responses[0].status, status, "{text:?}");

    let lines = lb.wait_for_lines(1);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert_eq!(line["status"], status, "{line}");
    assert_eq!(line["termination"], "PR", "{line}");
    assert_eq!(line["backend"], serde_json::Value::Null, "{line}");
    assert_eq!(line["method"], serde_json::Value::Null, "{line}");
    assert!(line["error"].as_str().is_some(), "{line}");
    wait_until("the refusal to be counted", || {
        lb.no_backend_requests(class) >= 1
    });
    assert_eq!(lb.no_backend_requests(class), 1);
    assert_eq!(lb.lines().len(), 1, "{:#?}", lb.lines());
    assert_eq!(backend.heads(), 0);
}

#[test]
fn differing_content_lengths_leave_one_line_and_one_count() {
    assert_refused_head_is_logged_and_counted(
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
        "4xx",
    );
}

#[test]
fn head_over_32_kib_leaves_one_line_and_one_count() {
    let big = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "b".repeat(33 * 1024)
    );
    assert_refused_head_is_logged_and_counted(big.as_bytes(), 431, "4xx");
}

#[test]
fn http2_request_line_leaves_one_line_and_one_count() {
    assert_refused_head_is_logged_and_counted(
        b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n",
        505,
        "5xx",
    );
}

#[test]
fn full_queue_503_leaves_one_line_and_one_count() {
    let backend = Backend::held("done");
    let lb = Logged::start(&[backend.addr], &["--workers", "1", "--queue", "1"]);
    const GET: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(lb.no_backend_requests("5xx"), 0);

    // The only worker takes the first request and waits on the backend; the second
    // connection waits in the queue; the third finds it full.
    let mut first = Client::connect(lb.addr);
    first.send(GET);
    wait_until("the backend to hold the first request", || {
        backend.heads() == 1
    });
    let mut queued = Client::connect(lb.addr);
    queued.send(GET);
    wait_until("the second connection to wait in the queue", || {
        let mut c = Client::connect(lb.admin);
        c.send("GET /status.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let status: serde_json::Value = serde_json::from_slice(&c.response().body).unwrap();
        status["queue_depth"] == 1
    });
    let mut turned_away = Client::connect(lb.addr);
    let me = turned_away.stream().local_addr().unwrap().to_string();
    turned_away.send(GET);
    let r = turned_away.response();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.header("retry-after").is_some(), "no Retry-After: {r:?}");

    let lines = lb.wait_for_lines(1);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert_eq!(line["client"], me.as_str(), "{line}");
    assert_eq!(line["status"], 503, "{line}");
    assert_eq!(line["termination"], "PQ", "{line}");
    assert_eq!(line["backend"], serde_json::Value::Null, "{line}");
    wait_until("the 503 to be counted", || {
        lb.no_backend_requests("5xx") >= 1
    });
    assert_eq!(lb.no_backend_requests("5xx"), 1);

    // The two others are served once the backend lets go: one line each, no more 503s.
    backend.release();
    assert_eq!(first.response().status, 200);
    assert_eq!(queued.response().status, 200);
    let lines = lb.wait_for_lines(3);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let refused: Vec<_> = lines.iter().filter(|l| l["status"] == 503).collect();
    assert_eq!(refused.len(), 1, "{lines:#?}");
    assert_eq!(lb.no_backend_requests("5xx"), 1);
}

#[test]
fn a_refusal_keeps_the_connection_only_when_the_client_asked_to() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    // The head was whole and there is no body: the connection is still good.
    c.send("OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 501, "{r:?}");
    assert_eq!(r.header("connection"), None, "{r:?}");
    assert_eq!(c.get("/").status, 200);
    // Asked to close: the refusal says so, and closes.
    c.send("OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 501, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(c.rest().1.is_closed(), "the connection stayed open");
    assert_eq!(backend.heads(), 1);
}

#[test]
fn a_body_the_waiting_room_cannot_gather_is_refused_and_logged_with_its_request_line() {
    let backend = Backend::hello("forwarded");
    let lb = Logged::start(&[backend.addr], &["--workers", "1"]);
    let mut c = Client::connect(lb.addr);
    c.send("POST /up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    // Served by the only worker: it has handed the half-sent body to the waiting room.
    assert_eq!(get(lb.addr, "/other").0, 200);
    c.send_lossy("lo\r\nzz\r\n");
    let (reply, _) = c.rest();
    let text = String::from_utf8_lossy(&reply);
    assert_eq!(parse_responses(&reply)[0].status, 400, "{text:?}");
    let lines = lb.wait_for_lines(2);
    let line = lines
        .iter()
        .find(|l| l["status"] == 400)
        .unwrap_or_else(|| panic!("no 400 line: {lines:#?}"));
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(line["target"], "/up", "{line}");
    assert_eq!(line["termination"], "PR", "{line}");
    wait_until("the refusal to be counted", || {
        lb.no_backend_requests("4xx") == 1
    });
    assert_eq!(backend.head_lines(), ["GET /other HTTP/1.1"]);
}
