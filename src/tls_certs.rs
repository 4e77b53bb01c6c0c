//! The certificates a TLS listener serves: `Certs` is every `--tls-cert`/`--tls-key`
//! pair read, checked and indexed by the DNS names it covers; `Resolver` picks one of
//! them for each handshake by the name the client sends (SNI); `server_config` is the
//! rustls server configuration built around a `Resolver`.
//!
//! The configuration (`config/listeners.rs`) calls `load` once at start (and for
//! `--check`) and keeps the `Certs` in `Config::listener_tls`; `main.rs` prints their
//! warnings. The TLS listener (`--tls-listen`) is to put them in one shared `Resolver`
//! and give every accepted connection a `rustls::ServerConnection` of
//! `server_config(resolver)`; a SIGHUP (`reload`) is to call `Resolver::reload`, which
//! changes what new handshakes get and leaves established connections alone.
//!
//! rustls has `ResolvesServerCertUsingSni`, but it answers nothing to a client that sends
//! no name or an unknown one; a listener must still answer those (an IP address as the
//! host, an old client), so `Resolver` falls back to the first pair, and it matches
//! wildcards, which rustls's resolver does not.
//!
//! The names and dates come from `x509-parser` (the Rusticata project's, on `nom`): it
//! hands over the validity as timestamps and the subject alternative names as typed
//! values, it has been kept up for years, and rcgen (the tests' certificate maker)
//! already depends on it, so Cargo.lock gains no crate (the binary does gain it and its
//! DER parsers). RustCrypto's `x509-cert` would do as well but would add its own `der`
//! stack. The key check is rustls's own (`CertifiedKey::keys_match` on the ring
//! provider's key), so a certificate is never served with a key that does not match it.
//! Everything here needs the `tls` cargo feature.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::{CryptoProvider, ring};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::{Error as TlsError, ServerConfig};
use x509_parser::extensions::GeneralName;

use crate::config::{CertPair, ConfigError};
use crate::pem;

/// A certificate expiring sooner than this is loaded with a warning.
const WARN_BEFORE_DAYS: i64 = 30;

const DAY_SECS: i64 = 24 * 60 * 60;

/// TLS sessions the server remembers for clients that resume by session ID rather
/// than by ticket (TLS 1.2 clients without ticket support). An entry holds a session
/// ID and its secrets, a few hundred bytes, so 4096 is about a megabyte at most; the
/// cache forgets the oldest beyond that, costing that client one full handshake.
const SESSION_CACHE: usize = 4096;

/// Every pair, read and checked, in the order given: the first is the default.
pub struct Certs {
    keys: Vec<Arc<CertifiedKey>>,
    /// Lower-case DNS name -> index in `keys`; the first pair naming it wins.
    exact: HashMap<String, usize>,
    /// `*.example.com` as `example.com` -> index in `keys`; the first pair wins.
    wildcard: HashMap<String, usize>,
    warnings: Vec<String>,
}

impl Certs {
    /// What is worth saying about certificates that still load: one expiring within
    /// 30 days, one whose names no client can pick. `--check` and the startup print
    /// these.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The certificate for the name a client sent: a pair naming it exactly, else one
    /// whose wildcard covers its first label, else the first pair.
    fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let found = sni.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        &self.keys[found.copied().unwrap_or(0)]
    }
}

impl fmt::Debug for Certs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certs")
            .field("pairs", &self.keys.len())
            .field("names", &(self.exact.len() + self.wildcard.len()))
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Reads and checks every pair: each file's PEM, that the key signs for its
/// certificate, and that the leaf is valid now. No pair is an error too.
pub fn load(pairs: &[CertPair]) -> Result<Certs, ConfigError> {
    load_at(pairs, unix_now())
}

/// `load` as if it were `now` (seconds since the Unix epoch).
fn load_at(pairs: &[CertPair], now: i64) -> Result<Certs, ConfigError> {
    if pairs.is_empty() {
        return Err(ConfigError::new("--tls-cert", "no certificate given"));
    }
    let provider = ring::default_provider();
    let mut certs = Certs {
        keys: Vec::with_capacity(pairs.len()),
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        warnings: Vec::new(),
    };
    for (index, pair) in pairs.iter().enumerate() {
        let key = certified_key(pair, &provider)?;
        let leaf = leaf_facts(&pair.cert, &key.cert[0], now)?;
        certs.warnings.extend(leaf.warning);
        if leaf.names.is_empty() && index > 0 {
            certs.warnings.push(format!(
                "--tls-cert: '{}' has no DNS name among its subject alternative names: \
                 no client can pick it",
                pair.cert.display()
            ));
        }
        for name in leaf.names {
            match name.strip_prefix("*.") {
                Some(parent) => certs.wildcard.entry(parent.to_owned()),
                None => certs.exact.entry(name),
            }
            .or_insert(index);
        }
        certs.keys.push(Arc::new(key));
    }
    Ok(certs)
}

