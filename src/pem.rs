//! PEM files as the TLS flags name them: a certificate chain (`--tls-cert`,
//! `--backend-cert`, `--backend-ca`) or a private key (`--tls-key`, `--backend-key`),
//! read with `rustls-pki-types`. The one reader for both sides: the listener's
//! certificates (`tls_certs.rs`) and the backends' (`upstream/tls.rs`). Errors name the
//! flag and the file.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

/// The error for `flag` about the file at `path`.
fn bad(flag: &str, path: &Path, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(flag, format!("'{}': {why}", path.display()))
}

/// Every certificate in the PEM file at `path`, in order; none is an error.
pub fn certificates(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(flag, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(flag, path, e))?;
    if certs.is_empty() {
        return Err(bad(flag, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| bad(flag, path, e))
}
