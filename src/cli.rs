//! The command-line flags exactly as typed. Nothing here is validated beyond what argh
//! does; `config.rs` turns these strings into values that cannot be invalid.

use argh::FromArgs;

/// roundhouse: an HTTP/1.1 load balancer on plain threads and blocking sockets.
#[derive(FromArgs, Debug, Default)]
pub struct Args {
    /// address to listen on for plain HTTP; repeat for more (default: 127.0.0.1:8000
    /// when neither --listen nor --tls-listen is given)
    // The default is config::DEFAULT_LISTEN, applied by config.rs: argh's would apply
    // even beside --tls-listen.
    #[argh(option)]
    pub listen: Vec<String>,

    /// address to listen on for HTTPS, with the --tls-cert certificates; repeat for
    /// more (default: none)
    #[argh(option)]
    pub tls_listen: Vec<String>,

    /// a PEM certificate (the chain, leaf first) for --tls-listen and --admin-tls;
    /// repeat with one --tls-key each, in the same order: each handshake gets the one
    /// naming the host the client asks for (SNI), else the first (default: none)
    #[argh(option)]
    pub tls_cert: Vec<String>,

    /// the private key of a --tls-cert, a PEM file (PKCS#8, PKCS#1 or SEC1); the first
    /// --tls-key is the first --tls-cert's (default: none)
    #[argh(option)]
    pub tls_key: Vec<String>,

    /// plain HTTP listeners answer every request with 308 to the same URL on https
    /// (default: off)
    #[argh(switch)]
    pub https_redirect: bool,

    /// every connection to every listener starts with a PROXY protocol header (v1 or v2,
    /// as HAProxy and cloud L4 balancers send it), whose client address is the client for
    /// everything; only from a --trusted-proxy (default: off)
    #[argh(switch)]
    pub proxy_protocol: bool,

    /// a proxy (L4 balancer, CDN) allowed to say who the client is, as an address or
    /// CIDR (10.0.0.0/8); repeat for more: its PROXY headers are believed, and so is the
    /// X-Forwarded-For of its requests (default: none)
    #[argh(option)]
    pub trusted_proxy: Vec<String>,

    /// a backend as host:port, http://host:port or https://host:port, optionally with ",weight=N" (1-1000)
    /// and ",backup" (used only while no other backend is up) and ",send-proxy" (each
    /// connection starts with a PROXY v2 header naming the client; none is pooled);
    /// repeat for each backend
    /// (default: 127.0.0.1:8081 and 127.0.0.1:8082)
    // 1-1000 is config::Weight's rule; a unit test in config/backend.rs checks it.
    #[argh(option)]
    pub backend: Vec<String>,

    /// with an https backend, check its certificate against the CA certificates in
    /// this PEM file (default: the system's roots)
    #[argh(option)]
    pub backend_ca: Option<String>,

    /// with an https backend, present the client certificate (chain) in this PEM file;
    /// needs --backend-key (default: none)
    #[argh(option)]
    pub backend_cert: Option<String>,

    /// the private key of --backend-cert, a PEM file (default: none)
    #[argh(option)]
    pub backend_key: Option<String>,

    /// with an https backend, do not check its certificate at all; logs a warning at
    /// start (default: off, certificates are checked)
    #[argh(switch)]
    pub backend_insecure: bool,

    /// how to pick a backend: round-robin (smooth weighted), random (by weight),
    /// least-conn (fewest in flight per weight), p2c (less loaded of two random),
    /// least-time (lowest latency × in flight), ip-hash (consistent, by client /24),
    /// hash (consistent, see --hash-key) (default: round-robin)
    // Each name and its words in parentheses are a line of config::STRATEGIES, in its
    // order; a unit test in config/strategy.rs fails when they part.
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

    /// upgrade tunnels (WebSocket...) open at once; beyond it, new upgrade requests get
    /// 503; 0 refuses every upgrade; tunnels also count against --max-connections
    /// (default: 10000)
    #[argh(option, default = "10000")]
    pub max_tunnels: usize,

    /// a tunnel with no byte either way for this long is closed, both sides; at least
    /// 1s (default: 10m)
    #[argh(option, default = "String::from(\"10m\")")]
    pub tunnel_idle_timeout: String,

