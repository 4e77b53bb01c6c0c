//! Who the client is, when something stands in front of us: the PROXY protocol (HAProxy's,
//! v1 text and v2 binary, which cloud L4 balancers speak too) at the start of a connection,
//! and `X-Forwarded-For` on the requests of a trusted proxy. Both are believed only from a
//! `--trusted-proxy` peer: anyone else could claim to be anyone.
//!
//! With `--proxy-protocol`, the acceptor closes a connection from an untrusted peer
//! (`Trusted::contains`), and `http1/conn.rs` reads the header on the event side before
//! anything else (before a TLS handshake too), as it reads a request head: `parse` says
//! whether the bytes so far hold a whole header, and the address it carries becomes the
//! connection's peer, for everything (logs, X-Forwarded-For, ip-hash, limits). A missing
//! or malformed header closes the connection, counted in `Refusals`.
//!
//! The header itself is parsed by `ppp` (plain functions over bytes, no IO and no async,
//! the parser several Rust proxies use); `parse` only adds what a streaming reader needs
//! that `ppp` leaves to its caller: a header's framing (ppp is given a whole header, never
//! a piece), bytes that cannot start a header refused at once rather than waited on, and
//! a bound on a header's size.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use ipnet::IpNet;
use ppp::{HeaderResult, v1, v2};

/// The v2 header's fixed start.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 header's.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header (the protocol's own bound), CRLF included.
const V1_MAX: usize = 107;
/// The longest header accepted: a v2 header carries TLVs we do not read, and more than
/// this of them is no header we want.
pub const MAX_HEADER: usize = 4096;

/// `--trusted-proxy`: the peers whose word on the client is believed.
#[derive(Clone, Debug, Default)]
pub struct Trusted(Vec<IpNet>);

