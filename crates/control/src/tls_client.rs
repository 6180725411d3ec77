//! The control plane's TLS client settings (LDAP, PostgreSQL): rustls with ring, the server
//! verified against a CA file or, without one, the public web roots. There is no switch that
//! turns verification off.

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A client configuration trusting the CAs of the PEM file `ca` (or the web roots).
pub(crate) fn client_config(ca: Option<&Path>) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading the CA file {}", ca.display()))?;
            for cert in certs {
                roots
                    .add(cert.with_context(|| format!("parsing the CA file {}", ca.display()))?)
                    .with_context(|| format!("the CA file {}", ca.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
