//! [`TlsFiles`]: the certificates a backend's TLS connections use, one shape for every store.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where a store's TLS connections find their certificates: the CA that signed the server's
/// certificate (default: the platform's roots) and, for servers that ask for one, this
/// client's certificate chain and private key. PEM files, read when the store connects.
///
/// Every backend takes it (`RedisConfig::tls`, `MysqlConfig::tls`, `MongoConfig::tls`), with
/// its `tls` feature where it has one.
///
/// ```
/// use elect_core::TlsFiles;
///
/// let tls = TlsFiles::new()
///     .ca_file("/etc/elect/ca.pem")
///     .client_identity("/etc/elect/client.pem", "/etc/elect/client.key");
/// assert!(tls.validate().is_ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    /// The CA certificates (PEM) to trust instead of the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// This client's certificate chain (PEM), for servers that verify clients.
    pub client_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// No files: the platform's roots, no client certificate.
    pub fn new() -> TlsFiles {
        TlsFiles::default()
    }

    /// Trusts the CA certificates in `path` (PEM) instead of the platform's roots.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents the certificate chain in `cert` with the private key in `key` (PEM; they may
    /// be one file holding both).
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert_file = Some(cert.into());
        self.client_key_file = Some(key.into());
        self
    }

    /// Checks that a client certificate comes with its key and the other way round.
    pub fn validate(&self) -> Result<()> {
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(_), None) => Err(Error::config(
                "a TLS client certificate needs its private key (TlsFiles::client_identity)",
            )),
            (None, Some(_)) => Err(Error::config(
                "a TLS client key needs its certificate (TlsFiles::client_identity)",
            )),
            _ => Ok(()),
        }
    }

    /// Checks that every file named can be read, so that a wrong path is a configuration error
    /// at connect time rather than a failed handshake later.
    pub fn check_files(&self) -> Result<()> {
        self.validate()?;
        let named = [
            ("CA file", &self.ca_file),
            ("client certificate", &self.client_cert_file),
            ("client key", &self.client_key_file),
        ];
        for (what, path) in named {
            if let Some(path) = path {
                std::fs::File::open(path)
                    .map_err(|e| Error::config(format!("TLS {what} {}: {e}", path.display())))?;
            }
        }
        Ok(())
    }
}
