//! One request, start to finish: read what it says, send it to a backend, relay the
//! answer or refuse, then log and count it once. This is the balancer's main path; start
//! reading at `handle`. `connection.rs` calls `handle` for each request head it reads;
//! `balancer/` picks, `upstream/` forwards, `relay.rs` streams the answer back and
//! `refuse.rs` answers a failure.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::Method;
use http::header::{self, HeaderMap, HeaderValue};

use crate::access_log::{Entry, RequestLine};
use crate::balancer::{Balancer, Candidates, InFlight, PickContext};
use crate::clock;
use crate::config::{Config, LogFormat, RetryConfig};
use crate::error::ProxyError;
use crate::headers;
use crate::health::Health;
use crate::http1::{ClientConn, Framing, RequestHead};
use crate::limits::Limits;
use crate::metrics::Tunnels;
use crate::proxy_protocol::Trusted;
use crate::refuse::{self, Refusal, Tally};
use crate::relay::{Relayed, Wanted, relay};
use crate::request_id::{self, X_REQUEST_ID};
use crate::retry::{Budget, Replay, ResendBody, Resends};
use crate::shutdown::Shutdown;
use crate::spill::Spill;
use crate::target::origin_form;
use crate::trace::Attempts;
use crate::upstream::{self, Reply, RequestBody};

mod upgrade;

pub use upgrade::{Switched, Upgraded, upgrade};

/// What one request needs that outlives it: the backends and the request-level settings.
/// Built once by `server.rs`; nothing changes it afterwards.
pub struct Proxy {
    /// The backends and strategy, swapped whole by a reload (reload.rs). Loaded once per
    /// request, without a lock: a request finishes on the set it started with.
    balancer: Arc<ArcSwap<Balancer>>,
    /// Once begun, answers say `Connection: close`.
    shutdown: Arc<Shutdown>,
    /// Where every request is logged and counted.
    tally: Tally,
    /// Where failures and answers are reported; decides which backends are up. The
    /// health thread holds it too.
    health: Arc<Health>,
    max_body: Option<u64>,
    /// `--trace-header`: answers say why their backend was picked and where time went.
    trace: bool,
    /// Requests carry an `X-Request-Id` (with the combined or json log, or a trace).
    request_ids: bool,
    retry: RetryConfig,
    /// Resends allowed over the last seconds (retry.rs).
    budget: Budget,
    /// Upgrades (upgrade.rs): their own backend connections' timeouts, the tunnels open
    /// (written through `Tunnels::try_open` here, and by the tunnel room) and their cap.
    connect_timeout: Duration,
    timeout: Duration,
    tunnels: Arc<Tunnels>,
    max_tunnels: usize,
    /// `--trusted-proxy`: whose X-Forwarded-For says who the client is.
    trusted: Trusted,
    /// `--rate-limit`, taken per request (limits.rs); the acceptors share it.
    limits: Arc<Limits>,
}

impl Proxy {
    /// The request-level settings come from `config`; the rest is shared with what
    /// `server.rs` starts beside the workers: the reloadable backend set (reload.rs), the
    /// shutdown switch, the health state (the health thread), the tally (turn-aways
    /// on the acceptor and the waiting room), the tunnel counts (the tunnel room) and
    /// the limits per client (the acceptors).
    pub fn new(
        config: &Config,
        balancer: Arc<ArcSwap<Balancer>>,
        shutdown: Arc<Shutdown>,
        health: Arc<Health>,
        tally: Tally,
        tunnels: Arc<Tunnels>,
        limits: Arc<Limits>,
    ) -> Proxy {
        Proxy {
            balancer,
            shutdown,
            tally,
            health,
            max_body: config.max_body,
            trace: config.trace_header,
            request_ids: config.trace_header
                || matches!(config.log, LogFormat::Combined | LogFormat::Json),
            retry: config.retry.clone(),
            budget: Budget::default(),
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
            tunnels,
            max_tunnels: config.max_tunnels,
            trusted: Trusted::new(config.trusted_proxies.clone()),
            limits,
        }
    }
}

