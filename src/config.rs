//! The validated configuration: what the balancer runs with. `Config::from_cli` turns the
//! flags of `cli.rs` into values that cannot be invalid; every error names the flag and
//! the value, in one line.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

use crate::cli::{self, Args};

/// Largest request head (request line and header fields) accepted; more gets 431.
pub const MAX_HEAD: usize = 32 * 1024;

/// The backends used when no `--backend` is given: the blog's two.
pub const DEFAULT_BACKENDS: [&str; 2] = ["127.0.0.1:8081", "127.0.0.1:8082"];

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Never empty: `from_cli` falls back to DEFAULT_BACKENDS.
    pub backends: Vec<BackendSpec>,
    /// True when `backends` came from DEFAULT_BACKENDS (said in the startup line).
    pub default_backends: bool,
    pub strategy: Strategy,
    pub workers: NonZeroUsize,
    pub queue: NonZeroUsize,
    pub max_connections: NonZeroUsize,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub client_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_body: Option<u64>,
    pub log: LogFormat,
    /// `--admin` and `--admin-token`: the admin interface; `None`: off.
    pub admin: Option<AdminConfig>,
    /// `--trace-header`: answers carry Server-Timing and X-Roundhouse-Trace.
    pub trace_header: bool,
    /// Health checks, passive ejection, slow start, all-down policy (health.rs).
    pub health: HealthConfig,
    /// Resends after a backend closed before answering (retry.rs, proxy.rs).
    pub retry: RetryConfig,
    /// How long in-flight requests may take to finish at shutdown (`--grace`).
    pub grace: Duration,
    /// The `--config` file the flags were read from, if any (reloaded on SIGHUP).
    pub config_file: Option<PathBuf>,
}

/// Where the admin interface listens and the token it requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    /// Required as `Authorization: Bearer TOKEN`; `None` only on a loopback address.
    pub token: Option<String>,
}

/// One `--backend` flag, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    pub weight: NonZeroU32,
    /// `,backup`: used only while no primary backend is up.
    pub backup: bool,
}

/// How backend failures are noticed and handled; see health.rs.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    /// Active checks (`--health-path`); `None`: off.
    pub checks: Option<Checks>,
    /// Failures within `fail_window` that eject a backend; `None` (`--max-fails 0`): off.
    pub max_fails: Option<NonZeroU32>,
    pub fail_window: Duration,
    /// The first ejection's length; doubled for each one in a row.
    pub eject_time: Duration,
    /// Whether 5xx answers count as failures.
    pub eject_on_5xx: bool,
    /// How long a backend that comes back takes to reach its full weight.
    pub slow_start: Option<Duration>,
    pub all_down: AllDown,
}

/// Active health checks: a GET of `path` on every backend each `interval`.
#[derive(Clone, Debug, PartialEq)]
pub struct Checks {
    /// Origin-form, starting with `/`.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// The statuses that pass, inclusive.
    pub status: (u16, u16),
    /// Passing probes in a row that bring a backend up, failing ones that take it down.
    pub rise: NonZeroU32,
    pub fall: NonZeroU32,
}

/// What happens when every backend (backups included) is down (`--all-down`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllDown {
    /// Send to all of them anyway: the health verdicts may be what is wrong.
    FailOpen,
    /// Answer 503.
    Unavailable,
}

/// Resends of a request whose backend closed or reset the connection before answering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Resends per request; `None`: one per other backend, at least one.
    pub retries: Option<usize>,
    /// Largest request body kept to be sent again.
    pub buffer: usize,
}

/// How a backend is picked for each request; see `balancer/` for each one's algorithm.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// Smooth weighted round robin (nginx's).
    RoundRobin,
    /// A random backend, by weight.
    Random,
    /// Fewest requests in flight per weight.
    LeastConn,
    /// The less loaded of two random backends.
    PowerOfTwo,
    /// Lowest peak-EWMA latency × (requests in flight + 1), per weight.
    LeastTime,
    /// Consistent hashing of the client's network (nginx's `ip_hash` key).
    IpHash,
    /// Consistent hashing of `key`; with a balance factor, bounded load.
    Hash {
        key: HashKey,
        /// At least 1: no backend takes more than this times its share of the
        /// requests in flight. `None`: keys never move for load.
        balance_factor: Option<f64>,
    },
}