impl Trusted {
    pub fn new(nets: Vec<IpNet>) -> Trusted {
        Trusted(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client of a request from `peer`: with `peer` trusted, the rightmost address of
    /// `X-Forwarded-For` that is not a trusted proxy itself (each trusted hop appended
    /// the one before it); otherwise, or when the field says nothing usable, `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.0.is_empty() || !self.contains(peer) {
            return peer;
        }
        let mut chain: Vec<&str> = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            chain.extend(value.split(','));
        }
        for hop in chain.iter().rev() {
            let Some(ip) = hop_address(hop.trim()) else {
                // A hop we cannot read: what is left of it cannot be vouched for.
                return peer;
            };
            if !self.contains(ip) {
                return ip;
            }
        }
        peer
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One X-Forwarded-For entry: an address, maybe with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:80`).
fn hop_address(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>()
        .ok()
        .map(|addr| canonical(addr.ip()))
}

/// What the bytes at the start of a connection are, as far as they go.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A header may still be coming.
    Incomplete,
    /// A whole header of `len` bytes; `client`: the source it carries (`None` for a
    /// LOCAL or UNKNOWN header: a health check of the proxy itself, whose peer stays).
    Header {
        len: usize,
        client: Option<SocketAddr>,
    },
    /// No header, or a malformed one.
    Malformed,
}

/// Looks for a PROXY header at the start of `bytes` (see the module docs). ppp is
/// handed a header only once it is whole by its own framing (v1: a line ending in CRLF,
/// at most 107 bytes; v2: 16 bytes and the length they announce), so that a header that
/// arrives in pieces is never judged on a piece.
pub fn parse(bytes: &[u8]) -> Parsed {
    let could_be = |prefix: &[u8]| {
        let n = bytes.len().min(prefix.len());
        bytes[..n] == prefix[..n]
    };
    let whole = if could_be(V2_SIGNATURE) {
        if bytes.len() < 16 {
            return Parsed::Incomplete;
        }
        // Bytes 14 and 15: the length of what follows the fixed 16.
        let len = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
        if len > MAX_HEADER {
            return Parsed::Malformed;
        }
        match bytes.get(..len) {
            Some(whole) => whole,
            None => return Parsed::Incomplete,
        }
    } else if could_be(V1_PREFIX) {
        let line = &bytes[..bytes.len().min(V1_MAX)];
        match line.windows(2).position(|w| w == b"\r\n") {
            Some(at) => &bytes[..at + 2],
            None if bytes.len() >= V1_MAX => return Parsed::Malformed,
            None => return Parsed::Incomplete,
        }
    } else {
        return Parsed::Malformed;
    };
    match HeaderResult::parse(whole) {
        HeaderResult::V1(Ok(header)) if header.header.len() == whole.len() => Parsed::Header {
            len: whole.len(),
            client: match header.addresses {
                v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
                v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(header)) if header.len() == whole.len() => Parsed::Header {
            len: whole.len(),
            client: match (header.command, header.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some((a.source_address, a.source_port).into())
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some((a.source_address, a.source_port).into())
                }
                _ => None,
            },
        },
        _ => Parsed::Malformed,
    }
}

/// The PROXY v2 header that starts a connection to a `,send-proxy` backend at `to`:
/// PROXY with `client` as the source, or LOCAL without one (our own health checks). An
/// IPv4 address facing an IPv6 one is written IPv4-mapped, since v2 carries one family.
pub fn v2_header(client: Option<SocketAddr>, to: SocketAddr) -> Vec<u8> {
    let both = |client: SocketAddr| match (client, to) {
        (SocketAddr::V4(c), SocketAddr::V6(_)) => (
            SocketAddr::new(c.ip().to_ipv6_mapped().into(), c.port()),
            to,
        ),
        (SocketAddr::V6(_), SocketAddr::V4(t)) => (
            client,
            SocketAddr::new(t.ip().to_ipv6_mapped().into(), t.port()),
        ),
        _ => (client, to),
    };
    let header = match client {
        Some(client) => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            both(client),
        ),
        None => v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        ),
    };
    // Building into a Vec of a header this small cannot fail.
    header.build().expect("a PROXY v2 header")
}

/// Connections closed for their PROXY header: from an untrusted peer, or with a missing
/// or malformed header. Written by the acceptor (untrusted) and by whichever side reads
/// the header (`ClientConn`), read by the admin interface.
#[derive(Debug, Default)]
pub struct Refusals {
    untrusted: AtomicU64,
    malformed: AtomicU64,
}

impl Refusals {
    pub fn record_untrusted(&self) {
        // Relaxed: counters, read on their own.
        self.untrusted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// (untrusted, malformed).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.untrusted.load(Ordering::Relaxed),
            self.malformed.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> Trusted {
        Trusted::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    #[test]
    fn v1_and_v2_headers_give_the_client_and_their_length() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(v1),
            Parsed::Header {
                len: 41,
                client: Some("192.0.2.7:51234".parse().unwrap())
            }
        );
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n";
        assert!(matches!(parse(v6), Parsed::Header { client: Some(c), .. } if c.port() == 51234));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                client: None
            }
        );
        let src: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let mut v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap();
        let len = v2.len();
        v2.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&v2),
            Parsed::Header {
                len,
                client: Some(src)
            }
        );
    }

    #[test]
    fn the_header_sent_to_a_backend_names_the_client_or_says_local() {
        let to: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let client: SocketAddr = "192.0.2.5:4000".parse().unwrap();
        let header = v2_header(Some(client), to);
        assert_eq!(
            parse(&header),
            Parsed::Header {
                len: header.len(),
                client: Some(client)
            }
        );
        // One family for both: an IPv6 client facing an IPv4 backend maps the backend.
        let v6: SocketAddr = "[2001:db8::5]:4000".parse().unwrap();
        let header = v2_header(Some(v6), to);
        assert!(matches!(parse(&header), Parsed::Header { client: Some(c), .. } if c == v6));
        let local = v2_header(None, to);
        assert_eq!(
            parse(&local),
            Parsed::Header {
                len: local.len(),
                client: None
            }
        );
    }

    #[test]
    fn a_header_in_pieces_is_incomplete_until_whole() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\n";
        for cut in 0..v1.len() {
            assert_eq!(parse(&v1[..cut]), Parsed::Incomplete, "{cut} bytes");
        }
    }

    #[test]
    fn no_header_or_a_bad_one_is_refused_at_once() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Malformed);
        assert_eq!(parse(b"\x16\x03\x01\x02"), Parsed::Malformed);
        assert_eq!(parse(b"PROXY TCP4 nonsense here\r\n"), Parsed::Malformed);
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; MAX_HEADER]].concat();
        assert_eq!(parse(&endless), Parsed::Malformed);
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_from_a_trusted_peer() {
        let t = trusted(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            "203.0.113.5, 198.51.100.1".parse().unwrap(),
        );
        h.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            t.client(proxy, &h),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // From an untrusted peer the field is not believed.
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(t.client(stranger, &h), stranger);
        // A garbled hop stops the walk at the peer.
        let mut bad = HeaderMap::new();
        bad.append("x-forwarded-for", "203.0.113.5, nonsense".parse().unwrap());
        assert_eq!(t.client(proxy, &bad), proxy);
        // Ports and mapped addresses are read too.
        let mut ported = HeaderMap::new();
        ported.append("x-forwarded-for", "[2001:db8::5]:443".parse().unwrap());
        assert_eq!(
            t.client(proxy, &ported),
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
        assert!(t.contains("::ffff:10.0.0.9".parse().unwrap()));
    }
}
