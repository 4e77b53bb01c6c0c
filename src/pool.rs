//! The worker pool: named threads that take jobs from one bounded crossbeam queue and run
//! a handler on each. At most `--workers` threads; they are started as the load needs
//! them (a job waiting and no worker idle), and a worker beyond the first few that has
//! had no job for `idle_exit` (30 s in the balancer) ends, so a burst does not leave
//! hundreds of threads behind: an idle balancer holds a few threads, a busy one as many
//! as it keeps busy. It knows no HTTP: `server.rs` gives it a handler
//! that serves a client connection (`connection::serve`), and the listener and the
//! waiting room submit connections.

use std::io;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

/// Workers started up front: enough to serve the first requests at once. Also the floor
/// below which idle workers do not end.
const INITIAL_WORKERS: usize = 4;

/// How many threads, how many waiting jobs, and how long a spare worker stays idle.
pub struct Sizes {
    /// At most this many workers.
    pub workers: NonZeroUsize,
    /// At most this many jobs waiting for a worker.
    pub queue: NonZeroUsize,
    pub stack_size: usize,
    /// A worker beyond `INITIAL_WORKERS` with no job for this long ends.
    pub idle_exit: Duration,
}

/// Makes one worker's job handler; called once in each new worker thread, so that a
/// handler can own per-thread scratch buffers.
type MakeHandler<T> = dyn Fn(usize, Backlog<T>) -> Box<dyn FnMut(T)> + Send + Sync;

/// Whether jobs wait for a worker, as each worker's handler sees it: a handler that could
/// keep its thread a while longer gives it up at once when others wait.
pub struct Backlog<T>(Receiver<T>);

impl<T> Backlog<T> {
    /// No job waits. A couple of atomic loads, no lock.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The submitting side of the pool; cheap to clone.
pub struct Pool<T> {
    jobs: Sender<T>,
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Pool {
            jobs: self.jobs.clone(),
            shared: self.shared.clone(),
        }
    }
}

struct Shared<T> {
    queue: Receiver<T>,
    max: usize,
    stack_size: usize,
    idle_exit: Duration,
    /// Workers running now, up to `max`: raised by `spawn_worker`, lowered by a worker
    /// that ends (`retire`).
    started: AtomicUsize,
    /// Workers ever started, to name them.
    named: AtomicUsize,
    /// Workers waiting for a job right now.
    idle: AtomicUsize,
    make_handler: Box<MakeHandler<T>>,
}

impl<T: Send + 'static> Pool<T> {
    /// A pool of at most `sizes.workers` threads with small stacks over a queue of
    /// `sizes.queue` jobs. A panicking job costs that job only: its worker goes on.
    pub fn start<H>(
        sizes: Sizes,
        make_handler: impl Fn(usize, Backlog<T>) -> H + Send + Sync + 'static,
    ) -> io::Result<Pool<T>>
    where
        H: FnMut(T) + 'static,
    {
        let workers = sizes.workers;
        let (jobs, queue) = bounded(sizes.queue.get());
        let pool = Pool {
            jobs,
            shared: Arc::new(Shared {
                queue,
                max: workers.get(),
                stack_size: sizes.stack_size,
                idle_exit: sizes.idle_exit,
                started: AtomicUsize::new(0),
                named: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
                make_handler: Box::new(move |id, backlog| Box::new(make_handler(id, backlog))),
            }),
        };
        for _ in 0..INITIAL_WORKERS.min(workers.get()) {
            spawn_worker(&pool.shared)?;
        }
        Ok(pool)
    }

    /// Queues a job without waiting; a full queue hands it back.
    pub fn try_submit(&self, job: T) -> Result<(), TrySendError<T>> {
        self.jobs.try_send(job)?;
        grow_if_needed(&self.shared);
        Ok(())
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.jobs.len()
    }

    /// Worker threads running now.
    pub fn workers(&self) -> usize {
        self.shared.started.load(Ordering::Relaxed)
    }

    /// Workers running a job right now (started and not waiting for one).
    pub fn busy(&self) -> usize {
        // Relaxed: a gauge for the admin interface; two loads apart, hence saturating.
        let idle = self.shared.idle.load(Ordering::Relaxed);
        self.workers().saturating_sub(idle)
    }
}

/// Starts one more worker if jobs are waiting that no idle worker will take. Checked
/// by the submitter and again by every worker that takes a job, so that a job queued in
/// a race with a worker going idle still finds a thread.
fn grow_if_needed<T: Send + 'static>(shared: &Arc<Shared<T>>) {
    // Relaxed: a stale count costs at most one spawn too many or a later re-check.
    if shared.queue.len() > shared.idle.load(Ordering::Relaxed)
        && shared.started.load(Ordering::Relaxed) < shared.max
        && let Err(err) = spawn_worker(shared)
    {
        crate::say!("roundhouse: cannot start another worker: {err}");
    }
}

