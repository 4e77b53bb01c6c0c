//! Why one request failed, whose fault it was, and what the client sees.
//!
//! This is the only place that maps a failure to an HTTP status, and the only place that
//! classifies failures: whose fault one is, the access log's termination letters, and
//! whether the request may go to another backend or be sent again. The front door
//! (`http1/`) reports client mistakes with it, `upstream/` reports backend failures
//! with it, `proxy.rs` decides on retries by asking it, and `refuse.rs` turns any of
//! them into one short plain-text answer.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Why one request could not be proxied.
#[derive(Debug)]
pub enum ProxyError {
    /// The client sent something we refuse to forward (bad framing, bad header, ...).
    /// The text names the problem and is sent to the client.
    BadRequest(&'static str),
    /// The request head did not fit in the head buffer (32 KiB).
    HeadTooLarge,
    /// The request body is larger than `--max-body`.
    BodyTooLarge,
    /// The client started a request but did not finish its head (or body) in time.
    ClientTimeout,
    /// The request line names an HTTP version other than 1.0 or 1.1.
    UnsupportedVersion,
    /// The client asked for something we do not implement (a transfer coding, CONNECT).
    NotImplemented(&'static str),
    /// The client sent `Expect` with something other than `100-continue`.
    ExpectationFailed,
    /// The client went away or its socket failed; nobody is left to answer.
    ClientGone(io::Error),
    /// Every worker is busy and the queue is full.
    Overloaded,
    /// The client already holds `--max-connections-per-client` connections open: a new
    /// one is answered at once and closed (limits.rs).
    TooManyConnections,
    /// The client is over `--rate-limit`: its token bucket has no token for this request
    /// and will have one in `retry_after` seconds (at least 1), which the answer's
    /// `Retry-After` says. The connection may go on (limits.rs).
    RateLimited { retry_after: u32 },
    /// A request body could not be buffered (its temporary file failed): our fault.
    Buffering(String),
    /// No backend is available to take the request.
    NoBackend,
    /// The TCP connect failed or timed out: the request never left, so another
    /// backend may be tried.
    Connect { backend: SocketAddr, detail: String },
    /// The backend accepted the request but did not start answering within `--timeout`,
    /// or stalled while sending.
    Timeout { backend: SocketAddr },
    /// The backend closed or reset the connection before sending any byte of an answer
    /// (often a pooled connection it had given up on). A bodyless idempotent request may
    /// be sent again.
    Reset { backend: SocketAddr, detail: String },
    /// The backend broke the exchange: malformed answer, broken body.
    Upstream { backend: SocketAddr, detail: String },
}

impl ProxyError {
    /// The status the client gets; `None` when there is nobody to answer.
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            Self::BadRequest(_) => 400,
            Self::ClientTimeout => 408,
            Self::BodyTooLarge => 413,
            Self::ExpectationFailed => 417,
            Self::TooManyConnections | Self::RateLimited { .. } => 429,
            Self::HeadTooLarge => 431,
            Self::Buffering(_) => 500,
            Self::NotImplemented(_) => 501,
            Self::Connect { .. } | Self::Reset { .. } | Self::Upstream { .. } => 502,
            Self::Overloaded | Self::NoBackend => 503,
            Self::Timeout { .. } => 504,
            Self::UnsupportedVersion => 505,
            Self::ClientGone(_) => return None,
        })
    }

    /// The short plain-text body sent with the status. It names the reason but never a
    /// backend address: those go to the log.
    pub fn client_text(&self) -> &'static str {
        match self {
            Self::BadRequest(why) | Self::NotImplemented(why) => why,
            Self::ClientTimeout => "request timed out",
            Self::BodyTooLarge => "request body too large",
            Self::ExpectationFailed => "expectation not supported",
            Self::HeadTooLarge => "request header too large",
            Self::Buffering(_) => "cannot buffer the request body",
            Self::UnsupportedVersion => "HTTP version not supported",
            Self::ClientGone(_) => "",
            Self::Overloaded => "server busy, retry later",
            Self::TooManyConnections => "too many connections from this client",
            Self::RateLimited { .. } => "too many requests, retry later",
            Self::NoBackend => "no backend available",
            Self::Connect { .. } => "backend unreachable",
            Self::Timeout { .. } => "backend timed out",
            Self::Reset { .. } | Self::Upstream { .. } => "bad answer from backend",
        }
    }

    /// What a failed read of the backend's answer body means: a stall past `--timeout`
    /// is a `Timeout`, told apart for the log's termination code; anything else is the
    /// backend breaking the exchange.
    pub fn answer_broke_off(backend: SocketAddr, err: io::Error) -> ProxyError {
        match err.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Self::Timeout { backend },
            _ => Self::Upstream {
                backend,
                detail: format!("answer broke off: {err}"),
            },
        }
    }

    /// True when the failure is on the backend's side (or there was no backend): it
    /// counts in `roundhouse_errors_total` whatever the status.
    pub fn backend_fault(&self) -> bool {
        matches!(
            self,
            Self::NoBackend
                | Self::Connect { .. }
                | Self::Timeout { .. }
                | Self::Reset { .. }
                | Self::Upstream { .. }
        )
    }

    /// True when the failure counts against the backend's health (passive ejection,
    /// `health.rs`): the connect failed or timed out, or the answer did not come in time.
    pub fn counts_against_backend(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Timeout { .. })
    }

    /// True when the request never reached the backend, so the next candidate may get
    /// it, body and all.
    pub fn may_try_next(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// True when the backend gave up before sending any byte of an answer, so the same
    /// request may be sent again if it is safe to (`retry::Resends` decides that).
    pub fn may_resend(&self) -> bool {
        matches!(self, Self::Reset { .. })
    }

    /// True when the client connection must close after this answer even though the
    /// request's framing was read: the client sent something we will not read on from.
    /// The backend's failures leave the client connection as good as it was, and so
    /// does `NotImplemented` after a whole head (`OPTIONS *`). A refused head always
    /// closes its connection (connection.rs), whatever this says.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::BadRequest(_)
                | Self::HeadTooLarge
                | Self::BodyTooLarge
                | Self::ClientTimeout
                | Self::UnsupportedVersion
                | Self::ExpectationFailed
                | Self::TooManyConnections
                | Self::ClientGone(_)
                | Self::Buffering(_)
        )
    }

    /// How the request ended, in HAProxy's two letters: who ended it (`C` the client,
    /// `S` the backend, `P` the proxy; lower case for a timeout) and in which phase (`R`
    /// reading the request, `Q` waiting in the queue, `C` connecting, `H` waiting for
    /// the response head, `D` relaying the body). `got_head`: a response head came from
    /// the backend, so the failure happened while relaying the body. A request that
    /// ended well is `--` (`access_log.rs`).
    pub fn termination(&self, got_head: bool) -> &'static str {
        match (self, got_head) {
            (Self::ClientGone(_), true) => "CD",
            (Self::ClientGone(_), false) => "CR",
            (Self::ClientTimeout, _) => "cR",
            (Self::Overloaded, _) => "PQ",
            (Self::Buffering(_), _) => "PR",
            (Self::NoBackend | Self::Connect { .. }, _) => "SC",
            (Self::Timeout { .. }, true) => "sD",
            (Self::Timeout { .. }, false) => "sH",
            (Self::Reset { .. } | Self::Upstream { .. }, true) => "SD",
            (Self::Reset { .. } | Self::Upstream { .. }, false) => "SH",
            // Requests we refused: bad framing, too large, unsupported, over a limit.
            (
                Self::BadRequest(_)
                | Self::TooManyConnections
                | Self::RateLimited { .. }
                | Self::HeadTooLarge
                | Self::BodyTooLarge
                | Self::UnsupportedVersion
                | Self::NotImplemented(_)
                | Self::ExpectationFailed,
                _,
            ) => "PR",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientGone(err) => write!(f, "client gone: {err}"),
            Self::Connect { backend, detail } => write!(f, "connect to {backend} failed: {detail}"),
            Self::Timeout { backend } => write!(f, "{backend} timed out"),
            Self::Buffering(detail) => write!(f, "cannot buffer the request body: {detail}"),
            Self::Reset { backend, detail } | Self::Upstream { backend, detail } => {
                write!(f, "{backend}: {detail}")
            }
            other => f.write_str(other.client_text()),
        }
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn termination_codes_name_who_and_when() {
        let gone = || ProxyError::ClientGone(io::Error::other("x"));
        assert_eq!(gone().termination(true), "CD");
        assert_eq!(gone().termination(false), "CR");
        let refused = ProxyError::Connect {
            backend: backend(),
            detail: String::new(),
        };
        assert_eq!(refused.termination(false), "SC");
        assert_eq!(ProxyError::NoBackend.termination(false), "SC");
        let broken = ProxyError::Upstream {
            backend: backend(),
            detail: String::new(),
        };
        assert_eq!(broken.termination(false), "SH");
        assert_eq!(broken.termination(true), "SD");
        let slow = ProxyError::Timeout { backend: backend() };
        assert_eq!(slow.termination(false), "sH");
        assert_eq!(ProxyError::BodyTooLarge.termination(false), "PR");
        assert_eq!(ProxyError::UnsupportedVersion.termination(false), "PR");
        assert_eq!(ProxyError::Overloaded.termination(false), "PQ");
    }

    #[test]
    fn a_body_read_error_is_a_timeout_only_when_the_backend_stalled() {
        let stalled = io::Error::from(io::ErrorKind::WouldBlock);
        assert!(matches!(
            ProxyError::answer_broke_off(backend(), stalled),
            ProxyError::Timeout { .. }
        ));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let err = ProxyError::answer_broke_off(backend(), reset);
        assert!(matches!(err, ProxyError::Upstream { .. }));
        assert_eq!(err.status(), Some(502));
        assert!(err.backend_fault());
    }

    #[test]
    fn only_a_refused_connect_goes_to_the_next_backend_and_only_a_reset_is_resent() {
        let connect = ProxyError::Connect {
            backend: backend(),
            detail: String::new(),
        };
        let reset = ProxyError::Reset {
            backend: backend(),
            detail: String::new(),
        };
        let timeout = ProxyError::Timeout { backend: backend() };
        assert!(connect.may_try_next() && !connect.may_resend());
        assert!(reset.may_resend() && !reset.may_try_next());
        assert!(!timeout.may_try_next() && !timeout.may_resend());
        assert!(connect.counts_against_backend() && timeout.counts_against_backend());
        assert!(!reset.counts_against_backend());
    }

    #[test]
    fn client_mistakes_close_the_connection_and_backend_failures_do_not() {
        assert!(ProxyError::BadRequest("x").closes_connection());
        assert!(ProxyError::BodyTooLarge.closes_connection());
        assert!(!ProxyError::NotImplemented("OPTIONS * is not supported").closes_connection());
        assert!(!ProxyError::NoBackend.closes_connection());
        assert!(!ProxyError::Timeout { backend: backend() }.closes_connection());
        assert!(!ProxyError::BadRequest("x").backend_fault());
    }

    #[test]
    fn over_a_limit_is_429_refused_by_us_and_only_the_rate_keeps_the_connection() {
        let rate = ProxyError::RateLimited { retry_after: 3 };
        for err in [&ProxyError::TooManyConnections, &rate] {
            assert_eq!(err.status(), Some(429));
            assert_eq!(err.termination(false), "PR");
            assert!(!err.backend_fault());
        }
        assert!(ProxyError::TooManyConnections.closes_connection());
        assert!(!rate.closes_connection());
    }
}
