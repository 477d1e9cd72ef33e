//! TLS options for etcd-client (rustls with ring, through tonic), with the `tls` feature.

#[cfg(feature = "tls")]
use elect_core::{Error, Result, TlsFiles};

/// The client's TLS settings from `files`: the CA that signed the members' certificates (the
/// system's roots without one) and a client certificate for clusters that ask for one.
#[cfg(feature = "tls")]
pub(crate) fn options(files: &TlsFiles) -> Result<etcd_client::TlsOptions> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    files.check_files()?;
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::InvalidConfig {
            message: format!("etcd TLS: cannot read {}: {e}", path.display()),
        })
    };
    let mut options = TlsOptions::new();
    if let Some(ca) = &files.ca_file {
        options = options.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&files.client_cert_file, &files.client_key_file) {
        options = options.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(options)
}

/// Why a TLS connection to `config`'s first member failed, when the driver could not say.
///
/// With TLS 1.3 a server that refuses the client's certificate (or its absence) says so in an
/// alert *after* the handshake; tonic then reports only "transport error" or "operation was
/// canceled", which reads as a network fault and would be retried for ever. After a failed
/// connect, this makes one handshake of its own with the same CA and client certificate and
/// reads the server's first answer: a certificate the server refused (or wants) becomes
/// [`Error::NotSetUp`]. `None` when that handshake says nothing (no CA file to check the
/// server with, the member unreachable, or no alert within a second).
#[cfg(feature = "tls")]
pub(crate) async fn diagnose(config: &crate::EtcdConfig) -> Option<Error> {
    use std::sync::Arc;
    use std::time::Duration;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::AsyncReadExt;

    let files = config.tls.as_ref()?;
    let ca = files.ca_file.as_ref()?;
    let authority = config
        .endpoints
        .first()?
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let refusal = |e: &dyn std::fmt::Debug| {
        elect_core::backend::tls_refusal(crate::error::STORE, &format!("{e:?}"))
    };
    let probe = async {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).ok()? {
            roots.add(cert.ok()?).ok()?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots);
        let mut tls = match (&files.client_cert_file, &files.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .ok()?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .ok()?;
                builder
                    .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).ok()?)
                    .ok()?
            }
            _ => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from(host).ok()?;
        let tcp = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let mut stream = match tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
        {
            Ok(stream) => stream,
            Err(e) => return refusal(&e),
        };
        let mut first = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut first)).await {
            Ok(Err(e)) => refusal(&e),
            _ => None,
        }
    };
    tokio::time::timeout(config.timeout.min(Duration::from_secs(3)), probe)
        .await
        .ok()
        .flatten()
}
