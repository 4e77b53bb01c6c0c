//! The admin guard: whether one admin request may be answered at all. `admin.rs` asks
//! it about every request before any endpoint runs and turns a refusal into a 403 or a
//! 401; this file is the whole of the admin interface's access control at request
//! time. At startup `config.rs` adds one rule: a non-loopback `--admin` address needs
//! `--admin-token`.
//!
//! A loopback port is reachable by every web page in the operator's browser, so the
//! address is not enough. The rules, checked in this order:
//!
//! 1. A request that may change something (any method but GET and HEAD) is refused
//!    with 403 when a browser says it comes from a page of another origin:
//!    `Sec-Fetch-Site: cross-site`, or an `Origin` that is not a scheme and `://`
//!    followed by exactly this request's `Host` (so `Origin: null` is refused too). A
//!    hostile page may POST a form to loopback without a preflight.
//! 2. Without a token, `Host` must be absent, `localhost` or an IP address, with or
//!    without a port (403 otherwise), whatever the method: a page that points its own
//!    domain name at 127.0.0.1 (DNS rebinding) could otherwise read the answers.
//! 3. With a token, every path but the status page `/` and the probes needs
//!    `Authorization: Bearer TOKEN` (401 otherwise). The page holds no data: it asks
//!    `/status.json` for that, with the token. The token is compared in constant time.
//!
//! The probes, `GET` or `HEAD` of `/live` and `/ready`, pass rules 2 and 3: a kubelet or
//! an L4 balancer's health check knows no token (yet it reaches the admin port off
//! loopback, where a token is required), and it sends `Host: IP:PORT`, a name, or none
//! at all. Their answers are a word or two and hold nothing a page could steal, and
//! they change nothing. Any other method on them meets every rule, as on any path.

use http::Method;
use http::header::{self, HeaderMap, HeaderValue};

use crate::http1::RequestHead;

/// The path served without a token: the status page, which holds no data.
const PAGE_PATH: &str = "/";
/// The probes, read by machines that know no token and no host name (see above).
const PROBE_PATHS: [&str; 2] = ["/live", "/ready"];

/// The admin interface's access rules and the token they check.
pub struct Guard {
    /// `Authorization: Bearer` token; `None` on loopback without `--admin-token`.
    token: Option<String>,
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 403, with this text: a change from another web origin (rule 1), or a `Host`
    /// that is not local while there is no token (rule 2).
    Forbidden(&'static str),
    /// 401: the bearer token is missing or wrong (rule 3).
    Unauthorized,
}

impl Guard {
    pub fn new(token: Option<String>) -> Guard {
        Guard { token }
    }

    /// Applies the rules to `head`, a request for `path` (its target without the
    /// query).
    pub fn check(&self, head: &RequestHead, path: &str) -> Result<(), Refusal> {
        let changes = head.method != Method::GET && head.method != Method::HEAD;
        if changes && from_another_origin(&head.headers) {
            return Err(Refusal::Forbidden(
                "refused: the request comes from another web origin",
            ));
        }
        if !changes && PROBE_PATHS.contains(&path) {
            return Ok(());
        }
        if self.token.is_none() && !local_host(&head.headers) {
            return Err(Refusal::Forbidden(
                "refused: without --admin-token, Host must be localhost or an IP address",
            ));
        }
        if path != PAGE_PATH && !self.authorized(&head.headers) {
            return Err(Refusal::Unauthorized);
        }
        Ok(())
    }

    /// True when no token is set, or the request carries `Authorization: Bearer TOKEN`.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        headers.get_all(header::AUTHORIZATION).iter().any(|value| {
            let value = value.as_bytes();
            value.len() > 7
                && value[..7].eq_ignore_ascii_case(b"bearer ")
                && same(value[7..].trim_ascii(), token.as_bytes())
        })
    }
}

