//! TLS to backends (README "TLS to backends"): `--backend https://host:port` checks the
//! backend's certificate against `--backend-ca` or the system's roots, names the host
//! as written, presents a client certificate when asked, and refuses with 502 what does
//! not check out. The backends are rustls servers with certificates made in the test.

#[cfg(feature = "tls")]
use std::process::Command;

use crate::support::*;

/// A GET of `/` through the balancer at `addr`: the status and the body.
#[cfg(feature = "tls")]
fn get(addr: std::net::SocketAddr) -> (u16, String) {
    let response = Client::connect(addr).get("/");
    (response.status, response.body_str())
}

#[cfg(feature = "tls")]
fn https(host: &str, backend: &TlsBackend) -> String {
    format!("https://{host}:{}", backend.addr.port())
}

#[cfg(feature = "tls")]
#[test]
fn a_backend_whose_certificate_the_backend_ca_signed_answers() {
    let ca = TestCa::new();
    let backend = TlsBackend::start(&ca.issue("server", &["localhost", "127.0.0.1"]), None);
    let url = https("localhost", &backend);
    let lb = start_balancer_on(&[], &["--backend", &url, "--backend-ca", &ca.ca_path()]);
    assert_eq!(get(lb.addr), (200, "secure".into()));
    // The connection is pooled like a plain one: the second request reuses it.
    assert_eq!(get(lb.addr), (200, "secure".into()));
    assert_eq!((backend.answered(), backend.connections()), (2, 1));
}

#[cfg(feature = "tls")]
#[test]
fn without_the_backend_ca_the_system_roots_refuse_a_test_certificate() {
    let ca = TestCa::new();
    let backend = TlsBackend::start(&ca.issue("server", &["localhost"]), None);
    let listen = format!("127.0.0.1:{}", reserve_port());
    let url = https("localhost", &backend);
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--listen",
        &listen,
        "--workers",
        "2",
        "--log",
        "json",
        "--backend",
        &url,
    ]);
    // A machine without Debian's bundle still has roots that did not sign the backend's
    // certificate: another CA's, where OpenSSL (and rustls-native-certs) looks first.
    let other = TestCa::new();
    if !std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        cmd.env("SSL_CERT_FILE", other.ca_path());
    }
    let p = Proc::spawn(&mut cmd);
    let addr = listen.parse().unwrap();
    wait_accepting(addr);
    assert_eq!(get(addr).0, 502);
    let line = p.wait_for_stdout_line("the request's log line", |l| l.contains("\"status\":502"));
    assert!(line.contains("certificate"), "{line}");
    assert_eq!(backend.answered(), 0);
}

#[cfg(feature = "tls")]
#[test]
fn backend_insecure_skips_the_check() {
    let ca = TestCa::new();
    let backend = TlsBackend::start(&ca.issue("server", &["localhost"]), None);
    let url = https("localhost", &backend);
    let lb = start_balancer_on(&[], &["--backend", &url, "--backend-insecure"]);
    assert_eq!(get(lb.addr), (200, "secure".into()));
}

#[cfg(feature = "tls")]
#[test]
fn a_backend_that_requires_a_client_certificate_gets_one() {
    let ca = TestCa::new();
    let backend = TlsBackend::start(&ca.issue("server", &["localhost"]), Some(&ca));
    let client = ca.issue("client", &["roundhouse"]);
    let (cert, key) = (client.cert_path.display(), client.key_path.display());
    let (cert, key) = (cert.to_string(), key.to_string());
    let url = https("localhost", &backend);
    let with = start_balancer_on(
        &[],
        &[
            "--backend",
            &url,
            "--backend-ca",
            &ca.ca_path(),
            "--backend-cert",
            &cert,
            "--backend-key",
            &key,
        ],
    );
    assert_eq!(get(with.addr), (200, "secure".into()));
    let without = start_balancer_on(&[], &["--backend", &url, "--backend-ca", &ca.ca_path()]);
    assert_eq!(get(without.addr).0, 502);
    assert_eq!(backend.answered(), 1);
}

#[cfg(feature = "tls")]
#[test]
fn an_ip_backend_is_checked_against_the_ip_san() {
    let ca = TestCa::new();
    let with_ip = TlsBackend::start(&ca.issue("ip", &["localhost", "127.0.0.1"]), None);
    let name_only = TlsBackend::start(&ca.issue("name", &["localhost"]), None);
    for (backend, status) in [(&with_ip, 200), (&name_only, 502)] {
        let url = https("127.0.0.1", backend);
        let lb = start_balancer_on(&[], &["--backend", &url, "--backend-ca", &ca.ca_path()]);
        assert_eq!(get(lb.addr).0, status, "{url}");
    }
}

#[cfg(feature = "tls")]
#[test]
fn a_key_that_is_not_the_certificates_is_a_startup_error() {
    let ca = TestCa::new();
    let (one, other) = (ca.issue("one", &["a"]), ca.issue("other", &["b"]));
    let (code, _, err) = run_cli(&[
        "--check",
        "--backend",
        "https://localhost:9",
        "--backend-cert",
        &one.cert_path.display().to_string(),
        "--backend-key",
        &other.key_path.display().to_string(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--backend-key"), "{err}");
}

#[cfg(feature = "tls")]
#[test]
fn a_failed_handshake_lets_the_next_backend_take_the_request() {
    // Not TLS: answers anything with a line of text and closes.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in plain.incoming().flatten() {
            use std::io::Write;
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let ca = TestCa::new();
    let backend = TlsBackend::start(&ca.issue("server", &["localhost"]), None);
    let broken = format!("https://localhost:{plain_port}");
    let good = https("localhost", &backend);
    let lb = start_balancer_on(
        &[],
        &[
            "--backend",
            &broken,
            "--backend",
            &good,
            "--backend-ca",
            &ca.ca_path(),
        ],
    );
    for _ in 0..4 {
        assert_eq!(get(lb.addr), (200, "secure".into()));
    }
}

#[cfg(feature = "tls")]
#[test]
fn backend_insecure_warns_at_start() {
    let (code, _, err) = run_cli(&[
        "--check",
        "--backend",
        "https://localhost:9",
        "--backend-insecure",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: --backend-insecure"), "{err}");
}

#[cfg(not(feature = "tls"))]
#[test]
fn without_the_tls_feature_an_https_backend_is_a_startup_error() {
    let (code, _, err) = run_cli(&["--check", "--backend", "https://localhost:9"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--backend: https needs the tls feature"),
        "{err}"
    );
}

#[cfg(feature = "tls")]
#[test]
fn health_checks_use_the_same_tls_settings() {
    let ca = TestCa::new();
    let backend = TlsBackend::start(&ca.issue("server", &["localhost"]), None);
    let url = https("localhost", &backend);
    let _lb = start_balancer_on(
        &[],
        &[
            "--backend",
            &url,
            "--backend-ca",
            &ca.ca_path(),
            "--health-path",
            "/hz",
            "--health-interval",
            "100ms",
        ],
    );
    // No client request: what the backend answers are probes, over checked TLS.
    wait_until("a health check over TLS", || backend.answered() >= 2);
}
