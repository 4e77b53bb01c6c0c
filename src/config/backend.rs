//! A backend as configured: its address, its weight and whether it is a backup, from
//! one `--backend` flag or one `[[backend]]` table of the config file (`config_file.rs`
//! turns the table into the flag). A flag that names a host rather than an address is a
//! `BackendSource` of as many backends as the name has addresses (`dns.rs` looks them
//! up, and `discovery.rs` again and again); `expand` makes the backend set of all the
//! flags. `Weight` is the one weight rule, also used by `reload.rs` and the admin
//! interface when a weight is changed at runtime.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use crate::dns::{self, Answer, Resolver};

/// One backend: one address, with what its `--backend` flag says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    /// `https://host:port`: the host and port as written, which the backend's
    /// certificate must name (an IP address: its IP SAN); `None`: plain http.
    pub https: Option<String>,
    pub weight: Weight,
    /// `,backup`: used only while no primary backend is up.
    pub backup: bool,
    /// `,send-proxy`: each connection to it starts with a PROXY v2 header naming the
    /// client (proxy_protocol.rs), so none is shared between clients.
    pub send_proxy: bool,
}

/// One `--backend` flag: where its backends are and what each of them gets. A flag
/// that names a host stands for one backend per address the name has now, and for none
/// while it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSource {
    /// The host and port as typed, when they name a host rather than an address: what
    /// is looked up again. `None`: an address, typed as such, which stays as it is.
    pub name: Option<HostPort>,
    /// The backends' addresses, sorted: the one typed, or the name's as last looked up
    /// (none once the name has gone; see discovery.rs).
    pub addrs: Vec<SocketAddr>,
    pub https: Option<String>,
    pub weight: Weight,
    pub backup: bool,
    pub send_proxy: bool,
}

/// A host name and a port, `api.internal:8080`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl BackendSource {
    /// The backends this flag stands for now, in address order.
    pub fn specs(&self) -> impl Iterator<Item = BackendSpec> + '_ {
        self.addrs.iter().map(|&addr| BackendSpec {
            addr,
            https: self.https.clone(),
            weight: self.weight,
            backup: self.backup,
            send_proxy: self.send_proxy,
        })
    }

    /// `ips` as this flag's addresses: with its port, sorted, each once.
    pub fn at(&self, ips: &[IpAddr]) -> Vec<SocketAddr> {
        let port = self.name.as_ref().map_or(0, |n| n.port);
        let mut addrs: Vec<SocketAddr> = ips.iter().map(|&ip| (ip, port).into()).collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }
}

/// The backend set of `sources`: the flags' backends in the order the flags came, each
/// flag's in address order, so that every instance that finds the same addresses builds
/// the same set in the same order (consistent hashing agrees across them).
pub fn expand(sources: &[BackendSource]) -> Vec<BackendSpec> {
    sources.iter().flat_map(BackendSource::specs).collect()
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
/// `,weight=N` and `,backup`, with the host looked up by `resolver` if it is a name. The
/// error is what follows `--backend: `.
pub(super) fn parse_backend(s: &str, resolver: &Resolver) -> Result<BackendSource, String> {
    let mut source = check_backend(s)?;
    if let Some(name) = &source.name {
        source.addrs = match dns::lookup(resolver, &name.host) {
            Ok(Answer::Found(ips)) => source.at(&ips),
            Ok(Answer::Missing) => return Err(format!("'{name}' resolves to no address")),
            Err(why) => return Err(format!("'{name}' cannot be looked up: {why}")),
        };
    }
    Ok(source)
}

/// `parse_backend` without the lookup: a name gets no address yet. For the config file,
/// which checks each table alone before the flags are read together.
pub(super) fn check_backend(s: &str) -> Result<BackendSource, String> {
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
    let (name, addrs) = match host_port(addr) {
        Some(Ok(addr)) => (None, vec![addr]),
        Some(Err(name)) => (Some(name), Vec::new()),
        None => return Err(format!("'{addr}' is not host:port")),
    };
    let mut weight = Weight::ONE;
    let mut backup = false;
    let mut send_proxy = false;
    for option in parts {
        match option.split_once('=') {
            None if option == "backup" => backup = true,
            None if option == "send-proxy" => send_proxy = true,
            Some(("weight", n)) => {
                weight = Weight::parse(n)
                    .ok_or_else(|| format!("'{s}': weight must be {WEIGHT_RULE}"))?;
            }
            _ => {
                return Err(format!(
                    "'{s}': unknown option '{option}' (known: weight=N, backup, send-proxy)"
                ));
            }
        }
    }
    Ok(BackendSource {
        name,
        addrs,
        https,
        weight,
        backup,
        send_proxy,
    })
}

/// `10.0.0.7:80` and `[::1]:80` as addresses, `api.internal:80` as a name to look up;
/// `None` without a port.
fn host_port(s: &str) -> Option<Result<SocketAddr, HostPort>> {
    if let Ok(addr) = s.parse() {
        return Some(Ok(addr));
    }
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    if host.is_empty() || host.contains([':', '[', ']']) {
        return None;
    }
    Some(Err(HostPort {
        host: host.to_owned(),
        port,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli;

    /// The one backend a flag stands for, looked up by the system.
    fn parse_backend(s: &str) -> Result<BackendSpec, String> {
        super::parse_backend(s, &Resolver::System).map(|b| b.specs().next().unwrap())
    }

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

    #[test]
    fn an_address_stays_and_a_name_is_looked_up() {
        let typed = check_backend("[::1]:9000").unwrap();
        assert_eq!(
            (typed.name, typed.addrs),
            (None, vec!["[::1]:9000".parse().unwrap()])
        );
        let named = check_backend("https://api.internal:8443,weight=2").unwrap();
        let name = named.name.clone().unwrap();
        assert_eq!(name.to_string(), "api.internal:8443");
        assert_eq!((name.port, named.addrs.len()), (8443, 0));
        for bad in [
            "nohost",
            "api.internal:",
            ":80",
            "api.internal:http",
            "::1:80",
        ] {
            assert_eq!(
                check_backend(bad).unwrap_err(),
                format!("'{bad}' is not host:port"),
            );
        }
        let localhost = super::parse_backend("localhost:9000", &Resolver::System).unwrap();
        assert!(localhost.addrs.contains(&"127.0.0.1:9000".parse().unwrap()));
    }

    #[test]
    fn the_set_is_the_flags_in_order_each_in_address_order() {
        let mut named = check_backend("svc.test:80,weight=3").unwrap();
        let ips: Vec<IpAddr> = ["10.0.0.9", "10.0.0.2", "10.0.0.9"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        named.addrs = named.at(&ips);
        let typed = check_backend("10.0.0.5:81,backup").unwrap();
        let set: Vec<String> = expand(&[named.clone(), typed])
            .iter()
            .map(|b| {
                format!(
                    "{} w{}{}",
                    b.addr,
                    b.weight.get(),
                    if b.backup { " backup" } else { "" }
                )
            })
            .collect();
        assert_eq!(
            set,
            ["10.0.0.2:80 w3", "10.0.0.9:80 w3", "10.0.0.5:81 w1 backup"]
        );
        // A name that has gone stands for no backend.
        named.addrs.clear();
        assert_eq!(expand(&[named]), []);
    }
}