/// The strategies' names as `--strategy` takes them, in the order `--help` lists them.
pub const STRATEGIES: [&str; 7] = [
    "round-robin",
    "random",
    "least-conn",
    "p2c",
    "least-time",
    "ip-hash",
    "hash",
];

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::Random => "random",
            Self::LeastConn => "least-conn",
            Self::PowerOfTwo => "p2c",
            Self::LeastTime => "least-time",
            Self::IpHash => "ip-hash",
            Self::Hash { .. } => "hash",
        }
    }
}

/// What `--strategy hash` hashes (`--hash-key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// The client's address (the default).
    Ip,
    /// The value of a request header; requests without it are spread.
    Header(HeaderName),
    /// The value of a cookie; requests without it are spread.
    Cookie(String),
    /// The path, without the query string.
    Path,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// The blog's line: "Received request from X, forwarding to Y", then the request.
    Seed,
    /// nginx's combined format.
    Combined,
    /// One JSON object per line.
    Json,
    Off,
}

impl Config {
    /// Parses and validates command-line arguments (without the program name). Used by
    /// tests and embedders; `main.rs` calls `cli::parse` and `from_cli` itself so that
    /// `--help` can exit 0.
    pub fn from_args(args: &[&str]) -> Result<Config, String> {
        let args = cli::parse(args).map_err(|exit| exit.text)?;
        Config::from_cli(args)
    }

    pub fn from_cli(args: Args) -> Result<Config, String> {
        let listen = resolve(&args.listen).map_err(|why| format!("--listen: {why}"))?;
        let health = health_config(&args)?;
        let admin = admin_config(&args, listen)?;
        let default_backends = args.backend.is_empty();
        let typed: Vec<String> = if default_backends {
            DEFAULT_BACKENDS.iter().map(|s| s.to_string()).collect()
        } else {
            args.backend
        };
        let backends = typed
            .iter()
            .map(|b| parse_backend(b).map_err(|why| format!("--backend: {why}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            listen,
            backends,
            default_backends,
            strategy: strategy(
                &args.strategy,
                args.hash_key.as_deref(),
                args.hash_balance_factor.as_deref(),
            )?,
            workers: nonzero("--workers", args.workers)?,
            queue: nonzero("--queue", args.queue)?,
            max_connections: nonzero("--max-connections", args.max_connections)?,
            connect_timeout: duration("--connect-timeout", &args.connect_timeout)?,
            timeout: duration("--timeout", &args.timeout)?,
            client_timeout: duration("--client-timeout", &args.client_timeout)?,
            idle_timeout: duration("--idle-timeout", &args.idle_timeout)?,
            grace: duration("--grace", &args.grace)?,
            config_file: args.config.as_ref().map(PathBuf::from),
            max_body: match &args.max_body {
                None => None,
                Some(s) => Some(parse_size(s).map_err(|why| format!("--max-body: {why}"))?),
            },
            log: match args.log.as_str() {
                "seed" => LogFormat::Seed,
                "combined" => LogFormat::Combined,
                "json" => LogFormat::Json,
                "off" => LogFormat::Off,
                other => {
                    return Err(format!(
                        "--log: unknown format '{other}' (known: seed, combined, json, off)"
                    ));
                }
            },
            admin,
            trace_header: args.trace_header,
            health,
            retry: RetryConfig {
                retries: args.retries,
                buffer: parse_size(&args.retry_buffer)
                    .ok()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        format!(
                            "--retry-buffer: '{}' is not a size (examples: 0, 64k, 1MiB)",
                            args.retry_buffer
                        )
                    })?,
            },
        })
    }
}

/// `--admin` and `--admin-token`. The admin interface changes the backends, so off
/// loopback it must not be open to anyone who can reach the port.
fn admin_config(args: &Args, listen: SocketAddr) -> Result<Option<AdminConfig>, String> {
    let token = match &args.admin_token {
        Some(t) if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err("--admin-token: must be non-empty visible ASCII, no spaces".into());
        }
        token => token.clone(),
    };
    let Some(typed) = &args.admin else {
        return match token {
            Some(_) => Err("--admin-token: only with --admin".into()),
            None => Ok(None),
        };
    };
    let addr = resolve(typed).map_err(|why| format!("--admin: {why}"))?;
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "--admin: '{typed}' is not a loopback address; set --admin-token to serve it there"
        ));
    }
    if addr == listen && addr.port() != 0 {
        return Err(format!(
            "--admin: '{typed}' is the proxy's --listen address; pick another port"
        ));
    }
    Ok(Some(AdminConfig { addr, token }))
}

