//! Consistent hashing: `hash` and `ip-hash`. A request's key (client address, a header,
//! a cookie, the path) is hashed to a point on a ring; the request goes to the backend
//! that owns the next point clockwise. Each backend owns `POINTS_PER_WEIGHT × weight`
//! points spread around the ring, so keys spread by weight, and removing one backend
//! moves only the keys that were on its points (1/n of them), each to the backend that
//! owns the next point. Walking on from the key's point gives the fallback order for
//! free: the next backend is where the key would go if the first were removed.
//!
//! Why a ring and not Maglev: Maglev's lookup table is O(1) instead of a binary search,
//! and spreads keys more evenly, but removing a backend moves a few per cent more keys
//! than its own, and its table has no natural "next backend" for the fallback order and
//! for bounded load. The ring does both with one walk, which is what HAProxy's bounded
//! load does too.
//!
//! Bounded load (`--hash-balance-factor c`, Mirrokni, Thorup and Zadimoghaddam, 2016;
//! HAProxy's `hash-balance-factor`): a backend may take the request only if it has fewer
//! than `ceil(c × (requests in flight + 1) × its weight ÷ total weight)` in flight;
//! otherwise the walk goes on. No backend then carries more than c times its share, and
//! a hot key spills over to its next backends instead of melting one.
//!
//! The ring depends only on the backends' addresses and weights, and the hash is xxh3
//! (a fixed, published algorithm: same output on every platform, process and Rust
//! version, unlike std's `DefaultHasher`), so two instances with the same backends send
//! each key to the same backend, whatever order the backends were listed in.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderName;
use http::header::COOKIE;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::{Backend, PickContext, common_divisor};
use crate::config::HashKey;

/// Points on the ring per unit of weight (weights are divided by their common divisor
/// first). With 160, a backend's share of the keys is within about ±8 % (one standard
/// deviation) of its weight's share; more points even this out further at the price of
/// memory and a slightly longer binary search.
pub const POINTS_PER_WEIGHT: u64 = 160;

/// At most this many points in all (4 MiB, built in a few milliseconds): big, unequal
/// weights are scaled down to fit.
const MAX_POINTS: u64 = 1 << 18;

/// The ring: points sorted by hash, each owned by one backend.
pub struct Ring {
    hashes: Vec<u64>,
    owners: Vec<u32>,
    /// For each point, how many points back the previous point of the same owner is
    /// (the ring's length if it has only one): a walk knows in O(1) whether it has met
    /// a backend already, without remembering which ones it met.
    gaps: Vec<u32>,
}

impl Ring {
    /// A ring for backends at `addrs` with `weights` (both non-empty, same length).
    pub fn new(addrs: &[SocketAddr], weights: &[u32]) -> Ring {
        let divisor = common_divisor(weights);
        let wanted: Vec<u64> = weights
            .iter()
            .map(|&w| POINTS_PER_WEIGHT * u64::from(w.max(1) / divisor))
            .collect();
        let total: u64 = wanted.iter().sum();
        let mut points: Vec<(u64, SocketAddr, u32)> = Vec::new();
        for (owner, (addr, &want)) in addrs.iter().zip(&wanted).enumerate() {
            let count = if total > MAX_POINTS {
                (want * MAX_POINTS / total).max(1)
            } else {
                want
            };
            // The address as text, e.g. "10.0.0.7:8080": what every instance agrees on.
            let name = addr.to_string();
            points.extend(
                (0..count).map(|v| (xxh3_64_with_seed(name.as_bytes(), v), *addr, owner as u32)),
            );
        }
        // Equal hashes (rare) are ordered by address, not by listing order.
        points.sort_unstable();
        let len = points.len();
        let owners: Vec<u32> = points.iter().map(|p| p.2).collect();
        let mut gaps = vec![len as u32; len];
        let mut last_seen = vec![usize::MAX; addrs.len()];
        // Two laps, so that the first points see their owner's last point before them.
        for step in 0..2 * len {
            let i = step % len;
            let owner = owners[i] as usize;
            if step >= len && last_seen[owner] != usize::MAX {
                gaps[i] = (step - last_seen[owner]) as u32;
            }
            last_seen[owner] = step;
        }
        Ring {
            hashes: points.iter().map(|p| p.0).collect(),
            owners,
            gaps,
        }
    }

