//! Random: each request goes to a backend drawn at random, in proportion to its weight.
//! No shared state at all between workers (each thread has its own generator), so it
//! scales perfectly; the price is that short runs are uneven.
//!
//! `WeightedDraw` is the draw itself, shared with `p2c`. Picking takes a source of random
//! numbers (`draw(n)` returns a number below `n`) so that tests can fix the seed.

use super::Backend;

/// How many times an unavailable draw is drawn again before walking to the next
/// available backend (which would favour the backends after a down one).
const REDRAWS: usize = 4;

pub struct WeightedDraw {
    /// Running totals of the weights: `cumulative[i]` is the sum of weights 0..=i.
    /// Empty when all weights are equal (then a draw is one modulo).
    cumulative: Vec<u64>,
    total: u64,
    count: usize,
}

impl WeightedDraw {
    pub fn new(weights: &[u32]) -> WeightedDraw {
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        let cumulative: Vec<u64> = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w.max(1));
                Some(*sum)
            })
            .collect();
        WeightedDraw {
            total: cumulative.last().copied().unwrap_or(0),
            cumulative: if equal { Vec::new() } else { cumulative },
            count: weights.len(),
        }
    }

    /// One backend index, in proportion to weight, ignoring availability.
    pub fn any(&self, draw: &mut impl FnMut(u64) -> u64) -> usize {
        if self.cumulative.is_empty() {
            return draw(self.count as u64) as usize;
        }
        let r = draw(self.total);
        self.cumulative.partition_point(|&c| c <= r)
    }

    /// One available backend index, in proportion to weight; `None` if none is available.
    pub fn available(
        &self,
        backends: &[Backend],
        draw: &mut impl FnMut(u64) -> u64,
    ) -> Option<usize> {
        if backends.is_empty() {
            return None;
        }
        self.available_except(backends, usize::MAX, draw)
    }

    /// Like `available`, but never `not`; `None` if no other backend is available.
    pub fn available_except(
        &self,
        backends: &[Backend],
        not: usize,
        draw: &mut impl FnMut(u64) -> u64,
    ) -> Option<usize> {
        let usable = |i: usize| i != not && backends[i].is_available();
        let mut i = 0;
        for _ in 0..REDRAWS {
            i = self.any(draw);
            if usable(i) {
                return Some(i);
            }
        }
        let n = backends.len();
        (1..=n).map(|k| (i + k) % n).find(|&j| usable(j))
    }
}

pub struct Random {
    draw: WeightedDraw,
}

impl Random {
    pub fn new(draw: WeightedDraw) -> Random {
        Random { draw }
    }

    pub fn pick(&self, backends: &[Backend], mut draw: impl FnMut(u64) -> u64) -> Option<usize> {
        self.draw.available(backends, &mut draw)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{backends, counts};
    use super::*;

    #[test]
    fn equal_weights_are_drawn_evenly() {
        let set = backends(&[1, 1, 1, 1]);
        let random = Random::new(WeightedDraw::new(&[1, 1, 1, 1]));
        let mut rng = fastrand::Rng::with_seed(7);
        let c = counts(4, 10_000, || random.pick(&set, |n| rng.u64(..n)));
        // 2,500 each expected; 5 standard deviations is about ±220.
        assert!(c.iter().all(|&n| (2_280..=2_720).contains(&n)), "{c:?}");
    }

    #[test]
    fn weights_are_honoured() {
        let set = backends(&[5, 1, 1]);
        let random = Random::new(WeightedDraw::new(&[5, 1, 1]));
        let mut rng = fastrand::Rng::with_seed(7);
        let c = counts(3, 10_000, || random.pick(&set, |n| rng.u64(..n)));
        // 7,143 / 1,429 / 1,429 expected, within 5 standard deviations.
        assert!((6_900..=7_380).contains(&c[0]), "{c:?}");
        assert!((1_250..=1_610).contains(&c[1]), "{c:?}");
        assert!((1_250..=1_610).contains(&c[2]), "{c:?}");
    }

    #[test]
    fn unavailable_backends_are_never_drawn() {
        let set = backends(&[1, 3, 1]);
        set[1].marks().mark_down();
        let random = Random::new(WeightedDraw::new(&[1, 3, 1]));
        let mut rng = fastrand::Rng::with_seed(1);
        let c = counts(3, 10_000, || random.pick(&set, |n| rng.u64(..n)));
        assert_eq!(c[1], 0);
        assert!(c[0] > 4_000 && c[2] > 4_000, "{c:?}");
        set[0].marks().mark_down();
        set[2].marks().drain();
        assert_eq!(random.pick(&set, |n| rng.u64(..n)), None);
    }
}
