//! TLS for the MQTTS and WSS listeners (rustls, ring provider), from PEM files, with optional
//! client certificates (mTLS): verified against a CA bundle, with CRLs, `required` (no
//! certificate, no connection) or `optional` (a client without one authenticates otherwise).
//! The CA bundle and the CRL files are re-read when they change (checked at most every
//! [`RELOAD_CHECK`], on accept), so a revoked certificate is refused without a restart.

use parking_lot::Mutex;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// How often the CA and CRL files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Client certificates on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM bundle of the CAs that issue client certificates.
    pub ca: PathBuf,
    /// PEM CRL files.
    pub crls: Vec<PathBuf>,
    /// Whether a client must present a certificate.
    pub required: bool,
}

/// What a TLS listener is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Client certificates, if any.
    pub client: Option<ClientAuth>,
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("reading certificates {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("parsing certificates {}: {e}", path.display()))
}

impl TlsFiles {
    fn build(&self) -> anyhow::Result<TlsAcceptor> {
        let certs = read_certs(&self.cert)?;
        if certs.is_empty() {
            anyhow::bail!("{} holds no certificate", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| anyhow::anyhow!("reading private key {}: {e}", self.key.display()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS protocol versions: {e}"))?;
        let builder = match &self.client {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let mut roots = RootCertStore::empty();
                for ca in read_certs(&c.ca)? {
                    roots
                        .add(ca)
                        .map_err(|e| anyhow::anyhow!("client CA in {}: {e}", c.ca.display()))?;
                }
                if roots.is_empty() {
                    anyhow::bail!("{} holds no CA certificate", c.ca.display());
                }
                let mut crls = Vec::new();
                for path in &c.crls {
                    for crl in CertificateRevocationListDer::pem_file_iter(path)
                        .map_err(|e| anyhow::anyhow!("reading CRL {}: {e}", path.display()))?
                    {
                        crls.push(
                            crl.map_err(|e| {
                                anyhow::anyhow!("parsing CRL {}: {e}", path.display())
                            })?,
                        );
                    }
                }
                let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .with_crls(crls);
                if !c.required {
                    v = v.allow_unauthenticated();
                }
                let verifier = v
                    .build()
                    .map_err(|e| anyhow::anyhow!("client certificate verifier: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| anyhow::anyhow!("TLS certificate and key do not fit together: {e}"))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn watched(&self) -> Vec<PathBuf> {
        self.client
            .iter()
            .flat_map(|c| std::iter::once(c.ca.clone()).chain(c.crls.iter().cloned()))
            .collect()
    }
}

fn stamp(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// A TLS acceptor that follows its CA and CRL files.
pub struct TlsSource {
    files: TlsFiles,
    state: Mutex<(TlsAcceptor, Vec<Option<SystemTime>>, Instant)>,
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSource")
            .field("files", &self.files)
            .finish()
    }
}

impl TlsSource {
    /// Builds the acceptor now (errors are the operator's: bad files).
    pub fn new(files: TlsFiles) -> anyhow::Result<Arc<Self>> {
        let acceptor = files.build()?;
        let stamps = stamp(&files.watched());
        Ok(Arc::new(Self {
            files,
            state: Mutex::new((acceptor, stamps, Instant::now())),
        }))
    }

    /// Whether client certificates are asked for.
    pub fn client_auth(&self) -> bool {
        self.files.client.is_some()
    }

    /// The current acceptor, rebuilt first if the CA or a CRL changed (a rebuild that fails
    /// keeps the previous acceptor, and says why).
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut s = self.state.lock();
        if s.2.elapsed() >= RELOAD_CHECK {
            s.2 = Instant::now();
            let now = stamp(&self.files.watched());
            if now != s.1 {
                s.1 = now;
                match self.files.build() {
                    Ok(a) => {
                        info!("client CA / CRL files changed: reloaded");
                        s.0 = a;
                    }
                    Err(e) => {
                        warn!(error = %e, "client CA / CRL files changed but do not load; keeping the previous ones")
                    }
                }
            }
        }
        s.0.clone()
    }
}
