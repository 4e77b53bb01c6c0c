//! The value types the flags share, read from their text: counts, durations, sizes and
//! addresses. Each parser's error is what follows `--flag: `; `config.rs` says which
//! flag.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::time::Duration;

use super::ConfigError;

pub(super) fn nonzero(flag: &str, n: usize) -> Result<NonZeroUsize, ConfigError> {
    NonZeroUsize::new(n).ok_or_else(|| ConfigError::new(flag, "must be at least 1"))
}

/// Reads `500ms`, `2s`, `1m`, `1h 30m`. Zero is refused: every timeout here must be able
/// to fire.
pub(super) fn duration(flag: &str, s: &str) -> Result<Duration, ConfigError> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(ConfigError::new(
            flag,
            format!("'{s}' must be longer than zero"),
        )),
        Ok(d) => Ok(d),
        Err(_) => Err(ConfigError::new(
            flag,
            format!("'{s}' is not a duration (examples: 500ms, 2s, 1m)"),
        )),
    }
}

/// A duration that may be zero, for a wait that zero turns off (`--drain-delay`).
pub(super) fn duration_or_zero(flag: &str, s: &str) -> Result<Duration, ConfigError> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Ok(d),
        _ => duration(flag, s),
    }
}

/// A `duration` of at least `min`, for a timeout that is not checked more finely.
pub(super) fn duration_at_least(
    flag: &str,
    s: &str,
    min: Duration,
) -> Result<Duration, ConfigError> {
    match humantime::parse_duration(s) {
        Ok(d) if d < min => Err(ConfigError::new(
            flag,
            format!("'{s}' must be at least {}", humantime::format_duration(min)),
        )),
        _ => duration(flag, s),
    }
}

/// `host:port`, resolved once at startup (the first address wins).
pub(super) fn resolve(s: &str) -> Result<SocketAddr, String> {
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|_| format!("'{s}' is not host:port"))?;
    addrs
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

/// `512`, `64k`, `10MiB`, `1G`: bytes, with 1024-based units.
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
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
    fn durations_and_sizes() {
        assert_eq!(
            duration("--x", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(duration("--x", "1m").unwrap(), Duration::from_secs(60));
        assert!(
            duration("--x", "5x")
                .unwrap_err()
                .to_string()
                .contains("--x: '5x'")
        );
        assert!(duration("--x", "0s").is_err());
        let second = Duration::from_secs(1);
        assert_eq!(duration_at_least("--x", "1s", second).unwrap(), second);
        assert_eq!(
            duration_at_least("--x", "1m", second).unwrap(),
            Duration::from_secs(60)
        );
        for short in ["0s", "999ms"] {
            assert_eq!(
                duration_at_least("--x", short, second)
                    .unwrap_err()
                    .to_string(),
                format!("--x: '{short}' must be at least 1s")
            );
        }
        assert!(
            duration_at_least("--x", "soon", second)
                .unwrap_err()
                .to_string()
                .contains("--x: 'soon' is not a duration")
        );
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }
}
