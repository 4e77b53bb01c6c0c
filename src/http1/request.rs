//! A request head: the request line and header fields of one client request, validated,
//! with the body framing decided (RFC 9112 §6.3).
//!
//! `conn.rs` finds where a head ends in its read buffer and hands the bytes here;
//! `body.rs` then reads the body the way `Framing` says. Everything ambiguous is
//! refused, because a proxy that reads a request differently from its backend lets a
//! client smuggle a second request inside the first.

use crate::error::ProxyError;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The HTTP version on the request line; nothing else is accepted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is delimited.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Framing {
    /// No body, whatever the method.
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

impl Framing {
    /// True when body bytes follow the head on the wire.
    pub fn has_body(self) -> bool {
        !matches!(self, Framing::None | Framing::Length(0))
    }
}

/// One validated request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Any token, extension methods included.
    pub method: Method,
    /// The request-target exactly as received, byte for byte (visible ASCII only).
    pub target: String,
    pub version: Version,
    /// Every field as received: repeated names kept, appended in order.
    pub headers: HeaderMap,
    /// RFC 9112 §6.3, decided here.
    pub framing: Framing,
    /// HTTP/1.1: unless `Connection: close`; HTTP/1.0: only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110 §10.1.1 says to ignore it
    /// on HTTP/1.0).
    pub expect_continue: bool,
    /// The `Upgrade` field of a request that asks for a tunnel (RFC 9110 §7.8): HTTP/1.1,
    /// `Connection: upgrade`, no body, and no `h2c` among the protocols (we speak
    /// HTTP/1.1; such a request is proxied as a plain one, its upgrade stripped).
    pub upgrade: Option<HeaderValue>,
}

/// Headers parsed on the stack before falling back to a heap array; real clients send
/// far fewer.
const STACK_HEADERS: usize = 64;
/// More fields than this is refused before `HeaderMap` (which panics past 32768) sees them.
const MAX_HEADERS: usize = 8192;

/// Parses a complete head: the bytes up to and including the blank line (leading empty
/// lines allowed). Pure; `ClientConn::read_head` uses the same checks.
pub fn parse_head(bytes: &[u8]) -> Result<RequestHead, ProxyError> {
    let mut bytes = bytes;
    while let Some(rest) = bytes.strip_prefix(b"\r\n") {
        bytes = rest;
    }
    match scan_head(bytes, &mut 0)? {
        Some(len) if len == bytes.len() => parse_complete(bytes),
        Some(_) => Err(ProxyError::BadRequest("bytes after the request head")),
        None => Err(ProxyError::BadRequest("incomplete request head")),
    }
}

/// Looks for the end of a head in `bytes`, resuming at `*scanned`. Returns the head's
/// length once `\r\n\r\n` is seen. A LF without CR before it, or a CR without LF after
/// it, is refused at once rather than after the head timeout (httparse would accept
/// bare LF, and a backend might not).
pub(super) fn scan_head(bytes: &[u8], scanned: &mut usize) -> Result<Option<usize>, ProxyError> {
    const BAD_EOL: ProxyError = ProxyError::BadRequest("bad line ending in request head");
    let mut i = *scanned;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                if i == 0 || bytes[i - 1] != b'\r' {
                    return Err(BAD_EOL);
                }
                if i >= 3 && bytes[i - 3..i - 1] == *b"\r\n" {
                    return Ok(Some(i + 1));
                }
            }
            // The byte after it has not arrived yet: look again after the next read.
            b'\r' if i + 1 == bytes.len() => break,
            b'\r' if bytes[i + 1] != b'\n' => return Err(BAD_EOL),
            _ => {}
        }
        i += 1;
    }
    *scanned = i;
    Ok(None)
}

