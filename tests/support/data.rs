//! Data for the big transfers: a cheap deterministic byte stream and a 64-bit hash.

/// FNV-1a, 64 bits: enough to tell whether 64 MiB arrived intact and in order.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.update(bytes);
    h.finish()
}

/// `len` pseudo-random bytes from `seed` (splitmix64, little-endian words). The bytes
/// depend only on the seed and the position, not on the sizes of the reads.
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
    remaining: u64,
}

impl Pattern {
    pub fn new(seed: u64, len: u64) -> Pattern {
        Pattern {
            state: seed,
            word: [0; 8],
            used: 8,
            remaining: len,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Fills the front of `buf` with the next bytes; returns how many (0 at the end).
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        let mut i = 0;
        while i < n {
            if self.used == 8 {
                if n - i >= 8 {
                    // Fast path: whole words.
                    let w = self.next_word();
                    buf[i..i + 8].copy_from_slice(&w);
                    i += 8;
                    continue;
                }
                self.word = self.next_word();
                self.used = 0;
            }
            buf[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        self.remaining -= n as u64;
        n
    }

    /// The hash of the whole stream, computed without holding it.
    pub fn hash_of(seed: u64, len: u64) -> u64 {
        let mut p = Pattern::new(seed, len);
        let mut h = Fnv::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = p.fill(&mut buf);
            if n == 0 {
                return h.finish();
            }
            h.update(&buf[..n]);
        }
    }
}
