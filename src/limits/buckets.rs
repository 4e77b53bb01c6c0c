//! The rate table: one token bucket per client for `--rate-limit`, in a table of fixed
//! size that no number of distinct clients can grow. `Limits::allow` (limits.rs) takes
//! a token from it for every request.
//!
//! The table has `ENTRIES` places: `SHARDS` shards, each one lock over `SETS` sets of
//! `WAYS` places. A client's key hashes to one set (SipHash with a key drawn at start,
//! so that nobody can pick addresses that crowd one set), whose places are the only ones
//! it may take. A client not found there takes the place whose bucket would be fullest
//! now, and among those the least recently used: a full bucket says no more than no
//! entry at all, so its client loses nothing by being forgotten, while a client being
//! limited (its bucket low) is the last to go. A flood of new addresses then evicts its
//! own entries first; eviction can at worst hand a client that was forgotten a fresh
//! full bucket, never refuse a request it did not earn.
//!
//! Why not the alternatives: an LRU over the whole table needs one list, under one lock,
//! changed on every request; a count-min sketch counts events in shared cells, so it
//! cannot hold a bucket's level and time, and its over-counts would refuse innocent
//! clients that share cells with a heavy one.

use std::cmp::Reverse;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};

use super::ClientKey;
use crate::config::RateLimit;

/// The places a client may take: one set.
const WAYS: usize = 8;
/// Sets under one lock.
const SETS: usize = 128;
/// Locks: more than the cores of most machines that run us, so that two workers seldom
/// wait for each other.
const SHARDS: usize = 64;
/// Clients the table remembers at most.
pub const ENTRIES: usize = WAYS * SETS * SHARDS;

/// The refill rule of `--rate-limit` in integer units, so that no rate loses to
/// rounding: one token is `token` units (the period in milliseconds), each millisecond
/// adds `per_ms` (the requests per period), and a bucket holds at most `cap` (the burst
/// in units).
#[derive(Clone, Copy, Debug)]
pub struct Refill {
    per_ms: u64,
    token: u64,
    cap: u64,
}

/// One client's bucket: its level in units when it was last used, at `at` (clock.rs
/// milliseconds).
#[derive(Clone, Copy, Debug, Default)]
pub struct Bucket {
    units: u64,
    at: u64,
}

impl Refill {
    pub fn new(limit: &RateLimit) -> Refill {
        let token = u64::from(limit.period_ms.get());
        Refill {
            per_ms: u64::from(limit.requests.get()),
            token,
            cap: token * u64::from(limit.burst.get()),
        }
    }

    /// A bucket for a client not seen before: full.
    pub fn full(&self, now: u64) -> Bucket {
        Bucket {
            units: self.cap,
            at: now,
        }
    }

    /// The level of `bucket` at `now`, refilled since its last use. A `now` older than
    /// its last use (two workers read the clock, then the later one took the lock first)
    /// adds nothing.
    fn level(&self, bucket: Bucket, now: u64) -> u64 {
        let gained = now.saturating_sub(bucket.at).saturating_mul(self.per_ms);
        bucket.units.saturating_add(gained).min(self.cap)
    }

    /// Takes one token from `bucket` at `now`; without a token, takes nothing and says
    /// how many milliseconds until there is one.
    pub fn take(&self, bucket: &mut Bucket, now: u64) -> Result<(), u64> {
        let level = self.level(*bucket, now);
        bucket.at = bucket.at.max(now);
        match level.checked_sub(self.token) {
            Some(left) => {
                bucket.units = left;
                Ok(())
            }
            None => {
                bucket.units = level;
                Err((self.token - level).div_ceil(self.per_ms))
            }
        }
    }
}

/// `Retry-After` for a wait of `wait_ms`: whole seconds, rounded up, at least 1.
pub fn retry_after(wait_ms: u64) -> u32 {
    u32::try_from(wait_ms.div_ceil(1000).max(1)).unwrap_or(u32::MAX)
}

