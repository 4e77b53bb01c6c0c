//! TLS to backends: the client side of `--backend https://host:port`, checked against
//! the system's roots or `--backend-ca`, with `--backend-cert`/`--backend-key` as the
//! client certificate. `Tls` is what `Config` keeps (read once at start); `Upstream`
//! (mod.rs beside this file) puts ureq's rustls connector on top of our TCP transport
//! with it. Without the `tls` cargo feature only the flags' refusal is left.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use ureq::Agent;
use ureq::config::{Config as AgentConfig, ConfigBuilder};
use ureq::typestate::AgentScope;

use crate::config::ConfigError;

/// The TLS flags as given, which a reload compares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFlags {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `--backend-insecure`: no certificate check at all.
    pub insecure: bool,
}

impl TlsFlags {
    pub fn any(&self) -> bool {
        *self != TlsFlags::default()
    }
}

/// The client side of TLS for every https backend, loaded from `TlsFlags`.
#[derive(Clone, Default)]
pub struct Tls {
    #[cfg(feature = "tls")]
    pub(super) config: Option<ureq::tls::TlsConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("loaded", &self.loaded())
            .finish()
    }
}

impl Tls {
    /// Reads the files the flags name; `needed`: some backend is https, so the roots
    /// (the system's when there is no `--backend-ca`) are loaded too.
    #[cfg(not(feature = "tls"))]
    pub fn load(flags: &TlsFlags, _needed: bool) -> Result<Tls, ConfigError> {
        let flag = match flags {
            TlsFlags { ca: Some(_), .. } => "--backend-ca",
            TlsFlags { cert: Some(_), .. } => "--backend-cert",
            TlsFlags { key: Some(_), .. } => "--backend-key",
            TlsFlags { insecure: true, .. } => "--backend-insecure",
            _ => return Ok(Tls::default()),
        };
        Err(ConfigError::new(
            flag,
            "needs the tls feature, which this build lacks",
        ))
    }

    /// Reads the files the flags name; `needed`: some backend is https, so the roots
    /// (the system's when there is no `--backend-ca`) are loaded too.
    #[cfg(feature = "tls")]
    pub fn load(flags: &TlsFlags, needed: bool) -> Result<Tls, ConfigError> {
        if !needed && !flags.any() {
            return Ok(Tls::default());
        }
        Ok(Tls {
            config: Some(with_tls::config(flags)?),
        })
    }

    /// Whether the files and roots were read (some backend is https, or a flag given).
    pub fn loaded(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.config.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Sets an https backend's Agent to these TLS settings.
    pub(super) fn configure(
        &self,
        builder: ConfigBuilder<AgentScope>,
    ) -> ConfigBuilder<AgentScope> {
        // Never without a config: ureq's own default would panic (no provider, no
        // roots compiled in). Not loaded means no https backend at start, so whatever
        // comes is refused, with a certificate error.
        #[cfg(feature = "tls")]
        return builder.tls_config(self.config.clone().unwrap_or_else(with_tls::refusing));
        #[cfg(not(feature = "tls"))]
        builder
    }
}

/// An https backend's Agent: ureq's rustls connector on top of our TCP transport, and
/// every name resolved to `addr`, the address resolved at start.
#[cfg(feature = "tls")]
pub(super) fn agent(config: AgentConfig, addr: SocketAddr, tcp: super::TcpConnector) -> Agent {
    use ureq::unversioned::transport::{Connector, RustlsConnector};
    let connector = tcp.chain(with_tls::Handshake(RustlsConnector::default()));
    Agent::with_parts(config, connector, with_tls::Fixed(addr))
}

/// Without the tls feature no https backend passes the configuration; should one come
/// anyway, ureq refuses it ("TLS required") and the request gets 502.
#[cfg(not(feature = "tls"))]
pub(super) fn agent(config: AgentConfig, _addr: SocketAddr, tcp: super::TcpConnector) -> Agent {
    use ureq::unversioned::resolver::DefaultResolver;
    Agent::with_parts(config, tcp, DefaultResolver::default())
}

#[cfg(feature = "tls")]
pub(super) use with_tls::{certificate_error, handshake_failure};

#[cfg(not(feature = "tls"))]
pub(super) fn certificate_error(_: &ureq::Error) -> Option<String> {
    None
}

#[cfg(not(feature = "tls"))]
pub(super) fn handshake_failure(_: &ureq::Error) -> Option<String> {
    None
}

#[cfg(feature = "tls")]
pub(super) mod with_tls {
    use std::fmt;
    use std::io;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;

    use rustls::crypto::{CryptoProvider, ring};
    use rustls_pki_types::CertificateDer;
    use ureq::config::Config as AgentConfig;
    use ureq::http::Uri;
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
    use ureq::unversioned::transport::{ConnectionDetails, Connector, NextTimeout, Transport};

    use super::TlsFlags;
    use crate::config::ConfigError;
    use crate::pem;

    /// The ring provider: gcc alone builds it (aws-lc-rs needs more, and is larger).
    fn provider() -> Arc<CryptoProvider> {
        Arc::new(ring::default_provider())
    }

    pub(super) fn config(flags: &TlsFlags) -> Result<TlsConfig, ConfigError> {
        let roots = match &flags.ca {
            Some(path) => pem::certificates("--backend-ca", path)?,
            None if flags.insecure => Vec::new(),
            None => system_roots()?,
        };
        let roots: Vec<Certificate<'static>> = roots
            .iter()
            .map(|c| Certificate::from_der(c).to_owned())
            .collect();
        let client = match (&flags.cert, &flags.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(identity(cert, key)?),
            (Some(_), None) => {
                return Err(ConfigError::new("--backend-cert", "needs --backend-key"));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new("--backend-key", "needs --backend-cert"));
            }
        };
        Ok(TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(provider())
            .root_certs(RootCerts::new_with_certs(&roots))
            .client_cert(client)
            // SNI names the host as written, so a backend serving several names picks
            // the right certificate (rustls sends none for an IP address).
            .use_sni(true)
            .disable_verification(flags.insecure)
            .build())
    }

