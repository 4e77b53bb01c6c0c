//! The strategy: how a backend is picked for each request. `STRATEGIES` is the one list
//! of their names: `--strategy` and the config file's `strategy` key are parsed with it,
//! `--help` is checked against it, the startup line and the status page name a strategy
//! from it, and `trace.rs` turns the name back into a `StrategyKind`. Each strategy's
//! algorithm is in `balancer/`.

use http::HeaderName;

use super::ConfigError;

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

/// Which strategy, without its settings: what `--strategy` names. Each kind has its
/// line in `STRATEGIES`, at the index of its discriminant (checked when compiling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyKind {
    RoundRobin,
    Random,
    LeastConn,
    PowerOfTwo,
    LeastTime,
    IpHash,
    Hash,
}

/// One line of `STRATEGIES`.
#[derive(Clone, Copy, Debug)]
pub struct StrategyName {
    pub kind: StrategyKind,
    /// As `--strategy` takes it.
    pub name: &'static str,
    /// What `--help` says of it, in parentheses after the name.
    pub help: &'static str,
}

/// Every strategy, in the order `--help` lists them. argh's help text must be a literal,
/// so `cli.rs` repeats the names and helps; a unit test holds it to this list.
pub const STRATEGIES: [StrategyName; 7] = [
    named(StrategyKind::RoundRobin, "round-robin", "smooth weighted"),
    named(StrategyKind::Random, "random", "by weight"),
    named(
        StrategyKind::LeastConn,
        "least-conn",
        "fewest in flight per weight",
    ),
    named(StrategyKind::PowerOfTwo, "p2c", "less loaded of two random"),
    named(
        StrategyKind::LeastTime,
        "least-time",
        "lowest latency × in flight",
    ),
    named(StrategyKind::IpHash, "ip-hash", "consistent, by client /24"),
    named(StrategyKind::Hash, "hash", "consistent, see --hash-key"),
];

const fn named(kind: StrategyKind, name: &'static str, help: &'static str) -> StrategyName {
    StrategyName { kind, name, help }
}

// `StrategyKind::name` indexes the list by discriminant: each line must sit at its own.
const _: () = {
    let mut i = 0;
    while i < STRATEGIES.len() {
        assert!(STRATEGIES[i].kind as usize == i, "STRATEGIES out of order");
        i += 1;
    }
};

impl StrategyKind {
    /// The name `--strategy` takes.
    pub fn name(self) -> &'static str {
        STRATEGIES[self as usize].name
    }

    /// The kind `--strategy NAME` means, if any.
    pub fn from_name(name: &str) -> Option<StrategyKind> {
        STRATEGIES.iter().find(|s| s.name == name).map(|s| s.kind)
    }
}

impl Strategy {
    pub fn kind(&self) -> StrategyKind {
        match self {
            Self::RoundRobin => StrategyKind::RoundRobin,
            Self::Random => StrategyKind::Random,
            Self::LeastConn => StrategyKind::LeastConn,
            Self::PowerOfTwo => StrategyKind::PowerOfTwo,
            Self::LeastTime => StrategyKind::LeastTime,
            Self::IpHash => StrategyKind::IpHash,
            Self::Hash { .. } => StrategyKind::Hash,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
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

/// `--strategy` with the flags that only `hash` takes.
pub(super) fn strategy(
    name: &str,
    key: Option<&str>,
    balance_factor: Option<&str>,
) -> Result<Strategy, ConfigError> {
    let Some(kind) = StrategyKind::from_name(name) else {
        let known: Vec<&str> = STRATEGIES.iter().map(|s| s.name).collect();
        return Err(ConfigError::new(
            "--strategy",
            format!("unknown strategy '{name}' (known: {})", known.join(", ")),
        ));
    };
    let strategy = match kind {
        StrategyKind::RoundRobin => Strategy::RoundRobin,
        StrategyKind::Random => Strategy::Random,
        StrategyKind::LeastConn => Strategy::LeastConn,
        StrategyKind::PowerOfTwo => Strategy::PowerOfTwo,
        StrategyKind::LeastTime => Strategy::LeastTime,
        StrategyKind::IpHash => Strategy::IpHash,
        StrategyKind::Hash => Strategy::Hash {
            key: key.map_or(Ok(HashKey::Ip), hash_key)?,
            balance_factor: balance_factor.map(parse_balance_factor).transpose()?,
        },
    };
    if kind != StrategyKind::Hash {
        let only_with_hash = |flag: &str| {
            Err(ConfigError::new(
                flag,
                format!("only with --strategy hash, not --strategy {name}"),
            ))
        };
        if key.is_some() {
            return only_with_hash("--hash-key");
        }
        if balance_factor.is_some() {
            return only_with_hash("--hash-balance-factor");
        }
    }
    Ok(strategy)
}

/// `ip`, `header:NAME`, `cookie:NAME` or `path`.
fn hash_key(s: &str) -> Result<HashKey, ConfigError> {
    let bad = |why: &str| ConfigError::new("--hash-key", format!("'{s}' {why}"));
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
fn parse_balance_factor(s: &str) -> Result<f64, ConfigError> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => Ok(f),
        _ => Err(ConfigError::new(
            "--hash-balance-factor",
            format!("'{s}' is not a number of at least 1 (example: 1.25)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use crate::cli;

    #[test]
    fn every_strategy_is_known_by_its_name() {
        for name in STRATEGIES.map(|s| s.name) {
            let c = Config::from_args(&["--strategy", name]).unwrap();
            assert_eq!(c.strategy.name(), name);
        }
        assert_eq!(
            Config::from_args(&[]).unwrap().strategy,
            Strategy::RoundRobin
        );
    }

    #[test]
    fn each_kind_is_its_strategys_and_its_names() {
        for s in STRATEGIES {
            let c = Config::from_args(&["--strategy", s.name]).unwrap();
            assert_eq!(c.strategy.kind(), s.kind);
            assert_eq!(StrategyKind::from_name(s.name), Some(s.kind));
        }
        assert_eq!(StrategyKind::from_name("Round-Robin"), None);
    }

    /// The help of `--strategy` in `cli.rs` is a literal; it must say what the list says,
    /// in the same order.
    #[test]
    fn help_lists_every_strategy_in_order() {
        let help = cli::parse(&["--help"]).unwrap_err().text;
        let start = help.find("  --strategy").expect("--strategy in --help");
        let section = &help[start + "  --strategy".len()..];
        let section = &section[..section.find("\n  --").unwrap_or(section.len())];
        let section = section.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut from = 0;
        for s in STRATEGIES {
            let said = format!("{} ({})", s.name, s.help);
            let at = section[from..]
                .find(&said)
                .unwrap_or_else(|| panic!("--help does not say {said:?} in its place: {section}"));
            from += at + said.len();
        }
        assert!(section.ends_with("(default: round-robin)"), "{section}");
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
            let err = hash(&["--hash-key", bad]).unwrap_err().to_string();
            assert!(err.starts_with("--hash-key: '"), "{err}");
        }
        for bad in ["0.5", "-1", "NaN", "inf", "lots"] {
            let err = hash(&["--hash-balance-factor", bad])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("--hash-balance-factor: '"), "{err}");
        }
    }

    #[test]
    fn hash_flags_need_the_hash_strategy() {
        let err = Config::from_args(&["--hash-key", "path"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--hash-key: only with --strategy hash"),
            "{err}"
        );
        let err = Config::from_args(&["--strategy", "ip-hash", "--hash-balance-factor", "2"])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--hash-balance-factor:"), "{err}");
    }
}
