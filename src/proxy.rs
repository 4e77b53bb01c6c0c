//! One request, start to finish: pick a backend, forward the request, relay the answer,
//! log it. This is the balancer's main path; start reading here. `connection.rs` calls
//! `handle` for each request head it reads; `upstream.rs` does the forwarding and
//! `http1/` the writing back.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Uri};

use crate::access_log::{AccessLog, Entry};
use crate::balancer::{Backend, Balancer, Candidates, InFlight, PickContext};
use crate::config::RetryConfig;
use crate::error::ProxyError;
use crate::headers;
use crate::health::{self, Health};
use crate::http1::{
    BodyReader, ClientConn, Framing, RequestHead, ResponseBody, Version, write_error, write_head,
};
use crate::metrics::Stats;
use crate::request_id::{self, X_REQUEST_ID};
use crate::retry::{Budget, Replay, Resends};
use crate::shutdown::Shutdown;
use crate::trace::Attempts;
use crate::upstream::{Reply, RequestBody};

/// What one request needs that outlives it: the backends and the request-level settings.
pub struct Proxy {
    /// The backends and strategy, swapped whole by a reload (reload.rs). Loaded once per
    /// request, without a lock: a request finishes on the set it started with.
    pub balancer: Arc<ArcSwap<Balancer>>,
    /// Set at shutdown: answers then say `Connection: close`.
    pub shutdown: Arc<Shutdown>,
    pub max_body: Option<u64>,
    pub log: AccessLog,
    /// Counters of the requests that no backend was tried for.
    pub no_backend: Stats,
    /// `--trace-header`: answers say why their backend was picked and where time went.
    pub trace: bool,
    /// Requests carry an `X-Request-Id` (with the combined or json log, or a trace).
    pub request_ids: bool,
    /// Where failures and answers are reported; decides which backends are up.
    pub health: Health,
    pub retry: RetryConfig,
    /// Resends allowed over the last seconds (retry.rs).
    pub budget: Budget,
}

/// Buffers a worker reuses for every request it serves, so the hot path allocates none.
pub struct Scratch {
    /// The response head and small bodies, sent in one write.
    pub out: Vec<u8>,
    /// Body bytes on their way from the backend to the client.
    copy: Box<[u8]>,
    /// The request body as sent so far, kept to be sent again (`--retry-buffer`).
    kept: Vec<u8>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            out: Vec::with_capacity(16 * 1024),
            copy: vec![0; 16 * 1024].into_boxed_slice(),
            kept: Vec::new(),
        }
    }
}

/// Whether the client connection can carry another request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Next {
    KeepAlive,
    Close,
}

