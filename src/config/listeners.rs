//! The listeners as configured: the addresses served in plain HTTP (`--listen`) and in
//! HTTPS (`--tls-listen`), the certificate pairs that the TLS listeners and an
//! `--admin-tls` interface serve (`--tls-cert`, `--tls-key`), and `--https-redirect`.
//! `config.rs` keeps what `listeners` returns in `Config`; the certificates are read and
//! checked here, once, by `tls_certs::load` (so `--check` checks them too); `server.rs`
//! binds the addresses.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use std::path::PathBuf;
#[cfg(feature = "tls")]
use std::sync::Arc;

use super::ConfigError;
use super::values::resolve;
use crate::cli::Args;

/// The plain listener when neither `--listen` nor `--tls-listen` is given: the blog's.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";

/// One `--tls-cert` file (a PEM chain, the leaf first) and its `--tls-key` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificates of the TLS listeners (and of the admin interface with `--admin-tls`).
#[derive(Clone, Debug)]
pub struct ListenerTls {
    /// `--tls-cert` and `--tls-key` as given, paired in their order; the first pair is
    /// the default certificate.
    pub pairs: Vec<CertPair>,
    /// `pairs` read and checked at start: `Some` exactly when `pairs` is not empty.
    #[cfg(feature = "tls")]
    pub certs: Option<Arc<crate::tls_certs::Certs>>,
}

impl ListenerTls {
    /// What loading found worth saying about certificates that still load (one expiring
    /// within 30 days...); `main.rs` prints these at start and for `--check`.
    pub fn warnings(&self) -> &[String] {
        #[cfg(feature = "tls")]
        if let Some(certs) = &self.certs {
            return certs.warnings();
        }
        &[]
    }
}

/// What `listeners` read, for the `Config` fields of the same names.
pub(super) struct Listeners {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub listener_tls: ListenerTls,
    pub https_redirect: bool,
    pub proxy_protocol: bool,
    pub trusted_proxies: Vec<IpNet>,
}

impl Listeners {
    /// The flag that already listens on `addr`, if one does. Port 0 never clashes: each
    /// socket bound to it gets a port of its own.
    pub fn flag_of(&self, addr: SocketAddr) -> Option<&'static str> {
        if addr.port() == 0 {
            return None;
        }
        if self.listen.contains(&addr) {
            Some("--listen")
        } else if self.tls_listen.contains(&addr) {
            Some("--tls-listen")
        } else {
            None
        }
    }
}

