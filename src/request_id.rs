//! Request ids: the `X-Request-Id` that ties a client's request, the backend's log and
//! our access log line together. A client's own id is passed through; otherwise one is
//! made from a per-process random prefix and a counter, unique without coordination.
//! `proxy.rs` calls `take_or_make` once per request (only when ids are on: with the
//! combined or json log, or `--trace-header`), forwards the id upstream and returns it
//! to the client.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client id passed through; a longer one is replaced (nginx's `$request_id` is
/// 32 characters, a UUID 36).
const MAX_LEN: usize = 128;

/// The request's id: the client's `X-Request-Id` when it is one visible-ASCII token of
/// sensible length, else a new one, which replaces whatever the client sent. Either
/// way the headers carry exactly one `X-Request-Id` afterwards.
pub fn take_or_make(headers: &mut HeaderMap) -> HeaderValue {
    let mut given = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(id), None) = (given.next(), given.next())
        && acceptable(id.as_bytes())
    {
        return id.clone();
    }
    let id = make();
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

fn acceptable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

/// `<8 hex digits, random per process>-<counter in hex>`, e.g. `3f9a1c07-1b`.
fn make() -> HeaderValue {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| fastrand::u32(..));
    // Relaxed: each call only needs a different number.
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 8 + 1 + 16];
    let len = hex(&mut buf[..8], u64::from(prefix), 8);
    buf[len] = b'-';
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    let end = len + 1 + hex(&mut buf[len + 1..], n, digits);
    HeaderValue::from_bytes(&buf[..end]).expect("hex digits and a dash")
}

/// Writes the `digits` low hex digits of `n` into `out`; returns `digits`.
fn hex(out: &mut [u8], n: u64, digits: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, slot) in out[..digits].iter_mut().enumerate() {
        *slot = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_id_passes_through() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc-123"));
        assert_eq!(take_or_make(&mut h), "abc-123");
        assert_eq!(h.get_all(&X_REQUEST_ID).iter().count(), 1);
    }

    #[test]
    fn made_ids_differ_and_replace_odd_ones() {
        let mut h = HeaderMap::new();
        h.append(X_REQUEST_ID.clone(), HeaderValue::from_static("one"));
        h.append(X_REQUEST_ID.clone(), HeaderValue::from_static("two"));
        let a = take_or_make(&mut h);
        assert_eq!(h.get_all(&X_REQUEST_ID).iter().collect::<Vec<_>>(), [&a]);
        let b = take_or_make(&mut HeaderMap::new());
        assert_ne!(a, b);
        let text = a.to_str().unwrap();
        let (prefix, counter) = text.split_once('-').unwrap();
        assert_eq!(prefix.len(), 8);
        assert!(u64::from_str_radix(counter, 16).is_ok(), "{text}");
        let mut spaced = HeaderMap::new();
        spaced.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("a b"));
        assert_ne!(take_or_make(&mut spaced), "a b");
    }
}