/// Proxies one client request and answers it, whatever happens: with the backend's
/// answer, or with one short error. Returns whether the connection may be reused.
/// `queue_wait`: how long the connection waited for a worker before this request.
pub fn handle(
    proxy: &Proxy,
    conn: &mut ClientConn,
    head: RequestHead,
    scratch: &mut Scratch,
    queue_wait: Duration,
) -> Next {
    let started = Instant::now();
    let RequestHead {
        method,
        target,
        version,
        mut headers,
        framing,
        keep_alive,
        expect_continue,
    } = head;
    let (referer, user_agent) = if proxy.log.wants_client_fields() {
        (
            headers.get(header::REFERER).cloned(),
            headers.get(header::USER_AGENT).cloned(),
        )
    } else {
        (None, None)
    };
    let request_id = proxy
        .request_ids
        .then(|| request_id::take_or_make(&mut headers));
    let mut entry = Entry {
        peer: conn.peer(),
        backend: None,
        method: method.as_str(),
        target: &target,
        version,
        status: 0,
        bytes: 0,
        started,
        referer: referer.as_ref(),
        user_agent: user_agent.as_ref(),
        request_id: request_id.as_ref(),
        queue_wait,
        upstream: None,
        retries: 0,
    };
    // Held until the request ends: the backends it was counted against stay alive even
    // if a reload swaps them out meanwhile.
    let balancer = proxy.balancer.load();
    let mut attempts = Attempts::new(proxy.trace);

    let outcome = check_declared_length(framing, proxy.max_body)
        .and_then(|()| origin_form(&target, &mut headers))
        .and_then(|path| {
            // The pick sees the request as the client sent it, before the header policy.
            let candidates = balancer.candidates(&PickContext {
                client: entry.peer.ip(),
                path,
                headers: &headers,
            });
            attempts.candidates(&balancer, &candidates);
            headers::to_upstream(&mut headers, entry.peer.ip());
            let mut body = conn.body(framing, expect_continue, proxy.max_body);
            let request = Outgoing {
                method: &method,
                target: path,
                headers,
                framing,
                started,
            };
            let forwarded = forward(
                proxy,
                &balancer,
                candidates,
                request,
                &mut body,
                &mut scratch.kept,
                &mut attempts,
            );
            // A body the client broke off is the client's fault, whatever the upstream client made of it.
            match body.failure() {
                Some(client_fault) => Err((client_fault, Next::Close)),
                // Unless the body was read to its end, the connection is not at a request
                // boundary and cannot carry another request.
                None if !body.is_finished() => forwarded.map_err(|e| (e, Next::Close)),
                None if keep_alive => forwarded.map_err(|e| (e, Next::KeepAlive)),
                None => forwarded.map_err(|e| (e, Next::Close)),
            }
            .map(|reply| (reply, keep_alive && body.is_finished()))
        });
    // `_in_flight` counts the request against its backend until the answer is relayed.
    let ((reply, _in_flight), reusable) = match outcome {
        Ok(found) => found,
        Err((err, next)) => {
            return answer_error(proxy, conn, scratch, err, next, entry, &attempts);
        }
    };

    let next = match relay(
        conn,
        scratch,
        version,
        method == Method::HEAD,
        reply,
        // Shutting down: this answer is the connection's last.
        reusable && !proxy.shutdown.is_stopping(),
        |headers| {
            if let Some(id) = &request_id {
                headers.insert(X_REQUEST_ID.clone(), id.clone());
            }
            attempts.add_headers(queue_wait, headers);
        },
    ) {
        Ok(relayed) => {
            entry.status = relayed.status;
            entry.bytes = relayed.bytes;
            relayed.next
        }
        Err(broken) => {
            // Part of the answer may be out: the only honest ending is to close.
            entry.status = broken.status;
            entry.bytes = broken.bytes;
            finish(proxy, &mut entry, &attempts, Some(&broken.error));
            return Next::Close;
        }
    };
    finish(proxy, &mut entry, &attempts, None);
    next
}

/// Counts a finished request against the backend that answered (or was tried last) and
/// writes its log line.
fn finish(
    proxy: &Proxy,
    entry: &mut Entry<'_>,
    attempts: &Attempts<'_>,
    error: Option<&ProxyError>,
) {
    entry.backend = attempts.last.map(|b| b.upstream.addr());
    entry.upstream = attempts.upstream;
    entry.retries = attempts.retries;
    let backend_fault = error.is_some_and(ProxyError::backend_fault);
    let stats = attempts.last.map_or(&proxy.no_backend, Backend::stats);
    stats.record(entry.status, entry.started.elapsed(), backend_fault);
    proxy.log.write(entry, error);
}

