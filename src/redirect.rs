//! The https redirect: with `--https-redirect`, a plain listener answers every request
//! itself with `308 Permanent Redirect` to the same URL on https (the usual :80 → :443),
//! and no backend hears of it. 308 rather than 301: the client repeats the same method
//! and body. `connection.rs` asks for it in place of `proxy::handle` on a plain
//! connection; the answer is logged and counted like every answer roundhouse makes
//! itself (`refuse::Tally`).

use http::header;

use crate::access_log::{Entry, RequestLine};
use crate::error::ProxyError;
use crate::http1::{ClientConn, RequestHead, write_error};
use crate::refuse::{self, Refusal, Tally};

/// Where plain requests are sent: the same host, on the port of the first TLS listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The port to name in the URL; `None` for https's own, 443.
    port: Option<u16>,
}

impl Redirect {
    /// `tls_port`: the first TLS listener's port, if this balancer has one; without
    /// one, the redirect names no port (another server answers on 443).
    pub fn new(tls_port: Option<u16>) -> Redirect {
        Redirect {
            port: tls_port.filter(|&port| port != 443),
        }
    }

    /// The https URL of `head`'s request: its Host without the port, our TLS port, and
    /// the target's path and query. `None` without a Host to name.
    pub fn location(&self, head: &RequestHead) -> Option<String> {
        let host = head.headers.get(header::HOST)?.to_str().ok()?;
        let host = without_port(host);
        if host.is_empty() {
            return None;
        }
        let path = match head.target.as_str() {
            target if target.starts_with('/') => target,
            // Absolute form: what follows the authority.
            target => match target.split_once("://") {
                Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
                None => "/",
            },
        };
        Some(match self.port {
            Some(port) => format!("https://{host}:{port}{path}"),
            None => format!("https://{host}{path}"),
        })
    }

    /// Answers `head` with the redirect (or 400 when it has no Host to redirect to),
    /// logs and counts it with `entry` (its times: `Entry::unread`). `keep_alive`: the
    /// connection may carry another request (its body, if any, was read). Returns
    /// whether it still may.
    pub fn answer(
        &self,
        tally: &Tally,
        conn: &mut ClientConn,
        head: &RequestHead,
        keep_alive: bool,
        out: &mut Vec<u8>,
        entry: Entry<'_>,
    ) -> bool {
        let mut entry = Entry {
            request: Some(RequestLine {
                method: head.method.as_str(),
                target: &head.target,
                version: head.version,
            }),
            ..entry
        };
        let Some(location) = self.location(head) else {
            let refusal = Refusal {
                error: &ProxyError::BadRequest("no Host to redirect to"),
                extra: &[],
                keep_alive: false,
            };
            return refuse::answer(tally, conn, out, refusal, &mut entry, None);
        };
        let keep_alive = keep_alive && head.keep_alive;
        let extra = [("Location", location.as_str())];
        let written = write_error(conn, out, 308, "use https", &extra, keep_alive).is_ok();
        entry.status = 308;
        tally.record(&entry, None, None);
        written && keep_alive
    }
}

/// `host` without its `:port`, if it has one (`[::1]:80` is `[::1]`).
fn without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(at) if !host[at..].contains(']') => &host[..at],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::parse_head;

    fn head(raw: &str) -> RequestHead {
        parse_head(raw.as_bytes()).unwrap()
    }

    #[test]
    fn the_location_is_the_same_url_on_our_tls_port() {
        let get = head("GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: shop.test:8080\r\n\r\n");
        assert_eq!(
            Redirect::new(Some(8443)).location(&get).unwrap(),
            "https://shop.test:8443/a/b?x=1&y=2"
        );
        assert_eq!(
            Redirect::new(Some(443)).location(&get).unwrap(),
            "https://shop.test/a/b?x=1&y=2"
        );
        assert_eq!(
            Redirect::new(None).location(&get).unwrap(),
            "https://shop.test/a/b?x=1&y=2"
        );
    }

    #[test]
    fn hosts_and_targets_of_every_form() {
        let redirect = Redirect::new(None);
        let at = |raw: &str| redirect.location(&head(raw));
        assert_eq!(
            at("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").unwrap(),
            "https://[::1]/"
        );
        assert_eq!(
            at("GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n").unwrap(),
            "https://[::1]/"
        );
        assert_eq!(
            at("GET http://other.test/p?q HTTP/1.1\r\nHost: shop.test\r\n\r\n").unwrap(),
            "https://shop.test/p?q"
        );
        assert_eq!(
            at("OPTIONS * HTTP/1.1\r\nHost: shop.test\r\n\r\n").unwrap(),
            "https://shop.test/"
        );
        assert_eq!(at("GET / HTTP/1.0\r\n\r\n"), None);
    }
}
