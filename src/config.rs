//! The validated configuration: what the balancer runs with. `Config::from_cli` turns the
//! flags of `cli.rs` into values that cannot be invalid; every error is a `ConfigError`
//! that names the flag and the value, in one line.
//!
//! The pieces: `listeners.rs` (the plain and TLS listeners and their certificates),
//! `strategy.rs` (the strategies and their one list of names), `backend.rs` (`--backend`,
//! its names looked up through `dns.rs`, and the weight rule), `values.rs` (durations,
//! sizes, addresses) and `error.rs` (`ConfigError`).

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{self, Args};
use crate::dns::Resolver;
use crate::upstream::{Tls, TlsFlags};

mod backend;
mod error;
mod limits;
mod listeners;
mod strategy;
mod values;

pub use backend::{BackendSource, BackendSpec, HostPort, WEIGHT_RULE, Weight, expand};
pub use error::ConfigError;
pub use limits::RateLimit;
#[cfg(all(test, feature = "tls"))]
pub(crate) use listeners::test_pairs;
pub use listeners::{CertPair, DEFAULT_LISTEN, ListenerTls};
pub use strategy::{HashKey, STRATEGIES, Strategy, StrategyKind, StrategyName};

use backend::{check_backend, parse_backend};
use listeners::Listeners;
use values::{duration, duration_at_least, duration_or_zero, nonzero, parse_size, resolve};

/// Largest request head (request line and header fields) accepted; more gets 431.
pub const MAX_HEAD: usize = 32 * 1024;

/// The shortest `--tunnel-idle-timeout`: tunnels are timed to the second.
pub const MIN_TUNNEL_IDLE: Duration = Duration::from_secs(1);

/// The shortest `--resolve-interval` but 0s (off): a name is looked up at most once a
/// second.
pub const MIN_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);

/// The backends used when no `--backend` is given: the blog's two.
pub const DEFAULT_BACKENDS: [&str; 2] = ["127.0.0.1:8081", "127.0.0.1:8082"];

#[derive(Clone, Debug)]
pub struct Config {
    /// The plain HTTP listeners (`--listen`): DEFAULT_LISTEN when neither `--listen` nor
    /// `--tls-listen` is given; empty when only `--tls-listen` is.
    pub listen: Vec<SocketAddr>,
    /// The HTTPS listeners (`--tls-listen`); never given without a certificate pair.
    pub tls_listen: Vec<SocketAddr>,
    /// `--tls-cert` and `--tls-key`: the certificates of the TLS listeners and of an
    /// `--admin-tls` interface.
    pub listener_tls: ListenerTls,
    /// `--https-redirect`: plain listeners answer every request with 308 to https.
    /// Never set without a plain listener.
    pub https_redirect: bool,
    /// `--proxy-protocol`: every connection starts with a PROXY header. Never set
    /// without a trusted proxy.
    pub proxy_protocol: bool,
    /// `--trusted-proxy`: who may say who the client is (proxy_protocol.rs).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The backend set: `expand(&backend_sources)`. Never empty when read (`from_cli`
    /// falls back to DEFAULT_BACKENDS, and a name must have an address then); empty
    /// only while every `--backend` names a host that has gone (discovery.rs).
    pub backends: Vec<BackendSpec>,
    /// True when `backends` came from DEFAULT_BACKENDS (said in the startup line).
    pub default_backends: bool,
    /// `--backend-ca`, `--backend-cert`, `--backend-key`, `--backend-insecure` as given.
    pub backend_tls: TlsFlags,
    /// What `backend_tls` names, read at start: the TLS side of https backends.
    pub tls: Tls,
    pub strategy: Strategy,
    pub workers: NonZeroUsize,
    pub queue: NonZeroUsize,
    pub max_connections: NonZeroUsize,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub client_timeout: Duration,
    pub idle_timeout: Duration,
    /// `--max-tunnels`: Upgrade tunnels open at once; beyond it an upgrade request gets
    /// 503, and 0 refuses every one. A tunnel's client connection also counts against
    /// `max_connections`.
    pub max_tunnels: usize,
    /// `--tunnel-idle-timeout`: a tunnel with no byte either way for this long is closed,
    /// both sides. Never under MIN_TUNNEL_IDLE.
    pub tunnel_idle_timeout: Duration,
    // Readiness and draining (issue 13).
    /// `--reuse-port`: the proxy's listening sockets get SO_REUSEPORT (listener.rs).
    pub reuse_port: bool,
    /// `--drain-delay`: after SIGTERM or SIGINT, how long the listeners keep accepting,
    /// not ready, before the graceful stop (shutdown.rs). Zero: no drain.
    pub drain_delay: Duration,
    // Backends found by DNS (issue 13).
    /// Every `--backend` as typed, in order, with the addresses each stands for now:
    /// what the resolver thread (discovery.rs) looks up again, and changes.
    pub backend_sources: Vec<BackendSource>,
    /// `--resolve-interval`: how often the names among them are looked up again;
    /// `None` (`0s`): only when the configuration is read (start and reload). Never
    /// under MIN_RESOLVE_INTERVAL.
    pub resolve_interval: Option<Duration>,
    /// `--resolver`: where the names are looked up.
    pub resolver: Resolver,
    // Fair limits per client (issue 13); limits.rs enforces them.
    /// `--max-connections-per-client`: connections one client (an IPv4 address, or an
    /// IPv6 /64) may hold open at once; beyond it a new one gets 429. `None` (0): no
    /// limit.
    pub max_connections_per_client: Option<NonZeroU32>,
    /// `--rate-limit` and `--rate-burst`: requests per client, a token bucket each;
    /// beyond it a request gets 429. `None`: off.
    pub rate_limit: Option<RateLimit>,
    pub max_body: Option<u64>,
    /// `--request-buffering`: request bodies are read whole on the event side before a
    /// worker forwards them.
    pub request_buffering: bool,
    /// `--buffer-memory`: the memory all spill buffers may hold together (spill.rs).
    pub buffer_memory: u64,
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
    /// `--admin-tls`: HTTPS with `Config::listener_tls`, never set without a pair.
    pub tls: bool,
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
    pub fn from_args(args: &[&str]) -> Result<Config, ConfigError> {
        Config::from_cli(cli::parse(args)?)
    }

