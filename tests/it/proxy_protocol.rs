//! Behind an L4 balancer (README "Running several instances"): with `--proxy-protocol`,
//! every connection starts with a PROXY header (v1 or v2) from a `--trusted-proxy`, and
//! the client it names is the client for everything (X-Forwarded-For, ip-hash, the log);
//! a connection from elsewhere, or with a missing or malformed header, is closed and
//! counted. With `--trusted-proxy` alone, a trusted peer's X-Forwarded-For names the
//! client, and anyone else's is not believed. HAProxy in TCP mode (`send-proxy-v2`), a
//! real L4 balancer, stands in front of two instances where it is installed.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;

use crate::admin::{Exposition, parse_exposition};
use crate::support::*;

fn metrics(admin: SocketAddr) -> Exposition {
    let mut c = Client::connect(admin);
    c.send("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let r = c.response();
    parse_exposition(&r.body_str()).unwrap()
}

fn refused(m: &Exposition, reason: &str) -> f64 {
    m.value(
        "roundhouse_proxy_protocol_refused_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// A v2 header for a TCP connection from `client` to `to`.
fn v2(client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client, to),
    )
    .build()
    .unwrap()
}

/// What the backend saw as X-Forwarded-For on its last request.
fn forwarded_for(backend: &Backend) -> String {
    let requests = backend.requests();
    let last = requests.last().expect("a request reached the backend");
    last.header("X-Forwarded-For").unwrap_or("").to_string()
}

const GET: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn a_v1_or_v2_header_names_the_client_the_backend_is_told_about() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(
        &[&backend],
        &["--proxy-protocol", "--trusted-proxy", "127.0.0.0/8"],
    );
    let mut c = Client::connect(lb.addr);
    c.send(format!("PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\n{GET}"));
    assert_eq!(c.response().status, 200);
    assert_eq!(forwarded_for(&backend), "203.0.113.7");
    // The connection goes on carrying requests, from the same client.
    c.send(GET);
    assert_eq!(c.response().status, 200);
    assert_eq!(forwarded_for(&backend), "203.0.113.7");

    let mut c = Client::connect(lb.addr);
    let client: SocketAddr = "[2001:db8::9]:40000".parse().unwrap();
    let to: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
    c.send([v2(client, to), GET.as_bytes().to_vec()].concat());
    assert_eq!(c.response().status, 200);
    assert_eq!(forwarded_for(&backend), "2001:db8::9");
}

#[test]
fn a_header_in_pieces_is_waited_for_on_the_event_side() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(
        &[&backend],
        &[
            "--proxy-protocol",
            "--trusted-proxy",
            "127.0.0.1",
            "--workers",
            "1",
        ],
    );
    // One connection trickles its header while another is served meanwhile by the only
    // worker: the trickling one holds none.
    let mut slow = Client::connect(lb.addr);
    slow.send("PROXY TCP4 198.51.100");
    let mut quick = Client::connect(lb.addr);
    quick.send(format!("PROXY TCP4 192.0.2.1 10.0.0.1 1 80\r\n{GET}"));
    assert_eq!(quick.response().status, 200);
    slow.send(format!(".4 10.0.0.1 2 80\r\n{GET}"));
    assert_eq!(slow.response().status, 200);
    assert_eq!(forwarded_for(&backend), "198.51.100.4");
}

