//! TLS for the integration tests: a test CA made on the spot with rcgen, certificates it
//! signs written as PEM files into a temporary directory, a backend that answers over
//! rustls (server side, ring provider), optionally requiring a client certificate, a
//! balancer with a TLS listener, and a rustls client that talks to it (and says which
//! certificate, version and kind of handshake it got).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::version::{TLS12, TLS13};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, ProtocolVersion,
    RootCertStore, ServerConfig, ServerConnection, SignatureScheme, StreamOwned,
    SupportedProtocolVersion,
};

use super::{
    Backend, Balancer, PATIENCE, Response, ResponseReader, balancer_args, start_balancer_with,
};

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
    /// What `cert_path` holds: the leaf, then any intermediate.
    cert_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(&self.key).expect("the leaf's key")
    }

    /// Writes this certificate and key over the files `cert` and `key`.
    pub fn write_to(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).expect("write the certificate file");
        std::fs::write(key, &self.key).expect("write the key file");
    }

    /// `--tls-cert` and `--tls-key` for this pair.
    pub fn tls_args(&self) -> [String; 4] {
        [
            "--tls-cert".into(),
            self.cert_path.display().to_string(),
            "--tls-key".into(),
            self.key_path.display().to_string(),
        ]
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("a directory for the test certificates");
        let params = ca_params("roundhouse test CA");
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

    /// A root store that trusts this CA alone.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).expect("the CA certificate");
        roots
    }

    /// Signs a leaf for `names` (DNS names, `*.` wildcards or IP addresses) and writes
    /// `NAME.pem` and `NAME.key`.
    pub fn issue(&self, name: &str, names: &[&str]) -> Leaf {
        self.write_leaf(name, names, None, &self.issuer, "")
    }

    /// `issue`, valid from `from` until `until` only.
    pub fn issue_dated(
        &self,
        name: &str,
        names: &[&str],
        from: SystemTime,
        until: SystemTime,
    ) -> Leaf {
        self.write_leaf(name, names, Some((from, until)), &self.issuer, "")
    }

    /// Like [`TestCa::issue`], signed by an intermediate CA that this CA signed: `NAME.pem`
    /// holds the leaf and then the intermediate, as a server must send them.
    pub fn issue_chained(&self, name: &str, names: &[&str]) -> Leaf {
        let params = ca_params("roundhouse test intermediate CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let intermediate = Issuer::new(params, key);
        self.write_leaf(name, names, None, &intermediate, &cert.pem())
    }

    /// `valid`: from, until; rcgen's own far-apart dates otherwise. `chain_pem` follows
    /// the leaf in its file.
    fn write_leaf(
        &self,
        name: &str,
        names: &[&str],
        valid: Option<(SystemTime, SystemTime)>,
        issuer: &Issuer<'_, KeyPair>,
        chain_pem: &str,
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if let Some((from, until)) = valid {
            params.not_before = from.into();
            params.not_after = until.into();
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        let leaf = Leaf {
            cert: cert.der().clone(),
            key: key.serialize_pem().into_bytes(),
            cert_pem: format!("{}{chain_pem}", cert.pem()),
            cert_path: self.dir.path().join(format!("{name}.pem")),
            key_path: self.dir.path().join(format!("{name}.key")),
        };
        leaf.write_to(&leaf.cert_path, &leaf.key_path);
        leaf
    }
}

/// The parameters of a CA certificate named `what` and a number of its own. Every CA has
/// its own name: a verifier looks for a certificate's issuer by name, and two CAs named
/// alike would turn "unknown issuer" into "bad signature".
fn ca_params(what: &str) -> CertificateParams {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{what} {n}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
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
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(ca.roots().into(), provider)
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

// A balancer with a TLS listener.

/// Starts a balancer in front of `backends` with a plain listener and a TLS listener, both
/// on 127.0.0.1:0, serving `certs` (the first is the default), with 4 workers and logging
/// off unless `extra` says otherwise. Returns the balancer (its `addr` is the plain
/// listener's) and the TLS listener's address.
pub fn start_tls_balancer(
    backends: &[&Backend],
    certs: &[&Leaf],
    extra: &[&str],
) -> (Balancer, SocketAddr) {
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    start_tls_balancer_on(&addrs, certs, extra)
}

/// Like [`start_tls_balancer`], with backend addresses (backends of other kinds).
pub fn start_tls_balancer_on(
    backends: &[SocketAddr],
    certs: &[&Leaf],
    extra: &[&str],
) -> (Balancer, SocketAddr) {
    let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"]
        .map(String::from)
        .into();
    for leaf in certs {
        args.extend(leaf.tls_args());
    }
    args.extend(balancer_args(backends, extra));
    let lb = start_balancer_with(&args);
    let tls = lb.tls_addrs();
    assert_eq!(tls.len(), 1, "one TLS listener: {tls:?}");
    (lb, tls[0])
}

// The client.

/// The versions the listener speaks.
pub const TLS12_AND_13: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// A rustls client configuration on the ring provider, offering `versions` and ALPN
/// `http/1.1`. It checks the server's certificate against `ca`; with None it accepts any
/// certificate, so that a test can see which one the server picked for a name that
/// certificate does not cover.
pub fn client_config(
    ca: Option<&TestCa>,
    versions: &[&'static SupportedProtocolVersion],
) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("the ring provider speaks TLS 1.2 and 1.3");
    let mut config = match ca {
        Some(ca) => builder
            .with_root_certificates(ca.roots())
            .with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// A TLS client. Every connection it opens shares one configuration, and so one session
/// store: a second connection to the same name can resume the first one's session.
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// TLS 1.2 and 1.3, ALPN `http/1.1`, the certificate checked against `ca`.
    pub fn new(ca: &TestCa) -> TlsClient {
        TlsClient::from_config(client_config(Some(ca), TLS12_AND_13))
    }

    /// Like [`TlsClient::new`], accepting any certificate.
    pub fn any_certificate() -> TlsClient {
        TlsClient::from_config(client_config(None, TLS12_AND_13))
    }

    pub fn from_config(config: ClientConfig) -> TlsClient {
        TlsClient {
            config: Arc::new(config),
        }
    }

    /// Connects to `addr` and completes the handshake for `name`: a DNS name is sent as
    /// SNI, an IP address is not (TLS has no SNI for addresses). Reads and writes time
    /// out after [`PATIENCE`]. A refused handshake is an error holding rustls's (see
    /// [`tls_error`]).
    pub fn connect(&self, addr: SocketAddr, name: &str) -> io::Result<TlsConn> {
        Ok(TlsConn {
            reader: ResponseReader::new(self.connect_stream(addr, name)?),
        })
    }

    /// A handshake on a connection the caller opened (and may have written to first: a
    /// PROXY header).
    pub fn over(&self, sock: TcpStream, name: &str) -> io::Result<TlsConn> {
        Ok(TlsConn {
            reader: ResponseReader::new(self.handshake(sock, name)?),
        })
    }

    /// Like [`TlsClient::connect`], the bare stream: for a client of another protocol
    /// (WebSocket) over TLS.
    pub fn connect_stream(
        &self,
        addr: SocketAddr,
        name: &str,
    ) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
        self.handshake(TcpStream::connect(addr)?, name)
    }

    fn handshake(
        &self,
        mut sock: TcpStream,
        name: &str,
    ) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
        let mut conn = self.start(name);
        sock.set_read_timeout(Some(PATIENCE))?;
        sock.set_write_timeout(Some(PATIENCE))?;
        let _ = sock.set_nodelay(true);
        conn.complete_io(&mut sock)?;
        assert!(!conn.is_handshaking(), "complete_io returned mid-handshake");
        Ok(StreamOwned::new(conn, sock))
    }

    /// What this client sends first for `name`: a whole ClientHello, as TLS records.
    pub fn client_hello(&self, name: &str) -> Vec<u8> {
        let mut conn = self.start(name);
        let mut hello = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut hello).expect("write to a Vec");
        }
        hello
    }

    fn start(&self, name: &str) -> ClientConnection {
        let name = ServerName::try_from(name.to_string()).expect("a DNS name or an IP address");
        ClientConnection::new(self.config.clone(), name).expect("a client connection")
    }
}

