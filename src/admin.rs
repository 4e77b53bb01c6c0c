//! The admin interface: a small HTTP listener of its own (`--admin`, never the proxy
//! port) for the people who run the balancer. It serves the Prometheus metrics, a JSON
//! status, a live HTML status page, runtime changes to the backends (drain, enable,
//! disable, weight), and for the machines that route traffic here, the `/live` and
//! `/ready` probes (`readiness.rs` decides the second). Requests are read with the same
//! front door as proxied ones (`http1/`): no second HTTP parser. Who may ask is
//! `admin/guard.rs`'s decision (origin, Host and bearer token checks), made before any
//! endpoint runs. Each admin connection gets a short-lived thread of its own, at most
//! `MAX_CONNECTIONS` at once; a sampler thread keeps a few minutes of per-second request
//! counts for the page's sparklines.
//!
//! Reading the counters takes no lock the request path takes: they are the atomics of
//! `metrics.rs` and `balancer/`. `server.rs` starts this when `--admin` is given.

mod guard;
mod history;
mod prometheus;
mod status;

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use http::Method;
use http::header::{self, HeaderMap, HeaderValue};

use crate::balancer::{Backend, Balancer};
use crate::client::Client;
use crate::config::{MAX_HEAD, WEIGHT_RULE, Weight};
use crate::http1::{ClientConn, RequestHead, ResponseBody, ResponseHead, write_error, write_head};
use crate::listener::Limit;
use crate::metrics::{Handshakes, Stats, Tunnels};
use crate::pool::Pool;
use crate::readiness::Readiness;
use crate::reload::Control;
use crate::wire::Accepting;

use guard::{Guard, Refusal};
use history::History;

/// Admin connections served at once; more get 503. Admin traffic is a scraper, a
/// browser tab and an operator's curl.
const MAX_CONNECTIONS: usize = 16;
/// How long an admin client has to send a request, and the longest idle keep-alive.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest admin request body (a weight is a few digits).
const MAX_BODY: u64 = 1024;
/// The status page: one file, embedded, no external assets.
const PAGE: &str = include_str!("admin/status_page.html");

/// What the admin interface reads and changes.
pub struct Sources {
    /// The counters of requests that no backend was tried for (`refuse::Tally` writes
    /// them).
    pub no_backend: Arc<Stats>,
    /// The running backend set, and weight changes (reload.rs).
    pub control: Control,
    pub pool: Pool<Client>,
    /// Open client connections (`listener::run` counts them).
    pub connections: Arc<Limit>,
    /// The TLS listeners' handshakes (`tls_session::Session` counts them).
    pub handshakes: Arc<Handshakes>,
    /// The Upgrade tunnels (`metrics::Tunnels` says who writes them).
    pub tunnels: Arc<Tunnels>,
    /// Connections closed for their PROXY header (`proxy_protocol::Refusals` says who
    /// writes them).
    pub proxy_refusals: Arc<crate::proxy_protocol::Refusals>,
    /// Whether this instance should get traffic (`Readiness` says who writes it).
    pub readiness: Arc<Readiness>,
    pub started: Instant,
    /// Where the configuration came from, in words.
    pub config_source: String,
}

impl Sources {
    /// The backend set in use now.
    fn balancer(&self) -> Arc<Balancer> {
        self.control.current()
    }
}

/// Everything one admin connection needs.
struct Admin {
    sources: Sources,
    /// Who may ask; consulted before every endpoint.
    guard: Guard,
    history: History,
    open: AtomicUsize,
}

/// Binds the admin port, `addr`; never with SO_REUSEPORT, so that one instance's port
/// is never another's.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|err| io::Error::new(err.kind(), format!("--admin {addr}: {err}")))
}

