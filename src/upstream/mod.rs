//! The upstream side: ureq Agents for each backend, and one forward of a request to it.
//! This module (with `transport.rs`, our TCP transport for ureq, and `tls.rs`, TLS to
//! https backends on top of it) is the only code that knows ureq; `proxy.rs` calls `Upstream::send` and reads the
//! `Reply` it returns. Every ureq default that matters to a proxy is overridden here, on
//! purpose, with its reason.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ureq::http::{HeaderMap, HeaderValue, Method, Request, Uri, Version, header};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::{Agent, AsSendBody, Body, SendBody};

use crate::config::{BackendSpec, MAX_HEAD};
use crate::error::ProxyError;

mod buffers;
mod tls;
mod transport;

pub use buffers::INPUT;
pub use tls::{Tls, TlsFlags};
use transport::TcpConnector;
pub use transport::for_client;

/// How a request body reaches the backend.
pub enum RequestBody<'a> {
    Empty,
    /// The client announced this many bytes; the reader must fail, not end, if fewer come
    /// (ureq's sender spins forever on a sized body that ends early).
    Sized(u64, &'a mut dyn Read),
    /// Length unknown: sent chunked.
    Chunked(&'a mut dyn Read),
}

/// Timeouts and pool sizes for every backend's Agents.
pub struct Settings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// `--workers`: at most this many connections to one backend are in use at once.
    pub workers: usize,
    /// How many backends share the workers' requests.
    pub backends: usize,
    /// The client side of TLS, for https backends.
    pub tls: Tls,
}

/// One backend's client: its address and the Agents whose connection pools serve only
/// it. ureq's pool is one mutex per Agent, and every connection returned to it costs a
/// scan of the whole idle list (comparing pool keys by value): with one Agent shared by
/// all backends, throughput at 1000 connections collapsed to 0.3x, and with one Agent
/// per backend that scan was still a quarter of the CPU (512 workers, 2 backends). So a
/// backend has one Agent per lane, a lane is a fixed group of workers, and a worker
/// always uses its lane's Agent: each idle list stays short and each mutex has few
/// takers. Not more lanes than that, though: every lane keeps its own connections.
pub struct Upstream {
    addr: SocketAddr,
    /// `http://addr`, or `https://host:port` with the host as written (for SNI and the
    /// certificate check; the connection still goes to `addr`): the request-target is
    /// appended to it.
    base: String,
    /// Each made by the first request of its lane: an idle balancer keeps one per
    /// backend, not dozens.
    lanes: Box<[OnceLock<Agent>]>,
    /// Makes a lane's Agent.
    make_agent: Box<dyn Fn() -> Agent + Send + Sync>,
    /// Workers per lane.
    group: usize,
    /// `,send-proxy`.
    send_proxy: bool,
}

/// Connections to one backend that one lane should have in use at most, with requests
/// spread evenly over the backends: the length of the idle list its Agent scans. Every
/// connection handed back costs a scan of the whole list (ureq counts the idle
/// connections per host by comparing keys): at 16, the comparisons were 2.3 % of all
/// CPU in S1.
const LANE_LOAD: usize = 4;

/// Lanes per backend: one per `LANE_LOAD` of the connections to it that can be in use
/// at once, counting each backend's even share of the workers. 512 workers and 2
/// backends make 64 lanes of 8 workers; with 128 backends or more, one lane (one Agent)
/// serves all workers, as each backend's share is small enough.
fn lanes(workers: usize, backends: usize) -> usize {
    workers.div_ceil(backends.max(1) * LANE_LOAD).max(1)
}

/// Numbers the threads that send requests, in the order of their first request.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's number, which picks its lane at every backend.
    static THREAD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// The backend's answer: status and headers read, body not yet.
pub struct Reply {
    pub backend: SocketAddr,
    pub status: u16,
    pub headers: HeaderMap,
    /// From the backend's Content-Length, when it framed the body that way.
    pub content_length: Option<u64>,
    /// How long the TCP connect took, when this exchange opened a new connection (not
    /// when it reused a pooled one).
    pub connect: Option<Duration>,
    body: ReplyBody,
}

