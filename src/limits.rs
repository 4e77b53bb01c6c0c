//! Fair limits per client: how many connections one client may hold open
//! (`--max-connections-per-client`) and how fast it may send requests (`--rate-limit`,
//! `--rate-burst`), so that one client cannot take the whole balancer. The acceptor
//! (`server.rs`) asks `Limits::admit` for each new connection and keeps the
//! `ClientSlot` it gets in the `Client` (client.rs), which gives the place back when the
//! connection closes; `proxy.rs` asks `Limits::allow` for each request before any
//! backend hears of it. What a refused client is answered is `error.rs`'s
//! (`TooManyConnections`, `RateLimited`: 429).
//!
//! A client is a `ClientKey`: its IPv4 address, or the /64 of its IPv6 address, since
//! one host is usually given a whole /64 and could otherwise pass any limit by changing
//! addresses. The connection counts hold the clients with a connection open, no more:
//! at most `--max-connections` of them. The rate buckets live in a table of fixed size
//! (`buckets.rs`) that a flood of distinct addresses cannot grow. Neither holds its lock
//! across a syscall: the clock is read before, and the counts' memory is reserved at
//! start.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::clock;
use crate::config::Config;
use crate::error::ProxyError;

mod buckets;

/// Clients the rate table remembers at most: its fixed number of places.
pub use buckets::ENTRIES as RATE_TABLE_PLACES;
use buckets::{Table, retry_after};

/// Who a limit counts: an IPv4 address, or the /64 network of an IPv6 one. An
/// IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, a dual-stack listener's IPv4 client)
/// is its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    /// The address's first 64 bits.
    V6(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => ClientKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// The limits of every client, shared by the acceptors and the workers. Built once at
/// start (`server.rs`); a reload does not change them.
pub struct Limits {
    /// `--max-connections-per-client`; `None`: no limit.
    connections: Option<Connections>,
    /// `--rate-limit`; `None`: off.
    rate: Option<Table>,
}

/// Locks over the connection counts: a few, so that acceptors and closing connections
/// seldom wait for each other.
const COUNT_SHARDS: usize = 16;

/// The connections each client holds open, for the clients that hold any.
struct Connections {
    max: u32,
    hasher: RandomState,
    shards: Box<[Counts]>,
}

/// One lock's share of the counts, on cache lines of its own. Written only through
/// `Limits::admit` and `ClientSlot`'s drop, so a count cannot drift.
#[repr(align(64))]
struct Counts(Mutex<HashMap<ClientKey, u32>>);

impl Limits {
    /// The limits `config` asks for: tables only for those that are on.
    pub fn new(config: &Config) -> Arc<Limits> {
        let connections = config.max_connections_per_client.map(|max| {
            // Room for every connection open under --max-connections, with a margin for
            // the shards' uneven shares, so that counting never allocates.
            let share = config.max_connections.get() / COUNT_SHARDS * 5 / 4 + 1;
            Connections {
                max: max.get(),
                hasher: RandomState::new(),
                shards: (0..COUNT_SHARDS)
                    .map(|_| Counts(Mutex::new(HashMap::with_capacity(share))))
                    .collect(),
            }
        });
        Arc::new(Limits {
            connections,
            rate: config.rate_limit.as_ref().map(Table::new),
        })
    }

    /// No limits at all.
    pub fn off() -> Arc<Limits> {
        Arc::new(Limits {
            connections: None,
            rate: None,
        })
    }

    /// A place for one more connection from `ip`, held until the `ClientSlot` drops;
    /// `None` when `ip`'s client already holds `--max-connections-per-client` (the
    /// caller refuses it with `TooManyConnections`). Always a place without that limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let Some(connections) = &self.connections else {
            return Some(ClientSlot::default());
        };
        let key = ClientKey::of(ip);
        let mut counts = connections.lock(key);
        let open = counts.entry(key).or_insert(0);
        if *open >= connections.max {
            return None;
        }
        *open += 1;
        Some(ClientSlot(Some((self.clone(), key))))
    }

    /// Takes one token of `--rate-limit` for a request from `ip`; without one, the
    /// request is refused with `RateLimited`, which says when to come back.
    pub fn allow(&self, ip: IpAddr) -> Result<(), ProxyError> {
        let Some(table) = &self.rate else {
            return Ok(());
        };
        table
            .take(ClientKey::of(ip), clock::now_ms())
            .map_err(|wait_ms| ProxyError::RateLimited {
                retry_after: retry_after(wait_ms),
            })
    }

    /// The rate table's memory (fixed), if `--rate-limit` is on.
    pub fn rate_table_bytes(&self) -> Option<usize> {
        self.rate.as_ref().map(Table::bytes)
    }

    fn release(&self, key: ClientKey) {
        let Some(connections) = &self.connections else {
            return;
        };
        let mut counts = connections.lock(key);
        if let Some(open) = counts.get_mut(&key) {
            *open -= 1;
            if *open == 0 {
                // Only clients with a connection open are kept: the map stays within
                // --max-connections entries.
                counts.remove(&key);
            }
        }
    }

    /// Connections `ip`'s client holds open now.
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> u32 {
        let Some(connections) = &self.connections else {
            return 0;
        };
        let key = ClientKey::of(ip);
        connections.lock(key).get(&key).copied().unwrap_or(0)
    }
}

