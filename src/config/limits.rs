//! The fair limits per client as configured: `--max-connections-per-client`,
//! `--rate-limit` and `--rate-burst`, read from their text into values that cannot be
//! invalid. `limits.rs` enforces them.

use std::num::NonZeroU32;

use super::ConfigError;

/// `--rate-limit` with its `--rate-burst`: a token bucket per client that holds at most
/// `burst` requests and refills at `requests` per `period_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: NonZeroU32,
    /// 1000 (`/s`), 60,000 (`/m`) or 3,600,000 (`/h`).
    pub period_ms: NonZeroU32,
    /// The bucket's size: requests a client may send at once after a quiet spell.
    pub burst: NonZeroU32,
}

/// Reads `--rate-limit` (`100/s`, `6000/m`, `10/h`) and its `--rate-burst`, which is
/// refused without it and defaults to the rate's amount per second, at least 1.
pub(super) fn rate_limit(
    rate: Option<&str>,
    burst: Option<u32>,
) -> Result<Option<RateLimit>, ConfigError> {
    let Some(typed) = rate else {
        return match burst {
            Some(_) => Err(ConfigError::new("--rate-burst", "only with --rate-limit")),
            None => Ok(None),
        };
    };
    let (requests, period_ms) =
        parse_rate(typed).map_err(|why| ConfigError::new("--rate-limit", why))?;
    let burst = match burst {
        None => {
            let per_second = u64::from(requests.get()) * 1000 / u64::from(period_ms.get());
            NonZeroU32::new(u32::try_from(per_second).unwrap_or(u32::MAX))
                .unwrap_or(NonZeroU32::MIN)
        }
        Some(n) => NonZeroU32::new(n)
            .ok_or_else(|| ConfigError::new("--rate-burst", "must be at least 1"))?,
    };
    Ok(Some(RateLimit {
        requests,
        period_ms,
        burst,
    }))
}

/// `N/s`, `N/m` or `N/h` (also `/sec`, `/min`, `/hour`): requests per period.
fn parse_rate(s: &str) -> Result<(NonZeroU32, NonZeroU32), String> {
    let bad = || format!("'{s}' is not a rate (examples: 100/s, 6000/m, 10/h)");
    let (count, unit) = s.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let period_ms: u32 = match unit.trim() {
        "s" | "sec" | "second" => 1000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        _ => return Err(bad()),
    };
    let count =
        NonZeroU32::new(count).ok_or_else(|| format!("'{s}' must allow at least 1 request"))?;
    Ok((
        count,
        NonZeroU32::new(period_ms).expect("a period is never empty"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: &str, burst: Option<u32>) -> RateLimit {
        rate_limit(Some(rate), burst).unwrap().unwrap()
    }

    #[test]
    fn rates_read_per_second_minute_or_hour_and_burst_defaults_to_the_rate_per_second() {
        let l = limit("100/s", None);
        assert_eq!(
            (l.requests.get(), l.period_ms.get(), l.burst.get()),
            (100, 1000, 100)
        );
        let l = limit("6000/m", None);
        assert_eq!(
            (l.requests.get(), l.period_ms.get(), l.burst.get()),
            (6000, 60_000, 100)
        );
        // Less than one a second: a burst of one.
        assert_eq!(limit("10/min", None).burst.get(), 1);
        assert_eq!(limit("10/h", Some(3)).burst.get(), 3);
        assert_eq!(rate_limit(None, None).unwrap(), None);
    }

    #[test]
    fn the_limits_are_off_by_default_and_zero_connections_is_no_limit() {
        use crate::config::Config;
        let c = Config::from_args(&[]).unwrap();
        assert_eq!((c.max_connections_per_client, c.rate_limit), (None, None));
        let c = Config::from_args(&["--max-connections-per-client", "0"]).unwrap();
        assert_eq!(c.max_connections_per_client, None);
        let c = Config::from_args(&["--max-connections-per-client", "3", "--rate-limit", "9/s"]);
        let c = c.unwrap();
        assert_eq!(c.max_connections_per_client.map(NonZeroU32::get), Some(3));
        assert_eq!(c.rate_limit.map(|r| r.burst.get()), Some(9));
        let err = Config::from_args(&["--rate-burst", "x", "--rate-limit", "1/s"]).unwrap_err();
        assert_eq!(err.flag(), Some("--rate-burst"));
    }

    #[test]
    fn bad_rates_and_bursts_name_their_flag() {
        for (rate, burst, line) in [
            (
                Some("100"),
                None,
                "--rate-limit: '100' is not a rate (examples: 100/s, 6000/m, 10/h)",
            ),
            (
                Some("x/s"),
                None,
                "--rate-limit: 'x/s' is not a rate (examples: 100/s, 6000/m, 10/h)",
            ),
            (
                Some("5/d"),
                None,
                "--rate-limit: '5/d' is not a rate (examples: 100/s, 6000/m, 10/h)",
            ),
            (
                Some("0/s"),
                None,
                "--rate-limit: '0/s' must allow at least 1 request",
            ),
            (Some("1/s"), Some(0), "--rate-burst: must be at least 1"),
            (None, Some(5), "--rate-burst: only with --rate-limit"),
        ] {
            assert_eq!(rate_limit(rate, burst).unwrap_err().to_string(), line);
        }
    }
}