/// One place: a client and its bucket, or nobody.
#[derive(Clone, Copy, Default)]
struct Entry {
    key: Option<ClientKey>,
    bucket: Bucket,
}

/// One lock and its sets, on cache lines of its own: workers taking tokens in two
/// shards do not contend for one line.
#[repr(align(64))]
struct Shard(Mutex<[Entry; SETS * WAYS]>);

/// The buckets of every client seen lately, in a fixed `ENTRIES` places.
pub struct Table {
    refill: Refill,
    hasher: RandomState,
    shards: Box<[Shard]>,
}

impl Table {
    /// The whole table, allocated once: `bytes()` of it.
    pub fn new(limit: &RateLimit) -> Table {
        Table {
            refill: Refill::new(limit),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new([Entry::default(); SETS * WAYS])))
                .collect(),
        }
    }

    /// The table's memory, whatever the number of clients: the places and their locks.
    pub fn bytes(&self) -> usize {
        size_of::<Table>() + size_of_val(&*self.shards)
    }

    /// Takes one token for `key` at `now` (clock.rs milliseconds); without one, how many
    /// milliseconds until there is. The lock is held for the arithmetic only: `now` is
    /// read before.
    pub fn take(&self, key: ClientKey, now: u64) -> Result<(), u64> {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[hash as usize % SHARDS];
        let set = (hash >> 32) as usize % SETS;
        // A panic under this lock cannot leave a place half written (they are `Copy`
        // values, written whole): a poisoned lock is still good.
        let mut places = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = self.place(&mut places[set * WAYS..][..WAYS], key, now);
        self.refill.take(&mut entry.bucket, now)
    }

    /// `key`'s place in its set: the one it has, or the one it takes (see the module
    /// docs), with a full bucket.
    fn place<'s>(&self, set: &'s mut [Entry], key: ClientKey, now: u64) -> &'s mut Entry {
        if let Some(i) = set.iter().position(|e| e.key == Some(key)) {
            return &mut set[i];
        }
        let victim = set
            .iter_mut()
            .max_by_key(|e| match e.key {
                None => (u64::MAX, Reverse(0)),
                Some(_) => (self.refill.level(e.bucket, now), Reverse(e.bucket.at)),
            })
            .expect("a set has places");
        *victim = Entry {
            key: Some(key),
            bucket: self.refill.full(now),
        };
        victim
    }

    /// Places taken now.
    #[cfg(test)]
    fn occupied(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.0.lock()
                    .unwrap()
                    .iter()
                    .filter(|e| e.key.is_some())
                    .count()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::num::NonZeroU32;

    use super::*;

    fn limit(requests: u32, period_ms: u32, burst: u32) -> RateLimit {
        RateLimit {
            requests: NonZeroU32::new(requests).unwrap(),
            period_ms: NonZeroU32::new(period_ms).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn key(n: u32) -> ClientKey {
        ClientKey::of(IpAddr::V4(Ipv4Addr::from(n)))
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_one_token_per_interval() {
        // 10/s with a burst of 5: five at once, then one every 100 ms.
        let refill = Refill::new(&limit(10, 1000, 5));
        let mut b = refill.full(1000);
        for _ in 0..5 {
            assert_eq!(refill.take(&mut b, 1000), Ok(()));
        }
        assert_eq!(refill.take(&mut b, 1000), Err(100));
        assert_eq!(refill.take(&mut b, 1040), Err(60));
        assert_eq!(refill.take(&mut b, 1100), Ok(()));
        assert_eq!(refill.take(&mut b, 1100), Err(100));
        // A long quiet spell fills it to the burst, not beyond.
        let mut taken = 0;
        while refill.take(&mut b, 60_000).is_ok() {
            taken += 1;
        }
        assert_eq!(taken, 5);
    }

    #[test]
    fn slow_rates_lose_nothing_to_rounding() {
        // 6000/m is 100/s: a token every 10 ms.
        let refill = Refill::new(&limit(6000, 60_000, 1));
        let mut b = refill.full(1);
        assert_eq!(refill.take(&mut b, 1), Ok(()));
        assert_eq!(refill.take(&mut b, 1), Err(10));
        assert_eq!(refill.take(&mut b, 11), Ok(()));
        // 1/h: the next token in an hour, to the millisecond.
        let refill = Refill::new(&limit(1, 3_600_000, 1));
        let mut b = refill.full(1);
        assert_eq!(refill.take(&mut b, 1), Ok(()));
        assert_eq!(refill.take(&mut b, 1_800_001), Err(1_800_000));
        assert_eq!(refill.take(&mut b, 3_600_001), Ok(()));
    }

    #[test]
    fn a_clock_read_before_the_last_use_adds_nothing() {
        let refill = Refill::new(&limit(10, 1000, 1));
        let mut b = refill.full(500);
        assert_eq!(refill.take(&mut b, 500), Ok(()));
        assert_eq!(refill.take(&mut b, 450), Err(100));
        assert_eq!(refill.take(&mut b, 600), Ok(()));
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        assert_eq!(retry_after(1), 1);
        assert_eq!(retry_after(1000), 1);
        assert_eq!(retry_after(1001), 2);
        assert_eq!(retry_after(3_600_000), 3600);
    }

    #[test]
    fn a_hundred_thousand_addresses_keep_the_table_at_its_size() {
        let table = Table::new(&limit(10, 1000, 5));
        let bytes = table.bytes();
        // The README's bound: 65,536 places of 32 bytes, 64 locks on cache lines of
        // their own (2,101,304 bytes on x86-64 Linux).
        assert_eq!(size_of::<Entry>(), 32);
        assert!(bytes <= 2 * 1024 * 1024 + 8192, "{bytes}");
        for n in 0..100_000 {
            let _ = table.take(key(0x0a00_0000 + n), 1 + u64::from(n / 1000));
        }
        // Some sets got fewer than WAYS of them; none holds more.
        let occupied = table.occupied();
        assert!(
            occupied > ENTRIES * 9 / 10 && occupied <= ENTRIES,
            "{occupied}"
        );
        assert_eq!(table.bytes(), bytes);
    }

    #[test]
    fn a_client_being_limited_outlasts_a_flood_of_new_addresses() {
        let table = Table::new(&limit(10, 1000, 5));
        let heavy = key(0xc000_0201);
        while table.take(heavy, 1).is_ok() {}
        for n in 0..100_000 {
            let _ = table.take(key(0x0a00_0000 + n), 1);
        }
        // Still remembered as empty: no fresh burst for it.
        assert_eq!(table.take(heavy, 1), Err(100));
    }

    #[test]
    fn a_new_client_takes_the_fullest_place_then_the_least_recently_used() {
        let table = Table::new(&limit(10, 1000, 2));
        let refill = table.refill;
        let mut set = [Entry::default(); WAYS];
        for (i, place) in set.iter_mut().enumerate() {
            let mut bucket = refill.full(1);
            // Places 0..4 used once (half full), 4..8 emptied.
            let uses = if i < 4 { 1 } else { 2 };
            for _ in 0..uses {
                refill.take(&mut bucket, 1 + i as u64).unwrap();
            }
            *place = Entry {
                key: Some(key(i as u32)),
                bucket,
            };
        }
        let arrive = |set: &mut [Entry], n: u32, now: u64| {
            let entry = table.place(set, key(n), now);
            refill.take(&mut entry.bucket, now).unwrap();
        };
        // At 5 the half-full places are the fullest, place 0 (used at 1) first of all.
        arrive(&mut set, 100, 5);
        assert_eq!(set[0].key, Some(key(100)));
        arrive(&mut set, 101, 5);
        assert_eq!(set[1].key, Some(key(101)));
        // Much later every bucket is full again: the least recently used goes (used at 3).
        arrive(&mut set, 102, 10_000);
        assert_eq!(set[2].key, Some(key(102)));
        // A client it has keeps its place.
        arrive(&mut set, 6, 10_000);
        assert_eq!(set[6].key, Some(key(6)));
    }
}
