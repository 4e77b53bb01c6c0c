//! What the limits per client cost: one `Limits::allow` (a request's token of
//! `--rate-limit`, clock read included) and one `Limits::admit` with its `ClientSlot`
//! dropped (a connection under `--max-connections-per-client`), for 1 and 2 threads at
//! once on one shared `Limits`. A plain harness (no framework): `make bench-limits`, or
//! `cargo bench --bench limits`.
//!
//! Method: as benches/pick.rs, each thread calls in a loop for `RUN` and counts its
//! calls; the table shows CPU nanoseconds per call: wall time × busy cores ÷ calls. The
//! clients: one address (every thread on one entry and one lock: the worst contention),
//! 1,024 addresses (each remembered), and a flood of distinct addresses, each seen once
//! (every call evicts). The rate is high enough that the bucket math, not the refusal,
//! is what runs; a refused request costs the same.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use roundhouse::Config;
use roundhouse::limits::{Limits, RATE_TABLE_PLACES};

const RUN: Duration = Duration::from_millis(300);
const THREADS: [usize; 2] = [1, 2];

/// The addresses each thread goes through, starting at a different one.
enum Clients {
    One,
    Some(u32),
    Flood,
}

impl Clients {
    fn name(&self) -> String {
        match self {
            Clients::One => "1 client".into(),
            Clients::Some(n) => format!("{n} clients"),
            Clients::Flood => "a flood (each address once)".into(),
        }
    }

    fn ip(&self, thread: usize, i: u32) -> IpAddr {
        let n = match self {
            Clients::One => 0,
            Clients::Some(n) => i % n,
            Clients::Flood => i.wrapping_mul(2) + thread as u32,
        };
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(n)))
    }
}

/// CPU nanoseconds per call of `op` with `threads` threads.
fn measure(threads: usize, op: impl Fn(usize, u32) + Sync) -> f64 {
    let start = Instant::now();
    let calls: u64 = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                s.spawn(move || {
                    let mut calls = 0u64;
                    let mut i = t as u32 * 7919;
                    while start.elapsed() < RUN {
                        for _ in 0..256 {
                            op(t, i);
                            i = i.wrapping_add(1);
                        }
                        calls += 256;
                    }
                    calls
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    start.elapsed().as_nanos() as f64 * threads.min(cores) as f64 / calls as f64
}

fn limits(args: &[&str]) -> Arc<Limits> {
    Limits::new(&Config::from_args(args).expect("the bench's flags"))
}

fn main() {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!("ns per call (CPU time), {cores} cores; columns: threads\n");
    print!("| call | clients |");
    for t in THREADS {
        print!(" {t}t |");
    }
    println!();
    println!("|---|---|{}", "---:|".repeat(THREADS.len()));
    let off = Limits::off();
    let rated = limits(&["--rate-limit", "1000000000/s"]);
    let capped = limits(&["--max-connections-per-client", "1000000"]);
    let clients = [Clients::One, Clients::Some(1024), Clients::Flood];
    let rows: [(&str, &Arc<Limits>, bool); 3] = [
        ("allow, limits off", &off, true),
        ("allow (--rate-limit)", &rated, true),
        (
            "admit + drop (--max-connections-per-client)",
            &capped,
            false,
        ),
    ];
    for (name, limits, allow) in rows {
        for c in &clients {
            print!("| {name} | {} |", c.name());
            for t in THREADS {
                let ns = measure(t, |thread, i| {
                    let ip = c.ip(thread, i);
                    if allow {
                        let _ = std::hint::black_box(limits.allow(ip));
                    } else {
                        drop(std::hint::black_box(limits.admit(ip)));
                    }
                });
                print!(" {ns:.0} |");
            }
            println!();
        }
    }
    if let Some(bytes) = rated.rate_table_bytes() {
        println!(
            "\nthe rate table: {RATE_TABLE_PLACES} places, {bytes} bytes, whatever the number of clients"
        );
    }
}
