//! The command-line flags exactly as typed. Nothing here is validated beyond what argh
//! does; `config.rs` turns these strings into values that cannot be invalid.

use argh::FromArgs;

/// roundhouse: an HTTP/1.1 load balancer on plain threads and blocking sockets.
#[derive(FromArgs, Debug, Default)]
pub struct Args {
    /// address to listen on (default: 127.0.0.1:8000)
    #[argh(option, default = "String::from(\"127.0.0.1:8000\")")]
    pub listen: String,

    /// a backend as host:port or http://host:port, optionally with ",weight=N" (1-1000);
    /// repeat for each backend (default: 127.0.0.1:8081 and 127.0.0.1:8082)
    #[argh(option)]
    pub backend: Vec<String>,

    /// how to pick a backend: round-robin (smooth weighted), random (by weight),
    /// least-conn (fewest in flight per weight), p2c (less loaded of two random),
    /// least-time (lowest latency × in flight), ip-hash (consistent, by client /24),
    /// hash (consistent, see --hash-key) (default: round-robin)
    #[argh(option, default = "String::from(\"round-robin\")")]
    pub strategy: String,

    /// with --strategy hash, what to hash: ip, header:NAME, cookie:NAME or path (without
    /// the query); requests without the header or cookie are spread (default: ip)
    #[argh(option)]
    pub hash_key: Option<String>,

    /// with --strategy hash, bounded load: no backend takes more than this many times
    /// its share of the requests in flight, so a hot key spills over; at least 1,
    /// e.g. 1.25 (default: off, a key never moves for load)
    #[argh(option)]
    pub hash_balance_factor: Option<String>,

    /// worker threads, each serving one connection at a time (default: 512)
    #[argh(option, default = "512")]
    pub workers: usize,

    /// connections with a request ready that may wait for a free worker before new
    /// ones get 503 (default: 1024)
    #[argh(option, default = "1024")]
    pub queue: usize,

    /// client connections open at once; more wait in the kernel backlog (default: 10000)
    #[argh(option, default = "10000")]
    pub max_connections: usize,

    /// time to open a TCP connection to a backend before trying the next (default: 3s)
    #[argh(option, default = "String::from(\"3s\")")]
    pub connect_timeout: String,

    /// time for a backend to start answering, and the longest pause while it sends
    /// (default: 60s)
    #[argh(option, default = "String::from(\"60s\")")]
    pub timeout: String,

    /// time for a client to send a whole request head; also the longest pause while it
    /// sends a body or reads the answer (default: 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub client_timeout: String,

    /// how long an idle keep-alive client connection stays open (default: 60s)
    #[argh(option, default = "String::from(\"60s\")")]
    pub idle_timeout: String,

    /// largest request body accepted, e.g. 512k, 10MiB, 1G; larger gets 413
    /// (default: off, no limit)
    #[argh(option)]
    pub max_body: Option<String>,

    /// access log format on stdout: seed, combined, json or off (default: seed)
    #[argh(option, default = "String::from(\"seed\")")]
    pub log: String,
}

/// Why parsing stopped early: `--help` (exit 0) or a mistake (exit 2), with the text to print.
#[derive(Debug)]
pub struct Exit {
    pub text: String,
    pub code: i32,
}

/// Parses the arguments after the program name.
pub fn parse(args: &[&str]) -> Result<Args, Exit> {
    Args::from_args(&["roundhouse"], args).map_err(|early| match early.status {
        Ok(()) => Exit {
            text: early.output,
            code: 0,
        },
        // argh adds a second line pointing at --help; one line naming the flag is enough.
        Err(()) => Exit {
            text: early
                .output
                .lines()
                .next()
                .unwrap_or("bad arguments")
                .to_owned(),
            code: 2,
        },
    })
}