/// Buffers a worker reuses for every request it serves, so the hot path allocates none.
pub struct Scratch {
    /// The response head and small bodies, sent in one write.
    pub out: Vec<u8>,
    /// Body bytes on their way from the backend to the client: 16 KiB, grown to
    /// `relay::COPY` by the first answer longer than that (relay.rs).
    copy: Vec<u8>,
    /// The request body as sent so far, kept to be sent again (`--retry-buffer`).
    kept: Vec<u8>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            out: Vec::with_capacity(16 * 1024),
            copy: vec![0; 16 * 1024],
            kept: Vec::new(),
        }
    }
}

/// Where a request's body comes from.
pub enum Body {
    /// Read from the client while it is forwarded: no body, or `--request-buffering off`.
    Streamed,
    /// Gathered whole before any backend heard of the request (`http1::Gather`): sent
    /// at memory speed, and sent again after a reset whatever `--retry-buffer` says.
    Buffered(Spill),
    /// Gathering it failed (malformed, too large, the client left): refused with this.
    Failed(ProxyError),
}

/// Whether the client connection can carry another request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Next {
    KeepAlive,
    Close,
}

/// Proxies one client request and answers it, whatever happens: with the backend's
/// answer, or with one short error. The main path, in order:
///
/// 1. `prepare`: what the request says, its id, what its log line will need;
/// 2. `send`: refuse it from its head alone, or pick candidates, apply the header
///    policy and `forward` it with its body to the first backend that takes it;
/// 3. `relay` the answer (relay.rs), or refuse with the failure (`answer_error`);
/// 4. log and count it once, through `Tally` (refuse.rs).
///
/// Whether the connection may carry another request is decided once, before the answer
/// is written, and returned, with the end of the answer that the client has not taken
/// yet, if any: the caller has it written out (`WaitingRoom::write_out`) before the
/// connection carries anything else. `started`: when its head was read (the log's
/// request time counts from there, a gathered body's time included); `queue_wait`: how
/// long the connection waited for a worker before this request.
pub fn handle(
    proxy: &Proxy,
    conn: &mut ClientConn,
    head: RequestHead,
    body: Body,
    scratch: &mut Scratch,
    started: Instant,
    queue_wait: Duration,
) -> (Next, Option<Spill>) {
    let mut request = prepare(proxy, conn, head, started, queue_wait);
    // Held until the request ends: the backends it was counted against stay alive even
    // if a reload swaps them out meanwhile.
    let balancer = proxy.balancer.load();
    let mut attempts = Attempts::new(proxy.trace);
    let (answer, body_read) = send(
        proxy,
        &balancer,
        conn,
        &mut request,
        body,
        &mut scratch.kept,
        &mut attempts,
    );
    // The client wants to keep the connection, it is at a request boundary (the body was
    // read to its end), the balancer is not stopping (from the first signal on, the drain
    // delay included: shutdown.rs says why), and no client mistake ended it.
    let keep_alive = request.head.keep_alive
        && body_read
        && !proxy.shutdown.is_stopping()
        && !matches!(&answer, Err(err) if err.closes_connection());
    let (reusable, unsent) = match answer {
        // `_in_flight` counts the request against its backend until the backend's answer
        // is read whole.
        Ok((reply, _in_flight)) => {
            let relayed = relay(
                conn,
                &mut scratch.out,
                &mut scratch.copy,
                reply,
                request.wanted(keep_alive),
                |headers| request.add_headers(&attempts, headers),
            );
            // Logged now, when the worker is done with it, even if a slow client has
            // not taken all of it yet: its bytes are those handed to the client.
            finish(proxy, &request, &attempts, &relayed);
            (relayed.keep_alive, relayed.unsent)
        }
        Err(err) => {
            let reusable = answer_error(
                proxy,
                conn,
                &mut scratch.out,
                &request,
                &attempts,
                &err,
                keep_alive,
            );
            (reusable, None)
        }
    };
    let next = if reusable {
        Next::KeepAlive
    } else {
        Next::Close
    };
    (next, unsent)
}