/// Ends an idle worker unless it is one of the first few. A job queued while it was
/// deciding still finds a thread: it looks again, as a submitter would.
fn retire<T: Send + 'static>(shared: &Arc<Shared<T>>) -> bool {
    // Relaxed: the count only bounds the threads; no other memory hangs on it.
    let retired = shared
        .started
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n > INITIAL_WORKERS).then(|| n - 1)
        })
        .is_ok();
    if retired {
        grow_if_needed(shared);
    }
    retired
}

fn spawn_worker<T: Send + 'static>(shared: &Arc<Shared<T>>) -> io::Result<()> {
    // Claim a thread number below the limit; lose the race, start nothing.
    let id = shared.started.fetch_add(1, Ordering::Relaxed);
    if id >= shared.max {
        shared.started.fetch_sub(1, Ordering::Relaxed);
        return Ok(());
    }
    let pool = shared.clone();
    let name = shared.named.fetch_add(1, Ordering::Relaxed);
    let spawned = thread::Builder::new()
        .name(format!("worker-{name}"))
        .stack_size(shared.stack_size)
        .spawn(move || {
            let mut handle = (pool.make_handler)(id, Backlog(pool.queue.clone()));
            loop {
                pool.idle.fetch_add(1, Ordering::Relaxed);
                let job = pool.queue.recv_timeout(pool.idle_exit);
                pool.idle.fetch_sub(1, Ordering::Relaxed);
                let job = match job {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) if retire(&pool) => return,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                grow_if_needed(&pool);
                // The job (and so its connection) is dropped while unwinding.
                if panic::catch_unwind(AssertUnwindSafe(|| handle(job))).is_err() {
                    crate::say!(
                        "worker-{id}: a request handler panicked; its connection was closed"
                    );
                }
            }
        });
    if spawned.is_err() {
        shared.started.fetch_sub(1, Ordering::Relaxed);
    }
    spawned.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    fn sizes(workers: usize, queue: usize) -> Sizes {
        Sizes {
            workers: NonZeroUsize::new(workers).unwrap(),
            queue: NonZeroUsize::new(queue).unwrap(),
            stack_size: 256 * 1024,
            idle_exit: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_panicking_job_costs_only_itself() {
        let (done_tx, done_rx) = bounded::<u32>(8);
        let pool = Pool::start(sizes(1, 8), move |_, _| {
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
            pool.try_submit(job).unwrap();
        }
        // The one worker survived job 2 and went on to job 3.
        assert_eq!(done_rx.recv().unwrap(), 1);
        assert_eq!(done_rx.recv().unwrap(), 3);
        assert_eq!(pool.workers(), 1);
    }

    #[test]
    fn grows_to_the_limit_when_every_worker_is_busy_and_no_further() {
        // Ten jobs that all block until ten are running at once: that needs ten threads,
        // more than the initial few; the limit of ten is never passed.
        let running = Arc::new(Barrier::new(10 + 1));
        let pool = Pool::start(sizes(10, 64), {
            let running = running.clone();
            move |_, _| {
                let running = running.clone();
                move |job: u32| {
                    if job < 10 {
                        running.wait();
                    }
                }
            }
        })
        .unwrap();
        assert!(pool.workers() <= INITIAL_WORKERS);
        for job in 0..10 {
            pool.try_submit(job).unwrap();
        }
        running.wait();
        assert_eq!(pool.workers(), 10);
        for job in 10..30 {
            pool.try_submit(job).unwrap();
        }
        assert!(pool.workers() <= 10);
    }

    #[test]
    fn a_full_queue_hands_the_job_back() {
        let gate = Arc::new(Barrier::new(2));
        let pool = Pool::start(sizes(1, 1), {
            let gate = gate.clone();
            move |_, _| {
                let gate = gate.clone();
                move |_job: u32| {
                    gate.wait();
                }
            }
        })
        .unwrap();
        pool.try_submit(1).unwrap(); // taken by the one worker, which blocks
        while pool.queued() > 0 {
            thread::yield_now();
        }
        pool.try_submit(2).unwrap(); // waits in the queue
        assert!(matches!(pool.try_submit(3), Err(TrySendError::Full(3))));
        gate.wait();
        gate.wait();
    }

    #[test]
    fn workers_beyond_the_first_few_end_when_idle() {
        let running = Arc::new(Barrier::new(10 + 1));
        let pool = Pool::start(
            Sizes {
                idle_exit: Duration::from_millis(50),
                ..sizes(10, 64)
            },
            {
                let running = running.clone();
                move |_, _| {
                    let running = running.clone();
                    move |_job: u32| {
                        running.wait();
                    }
                }
            },
        )
        .unwrap();
        for job in 0..10 {
            pool.try_submit(job).unwrap();
        }
        running.wait();
        assert_eq!(pool.workers(), 10);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.workers() > INITIAL_WORKERS {
            assert!(std::time::Instant::now() < deadline, "idle workers stayed");
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pool.workers(), INITIAL_WORKERS);
        // Those left still take jobs, and the pool grows again when they are not enough.
        for job in 0..10 {
            pool.try_submit(job).unwrap();
        }
        running.wait();
        assert_eq!(pool.workers(), 10);
    }
}
