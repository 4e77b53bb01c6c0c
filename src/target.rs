//! The request-target as it goes upstream: origin-form (`/path?query`), whatever form
//! the client sent it in (RFC 9112 §3.2). `proxy.rs` asks `origin_form` for the path to
//! forward and to pick by; the front door (`http1/`) hands the target on untouched.

use http::Uri;
use http::header::{self, HeaderMap, HeaderValue};

use crate::error::ProxyError;

/// The path and query to send upstream. An absolute-form target (`http://host/path`,
/// RFC 9112 §3.2.2) is reduced to origin-form, and its authority replaces `Host`. The
/// asterisk form (`OPTIONS *`) asks about the server itself, which a balancer cannot
/// answer for its backends.
pub fn origin_form<'t>(target: &'t str, headers: &mut HeaderMap) -> Result<&'t str, ProxyError> {
    if target.starts_with('/') {
        return Ok(target);
    }
    if target == "*" {
        return Err(ProxyError::NotImplemented("OPTIONS * is not supported"));
    }
    let bad = || ProxyError::BadRequest("bad request target");
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
            Err(ProxyError::NotImplemented(_))
        ));
        assert!(matches!(
            origin_form("ftp://x/y", &mut h),
            Err(ProxyError::BadRequest(_))
        ));
        assert!(matches!(
            origin_form("example.com:80", &mut h),
            Err(ProxyError::BadRequest(_))
        ));
    }
}
