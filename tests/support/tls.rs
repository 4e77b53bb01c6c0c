//! TLS for the integration tests: a test CA made on the spot with rcgen, certificates it
//! signs written as PEM files into a temporary directory, and a backend that answers
//! over rustls (server side, ring provider), optionally requiring a client certificate.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::SystemTime;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use super::PATIENCE;

/// A certificate authority for one test, and the directory its files go to.
pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

/// A certificate the test CA signed, and its key, as DER and as PEM files.
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    key: Vec<u8>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(&self.key).expect("the leaf's key")
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("a directory for the test certificates");
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        TestCa {
            dir,
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate's PEM file, for `--backend-ca`.
    pub fn ca_path(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// The directory the certificates are written to; removed with the CA.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Signs a leaf for `names` (DNS names or IP addresses) and writes `NAME.pem` and
    /// `NAME.key`.
    pub fn issue(&self, name: &str, names: &[&str]) -> Leaf {
        self.issue_with(name, names, None)
    }

    /// `issue`, valid from `from` until `until` only.
    pub fn issue_dated(
        &self,
        name: &str,
        names: &[&str],
        from: SystemTime,
        until: SystemTime,
    ) -> Leaf {
        self.issue_with(name, names, Some((from, until)))
    }

    fn issue_with(
        &self,
        name: &str,
        names: &[&str],
        valid: Option<(SystemTime, SystemTime)>,
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if let Some((from, until)) = valid {
            params.not_before = from.into();
            params.not_after = until.into();
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = self.dir.path().join(format!("{name}.pem"));
        let key_path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf {
            cert: cert.der().clone(),
            key: key.serialize_pem().into_bytes(),
            cert_path,
            key_path,
        }
    }
}

/// A backend that answers every request over TLS with 200 and `secure`, keeping the
/// connection open for the next.
pub struct TlsBackend {
    pub addr: SocketAddr,
    /// Requests answered, over all connections.
    answered: Arc<AtomicUsize>,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
}

impl TlsBackend {
    /// Serves with `leaf`; `clients`: require a client certificate this CA signed.
    pub fn start(leaf: &Leaf, clients: Option<&TestCa>) -> TlsBackend {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.cert.clone()).unwrap();
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = Arc::new(
            builder
                .with_single_cert(vec![leaf.cert.clone()], leaf.key())
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TLS backend");
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (count, accepted) = (answered.clone(), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (config, count) = (config.clone(), count.clone());
                thread::spawn(move || {
                    let _ = serve(stream, config, &count);
                });
            }
        });
        TlsBackend {
            addr,
            answered,
            connections,
        }
    }

    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Answers the requests of one connection until the client closes it or the handshake
/// or a read fails. Requests are bodyless GETs: a head, then the answer.
fn serve(stream: TcpStream, config: Arc<ServerConfig>, count: &AtomicUsize) -> io::Result<()> {
    stream.set_read_timeout(Some(PATIENCE))?;
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, stream);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.drain(..end + 4);
            count.fetch_add(1, Ordering::SeqCst);
            tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")?;
            tls.flush()?;
        }
    }
}
