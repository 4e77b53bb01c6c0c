//! The access log: one line per request on stdout, in the format `--log` names. `proxy.rs`
//! fills an `Entry` as the request goes; `refuse::Tally` writes it once at the end, also
//! for a request refused before its head could be read (a bad head, a full queue). The
//! combined and json formats also carry the request id, the queue wait, the backend's
//! time to the response head, the retries and a termination code (HAProxy's two
//! letters, `ProxyError::termination`).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;

use crate::config::LogFormat;
use crate::error::ProxyError;
use crate::http1::Version;

#[derive(Clone, Copy)]
pub struct AccessLog {
    format: LogFormat,
}

/// What the log says about one request.
pub struct Entry<'a> {
    pub peer: SocketAddr,
    /// The backend that answered, or the last one tried.
    pub backend: Option<SocketAddr>,
    /// `None` when the request was refused before its head could be read: the line then
    /// shows `- -` (seed), `"-"` (combined) or nulls (json) rather than guess.
    pub request: Option<RequestLine<'a>>,
    /// 0 when nothing could be sent.
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    pub started: Instant,
    pub referer: Option<&'a HeaderValue>,
    pub user_agent: Option<&'a HeaderValue>,
    /// `X-Request-Id`, when request ids are on (see request_id.rs).
    pub request_id: Option<&'a HeaderValue>,
    /// From the connection being queued to a worker taking it; zero for a request that
    /// followed another on the same worker.
    pub queue_wait: Duration,
    /// From sending the request to the backend's response head; `None` without a head.
    pub upstream: Option<Duration>,
    /// Failed attempts that were tried again.
    pub retries: u32,
    /// The TLS version ("TLSv1.3") of a request that came over TLS.
    pub tls: Option<&'static str>,
    /// The name its client asked for in the handshake (SNI).
    pub sni: Option<&'a str>,
    /// A tunnel's line (written when it closes; `bytes` are those to the client).
    pub tunnel: Option<TunnelEnd>,
}

/// What a tunnel's line adds: the bytes the other way, and who ended it.
#[derive(Clone, Copy, Debug)]
pub struct TunnelEnd {
    /// From the client to the backend.
    pub bytes_up: u64,
    /// `metrics::TUNNEL_CLOSES`: client, backend, idle, shutdown, error.
    pub closed_by: &'static str,
}

/// The request line as the client sent it.
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub version: Version,
}

impl Entry<'_> {
    /// The entry of a request refused before its head was read (a bad head, a full
    /// queue): only the client and the times are known.
    pub fn unread(peer: SocketAddr, started: Instant, queue_wait: Duration) -> Entry<'static> {
        Entry {
            peer,
            backend: None,
            request: None,
            status: 0,
            bytes: 0,
            started,
            referer: None,
            user_agent: None,
            request_id: None,
            queue_wait,
            upstream: None,
            retries: 0,
            tls: None,
            sni: None,
            tunnel: None,
        }
    }
}

impl AccessLog {
    pub fn new(format: LogFormat) -> AccessLog {
        AccessLog { format }
    }

    /// Whether the request's Referer and User-Agent are worth keeping for the line.
    pub fn wants_client_fields(&self) -> bool {
        matches!(self.format, LogFormat::Combined | LogFormat::Json)
    }

    /// Writes the line for one request; `error` says why it failed, if it did.
    pub fn write(&self, e: &Entry<'_>, error: Option<&ProxyError>) {
        if self.format == LogFormat::Off {
            return;
        }
        // One locked write per line: stdout is line-buffered, so the line leaves in one
        // syscall and lines of different workers never interleave. A closed stdout must
        // not cost the request, so write errors are ignored.
        let _ = self.render(&mut io::stdout().lock(), e, error);
    }

    /// The line for one request, in this log's format.
    fn render(
        &self,
        out: &mut impl Write,
        e: &Entry<'_>,
        error: Option<&ProxyError>,
    ) -> io::Result<()> {
        let ms = e.started.elapsed().as_secs_f64() * 1000.0;
        let termination = error.map_or("--", |err| err.termination(e.upstream.is_some()));
        let (method, target, version) = match &e.request {
            Some(r) => (Some(r.method), Some(r.target), Some(protocol(r.version))),
            None => (None, None, None),
        };
        match self.format {
            LogFormat::Off => Ok(()),
            LogFormat::Seed => {
                write!(out, "Received request from {}, ", e.peer)?;
                match e.backend {
                    Some(b) => write!(out, "forwarding to {b}: ")?,
                    None => write!(out, "not forwarded: ")?,
                }
                let (method, target) = (method.unwrap_or("-"), target.unwrap_or("-"));
                write!(out, "{method} {target} {} {ms:.1}ms", e.status)?;
                match error {
                    Some(err) => writeln!(out, " ({err})"),
                    None => writeln!(out),
                }
            }
            // nginx's combined line, then our fields as key=value (like nginx's common
            // `rt=$request_time urt=...` extension): times in seconds, "-" for none.
            LogFormat::Combined => {
                write!(
                    out,
                    "{} - - [{}] ",
                    e.peer.ip(),
                    clf_time(SystemTime::now())
                )?;
                match (method, target, version) {
                    (Some(m), Some(t), Some(v)) => write!(out, "\"{m} {t} {v}\"")?,
                    // nginx's `"-"` for a request line it could not read.
                    _ => write!(out, "\"-\"")?,
                }
                writeln!(
                    out,
                    " {} {} \"{}\" \"{}\" rid={} rt={:.3} qw={:.3} urt={} retries={} term={termination}",
                    e.status,
                    e.bytes,
                    text(e.referer).unwrap_or("-"),
                    text(e.user_agent).unwrap_or("-"),
                    text(e.request_id).unwrap_or("-"),
                    ms / 1000.0,
                    e.queue_wait.as_secs_f64(),
                    Seconds(e.upstream),
                    e.retries,
                )
            }
            LogFormat::Json => {
                let line = serde_json::json!({
                    "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                    "client": e.peer.to_string(),
                    "backend": e.backend.map(|b| b.to_string()),
                    "method": method,
                    "target": target,
                    "protocol": version,
                    "status": e.status,
                    "bytes": e.bytes,
                    "duration_ms": (ms * 1000.0).round() / 1000.0,
                    "referer": text(e.referer),
                    "user_agent": text(e.user_agent),
                    "request_id": text(e.request_id),
                    "queue_ms": millis(e.queue_wait),
                    "upstream_ms": e.upstream.map(millis),
                    "retries": e.retries,
                    "tls": e.tls,
                    "sni": e.sni,
                    "bytes_up": e.tunnel.map(|t| t.bytes_up),
                    "closed_by": e.tunnel.map(|t| t.closed_by),
                    "termination": termination,
                    "error": error.map(|err| err.to_string()),
                });
                writeln!(out, "{line}")
            }
        }
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}

/// Seconds with millisecond precision, or "-".
struct Seconds(Option<Duration>);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{:.3}", d.as_secs_f64()),
            None => f.write_str("-"),
        }
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    }
}