#[test]
fn missing_malformed_and_untrusted_headers_close_the_connection_and_are_counted() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(
        &[&backend],
        &[
            "--proxy-protocol",
            "--trusted-proxy",
            "127.0.0.1",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    for bytes in [
        GET.to_string(),
        format!("PROXY TCP4 not-an-address 10.0.0.1 1 80\r\n{GET}"),
    ] {
        let (answer, ending) = raw_exchange(lb.addr, bytes.as_bytes());
        assert!(
            answer.is_empty(),
            "answered {:?}",
            String::from_utf8_lossy(&answer)
        );
        assert!(ending.is_closed(), "{bytes:?} was not closed");
    }
    // From 127.0.0.2, not trusted: closed before a byte is read.
    let local = std::net::SocketAddr::from(([127, 0, 0, 2], 0));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&lb.addr.into()).unwrap();
    let mut stranger: TcpStream = socket.into();
    stranger.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = stranger.write_all(format!("PROXY TCP4 1.2.3.4 10.0.0.1 1 80\r\n{GET}").as_bytes());
    let mut reader = ResponseReader::new(stranger);
    assert!(reader.rest().1.is_closed(), "an untrusted peer was served");
    let m = metrics(lb.admin());
    assert_eq!(refused(&m, "malformed"), 2.0);
    assert_eq!(refused(&m, "untrusted"), 1.0);
    assert_eq!(backend.count(), 0, "a refused connection was forwarded");
}

#[test]
fn ip_hash_follows_the_client_of_the_header() {
    let backends: Vec<Backend> = (0..4).map(|i| Backend::hello(&format!("b{i}"))).collect();
    let refs: Vec<&Backend> = backends.iter().collect();
    let lb = start_balancer(
        &refs,
        &[
            "--proxy-protocol",
            "--trusted-proxy",
            "127.0.0.1",
            "--strategy",
            "ip-hash",
        ],
    );
    // From one TCP peer, many clients: each keeps its backend, and they spread.
    let mut seen = std::collections::HashSet::new();
    for net in 1..=20 {
        let mut bodies = std::collections::HashSet::new();
        for _ in 0..3 {
            let mut c = Client::connect(lb.addr);
            c.send(format!("PROXY TCP4 10.{net}.0.5 10.0.0.1 1 80\r\n{GET}"));
            bodies.insert(c.response().body_str());
        }
        assert_eq!(
            bodies.len(),
            1,
            "client 10.{net}.0.5 moved between backends"
        );
        seen.extend(bodies);
    }
    assert!(seen.len() > 1, "every client went to one backend");
}

#[test]
fn a_trusted_peer_s_x_forwarded_for_names_the_client_and_a_stranger_s_does_not() {
    let backends: Vec<Backend> = (0..4).map(|i| Backend::hello(&format!("b{i}"))).collect();
    let refs: Vec<&Backend> = backends.iter().collect();
    let trusted = start_balancer(
        &refs,
        &["--trusted-proxy", "127.0.0.1", "--strategy", "ip-hash"],
    );
    let untrusted = start_balancer(
        &refs,
        &["--trusted-proxy", "10.9.9.9", "--strategy", "ip-hash"],
    );
    let via = |lb: &Balancer, xff: &str| {
        Client::connect(lb.addr)
            .get_with_header("X-Forwarded-For", xff)
            .body_str()
    };
    // Believed: the client decides the backend, whatever the peer.
    let mut bodies = std::collections::HashSet::new();
    for net in 1..=20 {
        let first = via(&trusted, &format!("10.{net}.0.5"));
        assert_eq!(first, via(&trusted, &format!("10.{net}.0.5, 127.0.0.1")));
        bodies.insert(first);
    }
    assert!(
        bodies.len() > 1,
        "the forwarded client did not move the pick"
    );
    // Not believed: every request is 127.0.0.1's, so one backend gets them all.
    let bodies: std::collections::HashSet<String> = (1..=20)
        .map(|net| via(&untrusted, &format!("10.{net}.0.5")))
        .collect();
    assert_eq!(bodies.len(), 1, "a stranger's X-Forwarded-For was believed");
    // The chain is passed on and appended to either way.
    let all: Vec<String> = backends.iter().map(forwarded_for_any).collect();
    assert!(all.iter().any(|x| x == "10.20.0.5, 127.0.0.1"), "{all:?}");
}

fn forwarded_for_any(backend: &Backend) -> String {
    backend
        .requests()
        .last()
        .and_then(|r| r.header("X-Forwarded-For").map(str::to_string))
        .unwrap_or_default()
}

