//! What makes a resend safe and affordable: `Resends`, the rules of one request (an
//! idempotent method or `Idempotency-Key`, and how many resends it gets), `Replay`, the
//! request body kept as it is streamed so that it can be sent again, and `Budget`, which
//! caps resends at a fifth of the requests over a sliding window so that a sick backend
//! cannot double the load on the healthy ones (a retry storm). `proxy::forward` asks
//! `Resends` when a backend closes or resets the connection before answering
//! (`ProxyError::may_resend`).

use std::io::{self, Read};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use http::{HeaderMap, Method};

use crate::error::ProxyError;
use crate::spill::Spill;

/// A request carrying this header may be sent twice: the backend recognises the repeat
/// (IETF draft "The Idempotency-Key HTTP Header Field").
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The sliding window of the budget, in one-second buckets.
const WINDOW_SECS: u64 = 10;
/// Resends allowed per request in the window (20 %).
const RATIO: f64 = 0.2;
/// Resends allowed per second whatever the traffic, so that a quiet balancer can still
/// resend the odd request that hit a stale connection.
const MIN_PER_SEC: u64 = 3;

/// The resend rules of one request, and the resends it has used.
pub struct Resends {
    /// The request means the same when sent twice.
    safe: bool,
    /// `--retries`; `None`: one per other candidate, at least one.
    max: Option<usize>,
    done: usize,
}

impl Resends {
    /// `max`: `--retries`, as configured.
    pub fn new(method: &Method, headers: &HeaderMap, max: Option<usize>) -> Resends {
        Resends {
            safe: idempotent(method) || headers.contains_key(IDEMPOTENCY_KEY),
            max,
            done: 0,
        }
    }

    /// Whether the attempt that failed with `err` may be sent again, and if so counts
    /// the resend and takes it from `budget`: the backend gave up before answering
    /// (`ProxyError::may_resend`), the request is safe to send twice, every body byte
    /// sent so far was kept (`replayable`), resends are left (`candidates`: how many
    /// backends the request may go to) and the budget allows one at `now_ms`.
    pub fn allow(
        &mut self,
        err: &ProxyError,
        replayable: bool,
        candidates: usize,
        budget: &Budget,
        now_ms: u64,
    ) -> bool {
        let allowed = err.may_resend()
            && self.safe
            && replayable
            && self.done < self.limit(candidates)
            // Last: it takes from the budget.
            && budget.try_resend(now_ms);
        if allowed {
            self.done += 1;
        }
        allowed
    }

    /// `--retries`, or by default one resend per other candidate and at least one (an
    /// only backend gets the request again on a fresh connection).
    fn limit(&self, candidates: usize) -> usize {
        self.max.unwrap_or(candidates.saturating_sub(1).max(1))
    }
}

/// Methods that mean the same when sent twice (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Requests and resends per second over the last `WINDOW_SECS` seconds. Lock-free: a
/// bucket that belongs to an old second is reset by the first request of the new one.
#[derive(Default)]
pub struct Budget {
    buckets: [Bucket; WINDOW_SECS as usize],
}

#[derive(Default)]
struct Bucket {
    /// The second (`clock::now_ms() / 1000`) this bucket counts.
    second: AtomicU64,
    requests: AtomicU32,
    resends: AtomicU32,
}

