//! An upgrade: a request that asks to switch protocols (`RequestHead::upgrade`, WebSocket
//! and the like), forwarded with its `Connection: upgrade` and `Upgrade` fields. ureq 3
//! does not hand over its socket after a `101` (it marks the connection "protocol
//! switched" and keeps the transport), so the exchange uses a backend connection of its
//! own, opened here: the request head is written on it and the answer's head read and
//! parsed here (httparse), at the backend's pace, like any forward. The backend is the
//! balancer's pick, and one that refuses the connection sends the request to the next
//! one, as for any request.
//!
//! A `101` is relayed with its `Upgrade`/`Connection` fields and the connection becomes a
//! tunnel: both sockets go to the tunnel room (`tunnels.rs`), the event side, and the
//! worker takes its next job. Any other answer is relayed as an ordinary one (through
//! `relay.rs`, its body read from our own connection) and the client's connection closes
//! after it: that backend connection carries no other request. `--max-tunnels` caps the
//! tunnels open at once (503 beyond it), and an upgrade request takes its token of
//! `--rate-limit` like any other (429 without one); upgrades to https backends are not
//! supported.

use std::io::{self, Cursor, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{Proxy, Request, Scratch, answer_error, finish, prepare};
use crate::balancer::{Backend, Balancer, PickContext};
use crate::clock;
use crate::error::ProxyError;
use crate::headers;
use crate::http1::{ChunkedReader, ClientConn, RequestHead, Version};
use crate::proxy_protocol;
use crate::relay::{Wanted, relay};
use crate::spill::Spill;
use crate::target::origin_form;
use crate::trace::Attempts;
use crate::tunnels::{Tunnel, TunnelLog};
use crate::upstream::Reply;

/// The largest answer head read from a backend (as ureq's input buffer allows).
const MAX_ANSWER_HEAD: usize = 16 * 1024;

/// Header lines of an answer head parsed at once.
const ANSWER_FIELDS: usize = 100;

/// How an upgrade ended on the worker.
pub enum Upgraded {
    /// The backend switched protocols: the tunnel, minus the client (the caller's).
    Switched(Switched),
    /// Answered otherwise: the backend's own answer, or our refusal. The connection
    /// closes after it, once the client has taken what it has not taken yet (the end
    /// of the backend's answer, if any: the caller hands it to the waiting room).
    Answered(Option<Spill>),
}

/// A tunnel as the worker hands it over (see `tunnels::Tunnel`).
pub struct Switched {
    pub backend: TcpStream,
    pub down: Vec<u8>,
    pub log: TunnelLog,
    pub held: crate::balancer::Held,
}

impl Switched {
    /// The whole tunnel, with its client connection and what that client sent early.
    pub fn with(self, mut client: crate::client::Client) -> Tunnel {
        let up = client.conn.take_buffered();
        Tunnel {
            client,
            backend: self.backend,
            up,
            down: self.down,
            log: self.log,
            held: self.held,
        }
    }
}

/// The backend's answer head, parsed.
struct AnswerHead {
    status: u16,
    headers: HeaderMap,
    /// Bytes read past the head: the start of the body, or of the tunnel's stream.
    rest: Vec<u8>,
}

/// Forwards the upgrade request `head` (see the module docs); `started` and `queue_wait`
/// as for `proxy::handle`.
pub fn upgrade(
    proxy: &Proxy,
    conn: &mut ClientConn,
    head: RequestHead,
    scratch: &mut Scratch,
    started: Instant,
    queue_wait: Duration,
) -> Upgraded {
    let mut request = prepare(proxy, conn, head, started, queue_wait);
    let balancer = proxy.balancer.load_full();
    let mut attempts = Attempts::new(proxy.trace);
    let out = &mut scratch.out;
    if let Err(err) = proxy.limits.allow(request.peer.ip()) {
        answer_error(proxy, conn, out, &request, &attempts, &err, false);
        return Upgraded::Answered(None);
    }
    if !proxy.tunnels.try_open(proxy.max_tunnels) {
        let err = ProxyError::Overloaded;
        answer_error(proxy, conn, out, &request, &attempts, &err, false);
        return Upgraded::Answered(None);
    }
    let exchanged = exchange(proxy, &balancer, &mut request, &mut attempts);
    let (backend, stream, answer) = match exchanged {
        Ok(exchanged) => exchanged,
        Err(err) => {
            proxy.tunnels.close(None);
            answer_error(proxy, conn, out, &request, &attempts, &err, false);
            return Upgraded::Answered(None);
        }
    };
    if answer.status != 101 {
        proxy.tunnels.close(None);
        let unsent = relay_answer(proxy, conn, scratch, &request, &attempts, stream, answer);
        return Upgraded::Answered(unsent);
    }
    // Counted against its backend before the client hears of it: a least-conn pick
    // that follows the client's next move already sees it.
    let held = balancer
        .hold(backend)
        .expect("the backend is one of the balancer's");
    if let Err(err) = switch(conn, out, answer.headers) {
        proxy.tunnels.close(None);
        let err = ProxyError::ClientGone(err);
        answer_error(proxy, conn, out, &request, &attempts, &err, false);
        return Upgraded::Answered(None);
    }
    proxy.tally.count_upgrade(backend, started.elapsed());
    let head = request.head;
    Upgraded::Switched(Switched {
        backend: stream,
        down: answer.rest,
        held,
        log: TunnelLog {
            method: head.method,
            target: head.target,
            version: head.version,
            started,
            request_id: request.request_id,
        },
    })
}

/// Sends the request to the first backend that takes the connection, and reads its
/// answer's head.
fn exchange<'b>(
    proxy: &Proxy,
    balancer: &'b Balancer,
    request: &mut Request,
    attempts: &mut Attempts<'b>,
) -> Result<(&'b Backend, TcpStream, AnswerHead), ProxyError> {
    let Request {
        head,
        peer,
        client,
        tls,
        ..
    } = request;
    let protocols = head.upgrade.clone().expect("an upgrade request");
    let path = origin_form(&head.target, &mut head.headers)?.to_owned();
    let candidates = balancer.candidates(&PickContext {
        client: client.ip(),
        path: &path,
        headers: &head.headers,
    });
    attempts.candidates(balancer, &candidates);
    // The header policy strips every hop-by-hop field; these two are the request.
    headers::to_upstream(&mut head.headers, peer.ip(), *tls);
    head.headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    head.headers.insert(header::UPGRADE, protocols);
    let bytes = request_head(head.method.as_str(), &path, &head.headers);
    let count = candidates.clone().count();
    let mut refused = ProxyError::NoBackend;
    for backend in candidates.take(count) {
        attempts.attempt(backend);
        let addr = backend.upstream.addr();
        if backend.upstream.is_https() {
            return Err(ProxyError::NotImplemented(
                "upgrades to https backends are not supported",
            ));
        }
        let mut stream = match TcpStream::connect_timeout(&addr, proxy.connect_timeout) {
            Ok(stream) => stream,
            Err(err) => {
                let err = ProxyError::Connect {
                    backend: addr,
                    detail: err.to_string(),
                };
                proxy
                    .health
                    .failed(balancer.backends(), backend, clock::now_ms());
                crate::say!("roundhouse: {err}; trying the next backend");
                attempts.retry(backend, &err);
                refused = err;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(proxy.timeout));
        let _ = stream.set_write_timeout(Some(proxy.timeout));
        let sent = Instant::now();
        let header = backend
            .upstream
            .sends_proxy()
            .then(|| proxy_protocol::v2_header(Some(*client), addr));
        let answer = stream
            .write_all(header.as_deref().unwrap_or_default())
            .and_then(|()| stream.write_all(&bytes))
            .map_err(|err| ProxyError::Reset {
                backend: addr,
                detail: err.to_string(),
            })
            .and_then(|()| read_answer_head(&mut stream, addr));
        return match answer {
            Ok(answer) => {
                attempts.answered(sent.elapsed(), None);
                Ok((backend, stream, answer))
            }
            Err(err) => {
                if err.counts_against_backend() {
                    proxy
                        .health
                        .failed(balancer.backends(), backend, clock::now_ms());
                }
                Err(err)
            }
        };
    }
    Err(refused)
}

/// The request head as it goes to the backend.
fn request_head(method: &str, path: &str, headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    for part in [method, " ", path, " HTTP/1.1\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads and parses the backend's answer head, skipping interim `1xx` answers but `101`.
fn read_answer_head(
    stream: &mut TcpStream,
    backend: std::net::SocketAddr,
) -> Result<AnswerHead, ProxyError> {
    let broke = |detail: String| ProxyError::Upstream { backend, detail };
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let mut fields = [httparse::EMPTY_HEADER; ANSWER_FIELDS];
        let mut answer = httparse::Response::new(&mut fields);
        let parsed = answer
            .parse(&buf)
            .map_err(|err| broke(format!("bad answer head: {err}")))?;
        if let httparse::Status::Complete(len) = parsed {
            let status = answer.code.unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                // An interim answer (100 Continue, 103 Early Hints): the real one follows.
                buf.drain(..len);
                continue;
            }
            let mut headers = HeaderMap::new();
            for field in answer.headers.iter() {
                let name = HeaderName::from_bytes(field.name.as_bytes());
                let value = HeaderValue::from_bytes(field.value);
                if let (Ok(name), Ok(value)) = (name, value) {
                    headers.append(name, value);
                }
            }
            return Ok(AnswerHead {
                status,
                headers,
                rest: buf.split_off(len),
            });
        }
        if buf.len() >= MAX_ANSWER_HEAD {
            return Err(broke("answer head too large".into()));
        }
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => {
                return Err(ProxyError::Reset {
                    backend,
                    detail: "closed before answering".into(),
                });
            }
            Ok(0) => return Err(broke("closed in the middle of the answer head".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ProxyError::Timeout { backend });
            }
            Err(err) => return Err(broke(err.to_string())),
        }
    }
}