/// The chain and key of one pair, the key checked against the leaf.
fn certified_key(pair: &CertPair, provider: &CryptoProvider) -> Result<CertifiedKey, ConfigError> {
    let chain = pem::certificates("--tls-cert", &pair.cert)?;
    let key_flag = "--tls-key";
    let bad_key =
        |why: String| ConfigError::new(key_flag, format!("'{}': {why}", pair.key.display()));
    let key = pem::private_key(key_flag, &pair.key)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad_key(format!("not a usable private key ({e})")))?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        Ok(()) => Ok(key),
        Err(TlsError::InconsistentKeys(_)) => Err(bad_key(format!(
            "is not the key of the certificate in '{}'",
            pair.cert.display()
        ))),
        Err(e) => Err(bad_key(format!(
            "cannot be checked against '{}' ({e})",
            pair.cert.display()
        ))),
    }
}

/// What `load` keeps from a leaf certificate.
struct LeafFacts {
    /// Its DNS names, lower case, wildcards as `*.example.com`.
    names: Vec<String>,
    /// Set when it expires within `WARN_BEFORE_DAYS`.
    warning: Option<String>,
}

/// Parses the leaf: its DNS names, and whether it is valid at `now`.
fn leaf_facts(path: &Path, der: &[u8], now: i64) -> Result<LeafFacts, ConfigError> {
    let bad = |why: String| ConfigError::new("--tls-cert", format!("'{}': {why}", path.display()));
    let (_, leaf) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| bad(format!("not an X.509 certificate ({e})")))?;
    let validity = leaf.validity();
    if now < validity.not_before.timestamp() {
        return Err(bad(format!("not valid before {}", validity.not_before)));
    }
    let left = validity.not_after.timestamp() - now;
    if left < 0 {
        return Err(bad(format!("expired on {}", validity.not_after)));
    }
    let warning = (left < WARN_BEFORE_DAYS * DAY_SECS).then(|| {
        format!(
            "--tls-cert: '{}' expires in {} days, on {}",
            path.display(),
            left / DAY_SECS,
            validity.not_after
        )
    });
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| bad(format!("unreadable subject alternative names ({e})")))?;
    let names = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    Ok(LeafFacts { names, warning })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Picks the certificate for each handshake from the `Certs` it holds now, which a
/// reload replaces whole.
pub struct Resolver {
    /// Written by `swap` alone (the reload, once the listener exists); every handshake
    /// reads it. A handshake takes its certificate when it starts, so one under way when
    /// the set changes finishes with the old certificate, and established connections
    /// never look here again.
    certs: ArcSwap<Certs>,
}

impl Resolver {
    /// A resolver of `certs`, which the configuration holds too (`ListenerTls::certs`).
    pub fn new(certs: Arc<Certs>) -> Resolver {
        Resolver {
            certs: ArcSwap::new(certs),
        }
    }

    /// New handshakes get `certs` from now on.
    pub fn swap(&self, certs: Certs) {
        self.certs.store(Arc::new(certs));
    }

    /// Loads `pairs` and swaps them in, returning their warnings; when they do not load,
    /// the certificates stay as they were and the error says why.
    pub fn reload(&self, pairs: &[CertPair]) -> Result<Vec<String>, ConfigError> {
        let certs = load(pairs)?;
        let warnings = certs.warnings.clone();
        self.swap(certs);
        Ok(warnings)
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("certs", &*self.certs.load())
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certs.load().pick(hello.server_name()).clone())
    }
}

