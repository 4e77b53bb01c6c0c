//! How long one pick takes, per strategy, for 2, 16 and 256 backends and 1, 2 and 8
//! threads picking at once from one shared balancer. A plain harness (no framework):
//! `make bench-pick`, or `cargo bench --bench pick`.
//!
//! Method: each thread picks in a loop for `RUN` and counts its picks; the table shows
//! CPU nanoseconds per pick: wall time × busy cores ÷ picks (busy cores = the fewer of
//! threads and cores, so that 8 threads on 2 cores are not counted as 8 cores). One pick
//! is `candidates(ctx).next()` plus taking and later dropping its `InFlight` guard, as
//! proxy.rs does; each thread keeps its last 4 picks in flight, so the load-aware
//! strategies see load. Keys vary over 1,024 paths and client addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use http::HeaderMap;
use roundhouse::balancer::{Backend, Balancer, InFlight, PickContext};
use roundhouse::config::{HashKey, Strategy};
use roundhouse::upstream::{Settings, Upstream};

const RUN: Duration = Duration::from_millis(200);
const SIZES: [usize; 3] = [2, 16, 256];
const THREADS: [usize; 3] = [1, 2, 8];

fn strategies() -> Vec<(&'static str, Strategy)> {
    vec![
        ("round-robin", Strategy::RoundRobin),
        ("random", Strategy::Random),
        ("least-conn", Strategy::LeastConn),
        ("p2c", Strategy::PowerOfTwo),
        ("least-time", Strategy::LeastTime),
        ("ip-hash", Strategy::IpHash),
        (
            "hash (path)",
            Strategy::Hash {
                key: HashKey::Path,
                balance_factor: None,
            },
        ),
        (
            "hash, factor 1.25",
            Strategy::Hash {
                key: HashKey::Path,
                balance_factor: Some(1.25),
            },
        ),
    ]
}

fn balancer(n: usize, strategy: &Strategy) -> Balancer {
    let settings = Settings {
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        workers: 1,
        backends: n,
        tls: Default::default(),
    };
    let backends = (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 80));
            let b = Backend::new(Upstream::new(addr, &settings), 1 + (i % 3) as u32);
            // A latency estimate for least-time, different per backend.
            b.start().record(Duration::from_micros(200 + 37 * i as u64));
            b
        })
        .collect();
    Balancer::with_backends(backends, strategy)
}

/// CPU nanoseconds per pick with `threads` threads.
fn measure(balancer: &Balancer, threads: usize, paths: &[String], ips: &[IpAddr]) -> f64 {
    let headers = HeaderMap::new();
    let start = Instant::now();
    let picks: u64 = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let headers = &headers;
                s.spawn(move || {
                    let mut window: [Option<InFlight<'_>>; 4] = Default::default();
                    let mut picks = 0u64;
                    let mut k = t * 97;
                    while start.elapsed() < RUN {
                        for _ in 0..256 {
                            k = (k + 1) % paths.len();
                            let ctx = PickContext {
                                client: ips[k],
                                path: &paths[k],
                                headers,
                            };
                            let backend = balancer.candidates(&ctx).next().expect("a pick");
                            window[k % 4] = Some(backend.start());
                        }
                        picks += 256;
                    }
                    picks
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    start.elapsed().as_nanos() as f64 * threads.min(cores) as f64 / picks as f64
}

fn main() {
    let paths: Vec<String> = (0..1024).map(|i| format!("/item/{i}")).collect();
    let ips: Vec<IpAddr> = (0..1024u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 263)))
        .collect();
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!("ns per pick (CPU time), {cores} cores; columns: backends x threads\n");
    print!("| strategy |");
    for n in SIZES {
        for t in THREADS {
            print!(" {n}b {t}t |");
        }
    }
    println!();
    println!("|---|{}", "---:|".repeat(SIZES.len() * THREADS.len()));
    for (name, strategy) in strategies() {
        print!("| {name} |");
        for n in SIZES {
            let b = balancer(n, &strategy);
            for t in THREADS {
                print!(" {:.0} |", measure(&b, t, &paths, &ips));
            }
        }
        println!();
    }
}
