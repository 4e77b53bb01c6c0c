//! WebSocket and other Upgrade tunnels (README "WebSocket and Upgrade"): an upgrade
//! request keeps `Connection: upgrade` and `Upgrade` on the way to the backend, a `101`
//! turns the connection into a tunnel that the event side relays both ways, and any
//! other answer is relayed as a normal one before the connection closes. A tunnel holds
//! no worker; it ends on a close or a FIN from either side (half-close passed on), a
//! reset, `--tunnel-idle-timeout`, or a stop; `--max-tunnels` refuses new ones with 503
//! and tunnels count against `--max-connections`; a reload keeps them. Metrics count
//! them and the json log has one line for each when it closes.
//!
//! The peers are tungstenite (an echo backend and a client, also over TLS), the Python
//! `websockets` library where installed, and hand-written ends on raw sockets for what
//! a library would not do on cue (half-closes, resets, bytes behind a head).
//!
//! "Bytes" are the tunnel's own, after the `101` head: `bytes` in the log and
//! `direction="down"` in the metrics count what went to the client, `bytes_up` and
//! `direction="up"` what went to the backend.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Resource, Rlimit, Signal, getrlimit, kill_process, setrlimit};
use tungstenite::{Bytes, Message, WebSocket};

use crate::admin::{Exposition, parse_exposition};
use crate::support::*;

// Reading the balancer.