/// A browser says where a request comes from (`Sec-Fetch-Site`, `Origin`); a request
/// from a page of another origin than this admin interface's is not the operator's.
fn from_another_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if text("sec-fetch-site").is_some_and(|site| site.eq_ignore_ascii_case("cross-site")) {
        return true;
    }
    match (text("origin"), text("host")) {
        (None, _) => false,
        (Some(origin), host) => {
            let authority = origin.split_once("://").map(|(_, rest)| rest);
            authority.is_none() || authority != host
        }
    }
}

/// `Host` is absent, `localhost` or an IP address (with or without a port).
fn local_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Compares without stopping at the first difference, so that the time taken does not
/// tell a guesser how much of the token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.insert(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn changes_from_another_origin_are_told_apart() {
        let same = headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "http://127.0.0.1:9000"),
        ]);
        assert!(!from_another_origin(&same));
        assert!(!from_another_origin(&headers(&[(
            "host",
            "127.0.0.1:9000"
        )])));
        let other = headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "https://evil.example"),
        ]);
        assert!(from_another_origin(&other));
        assert!(from_another_origin(&headers(&[("origin", "null")])));
        assert!(from_another_origin(&headers(&[(
            "sec-fetch-site",
            "cross-site"
        )])));
    }

    #[test]
    fn local_hosts_are_addresses_and_localhost() {
        for host in [
            "127.0.0.1:9000",
            "localhost:9000",
            "[::1]:9000",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(local_host(&headers(&[("host", host)])), "{host}");
        }
        assert!(local_host(&HeaderMap::new()));
        for host in ["evil.example:9000", "evil.example", "127.0.0.1.nip.io"] {
            assert!(!local_host(&headers(&[("host", host)])), "{host}");
        }
    }

    #[test]
    fn token_comparison() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }

    fn request(text: &str) -> RequestHead {
        crate::http1::parse_head(text.as_bytes()).unwrap()
    }

    #[test]
    fn the_rules_in_order() {
        let guard = Guard::new(Some("secret".into()));
        let get = |path| {
            request(&format!(
                "GET {path} HTTP/1.1\r\nHost: evil.example\r\n\r\n"
            ))
        };
        assert_eq!(
            guard.check(&get("/"), "/"),
            Ok(()),
            "the page needs no token"
        );
        assert_eq!(
            guard.check(&get("/metrics"), "/metrics"),
            Err(Refusal::Unauthorized)
        );
        let scrape =
            request("GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: bearer secret\r\n\r\n");
        assert_eq!(guard.check(&scrape, "/metrics"), Ok(()));
        let change = request(
            "POST /backends/x/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: null\r\n\
             Authorization: Bearer secret\r\n\r\n",
        );
        assert!(
            matches!(
                guard.check(&change, "/backends/x/drain"),
                Err(Refusal::Forbidden(_))
            ),
            "the token does not excuse another origin"
        );
        let open = Guard::new(None);
        assert!(
            matches!(open.check(&get("/"), "/"), Err(Refusal::Forbidden(_))),
            "without a token, a foreign Host is refused even for the page"
        );
        let local = request("GET /metrics HTTP/1.1\r\nHost: localhost:9000\r\n\r\n");
        assert_eq!(open.check(&local, "/metrics"), Ok(()));
    }

    #[test]
    fn probes_need_no_token_and_no_local_host_but_meet_the_origin_rule() {
        let kubelet = |method: &str, path: &str, host: &str| {
            request(&format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/1.31\r\n\r\n"
            ))
        };
        for guard in [Guard::new(Some("secret".into())), Guard::new(None)] {
            for path in ["/live", "/ready"] {
                for host in ["10.244.1.7:9901", "roundhouse.default.svc"] {
                    for method in ["GET", "HEAD"] {
                        let probe = kubelet(method, path, host);
                        assert_eq!(guard.check(&probe, path), Ok(()), "{method} {path} {host}");
                    }
                }
            }
            let foreign = kubelet("GET", "/metrics", "roundhouse.default.svc");
            assert!(guard.check(&foreign, "/metrics").is_err());
        }
        let post = request(
            "POST /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\n\r\n",
        );
        assert!(matches!(
            Guard::new(None).check(&post, "/ready"),
            Err(Refusal::Forbidden(_))
        ));
    }
}
