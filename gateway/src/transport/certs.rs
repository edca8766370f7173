//! The gateway's TLS server configuration: a certificate chain and its private key read from
//! PEM files, TLS 1.2 and 1.3 on rustls' `ring` provider, and session resumption that
//! survives a certificate reload.
//!
//! Resumption: TLS 1.3 and TLS 1.2 clients get stateless session tickets (sealed with keys
//! that rotate every 6 hours, so nothing per session is stored), and TLS 1.2 clients that do
//! not take tickets resume by session id from a bounded in-memory cache. Both live in a
//! [`Resumption`] made once per gateway and put into every configuration built after a
//! SIGHUP, so a client resumes across a certificate change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// Sessions kept for TLS 1.2 resumption by session id (about 200 bytes each).
const SESSION_CACHE: usize = 4096;

/// Why a certificate chain or key cannot be used.
#[derive(Debug, Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {why}")]
    Key { path: PathBuf, why: String },
    #[error("{path}: bad PEM: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("the key does not fit the certificate or cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What resumption keeps across reloads: the ticket keys and the session-id cache.
#[derive(Clone)]
pub(crate) struct Resumption {
    ticketer: Arc<dyn ProducesTickets>,
    cache: Arc<dyn StoresServerSessions>,
}

impl std::fmt::Debug for Resumption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resumption")
    }
}

impl Resumption {
    pub(crate) fn new() -> Result<Resumption, CertError> {
        Ok(Resumption {
            ticketer: rustls::crypto::ring::Ticketer::new()?,
            cache: ServerSessionMemoryCache::new(SESSION_CACHE),
        })
    }
}

/// Reads a PEM certificate chain (leaf first) and a PEM private key.
pub(crate) fn load(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: cert.to_path_buf(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| CertError::Key {
        path: key.to_path_buf(),
        why: e.to_string(),
    })?;
    Ok((chain, key_der))
}

/// A server configuration for `cert` and `key`: TLS 1.2 and 1.3, no client certificates,
/// no ALPN (the bytes inside are v1 frames or an HTTP/1.1 upgrade), tickets and the session
/// cache from `resumption`.
pub(crate) fn server_config(
    cert: &Path,
    key: &Path,
    resumption: &Resumption,
) -> Result<Arc<ServerConfig>, CertError> {
    let (chain, key) = load(cert, key)?;
    // The ring provider (the workspace's one crypto backend): X25519 and the NIST curves, no
    // post-quantum key exchange, which is why rustls marks it deprecated.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.ticketer = resumption.ticketer.clone();
    config.session_storage = resumption.cache.clone();
    Ok(Arc::new(config))
}

/// Checks that `cert` and `key` make a configuration (for `check` and config validation).
pub(crate) fn check(cert: &Path, key: &Path) -> Result<(), CertError> {
    server_config(cert, key, &Resumption::new()?).map(drop)
}
