//! The TLS connector: rustls with the ring provider (with the `tls` feature), or none.
//!
//! Without the feature every connection is plaintext, and a URL that requires TLS
//! (`sslmode=require`) fails to connect. With it, TLS follows the URL's `sslmode` (tokio-postgres'
//! default, `prefer`, uses TLS when the server offers it), verifying the server against the
//! CA of [`TlsFiles`](elect_core::TlsFiles) or else the platform's roots.

use elect_core::Result;

use crate::config::PostgresConfig;

/// The connector for `config`'s connections.
#[cfg(not(feature = "tls"))]
pub(crate) fn connector(_config: &PostgresConfig) -> Result<tokio_postgres::NoTls> {
    Ok(tokio_postgres::NoTls)
}

/// The connector for `config`'s connections: rustls (ring), trusting `config.tls`'s CA or the
/// platform's roots, presenting its client certificate if it has one.
#[cfg(feature = "tls")]
pub(crate) fn connector(
    config: &PostgresConfig,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use std::sync::Arc;

    use elect_core::Error;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let unreadable = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::config(format!("{what} {}: {e}", path.display()))
    };
    let certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| unreadable("TLS certificate file", path, &e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| unreadable("TLS certificate file", path, &e))?;
        if certs.is_empty() {
            return Err(Error::config(format!(
                "TLS certificate file {} holds no PEM certificate",
                path.display()
            )));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    let files = config.tls.clone().unwrap_or_default();
    match &files.ca_file {
        Some(ca) => {
            for cert in certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| unreadable("TLS CA file", ca, &e))?;
            }
        }
        None => {
            // Unreadable system certificates are skipped, as every client does.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let tls = match (&files.client_cert_file, &files.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| unreadable("TLS client key file", key, &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::config(format!("TLS client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}
