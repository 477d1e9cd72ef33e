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