    // Readiness and draining (issue 13).
    /// give the --listen and --tls-listen sockets SO_REUSEPORT, so that several
    /// roundhouse processes of one user can listen on one port and the kernel spreads
    /// connections over them; not the --admin port (default: off)
    #[argh(switch)]
    pub reuse_port: bool,

    /// on SIGTERM or SIGINT, keep accepting and serving for this long (every answer
    /// closing its connection, /ready answering 503) before the listeners close and
    /// --grace begins, e.g. 5s (default: 0s)
    #[argh(option, default = "String::from(\"0s\")")]
    pub drain_delay: String,

    // Backends found by DNS (issue 13).
    /// a --backend that names a host is looked up again this often: each address is a
    /// backend, new ones are added and vanished ones removed; at least 1s, or 0s to look
    /// names up only at start and on reload (default: 5s)
    #[argh(option, default = "String::from(\"5s\")")]
    pub resolve_interval: String,

    /// look backend names up at this DNS server, ip:port, over UDP (TCP when an answer
    /// is truncated) (default: the system's resolver)
    #[argh(option)]
    pub resolver: Option<String>,

    /// connections one client (an IPv4 address, or an IPv6 /64) may hold open at once;
    /// beyond it a new one gets 429 at once; 0 is no limit (default: 0)
    #[argh(option, default = "0")]
    pub max_connections_per_client: u32,

    /// requests one client (an IPv4 address, or an IPv6 /64) may send, e.g. 100/s,
    /// 6000/m or 10/h; beyond it, 429 with Retry-After (default: off)
    #[argh(option)]
    pub rate_limit: Option<String>,

    /// with --rate-limit, requests a client may send at once after a quiet spell (its
    /// token bucket's size) (default: the rate per second, at least 1)
    #[argh(option)]
    pub rate_burst: Option<u32>,

    /// largest request body accepted, e.g. 512k, 10MiB, 1G; larger gets 413
    /// (default: off, no limit)
    #[argh(option)]
    pub max_body: Option<String>,

    /// read a request body whole (in memory, then a temporary file) before it is
    /// forwarded, so a slow upload holds no worker: on or off (default: on)
    #[argh(option, default = "String::from(\"on\")")]
    pub request_buffering: String,

    /// memory that all buffered request bodies and answers for slow readers may take
    /// together; beyond it they go to temporary files (default: 64MiB)
    #[argh(option, default = "String::from(\"64MiB\")")]
    pub buffer_memory: String,

    /// access log format on stdout: seed, combined, json or off (default: seed)
    #[argh(option, default = "String::from(\"seed\")")]
    pub log: String,

    /// serve the admin interface (metrics, status, status page, backend changes) on
    /// this address; a non-loopback address needs --admin-token (default: off)
    #[argh(option)]
    pub admin: Option<String>,

    /// require "Authorization: Bearer TOKEN" on the admin interface (default: none,
    /// which --admin allows on loopback only)
    #[argh(option)]
    pub admin_token: Option<String>,

    /// the admin interface speaks HTTPS, with the --tls-cert certificates (default: off)
    #[argh(switch)]
    pub admin_tls: bool,

    /// add Server-Timing and X-Roundhouse-Trace (strategy, candidates and their scores,
    /// retries and why) to every answer (default: off)
    #[argh(switch)]
    pub trace_header: bool,

    /// active health checks: GET this path on every backend each --health-interval
    /// (default: off, no active checks)
    #[argh(option)]
    pub health_path: Option<String>,

    /// time between two health checks of one backend, jittered by ±10 % (default: 2s)
    #[argh(option, default = "String::from(\"2s\")")]
    pub health_interval: String,

    /// time for a backend to answer a health check (default: 1s)
    #[argh(option, default = "String::from(\"1s\")")]
    pub health_timeout: String,

    /// the statuses that pass a health check, a range or one status (default: 200-399)
    #[argh(option, default = "String::from(\"200-399\")")]
    pub health_status: String,

    /// passing health checks in a row that bring a backend back (default: 2)
    #[argh(option, default = "2")]
    pub rise: u32,

