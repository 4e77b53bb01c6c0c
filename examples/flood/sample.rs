//! The sampler: while an attack runs, it reads the threads and resident memory of the
//! balancer's processes (`Threads` and `VmRSS` in `/proc/PID/status`) every 100 ms and
//! keeps the peaks. `VmHWM` would be simpler, but it is the peak of the process's whole
//! life, so every attack after the worst one would inherit its figure.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Time between two samples.
const EVERY: Duration = Duration::from_millis(100);

/// The longest a sampler runs if nobody stops it: longer than any attack.
const LONGEST: Duration = Duration::from_secs(300);

/// The highest figures seen during one attack, summed over the processes sampled.
#[derive(Clone, Copy, Default)]
pub struct Peaks {
    /// `None` when no process was given, or none could be read.
    pub threads: Option<u64>,
    pub rss_kib: Option<u64>,
}

/// Samples in its own thread until [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Peaks>>,
}

impl Sampler {
    /// Starts sampling `pids`; with none, samples nothing and finishes with empty peaks.
    pub fn start(pids: &[u32]) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (!pids.is_empty()).then(|| {
            let (pids, stop) = (pids.to_vec(), Arc::clone(&stop));
            thread::spawn(move || sample_until(&pids, &stop))
        });
        Sampler { stop, thread }
    }

    pub fn finish(self) -> Peaks {
        // Relaxed: the flag carries no data; the peaks come back through `join`.
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .map(|thread| thread.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

fn sample_until(pids: &[u32], stop: &AtomicBool) -> Peaks {
    let mut peaks = Peaks::default();
    let end = Instant::now() + LONGEST;
    // Relaxed: see `finish`.
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let now: Vec<Status> = pids.iter().filter_map(|&pid| status(pid)).collect();
        if !now.is_empty() {
            let threads = now.iter().map(|s| s.threads).sum();
            let rss = now.iter().map(|s| s.rss_kib).sum();
            peaks.threads = peaks.threads.max(Some(threads));
            peaks.rss_kib = peaks.rss_kib.max(Some(rss));
        }
        thread::sleep(EVERY);
    }
    peaks
}

/// Is every one of `pids` still running (not gone, not a zombie)?
pub fn alive(pids: &[u32]) -> bool {
    pids.iter()
        .all(|&pid| status(pid).is_some_and(|s| !s.zombie))
}

struct Status {
    threads: u64,
    rss_kib: u64,
    zombie: bool,
}

fn status(pid: u32) -> Option<Status> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let number = |name: &str| field(name)?.split_whitespace().next()?.parse().ok();
    Some(Status {
        threads: number("Threads")?,
        // A zombie has no memory left, and no VmRSS line.
        rss_kib: number("VmRSS").unwrap_or(0),
        zombie: field("State").is_some_and(|state| state.starts_with('Z')),
    })
}
