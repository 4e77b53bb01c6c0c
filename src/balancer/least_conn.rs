//! Least connections: each request goes to the backend with the fewest requests in
//! flight for its weight (in flight ÷ weight, nginx's `least_conn`). A backend that is
//! slow to answer holds its requests longer, so it gets fewer new ones.
//!
//! Ties are broken in smooth weighted round-robin order: the scan starts at the backend
//! whose turn it is, and the first of the least loaded from there wins. So idle backends
//! of equal weight still alternate instead of the first one taking every request. One
//! pass over the backends per pick (nginx does the same).

use super::{Backend, RoundRobin, lighter, lowest};

pub struct LeastConn {
    turns: RoundRobin,
}

impl LeastConn {
    pub fn new(weights: &[u32]) -> LeastConn {
        LeastConn {
            turns: RoundRobin::new(weights),
        }
    }

    pub fn pick(&self, backends: &[Backend]) -> Option<usize> {
        lowest(
            backends,
            self.turns.next_in_turn(),
            |b| (b.in_flight() as u64, b.weight),
            |&(load, weight), &(best_load, best_weight)| {
                lighter(load, weight, best_load, best_weight)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::backends;
    use super::*;

    #[test]
    fn idle_backends_alternate() {
        let set = backends(&[1, 1, 1]);
        let lc = LeastConn::new(&[1, 1, 1]);
        let picks: Vec<_> = (0..6).map(|_| lc.pick(&set).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn idle_weighted_backends_follow_smooth_round_robin() {
        let set = backends(&[5, 1, 1]);
        let lc = LeastConn::new(&[5, 1, 1]);
        let picks: Vec<_> = (0..7).map(|_| lc.pick(&set).unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn the_backend_with_fewest_in_flight_wins() {
        let set = backends(&[1, 1, 1]);
        let lc = LeastConn::new(&[1, 1, 1]);
        let _busy = [set[0].start(), set[0].start(), set[2].start()];
        for _ in 0..5 {
            assert_eq!(lc.pick(&set), Some(1));
        }
        drop(_busy);
        assert_eq!(set[0].in_flight(), 0);
    }

    #[test]
    fn in_flight_is_counted_per_weight() {
        let set = backends(&[4, 1]);
        let lc = LeastConn::new(&[4, 1]);
        // 3 of 4 on a (0.75), 1 of 1 on b (1.0): a is less loaded.
        let _a: Vec<_> = (0..3).map(|_| set[0].start()).collect();
        let _b = set[1].start();
        assert_eq!(lc.pick(&set), Some(0));
        let _a2 = set[0].start();
        let _a3 = set[0].start();
        // 5 of 4 (1.25) against 1 of 1: b now.
        assert_eq!(lc.pick(&set), Some(1));
    }

    #[test]
    fn unavailable_backends_are_skipped() {
        let set = backends(&[1, 1]);
        let lc = LeastConn::new(&[1, 1]);
        let _busy = set[1].start();
        set[0].marks().mark_down();
        assert_eq!(lc.pick(&set), Some(1));
        set[1].marks().drain();
        assert_eq!(lc.pick(&set), None);
    }
}