pub(crate) fn metrics(admin: SocketAddr) -> Exposition {
    let mut c = Client::connect(admin);
    c.send("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "GET /metrics: {}", r.body_str());
    let text = r.body_str();
    parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// `roundhouse_tunnels_open`, which must be there.
pub(crate) fn tunnels_open(admin: SocketAddr) -> f64 {
    metrics(admin)
        .value("roundhouse_tunnels_open", &[])
        .expect("roundhouse_tunnels_open in /metrics")
}

/// `roundhouse_tunnels_opened_total`, 0 when absent.
fn tunnels_opened(admin: SocketAddr) -> f64 {
    metrics(admin)
        .value("roundhouse_tunnels_opened_total", &[])
        .unwrap_or(0.0)
}

/// `roundhouse_tunnels_closed_total{reason}`, 0 when absent.
pub(crate) fn tunnels_closed(m: &Exposition, reason: &str) -> f64 {
    m.value("roundhouse_tunnels_closed_total", &[("reason", reason)])
        .unwrap_or(0.0)
}

/// `roundhouse_tunnel_bytes_total{direction}`, 0 when absent.
fn tunnel_bytes(m: &Exposition, direction: &str) -> f64 {
    m.value("roundhouse_tunnel_bytes_total", &[("direction", direction)])
        .unwrap_or(0.0)
}

const CLOSE_REASONS: [&str; 5] = ["client", "backend", "idle", "shutdown", "error"];

/// Waits until no tunnel is open and `n` were closed in all, whatever the reasons.
pub(crate) fn wait_all_closed(admin: SocketAddr, n: f64) -> Exposition {
    let mut last = None;
    wait_until(&format!("{n} tunnels closed and none open"), || {
        let m = metrics(admin);
        let closed: f64 = CLOSE_REASONS.iter().map(|r| tunnels_closed(&m, r)).sum();
        let done = m.value("roundhouse_tunnels_open", &[]) == Some(0.0) && closed == n;
        last = Some(m);
        done
    });
    last.unwrap()
}

/// The binary as a child process, its listener and admin interface on reserved ports.
pub(crate) struct Spawned {
    pub(crate) p: Proc,
    pub(crate) addr: SocketAddr,
    pub(crate) admin: SocketAddr,
}

fn reserved() -> SocketAddr {
    format!("127.0.0.1:{}", reserve_port()).parse().unwrap()
}

/// Starts the binary in front of `backends` with `extra` (2 workers and no log unless
/// `extra` says otherwise) and waits until it accepts.
pub(crate) fn spawn_balancer(backends: &[SocketAddr], extra: &[&str]) -> Spawned {
    let (addr, admin) = (reserved(), reserved());
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", &addr.to_string(), "--admin", &admin.to_string()]);
    for b in backends {
        cmd.args(["--backend", &b.to_string()]);
    }
    if !extra.contains(&"--workers") {
        cmd.args(["--workers", "2"]);
    }
    if !extra.contains(&"--log") {
        cmd.args(["--log", "off"]);
    }
    cmd.args(extra);
    let p = Proc::spawn(&mut cmd);
    wait_accepting(addr);
    wait_accepting(admin);
    Spawned { p, addr, admin }
}

/// The thread count of process `pid`, from /proc.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line")
}

/// A tunnel through `lb` to `backend`: the client's end and the backend's.
pub(crate) fn tunnel(
    lb: SocketAddr,
    backend: &UpgradeBackend,
    path: &str,
) -> (TunnelEnd, TunnelEnd) {
    let client = open_tunnel_101(lb, path);
    let server = backend.next_end();
    assert_eq!(server.request.target, path);
    (client, server.end)
}

/// Bytes both ways through a tunnel: it relays.
pub(crate) fn assert_relays(client: &mut TunnelEnd, server: &mut TunnelEnd, what: &str) {
    let up = format!("up: {what}");
    client.send(&up);
    assert_eq!(server.read_n(up.len()), up.as_bytes(), "{what}");
    let down = format!("down: {what}");
    server.send(&down);
    assert_eq!(client.read_n(down.len()), down.as_bytes(), "{what}");
}

/// Both ends see the tunnel closed, with no byte: a FIN or a reset.
pub(crate) fn assert_closed(end: &mut TunnelEnd, which: &str) {
    let (bytes, ending) = end.rest();
    assert!(
        bytes.is_empty(),
        "{which}: bytes before the close: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(ending.is_closed(), "{which}: the tunnel stayed open");
}

// 1. WebSocket through the balancer.

/// Text, binary, a 10 MiB message, a ping and a clean close through `ws` to the echo
/// `backend`: each message comes back whole, the ping's pong comes back, and both sides
/// see the close handshake end.
fn echo_and_close<S: Read + Write>(mut ws: WebSocket<S>, backend: &WsEchoBackend) {
    ws.send(Message::text("hello, tunnel")).unwrap();
    assert_eq!(ws_read(&mut ws), Message::text("hello, tunnel"));

    let small = vec![0u8, 1, 2, 0x7f, 0x80, 0xff];
    ws.send(Message::binary(small.clone())).unwrap();
    assert_eq!(ws_read(&mut ws), Message::binary(small));

    let mut big = vec![0u8; 10 << 20];
    Pattern::new(10, big.len() as u64).fill(&mut big);
    ws.send(Message::binary(big.clone())).unwrap();
    match ws_read(&mut ws) {
        Message::Binary(back) => {
            assert_eq!(back.len(), big.len(), "the 10 MiB message's length");
            assert!(back[..] == big[..], "the 10 MiB message came back changed");
        }
        other => panic!("not a binary message: {other:?}"),
    }

    let ping = Bytes::from_static(b"are you there?");
    ws.send(Message::Ping(ping.clone())).unwrap();
    assert_eq!(ws_read(&mut ws), Message::Pong(ping));

    ws_close(&mut ws).unwrap_or_else(|e| panic!("the client's close handshake: {e}"));
    wait_until("the backend to see the close handshake end", || {
        backend.clean_closes() == 1
    });
    assert_eq!(backend.broken(), 0, "a backend connection ended badly");
}

/// The upgrade request at the backend kept `Connection: upgrade` and `Upgrade`.
fn assert_upgrade_forwarded(fields: &[(String, String)]) {
    let get = |name: &str| {
        fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(", ")
    };
    assert!(get("connection").contains("upgrade"), "{fields:?}");
    assert_eq!(get("upgrade"), "websocket", "{fields:?}");
    assert!(!get("sec-websocket-key").is_empty(), "{fields:?}");
}

#[test]
fn websocket_messages_a_ping_and_a_clean_close_pass_through() {
    let backend = WsEchoBackend::start();
    let lb = start_balancer_on(&[backend.addr], &[]);
    let stream = std::net::TcpStream::connect(lb.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    let (ws, answer) = ws_handshake(stream, "ws://localhost/chat");
    assert_eq!(answer.status(), 101);
    for name in ["upgrade", "connection", "sec-websocket-accept"] {
        assert!(answer.headers().contains_key(name), "{answer:?}");
    }
    echo_and_close(ws, &backend);
    let upgrades = backend.upgrades();
    assert_eq!(upgrades.len(), 1);
    assert_upgrade_forwarded(&upgrades[0]);
}

#[cfg(feature = "tls")]
#[test]
fn websocket_over_a_tls_listener_is_wss() {
    let ca = TestCa::new();
    let leaf = ca.issue("site", &["localhost"]);
    let backend = WsEchoBackend::start();
    let (_lb, tls) = start_tls_balancer_on(&[backend.addr], &[&leaf], &[]);
    let stream = TlsClient::new(&ca)
        .connect_stream(tls, "localhost")
        .expect("a TLS handshake");
    let (ws, answer) = ws_handshake(stream, "wss://localhost/secure-chat");
    assert_eq!(answer.status(), 101);
    echo_and_close(ws, &backend);
    let upgrades = backend.upgrades();
    assert_eq!(upgrades.len(), 1);
    assert_upgrade_forwarded(&upgrades[0]);
    let proto: Vec<&str> = upgrades[0]
        .iter()
        .filter(|(n, _)| n == "x-forwarded-proto")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(proto, ["https"], "{:?}", upgrades[0]);
}

// 2. Idle tunnels hold no worker.

/// Raises this process's soft limit of open files to `want` if it is lower (children
/// inherit it); false if the hard limit does not allow it.
fn raise_open_files(want: u64) -> bool {
    let limit = getrlimit(Resource::Nofile);
    // None is unlimited.
    if limit.current.is_none_or(|now| now >= want) {
        return true;
    }
    if limit.maximum.is_some_and(|max| max < want) {
        return false;
    }
    let raised = Rlimit {
        current: Some(want),
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).is_ok()
}

#[test]
fn a_thousand_idle_tunnels_hold_no_worker() {
    const TUNNELS: usize = 1000;
    // Two sockets a tunnel on this side (the client's, the backend's), two in the
    // balancer, and room for the other tests running beside this one.
    if !raise_open_files(4096) {
        eprintln!("note: the hard limit of open files is under 4096; 1,000 tunnels skipped");
        return;
    }
    let backend = UpgradeBackend::switching();
    let lb = spawn_balancer(&[backend.addr], &["--workers", "4"]);
    let before = threads(lb.p.child.id());
    let mut ends = Vec::with_capacity(TUNNELS);
    for i in 0..TUNNELS {
        ends.push(tunnel(lb.addr, &backend, &format!("/idle/{i}")));
    }
    assert_eq!(tunnels_open(lb.admin), TUNNELS as f64);

    // Every worker is free: a plain request is answered at once.
    assert_eq!(get(lb.addr, "/plain"), (200, "plain".to_string()));
    let count = threads(lb.p.child.id());
    assert!(
        count < 4 + 8,
        "{count} threads with --workers 4 and {TUNNELS} idle tunnels ({before} before)"
    );
    // The first and the last tunnel still relay.
    for i in [0, TUNNELS - 1] {
        let (client, server) = &mut ends[i];
        assert_relays(client, server, &format!("tunnel {i}"));
    }
}

// 3. The idle timeout.

#[test]
fn an_idle_tunnel_is_closed_on_both_sides_after_the_idle_timeout() {
    let backend = UpgradeBackend::switching();
    let lb = start_balancer_on(
        &[backend.addr],
        &["--tunnel-idle-timeout", "1s", "--admin", "127.0.0.1:0"],
    );
    let (mut client, mut server) = tunnel(lb.addr, &backend, "/idle");

    // A byte every 200 ms keeps it open, whichever way it goes: 1.2 s of bytes up only,
    // then 1.2 s of bytes down only, each longer than the timeout. (The pauses pace the
    // bytes; they wait for nothing.)
    for i in 0..12u8 {
        if i < 6 {
            client.send([i]);
            assert_eq!(server.read_n(1), [i], "byte {i} up");
        } else {
            server.send([i]);
            assert_eq!(client.read_n(1), [i], "byte {i} down");
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(client.quiet(), "closed while bytes went through");
    assert!(server.quiet(), "closed while bytes went through");

    let idle_since = Instant::now();
    assert_closed(&mut client, "the client");
    assert_closed(&mut server, "the backend");
    let took = idle_since.elapsed();
    // 1 s, its 1 s resolution, and room for a loaded machine.
    assert!(took < Duration::from_secs(5), "closed after {took:?} idle");

    let m = wait_all_closed(lb.admin(), 1.0);
    assert_eq!(tunnels_closed(&m, "idle"), 1.0, "closed by idle");
}

// 4. --max-tunnels.

#[test]
fn beyond_max_tunnels_an_upgrade_gets_503_until_a_tunnel_closes() {
    let backend = UpgradeBackend::switching();
    let lb = start_balancer_on(&[backend.addr], &["--max-tunnels", "1"]);
    let (mut client, mut server) = tunnel(lb.addr, &backend, "/first");

    let (refused, _) = open_tunnel(lb.addr, "/second", b"");
    assert_eq!(
        refused.status,
        503,
        "{}",
        String::from_utf8_lossy(&refused.head)
    );
    assert_eq!(
        backend.connections(),
        1,
        "the refused upgrade reached the backend"
    );
    assert_relays(&mut client, &mut server, "the tunnel within the limit");

    drop((client, server));
    let mut again = None;
    wait_until(
        "an upgrade to be let through once the tunnel closed",
        || {
            let (head, end) = open_tunnel(lb.addr, "/third", b"");
            assert!(matches!(head.status, 101 | 503), "{}", head.status);
            again = (head.status == 101).then_some(end);
            again.is_some()
        },
    );
    let mut server = backend.next_end();
    assert_eq!(server.request.target, "/third");
    assert_relays(again.as_mut().unwrap(), &mut server.end, "the next tunnel");
}

#[test]
fn max_tunnels_0_refuses_every_upgrade_and_serves_plain_requests() {
    let backend = UpgradeBackend::switching();
    let lb = start_balancer_on(&[backend.addr], &["--max-tunnels", "0"]);
    let (refused, _) = open_tunnel(lb.addr, "/ws", b"");
    assert_eq!(refused.status, 503);
    assert_eq!(
        backend.connections(),
        0,
        "the refused upgrade reached the backend"
    );
    assert_eq!(get(lb.addr, "/plain"), (200, "plain".to_string()));
}

// 5. An answer other than 101.

#[test]
fn an_upgrade_answered_with_200_or_400_is_relayed_then_the_connection_closes() {
    for (status, body) in [(200, "no switching here"), (400, "bad upgrade")] {
        let answer = response(status, &[("Content-Type", "text/plain")], body.as_bytes());
        let backend = UpgradeBackend::answering(answer);
        let lb = start_balancer_on(&[backend.addr], &["--admin", "127.0.0.1:0"]);
        let mut c = Client::connect(lb.addr);
        c.send(upgrade_head("/ws"));
        let r = c.response();
        assert_eq!((r.status, r.body_str().as_str()), (status, body));
        assert!(r.complete, "{status}: the body was cut short");
        assert_eq!(r.header("upgrade"), None, "{status}: {r:?}");
        // The backend keeps its connection open: the balancer closes the client's anyway.
        let (rest, ending) = c.rest();
        assert!(
            rest.is_empty(),
            "{status}: {:?}",
            String::from_utf8_lossy(&rest)
        );
        assert!(ending.is_closed(), "{status}: the connection stayed open");
        assert_eq!(tunnels_opened(lb.admin()), 0.0, "{status}");
    }
}

// 6. A client that dies.

#[test]
fn a_client_reset_mid_tunnel_frees_it() {
    let backend = UpgradeBackend::switching();
    let lb = start_balancer_on(&[backend.addr], &["--admin", "127.0.0.1:0"]);
    let (mut client, mut server) = tunnel(lb.addr, &backend, "/dies");
    assert_relays(&mut client, &mut server, "before the reset");
    client.reset();
    // The backend does nothing but read: the balancer must notice alone.
    assert_closed(&mut server, "the backend");
    let m = wait_all_closed(lb.admin(), 1.0);
    let by = tunnels_closed(&m, "client") + tunnels_closed(&m, "error");
    assert_eq!(by, 1.0, "closed by the client or an error");
}

#[test]
fn a_client_gone_without_a_word_is_freed_within_the_idle_timeout() {
    let backend = UpgradeBackend::switching();
    let lb = start_balancer_on(
        &[backend.addr],
        &["--tunnel-idle-timeout", "1s", "--admin", "127.0.0.1:0"],
    );
    let (mut client, mut server) = tunnel(lb.addr, &backend, "/gone");
    assert_relays(&mut client, &mut server, "before the client went");
    // A FIN, then nothing: the balancer passes the FIN on and the backend, silent, keeps
    // its side open; only the idle timeout can end it.
    drop(client);
    let (bytes, ending) = server.rest();
    assert!(bytes.is_empty(), "{bytes:?}");
    assert_eq!(ending, Ending::Eof, "the client's FIN at the backend");
    let m = wait_all_closed(lb.admin(), 1.0);
    assert_eq!(tunnels_open(lb.admin()), 0.0);
    let by = tunnels_closed(&m, "idle") + tunnels_closed(&m, "client");
    assert_eq!(by, 1.0, "closed by idle or the client");
}

// 7. A reload.

#[test]
fn sighup_keeps_an_open_tunnel_working() {
    let (a, b) = (UpgradeBackend::switching(), UpgradeBackend::switching());
    let addr = reserved();
    let text = |backend: SocketAddr| {
        format!(
            "listen = \"{addr}\"\nworkers = 2\nlog = \"off\"\n\n[[backend]]\naddress = \"{backend}\"\n"
        )
    };
    let dir = tempfile::tempdir().expect("a directory for the config file");
    let path = dir.path().join("roundhouse.toml");
    std::fs::write(&path, text(a.addr)).unwrap();
    let mut p = Proc::spawn(Command::new(BIN).args(["--config", path.to_str().unwrap()]));
    wait_accepting(addr);
    let (mut client, mut server) = tunnel(addr, &a, "/kept");
    assert_relays(&mut client, &mut server, "before the reload");

    // The reload drops the tunnel's backend from the set: its tunnels stay.
    std::fs::write(&path, text(b.addr)).unwrap();
    kill_process(Pid::from_child(&p.child), Signal::HUP).expect("signal the balancer");
    wait_until("the balancer to say it reloaded", || {
        p.stderr().contains("reloaded")
    });
    assert_relays(&mut client, &mut server, "after the reload");
    let (mut next, mut at_b) = tunnel(addr, &b, "/new");
    assert_relays(&mut next, &mut at_b, "a tunnel to the new backend");
    assert_relays(&mut client, &mut server, "the old one, once more");
    assert!(p.child.try_wait().unwrap().is_none(), "the balancer exited");
}

// 8. Half-close.

#[test]
fn a_fin_from_either_side_shuts_only_the_write_side_of_the_other() {
    let backend = UpgradeBackend::switching();
    let lb = start_balancer_on(&[backend.addr], &[]);

    // The client is done sending; the backend sees its last bytes, then EOF, and can
    // still answer.
    let (mut client, mut server) = tunnel(lb.addr, &backend, "/client-first");
    client.send("last words up");
    client.shutdown_write();
    assert_eq!(server.rest(), (b"last words up".to_vec(), Ending::Eof));
    server.send("still answering");
    assert_eq!(client.read_n(15), b"still answering");
    drop(server);
    assert_eq!(client.rest(), (Vec::new(), Ending::Eof));

    // The same the other way.
    let (mut client, mut server) = tunnel(lb.addr, &backend, "/backend-first");
    server.send("last words down");
    server.shutdown_write();
    assert_eq!(client.rest(), (b"last words down".to_vec(), Ending::Eof));
    client.send("still asking");
    assert_eq!(server.read_n(12), b"still asking");
    drop(client);
    assert_eq!(server.rest(), (Vec::new(), Ending::Eof));
}

// 9. Bytes behind a head.

#[test]
fn bytes_in_the_same_write_as_either_head_go_through() {
    let backend = UpgradeBackend::switching_then(b"the backend speaks first");
    let lb = start_balancer_on(&[backend.addr], &[]);
    let (head, mut client) = open_tunnel(lb.addr, "/eager", b"the client did not wait");
    assert_eq!(head.status, 101, "{}", String::from_utf8_lossy(&head.head));
    let mut server = backend.next_end();
    assert_eq!(server.end.read_n(23), b"the client did not wait");
    assert_eq!(client.read_n(24), b"the backend speaks first");
    assert_relays(&mut client, &mut server.end, "after the early bytes");
}

// 10. A client nobody here wrote.

/// A client on the Python `websockets` library: a few text messages and a binary one,
/// each echo printed, then a clean close. Exit 77 when the library is missing. Its
/// asyncio interface, which every version since 10 (Debian's) has.
const PYTHON_CLIENT: &str = r#"
import asyncio, sys
try:
    import websockets
except ImportError:
    sys.exit(77)

async def main(url):
    async with websockets.connect(url, open_timeout=10, close_timeout=10) as ws:
        for text in ["one", "two", "three"]:
            await ws.send(text)
            print(await asyncio.wait_for(ws.recv(), 10))
        await ws.send(bytes([0, 1, 2, 255]))
        print((await asyncio.wait_for(ws.recv(), 10)).hex())

asyncio.run(main(sys.argv[1]))
"#;

#[test]
fn the_python_websockets_client_gets_its_echoes() {
    let backend = WsEchoBackend::start();
    let lb = start_balancer_on(&[backend.addr], &[]);
    let url = format!("ws://{}/python", lb.addr);
    let Some((code, out, err)) =
        run_tool(Command::new("python3").args(["-c", PYTHON_CLIENT, &url]))
    else {
        eprintln!("note: python3 is not installed; the websockets client test is skipped");
        return;
    };
    if code == 77 {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Python websockets library is not installed, and CI must run every test whole"
        );
        eprintln!("note: the Python websockets library is not installed; its test is skipped");
        return;
    }
    assert_eq!(code, 0, "the python client failed:\n{err}");
    assert_eq!(out, "one\ntwo\nthree\n000102ff\n", "stderr:\n{err}");
    wait_until("the backend to see the close handshake end", || {
        backend.clean_closes() == 1
    });
}

// 11. h2c.

#[test]
fn an_h2c_upgrade_is_proxied_as_a_plain_request() {
    let backend = Backend::hello("plain");
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    c.send(
        "GET /h2c HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    let r = c.response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "plain"));
    assert_eq!(r.header("upgrade"), None);
    // Still HTTP/1.1 on the same connection.
    assert_eq!(c.get("/after").status, 200);

    let seen = &backend.requests()[0];
    assert_eq!(seen.target, "/h2c");
    assert_eq!(seen.header("upgrade"), None, "{seen:?}");
    assert_eq!(seen.header("http2-settings"), None, "{seen:?}");
    let connection = seen
        .headers_named("connection")
        .join(",")
        .to_ascii_lowercase();
    assert!(!connection.contains("upgrade"), "{seen:?}");
}

// 12. The log and the metrics.

#[test]
fn a_closed_tunnel_is_logged_once_and_counted() {
    let backend = UpgradeBackend::switching();
    let lb = spawn_balancer(&[backend.addr], &["--log", "json"]);
    let m = metrics(lb.admin);
    assert_eq!(m.value("roundhouse_tunnels_open", &[]), Some(0.0));

    // Closed by the backend: 1000 bytes up, 3000 down, then the backend's FIN.
    let (mut client, mut server) = tunnel(lb.addr, &backend, "/by-backend");
    client.send(vec![b'u'; 1000]);
    assert_eq!(server.read_n(1000).len(), 1000);
    server.send(vec![b'd'; 3000]);
    assert_eq!(client.read_n(3000).len(), 3000);
    assert_eq!(tunnels_open(lb.admin), 1.0);
    drop(server);
    assert_eq!(client.rest(), (Vec::new(), Ending::Eof));
    drop(client);

    // Closed by the client: 500 up, 700 down, then the client's FIN.
    let (mut client, mut server) = tunnel(lb.addr, &backend, "/by-client");
    server.send(vec![b'd'; 700]);
    assert_eq!(client.read_n(700).len(), 700);
    client.send(vec![b'u'; 500]);
    client.shutdown_write();
    let (up, ending) = server.rest();
    assert_eq!((up.len(), ending), (500, Ending::Eof));
    drop(server);
    assert_eq!(client.rest(), (Vec::new(), Ending::Eof));
    drop(client);

    let line = |target: &str| {
        lb.p.wait_for_stdout_line(&format!("the log line of {target}"), |l| {
            l.contains(&format!("\"{target}\""))
        })
    };
    for (target, bytes, bytes_up, by) in [
        ("/by-backend", 3000, 1000, "backend"),
        ("/by-client", 700, 500, "client"),
    ] {
        let text = line(target);
        let v: serde_json::Value = serde_json::from_str(&text).expect("a JSON line");
        assert_eq!(v["status"], 101, "{text}");
        assert_eq!(v["bytes"], bytes, "{text}");
        assert_eq!(v["bytes_up"], bytes_up, "{text}");
        assert_eq!(v["closed_by"], by, "{text}");
    }
    // One line each: the second's came after the first's, so any other would be there.
    let out = lb.p.stdout();
    assert_eq!(out.matches("\"/by-backend\"").count(), 1, "{out}");

    let m = wait_all_closed(lb.admin, 2.0);
    assert_eq!(m.value("roundhouse_tunnels_opened_total", &[]), Some(2.0));
    assert_eq!(tunnels_closed(&m, "backend"), 1.0);
    assert_eq!(tunnels_closed(&m, "client"), 1.0);
    assert_eq!(tunnel_bytes(&m, "up"), 1500.0);
    assert_eq!(tunnel_bytes(&m, "down"), 3700.0);
    // Each tunnel's request counts once, as a 1xx answer of its backend.
    let label = backend.addr.to_string();
    let requests = [("backend", label.as_str()), ("code", "1xx")];
    assert_eq!(m.value("roundhouse_requests_total", &requests), Some(2.0));
}

// And --max-connections.

#[test]
fn tunnels_count_against_max_connections() {
    let backend = UpgradeBackend::switching();
    let lb = start_balancer_on(&[backend.addr], &["--max-connections", "2"]);
    let (mut c1, mut s1) = tunnel(lb.addr, &backend, "/one");
    let (mut c2, mut s2) = tunnel(lb.addr, &backend, "/two");

    let (tx, rx) = std::sync::mpsc::channel();
    let addr = lb.addr;
    thread::spawn(move || {
        let _ = tx.send(get(addr, "/third"));
    });
    // A third connection is not served while two tunnels are open. (Giving it a moment
    // can only make this check pass more slowly, never fail wrongly.)
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "a third connection was served while two tunnels were open"
    );
    assert_relays(&mut c1, &mut s1, "the first tunnel");
    assert_relays(&mut c2, &mut s2, "the second tunnel");
    drop((c2, s2));
    let third = rx
        .recv_timeout(PATIENCE)
        .expect("the third connection to be served once a tunnel closed");
    assert_eq!(third, (200, "plain".to_string()));
    assert_relays(&mut c1, &mut s1, "the first tunnel, still");
}