#[cfg(feature = "tls")]
#[test]
fn a_header_comes_before_the_tls_handshake() {
    let ca = TestCa::new();
    let leaf = ca.issue("site", &["localhost"]);
    let backend = Backend::hello("secure");
    let (_lb, tls) = start_tls_balancer(
        &[&backend],
        &[&leaf],
        &["--proxy-protocol", "--trusted-proxy", "127.0.0.1"],
    );
    let mut tcp = TcpStream::connect(tls).unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.44 10.0.0.1 5 443\r\n")
        .unwrap();
    let mut conn = TlsClient::new(&ca)
        .over(tcp, "localhost")
        .expect("a handshake after the header");
    assert_eq!(conn.get("/").body_str(), "secure");
    assert_eq!(forwarded_for(&backend), "192.0.2.44");
}

/// HAProxy in TCP mode, with `send-proxy-v2`, in front of two roundhouse instances (a
/// real L4 balancer nobody here wrote): the backends see the real client, and ip-hash
/// sends one client to the same backend through either instance.
#[test]
fn haproxy_in_tcp_mode_in_front_of_two_instances() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "haproxy is not installed");
        eprintln!("note: haproxy is not installed; this test is skipped");
        return;
    }
    let backends: Vec<Backend> = (0..4).map(|i| Backend::hello(&format!("b{i}"))).collect();
    let refs: Vec<&Backend> = backends.iter().collect();
    let extra = [
        "--proxy-protocol",
        "--trusted-proxy",
        "127.0.0.1",
        "--strategy",
        "ip-hash",
    ];
    let one = start_balancer(&refs, &extra);
    let two = start_balancer(&refs, &extra);
    let port = reserve_port();
    let dir = tempfile_dir();
    let config = format!(
        "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n\
         backend b\n  balance roundrobin\n  server one {} send-proxy-v2\n  server two {} send-proxy-v2\n",
        one.addr, two.addr
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let _haproxy = Proc::spawn(Command::new("haproxy").arg("-f").arg(&path).arg("-db"));
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_accepting(front);
    // Clients on distinct loopback addresses, each through HAProxy to either instance.
    for host in 2..=9u8 {
        let local = IpAddr::from([127, 0, 0, host]);
        let mut bodies = std::collections::HashSet::new();
        for _ in 0..4 {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.bind(&SocketAddr::new(local, 0).into()).unwrap();
            socket.connect(&front.into()).unwrap();
            let stream: TcpStream = socket.into();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut c = Client::from_stream(stream);
            c.send("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            let r = c.response();
            assert_eq!(r.status, 200);
            bodies.insert(r.body_str());
        }
        assert_eq!(bodies.len(), 1, "127.0.0.{host} moved between backends");
        let seen: Vec<String> = backends.iter().map(forwarded_for_any).collect();
        assert!(seen.contains(&local.to_string()), "{seen:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "roundhouse-haproxy-{}-{}",
        std::process::id(),
        reserve_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A backend that reads a PROXY header at the start of every connection and records
/// the client it names (`None`: a LOCAL header), then answers each request `200 ok`.
struct ProxiedBackend {
    addr: SocketAddr,
    clients: std::sync::Arc<std::sync::Mutex<Vec<Option<SocketAddr>>>>,
}

impl ProxiedBackend {
    fn start() -> ProxiedBackend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clients = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = clients.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = seen.clone();
                std::thread::spawn(move || Self::serve(stream, &seen));
            }
        });
        ProxiedBackend { addr, clients }
    }

    fn serve(mut stream: TcpStream, seen: &std::sync::Mutex<Vec<Option<SocketAddr>>>) {
        use std::io::Read;
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut header_read = false;
        loop {
            if !header_read {
                match ppp::HeaderResult::parse(&buf) {
                    ppp::HeaderResult::V2(Ok(h)) => {
                        let client = match h.addresses {
                            ppp::v2::Addresses::IPv4(a) => {
                                Some(SocketAddr::from((a.source_address, a.source_port)))
                            }
                            ppp::v2::Addresses::IPv6(a) => {
                                Some(SocketAddr::from((a.source_address, a.source_port)))
                            }
                            _ => None,
                        };
                        seen.lock().unwrap().push(client);
                        buf.drain(..h.len());
                        header_read = true;
                    }
                    _ if buf.len() > 16 && !buf.starts_with(b"\r\n\r\n\0\r\nQUIT\n") => {
                        panic!("a connection without a PROXY v2 header: {buf:?}")
                    }
                    _ => {}
                }
            }
            if header_read && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                buf.drain(..end + 4);
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if stream.write_all(answer).is_err() {
                    return;
                }
                continue;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn clients(&self) -> Vec<Option<SocketAddr>> {
        self.clients.lock().unwrap().clone()
    }
}

#[test]
fn a_send_proxy_backend_hears_the_client_on_every_connection() {
    let backend = ProxiedBackend::start();
    let spec = format!("{},send-proxy", backend.addr);
    let lb = start_balancer_on(
        &[],
        &[
            "--backend",
            &spec,
            "--proxy-protocol",
            "--trusted-proxy",
            "127.0.0.1",
        ],
    );
    let mut c = Client::connect(lb.addr);
    c.send(format!("PROXY TCP4 203.0.113.9 10.0.0.1 4000 80\r\n{GET}"));
    assert_eq!(c.response().body_str(), "ok");
    c.send(GET);
    assert_eq!(c.response().body_str(), "ok");
    let mut other = Client::connect(lb.addr);
    other.send(format!("PROXY TCP4 198.51.100.3 10.0.0.1 4001 80\r\n{GET}"));
    assert_eq!(other.response().body_str(), "ok");
    // A connection per request, each naming its own client: none is shared.
    let ips: Vec<Option<IpAddr>> = backend
        .clients()
        .iter()
        .map(|c| c.map(|c| c.ip()))
        .collect();
    let (a, b) = ("203.0.113.9".parse().ok(), "198.51.100.3".parse().ok());
    assert_eq!(ips, [a, a, b]);
}

#[test]
fn a_send_proxy_backend_s_health_checks_say_local() {
    let backend = ProxiedBackend::start();
    let spec = format!("{},send-proxy", backend.addr);
    let _lb = start_balancer_on(
        &[],
        &[
            "--backend",
            &spec,
            "--health-path",
            "/",
            "--health-interval",
            "100ms",
        ],
    );
    wait_until("a health check", || !backend.clients().is_empty());
    assert_eq!(backend.clients()[0], None, "a health check named a client");
}

/// Behind an L4 balancer every connection comes from the balancer: the connection
/// limit per client counts the client its PROXY header names, once it has named it.
#[test]
fn the_connection_limit_per_client_counts_the_header_s_client() {
    let backend = Backend::hello("ok");
    let lb = start_balancer(
        &[&backend],
        &[
            "--proxy-protocol",
            "--trusted-proxy",
            "127.0.0.1",
            "--max-connections-per-client",
            "2",
        ],
    );
    let open = |client: &str| {
        let mut c = Client::connect(lb.addr);
        c.send(format!("PROXY TCP4 {client} 10.0.0.1 1 80\r\n{GET}"));
        let status = c.response().status;
        (c, status)
    };
    let (_a1, s1) = open("203.0.113.1");
    let (_a2, s2) = open("203.0.113.1");
    assert_eq!((s1, s2), (200, 200));
    // A third from the same client is over its limit; another client, all from the
    // same TCP peer, is not.
    assert_eq!(open("203.0.113.1").1, 429);
    assert_eq!(open("203.0.113.2").1, 200);
    // A header that comes in pieces (its end reaches the waiting room, not the
    // acceptor) is counted too.
    let mut late = Client::connect(lb.addr);
    late.send("PROXY TCP4 203.0.1");
    // A pause between the pieces, not a wait for anything: the result is 429 either way.
    std::thread::sleep(std::time::Duration::from_millis(50));
    late.send(format!("13.1 10.0.0.1 1 80\r\n{GET}"));
    assert_eq!(late.response().status, 429);
}
