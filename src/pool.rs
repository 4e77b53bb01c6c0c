//! The worker pool: a fixed number of named threads that take jobs from one bounded
//! crossbeam queue and run a handler on each. It knows no HTTP: `server.rs` gives it a
//! handler that serves a client connection (`connection::serve`).

use std::io;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::thread;

use crossbeam_channel::Receiver;

/// Starts `workers` threads with small stacks. Each calls `make_handler(id)` once, so a
/// handler can own per-thread scratch buffers, then runs it on every job until the queue
/// is closed and empty. A panicking job costs that job only: the worker goes on.
pub fn start<T, H, F>(
    workers: NonZeroUsize,
    stack_size: usize,
    jobs: Receiver<T>,
    make_handler: F,
) -> io::Result<Vec<thread::JoinHandle<()>>>
where
    T: Send + 'static,
    H: FnMut(T),
    F: Fn(usize) -> H + Send + Sync + Clone + 'static,
{
    (0..workers.get())
        .map(|id| {
            let jobs = jobs.clone();
            let make_handler = make_handler.clone();
            thread::Builder::new()
                .name(format!("worker-{id}"))
                .stack_size(stack_size)
                .spawn(move || {
                    let mut handle = make_handler(id);
                    for job in jobs {
                        // The job (and so its connection) is dropped while unwinding.
                        if panic::catch_unwind(AssertUnwindSafe(|| handle(job))).is_err() {
                            eprintln!(
                                "worker-{id}: a request handler panicked; its connection was closed"
                            );
                        }
                    }
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    #[test]
    fn a_panicking_job_costs_only_itself() {
        let (jobs_tx, jobs_rx) = bounded::<u32>(8);
        let (done_tx, done_rx) = bounded::<u32>(8);
        let workers = start(NonZeroUsize::MIN, 256 * 1024, jobs_rx, move |_| {
            let done = done_tx.clone();
            move |job: u32| {
                if job == 2 {
                    panic!("job 2 fails on purpose");
                }
                done.send(job).unwrap();
            }
        })
        .unwrap();
        for job in 1..=3 {
            jobs_tx.send(job).unwrap();
        }
        drop(jobs_tx);
        for w in workers {
            w.join().unwrap();
        }
        // The one worker survived job 2 and went on to job 3.
        assert_eq!(done_rx.try_iter().collect::<Vec<_>>(), [1, 3]);
    }
}