/// One request on its way through `handle`: its head, as the header policy changes it,
/// and what its log line will need.
struct Request {
    head: RequestHead,
    /// The connection's peer (the client, or what the PROXY header said it is).
    peer: SocketAddr,
    /// Who the client is for the pick, the limits and the log: `peer`, or from a
    /// `--trusted-proxy` peer the client its X-Forwarded-For names (port 0: unknown).
    client: SocketAddr,
    started: Instant,
    queue_wait: Duration,
    /// Kept for the combined and json log lines only.
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    /// `X-Request-Id`, when ids are on (request_id.rs).
    request_id: Option<HeaderValue>,
    /// The request came over TLS: the backend hears `X-Forwarded-Proto: https`.
    tls: bool,
    /// The TLS version and the client's SNI, for the json log line only.
    tls_version: Option<&'static str>,
    sni: Option<Box<str>>,
}

/// What the request says, before any backend hears of it: keeps the fields its log line
/// will need and gives it its id.
fn prepare(
    proxy: &Proxy,
    conn: &ClientConn,
    mut head: RequestHead,
    started: Instant,
    queue_wait: Duration,
) -> Request {
    let kept = |name| {
        proxy
            .tally
            .wants_client_fields()
            .then(|| head.headers.get(name).cloned())
            .flatten()
    };
    let (referer, user_agent) = (kept(header::REFERER), kept(header::USER_AGENT));
    let request_id = proxy
        .request_ids
        .then(|| request_id::take_or_make(&mut head.headers));
    let tls = conn.tls_info();
    let logged = proxy.tally.wants_client_fields();
    let client = match proxy.trusted.client(conn.peer().ip(), &head.headers) {
        ip if ip == conn.peer().ip() => conn.peer(),
        ip => SocketAddr::new(ip, 0),
    };
    Request {
        head,
        peer: conn.peer(),
        client,
        tls: conn.is_tls(),
        tls_version: tls.version,
        sni: tls.server_name.filter(|_| logged).map(Box::from),
        started,
        queue_wait,
        referer,
        user_agent,
        request_id,
    }
}

impl Request {
    /// How the answer may be framed for this request.
    fn wanted(&self, keep_alive: bool) -> Wanted {
        Wanted {
            version: self.head.version,
            head: self.head.method == Method::HEAD,
            keep_alive,
        }
    }

    /// Our own fields on a relayed answer: the request id and the trace.
    fn add_headers(&self, attempts: &Attempts<'_>, headers: &mut HeaderMap) {
        if let Some(id) = &self.request_id {
            headers.insert(X_REQUEST_ID.clone(), id.clone());
        }
        attempts.add_headers(self.queue_wait, headers);
    }

    /// The log line's entry so far: everything but the status and the bytes sent.
    fn entry(&self, attempts: &Attempts<'_>) -> Entry<'_> {
        Entry {
            peer: self.client,
            backend: attempts.last.map(|b| b.upstream.addr()),
            request: Some(RequestLine {
                method: self.head.method.as_str(),
                target: &self.head.target,
                version: self.head.version,
            }),
            status: 0,
            bytes: 0,
            started: self.started,
            referer: self.referer.as_ref(),
            user_agent: self.user_agent.as_ref(),
            request_id: self.request_id.as_ref(),
            queue_wait: self.queue_wait,
            upstream: attempts.upstream,
            retries: attempts.retries,
            tls: self.tls_version,
            sni: self.sni.as_deref(),
            tunnel: None,
        }
    }
}

/// A backend's answer to the request, and its place in the backend's in-flight count;
/// or why there is none.
type Answer<'p> = Result<(Reply, InFlight<'p>), ProxyError>;

