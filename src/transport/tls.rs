//! TLS for listeners: rustls with the `ring` provider, TLS 1.2 and 1.3 only.
//!
//! A [`ReloadableTls`] holds the current `ServerConfig` of one listener section
//! (`mqtt_tls`, `stomp_tls`, …). Each new connection takes a snapshot of it, so a
//! reload (SIGHUP via [`on_sighup`], or [`ReloadableTls::watch`] noticing changed
//! files) affects only connections accepted afterwards. A reload that fails
//! keeps the old certificate and logs why.
//!
//! Mutual TLS: `client_auth = "optional" | "required"` verifies client
//! certificates against `client_ca_file`; with `cert_username = "cn" | "san"`
//! the verified certificate's common name or first DNS / e-mail / URI SAN is
//! handed to the adapter as the username.
//!
//! The handshake runs in the connection's task ([`ReloadableTls::handshake`]),
//! bounded by a timeout, so a slow or bad client never holds up the accept loop;
//! a failed handshake is logged with the peer and the reason and affects nothing else.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{CertUsername, ClientAuth, TlsListenerSettings};

/// How often [`ReloadableTls::watch`] looks at the files' modification times.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A certificate, key or CA file that cannot be used; the message names the
/// config key and the path.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("`{key}` is not set")]
    NotSet { key: String },
    #[error("cannot read `{key}` file {path}: {source}")]
    Read {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{key}` file {path} is not valid PEM: {reason}")]
    Pem {
        key: String,
        path: PathBuf,
        reason: String,
    },
    #[error("`{key}` file {path} contains no {what}")]
    Empty {
        key: String,
        path: PathBuf,
        what: &'static str,
    },
    #[error("`{key}` file {path} cannot be used: {reason}")]
    Invalid {
        key: String,
        path: PathBuf,
        reason: String,
    },
}

/// Why a client's TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

/// A client connection after a successful handshake.
#[derive(Debug)]
pub struct TlsConnection<IO> {
    pub stream: TlsStream<IO>,
    /// The username taken from the verified client certificate (`cert_username`),
    /// for [`crate::auth::Login::cert_username`].
    pub cert_username: Option<String>,
}

/// The crypto provider every TLS config uses: rustls with `ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls server config of the listener section `section` (for
/// error messages: `mqtt_tls` → key `mqtt_tls.cert_file`).
pub fn server_config(
    section: &str,
    settings: &TlsListenerSettings,
) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_key = format!("{section}.cert_file");
    let key_key = format!("{section}.key_file");
    let cert_path = required_path(&cert_key, settings.cert_file.as_deref())?;
    let key_path = required_path(&key_key, settings.key_file.as_deref())?;
    let certs = load_certs(&cert_key, cert_path)?;
    let key = load_key(&key_key, key_path)?;
    warn_if_not_valid_now(section, cert_path, &certs);

    let provider = provider();
    let verifier = match settings.client_auth {
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let ca_key = format!("{section}.client_ca_file");
            let ca_path = required_path(&ca_key, settings.client_ca_file.as_deref())?;
            let invalid = |reason: String| TlsError::Invalid {
                key: ca_key.clone(),
                path: ca_path.to_path_buf(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for cert in load_certs(&ca_key, ca_path)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("bad CA certificate: {e}")))?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let builder = if settings.client_auth == ClientAuth::Optional {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder.build().map_err(|e| invalid(e.to_string()))?
        }
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid {
            key: cert_key.clone(),
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid {
            key: format!("{cert_key}` / `{key_key}"),
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(config))
}

fn required_path<'a>(key: &str, path: Option<&'a Path>) -> Result<&'a Path, TlsError> {
    match path {
        Some(path) if !path.as_os_str().is_empty() => Ok(path),
        _ => Err(TlsError::NotSet { key: key.into() }),
    }
}

fn pem_error(key: &str, path: &Path, error: rustls_pki_types::pem::Error) -> TlsError {
    match error {
        rustls_pki_types::pem::Error::Io(source) => TlsError::Read {
            key: key.into(),
            path: path.to_path_buf(),
            source,
        },
        other => TlsError::Pem {
            key: key.into(),
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// Every certificate in a PEM file, in order.
pub fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(key, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            key: key.into(),
            path: path.to_path_buf(),
            what: "certificate (expected -----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            key: key.into(),
            path: path.to_path_buf(),
            what: "private key (expected -----BEGIN PRIVATE KEY----- or an RSA / EC key)",
        },
        other => pem_error(key, path, other),
    })
}

fn warn_if_not_valid_now(section: &str, path: &Path, certs: &[CertificateDer<'_>]) {
    let Some(first) = certs.first() else { return };
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(first) {
        if !cert.validity().is_valid() {
            tracing::warn!(
                listener = section,
                path = %path.display(),
                not_before = %cert.validity().not_before,
                not_after = %cert.validity().not_after,
                "the server certificate is not valid now: clients will refuse it"
            );
        }
    }
}

/// The username a verified client certificate names: the subject's first common
/// name (`cn`), or its first DNS, e-mail or URI subject alternative name (`san`).
pub fn username_from_cert(cert: &CertificateDer<'_>, how: CertUsername) -> Option<String> {
    if how == CertUsername::None {
        return None;
    }
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let name = match how {
        CertUsername::None => None,
        CertUsername::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        CertUsername::San => {
            let san = cert.subject_alternative_name().ok().flatten()?;
            san.value.general_names.iter().find_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(s)
                | x509_parser::extensions::GeneralName::RFC822Name(s)
                | x509_parser::extensions::GeneralName::URI(s) => Some((*s).to_owned()),
                _ => None,
            })
        }
    };
    name.filter(|n| !n.is_empty())
}