    pub fn from_cli(args: Args) -> Result<Config, ConfigError> {
        let listeners = listeners::listeners(&args)?;

        let health = health_config(&args)?;
        let admin = admin_config(&args, &listeners)?;
        let default_backends = args.backend.is_empty();
        let typed: Vec<String> = if default_backends {
            DEFAULT_BACKENDS.iter().map(|s| s.to_string()).collect()
        } else {
            args.backend
        };
        let resolver = match &args.resolver {
            None => Resolver::System,
            Some(s) => Resolver::Server(s.parse().map_err(|_| {
                ConfigError::new(
                    "--resolver",
                    format!("'{s}' is not ip:port (example: 127.0.0.1:53)"),
                )
            })?),
        };
        let backend_sources = typed
            .iter()
            .map(|b| parse_backend(b, &resolver).map_err(|why| ConfigError::new("--backend", why)))
            .collect::<Result<Vec<_>, _>>()?;
        let backends = expand(&backend_sources);
        let backend_tls = TlsFlags {
            ca: args.backend_ca.as_ref().map(PathBuf::from),
            cert: args.backend_cert.as_ref().map(PathBuf::from),
            key: args.backend_key.as_ref().map(PathBuf::from),
            insecure: args.backend_insecure,
        };
        let https = backend_sources.iter().any(|b| b.https.is_some());
        let tls = Tls::load(&backend_tls, https)?;
        Ok(Config {
            listen: listeners.listen,
            tls_listen: listeners.tls_listen,
            listener_tls: listeners.listener_tls,
            https_redirect: listeners.https_redirect,
            proxy_protocol: listeners.proxy_protocol,
            trusted_proxies: listeners.trusted_proxies,
            backends,
            default_backends,
            backend_tls,
            tls,
            strategy: strategy::strategy(
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
            max_tunnels: args.max_tunnels,
            tunnel_idle_timeout: duration_at_least(
                "--tunnel-idle-timeout",
                &args.tunnel_idle_timeout,
                MIN_TUNNEL_IDLE,
            )?,
            reuse_port: args.reuse_port,
            drain_delay: duration_or_zero("--drain-delay", &args.drain_delay)?,
            backend_sources,
            resolve_interval: match humantime::parse_duration(&args.resolve_interval) {
                Ok(d) if d.is_zero() => None,
                _ => Some(duration_at_least(
                    "--resolve-interval",
                    &args.resolve_interval,
                    MIN_RESOLVE_INTERVAL,
                )?),
            },
            resolver,
            max_connections_per_client: NonZeroU32::new(args.max_connections_per_client),
            rate_limit: limits::rate_limit(args.rate_limit.as_deref(), args.rate_burst)?,
            grace: duration("--grace", &args.grace)?,
            config_file: args.config.as_ref().map(PathBuf::from),
            max_body: match &args.max_body {
                None => None,
                Some(s) => Some(parse_size(s).map_err(|why| ConfigError::new("--max-body", why))?),
            },
            request_buffering: match args.request_buffering.as_str() {
                "on" => true,
                "off" => false,
                other => {
                    return Err(ConfigError::new(
                        "--request-buffering",
                        format!("'{other}' is neither on nor off"),
                    ));
                }
            },
            buffer_memory: parse_size(&args.buffer_memory)
                .map_err(|why| ConfigError::new("--buffer-memory", why))?,
            log: match args.log.as_str() {
                "seed" => LogFormat::Seed,
                "combined" => LogFormat::Combined,
                "json" => LogFormat::Json,
                "off" => LogFormat::Off,
                other => {
                    return Err(ConfigError::new(
                        "--log",
                        format!("unknown format '{other}' (known: seed, combined, json, off)"),
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
                        ConfigError::new(
                            "--retry-buffer",
                            format!(
                                "'{}' is not a size (examples: 0, 64k, 1MiB)",
                                args.retry_buffer
                            ),
                        )
                    })?,
            },
        })
    }
}

/// Checks one `--backend` value without looking its name up: for the config file, which
/// checks each `[[backend]]` table alone before it reads the flags together (with
/// `--resolver`).
pub fn check_backend_flag(value: &str) -> Result<(), ConfigError> {
    check_backend(value)
        .map(drop)
        .map_err(|why| ConfigError::new("--backend", why))
}

/// `--admin`, `--admin-token` and `--admin-tls`. The admin interface changes the
/// backends, so off loopback it must not be open to anyone who can reach the port.
fn admin_config(args: &Args, listeners: &Listeners) -> Result<Option<AdminConfig>, ConfigError> {
    let token = match &args.admin_token {
        Some(t) if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(ConfigError::new(
                "--admin-token",
                "must be non-empty visible ASCII, no spaces",
            ));
        }
        token => token.clone(),
    };
    let Some(typed) = &args.admin else {
        return match token {
            Some(_) => Err(ConfigError::new("--admin-token", "only with --admin")),
            None => Ok(None),
        };
    };
    let bad = |why: String| ConfigError::new("--admin", why);
    let addr = resolve(typed).map_err(bad)?;
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(bad(format!(
            "'{typed}' is not a loopback address; set --admin-token to serve it there"
        )));
    }
    if let Some(flag) = listeners.flag_of(addr) {
        return Err(bad(format!(
            "'{typed}' is the proxy's {flag} address; pick another port"
        )));
    }
    Ok(Some(AdminConfig {
        addr,
        token,
        // `listeners` refused it without a certificate pair.
        tls: args.admin_tls,
    }))
}

