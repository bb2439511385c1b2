//! TLS for `serve --tls-cert FILE --tls-key FILE` (SPEC.md section 10): rustls with the `ring`
//! provider, through tokio-rustls.
//!
//! [`server_config`] loads and checks the PEM files when the server binds, so that a missing
//! file, a file without a certificate or key, or a key that does not match the certificate
//! stops `serve` before it listens. [`TlsListener`] is an [`axum::serve::Listener`]: handshakes
//! run in tasks of their own (a slow client does not hold up the others) with a time limit, and
//! axum serves the finished streams as it serves plain TCP ones, graceful shutdown included.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error};

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes in progress at once; further connections wait to be accepted.
pub const HANDSHAKES_MAX: usize = 256;

/// The PEM files of `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the TLS files cannot be served. Messages name files and what is wrong, never key bytes.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a valid PEM certificate file: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey { path: PathBuf },
    #[error("{path} is not a valid PEM private key file")]
    BadPrivateKey { path: PathBuf },
    #[error("the private key {key} does not belong to the certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the TLS certificate {cert} and key {key} cannot be served: {reason}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads and checks the certificate chain and key of `files` (HTTP/1.1 over TLS 1.2 or 1.3).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = read(&files.cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::BadCertificate {
            path: files.cert.clone(),
            reason: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key_pem = read(&files.key)?;
    // The PEM parser's messages may quote lines of the file: not repeated for a key.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: files.key.clone(),
        },
        _ => TlsError::BadPrivateKey {
            path: files.key.clone(),
        },
    })?;
    let config_error = |reason: String| TlsError::Config {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| config_error(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            },
            other => config_error(other.to_string()),
        })?;
    // axum serves HTTP/1.1 only (no http2 feature).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Aborts the accept task when the listener is dropped (axum drops it on shutdown).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A TCP listener whose connections are served once their TLS handshake has finished.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accepting: AbortOnDrop,
}

impl TlsListener {
    /// Starts accepting on `tcp` (in the current tokio runtime).
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), sender));
        Ok(TlsListener {
            ready,
            local,
            _accepting: AbortOnDrop(accepting),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop ends only when it is aborted, with the listener.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    loop {
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                accept_failed(error).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // Held until axum takes the stream: backpressure on further handshakes.
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(error)) => {
                    debug!(message = "TLS handshake failed.", peer = %peer, error = %error)
                }
                Err(_) => debug!(message = "TLS handshake timed out.", peer = %peer),
            }
            drop(permit);
        });
    }
}

/// As axum's TCP listener does: errors of one connection are skipped, others (such as too many
/// open files) are logged and retried after a pause.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    error!(message = "Accepting a connection failed.", error = %error);
    tokio::time::sleep(Duration::from_secs(1)).await;
}
