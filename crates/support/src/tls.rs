//! TLS settings, rustls with the `ring` provider (pure Rust plus ring's own
//! C/asm, no aws-lc): for the MQTT and HTTPS clients, trusting a given CA
//! bundle or the system's roots, optionally presenting a client certificate
//! (AWS IoT and similar brokers authenticate devices that way); and for the
//! feed's HTTPS server, from a certificate chain and key in PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ServerConfig};

/// Why TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// rustls refused the combination (bad key, no usable roots).
    #[error("TLS settings rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// Neither a CA file nor any system root certificate was found.
    #[error("no CA certificates: set a CA file or install ca-certificates")]
    NoRoots,
}

/// A client certificate and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCert {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Builds a rustls client configuration.
pub fn client_config(
    ca_file: Option<&Path>,
    client: Option<&ClientCert>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certs(path)? {
                roots.add(cert)?;
            }
        }
        None => {
            // Unreadable system certificates are skipped, not fatal: one bad
            // file in /etc/ssl must not take the uplink down.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder.with_client_auth_cert(certs(&c.cert)?, key(&c.key)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Builds the feed's HTTPS server configuration from a PEM certificate
/// chain and its private key; HTTP/1.1 only (ALPN), as the server speaks.
pub fn server_config(cert: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        // Checks that the key is the certificate's own.
        .with_single_cert(certs(cert)?, key(key_path)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// The certificates of a PEM file (at least one).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            why: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.to_owned(),
            why: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            why: format!("not a PEM private key: {e}"),
        })?
        .ok_or_else(|| TlsError::File {
            path: path.to_owned(),
            why: "no private key in the file".into(),
        })
}