    /// The distinct backends in ring order, from the first point at or after `hash`.
    pub fn walk(&self, hash: u64) -> RingWalk<'_> {
        let start = self.hashes.partition_point(|&h| h < hash) % self.hashes.len();
        RingWalk {
            ring: self,
            start,
            offset: 0,
        }
    }
}

/// Backends in ring order, each once.
#[derive(Clone)]
pub struct RingWalk<'a> {
    ring: &'a Ring,
    start: usize,
    /// Points walked so far.
    offset: usize,
}

impl Iterator for RingWalk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let len = self.ring.owners.len();
        while self.offset < len {
            let i = (self.start + self.offset) % len;
            let walked = self.offset;
            self.offset += 1;
            // Met before in this walk if its previous point lies within the walk.
            if self.ring.gaps[i] as usize > walked {
                return Some(self.ring.owners[i] as usize);
            }
        }
        None
    }
}

/// What a request is hashed on.
pub enum Key {
    /// `ip-hash`: the client's network as nginx's `ip_hash` takes it: the first three
    /// bytes of an IPv4 address (clients behind one /24 stick together), a whole IPv6
    /// address.
    ClientNetwork,
    /// The client's whole address.
    ClientIp,
    Header(HeaderName),
    Cookie(String),
    /// The path, without the query.
    Path,
}

impl From<&HashKey> for Key {
    fn from(key: &HashKey) -> Key {
        match key {
            HashKey::Ip => Key::ClientIp,
            HashKey::Header(name) => Key::Header(name.clone()),
            HashKey::Cookie(name) => Key::Cookie(name.clone()),
            HashKey::Path => Key::Path,
        }
    }
}

impl Key {
    /// The key's hash; `None` when the request has no such key (no header, no cookie).
    pub fn hash(&self, ctx: &PickContext<'_>) -> Option<u64> {
        let ip = ctx.client.to_canonical();
        let bytes: &[u8] = match self {
            Key::ClientNetwork | Key::ClientIp => {
                let (octets, len) = match ip {
                    IpAddr::V4(v4) => {
                        let mut o = [0; 16];
                        o[..4].copy_from_slice(&v4.octets());
                        let len = if matches!(self, Key::ClientNetwork) {
                            3
                        } else {
                            4
                        };
                        (o, len)
                    }
                    IpAddr::V6(v6) => (v6.octets(), 16),
                };
                return Some(xxh3_64(&octets[..len]));
            }
            Key::Header(name) => ctx.headers.get(name)?.as_bytes(),
            Key::Cookie(name) => cookie(ctx, name)?,
            Key::Path => ctx.path.split('?').next().unwrap_or_default().as_bytes(),
        };
        (!bytes.is_empty()).then(|| xxh3_64(bytes))
    }
}

/// The value of the cookie `name` in the request's `Cookie` fields (RFC 6265 §4.2.1).
fn cookie<'a>(ctx: &PickContext<'a>, name: &str) -> Option<&'a [u8]> {
    ctx.headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

pub struct Hash {
    ring: Ring,
    key: Key,
    balance_factor: Option<f64>,
    /// Numbers requests without a key, which are spread over the ring like HAProxy's
    /// round-robin fallback.
    unkeyed: AtomicU64,
}

impl Hash {
    pub fn new(ring: Ring, key: Key, balance_factor: Option<f64>) -> Hash {
        Hash {
            ring,
            key,
            balance_factor,
            unkeyed: AtomicU64::new(0),
        }
    }

    /// The pick, and the walk from the key's point for the fallback order.
    pub fn pick<'a>(
        &'a self,
        backends: &[Backend],
        ctx: &PickContext<'_>,
    ) -> Option<(usize, RingWalk<'a>)> {
        let hash = self.key.hash(ctx).unwrap_or_else(|| {
            // Relaxed: each request without a key only needs a different number.
            let turn = self.unkeyed.fetch_add(1, Ordering::Relaxed);
            xxh3_64(&turn.to_le_bytes())
        });
        let walk = self.ring.walk(hash);
        let pick = match self.balance_factor {
            None => walk.clone().find(|&i| backends[i].is_available()),
            Some(factor) => bounded(backends, walk.clone(), factor),
        }?;
        Some((pick, walk))
    }
}