/// Where an answer's body comes from: ureq, or (for an upgrade the backend did not
/// accept, `proxy/upgrade.rs`) a connection of our own, already decoded.
enum ReplyBody {
    Ureq(Body),
    Own(Box<dyn Read + Send>),
}

impl Reply {
    /// An answer read from a connection of our own: `body` is its body, its transfer
    /// coding already removed, failing (not ending) if the backend breaks off.
    pub fn own(
        backend: SocketAddr,
        status: u16,
        headers: HeaderMap,
        content_length: Option<u64>,
        body: Box<dyn Read + Send>,
    ) -> Reply {
        Reply {
            backend,
            status,
            headers,
            content_length,
            connect: None,
            body: ReplyBody::Own(body),
        }
    }

    /// The body as the backend sends it, with its transfer coding removed but its content
    /// coding (gzip...) untouched. Fails, never ends early, if the backend breaks off.
    pub fn into_body(self) -> impl Read {
        match self.body {
            ReplyBody::Ureq(body) => Either::Ureq(body.into_reader()),
            ReplyBody::Own(body) => Either::Own(body),
        }
    }
}

/// The reader of either kind of body.
enum Either<U> {
    Ureq(U),
    Own(Box<dyn Read + Send>),
}

impl<U: Read> Read for Either<U> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Either::Ureq(body) => body.read(out),
            Either::Own(body) => body.read(out),
        }
    }
}

impl Upstream {
    /// A plain http backend at `addr`.
    pub fn new(addr: SocketAddr, settings: &Settings) -> Upstream {
        Self::build(addr, None, false, settings)
    }

    /// The backend a `--backend` flag names, http or https.
    pub fn for_spec(spec: &BackendSpec, settings: &Settings) -> Upstream {
        Self::build(spec.addr, spec.https.as_deref(), spec.send_proxy, settings)
    }

    /// `https`: the `host:port` as written, for a TLS backend. `send_proxy`: every
    /// connection starts with a PROXY header naming its request's client, so it carries
    /// that one request only: the pool keeps none.
    fn build(
        addr: SocketAddr,
        https: Option<&str>,
        send_proxy: bool,
        settings: &Settings,
    ) -> Upstream {
        let lanes = lanes(settings.workers, settings.backends);
        let group = settings.workers.div_ceil(lanes);
        // All of a lane's workers may be on this backend at once (a heavy weight, a hash
        // key), plus the health thread, which has a lane too.
        let idle = if send_proxy { 0 } else { group + 1 };
        let config = Self::config(settings, idle, https.map(|_| &settings.tls));
        let base = base(addr, https);
        let tcp = TcpConnector { send_proxy };
        let tls = https.is_some();
        let make_agent = Box::new(move || match tls {
            false => Agent::with_parts(config.clone(), tcp, DefaultResolver::default()),
            true => tls::agent(config.clone(), addr, tcp),
        });
        Upstream {
            addr,
            base,
            lanes: (0..lanes).map(|_| OnceLock::new()).collect(),
            make_agent,
            group,
            send_proxy,
        }
    }

    /// Whether this is the backend `spec` names: the same address, reached the same
    /// way (a reload that turns a backend to https, or to send-proxy, builds it anew).
    pub fn serves(&self, spec: &BackendSpec) -> bool {
        self.addr == spec.addr
            && self.base == base(spec.addr, spec.https.as_deref())
            && self.send_proxy == spec.send_proxy
    }

    /// Whether its connections start with a PROXY header (`,send-proxy`).
    pub fn sends_proxy(&self) -> bool {
        self.send_proxy
    }

    /// The Agent of the calling thread's lane. Threads fill one lane before the next, so
    /// under a light load every request shares the first lane's idle connections.
    fn agent(&self) -> &Agent {
        self.lanes[lane(THREAD.with(|n| *n), self.group, self.lanes.len())]
            .get_or_init(&self.make_agent)
    }

