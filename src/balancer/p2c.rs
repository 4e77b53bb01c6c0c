//! Power of two random choices: draw two different backends at random (by weight) and
//! send the request to the one with fewer requests in flight for its weight. Almost as
//! good as least-conn at avoiding a busy backend, but it reads two counters instead of
//! all of them, and since workers draw independently they do not all rush to the same
//! idle backend at once (Mitzenmacher, 2001; Envoy's and Finagle's default).

use super::random::WeightedDraw;
use super::{Backend, lighter};

pub struct PowerOfTwo {
    draw: WeightedDraw,
}

impl PowerOfTwo {
    pub fn new(draw: WeightedDraw) -> PowerOfTwo {
        PowerOfTwo { draw }
    }

    pub fn pick(&self, backends: &[Backend], mut draw: impl FnMut(u64) -> u64) -> Option<usize> {
        let a = self.draw.available(backends, &mut draw)?;
        // The only one available is the answer.
        let Some(b) = self.draw.available_except(backends, a, &mut draw) else {
            return Some(a);
        };
        let (x, y) = (&backends[a], &backends[b]);
        // Ties go to the first draw, which is itself random.
        if lighter(
            y.in_flight() as u64,
            y.weight,
            x.in_flight() as u64,
            x.weight,
        ) {
            Some(b)
        } else {
            Some(a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{backends, counts};
    use super::*;

    #[test]
    fn idle_backends_share_evenly() {
        let set = backends(&[1, 1, 1, 1]);
        let p2c = PowerOfTwo::new(WeightedDraw::new(&[1, 1, 1, 1]));
        let mut rng = fastrand::Rng::with_seed(3);
        let c = counts(4, 10_000, || p2c.pick(&set, |n| rng.u64(..n)));
        assert!(c.iter().all(|&n| (2_280..=2_720).contains(&n)), "{c:?}");
    }

    #[test]
    fn a_busy_backend_is_avoided_whenever_it_is_compared() {
        let set = backends(&[1, 1, 1, 1]);
        let p2c = PowerOfTwo::new(WeightedDraw::new(&[1, 1, 1, 1]));
        let _busy = set[0].start();
        let mut rng = fastrand::Rng::with_seed(3);
        let c = counts(4, 10_000, || p2c.pick(&set, |n| rng.u64(..n)));
        // Backend 0 loses every comparison: the second draw is always another backend.
        assert_eq!(c[0], 0, "{c:?}");
        assert!(
            c[1..].iter().all(|&n| (3_000..=3_700).contains(&n)),
            "{c:?}"
        );
    }

    #[test]
    fn weights_are_honoured_when_idle() {
        let set = backends(&[3, 1]);
        let p2c = PowerOfTwo::new(WeightedDraw::new(&[3, 1]));
        let mut rng = fastrand::Rng::with_seed(5);
        let c = counts(2, 10_000, || p2c.pick(&set, |n| rng.u64(..n)));
        // Both idle: the first draw wins, so 3:1 by weight (7,500 ± 5 sd = ±217).
        assert!((7_280..=7_720).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn one_available_backend_is_the_answer() {
        let set = backends(&[1, 1, 1]);
        let p2c = PowerOfTwo::new(WeightedDraw::new(&[1, 1, 1]));
        set[0].marks().mark_down();
        set[2].marks().drain();
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..100 {
            assert_eq!(p2c.pick(&set, |n| rng.u64(..n)), Some(1));
        }
        set[1].marks().mark_down();
        assert_eq!(p2c.pick(&set, |n| rng.u64(..n)), None);
    }
}