/// The health and failure flags: `--health-*`, `--rise`, `--fall`, `--max-fails`,
/// `--fail-window`, `--eject-*`, `--slow-start`, `--all-down`.
fn health_config(args: &Args) -> Result<HealthConfig, String> {
    let checks = match &args.health_path {
        None => None,
        Some(path) if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic()) => {
            return Err(format!(
                "--health-path: '{path}' is not a path (example: /health)"
            ));
        }
        Some(path) => Some(Checks {
            path: path.clone(),
            interval: duration("--health-interval", &args.health_interval)?,
            timeout: duration("--health-timeout", &args.health_timeout)?,
            status: status_range(&args.health_status)?,
            rise: NonZeroU32::new(args.rise).ok_or("--rise: must be at least 1")?,
            fall: NonZeroU32::new(args.fall).ok_or("--fall: must be at least 1")?,
        }),
    };
    Ok(HealthConfig {
        checks,
        max_fails: NonZeroU32::new(args.max_fails),
        fail_window: duration("--fail-window", &args.fail_window)?,
        eject_time: duration("--eject-time", &args.eject_time)?,
        eject_on_5xx: args.eject_on_5xx,
        slow_start: args
            .slow_start
            .as_deref()
            .map(|s| duration("--slow-start", s))
            .transpose()?,
        all_down: match args.all_down.as_str() {
            "fail-open" => AllDown::FailOpen,
            "503" => AllDown::Unavailable,
            other => {
                return Err(format!(
                    "--all-down: unknown policy '{other}' (known: fail-open, 503)"
                ));
            }
        },
    })
}

/// `200-399` or a single status like `204`.
fn status_range(s: &str) -> Result<(u16, u16), String> {
    let status = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n))
    };
    let range = match s.split_once('-') {
        Some((lo, hi)) => status(lo).zip(status(hi)),
        None => status(s).map(|n| (n, n)),
    };
    range.filter(|(lo, hi)| lo <= hi).ok_or_else(|| {
        format!("--health-status: '{s}' is not a status or range (examples: 200, 200-399)")
    })
}

/// `--strategy` with the flags that only `hash` takes.
fn strategy(
    name: &str,
    key: Option<&str>,
    balance_factor: Option<&str>,
) -> Result<Strategy, String> {
    let strategy = match name {
        "round-robin" => Strategy::RoundRobin,
        "random" => Strategy::Random,
        "least-conn" => Strategy::LeastConn,
        "p2c" => Strategy::PowerOfTwo,
        "least-time" => Strategy::LeastTime,
        "ip-hash" => Strategy::IpHash,
        "hash" => Strategy::Hash {
            key: key.map_or(Ok(HashKey::Ip), hash_key)?,
            balance_factor: balance_factor.map(parse_balance_factor).transpose()?,
        },
        other => {
            return Err(format!(
                "--strategy: unknown strategy '{other}' (known: {})",
                STRATEGIES.join(", ")
            ));
        }
    };
    if !matches!(strategy, Strategy::Hash { .. }) {
        if key.is_some() {
            return Err(format!(
                "--hash-key: only with --strategy hash, not --strategy {name}"
            ));
        }
        if balance_factor.is_some() {
            return Err(format!(
                "--hash-balance-factor: only with --strategy hash, not --strategy {name}"
            ));
        }
    }
    Ok(strategy)
}