    /// The settings of every lane's Agent; `idle`: connections its pool may keep; `tls`:
    /// for an https backend.
    fn config(settings: &Settings, idle: usize, tls: Option<&Tls>) -> ureq::config::Config {
        let builder = Agent::config_builder();
        let builder = match tls {
            Some(tls) => tls.configure(builder),
            None => builder,
        };
        builder
            // A backend's 404 or 500 is an answer to relay, not an error.
            .http_status_as_error(false)
            // Redirects are for the client to follow.
            .max_redirects(0)
            .max_redirects_will_error(false)
            // Inject nothing: the client's request goes out as the client sent it.
            .user_agent("")
            .accept("")
            .accept_encoding("")
            // PROPFIND, PURGE and custom tokens are methods too.
            .allow_non_standard_methods(true)
            // HTTP_PROXY and ALL_PROXY in our environment are not the backend's route.
            .proxy(None)
            .no_delay(true)
            // All unset by default. Connect failures let the next backend be tried; the
            // others bound how long a backend may keep a worker waiting: for the answer
            // to start, and between two reads or writes after that (nginx's
            // proxy_read_timeout). Constant per-read/per-write timeouts rather than a
            // deadline for the answer: ureq calls setsockopt only when the value changes,
            // and a deadline's remaining time changes on every request.
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_per_read(Some(settings.timeout))
            .timeout_per_write(Some(settings.timeout))
            // The default pool (10 idle, 3 per host) would open a connection per request.
            .max_idle_connections(idle)
            .max_idle_connections_per_host(idle)
            // Backends close idle connections too (nginx after 75 s, Node after 5 s); a
            // pooled connection closed under us fails the request that reuses it.
            .max_idle_age(Duration::from_secs(4))
            // 128 KiB each by default, per pooled connection. Ours are lent by the
            // worker while a connection is in use (buffers.rs), so they cost per worker,
            // not per pooled connection; their input side is `buffers::INPUT`. The
            // request head must fit whole in the output buffer: the largest head we
            // accept, plus the X-Forwarded fields we add (Host is bounded, so
            // X-Forwarded-Host is too).
            .input_buffer_size(buffers::INPUT)
            .output_buffer_size(MAX_HEAD + 4 * 1024)
            .build()
    }