fn text(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
}

/// The Common Log Format time, `25/Nov/2026:18:22:51 +0000`, rearranged from humantime's
/// RFC 3339 text `2026-11-25T18:22:51Z` (UTC; we do not read the local time zone).
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let s = humantime::format_rfc3339_seconds(t).to_string();
    let month = s[5..7].parse::<usize>().unwrap_or(1);
    format!(
        "{}/{}/{}:{} +0000",
        &s[8..10],
        MONTHS[month - 1],
        &s[0..4],
        &s[11..19]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clf_time_reads_like_nginx() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_631_371);
        assert_eq!(
            humantime::format_rfc3339_seconds(t).to_string(),
            "2026-11-25T18:29:31Z"
        );
        assert_eq!(clf_time(t), "25/Nov/2026:18:29:31 +0000");
    }

    fn render(format: LogFormat, e: &Entry<'_>, error: Option<&ProxyError>) -> String {
        let mut out = Vec::new();
        AccessLog::new(format).render(&mut out, e, error).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    #[test]
    fn a_refused_head_shows_no_request_line_in_any_format() {
        let e = Entry {
            status: 400,
            ..Entry::unread(peer(), Instant::now(), Duration::ZERO)
        };
        let err = ProxyError::BadRequest("conflicting content-length");
        let seed = render(LogFormat::Seed, &e, Some(&err));
        assert!(
            seed.starts_with("Received request from 127.0.0.1:40000, not forwarded: - - 400 "),
            "{seed}"
        );
        assert!(seed.ends_with(" (conflicting content-length)\n"), "{seed}");
        let combined = render(LogFormat::Combined, &e, Some(&err));
        assert!(
            combined.contains("] \"-\" 400 0 \"-\" \"-\" rid=- "),
            "{combined}"
        );
        assert!(
            combined.ends_with(" urt=- retries=0 term=PR\n"),
            "{combined}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(LogFormat::Json, &e, Some(&err))).unwrap();
        assert_eq!(json["method"], serde_json::Value::Null);
        assert_eq!(json["target"], serde_json::Value::Null);
        assert_eq!(json["protocol"], serde_json::Value::Null);
        assert_eq!(json["status"], 400);
        assert_eq!(json["termination"], "PR");
        assert_eq!(json["error"], "conflicting content-length");
        assert_eq!(json["tls"], serde_json::Value::Null);
        assert_eq!(json["sni"], serde_json::Value::Null);
    }

    #[test]
    fn a_tls_request_shows_its_version_and_name_in_json() {
        let e = Entry {
            status: 200,
            tls: Some("TLSv1.3"),
            sni: Some("a.test"),
            ..Entry::unread(peer(), Instant::now(), Duration::ZERO)
        };
        let json: serde_json::Value =
            serde_json::from_str(&render(LogFormat::Json, &e, None)).unwrap();
        assert_eq!(json["tls"], "TLSv1.3");
        assert_eq!(json["sni"], "a.test");
    }

    #[test]
    fn a_request_line_shows_as_sent() {
        let e = Entry {
            request: Some(RequestLine {
                method: "GET",
                target: "/hello?x=1",
                version: Version::Http11,
            }),
            status: 200,
            bytes: 12,
            ..Entry::unread(peer(), Instant::now(), Duration::ZERO)
        };
        let combined = render(LogFormat::Combined, &e, None);
        assert!(
            combined.contains("] \"GET /hello?x=1 HTTP/1.1\" 200 12 "),
            "{combined}"
        );
        assert!(combined.ends_with(" term=--\n"), "{combined}");
        let seed = render(LogFormat::Seed, &e, None);
        assert!(
            seed.contains("not forwarded: GET /hello?x=1 200 "),
            "{seed}"
        );
        assert_eq!(render(LogFormat::Off, &e, None), "");
    }
}