    /// failing health checks in a row that take a backend out (default: 3)
    #[argh(option, default = "3")]
    pub fall: u32,

    /// connect failures and timeouts (and 5xx with --eject-on-5xx) within --fail-window
    /// that eject a backend; 0 turns passive ejection off (default: 5)
    #[argh(option, default = "5")]
    pub max_fails: u32,

    /// the window in which --max-fails failures are counted (default: 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub fail_window: String,

    /// how long a first ejection lasts; each ejection in a row doubles it, up to 5
    /// minutes (default: 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub eject_time: String,

    /// count 5xx answers as failures towards --max-fails (default: off)
    #[argh(switch)]
    pub eject_on_5xx: bool,

    /// a backend that comes back ramps from 10 % to its full weight over this time
    /// (default: off, full weight at once)
    #[argh(option)]
    pub slow_start: Option<String>,

    /// when every backend is down: fail-open (send to all of them anyway) or 503
    /// (default: fail-open)
    #[argh(option, default = "String::from(\"fail-open\")")]
    pub all_down: String,

    /// resends of an idempotent request (or one with Idempotency-Key) whose backend
    /// closed before answering (default: one per other backend, at least 1)
    #[argh(option)]
    pub retries: Option<usize>,

    /// request bodies up to this size are kept to be sent again; larger ones are never
    /// resent, e.g. 0, 64k, 1MiB (default: 64k)
    #[argh(option, default = "String::from(\"64k\")")]
    pub retry_buffer: String,

    /// on SIGTERM or SIGINT, how long requests in flight may take to finish before
    /// roundhouse exits anyway (default: 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub grace: String,

    /// read flags from this TOML file: keys named like the flags in snake_case, backends
    /// as an array of tables named backend; a flag typed here wins; SIGHUP reloads it
    /// (default: none)
    #[argh(option)]
    pub config: Option<String>,

    /// check the flags and the --config file, print every problem with its line, and
    /// exit: 0 if valid, 2 if not (default: off)
    #[argh(switch)]
    pub check: bool,
}

/// Why parsing stopped early: `--help` (exit 0) or a mistake (exit 2), with the text to print.
#[derive(Debug)]
pub struct Exit {
    pub text: String,
    pub code: i32,
    /// The flag a mistake is about, `--workers`; `None` for `--help` and for a mistake
    /// that names no flag.
    pub flag: Option<String>,
}

/// Parses the arguments after the program name.
pub fn parse(args: &[&str]) -> Result<Args, Exit> {
    Args::from_args(&["roundhouse"], args).map_err(|early| match early.status {
        Ok(()) => Exit {
            text: early.output,
            code: 0,
            flag: None,
        },
        // argh adds a second line pointing at --help; one line naming the flag is enough.
        Err(()) => {
            let text = early.output.lines().next().unwrap_or("bad arguments");
            Exit {
                flag: named_flag(text).map(str::to_owned),
                text: text.to_owned(),
                code: 2,
            }
        }
    })
}

/// The first `--flag` a message names. argh says which flag it rejects only in its
/// text ("Error parsing option '--workers' with value 'x': ..."), so this is the one
/// place that reads an error's wording; everything after goes by `ConfigError::flag`.
fn named_flag(message: &str) -> Option<&str> {
    let start = message.find("--")?;
    let rest = &message[start..];
    let end = rest[2..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .map_or(rest.len(), |i| i + 2);
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blamed_flag_is_the_first_named() {
        assert_eq!(
            named_flag("--hash-key: only with --strategy hash"),
            Some("--hash-key")
        );
        assert_eq!(
            named_flag("Error parsing option '--workers' with value 'x'"),
            Some("--workers")
        );
        assert_eq!(named_flag("no flag here"), None);
    }

    #[test]
    fn a_mistake_carries_its_flag() {
        let exit = parse(&["--queue", "x"]).unwrap_err();
        assert_eq!((exit.code, exit.flag.as_deref()), (2, Some("--queue")));
        let exit = parse(&["--help"]).unwrap_err();
        assert_eq!((exit.code, exit.flag), (0, None));
    }
}
