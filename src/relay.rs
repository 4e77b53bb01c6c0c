//! The relay: a backend's answer streamed to the client, head first, then the body as it
//! comes, framed for this client (length, chunked, or close-delimited for HTTP/1.0).
//! `proxy::handle` calls `relay` with the `Reply` that `upstream/` got; the header
//! policy is `headers.rs`'s and the writing `http1/`'s.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use http::header::{self, HeaderMap};

use crate::error::ProxyError;
use crate::headers;
use crate::http1::{ResponseBody, ResponseHead, Version, write_head};
use crate::upstream::Reply;

/// What the request says about how its answer may be framed.
#[derive(Clone, Copy, Debug)]
pub struct Wanted {
    pub version: Version,
    /// A HEAD request: the answer has no body, whatever its head says.
    pub head: bool,
    /// The connection may carry another request after this answer.
    pub keep_alive: bool,
}

/// What a relayed answer came to.
pub struct Relayed {
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// The connection may carry another request: it was allowed to, the framing did not
    /// need the close, and the answer went out whole.
    pub keep_alive: bool,
    /// Why the answer broke off after its head was sent: part of it may be out, so the
    /// only honest ending is to close.
    pub error: Option<ProxyError>,
}

/// Streams `reply` to the client on `stream`: the head through `out`, the body through
/// `copy`. `add_headers` adds our own fields (request id, trace) after the header policy.
pub fn relay(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    copy: &mut [u8],
    mut reply: Reply,
    wanted: Wanted,
    add_headers: impl FnOnce(&mut HeaderMap),
) -> Relayed {
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
    let bodyless = wanted.head || status == 204 || status == 304 || (100..200).contains(&status);
    let (kind, head_len) = match (bodyless, reply.content_length) {
        (true, _) if status == 204 || status < 200 => (ResponseBody::None, None),
        (true, _) => (ResponseBody::None, announced),
        (false, Some(len)) => (ResponseBody::Length(len), None),
        (false, None) => (ResponseBody::Unknown, None),
    };

    let mut writer = write_head(
        stream,
        out,
        &ResponseHead {
            version: wanted.version,
            status,
            headers: &headers,
            body: kind,
            head_length: head_len,
            keep_alive: wanted.keep_alive,
        },
    );
    let ended = |bytes, error| Relayed {
        status,
        bytes,
        keep_alive: false,
        error: Some(error),
    };
    let client_gone = |bytes, err: io::Error| ended(bytes, ProxyError::ClientGone(err));
    let mut bytes = 0u64;
    if !matches!(kind, ResponseBody::None) {
        let mut body = reply.into_body();
        loop {
            let n = match body.read(copy) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) => return ended(bytes, ProxyError::answer_broke_off(backend, err)),
            };
            if let Err(err) = writer.write_all(&copy[..n]) {
                return client_gone(bytes, err);
            }
            bytes += n as u64;
        }
    }
    let keep_alive = writer.keep_alive();
    if let Err(err) = writer.finish() {
        return client_gone(bytes, err);
    }
    Relayed {
        status,
        bytes,
        keep_alive,
        error: None,
    }
}