/// `ip`, `header:NAME`, `cookie:NAME` or `path`.
fn hash_key(s: &str) -> Result<HashKey, String> {
    let bad = |why: &str| format!("--hash-key: '{s}' {why}");
    match s.split_once(':') {
        None if s == "ip" => Ok(HashKey::Ip),
        None if s == "path" => Ok(HashKey::Path),
        Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
            .map(HashKey::Header)
            .map_err(|_| bad("does not name a header field")),
        Some(("cookie", name))
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) =>
        {
            Ok(HashKey::Cookie(name.to_owned()))
        }
        Some(("cookie", _)) => Err(bad("does not name a cookie")),
        _ => Err(bad(
            "is not a key (known: ip, header:NAME, cookie:NAME, path)",
        )),
    }
}

/// A number of at least 1, like `1.25`.
fn parse_balance_factor(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => Ok(f),
        _ => Err(format!(
            "--hash-balance-factor: '{s}' is not a number of at least 1 (example: 1.25)"
        )),
    }
}

fn nonzero(flag: &str, n: usize) -> Result<NonZeroUsize, String> {
    NonZeroUsize::new(n).ok_or_else(|| format!("{flag}: must be at least 1"))
}

/// Reads `500ms`, `2s`, `1m`, `1h 30m`. Zero is refused: every timeout here must be able
/// to fire.
fn duration(flag: &str, s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(format!("{flag}: '{s}' must be longer than zero")),
        Ok(d) => Ok(d),
        Err(_) => Err(format!(
            "{flag}: '{s}' is not a duration (examples: 500ms, 2s, 1m)"
        )),
    }
}

/// `host:port`, resolved once at startup (the first address wins).
fn resolve(s: &str) -> Result<SocketAddr, String> {
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|_| format!("'{s}' is not host:port"))?;
    addrs
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

/// `host:port` or `http://host:port`, optionally followed by `,weight=N`.
fn parse_backend(s: &str) -> Result<BackendSpec, String> {
    let mut parts = s.split(',');
    let addr = parts.next().unwrap_or_default();
    let addr = addr.strip_prefix("http://").unwrap_or(addr);
    let addr = addr.strip_suffix('/').unwrap_or(addr);
    if addr.contains("://") || addr.contains('/') {
        return Err(format!("'{s}' is not host:port or http://host:port"));
    }
    let addr = resolve(addr)?;
    let mut weight = NonZeroU32::MIN;
    let mut backup = false;
    for option in parts {
        match option.split_once('=') {
            None if option == "backup" => backup = true,
            Some(("weight", n)) => {
                weight = n
                    .parse::<NonZeroU32>()
                    .ok()
                    .filter(|w| w.get() <= 1000)
                    .ok_or_else(|| {
                        format!("'{s}': weight must be a whole number from 1 to 1000")
                    })?;
            }
            _ => {
                return Err(format!(
                    "'{s}': unknown option '{option}' (known: weight=N, backup)"
                ));
            }
        }
    }
    Ok(BackendSpec {
        addr,
        weight,
        backup,
    })
}

