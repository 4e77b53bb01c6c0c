//! Round robin, weighted the smooth way (nginx's algorithm): weights 5:1:1 give
//! `a a b a c a a`, not `a a a a a b c`, so no backend gets a burst.
//!
//! The sequence depends only on the weights, so it is computed once, at startup; picking
//! is then one atomic increment and one index, with no lock. An unavailable backend's
//! turn is skipped (the cursor moves past it), so the others keep their proportions.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backend, common_divisor};

pub struct RoundRobin {
    /// Backend indexes in the order they take requests; one full cycle.
    schedule: Vec<u32>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// `weights[i]` is backend i's weight (at least 1); there is at least one backend.
    pub fn new(weights: &[u32]) -> RoundRobin {
        RoundRobin {
            schedule: smooth_schedule(weights),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The index of the next available backend in the schedule; `None` if none is.
    pub fn pick(&self, backends: &[Backend]) -> Option<usize> {
        let turn = self.turn();
        let len = self.schedule.len();
        let skipped =
            (0..len).find(|k| backends[self.schedule[(turn + k) % len] as usize].is_available())?;
        if skipped > 0 {
            // The turns we looked past are used up; otherwise the backend after a
            // down one would get its turns too.
            // Relaxed: see turn.
            self.cursor.fetch_add(skipped, Ordering::Relaxed);
        }
        Some(self.schedule[(turn + skipped) % len] as usize)
    }

    /// The backend whose turn it is, available or not: where `least-conn` and
    /// `least-time` start looking, so that ties go round in weighted order.
    pub fn next_in_turn(&self) -> usize {
        let turn = self.turn();
        self.schedule[turn % self.schedule.len()] as usize
    }

    fn turn(&self) -> usize {
        // Relaxed: each caller only needs a different number, not ordering with other
        // memory; the schedule is immutable.
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }
}

/// One cycle of smooth weighted round robin: each turn every backend gains its weight,
/// the one with the most credit is chosen and pays back the total. Weights are first
/// divided by their common divisor, so 2:2 cycles like 1:1.
fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let divisor = common_divisor(weights);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut credit = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, w) in credit.iter_mut().zip(&weights) {
                *c += w;
            }
            // Ties go to the lower index: equal weights alternate a, b, a, b.
            let best = (0..credit.len())
                .fold(0, |best, i| if credit[i] > credit[best] { i } else { best });
            credit[best] -= total;
            best as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::backends;
    use super::*;

    fn names(weights: &[u32], n: usize) -> String {
        let set = backends(weights);
        let rr = RoundRobin::new(weights);
        (0..n)
            .map(|_| (b'a' + rr.pick(&set).unwrap() as u8) as char)
            .collect()
    }

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(names(&[1, 1], 4), "abab");
        assert_eq!(names(&[3, 3, 3], 6), "abcabc");
    }

    #[test]
    fn weights_are_spread_smoothly() {
        assert_eq!(names(&[5, 1, 1], 7), "aabacaa");
        assert_eq!(names(&[2, 1], 6), "abaaba");
    }

    #[test]
    fn one_backend_always_wins() {
        assert_eq!(names(&[7], 3), "aaa");
    }

    #[test]
    fn unavailable_backends_are_skipped_and_the_rest_keep_their_order() {
        let set = backends(&[1, 1, 1]);
        set[1].marks().mark_down();
        let rr = RoundRobin::new(&[1, 1, 1]);
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&set).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
        set[0].marks().drain();
        set[2].marks().mark_down();
        assert_eq!(rr.pick(&set), None);
    }
}