/// The request as it goes upstream, after the header policy.
struct Outgoing<'a> {
    method: &'a Method,
    /// Origin-form: path and query.
    target: &'a str,
    headers: HeaderMap,
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
    body: &mut BodyReader<'_>,
    kept: &mut Vec<u8>,
    attempts: &mut Attempts<'p>,
) -> Result<(Reply, InFlight<'p>), ProxyError> {
    let Outgoing {
        method,
        target,
        headers,
        framing,
        started,
    } = request;
    let all = balancer.backends();
    let now = health::ms_at(started);
    proxy.budget.request(now);
    let mut resends = Resends::new(method, &headers, proxy.retry.retries);
    let keep = match framing {
        Framing::None => 0,
        _ => proxy.retry.buffer,
    };
    let mut body = Replay::new(body, kept, keep);
    // How many candidates there are, counted at the first failure only.
    let mut count = None;
    let mut refused = 0;
    for backend in candidates.clone().cycle() {
        let upstream = &backend.upstream;
        attempts.attempt(backend);
        body.rewind();
        let request_body = match framing {
            Framing::None => RequestBody::Empty,
            Framing::Length(len) => RequestBody::Sized(len, &mut body as &mut dyn Read),
            Framing::Chunked => RequestBody::Chunked(&mut body as &mut dyn Read),
        };
        let in_flight = backend.start();
        let sent = Instant::now();
        // The upstream client consumes the headers; another attempt may need them.
        let err = match upstream.send(method, target, headers.clone(), request_body) {
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
            proxy.health.failed(all, backend, health::now_ms());
        }
        if err.may_try_next() {
            refused += 1;
            if refused >= count {
                return Err(err);
            }
            eprintln!("roundhouse: {err}; trying the next backend");
        } else if !resends.allow(&err, body.can_replay(), count, &proxy.budget, now) {
            return Err(err);
        }
        attempts.retry(backend, &err);
    }
    Err(ProxyError::NoBackend)
}

/// A body announced larger than `--max-body` is refused from the head alone, before any
/// backend hears of the request. (A chunked body is counted as it is read, in `http1/`.)
fn check_declared_length(
    framing: Framing,
    max_body: Option<u64>,
) -> Result<(), (ProxyError, Next)> {
    match (framing, max_body) {
        (Framing::Length(len), Some(max)) if len > max => {
            Err((ProxyError::BodyTooLarge, Next::Close))
        }
        _ => Ok(()),
    }
}

/// The path and query to send upstream. An absolute-form target (`http://host/path`,
/// RFC 9112 §3.2.2) is reduced to origin-form, and its authority replaces `Host`. The
/// asterisk form (`OPTIONS *`) asks about the server itself, which a balancer cannot
/// answer for its backends.
fn origin_form<'t>(
    target: &'t str,
    headers: &mut HeaderMap,
) -> Result<&'t str, (ProxyError, Next)> {
    if target.starts_with('/') {
        return Ok(target);
    }
    if target == "*" {
        return Err((
            ProxyError::NotImplemented("OPTIONS * is not supported"),
            Next::KeepAlive,
        ));
    }
    let bad = || (ProxyError::BadRequest("bad request target"), Next::Close);
    let uri: Uri = target.parse().map_err(|_| bad())?;
    let authority = uri.authority().ok_or_else(bad)?;
    if !matches!(uri.scheme_str(), Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
    {
        return Err(bad());
    }
    let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad())?;
    headers.insert(header::HOST, host);
    // The path starts right after the authority, byte for byte as the client sent it.
    let start = target
        .find("://")
        .map(|i| i + 3 + authority.as_str().len())
        .ok_or_else(bad)?;
    Ok(match &target[start..] {
        "" => "/",
        rest if rest.starts_with('/') => rest,
        _ => return Err(bad()),
    })
}

/// What a relayed answer came to.
struct Relayed {
    status: u16,
    bytes: u64,
    next: Next,
}

/// An answer that broke off after its head was sent.
struct Broken {
    status: u16,
    bytes: u64,
    error: ProxyError,
}

