//! Header policy: which fields cross the balancer and which it adds. Pure functions over
//! `http::HeaderMap`, tested without a socket. `proxy.rs` applies `to_upstream` to a
//! request before `upstream/` sends it, and `to_client` to the answer before `http1/`
//! writes it.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// framing fields we regenerate from what we actually send (RFC 9112 §6). `Expect` is
/// answered by us (100 Continue), never forwarded: the upstream client would wait for the backend's 100.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
    header::CONTENT_LENGTH,
    header::EXPECT,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop fields, including every field that `Connection` names. `Host`
/// survives even if named: HTTP/1.1 cannot do without it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Fields named in Connection are hop-by-hop too, whatever their name (nginx and
    // HAProxy forward them; RFC 9110 §7.6.1 says a proxy must not).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| name != header::HOST)
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Prepares a client's request headers for the backend: hop-by-hop fields go, the
/// client's address is appended to `X-Forwarded-For`, and `X-Forwarded-Proto` (`https`
/// for a request that came over `tls`) and `X-Forwarded-Host` say what the client asked
/// for. Everything else passes as it is.
pub fn to_upstream(headers: &mut HeaderMap, client: IpAddr, tls: bool) {
    strip_hop_by_hop(headers);

    // Several X-Forwarded-For lines are one list (RFC 9110 §5.3): join them, then append.
    let mut chain = String::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(v) = value.to_str() {
            chain.push_str(v.trim());
            chain.push_str(", ");
        }
    }
    chain.push_str(&client.to_string());
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }

    let proto = if tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    match headers.get(header::HOST).cloned() {
        Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

/// Prepares a backend's response headers for the client: only the hop-by-hop fields go.
/// Server, Date, Set-Cookie (each line kept), Content-Encoding... all pass untouched.
pub fn to_client(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn pairs(h: &HeaderMap) -> Vec<(String, String)> {
        h.iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn drops_fields_named_in_connection() {
        let mut h = map(&[
            ("Connection", "close, X-Trace"),
            ("X-Trace", "1"),
            ("Accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(pairs(&h), [("accept".into(), "*/*".into())]);
    }

    #[test]
    fn drops_every_listed_hop_by_hop_field() {
        let mut h = map(&[
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Trailer", "X-Sum"),
            ("Content-Length", "3"),
            ("Expect", "100-continue"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(
            pairs(&h),
            [
                ("set-cookie".into(), "a=1".into()),
                ("set-cookie".into(), "b=2".into())
            ]
        );
    }

    #[test]
    fn host_survives_being_named_in_connection() {
        let mut h = map(&[("Host", "example.com"), ("Connection", "host, x-a")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(pairs(&h), [("host".into(), "example.com".into())]);
    }

    #[test]
    fn appends_client_to_forwarded_chain() {
        let mut h = map(&[
            ("Host", "shop.example"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-For", "5.6.7.8"),
            ("X-Forwarded-Proto", "https"),
        ]);
        to_upstream(&mut h, "127.0.0.1".parse().unwrap(), false);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 127.0.0.1");
        // What the client claimed is replaced by what it used.
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn forwarded_for_named_in_connection_is_replaced() {
        let mut h = map(&[
            ("Connection", "X-Forwarded-For"),
            ("X-Forwarded-For", "6.6.6.6"),
        ]);
        to_upstream(&mut h, "::1".parse().unwrap(), true);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "::1");
        assert!(h.get("x-forwarded-host").is_none());
    }
}