impl Budget {
    /// Counts one request (its first attempt) at `now_ms`.
    pub fn request(&self, now_ms: u64) {
        // Relaxed: counters; only their values matter, and approximately at that.
        self.bucket(now_ms / 1000)
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one resend from the budget at `now_ms`; false if the window has used its
    /// share. Sums the window, which only happens when a resend is wanted.
    pub fn try_resend(&self, now_ms: u64) -> bool {
        let second = now_ms / 1000;
        let (mut requests, mut resends) = (0u64, 0u64);
        for b in &self.buckets {
            // Relaxed: see request. A bucket being reset at this instant is off by a few.
            let s = b.second.load(Ordering::Relaxed);
            if s + WINDOW_SECS > second && s <= second {
                requests += u64::from(b.requests.load(Ordering::Relaxed));
                resends += u64::from(b.resends.load(Ordering::Relaxed));
            }
        }
        let allowed = ((requests as f64 * RATIO) as u64).max(MIN_PER_SEC * WINDOW_SECS);
        if resends >= allowed {
            return false;
        }
        self.bucket(second).resends.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn bucket(&self, second: u64) -> &Bucket {
        let b = &self.buckets[(second % WINDOW_SECS) as usize];
        let seen = b.second.load(Ordering::Relaxed);
        if seen != second
            && b.second
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // This bucket counted a second ten seconds ago: start it again. Counts added
            // by another worker between the exchange and here are lost; a budget does
            // not need them.
            b.requests.store(0, Ordering::Relaxed);
            b.resends.store(0, Ordering::Relaxed);
        }
        b
    }
}

/// A request body as `proxy::forward` sends it: read once per attempt, from the start
/// again after `rewind` when `can_replay` says every byte is still there.
pub trait ResendBody: Read {
    /// Starts the body again from its first byte (only meaningful if `can_replay`).
    fn rewind(&mut self);
    /// Whether every byte read so far is still here to be sent again.
    fn can_replay(&self) -> bool;
}

/// A body gathered whole before the request went out (`--request-buffering`) is all
/// still there: it can always be sent again, whatever `--retry-buffer` says.
impl ResendBody for Spill {
    fn rewind(&mut self) {
        Spill::rewind(self);
    }

    fn can_replay(&self) -> bool {
        true
    }
}

impl<R: Read> ResendBody for Replay<'_, R> {
    fn rewind(&mut self) {
        Replay::rewind(self);
    }

    fn can_replay(&self) -> bool {
        Replay::can_replay(self)
    }
}

/// A request body that can be sent again: every byte read from the client is also kept,
/// up to `limit`; `rewind` replays the kept bytes, then reads on from the client. Once
/// more than `limit` bytes went out the body is gone for good and `can_replay` says so:
/// a body that was streamed away is never sent again, not even in part.
///
/// The replay has exactly the bytes of the first attempt, followed by the rest of the
/// client's body, so a sized body keeps its announced length (the upstream client spins
/// forever on a sized body that ends early).
pub struct Replay<'a, R> {
    inner: &'a mut R,
    kept: &'a mut Vec<u8>,
    limit: usize,
    /// Where the next read starts within `kept`; `kept.len()` when reading from `inner`.
    pos: usize,
    overflowed: bool,
}

impl<'a, R: Read> Replay<'a, R> {
    /// `kept` is the worker's reusable buffer; it is cleared here.
    pub fn new(inner: &'a mut R, kept: &'a mut Vec<u8>, limit: usize) -> Replay<'a, R> {
        kept.clear();
        Replay {
            inner,
            kept,
            limit,
            pos: 0,
            overflowed: false,
        }
    }

    /// Whether every byte read so far is still here to be sent again.
    pub fn can_replay(&self) -> bool {
        !self.overflowed
    }

    /// Starts the body again from its first byte (only meaningful if `can_replay`).
    pub fn rewind(&mut self) {
        self.pos = 0;
    }
}