/// Starts the admin threads on `listener` (from `bind`); returns its address.
/// `accepting`: plain, or TLS with the listeners' certificates (`--admin-tls`).
pub fn start(
    listener: TcpListener,
    token: Option<String>,
    sources: Sources,
    accepting: Accepting,
) -> io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    let admin = Arc::new(Admin {
        sources,
        guard: Guard::new(token),
        history: History::default(),
        open: AtomicUsize::new(0),
    });
    {
        let admin = admin.clone();
        thread::Builder::new()
            .name("admin-history".into())
            .spawn(move || {
                loop {
                    admin.history.sample(admin.sources.balancer().backends());
                    thread::sleep(history::INTERVAL);
                }
            })?;
    }
    thread::Builder::new()
        .name("admin".into())
        .spawn(move || accept(listener, admin, accepting))?;
    Ok(local)
}

fn accept(listener: TcpListener, admin: Arc<Admin>, accepting: Accepting) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                crate::say!("roundhouse: admin accept failed: {err}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(TIMEOUT));
        let _ = stream.set_write_timeout(Some(TIMEOUT));
        let _ = stream.set_nodelay(true);
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        // Relaxed: a cap, not a synchronisation point.
        if admin.open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            admin.open.fetch_sub(1, Ordering::Relaxed);
            let mut stream = stream;
            let _ = write_error(&mut stream, &mut Vec::new(), 503, "admin busy", &[], false);
            continue;
        }
        let Some(wire) = accepting.wire() else {
            admin.open.fetch_sub(1, Ordering::Relaxed);
            continue;
        };
        let conn_admin = admin.clone();
        let spawned = thread::Builder::new()
            .name("admin-conn".into())
            .stack_size(512 * 1024)
            .spawn(move || {
                // Over TLS, the handshake is the first thing `read_head` waits for.
                serve(
                    &conn_admin,
                    ClientConn::new(stream, peer, MAX_HEAD).over(wire),
                );
                conn_admin.open.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            admin.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An answer to one admin request.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// `Allow` for a 405, `WWW-Authenticate` for a 401.
    extra: Option<(header::HeaderName, &'static str)>,
}

impl Answer {
    fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status: 200,
            content_type,
            body: body.into(),
            extra: None,
        }
    }

    fn json(value: serde_json::Value) -> Answer {
        Answer::ok("application/json", value.to_string())
    }

    fn text(status: u16, text: impl Into<String>) -> Answer {
        let mut body = text.into().into_bytes();
        body.push(b'\n');
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
            extra: None,
        }
    }

    fn not_allowed(allow: &'static str) -> Answer {
        Answer {
            extra: Some((header::ALLOW, allow)),
            ..Answer::text(405, format!("method not allowed (allowed: {allow})"))
        }
    }

    fn refused(refusal: Refusal) -> Answer {
        match refusal {
            Refusal::Forbidden(why) => Answer::text(403, why),
            Refusal::Unauthorized => Answer {
                extra: Some((header::WWW_AUTHENTICATE, "Bearer realm=\"roundhouse\"")),
                ..Answer::text(401, "missing or wrong bearer token")
            },
        }
    }
}

/// Serves one admin connection's requests until it closes, idles out or errs.
fn serve(admin: &Admin, mut conn: ClientConn) {
    let mut out = Vec::with_capacity(4096);
    loop {
        let head = match conn.read_head(Instant::now() + TIMEOUT) {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(err) => {
                if let Some(status) = err.status() {
                    let _ = write_error(&mut conn, &mut out, status, err.client_text(), &[], false);
                }
                return;
            }
        };
        let mut body = String::new();
        let read = conn
            .body(head.framing, head.expect_continue, Some(MAX_BODY))
            .read_to_string(&mut body);
        let (answer, keep_alive) = match read {
            Ok(_) => (admin.route(&head, &body), head.keep_alive),
            Err(_) => (Answer::text(400, "unreadable request body"), false),
        };
        let is_head = head.method == Method::HEAD;
        if send(&mut conn, &mut out, &head, answer, is_head, keep_alive).is_err() || !keep_alive {
            return;
        }
    }
}