/// The rustls error inside an error of [`TlsClient::connect`], if it is one.
pub fn tls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref()
}

/// One TLS connection, handshake done, that reads responses like [`super::Client`].
pub struct TlsConn {
    pub reader: ResponseReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsConn {
    fn conn(&self) -> &ClientConnection {
        &self.reader.get_ref().conn
    }

    /// The leaf certificate the server presented.
    pub fn peer_cert(&self) -> CertificateDer<'static> {
        self.peer_chain()[0].clone()
    }

    /// Every certificate the server presented, the leaf first.
    pub fn peer_chain(&self) -> Vec<CertificateDer<'static>> {
        let chain = self
            .conn()
            .peer_certificates()
            .expect("a server certificate");
        chain.iter().map(|c| c.clone().into_owned()).collect()
    }

    pub fn version(&self) -> ProtocolVersion {
        self.conn()
            .protocol_version()
            .expect("a negotiated version")
    }

    pub fn handshake_kind(&self) -> HandshakeKind {
        self.conn().handshake_kind().expect("a finished handshake")
    }

    /// The protocol the server picked by ALPN.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.conn().alpn_protocol().map(<[u8]>::to_vec)
    }

    /// Writes `bytes` (through TLS); panics if that fails.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let stream = self.reader.get_mut();
        stream.write_all(bytes.as_ref()).expect("write over TLS");
        stream.flush().expect("flush over TLS");
    }

    /// Sends a GET for `path` and reads the response.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        self.response()
    }

    pub fn response(&mut self) -> Response {
        self.reader
            .read_response(false)
            .expect("read a response over TLS")
            .expect("a response, not a closed connection")
    }
}

/// Accepts any server certificate, still checking that the server holds its key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _leaf: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
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

/// The ClientHello of a TLS 1.1 client, written out by hand since rustls cannot speak
/// 1.1: version 3.2, two RSA AES-CBC suites of that time, no extensions (so no
/// supported_versions to offer anything newer).
pub fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02];
    hello.extend([0x5a; 32]); // random
    hello.push(0); // no session id
    hello.extend([0x00, 0x04, 0x00, 0x2f, 0x00, 0x35]); // two cipher suites
    hello.extend([0x01, 0x00]); // compression: none
    let mut handshake = vec![0x01, 0, 0, hello.len() as u8];
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01, 0, handshake.len() as u8];
    record.extend(handshake);
    record
}

/// Whether `bytes` start with a TLS alert record of `description` (RFC 8446 §6).
pub fn is_alert(bytes: &[u8], description: u8) -> bool {
    bytes.len() >= 7 && bytes[0] == 0x15 && bytes[3..5] == [0, 2] && bytes[6] == description
}