/// Sends the request to a backend: refuses it from its head alone if it must
/// (`--rate-limit`, `--max-body`, a target we cannot forward), asks the balancer for candidates, applies
/// the header policy and `forward`s it with its body. Returns the answer, and whether
/// the request body was read to its end: only then is the connection at a request
/// boundary.
fn send<'p>(
    proxy: &Proxy,
    balancer: &'p Balancer,
    conn: &mut ClientConn,
    request: &mut Request,
    body: Body,
    kept: &mut Vec<u8>,
    attempts: &mut Attempts<'p>,
) -> (Answer<'p>, bool) {
    let Request {
        head,
        peer,
        client,
        started,
        tls,
        ..
    } = request;
    // Until the body is read, the connection is not at a request boundary.
    let gathered = matches!(body, Body::Buffered(_));
    let path = match proxy
        .limits
        .allow(peer.ip())
        .and_then(|()| check_declared_length(head.framing, proxy.max_body))
        .and_then(|()| origin_form(&head.target, &mut head.headers))
    {
        Ok(path) => path,
        Err(err) => return (Err(err), gathered || !head.framing.has_body()),
    };
    if let Body::Failed(err) = body {
        return (Err(err), false);
    }
    // The pick sees the request as the client sent it, before the header policy.
    let candidates = balancer.candidates(&PickContext {
        client: client.ip(),
        path,
        headers: &head.headers,
    });
    attempts.candidates(balancer, &candidates);
    headers::to_upstream(&mut head.headers, peer.ip(), *tls);
    // A `,send-proxy` backend's connection names this client (upstream/transport.rs).
    upstream::for_client(*client);
    let outgoing = |framing| Outgoing {
        method: &head.method,
        target: path,
        headers: &head.headers,
        framing,
        started: *started,
    };
    if let Body::Buffered(mut body) = body {
        // Whole and decoded: it goes out with its length, chunked or not.
        let framing = Framing::Length(body.len());
        let answer = forward(
            proxy,
            balancer,
            candidates,
            outgoing(framing),
            &mut body,
            attempts,
        );
        return (answer, true);
    }
    let mut reader = conn.body(head.framing, head.expect_continue, proxy.max_body);
    let keep = match head.framing {
        Framing::None => 0,
        _ => proxy.retry.buffer,
    };
    let mut replay = Replay::new(&mut reader, kept, keep);
    let answer = forward(
        proxy,
        balancer,
        candidates,
        outgoing(head.framing),
        &mut replay,
        attempts,
    );
    // A body the client broke off is the client's fault, whatever the upstream client
    // made of it.
    match reader.failure() {
        Some(client_fault) => (Err(client_fault), false),
        None => (answer, reader.is_finished()),
    }
}

/// The request as it goes upstream, after the header policy.
struct Outgoing<'a> {
    method: &'a Method,
    /// Origin-form: path and query.
    target: &'a str,
    headers: &'a HeaderMap,
    framing: Framing,
    /// When the request started (the retry budget's clock).
    started: Instant,
}