/// `512`, `64k`, `10MiB`, `1G`: bytes, with 1024-based units.
fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a size (examples: 512k, 10MiB, 1G)");
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let shift = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_blogs_setup() {
        let c = Config::from_args(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8000".parse().unwrap());
        let addrs: Vec<String> = c.backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(addrs, DEFAULT_BACKENDS);
        assert!(c.default_backends);
        assert_eq!(c.workers.get(), 512);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert_eq!(c.max_body, None);
    }

    #[test]
    fn backend_forms() {
        let b = parse_backend("http://127.0.0.1:9000/,weight=5").unwrap();
        assert_eq!(b.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(b.weight.get(), 5);
        assert!(parse_backend("127.0.0.1").is_err());
        assert!(parse_backend("https://127.0.0.1:9000").is_err());
        assert!(parse_backend("127.0.0.1:9000,weight=0").is_err());
        assert!(parse_backend("127.0.0.1:9000,wieght=2").is_err());
        assert!(parse_backend("127.0.0.1:9000,backup").unwrap().backup);
        assert!(!b.backup);
    }

    #[test]
    fn health_and_retry_defaults_and_errors() {
        let c = Config::from_args(&[]).unwrap();
        assert_eq!(c.health.checks, None);
        assert_eq!(c.health.max_fails.map(|n| n.get()), Some(5));
        assert_eq!(c.health.fail_window, Duration::from_secs(10));
        assert_eq!(c.health.eject_time, Duration::from_secs(10));
        assert_eq!(c.health.all_down, AllDown::FailOpen);
        assert_eq!(
            c.retry,
            RetryConfig {
                retries: None,
                buffer: 64 * 1024
            }
        );
        let c = Config::from_args(&["--health-path", "/hz", "--health-status", "204"]).unwrap();
        let checks = c.health.checks.unwrap();
        assert_eq!(checks.interval, Duration::from_secs(2));
        assert_eq!(checks.timeout, Duration::from_secs(1));
        assert_eq!((checks.rise.get(), checks.fall.get()), (2, 3));
        assert_eq!(checks.status, (204, 204));
        for (args, flag) in [
            (&["--health-path", "hz"][..], "--health-path: 'hz'"),
            (
                &["--health-path", "/", "--health-status", "399-200"],
                "--health-status: '399-200'",
            ),
            (&["--health-path", "/", "--rise", "0"], "--rise"),
            (
                &["--all-down", "maybe"],
                "--all-down: unknown policy 'maybe'",
            ),
            (&["--retry-buffer", "lots"], "--retry-buffer: 'lots'"),
            (&["--slow-start", "0s"], "--slow-start: '0s'"),
        ] {
            let err = Config::from_args(args).unwrap_err();
            assert!(err.starts_with(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            duration("--x", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(duration("--x", "1m").unwrap(), Duration::from_secs(60));
        assert!(duration("--x", "5x").unwrap_err().contains("--x: '5x'"));
        assert!(duration("--x", "0s").is_err());
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn errors_name_the_flag() {
        let err = Config::from_args(&["--workers", "0"]).unwrap_err();
        assert!(err.starts_with("--workers"), "{err}");
        let err = Config::from_args(&["--strategy", "nope"]).unwrap_err();
        assert!(err.contains("'nope'"), "{err}");
    }

    #[test]
    fn every_strategy_is_known_by_its_name() {
        for name in STRATEGIES {
            let c = Config::from_args(&["--strategy", name]).unwrap();
            assert_eq!(c.strategy.name(), name);
        }
        assert_eq!(
            Config::from_args(&[]).unwrap().strategy,
            Strategy::RoundRobin
        );
    }

    #[test]
    fn hash_keys_and_balance_factor() {
        let hash = |extra: &[&str]| {
            let mut args = vec!["--strategy", "hash"];
            args.extend_from_slice(extra);
            Config::from_args(&args).map(|c| c.strategy)
        };
        assert_eq!(
            hash(&[]),
            Ok(Strategy::Hash {
                key: HashKey::Ip,
                balance_factor: None
            })
        );
        assert_eq!(
            hash(&[
                "--hash-key",
                "header:X-User",
                "--hash-balance-factor",
                "1.25"
            ]),
            Ok(Strategy::Hash {
                key: HashKey::Header(HeaderName::from_static("x-user")),
                balance_factor: Some(1.25)
            })
        );
        assert!(matches!(
            hash(&["--hash-key", "cookie:sid"]),
            Ok(Strategy::Hash { key: HashKey::Cookie(c), .. }) if c == "sid"
        ));
        assert!(matches!(
            hash(&["--hash-key", "path"]),
            Ok(Strategy::Hash {
                key: HashKey::Path,
                ..
            })
        ));
        for bad in [
            "header:",
            "header:a b",
            "cookie:",
            "cookie:a;b",
            "url",
            "ip:x",
        ] {
            let err = hash(&["--hash-key", bad]).unwrap_err();
            assert!(err.starts_with("--hash-key: '"), "{err}");
        }
        for bad in ["0.5", "-1", "NaN", "inf", "lots"] {
            let err = hash(&["--hash-balance-factor", bad]).unwrap_err();
            assert!(err.starts_with("--hash-balance-factor: '"), "{err}");
        }
    }

    #[test]
    fn hash_flags_need_the_hash_strategy() {
        let err = Config::from_args(&["--hash-key", "path"]).unwrap_err();
        assert!(
            err.starts_with("--hash-key: only with --strategy hash"),
            "{err}"
        );
        let err = Config::from_args(&["--strategy", "ip-hash", "--hash-balance-factor", "2"])
            .unwrap_err();
        assert!(err.starts_with("--hash-balance-factor:"), "{err}");
    }
}