/// Parses a head whose line endings `scan_head` already checked.
pub(super) fn parse_complete(bytes: &[u8]) -> Result<RequestHead, ProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; STACK_HEADERS];
    match parse_into(bytes, &mut headers) {
        // Many fields: retry with room for as many as the head could hold ("a:\r\n").
        Err(ProxyError::HeadTooLarge) => {
            let room = (bytes.len() / 4 + 1).min(MAX_HEADERS);
            parse_into(bytes, &mut vec![httparse::EMPTY_HEADER; room])
        }
        other => other,
    }
}

fn parse_into<'b>(
    bytes: &'b [u8],
    fields: &mut [httparse::Header<'b>],
) -> Result<RequestHead, ProxyError> {
    let mut req = httparse::Request::new(fields);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len == bytes.len() => {}
        Ok(_) => return Err(ProxyError::BadRequest("malformed request head")),
        Err(err) => return Err(from_httparse(err)),
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(ProxyError::UnsupportedVersion),
    };
    let method = req.method.unwrap_or_default();
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| ProxyError::BadRequest("bad method"))?;
    let target = req.path.unwrap_or_default();
    // httparse lets raw bytes >= 0x80 through; backends disagree about those, so they
    // are refused rather than forwarded (percent-encoded UTF-8 is fine). A `#` cannot
    // appear in a request-target (RFC 9112 §3.2): a fragment is the client's business,
    // and the upstream client would silently cut it off, so the target would not reach the backend
    // byte for byte.
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        return Err(ProxyError::BadRequest("bad request target"));
    }

    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for field in req.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| ProxyError::BadRequest("bad header name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| ProxyError::BadRequest("bad header value"))?;
        headers.append(name, value);
    }

    check_host(&headers, version)?;
    let framing = framing(&headers, version)?;
    let expect_continue = expect_continue(&headers)? && version == Version::Http11;
    if (method == Method::HEAD || method == Method::CONNECT) && framing.has_body() {
        return Err(ProxyError::BadRequest("request body not allowed"));
    }
    if method == Method::CONNECT {
        return Err(ProxyError::NotImplemented("CONNECT is not supported"));
    }
    let keep_alive = match version {
        Version::Http11 => !has_token(&headers, CONNECTION, b"close"),
        Version::Http10 => {
            has_token(&headers, CONNECTION, b"keep-alive")
                && !has_token(&headers, CONNECTION, b"close")
        }
    };
    let upgrade = upgrade(&headers, version, framing);
    Ok(RequestHead {
        method,
        target: target.to_owned(),
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    })
}

/// The protocols a request asks to switch to, if it is an upgrade we carry (see
/// `RequestHead::upgrade`).
fn upgrade(headers: &HeaderMap, version: Version, framing: Framing) -> Option<HeaderValue> {
    if version != Version::Http11 || framing.has_body() {
        return None;
    }
    if !has_token(headers, CONNECTION, b"upgrade") || has_token(headers, UPGRADE, b"h2c") {
        return None;
    }
    let mut values = headers.get_all(UPGRADE).iter();
    match (values.next(), values.next()) {
        (Some(one), None) if !one.is_empty() => Some(one.clone()),
        _ => None,
    }
}

/// The one place that reads `httparse::Error`.
fn from_httparse(err: httparse::Error) -> ProxyError {
    match err {
        httparse::Error::Version => ProxyError::UnsupportedVersion,
        // Only our fixed-size array can overflow; see `parse_complete`.
        httparse::Error::TooManyHeaders => ProxyError::HeadTooLarge,
        // Covers obs-fold and whitespace before the colon too: both make a bad name.
        httparse::Error::HeaderName => ProxyError::BadRequest("bad header name"),
        httparse::Error::HeaderValue => ProxyError::BadRequest("bad header value"),
        // Line endings were checked before; a NewLine here is junk after the version.
        _ => ProxyError::BadRequest("bad request line"),
    }
}

/// The longest Host accepted: a DNS name has at most 253 characters (RFC 1035), plus a
/// port; an IPv6 literal is shorter. The bound also keeps the head we forward (which
/// repeats Host in X-Forwarded-Host) within the upstream client's buffer.
pub const MAX_HOST: usize = 300;