/// The first backend along `walk` that is available and under its bound; the first
/// available one if every one is over (which concurrent picks can make happen).
fn bounded(backends: &[Backend], walk: RingWalk<'_>, factor: f64) -> Option<usize> {
    let (mut in_flight, mut weight) = (0u64, 0u64);
    for b in backends.iter().filter(|b| b.is_available()) {
        in_flight += b.in_flight() as u64;
        weight += u64::from(b.weight);
    }
    if weight == 0 {
        return None;
    }
    // This request counts too: with nothing in flight, the first backend takes it.
    let share = factor * (in_flight + 1) as f64 / weight as f64;
    let mut first = None;
    for i in walk {
        let b = &backends[i];
        if !b.is_available() {
            continue;
        }
        first.get_or_insert(i);
        let bound = (share * f64::from(b.weight)).ceil();
        if ((b.in_flight() + 1) as f64) <= bound {
            return Some(i);
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::super::testing::{addrs, backends};
    use super::*;

    fn ctx<'a>(headers: &'a HeaderMap, path: &'a str) -> PickContext<'a> {
        PickContext {
            client: "127.0.0.1".parse().unwrap(),
            path,
            headers,
        }
    }

    fn owner(ring: &Ring, key: &str) -> usize {
        ring.walk(xxh3_64(key.as_bytes())).next().unwrap()
    }

    const KEYS: usize = 100_000;

    #[test]
    fn removing_one_backend_moves_only_its_keys() {
        for n in [3, 5, 10] {
            let all = addrs(n);
            let ring = Ring::new(&all, &vec![1; n]);
            let mut worst = 0.0f64;
            for gone in 0..n {
                let rest: Vec<_> = (0..n).filter(|&i| i != gone).map(|i| all[i]).collect();
                let smaller = Ring::new(&rest, &vec![1; n - 1]);
                let mut moved = 0;
                for k in 0..KEYS {
                    let key = format!("key-{k}");
                    let before = all[owner(&ring, &key)];
                    let after = rest[owner(&smaller, &key)];
                    if before != after {
                        // Only keys of the removed backend move.
                        assert_eq!(
                            before, all[gone],
                            "key {key} moved from a backend still there"
                        );
                        moved += 1;
                    }
                }
                worst = worst.max(moved as f64 / KEYS as f64 * n as f64);
            }
            // Key movement, as a multiple of the ideal 1/n.
            assert!(worst <= 1.3, "n = {n}: up to {worst:.3}/n keys moved");
        }
    }

    #[test]
    fn keys_spread_by_weight() {
        let weights = [1, 1, 2, 4];
        let ring = Ring::new(&addrs(4), &weights);
        let mut counts = [0usize; 4];
        for k in 0..KEYS {
            counts[owner(&ring, &format!("key-{k}"))] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let expected = KEYS as f64 * f64::from(w) / 8.0;
            let ratio = counts[i] as f64 / expected;
            assert!((0.8..=1.2).contains(&ratio), "backend {i}: {counts:?}");
        }
    }

    #[test]
    fn big_unequal_weights_are_scaled_down_and_still_honoured() {
        let weights = [1000, 997, 1];
        let ring = Ring::new(&addrs(3), &weights);
        assert!(ring.hashes.len() as u64 <= MAX_POINTS + 3);
        let mut counts = [0usize; 3];
        for k in 0..KEYS {
            counts[owner(&ring, &format!("key-{k}"))] += 1;
        }
        assert!(counts[2] > 0 && counts[2] < KEYS / 200, "{counts:?}");
        assert!(counts[0].abs_diff(counts[1]) < KEYS / 20, "{counts:?}");
    }

    #[test]
    fn listing_order_does_not_matter() {
        let a = addrs(5);
        let mut b = a.clone();
        b.reverse();
        let (ra, rb) = (Ring::new(&a, &[1; 5]), Ring::new(&b, &[1; 5]));
        for k in 0..1000 {
            let key = format!("key-{k}");
            assert_eq!(a[owner(&ra, &key)], b[owner(&rb, &key)]);
        }
    }

    #[test]
    fn a_walk_meets_every_backend_once() {
        let ring = Ring::new(&addrs(7), &[1, 2, 3, 1, 1, 5, 1]);
        for k in 0..50 {
            let mut seen: Vec<usize> = ring.walk(xxh3_64(&[k])).collect();
            seen.sort();
            assert_eq!(seen, (0..7).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_hot_key_is_bounded_by_the_factor() {
        let set = backends(&[1, 1, 1, 1]);
        let ring = Ring::new(&addrs(4), &[1; 4]);
        let hash = Hash::new(ring, Key::Path, Some(1.25));
        let headers = HeaderMap::new();
        let mut held = Vec::new();
        for m in 1..=100 {
            let (i, _) = hash.pick(&set, &ctx(&headers, "/hot")).unwrap();
            held.push(set[i].start());
            // After m requests, no backend holds more than ceil(1.25 × m / 4).
            let bound = (1.25 * m as f64 / 4.0).ceil() as usize;
            let max = set.iter().map(Backend::in_flight).max().unwrap();
            assert!(max <= bound, "after {m}: {max} > {bound}");
        }
        let loads: Vec<_> = set.iter().map(Backend::in_flight).collect();
        assert!(loads.iter().all(|&l| l <= 32), "{loads:?}");
    }

    #[test]
    fn without_a_factor_a_hot_key_stays_on_one_backend() {
        let set = backends(&[1, 1, 1]);
        let hash = Hash::new(Ring::new(&addrs(3), &[1; 3]), Key::Path, None);
        let headers = HeaderMap::new();
        let first = hash.pick(&set, &ctx(&headers, "/hot?a=1")).unwrap().0;
        let _held: Vec<_> = (0..10).map(|_| set[first].start()).collect();
        for q in ["/hot", "/hot?b=2"] {
            assert_eq!(hash.pick(&set, &ctx(&headers, q)).unwrap().0, first);
        }
    }

    #[test]
    fn an_unavailable_backend_passes_its_keys_to_the_next_on_the_ring() {
        let set = backends(&[1, 1, 1]);
        let hash = Hash::new(Ring::new(&addrs(3), &[1; 3]), Key::Path, None);
        let headers = HeaderMap::new();
        let c = ctx(&headers, "/k");
        let (first, walk) = hash.pick(&set, &c).unwrap();
        let second = walk.clone().nth(1).unwrap();
        set[first].marks().mark_down();
        assert_eq!(hash.pick(&set, &c).unwrap().0, second);
        for b in &set {
            b.marks().drain();
        }
        assert!(hash.pick(&set, &c).is_none());
    }

    #[test]
    fn keys_are_read_from_the_request() {
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("alice"));
        h.append(COOKIE, HeaderValue::from_static("theme=dark; sid=abc"));
        h.append(COOKIE, HeaderValue::from_static("other=1"));
        let c = ctx(&h, "/a/b?q=1");
        let header = Key::Header(HeaderName::from_static("x-user"));
        assert_eq!(header.hash(&c), Some(xxh3_64(b"alice")));
        assert_eq!(Key::Cookie("sid".into()).hash(&c), Some(xxh3_64(b"abc")));
        assert_eq!(Key::Cookie("other".into()).hash(&c), Some(xxh3_64(b"1")));
        assert_eq!(Key::Cookie("none".into()).hash(&c), None);
        assert_eq!(Key::Path.hash(&c), Some(xxh3_64(b"/a/b")));
        assert_eq!(Key::ClientIp.hash(&c), Some(xxh3_64(&[127, 0, 0, 1])));
        assert_eq!(Key::ClientNetwork.hash(&c), Some(xxh3_64(&[127, 0, 0])));
        let empty = HeaderMap::new();
        assert_eq!(header.hash(&ctx(&empty, "/")), None);
    }

    #[test]
    fn ip_hash_groups_a_slash_24_and_unmaps_ipv4_in_ipv6() {
        let h = HeaderMap::new();
        let at = |ip: &str| PickContext {
            client: ip.parse().unwrap(),
            path: "/",
            headers: &h,
        };
        let net = Key::ClientNetwork;
        assert_eq!(net.hash(&at("10.1.2.3")), net.hash(&at("10.1.2.200")));
        assert_ne!(net.hash(&at("10.1.2.3")), net.hash(&at("10.1.3.3")));
        assert_eq!(net.hash(&at("::ffff:10.1.2.3")), net.hash(&at("10.1.2.9")));
        assert_ne!(
            Key::ClientIp.hash(&at("10.1.2.3")),
            Key::ClientIp.hash(&at("10.1.2.4"))
        );
    }

    #[test]
    fn requests_without_a_key_are_spread() {
        let set = backends(&[1, 1, 1]);
        let hash = Hash::new(
            Ring::new(&addrs(3), &[1; 3]),
            Key::Header(HeaderName::from_static("x-user")),
            None,
        );
        let headers = HeaderMap::new();
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[hash.pick(&set, &ctx(&headers, "/")).unwrap().0] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
    }
}