impl<R: Read> Read for Replay<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.kept.len() && !self.overflowed {
            let n = out.len().min(self.kept.len() - self.pos);
            out[..n].copy_from_slice(&self.kept[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        let n = self.inner.read(out)?;
        if !self.overflowed {
            if self.kept.len() + n <= self.limit {
                self.kept.extend_from_slice(&out[..n]);
                self.pos = self.kept.len();
            } else {
                self.overflowed = true;
                self.kept.clear();
                self.pos = 0;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: &mut impl Read) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            match r.read(&mut buf).unwrap() {
                0 => return out,
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn a_kept_body_replays_byte_for_byte_then_reads_on() {
        let mut client: &[u8] = b"hello world";
        let mut kept = Vec::new();
        let mut replay = Replay::new(&mut client, &mut kept, 64);
        let mut first = [0u8; 5];
        replay.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"hello");
        // The backend broke off after five bytes: the second attempt gets all of it.
        replay.rewind();
        assert!(replay.can_replay());
        assert_eq!(read_all(&mut replay), b"hello world");
        replay.rewind();
        assert_eq!(read_all(&mut replay), b"hello world");
    }

    #[test]
    fn a_body_larger_than_the_limit_cannot_be_replayed() {
        let mut client: &[u8] = b"0123456789";
        let mut kept = Vec::new();
        let mut replay = Replay::new(&mut client, &mut kept, 4);
        assert_eq!(read_all(&mut replay), b"0123456789");
        assert!(!replay.can_replay());
        let mut kept = Vec::new();
        let mut client: &[u8] = b"0123";
        let mut replay = Replay::new(&mut client, &mut kept, 4);
        assert_eq!(read_all(&mut replay), b"0123");
        assert!(replay.can_replay());
    }

    fn reset() -> ProxyError {
        ProxyError::Reset {
            backend: "127.0.0.1:1".parse().unwrap(),
            detail: String::new(),
        }
    }

    #[test]
    fn idempotent_methods_and_idempotency_keys_are_resent() {
        let budget = Budget::default();
        let none = HeaderMap::new();
        for method in [Method::GET, Method::PUT, Method::DELETE, Method::OPTIONS] {
            let mut resends = Resends::new(&method, &none, None);
            assert!(resends.allow(&reset(), true, 2, &budget, 0), "{method}");
        }
        let mut post = Resends::new(&Method::POST, &none, None);
        assert!(!post.allow(&reset(), true, 2, &budget, 0));
        let mut keyed = HeaderMap::new();
        keyed.insert(IDEMPOTENCY_KEY, "k-1".parse().unwrap());
        let mut post = Resends::new(&Method::POST, &keyed, None);
        assert!(post.allow(&reset(), true, 2, &budget, 0));
        // Never a body that was streamed away, never after a refused connect.
        let mut get = Resends::new(&Method::GET, &none, None);
        assert!(!get.allow(&reset(), false, 2, &budget, 0));
        let refused = ProxyError::Connect {
            backend: "127.0.0.1:1".parse().unwrap(),
            detail: String::new(),
        };
        assert!(!get.allow(&refused, true, 2, &budget, 0));
    }

    #[test]
    fn resends_default_to_one_per_other_candidate_and_at_least_one() {
        let budget = Budget::default();
        let none = HeaderMap::new();
        let count = |max, candidates| {
            let mut resends = Resends::new(&Method::GET, &none, max);
            (0..10)
                .filter(|_| resends.allow(&reset(), true, candidates, &budget, 0))
                .count()
        };
        assert_eq!(count(None, 1), 1);
        assert_eq!(count(None, 2), 1);
        assert_eq!(count(None, 4), 3);
        assert_eq!(count(Some(0), 4), 0);
        assert_eq!(count(Some(2), 1), 2);
    }

    #[test]
    fn the_budget_allows_a_fifth_of_the_requests_with_a_floor() {
        let budget = Budget::default();
        // Quiet: the floor, 3 a second over the window.
        let allowed = (0..100).filter(|_| budget.try_resend(5_000)).count();
        assert_eq!(allowed, 30);
        let budget = Budget::default();
        for ms in 0..1000 {
            for _ in 0..100 {
                budget.request(10_000 + ms * 10);
            }
        }
        // 100,000 requests over ten seconds: 20,000 resends.
        let allowed = (0..30_000).filter(|_| budget.try_resend(19_999)).count();
        assert_eq!(allowed, 20_000);
        // Ten seconds later the window has moved on: only the floor again.
        let allowed = (0..100).filter(|_| budget.try_resend(40_000)).count();
        assert_eq!(allowed, 30);
    }
}