impl Connections {
    fn lock(&self, key: ClientKey) -> std::sync::MutexGuard<'_, HashMap<ClientKey, u32>> {
        let shard = self.hasher.hash_one(key) as usize % COUNT_SHARDS;
        // Every change under this lock is one whole insert, update or remove: a
        // poisoned lock still holds good counts.
        self.shards[shard]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection's place under `--max-connections-per-client`, kept in its `Client`
/// for the connection's life; dropping it gives the place back. Empty when that limit
/// is off (or the connection was never admitted).
#[derive(Default)]
pub struct ClientSlot(Option<(Arc<Limits>, ClientKey)>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some((limits, key)) = self.0.take() {
            limits.release(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn limits(args: &[&str]) -> Arc<Limits> {
        Limits::new(&Config::from_args(args).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_by_its_address() {
        let a = ClientKey::of(ip("2001:db8:1:2:aaaa::1"));
        assert_eq!(a, ClientKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert_ne!(a, ClientKey::of(ip("2001:db8:1:3::1")));
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(ClientKey::of(v4), ClientKey::of(mapped));
        assert_ne!(
            ClientKey::of(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            ClientKey::of(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        );
    }

    #[test]
    fn a_client_gets_its_connections_and_each_closed_one_back() {
        let limits = limits(&["--max-connections-per-client", "2"]);
        let (a, b) = (ip("127.0.0.1"), ip("2001:db8::1"));
        let first = limits.admit(a).unwrap();
        let second = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_none());
        // Another address of the same /64 is the same client; another client is not.
        let other = limits.admit(b).unwrap();
        let _same = limits.admit(ip("2001:db8::2")).unwrap();
        assert!(limits.admit(ip("2001:db8::3")).is_none());
        assert_eq!(limits.open_from(a), 2);
        drop(first);
        assert_eq!(limits.open_from(a), 1);
        let _again = limits.admit(a).unwrap();
        drop((second, other));
        assert_eq!(limits.open_from(b), 1);
    }

    #[test]
    fn without_limits_everyone_is_admitted_and_allowed() {
        let limits = Limits::off();
        let slots: Vec<_> = (0..100)
            .map(|_| limits.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(slots.len(), 100);
        assert!((0..100).all(|_| limits.allow(ip("10.0.0.1")).is_ok()));
        assert_eq!(limits.rate_table_bytes(), None);
    }

    #[test]
    fn over_the_rate_a_request_is_refused_with_when_to_come_back() {
        let limits = limits(&["--rate-limit", "1/m", "--rate-burst", "2"]);
        let a = ip("192.0.2.7");
        assert!(limits.allow(a).is_ok() && limits.allow(a).is_ok());
        match limits.allow(a) {
            Err(ProxyError::RateLimited { retry_after }) => {
                assert!((59..=60).contains(&retry_after), "{retry_after}")
            }
            other => panic!("{other:?}"),
        }
        assert!(limits.allow(ip("192.0.2.8")).is_ok());
    }
}
