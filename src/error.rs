//! Why one request failed, whose fault it was, and what the client sees.
//!
//! This is the only place that maps a failure to an HTTP status. The front door
//! (`http1/`) reports client mistakes with it, `upstream.rs` reports backend failures
//! with it, and `connection.rs` turns any of them into one short plain-text answer.

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
            Self::HeadTooLarge => 431,
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
            Self::UnsupportedVersion => "HTTP version not supported",
            Self::ClientGone(_) => "",
            Self::Overloaded => "server busy, retry later",
            Self::NoBackend => "no backend available",
            Self::Connect { .. } => "backend unreachable",
            Self::Timeout { .. } => "backend timed out",
            Self::Reset { .. } | Self::Upstream { .. } => "bad answer from backend",
        }
    }

    /// True when the request never reached a backend, so another one may be tried
    /// with the same (unread) request body.
    pub fn never_left(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientGone(err) => write!(f, "client gone: {err}"),
            Self::Connect { backend, detail } => write!(f, "connect to {backend} failed: {detail}"),
            Self::Timeout { backend } => write!(f, "{backend} timed out"),
            Self::Reset { backend, detail } | Self::Upstream { backend, detail } => {
                write!(f, "{backend}: {detail}")
            }
            other => f.write_str(other.client_text()),
        }
    }
}

impl std::error::Error for ProxyError {}