/// Modification time, size and inode of a file; None when it cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

/// The TLS config of one listener, swappable while the broker runs.
#[derive(Debug)]
pub struct ReloadableTls {
    /// Config section name (`mqtt_tls`), for logs and errors.
    section: String,
    /// The paths and options the config is (re)built from.
    settings: TlsListenerSettings,
    /// Snapshotted by each new connection; swapped by a successful reload.
    current: ArcSwap<ServerConfig>,
    /// The files as last loaded (or last tried), so the watch reloads only on change
    /// and does not retry a broken file every interval.
    stamps: Mutex<Vec<Option<FileStamp>>>,
}

impl ReloadableTls {
    /// Loads the certificate, key and client CA now; an error is a config error.
    pub fn new(
        section: impl Into<String>,
        settings: &TlsListenerSettings,
    ) -> Result<Arc<ReloadableTls>, TlsError> {
        let section = section.into();
        let stamps = file_stamps(settings);
        let config = server_config(&section, settings)?;
        Ok(Arc::new(ReloadableTls {
            section,
            settings: settings.clone(),
            current: ArcSwap::new(config),
            stamps: Mutex::new(stamps),
        }))
    }

    pub fn section(&self) -> &str {
        &self.section
    }

    /// The config new connections get now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// An acceptor over the current config (for one connection).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// Runs the server side of the handshake within `timeout`; a failure is logged
    /// (listener, peer, reason) and the stream dropped.
    pub async fn handshake<IO>(
        &self,
        stream: IO,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<TlsConnection<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let accepted = tokio::time::timeout(timeout, self.acceptor().accept(stream)).await;
        let stream = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::warn!(
                    listener = %self.section,
                    peer = %peer,
                    error = %error,
                    hint = hint(&error),
                    "TLS handshake failed"
                );
                return Err(HandshakeError::Failed(error));
            }
            Err(_) => {
                tracing::info!(listener = %self.section, peer = %peer, "TLS handshake timed out");
                return Err(HandshakeError::Timeout);
            }
        };
        let cert_username = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| username_from_cert(cert, self.settings.cert_username));
        if self.settings.cert_username != CertUsername::None {
            tracing::debug!(
                listener = %self.section,
                peer = %peer,
                cert_username = cert_username.as_deref().unwrap_or(""),
                "TLS client identified"
            );
        }
        Ok(TlsConnection {
            stream,
            cert_username,
        })
    }

    /// Re-reads the files. On success new connections get the new config; on
    /// failure the old one stays, the reason is logged and returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let mut stamps = self.stamps.lock();
        // Stamp before reading: a file changing while we read is seen next time.
        let seen = file_stamps(&self.settings);
        let result = server_config(&self.section, &self.settings);
        *stamps = seen;
        match result {
            Ok(config) => {
                self.current.store(config);
                tracing::info!(listener = %self.section, "TLS certificate reloaded");
                Ok(())
            }
            Err(error) => {
                tracing::error!(
                    listener = %self.section,
                    error = %error,
                    "TLS reload failed; keeping the previous certificate"
                );
                Err(error)
            }
        }
    }

    /// Reloads if a file changed since the last load or attempt; None if none did.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        if *self.stamps.lock() == file_stamps(&self.settings) {
            return None;
        }
        Some(self.reload())
    }

    /// Polls the files every `interval` (use [`WATCH_INTERVAL`]) until `shutdown`,
    /// reloading when one changes. Spawn it next to the listener.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let this = Arc::clone(&self);
            // File reads and parsing are blocking work.
            let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
        }
    }
}

fn file_stamps(settings: &TlsListenerSettings) -> Vec<Option<FileStamp>> {
    [
        &settings.cert_file,
        &settings.key_file,
        &settings.client_ca_file,
    ]
    .into_iter()
    .map(|path| path.as_deref().and_then(stamp))
    .collect()
}

/// A likely cause for common handshake failures, for the log.
fn hint(error: &std::io::Error) -> &'static str {
    let Some(rustls_error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "";
    };
    match rustls_error {
        rustls::Error::InvalidMessage(_) => "not a TLS client (plain TCP to a TLS port?)",
        rustls::Error::NoCertificatesPresented => {
            "the client sent no certificate but one is required"
        }
        rustls::Error::InvalidCertificate(_) => {
            "the client certificate did not verify against client_ca_file"
        }
        rustls::Error::AlertReceived(_) => {
            "the client refused the server certificate (untrusted CA, wrong host or expired?)"
        }
        rustls::Error::PeerIncompatible(_) => {
            "no TLS version or cipher suite in common (TLS 1.2 or 1.3 needed)"
        }
        _ => "",
    }
}

/// Calls `reload` (on the blocking pool) at every SIGHUP until `shutdown`.
/// The handler is installed before this returns, so a SIGHUP after it is never
/// fatal. Typical use reloads every [`ReloadableTls`] and the password file.
#[cfg(unix)]
pub fn on_sighup<F>(
    shutdown: CancellationToken,
    reload: F,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static>
where
    F: Fn() + Send + Sync + 'static,
{
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    let reload = Arc::new(reload);
    Ok(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading certificates and credentials");
            let reload = Arc::clone(&reload);
            let _ = tokio::task::spawn_blocking(move || reload()).await;
        }
    })
}

/// Reloads each config, logging failures (see [`ReloadableTls::reload`]); true when all succeeded.
pub fn reload_all(configs: &[Arc<ReloadableTls>]) -> bool {
    // Every config is reloaded, whatever the others' outcome.
    let failures = configs.iter().filter(|tls| tls.reload().is_err()).count();
    failures == 0
}

#[cfg(test)]
mod tests;