/// `--listen`, `--tls-listen`, `--tls-cert`, `--tls-key` and `--https-redirect`, checked
/// together and with `--admin-tls` (which needs `--admin` and the certificates); the
/// certificate files are read last, once the flags agree.
pub(super) fn listeners(args: &Args) -> Result<Listeners, ConfigError> {
    without_tls(args)?;
    let plain: Vec<&str> = if args.listen.is_empty() && args.tls_listen.is_empty() {
        vec![DEFAULT_LISTEN]
    } else {
        args.listen.iter().map(String::as_str).collect()
    };
    let plain = addresses("--listen", &plain)?;
    let tls: Vec<&str> = args.tls_listen.iter().map(String::as_str).collect();
    let tls = addresses("--tls-listen", &tls)?;

    let (certs, keys) = (args.tls_cert.len(), args.tls_key.len());
    if certs != keys {
        return Err(ConfigError::new(
            "--tls-key",
            format!(
                "{certs} --tls-cert but {keys} --tls-key given; each certificate needs its \
                 key, in the same order"
            ),
        ));
    }
    let needs_a_certificate = "needs a certificate: give --tls-cert and --tls-key";
    if !tls.is_empty() && certs == 0 {
        return Err(ConfigError::new("--tls-listen", needs_a_certificate));
    }
    if args.admin_tls && args.admin.is_none() {
        return Err(ConfigError::new("--admin-tls", "only with --admin"));
    }
    if args.admin_tls && certs == 0 {
        return Err(ConfigError::new("--admin-tls", needs_a_certificate));
    }
    if certs > 0 && tls.is_empty() && !args.admin_tls {
        return Err(ConfigError::new(
            "--tls-cert",
            "nothing serves it: give --tls-listen (or --admin-tls)",
        ));
    }
    if args.https_redirect && plain.is_empty() {
        return Err(ConfigError::new(
            "--https-redirect",
            "needs a plain --listen address to answer on",
        ));
    }
    distinct(&plain, &tls)?;
    let trusted_proxies = args
        .trusted_proxy
        .iter()
        .map(|typed| trusted_proxy(typed))
        .collect::<Result<Vec<_>, _>>()?;
    if args.proxy_protocol && trusted_proxies.is_empty() {
        return Err(ConfigError::new(
            "--proxy-protocol",
            "needs --trusted-proxy: the PROXY headers of which peers to believe",
        ));
    }

    let pairs: Vec<CertPair> = args
        .tls_cert
        .iter()
        .zip(&args.tls_key)
        .map(|(cert, key)| CertPair {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        })
        .collect();
    #[cfg(feature = "tls")]
    let certs = if pairs.is_empty() {
        None
    } else {
        Some(Arc::new(crate::tls_certs::load(&pairs)?))
    };
    Ok(Listeners {
        listen: plain.iter().map(|(_, addr)| *addr).collect(),
        tls_listen: tls.iter().map(|(_, addr)| *addr).collect(),
        listener_tls: ListenerTls {
            pairs,
            #[cfg(feature = "tls")]
            certs,
        },
        https_redirect: args.https_redirect,
        proxy_protocol: args.proxy_protocol,
        trusted_proxies,
    })
}

/// One `--trusted-proxy`: a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address.
fn trusted_proxy(typed: &str) -> Result<IpNet, ConfigError> {
    let typed = typed.trim();
    typed
        .parse::<IpNet>()
        .or_else(|_| typed.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            ConfigError::new(
                "--trusted-proxy",
                format!("'{typed}' is not an address or a CIDR such as 10.0.0.0/8"),
            )
        })
}

/// Without the tls cargo feature, the flags that need it are refused, the first given.
/// `--https-redirect` is not one of them: it only answers with a redirect.
fn without_tls(args: &Args) -> Result<(), ConfigError> {
    if cfg!(feature = "tls") {
        return Ok(());
    }
    let given = [
        ("--tls-listen", !args.tls_listen.is_empty()),
        ("--tls-cert", !args.tls_cert.is_empty()),
        ("--tls-key", !args.tls_key.is_empty()),
        ("--admin-tls", args.admin_tls),
    ];
    match given.into_iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(ConfigError::new(
            flag,
            "this roundhouse was built without TLS (the tls cargo feature)",
        )),
        None => Ok(()),
    }
}

/// Each address of `flag`, resolved, beside the text it was typed as.
fn addresses<'a>(flag: &str, typed: &[&'a str]) -> Result<Vec<(&'a str, SocketAddr)>, ConfigError> {
    typed
        .iter()
        .map(|t| Ok((*t, resolve(t).map_err(|why| ConfigError::new(flag, why))?)))
        .collect()
}

/// Fails on an address given twice among the listeners (the second could not be bound),
/// naming the later flag.
fn distinct(plain: &[(&str, SocketAddr)], tls: &[(&str, SocketAddr)]) -> Result<(), ConfigError> {
    let all: Vec<(&str, &str, SocketAddr)> = plain
        .iter()
        .map(|(typed, addr)| ("--listen", *typed, *addr))
        .chain(
            tls.iter()
                .map(|(typed, addr)| ("--tls-listen", *typed, *addr)),
        )
        .collect();
    for (i, (flag, typed, addr)) in all.iter().enumerate() {
        if addr.port() == 0 {
            continue;
        }
        if let Some((first, ..)) = all[..i].iter().find(|(_, _, a)| a == addr) {
            let why = if first == flag {
                "is given twice".to_owned()
            } else {
                format!("is also a {first} address")
            };
            return Err(ConfigError::new(flag, format!("'{typed}' {why}")));
        }
    }
    Ok(())
}