fn send(
    conn: &mut ClientConn,
    out: &mut Vec<u8>,
    head: &RequestHead,
    answer: Answer,
    is_head: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    // Live numbers: never from a cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some((name, value)) = answer.extra {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let len = answer.body.len() as u64;
    let (kind, head_len) = if is_head {
        (ResponseBody::None, Some(len))
    } else {
        (ResponseBody::Length(len), None)
    };
    let mut writer = write_head(
        conn,
        out,
        &ResponseHead {
            version: head.version,
            status: answer.status,
            headers: &headers,
            body: kind,
            head_length: head_len,
            keep_alive,
        },
    );
    if !is_head {
        io::Write::write_all(&mut writer, &answer.body)?;
    }
    writer.finish()
}

impl Admin {
    /// Which endpoint a request is for, and its answer. `guard.rs` decides first
    /// whether it is answered at all; `/`, the page, and the probes are the paths it
    /// lets through without the token.
    fn route(&self, head: &RequestHead, body: &str) -> Answer {
        let path = head.target.split('?').next().unwrap_or_default();
        let method = &head.method;
        let readable = *method == Method::GET || *method == Method::HEAD;
        if let Err(refusal) = self.guard.check(head, path) {
            return Answer::refused(refusal);
        }
        match path {
            "/" if readable => Answer::ok("text/html; charset=utf-8", PAGE),
            "/metrics" if readable => Answer::ok(
                "text/plain; version=0.0.4; charset=utf-8",
                prometheus::render(&self.sources),
            ),
            "/status.json" if readable => {
                Answer::json(status::render(&self.sources, &self.history))
            }
            // This thread answers, so the process serves.
            "/live" if readable => Answer::text(200, "live"),
            "/ready" if readable => {
                match self
                    .sources
                    .readiness
                    .check(self.sources.balancer().backends())
                {
                    Ok(()) => Answer::text(200, "ready"),
                    Err(not) => Answer::text(503, not.text()),
                }
            }
            "/" | "/metrics" | "/status.json" | "/live" | "/ready" => {
                Answer::not_allowed("GET, HEAD")
            }
            _ => match path
                .strip_prefix("/backends/")
                .and_then(|p| p.rsplit_once('/'))
            {
                Some((addr, action)) => self.change(method, addr, action, body),
                None => Answer::text(404, format!("no such admin path '{path}'")),
            },
        }
    }

    /// `POST /backends/{addr}/drain|enable|disable`, `PUT /backends/{addr}/weight`.
    fn change(&self, method: &Method, addr: &str, action: &str, body: &str) -> Answer {
        let expected = match action {
            "drain" | "enable" | "disable" => Method::POST,
            "weight" => Method::PUT,
            _ => return Answer::text(404, format!("no such backend action '{action}'")),
        };
        if *method != expected {
            return Answer::not_allowed(if expected == Method::POST {
                "POST"
            } else {
                "PUT"
            });
        }
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            return Answer::text(400, format!("'{addr}' is not an ip:port address"));
        };
        let balancer = self.sources.balancer();
        let Some(backend) = find(&balancer, addr) else {
            return Answer::text(404, format!("no backend {addr}"));
        };
        match action {
            "drain" => backend.marks().drain(),
            "disable" => backend.marks().disable(),
            "enable" => backend.marks().enable(),
            _ => {
                let Some(weight) = Weight::parse(body.trim()) else {
                    return Answer::text(
                        400,
                        format!("weight '{}' is not {WEIGHT_RULE}", body.trim()),
                    );
                };
                if let Err(why) = self.set_weight(addr, weight.get()) {
                    return Answer::text(409, why);
                }
            }
        }
        // A weight change swapped the set: answer from the new one.
        let balancer = self.sources.balancer();
        match find(&balancer, addr) {
            Some(backend) => Answer::json(status::backend(backend)),
            None => Answer::text(404, format!("no backend {addr}")),
        }
    }

    /// Changes a backend's weight: the strategies precompute their weights, so this
    /// builds a new backend set and swaps it in (reload.rs), keeping each backend's
    /// state and counters.
    fn set_weight(&self, addr: SocketAddr, weight: u32) -> Result<(), String> {
        self.sources.control.set_weight(addr, weight)
    }
}

fn find(balancer: &Balancer, addr: SocketAddr) -> Option<&Backend> {
    balancer
        .backends()
        .iter()
        .find(|b| b.upstream.addr() == addr)
}
