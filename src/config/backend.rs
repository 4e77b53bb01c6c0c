//! A backend as configured: its address, its weight and whether it is a backup, from
//! one `--backend` flag or one `[[backend]]` table of the config file (`config_file.rs`
//! turns the table into the flag). `Weight` is the one weight rule, also used by
//! `reload.rs` and the admin interface when a weight is changed at runtime.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use super::values::resolve;

/// One `--backend` flag, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    /// `https://host:port`: the host and port as written, which the backend's
    /// certificate must name (an IP address: its IP SAN); `None`: plain http.
    pub https: Option<String>,
    pub weight: Weight,
    /// `,backup`: used only while no primary backend is up.
    pub backup: bool,
}

/// A backend's weight: a whole number from 1 to `Weight::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weight(NonZeroU32);

/// The weight rule as messages say it, after "weight must be" or "is not".
pub const WEIGHT_RULE: &str = "a whole number from 1 to 1000";

impl Weight {
    pub const MAX: u32 = 1000;
    pub const ONE: Weight = Weight(NonZeroU32::MIN);

    /// `n` as a weight, if it keeps the rule.
    pub fn new(n: u32) -> Option<Weight> {
        NonZeroU32::new(n)
            .filter(|n| n.get() <= Weight::MAX)
            .map(Weight)
    }

    /// A weight as typed, `5`.
    pub fn parse(s: &str) -> Option<Weight> {
        s.parse().ok().and_then(Weight::new)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }
}

/// `host:port`, `http://host:port` or `https://host:port`, optionally followed by
/// `,weight=N` and `,backup`. The error is what follows `--backend: `.
pub(super) fn parse_backend(s: &str) -> Result<BackendSpec, String> {
    let mut parts = s.split(',');
    let addr = parts.next().unwrap_or_default();
    let (addr, https) = match addr.strip_prefix("https://") {
        Some(_) if !cfg!(feature = "tls") => {
            return Err(format!(
                "https needs the tls feature, which this build lacks ('{s}')"
            ));
        }
        Some(rest) => (rest, true),
        None => (addr.strip_prefix("http://").unwrap_or(addr), false),
    };
    let addr = addr.strip_suffix('/').unwrap_or(addr);
    if addr.contains("://") || addr.contains('/') {
        return Err(format!(
            "'{s}' is not host:port, http://host:port or https://host:port"
        ));
    }
    let https = https.then(|| addr.to_owned());
    let addr = resolve(addr)?;
    let mut weight = Weight::ONE;
    let mut backup = false;
    for option in parts {
        match option.split_once('=') {
            None if option == "backup" => backup = true,
            Some(("weight", n)) => {
                weight = Weight::parse(n)
                    .ok_or_else(|| format!("'{s}': weight must be {WEIGHT_RULE}"))?;
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
        https,
        weight,
        backup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli;

    #[test]
    fn backend_forms() {
        let b = parse_backend("http://127.0.0.1:9000/,weight=5").unwrap();
        assert_eq!(b.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(b.weight.get(), 5);
        assert!(parse_backend("127.0.0.1").is_err());
        let tls = parse_backend("https://localhost:9000/,backup").map(|b| b.https);
        if cfg!(feature = "tls") {
            assert_eq!(tls, Ok(Some("localhost:9000".into())));
        } else {
            assert!(tls.unwrap_err().starts_with("https needs the tls feature"));
        }
        assert_eq!(b.https, None);
        assert!(parse_backend("ftp://127.0.0.1:9000").is_err());
        assert!(parse_backend("127.0.0.1:9000,weight=0").is_err());
        assert!(parse_backend("127.0.0.1:9000,wieght=2").is_err());
        assert!(parse_backend("127.0.0.1:9000,backup").unwrap().backup);
        assert!(!b.backup);
    }

    #[test]
    fn the_weight_rule() {
        assert_eq!(Weight::new(1), Some(Weight::ONE));
        assert_eq!(Weight::new(Weight::MAX).map(Weight::get), Some(1000));
        assert_eq!(Weight::new(0), None);
        assert_eq!(Weight::new(Weight::MAX + 1), None);
        assert_eq!(Weight::parse("7").map(Weight::get), Some(7));
        for bad in ["", "x", "-1", "1.5", "1001"] {
            assert_eq!(Weight::parse(bad), None, "{bad:?}");
        }
        // The messages and `--help` say the same bounds as the rule.
        assert!(WEIGHT_RULE.ends_with(&format!("1 to {}", Weight::MAX)));
        let help = cli::parse(&["--help"]).unwrap_err().text;
        assert!(help.contains(&format!("(1-{})", Weight::MAX)), "{help}");
    }
}