/// Sends the request to the first backend that takes it. A backend that refuses the
/// connection (or does not complete it in time) is skipped: the request never left, so
/// the next one gets it, body and all; when every backend has refused, the last refusal
/// is the answer. A backend that closes or resets the connection before sending any
/// byte of an answer (typically a pooled connection it had given up on, or a backend
/// that died) gets the request sent again, on the next backend (or the same one, on a
/// fresh connection, if it is the only one), when `Resends` says it is safe and
/// affordable (retry.rs). Which failure is which is the error's to say
/// (`ProxyError::may_try_next`, `may_resend`, `counts_against_backend`); connect
/// failures, timeouts and every answer are reported to `health`. No candidate at all
/// (none available) is `NoBackend`.
fn forward<'p>(
    proxy: &Proxy,
    balancer: &'p Balancer,
    candidates: Candidates<'p>,
    request: Outgoing<'_>,
    body: &mut dyn ResendBody,
    attempts: &mut Attempts<'p>,
) -> Answer<'p> {
    let Outgoing {
        method,
        target,
        headers,
        framing,
        started,
    } = request;
    let all = balancer.backends();
    let now = clock::ms_at(started);
    proxy.budget.request(now);
    let mut resends = Resends::new(method, headers, proxy.retry.retries);
    // How many candidates there are, counted at the first failure only.
    let mut count = None;
    let mut refused = 0;
    for backend in candidates.clone().cycle() {
        attempts.attempt(backend);
        body.rewind();
        let request_body = match framing {
            Framing::None => RequestBody::Empty,
            Framing::Length(len) => RequestBody::Sized(len, &mut *body as &mut dyn Read),
            Framing::Chunked => RequestBody::Chunked(&mut *body as &mut dyn Read),
        };
        let in_flight = backend.start();
        let sent = Instant::now();
        // The upstream client consumes the headers; another attempt may need them.
        let err = match backend
            .upstream
            .send(method, target, headers.clone(), request_body)
        {
            Ok(reply) => {
                let took = sent.elapsed();
                in_flight.record(took);
                attempts.answered(took, reply.connect);
                proxy
                    .health
                    .answered(all, backend, reply.status, &reply.headers);
                return Ok((reply, in_flight));
            }
            Err(err) => err,
        };
        let count = *count.get_or_insert_with(|| candidates.clone().count());
        if let ProxyError::Timeout { .. } = err {
            // No answer in time is a sample too: at least that slow.
            in_flight.record(sent.elapsed());
        }
        if err.counts_against_backend() {
            proxy.health.failed(all, backend, clock::now_ms());
        }
        if err.may_try_next() {
            refused += 1;
            if refused >= count {
                return Err(err);
            }
            crate::say!("roundhouse: {err}; trying the next backend");
        } else if !resends.allow(&err, body.can_replay(), count, &proxy.budget, now) {
            return Err(err);
        }
        attempts.retry(backend, &err);
    }
    Err(ProxyError::NoBackend)
}

/// A body announced larger than `--max-body` is refused from the head alone, before any
/// backend hears of the request. (A chunked body is counted as it is read, in `http1/`.)
fn check_declared_length(framing: Framing, max_body: Option<u64>) -> Result<(), ProxyError> {
    match (framing, max_body) {
        (Framing::Length(len), Some(max)) if len > max => Err(ProxyError::BodyTooLarge),
        _ => Ok(()),
    }
}

/// Logs and counts a relayed answer against the backend that gave it.
fn finish(proxy: &Proxy, request: &Request, attempts: &Attempts<'_>, relayed: &Relayed) {
    let entry = Entry {
        status: relayed.status,
        bytes: relayed.bytes,
        ..request.entry(attempts)
    };
    proxy
        .tally
        .record(&entry, attempts.last, relayed.error.as_ref());
}

/// Answers a request that could not be proxied with its one status and a short text,
/// and logs and counts it (`refuse::answer`), against the backend tried last if any.
/// The request id and the trace go with an error too: that is when they are wanted.
/// Returns whether the connection may carry another request.
fn answer_error(
    proxy: &Proxy,
    conn: &mut ClientConn,
    out: &mut Vec<u8>,
    request: &Request,
    attempts: &Attempts<'_>,
    err: &ProxyError,
    keep_alive: bool,
) -> bool {
    let trace = attempts.header_values(request.queue_wait);
    let retry_after = match err {
        ProxyError::RateLimited { retry_after } => Some(HeaderValue::from(*retry_after)),
        _ => None,
    };
    let mut extra: [(&str, &str); 4] = [("", ""); 4];
    let mut n = 0;
    for (name, value) in [
        ("Retry-After", retry_after.as_ref()),
        ("X-Request-Id", request.request_id.as_ref()),
        ("X-Roundhouse-Trace", trace.as_ref().map(|t| &t.0)),
        ("Server-Timing", trace.as_ref().map(|t| &t.1)),
    ] {
        if let Some(value) = value.and_then(|v| v.to_str().ok()) {
            extra[n] = (name, value);
            n += 1;
        }
    }
    let refusal = Refusal {
        error: err,
        extra: &extra[..n],
        keep_alive,
    };
    let mut entry = request.entry(attempts);
    refuse::answer(&proxy.tally, conn, out, refusal, &mut entry, attempts.last)
}