    /// Whether this backend speaks https (`--backend https://...`).
    pub fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request and waits for the answer's head. `target` is the origin-form
    /// path and query, forwarded byte for byte; `headers` are sent as given (plus the
    /// framing field for the body).
    pub fn send(
        &self,
        method: &Method,
        target: &str,
        mut headers: HeaderMap,
        body: RequestBody<'_>,
    ) -> Result<Reply, ProxyError> {
        let uri: Uri = format!("{}{}", self.base, target)
            .parse()
            .map_err(|_| ProxyError::BadRequest("bad request target"))?;
        transport::clear_last_connect();
        let response = match body {
            RequestBody::Empty => self.exchange(method, uri, headers, ()),
            RequestBody::Sized(len, reader) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                self.exchange(method, uri, headers, SendBody::from_reader(reader))
            }
            RequestBody::Chunked(reader) => {
                headers.insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
                self.exchange(method, uri, headers, SendBody::from_reader(reader))
            }
        }
        .map_err(|err| self.classify(err))?;
        let (parts, body) = response.into_parts();
        Ok(Reply {
            backend: self.addr,
            status: parts.status.as_u16(),
            content_length: body.content_length(),
            connect: transport::take_last_connect(),
            headers: parts.headers,
            body: ReplyBody::Ureq(body),
        })
    }

    /// One health check: a GET of `path` through this backend's Agent (same settings,
    /// same pool), bounded as a whole by `timeout`. Returns the status; reads and drops
    /// up to 64 KiB of the body so that the connection can go back to the pool. A pooled
    /// connection the backend had closed is retried once on a fresh one: that is not the
    /// backend failing its check.
    pub fn probe(&self, path: &str, timeout: Duration) -> Result<u16, ProxyError> {
        let uri = format!("{}{}", self.base, path);
        let attempt = || {
            self.agent()
                .get(&uri)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call()
                .map_err(|err| self.classify(err))
        };
        let response = match attempt() {
            Err(ProxyError::Reset { .. }) => attempt()?,
            other => other?,
        };
        let status = response.status().as_u16();
        let mut body = response.into_body().into_reader().take(64 * 1024);
        let _ = io::copy(&mut body, &mut io::sink());
        Ok(status)
    }

    fn exchange(
        &self,
        method: &Method,
        uri: Uri,
        headers: HeaderMap,
        body: impl AsSendBody,
    ) -> Result<ureq::http::Response<Body>, ureq::Error> {
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        self.agent().run(request)
    }

    /// Translates ureq's error into ours: did the request leave, and whose fault is it?
    fn classify(&self, err: ureq::Error) -> ProxyError {
        use ureq::{Error, Timeout};
        let backend = self.addr;
        // TLS first: its failures come wrapped in the errors matched below.
        if let Some(why) = tls::certificate_error(&err) {
            return ProxyError::Upstream {
                backend,
                detail: format!("certificate refused: {why}"),
            };
        }
        if let Some(detail) = tls::handshake_failure(&err) {
            // The handshake comes before the request: another backend may take it.
            return ProxyError::Connect { backend, detail };
        }
        match err {
            // The request never left: another backend may take it.
            Error::Timeout(Timeout::Connect | Timeout::Resolve)
            | Error::HostNotFound
            | Error::ConnectionFailed => ProxyError::Connect {
                backend,
                detail: err.to_string(),
            },
            Error::Io(e) if never_left(&e) => ProxyError::Connect {
                backend,
                detail: e.to_string(),
            },
            // The backend closed a connection before answering, typically a pooled one it
            // had already given up on.
            Error::Io(e) if closed_early(&e) => ProxyError::Reset {
                backend,
                detail: e.to_string(),
            },
            Error::Timeout(_) => ProxyError::Timeout { backend },
            Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => ProxyError::Timeout { backend },
            other => ProxyError::Upstream {
                backend,
                detail: other.to_string(),
            },
        }
    }
}

/// What the request-target is appended to: `http://addr`, or `https://host:port` as
/// written.
fn base(addr: SocketAddr, https: Option<&str>) -> String {
    match https {
        None => format!("http://{addr}"),
        Some(authority) => format!("https://{authority}"),
    }
}

/// The lane of the thread numbered `thread`, out of `lanes` of `group` threads each:
/// the first `group` threads share the first lane, and so on, round again past the last.
fn lane(thread: usize, group: usize, lanes: usize) -> usize {
    thread / group % lanes
}

/// Errors that only `connect` produces.
fn never_left(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
    )
}

fn closed_early(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_follow_each_backends_share_of_the_workers() {
        assert_eq!(lanes(4, 2), 1);
        assert_eq!(lanes(8, 2), 1);
        assert_eq!(lanes(9, 2), 2);
        assert_eq!(lanes(512, 2), 64);
        assert_eq!(lanes(512, 1), 128);
        assert_eq!(lanes(512, 16), 8);
        assert_eq!(lanes(512, 128), 1);
        assert_eq!(lanes(512, 0), 128);
    }

    #[test]
    fn a_backend_has_an_agent_per_lane() {
        let settings = Settings {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            workers: 512,
            backends: 2,
            tls: Tls::default(),
        };
        let upstream = Upstream::new("127.0.0.1:9".parse().unwrap(), &settings);
        assert_eq!((upstream.lanes.len(), upstream.group), (64, 8));
    }

    #[test]
    fn threads_fill_one_lane_before_the_next() {
        let lanes: Vec<usize> = [0, 15, 16, 31, 32, 63, 64].map(|t| lane(t, 16, 4)).into();
        assert_eq!(lanes, [0, 0, 1, 1, 2, 3, 0]);
        assert!((0..1000).all(|t| lane(t, 32, 1) == 0));
    }
}