/// The health and failure flags: `--health-*`, `--rise`, `--fall`, `--max-fails`,
/// `--fail-window`, `--eject-*`, `--slow-start`, `--all-down`.
fn health_config(args: &Args) -> Result<HealthConfig, ConfigError> {
    let at_least_1 = |flag: &str| ConfigError::new(flag, "must be at least 1");
    let checks = match &args.health_path {
        None => None,
        Some(path) if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic()) => {
            return Err(ConfigError::new(
                "--health-path",
                format!("'{path}' is not a path (example: /health)"),
            ));
        }
        Some(path) => Some(Checks {
            path: path.clone(),
            interval: duration("--health-interval", &args.health_interval)?,
            timeout: duration("--health-timeout", &args.health_timeout)?,
            status: status_range(&args.health_status)?,
            rise: NonZeroU32::new(args.rise).ok_or_else(|| at_least_1("--rise"))?,
            fall: NonZeroU32::new(args.fall).ok_or_else(|| at_least_1("--fall"))?,
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
                return Err(ConfigError::new(
                    "--all-down",
                    format!("unknown policy '{other}' (known: fail-open, 503)"),
                ));
            }
        },
    })
}

/// `200-399` or a single status like `204`.
fn status_range(s: &str) -> Result<(u16, u16), ConfigError> {
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
        ConfigError::new(
            "--health-status",
            format!("'{s}' is not a status or range (examples: 200, 200-399)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_blogs_setup() {
        let c = Config::from_args(&[]).unwrap();
        assert_eq!(c.listen, ["127.0.0.1:8000".parse().unwrap()]);
        let addrs: Vec<String> = c.backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(addrs, DEFAULT_BACKENDS);
        assert!(c.default_backends);
        assert_eq!(c.workers.get(), 512);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert_eq!(c.max_body, None);
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
            let err = Config::from_args(args).unwrap_err().to_string();
            assert!(err.starts_with(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn tunnel_limits_default_to_10000_and_10m_and_idle_is_at_least_a_second() {
        let c = Config::from_args(&[]).unwrap();
        assert_eq!(c.max_tunnels, 10_000);
        assert_eq!(c.tunnel_idle_timeout, Duration::from_secs(600));
        let c = Config::from_args(&["--max-tunnels", "0", "--tunnel-idle-timeout", "1s"]).unwrap();
        assert_eq!(c.max_tunnels, 0);
        assert_eq!(c.tunnel_idle_timeout, MIN_TUNNEL_IDLE);
        let c = Config::from_args(&["--tunnel-idle-timeout", "1h 30m"]).unwrap();
        assert_eq!(c.tunnel_idle_timeout, Duration::from_secs(90 * 60));
        for (args, line) in [
            (
                &["--tunnel-idle-timeout", "0s"][..],
                "--tunnel-idle-timeout: '0s' must be at least 1s",
            ),
            (
                &["--tunnel-idle-timeout", "500ms"],
                "--tunnel-idle-timeout: '500ms' must be at least 1s",
            ),
            (
                &["--tunnel-idle-timeout", "10x"],
                "--tunnel-idle-timeout: '10x' is not a duration (examples: 500ms, 2s, 1m)",
            ),
        ] {
            let err = Config::from_args(args).unwrap_err();
            assert_eq!(err.flag(), Some("--tunnel-idle-timeout"));
            assert_eq!(err.to_string(), line);
        }
        let err = Config::from_args(&["--max-tunnels", "-1"]).unwrap_err();
        assert_eq!(err.flag(), Some("--max-tunnels"));
    }

    #[test]
    fn reuse_port_is_off_and_the_drain_delay_zero_unless_given() {
        let c = Config::from_args(&[]).unwrap();
        assert!(!c.reuse_port);
        assert_eq!(c.drain_delay, Duration::ZERO);
        let c = Config::from_args(&["--reuse-port", "--drain-delay", "5s"]).unwrap();
        assert!(c.reuse_port);
        assert_eq!(c.drain_delay, Duration::from_secs(5));
        assert_eq!(
            Config::from_args(&["--drain-delay", "0"])
                .unwrap()
                .drain_delay,
            Duration::ZERO
        );
        let err = Config::from_args(&["--drain-delay", "soon"]).unwrap_err();
        assert_eq!(err.flag(), Some("--drain-delay"));
        assert_eq!(
            err.to_string(),
            "--drain-delay: 'soon' is not a duration (examples: 500ms, 2s, 1m)"
        );
    }

    #[test]
    fn names_are_looked_up_again_every_5s_by_the_system_unless_told() {
        let c = Config::from_args(&[]).unwrap();
        assert_eq!(c.resolve_interval, Some(Duration::from_secs(5)));
        assert_eq!(c.resolver, Resolver::System);
        assert!(c.backend_sources.iter().all(|b| b.name.is_none()));
        let c = Config::from_args(&["--resolve-interval", "0s", "--resolver", "127.0.0.1:5353"])
            .unwrap();
        assert_eq!(c.resolve_interval, None);
        assert_eq!(
            c.resolver,
            Resolver::Server("127.0.0.1:5353".parse().unwrap())
        );
        let c = Config::from_args(&["--resolve-interval", "1m", "--resolver", "[::1]:53"]).unwrap();
        assert_eq!(c.resolve_interval, Some(Duration::from_secs(60)));
        for (args, line) in [
            (
                &["--resolve-interval", "500ms"][..],
                "--resolve-interval: '500ms' must be at least 1s",
            ),
            (
                &["--resolve-interval", "often"],
                "--resolve-interval: 'often' is not a duration (examples: 500ms, 2s, 1m)",
            ),
            (
                &["--resolver", "dns.internal:53"],
                "--resolver: 'dns.internal:53' is not ip:port (example: 127.0.0.1:53)",
            ),
        ] {
            assert_eq!(Config::from_args(args).unwrap_err().to_string(), line);
        }
    }

    #[test]
    fn a_name_is_as_many_backends_as_it_has_addresses() {
        let c = Config::from_args(&[
            "--backend",
            "localhost:9000,weight=2",
            "--backend",
            "127.0.0.1:9001",
        ])
        .unwrap();
        let name = c.backend_sources[0].name.as_ref().map(ToString::to_string);
        assert_eq!(name.as_deref(), Some("localhost:9000"));
        assert_eq!(c.backends, expand(&c.backend_sources));
        assert!(
            c.backends
                .iter()
                .any(|b| b.addr == "127.0.0.1:9000".parse().unwrap() && b.weight.get() == 2)
        );
        assert_eq!(
            c.backends.last().unwrap().addr,
            "127.0.0.1:9001".parse().unwrap()
        );
    }

    #[test]
    fn errors_name_the_flag() {
        let err = Config::from_args(&["--workers", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--workers"), "{err}");
        let err = Config::from_args(&["--strategy", "nope"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'nope'"), "{err}");
    }
}