    /// A config that trusts no certificate.
    pub(super) fn refusing() -> TlsConfig {
        TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(provider())
            .root_certs(RootCerts::new_with_certs(&[]))
            .build()
    }

    /// The system's roots: Debian's /etc/ssl/certs, or the files SSL_CERT_FILE and
    /// SSL_CERT_DIR name, as OpenSSL would find them.
    fn system_roots() -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            let why = match found.errors.first() {
                Some(e) => format!("no system root certificates ({e}); give --backend-ca"),
                None => "no system root certificates; give --backend-ca".into(),
            };
            return Err(ConfigError::new("--backend", why));
        }
        Ok(found.certs)
    }

    /// The client certificate chain and its key, checked to belong together now rather
    /// than at the first connect (ureq would panic there).
    fn identity(cert: &Path, key: &Path) -> Result<ClientCert, ConfigError> {
        let chain = pem::certificates("--backend-cert", cert)?;
        let bad_key =
            |why: String| ConfigError::new("--backend-key", format!("'{}': {why}", key.display()));
        let der = pem::private_key("--backend-key", key)?;
        rustls::sign::CertifiedKey::from_der(chain.clone(), der.clone_key(), &provider())
            .map_err(|e| bad_key(format!("does not go with --backend-cert: {e}")))?;
        // ureq takes the key as PEM (its key kinds are not public): the same bytes,
        // parsed again by the same rustls-pki-types reader.
        let pem = std::fs::read(key).map_err(|e| bad_key(e.to_string()))?;
        let key = PrivateKey::from_pem(&pem).map_err(|e| bad_key(e.to_string()))?;
        let chain: Vec<Certificate<'static>> = chain
            .iter()
            .map(|c| Certificate::from_der(c).to_owned())
            .collect();
        Ok(ClientCert::new_with_certs(&chain, key))
    }

    /// Resolves every name to the backend's address, resolved once at start: the URI
    /// keeps the host as written for SNI and the certificate check.
    #[derive(Debug)]
    pub(in crate::upstream) struct Fixed(pub SocketAddr);

    impl Resolver for Fixed {
        fn resolve(
            &self,
            _: &Uri,
            _: &AgentConfig,
            _: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            let mut addrs = self.empty();
            addrs.push(self.0);
            Ok(addrs)
        }
    }

    /// ureq's TLS connector, with its failures marked as the handshake's: they happen
    /// before the request is sent, and ureq reports them as the same IO errors as an
    /// exchange's.
    #[derive(Debug)]
    pub(in crate::upstream) struct Handshake<C>(pub C);

    impl<In: Transport, C: Connector<In>> Connector<In> for Handshake<C> {
        type Out = C::Out;

        fn connect(
            &self,
            details: &ConnectionDetails,
            chained: Option<In>,
        ) -> Result<Option<C::Out>, ureq::Error> {
            match self.0.connect(details, chained) {
                // A timeout is already a connect's (Timeout::Connect).
                Err(err @ ureq::Error::Timeout(_)) => Err(err),
                Err(err) => Err(ureq::Error::Io(io::Error::other(HandshakeFailed(err)))),
                ok => ok,
            }
        }
    }

    /// A TLS handshake that did not complete.
    #[derive(Debug)]
    struct HandshakeFailed(ureq::Error);

    impl fmt::Display for HandshakeFailed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "tls handshake failed: {}", self.0)
        }
    }

    impl std::error::Error for HandshakeFailed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// The handshake failure in `err`, as the log should say it.
    pub(in crate::upstream) fn handshake_failure(err: &ureq::Error) -> Option<String> {
        match err {
            ureq::Error::Io(e) => e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<HandshakeFailed>())
                .map(|h| h.to_string()),
            _ => None,
        }
    }

    /// The rustls error in `err`, through the wrappings of ureq's and ours.
    fn rustls_error(err: &ureq::Error) -> Option<&rustls::Error> {
        match err {
            ureq::Error::Rustls(e) => Some(e),
            ureq::Error::Io(e) => {
                let mut inner: Option<&(dyn std::error::Error + 'static)> =
                    e.get_ref().map(|e| e as _);
                while let Some(e) = inner {
                    if let Some(found) = e.downcast_ref::<rustls::Error>() {
                        return Some(found);
                    }
                    if let Some(HandshakeFailed(wrapped)) = e.downcast_ref::<HandshakeFailed>() {
                        return rustls_error(wrapped);
                    }
                    inner = e.source();
                }
                None
            }
            _ => None,
        }
    }

    /// Why a certificate was refused (the backend's by our check, or ours by the
    /// backend), if that is why the exchange failed.
    pub(in crate::upstream) fn certificate_error(err: &ureq::Error) -> Option<String> {
        let rustls_error = rustls_error(err)?;
        use rustls::AlertDescription::*;
        let refused = matches!(
            rustls_error,
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::AlertReceived(
                    BadCertificate
                        | CertificateRequired
                        | UnknownCA
                        | CertificateUnknown
                        | CertificateExpired
                        | CertificateRevoked
                        | UnsupportedCertificate
                )
        );
        refused.then(|| rustls_error.to_string())
    }
}