/// Relays the backend's `101` to the client: its fields after the header policy, with
/// `Connection: upgrade` and its `Upgrade` field put back.
fn switch(conn: &mut ClientConn, out: &mut Vec<u8>, mut fields: HeaderMap) -> io::Result<()> {
    let protocols = fields.get(header::UPGRADE).cloned();
    headers::to_client(&mut fields);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    let upgrade = [
        (
            header::CONNECTION,
            Some(HeaderValue::from_static("upgrade")),
        ),
        (header::UPGRADE, protocols),
    ];
    let ours = upgrade
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| (name, v)));
    for (name, value) in fields.iter().chain(ours) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let written = conn.write_all(out);
    out.clear();
    written
}

/// Relays an answer other than `101` like any other, its body read from our own
/// connection with its framing (a length, chunked, or until the backend closes), then
/// logs and counts it. Returns what the client has not taken yet, for the waiting room.
fn relay_answer(
    proxy: &Proxy,
    conn: &mut ClientConn,
    scratch: &mut Scratch,
    request: &Request,
    attempts: &Attempts<'_>,
    stream: TcpStream,
    answer: AnswerHead,
) -> Option<Spill> {
    let backend = stream.peer_addr().unwrap_or(request.peer);
    let chunked = answer
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let length = answer
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|_| !chunked);
    let bodyless = answer.status == 204 || answer.status == 304;
    let raw = Cursor::new(answer.rest).chain(stream);
    let body: Box<dyn Read + Send> = match (bodyless, chunked, length) {
        (true, _, _) => Box::new(io::empty()),
        (false, true, _) => Box::new(ChunkedReader::new(raw)),
        (false, false, Some(len)) => Box::new(raw.take(len)),
        (false, false, None) => Box::new(raw),
    };
    let reply = Reply::own(backend, answer.status, answer.headers, length, body);
    let wanted = Wanted {
        version: Version::Http11,
        head: false,
        keep_alive: false,
    };
    let relayed = relay(
        conn,
        &mut scratch.out,
        &mut scratch.copy,
        reply,
        wanted,
        |headers| request.add_headers(attempts, headers),
    );
    finish(proxy, request, attempts, &relayed);
    relayed.unsent
}