/// Certificate pairs for unit tests: self-signed for `localhost`, made with rcgen.
#[cfg(all(test, feature = "tls"))]
pub(crate) mod test_pairs {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use rcgen::{CertificateParams, KeyPair};

    use super::CertPair;

    pub const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    /// Writes `NAME.pem` and `NAME.key` into `dir`: valid since yesterday, until
    /// `until` (rcgen's far-off default when `None`).
    pub fn write(dir: &Path, name: &str, until: Option<SystemTime>) -> CertPair {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        if let Some(until) = until {
            params.not_before = (SystemTime::now() - DAY).into();
            params.not_after = until.into();
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pair = CertPair {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use crate::config::ConfigError;

    fn addrs(list: &[std::net::SocketAddr]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    /// The error of `args`, as `(flag, message)`.
    fn refused(args: &[&str]) -> (String, String) {
        let err: ConfigError = Config::from_args(args).unwrap_err();
        (
            err.flag().unwrap_or_default().to_owned(),
            err.message().to_owned(),
        )
    }

    #[test]
    fn the_default_plain_listener_and_repeated_ones() {
        let c = Config::from_args(&[]).unwrap();
        assert_eq!(addrs(&c.listen), ["127.0.0.1:8000"]);
        assert!(c.tls_listen.is_empty() && c.listener_tls.pairs.is_empty());
        assert!(!c.https_redirect);
        assert_eq!(c.listener_tls.warnings(), &[] as &[String]);
        let c = Config::from_args(&["--listen", "127.0.0.1:81", "--listen", "[::1]:82"]).unwrap();
        assert_eq!(addrs(&c.listen), ["127.0.0.1:81", "[::1]:82"]);
        let c = Config::from_args(&["--listen", "127.0.0.1:81", "--https-redirect"]).unwrap();
        assert!(c.https_redirect);
        let (flag, message) = refused(&["--listen", "nohost"]);
        assert_eq!(
            (flag.as_str(), message.as_str()),
            ("--listen", "'nohost' is not host:port")
        );
    }

    #[test]
    fn trusted_proxies_are_addresses_or_cidrs_and_proxy_protocol_needs_one() {
        let c = Config::from_args(&[
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "192.0.2.7",
            "--proxy-protocol",
        ])
        .unwrap();
        assert!(c.proxy_protocol);
        let nets: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32"]);
        let (flag, message) = refused(&["--proxy-protocol"]);
        assert_eq!(flag, "--proxy-protocol");
        assert!(message.contains("--trusted-proxy"), "{message}");
        let (flag, message) = refused(&["--trusted-proxy", "10.0.0.0/33"]);
        assert_eq!(flag, "--trusted-proxy");
        assert!(message.contains("10.0.0.0/33"), "{message}");
    }

    #[test]
    fn an_address_twice_among_the_listeners_and_the_admin_is_an_error_naming_it() {
        let (flag, message) = refused(&["--listen", "127.0.0.1:81", "--listen", "127.0.0.1:81"]);
        assert_eq!(
            (flag.as_str(), message.as_str()),
            ("--listen", "'127.0.0.1:81' is given twice")
        );
        let (flag, message) = refused(&["--listen", "127.0.0.1:81", "--admin", "127.0.0.1:81"]);
        assert_eq!(flag, "--admin");
        assert!(
            message.contains("'127.0.0.1:81' is the proxy's --listen address"),
            "{message}"
        );
        // Port 0 is a port of its own for each socket.
        let c = Config::from_args(&["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"]);
        assert_eq!(c.unwrap().listen.len(), 2);
    }

    #[cfg(feature = "tls")]
    mod with_tls {
        use std::time::SystemTime;

        use super::super::test_pairs::{DAY, write};
        use super::{addrs, refused};
        use crate::Config;

        /// A made pair's paths as flags: `--tls-cert CERT --tls-key KEY`.
        fn flags(pair: &crate::config::CertPair) -> [String; 4] {
            [
                "--tls-cert".into(),
                pair.cert.display().to_string(),
                "--tls-key".into(),
                pair.key.display().to_string(),
            ]
        }

        fn config(args: &[String]) -> Result<Config, crate::config::ConfigError> {
            Config::from_args(&args.iter().map(String::as_str).collect::<Vec<_>>())
        }

        #[test]
        fn tls_listeners_alone_have_no_plain_listener_and_carry_the_checked_pairs() {
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = (write(dir.path(), "a", None), write(dir.path(), "b", None));
            let mut args = vec!["--tls-listen".to_owned(), "127.0.0.1:443".to_owned()];
            args.extend(flags(&a));
            args.extend(flags(&b));
            let c = config(&args).unwrap();
            assert!(c.listen.is_empty());
            assert_eq!(addrs(&c.tls_listen), ["127.0.0.1:443"]);
            assert_eq!(c.listener_tls.pairs, [a.clone(), b]);
            assert!(c.listener_tls.certs.is_some());
            assert!(c.admin.is_none());

            args.extend([
                "--listen".into(),
                "127.0.0.1:80".into(),
                "--https-redirect".into(),
            ]);
            let c = config(&args).unwrap();
            assert_eq!(addrs(&c.listen), ["127.0.0.1:80"]);
            assert!(c.https_redirect);

            // The admin interface alone may use the certificates.
            let mut args = vec![
                "--admin".to_owned(),
                "127.0.0.1:9090".to_owned(),
                "--admin-tls".into(),
            ];
            args.extend(flags(&a));
            let c = config(&args).unwrap();
            assert!(c.admin.unwrap().tls);
            assert!(c.tls_listen.is_empty());
            assert_eq!(addrs(&c.listen), ["127.0.0.1:8000"]);
        }

        #[test]
        fn each_certificate_needs_its_key() {
            let (flag, message) = refused(&[
                "--tls-listen",
                "127.0.0.1:443",
                "--tls-cert",
                "a.pem",
                "--tls-cert",
                "b.pem",
                "--tls-key",
                "a.key",
            ]);
            assert_eq!(flag, "--tls-key");
            assert!(
                message.starts_with("2 --tls-cert but 1 --tls-key given"),
                "{message}"
            );
            let (flag, message) = refused(&["--tls-listen", "127.0.0.1:443", "--tls-key", "a.key"]);
            assert_eq!(flag, "--tls-key");
            assert!(
                message.starts_with("0 --tls-cert but 1 --tls-key given"),
                "{message}"
            );
        }

        #[test]
        fn a_tls_listener_needs_a_certificate_and_a_certificate_a_user() {
            let (flag, message) = refused(&["--tls-listen", "127.0.0.1:443"]);
            assert_eq!(flag, "--tls-listen");
            assert!(message.starts_with("needs a certificate"), "{message}");
            let (flag, message) = refused(&["--tls-cert", "a.pem", "--tls-key", "a.key"]);
            assert_eq!(flag, "--tls-cert");
            assert!(message.contains("--tls-listen"), "{message}");
        }

        #[test]
        fn admin_tls_needs_the_admin_interface_and_a_certificate() {
            let (flag, message) =
                refused(&["--admin-tls", "--tls-cert", "a.pem", "--tls-key", "a.key"]);
            assert_eq!(
                (flag.as_str(), message.as_str()),
                ("--admin-tls", "only with --admin")
            );
            let (flag, message) = refused(&["--admin", "127.0.0.1:9090", "--admin-tls"]);
            assert_eq!(flag, "--admin-tls");
            assert!(message.starts_with("needs a certificate"), "{message}");
        }

        #[test]
        fn https_redirect_needs_a_plain_listener() {
            let (flag, message) = refused(&[
                "--tls-listen",
                "127.0.0.1:443",
                "--tls-cert",
                "a.pem",
                "--tls-key",
                "a.key",
                "--https-redirect",
            ]);
            assert_eq!(flag, "--https-redirect");
            assert!(message.contains("--listen"), "{message}");
        }

        #[test]
        fn a_tls_address_twice_or_also_plain_or_admin_is_an_error_naming_it() {
            let cert = ["--tls-cert", "a.pem", "--tls-key", "a.key"];
            let mut args = vec!["--tls-listen", "127.0.0.1:443", "--listen", "127.0.0.1:443"];
            args.extend(cert);
            let (flag, message) = refused(&args);
            assert_eq!(
                (flag.as_str(), message.as_str()),
                ("--tls-listen", "'127.0.0.1:443' is also a --listen address")
            );
            let mut args = vec![
                "--tls-listen",
                "127.0.0.1:443",
                "--tls-listen",
                "127.0.0.1:443",
            ];
            args.extend(cert);
            let (flag, message) = refused(&args);
            assert_eq!(
                (flag.as_str(), message.as_str()),
                ("--tls-listen", "'127.0.0.1:443' is given twice")
            );
            let dir = tempfile::tempdir().unwrap();
            let mut args: Vec<String> =
                ["--tls-listen", "127.0.0.1:443", "--admin", "127.0.0.1:443"]
                    .map(String::from)
                    .into();
            args.extend(flags(&write(dir.path(), "a", None)));
            let err = config(&args).unwrap_err();
            assert_eq!(err.flag(), Some("--admin"));
            assert!(
                err.message()
                    .contains("is the proxy's --tls-listen address"),
                "{err}"
            );
        }

        #[test]
        fn a_certificate_problem_is_the_loaders_error_and_a_close_expiry_a_warning() {
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = (write(dir.path(), "a", None), write(dir.path(), "b", None));
            let mixed = crate::config::CertPair {
                cert: a.cert.clone(),
                key: b.key.clone(),
            };
            let mut args = vec!["--tls-listen".to_owned(), "127.0.0.1:443".to_owned()];
            args.extend(flags(&mixed));
            let err = config(&args).unwrap_err();
            assert_eq!(err.flag(), Some("--tls-key"));
            assert!(
                err.message().contains("is not the key of the certificate"),
                "{err}"
            );

            let now = SystemTime::now();
            let old = write(dir.path(), "old", Some(now - DAY / 2));
            let mut args = vec!["--tls-listen".to_owned(), "127.0.0.1:443".to_owned()];
            args.extend(flags(&old));
            let err = config(&args).unwrap_err();
            assert_eq!(err.flag(), Some("--tls-cert"));
            assert!(err.message().contains("expired on"), "{err}");

            let missing = crate::config::CertPair {
                cert: dir.path().join("none.pem"),
                key: a.key,
            };
            let mut args = vec!["--tls-listen".to_owned(), "127.0.0.1:443".to_owned()];
            args.extend(flags(&missing));
            assert_eq!(config(&args).unwrap_err().flag(), Some("--tls-cert"));

            let soon = write(dir.path(), "soon", Some(now + 10 * DAY + DAY / 2));
            let mut args = vec!["--tls-listen".to_owned(), "127.0.0.1:443".to_owned()];
            args.extend(flags(&soon));
            let c = config(&args).unwrap();
            let warnings = c.listener_tls.warnings();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].contains("soon.pem' expires in 10 days"),
                "{warnings:?}"
            );
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_tls_feature_the_tls_flags_are_refused_and_the_redirect_is_not() {
        for (args, blamed) in [
            (&["--tls-listen", "127.0.0.1:443"][..], "--tls-listen"),
            (&["--tls-cert", "a.pem"], "--tls-cert"),
            (&["--tls-key", "a.key"], "--tls-key"),
            (&["--admin", "127.0.0.1:9090", "--admin-tls"], "--admin-tls"),
        ] {
            let (flag, message) = refused(args);
            assert_eq!(flag, blamed, "{args:?}");
            assert_eq!(
                message,
                "this roundhouse was built without TLS (the tls cargo feature)"
            );
        }
        let c = Config::from_args(&["--https-redirect"]).unwrap();
        assert!(c.https_redirect);
    }
}