/// Streams the backend's answer to the client: head first, then the body as it comes,
/// framed for this client (length, chunked, or close-delimited for HTTP/1.0).
fn relay(
    conn: &mut ClientConn,
    scratch: &mut Scratch,
    version: Version,
    is_head: bool,
    mut reply: Reply,
    keep_alive: bool,
    add_headers: impl FnOnce(&mut HeaderMap),
) -> Result<Relayed, Broken> {
    let status = reply.status;
    let backend = reply.backend;
    let mut headers = std::mem::take(&mut reply.headers);
    // HEAD and 304 carry the length the body would have had (RFC 9110 §8.6).
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    headers::to_client(&mut headers);
    add_headers(&mut headers);
    let bodyless = is_head || status == 204 || status == 304 || (100..200).contains(&status);
    let (kind, head_len) = match (bodyless, reply.content_length) {
        (true, _) if status == 204 || status < 200 => (ResponseBody::None, None),
        (true, _) => (ResponseBody::None, announced),
        (false, Some(len)) => (ResponseBody::Length(len), None),
        (false, None) => (ResponseBody::Unknown, None),
    };

    let Scratch { out, copy, .. } = scratch;
    let mut writer = write_head(
        conn.stream_mut(),
        out,
        version,
        status,
        &headers,
        kind,
        head_len,
        keep_alive,
    );
    let client_gone = |bytes, err: io::Error| Broken {
        status,
        bytes,
        error: ProxyError::ClientGone(err),
    };
    let mut bytes = 0u64;
    if !matches!(kind, ResponseBody::None) {
        let mut body = reply.into_body();
        loop {
            let n = match body.read(copy) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) => {
                    return Err(Broken {
                        status,
                        bytes,
                        error: ProxyError::answer_broke_off(backend, err),
                    });
                }
            };
            writer
                .write_all(&copy[..n])
                .map_err(|e| client_gone(bytes, e))?;
            bytes += n as u64;
        }
    }
    let next = if writer.keep_alive() {
        Next::KeepAlive
    } else {
        Next::Close
    };
    writer.finish().map_err(|e| client_gone(bytes, e))?;
    Ok(Relayed {
        status,
        bytes,
        next,
    })
}

/// Answers a request that could not be proxied with its one status and a short text,
/// and logs it.
fn answer_error(
    proxy: &Proxy,
    conn: &mut ClientConn,
    scratch: &mut Scratch,
    err: ProxyError,
    next: Next,
    mut entry: Entry<'_>,
    attempts: &Attempts<'_>,
) -> Next {
    let Some(status) = err.status() else {
        finish(proxy, &mut entry, attempts, Some(&err));
        return Next::Close;
    };
    let keep_alive = next == Next::KeepAlive;
    // The request id and the trace go with an error too: that is when they are wanted.
    let trace = attempts.header_values(entry.queue_wait);
    let mut extra: [(&str, &str); 3] = [("", ""); 3];
    let mut n = 0;
    for (name, value) in [
        ("X-Request-Id", entry.request_id),
        ("X-Roundhouse-Trace", trace.as_ref().map(|t| &t.0)),
        ("Server-Timing", trace.as_ref().map(|t| &t.1)),
    ] {
        if let Some(value) = value.and_then(|v| v.to_str().ok()) {
            extra[n] = (name, value);
            n += 1;
        }
    }
    let written = write_error(
        conn.stream_mut(),
        &mut scratch.out,
        status,
        err.client_text(),
        &extra[..n],
        keep_alive,
    );
    entry.status = status;
    finish(proxy, &mut entry, attempts, Some(&err));
    match written {
        Ok(()) => next,
        Err(_) => Next::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_becomes_origin_form_and_sets_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("wrong"));
        assert_eq!(
            origin_form("http://shop.example:8080/a%2Fb?q=1", &mut h).ok(),
            Some("/a%2Fb?q=1")
        );
        assert_eq!(h[header::HOST], "shop.example:8080");
        assert_eq!(origin_form("HTTP://shop.example", &mut h).ok(), Some("/"));
    }

    #[test]
    fn origin_form_passes_untouched() {
        let mut h = HeaderMap::new();
        assert_eq!(
            origin_form("//a//b?x=%20", &mut h).ok(),
            Some("//a//b?x=%20")
        );
        assert!(h.is_empty());
    }

    #[test]
    fn odd_targets_are_refused() {
        let mut h = HeaderMap::new();
        assert!(matches!(
            origin_form("*", &mut h),
            Err((ProxyError::NotImplemented(_), _))
        ));
        assert!(matches!(
            origin_form("ftp://x/y", &mut h),
            Err((ProxyError::BadRequest(_), _))
        ));
        assert!(matches!(
            origin_form("example.com:80", &mut h),
            Err((ProxyError::BadRequest(_), _))
        ));
    }
}
