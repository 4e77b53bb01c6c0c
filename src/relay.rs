//! The relay: a backend's answer streamed to the client, head first, then the body as it
//! comes, framed for this client (length, chunked, or close-delimited for HTTP/1.0).
//! `proxy::handle` calls `relay` with the `Reply` that `upstream/` got; the header
//! policy is `headers.rs`'s and the framing `http1/`'s.
//!
//! The body is read at the backend's pace and written through an `Outbox` (outbox.rs),
//! which never waits for the client: what the client cannot take yet is kept for it.
//! So the relay ends when the backend's answer does (its connection goes back to the
//! pool), and whatever the client has not taken comes back as `Relayed::unsent`, for
//! the waiting room to write out.

use std::io::{self, Read, Write};

use http::header::{self, HeaderMap};

use crate::error::ProxyError;
use crate::headers;
use crate::http1::{ClientConn, ResponseBody, ResponseHead, Version, write_head};
use crate::spill::Spill;
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
    /// Body bytes handed to the client: sent, or kept in `unsent` for it.
    pub bytes: u64,
    /// The connection may carry another request: it was allowed to, the framing did not
    /// need the close, and the answer was handed over whole.
    pub keep_alive: bool,
    /// Why the answer broke off after its head was sent: part of it may be out, so the
    /// only honest ending is to close.
    pub error: Option<ProxyError>,
    /// The end of the answer that the client has not taken yet, in order: to be written
    /// out before the connection carries anything else (or closes). Also after a
    /// backend broke off: the client gets what the backend did send, then the close.
    pub unsent: Option<Spill>,
}

/// The most body bytes one read from the backend takes: the upstream input buffer's
/// largest size (upstream/buffers.rs).
pub const COPY: usize = crate::upstream::INPUT;

/// Streams `reply` to the client on `stream`: the head through `out`, the body through
/// `copy`, grown to `COPY` bytes for a body longer than it (or of unknown length): as
/// much per read as the upstream input buffer holds, so that the two drain together; a
/// small answer never grows it, and an idle worker stays small. `add_headers` adds our
/// own fields (request id, trace) after the header policy.
/// Never waits for the client, except past `outbox::MAX_UNSENT` (see outbox.rs).
pub fn relay(
    conn: &mut ClientConn,
    out: &mut Vec<u8>,
    copy: &mut Vec<u8>,
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

    let mut outbox = conn.outbox();
    let mut writer = write_head(
        &mut outbox,
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
    let client_gone = |bytes, err: io::Error| Relayed {
        status,
        bytes,
        keep_alive: false,
        error: Some(ProxyError::ClientGone(err)),
        unsent: None,
    };
    // Chunked or close-delimited: the backend streams (Server-Sent Events and the like),
    // so what it sent goes out before it is waited for again.
    let streamed = matches!(kind, ResponseBody::Unknown);
    let mut bytes = 0u64;
    if !matches!(kind, ResponseBody::None) {
        if copy.len() < COPY
            && reply
                .content_length
                .is_none_or(|len| len > copy.len() as u64)
        {
            copy.resize(COPY, 0);
        }
        let mut body = reply.into_body();
        loop {
            let n = match body.read(copy) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) => {
                    // What the backend did send goes to the client, then the close; the
                    // end of the body is never made up (the writer is not finished).
                    let _ = writer.flush();
                    return Relayed {
                        status,
                        bytes,
                        keep_alive: false,
                        error: Some(ProxyError::answer_broke_off(backend, err)),
                        unsent: outbox.into_unsent(),
                    };
                }
            };
            if let Err(err) = writer.write_all(&copy[..n]) {
                return client_gone(bytes, err);
            }
            bytes += n as u64;
            if streamed && let Err(err) = writer.send_buffered() {
                return client_gone(bytes, err);
            }
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
        unsent: outbox.into_unsent(),
    }
}