/// The listener's rustls configuration: the ring provider, TLS 1.2 and 1.3 with rustls's
/// default cipher suites, certificates from `resolver`, ALPN `http/1.1` only (we speak
/// no other; rustls refuses a client whose ALPN list lacks it, as RFC 7301 asks) and
/// session resumption by ticket and by a bounded cache.
pub fn server_config(resolver: Arc<Resolver>) -> ServerConfig {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&TLS13, &TLS12])
        .expect("the ring provider's default suites cover TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    // Ticket keys come from the system's random source; only when that fails are there
    // no tickets, and clients resume through the cache alone.
    if let Ok(ticketer) = ring::Ticketer::new() {
        config.ticketer = ticketer;
    }
    config
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use rcgen::{CertificateParams, KeyPair};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::{Resumption, Tls12Resumption};
    use rustls::crypto::{CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::version::{TLS12, TLS13};
    use rustls::{
        ClientConfig, ClientConnection, Connection, DigitallySignedStruct, HandshakeKind,
        ServerConfig, ServerConnection, SignatureScheme, SupportedProtocolVersion,
    };

    use super::{Resolver, load, server_config};
    use crate::config::CertPair;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    /// A self-signed certificate written as `FILE.pem` and `FILE.key`.
    struct Made {
        pair: CertPair,
        der: CertificateDer<'static>,
    }

    fn make(dir: &Path, file: &str, names: &[&str]) -> Made {
        make_dated(dir, file, names, None)
    }

    /// `valid`: from, until; rcgen's own far-apart dates otherwise.
    fn make_dated(
        dir: &Path,
        file: &str,
        names: &[&str],
        valid: Option<(SystemTime, SystemTime)>,
    ) -> Made {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if let Some((from, until)) = valid {
            params.not_before = from.into();
            params.not_after = until.into();
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pair = CertPair {
            cert: dir.join(format!("{file}.pem")),
            key: dir.join(format!("{file}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        Made {
            pair,
            der: cert.der().clone(),
        }
    }

    /// A resolver of `made`, and the one server config a listener would build on it.
    fn listener(made: &[&Made]) -> (Arc<Resolver>, Arc<ServerConfig>) {
        let pairs: Vec<CertPair> = made.iter().map(|m| m.pair.clone()).collect();
        let resolver = Arc::new(Resolver::new(Arc::new(load(&pairs).unwrap())));
        (resolver.clone(), Arc::new(server_config(resolver)))
    }

    /// A client that takes any certificate (so that a test sees which one it got) but
    /// still checks the handshake's signatures with it.
    #[derive(Debug)]
    struct AnyCertificate(CryptoProvider);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.0.signature_verification_algorithms;
            verify_tls12_signature(message, cert, dss, algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.0.signature_verification_algorithms;
            verify_tls13_signature(message, cert, dss, algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    fn client_config(
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<ClientConfig> {
        let provider = ring::default_provider();
        let verifier = Arc::new(AnyCertificate(provider.clone()));
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    fn http1_client() -> Arc<ClientConfig> {
        client_config(&[&TLS13, &TLS12], &[b"http/1.1"])
    }

    /// A client (sending `sni`, or no SNI when `None`) and a server, their handshake not
    /// started.
    fn pair(
        client: &Arc<ClientConfig>,
        server: &Arc<ServerConfig>,
        sni: Option<&str>,
    ) -> (Connection, Connection) {
        let mut config = (**client).clone();
        config.enable_sni = sni.is_some();
        let name = ServerName::try_from(sni.unwrap_or("unnamed.test").to_owned()).unwrap();
        // A copy of the config would have a session store of its own: keep the caller's
        // when SNI is on, so that resumption can be tested.
        let config = if sni.is_some() {
            client.clone()
        } else {
            Arc::new(config)
        };
        let client = ClientConnection::new(config, name).unwrap();
        let server = ServerConnection::new(server.clone()).unwrap();
        (client.into(), server.into())
    }

    /// Moves what `from` has to send into `to`, which processes it.
    fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).unwrap();
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets()?;
        }
        Ok(())
    }

    /// Drives both sides until the handshake is over and nothing is left to send (the
    /// TLS 1.3 tickets included).
    fn finish(client: &mut Connection, server: &mut Connection) -> Result<(), rustls::Error> {
        for _ in 0..10 {
            transfer(client, server)?;
            transfer(server, client)?;
            let busy = |c: &Connection| c.is_handshaking() || c.wants_write();
            if !busy(client) && !busy(server) {
                return Ok(());
            }
        }
        panic!("the handshake did not finish in 10 round trips");
    }

    /// The leaf a client gets from `server` when it sends `sni`.
    fn served(server: &Arc<ServerConfig>, sni: Option<&str>) -> CertificateDer<'static> {
        let (mut client, mut server) = pair(&http1_client(), server, sni);
        finish(&mut client, &mut server).unwrap();
        assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]));
        client.peer_certificates().unwrap()[0].clone()
    }

    #[test]
    fn sni_picks_the_certificate_naming_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let a = make(dir.path(), "a", &["a.example.com"]);
        let b = make(dir.path(), "b", &["b.example.com", "B2.example.com"]);
        let (_, config) = listener(&[&a, &b]);
        assert_eq!(served(&config, Some("b.example.com")), b.der);
        assert_eq!(served(&config, Some("a.example.com")), a.der);
        assert_eq!(served(&config, Some("b2.example.com")), b.der);
    }

    #[test]
    fn no_sni_and_an_unknown_name_get_the_first_pair() {
        let dir = tempfile::tempdir().unwrap();
        let a = make(dir.path(), "a", &["a.example.com"]);
        let b = make(dir.path(), "b", &["b.example.com"]);
        let (_, config) = listener(&[&b, &a]);
        assert_eq!(served(&config, None), b.der);
        assert_eq!(served(&config, Some("other.test")), b.der);
        assert_eq!(served(&config, Some("a.example.com")), a.der);
    }

    #[test]
    fn a_wildcard_covers_one_label_and_exact_names_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let default = make(dir.path(), "default", &["default.test"]);
        let wild = make(dir.path(), "wild", &["*.wild.test"]);
        let exact = make(dir.path(), "exact", &["exact.wild.test"]);
        let (_, config) = listener(&[&default, &wild, &exact]);
        assert_eq!(served(&config, Some("x.wild.test")), wild.der);
        assert_eq!(served(&config, Some("exact.wild.test")), exact.der);
        assert_eq!(served(&config, Some("y.x.wild.test")), default.der);
        assert_eq!(served(&config, Some("wild.test")), default.der);
    }

    #[test]
    fn a_key_of_another_certificate_is_an_error_naming_tls_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = make(dir.path(), "a", &["a.example.com"]);
        let b = make(dir.path(), "b", &["b.example.com"]);
        let mixed = CertPair {
            cert: a.pair.cert.clone(),
            key: b.pair.key.clone(),
        };
        let err = load(&[a.pair.clone(), mixed]).unwrap_err();
        assert_eq!(err.flag(), Some("--tls-key"));
        assert!(
            err.message()
                .contains("is not the key of the certificate in"),
            "{err}"
        );
        assert!(err.message().contains("b.key"), "{err}");
        assert!(load(&[a.pair.clone(), b.pair.clone()]).is_ok());
    }

    #[test]
    fn an_expired_or_future_certificate_is_an_error_and_a_close_end_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let old = make_dated(
            dir.path(),
            "old",
            &["a.test"],
            Some((now - 20 * DAY, now - DAY)),
        );
        let err = load(&[old.pair]).unwrap_err();
        assert_eq!(err.flag(), Some("--tls-cert"));
        assert!(err.message().contains("old.pem': expired on "), "{err}");

        let future = make_dated(
            dir.path(),
            "future",
            &["a.test"],
            Some((now + DAY, now + 90 * DAY)),
        );
        let err = load(&[future.pair]).unwrap_err();
        assert_eq!(err.flag(), Some("--tls-cert"));
        assert!(
            err.message().contains("future.pem': not valid before "),
            "{err}"
        );

        let soon = make_dated(
            dir.path(),
            "soon",
            &["a.test"],
            Some((now - DAY, now + 10 * DAY + DAY / 24)),
        );
        let certs = load(&[soon.pair]).unwrap();
        assert_eq!(certs.warnings().len(), 1, "{:?}", certs.warnings());
        assert!(
            certs.warnings()[0].contains("soon.pem' expires in 10 days"),
            "{:?}",
            certs.warnings()
        );

        let later = make_dated(
            dir.path(),
            "later",
            &["a.test"],
            Some((now - DAY, now + 40 * DAY)),
        );
        assert_eq!(load(&[later.pair]).unwrap().warnings(), &[] as &[String]);
    }

    #[test]
    fn a_failed_reload_keeps_the_old_certificates_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let a = make(dir.path(), "a", &["a.example.com"]);
        let b = make(dir.path(), "b", &["a.example.com"]);
        let (resolver, config) = listener(&[&a]);
        std::fs::write(dir.path().join("broken.pem"), "not a certificate").unwrap();
        let broken = CertPair {
            cert: dir.path().join("broken.pem"),
            key: b.pair.key.clone(),
        };
        let err = resolver.reload(&[broken]).unwrap_err();
        assert_eq!(err.flag(), Some("--tls-cert"));
        assert!(err.message().contains("broken.pem"), "{err}");
        assert_eq!(served(&config, Some("a.example.com")), a.der);
        assert_eq!(
            resolver.reload(std::slice::from_ref(&b.pair)).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(served(&config, Some("a.example.com")), b.der);
    }

    #[test]
    fn after_a_swap_new_handshakes_get_the_new_certificate_and_one_under_way_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let a = make(dir.path(), "a", &["a.example.com"]);
        let b = make(dir.path(), "b", &["a.example.com"]);
        let (resolver, config) = listener(&[&a]);
        let (mut client, mut server) = pair(&http1_client(), &config, Some("a.example.com"));
        // The server reads the ClientHello, and so picks its certificate, before the swap.
        transfer(&mut client, &mut server).unwrap();
        resolver.swap(load(std::slice::from_ref(&b.pair)).unwrap());
        finish(&mut client, &mut server).unwrap();
        assert_eq!(client.peer_certificates().unwrap()[0], a.der);
        assert_eq!(served(&config, Some("a.example.com")), b.der);
    }

    #[test]
    fn a_client_offering_only_h2_fails_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let a = make(dir.path(), "a", &["a.example.com"]);
        let (_, config) = listener(&[&a]);
        let h2 = client_config(&[&TLS13, &TLS12], &[b"h2"]);
        let (mut client, mut server) = pair(&h2, &config, Some("a.example.com"));
        let err = finish(&mut client, &mut server).unwrap_err();
        assert_eq!(err, rustls::Error::NoApplicationProtocol);
        // Offering both, it gets http/1.1; offering none, it is served all the same.
        let both = client_config(&[&TLS13], &[b"h2", b"http/1.1"]);
        let (mut client, mut server) = pair(&both, &config, Some("a.example.com"));
        finish(&mut client, &mut server).unwrap();
        assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]));
        let none = client_config(&[&TLS13], &[]);
        let (mut client, mut server) = pair(&none, &config, Some("a.example.com"));
        finish(&mut client, &mut server).unwrap();
    }

    #[test]
    fn a_second_connection_resumes_the_first_ones_session_on_tls13_and_tls12() {
        let dir = tempfile::tempdir().unwrap();
        let a = make(dir.path(), "a", &["a.example.com"]);
        let (_, config) = listener(&[&a]);
        assert!(config.ticketer.enabled());
        // TLS 1.3 by ticket, TLS 1.2 by ticket, TLS 1.2 by session ID (the cache).
        for (version, by_ticket) in [(&TLS13, true), (&TLS12, true), (&TLS12, false)] {
            let mut client = (*client_config(&[version], &[b"http/1.1"])).clone();
            if !by_ticket {
                client.resumption = Resumption::in_memory_sessions(8)
                    .tls12_resumption(Tls12Resumption::SessionIdOnly);
            }
            let client = Arc::new(client);
            let (mut first, mut server) = pair(&client, &config, Some("a.example.com"));
            finish(&mut first, &mut server).unwrap();
            assert_eq!(first.handshake_kind(), Some(HandshakeKind::Full));
            let (mut second, mut server) = pair(&client, &config, Some("a.example.com"));
            finish(&mut second, &mut server).unwrap();
            assert_eq!(
                second.handshake_kind(),
                Some(HandshakeKind::Resumed),
                "{version:?}, by ticket: {by_ticket}"
            );
        }
    }

    #[test]
    fn a_file_holding_a_chain_is_served_whole_with_the_leaf_first() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = make(dir.path(), "leaf", &["a.example.com"]);
        let other = make(dir.path(), "other", &["b.example.com"]);
        let mut pem = std::fs::read(&leaf.pair.cert).unwrap();
        pem.extend(std::fs::read(&other.pair.cert).unwrap());
        std::fs::write(&leaf.pair.cert, pem).unwrap();
        let (_, config) = listener(&[&leaf]);
        let (mut client, mut server) = pair(&http1_client(), &config, Some("a.example.com"));
        finish(&mut client, &mut server).unwrap();
        assert_eq!(client.peer_certificates().unwrap(), &[leaf.der, other.der]);
    }

    #[test]
    fn no_pair_is_an_error() {
        let err = load(&[]).unwrap_err();
        assert_eq!(err.flag(), Some("--tls-cert"));
    }
}