/// RFC 9112 §3.2: exactly one Host on HTTP/1.1, at most one otherwise, and it must look
/// like `uri-host[:port]` (an empty value is allowed) of at most MAX_HOST bytes.
fn check_host(headers: &HeaderMap, version: Version) -> Result<(), ProxyError> {
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::Http11 => {
            Err(ProxyError::BadRequest("missing host header"))
        }
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(ProxyError::BadRequest("more than one host header")),
        (Some(host), None) => {
            let ok = host.len() <= MAX_HOST
                && host
                    .as_bytes()
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%[]:".contains(&b));
            if ok {
                Ok(())
            } else {
                Err(ProxyError::BadRequest("bad host header"))
            }
        }
    }
}

/// RFC 9112 §6.3: Transfer-Encoding first, then Content-Length, else no body.
fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, ProxyError> {
    let mut codings = 0;
    let mut only_chunked = true;
    for value in headers.get_all(TRANSFER_ENCODING) {
        for coding in value.as_bytes().split(|&b| b == b',').map(trim_ows) {
            if !is_token(coding) {
                return Err(ProxyError::BadRequest("bad transfer-encoding"));
            }
            codings += 1;
            only_chunked &= coding.eq_ignore_ascii_case(b"chunked");
        }
    }
    if codings > 0 {
        if version == Version::Http10 {
            return Err(ProxyError::BadRequest(
                "transfer-encoding in an HTTP/1.0 request",
            ));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(ProxyError::BadRequest(
                "both transfer-encoding and content-length",
            ));
        }
        if codings > 1 || !only_chunked {
            return Err(ProxyError::NotImplemented("unsupported transfer coding"));
        }
        return Ok(Framing::Chunked);
    }

    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for member in value.as_bytes().split(|&b| b == b',').map(trim_ows) {
            let n = parse_length(member).ok_or(ProxyError::BadRequest("bad content-length"))?;
            if length.is_some_and(|seen| seen != n) {
                return Err(ProxyError::BadRequest("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::None, Framing::Length))
}

/// 1 to 19 ASCII digits: always fits in a u64, so no overflow check is needed.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// `Expect: 100-continue` is the only expectation there is (RFC 9110 §10.1.1).
fn expect_continue(headers: &HeaderMap) -> Result<bool, ProxyError> {
    let mut expect = false;
    for value in headers.get_all(EXPECT) {
        if !trim_ows(value.as_bytes()).eq_ignore_ascii_case(b"100-continue") {
            return Err(ProxyError::ExpectationFailed);
        }
        expect = true;
    }
    Ok(expect)
}

/// True when a comma-separated list in any `name` field holds `token` (any case).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &[u8]) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
    })
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 9110 §5.6.2 token.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<RequestHead, ProxyError> {
        parse_head(text.as_bytes())
    }

    fn ok(text: &str) -> RequestHead {
        parse(text).unwrap_or_else(|err| panic!("{text:?}: {err}"))
    }

    /// The BadRequest text, failing on any other outcome.
    fn bad(text: &str) -> &'static str {
        match parse(text) {
            Err(ProxyError::BadRequest(why)) => why,
            other => panic!("{text:?}: expected 400, got {other:?}"),
        }
    }

    fn bad_bytes(bytes: &[u8]) -> &'static str {
        match parse_head(bytes) {
            Err(ProxyError::BadRequest(why)) => why,
            other => panic!("{bytes:?}: expected 400, got {other:?}"),
        }
    }

    fn with_header(line: &str) -> String {
        format!("POST / HTTP/1.1\r\nHost: a\r\n{line}\r\n\r\n")
    }

    #[test]
    fn parses_a_simple_get() {
        let head = ok("GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.target, "/index.html?q=1");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.headers["host"], "example.com");
        assert_eq!(head.headers["accept"], "*/*");
        assert_eq!(head.framing, Framing::None);
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
    }

    #[test]
    fn accepts_extension_methods() {
        assert_eq!(
            ok("PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n").method.as_str(),
            "PROPFIND"
        );
        assert_eq!(
            ok("X-PURGE_1 / HTTP/1.1\r\nHost: a\r\n\r\n")
                .method
                .as_str(),
            "X-PURGE_1"
        );
        assert_eq!(bad("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), "bad request line");
    }

    #[test]
    fn keeps_the_target_byte_for_byte() {
        for target in [
            "/a%2Fb",
            "//a//b",
            "/%E2%82%AC?x=%00&y",
            "http://h/p",
            "*",
            "/a;b,c?d=e&f",
        ] {
            assert_eq!(
                ok(&format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n")).target,
                target
            );
        }
        let long = format!("/{}", "x/%2F".repeat(1700));
        assert!(long.len() > 8192);
        assert_eq!(
            ok(&format!("GET {long} HTTP/1.1\r\nHost: a\r\n\r\n")).target,
            long
        );
    }

    #[test]
    fn refuses_targets_outside_visible_ascii() {
        assert_eq!(
            bad_bytes(b"GET /page#section HTTP/1.1\r\nHost: a\r\n\r\n"),
            "bad request target"
        );
        assert_eq!(
            bad_bytes(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
            "bad request target"
        );
        assert_eq!(
            bad_bytes(b"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"),
            "bad request line"
        );
        assert_eq!(bad("GET  HTTP/1.1\r\nHost: a\r\n\r\n"), "bad request line");
    }

    #[test]
    fn refuses_bare_lf_and_bare_cr() {
        let why = "bad line ending in request head";
        assert_eq!(bad("GET / HTTP/1.1\nHost: a\r\n\r\n"), why);
        assert_eq!(bad("GET / HTTP/1.1\r\nHost: a\n\r\n"), why);
        assert_eq!(bad("GET / HTTP/1.1\r\nHost: a\r\n\n"), why);
        assert_eq!(bad("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), why);
        assert_eq!(bad("GET / HTTP/1.1\r\nX: a\rb\r\nHost: a\r\n\r\n"), why);
    }

    #[test]
    fn refuses_malformed_fields() {
        assert_eq!(bad(&with_header("X-A: 1\r\n folded")), "bad header name");
        assert_eq!(bad(&with_header("X-A: 1\r\n\tfolded")), "bad header name");
        assert_eq!(bad(&with_header("X-A : 1")), "bad header name");
        assert_eq!(bad(&with_header("X-A\t: 1")), "bad header name");
        assert_eq!(bad(&with_header("X[A]: 1")), "bad header name");
        assert_eq!(bad(&with_header(": 1")), "bad header name");
        assert_eq!(bad(&with_header("X-A: a\0b")), "bad header value");
        assert_eq!(bad(&with_header("X-A: a\x01b")), "bad header value");
        assert_eq!(bad(&with_header("X-A: a\x7fb")), "bad header value");
        assert_eq!(bad(&with_header("X-A")), "bad header name");
    }

    #[test]
    fn keeps_repeated_fields_in_order_and_obs_text() {
        let head = ok("GET / HTTP/1.1\r\nX-A: 1\r\nHost: a\r\nX-B: 2\r\nx-a: 3\r\n\r\n");
        let values: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "3"]);
        let head = parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nX-N: caf\xc3\xa9 \t\r\n\r\n").unwrap();
        assert_eq!(head.headers["x-n"].as_bytes(), b"caf\xc3\xa9");
    }

    #[test]
    fn parses_heads_with_many_fields() {
        let fields: String = (0..300).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let head = ok(&format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n"));
        assert_eq!(head.headers.len(), 301);
        assert_eq!(head.headers["x-299"], "299");
    }

    #[test]
    fn host_rules() {
        assert_eq!(bad("GET / HTTP/1.1\r\n\r\n"), "missing host header");
        assert_eq!(
            bad("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            "more than one host header"
        );
        assert_eq!(
            bad("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
            "more than one host header"
        );
        assert_eq!(
            bad("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            "bad host header"
        );
        let longest = "h".repeat(MAX_HOST);
        ok(&format!("GET / HTTP/1.1\r\nHost: {longest}\r\n\r\n"));
        assert_eq!(
            bad(&format!("GET / HTTP/1.1\r\nHost: {longest}h\r\n\r\n")),
            "bad host header"
        );
        assert_eq!(
            bad("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            "bad host header"
        );
        assert_eq!(
            bad("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"),
            "bad host header"
        );
        assert!(ok("GET / HTTP/1.0\r\n\r\n").headers.is_empty());
        for host in [
            "example.com:8080",
            "[::1]:80",
            "10.0.0.1",
            "xn--bcher-kva.example",
            "a%41",
            "",
        ] {
            ok(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        }
    }

    #[test]
    fn versions_other_than_1_0_and_1_1_are_refused() {
        for version in [
            "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3", "http/1.1", "HTTP/11",
        ] {
            let text = format!("GET / {version}\r\nHost: a\r\n\r\n");
            assert!(
                matches!(parse(&text), Err(ProxyError::UnsupportedVersion)),
                "{version}"
            );
        }
        assert_eq!(ok("GET / HTTP/1.0\r\n\r\n").version, Version::Http10);
        // Not a version at all (HTTP-version is one digit, a dot, one digit): 400.
        assert_eq!(
            bad("GET / HTTP/1.10\r\nHost: a\r\n\r\n"),
            "bad request line"
        );
    }

    #[test]
    fn content_length_rules() {
        let framing = |line: &str| parse(&with_header(line)).map(|h| h.framing);
        assert_eq!(framing("Content-Length: 5").unwrap(), Framing::Length(5));
        assert_eq!(framing("Content-Length: 007").unwrap(), Framing::Length(7));
        assert_eq!(
            framing("Content-Length: 5\r\nContent-Length: 5").unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            framing("Content-Length: 5, 5,5").unwrap(),
            Framing::Length(5)
        );
        let max = "9999999999999999999"; // 19 digits
        assert_eq!(
            framing(&format!("Content-Length: {max}")).unwrap(),
            Framing::Length(max.parse().unwrap())
        );
        for line in [
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length: 5, 6",
        ] {
            assert_eq!(
                bad(&with_header(line)),
                "conflicting content-length",
                "{line}"
            );
        }
        for line in [
            "Content-Length: +5",
            "Content-Length: -5",
            "Content-Length: 0x5",
            "Content-Length: 5a",
            "Content-Length: 5 5",
            "Content-Length: ",
            "Content-Length: 5,",
            "Content-Length: ,5",
            "Content-Length: 5\r\nContent-Length: x",
            "Content-Length: 10000000000000000000",
            "Content-Length: 18446744073709551616",
            "Content-Length: 00000000000000000001",
        ] {
            assert_eq!(bad(&with_header(line)), "bad content-length", "{line}");
        }
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\n\r\n").framing,
            Framing::None
        );
        assert_eq!(
            ok("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n").framing,
            Framing::Length(3)
        );
    }

    #[test]
    fn transfer_encoding_rules() {
        let framing = |line: &str| parse(&with_header(line)).map(|h| h.framing);
        for line in [
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: Chunked",
            "Transfer-Encoding:  CHUNKED \t",
        ] {
            assert_eq!(framing(line).unwrap(), Framing::Chunked, "{line}");
        }
        for line in [
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: identity",
            "Transfer-Encoding: chunked, chunked",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
        ] {
            assert!(
                matches!(
                    framing(line),
                    Err(ProxyError::NotImplemented("unsupported transfer coding"))
                ),
                "{line}"
            );
        }
        for line in [
            "Transfer-Encoding: ",
            "Transfer-Encoding: chunked,",
            "Transfer-Encoding: chu nked",
            "Transfer-Encoding: chunked;q=1",
            "Transfer-Encoding: \"chunked\"",
        ] {
            assert_eq!(bad(&with_header(line)), "bad transfer-encoding", "{line}");
        }
        assert_eq!(
            bad(&with_header(
                "Transfer-Encoding: chunked\r\nContent-Length: 5"
            )),
            "both transfer-encoding and content-length"
        );
        assert_eq!(
            bad(&with_header(
                "Content-Length: 5\r\nTransfer-Encoding: gzip, chunked"
            )),
            "both transfer-encoding and content-length"
        );
        assert_eq!(
            bad("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "transfer-encoding in an HTTP/1.0 request"
        );
    }

    #[test]
    fn expect_rules() {
        assert!(ok(&with_header("Expect: 100-continue")).expect_continue);
        assert!(ok(&with_header("Expect: 100-Continue ")).expect_continue);
        assert!(!ok("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        for line in [
            "Expect: 200-ok",
            "Expect: ",
            "Expect: 100-continue, x",
            "Expect: 100-continue\r\nExpect: x",
        ] {
            assert!(
                matches!(
                    parse(&with_header(line)),
                    Err(ProxyError::ExpectationFailed)
                ),
                "{line}"
            );
        }
    }

    #[test]
    fn head_and_connect() {
        assert_eq!(
            bad("HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n"),
            "request body not allowed"
        );
        assert_eq!(
            bad("HEAD / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "request body not allowed"
        );
        assert_eq!(
            ok("HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").framing,
            Framing::Length(0)
        );
        assert_eq!(
            bad("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 2\r\n\r\n"),
            "request body not allowed"
        );
        assert!(matches!(
            parse("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            Err(ProxyError::NotImplemented("CONNECT is not supported"))
        ));
    }

    #[test]
    fn an_upgrade_is_carried_only_when_it_asks_plainly_for_one() {
        let up = |text: &str| ok(text).upgrade.map(|v| v.to_str().unwrap().to_owned());
        let ws = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(up(ws).as_deref(), Some("websocket"));
        // Upgrade without the Connection token, or Connection without Upgrade.
        assert_eq!(
            up("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"),
            None
        );
        assert_eq!(
            up("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n"),
            None
        );
        // h2c, alone or among others: we speak HTTP/1.1.
        for protocols in ["h2c", "websocket, h2c"] {
            let text = format!(
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: {protocols}\r\n\r\n"
            );
            assert_eq!(up(&text), None, "{protocols}");
        }
        // HTTP/1.0 has no upgrade; a request with a body is never upgraded.
        assert_eq!(
            up("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
            None
        );
        let post = "POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(up(post), None);
    }

    #[test]
    fn keep_alive_rules() {
        let keep = |text: &str| ok(text).keep_alive;
        assert!(keep("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!keep(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ));
        assert!(!keep(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n"
        ));
        assert!(!keep(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: CLOSE\r\n\r\n"
        ));
        assert!(keep(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"
        ));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!keep(
            "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
        ));
    }

    #[test]
    fn head_boundaries() {
        assert_eq!(ok("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").target, "/");
        assert_eq!(
            bad("GET / HTTP/1.1\r\nHost: a\r\n"),
            "incomplete request head"
        );
        assert_eq!(
            bad("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET"),
            "bytes after the request head"
        );
        assert_eq!(bad(""), "incomplete request head");
    }

    #[test]
    fn scan_resumes_where_it_stopped() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut scanned = 0;
        for end in 0..head.len() {
            assert_eq!(scan_head(&head[..end], &mut scanned).unwrap(), None);
            assert!(scanned <= end);
        }
        assert_eq!(scan_head(head, &mut scanned).unwrap(), Some(head.len()));
    }

    fn token() -> impl Strategy<Value = String> {
        "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}"
    }

    /// A field value as httparse hands it on: no whitespace at either end.
    fn field_value() -> impl Strategy<Value = Vec<u8>> {
        let byte =
            prop_oneof![8 => 0x21u8..=0x7e, 1 => 0x80u8..=0xff, 1 => Just(b' '), 1 => Just(b'\t')];
        proptest::collection::vec(byte, 0..40).prop_map(|v| trim_ows(&v).to_vec())
    }

    fn field_name() -> impl Strategy<Value = String> {
        token().prop_filter(
            "framing and connection fields are set by the test",
            |name| {
                ![
                    "host",
                    "content-length",
                    "transfer-encoding",
                    "expect",
                    "connection",
                ]
                .contains(&name.to_ascii_lowercase().as_str())
            },
        )
    }

    proptest! {
        #[test]
        fn parse_head_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_head(&bytes);
        }

        #[test]
        fn parse_head_never_panics_on_near_misses(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("GET ".to_string()), Just("/ ".to_string()), Just("HTTP/1.1".to_string()),
                    Just("\r\n".to_string()), Just("\n".to_string()), Just("\r".to_string()),
                    Just(": ".to_string()), Just("Host".to_string()), Just("Content-Length".to_string()),
                    Just("Transfer-Encoding".to_string()), Just("chunked".to_string()),
                    Just(" ".to_string()), Just(",".to_string()), "[0-9]{1,21}", "[ -~]{0,10}",
                ],
                0..40,
            )
        ) {
            let mut text = parts.concat();
            text.push_str("\r\n\r\n");
            let _ = parse_head(text.as_bytes());
        }

        #[test]
        fn scanning_in_pieces_agrees_with_one_scan(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), any::<u8>()], 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..8),
        ) {
            let whole = scan_head(&bytes, &mut 0).ok();
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < bytes.len()).collect();
            cuts.sort_unstable();
            cuts.push(bytes.len());
            let mut scanned = 0;
            let mut pieces = None;
            for end in cuts {
                match scan_head(&bytes[..end], &mut scanned) {
                    Ok(None) => continue,
                    result => { pieces = result.ok(); break; }
                }
            }
            prop_assert_eq!(whole.unwrap_or(None), pieces.unwrap_or(None));
        }

        #[test]
        fn valid_requests_round_trip(
            method in token().prop_filter("no body rules for these", |m| m != "HEAD" && m != "CONNECT"),
            target in prop_oneof!["/[!-\"$-~]{0,200}", "\\*", "http://[a-z]{1,10}/[!-\"$-~]{0,50}"],
            http10 in any::<bool>(),
            host in "[a-z0-9.-]{0,20}(:[0-9]{1,5})?",
            fields in proptest::collection::vec((field_name(), field_value()), 0..20),
            length in proptest::option::of(any::<u64>().prop_map(|n| n % 10_000_000_000_000_000_000)),
        ) {
            let mut text = format!("{method} {target} HTTP/1.{}\r\nHost: {host}\r\n", if http10 { 0 } else { 1 })
                .into_bytes();
            let mut expected = HeaderMap::new();
            expected.append(HOST, HeaderValue::from_str(&host).unwrap());
            for (name, value) in &fields {
                text.extend_from_slice(format!("{name}: ").as_bytes());
                text.extend_from_slice(value);
                text.extend_from_slice(b"\r\n");
                expected.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value).unwrap());
            }
            if let Some(n) = length {
                text.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
                expected.append(CONTENT_LENGTH, n.into());
            }
            text.extend_from_slice(b"\r\n");

            let head = parse_head(&text).map_err(|err| TestCaseError::fail(err.to_string()))?;
            prop_assert_eq!(head.method.as_str(), method.as_str());
            prop_assert_eq!(&head.target, &target);
            prop_assert_eq!(head.version, if http10 { Version::Http10 } else { Version::Http11 });
            prop_assert_eq!(&head.headers, &expected);
            prop_assert_eq!(head.framing, length.map_or(Framing::None, Framing::Length));
            prop_assert_eq!(head.keep_alive, !http10);
        }
    }
}
