//! Test certificates, generated at test time: a CA, a server certificate for `localhost` and
//! `127.0.0.1` and a client certificate signed by it, and a second CA that signed nothing the
//! servers present (the wrong-CA case).

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM files in a directory of their own.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The directory holding them.
    pub dir: PathBuf,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// The server's certificate (for `localhost` and `127.0.0.1`) and key.
    pub server_cert: PathBuf,
    /// See `server_cert`.
    pub server_key: PathBuf,
    /// The client's certificate and key.
    pub client_cert: PathBuf,
    /// See `client_cert`.
    pub client_key: PathBuf,
    /// The client's certificate and key in one file (MongoDB's driver reads one file).
    pub client_combined: PathBuf,
    /// A CA that signed neither certificate.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), rcgen::Error> {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl TestCerts {
    /// Generates fresh certificates into `dir` (created).
    pub fn generate(dir: &Path) -> Result<TestCerts, String> {
        let err = |e: rcgen::Error| format!("generating test certificates: {e}");
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ca = ca("elect test CA").map_err(err)?;
        let other = ca_other().map_err(err)?;
        let (server_cert, server_key) = leaf(
            &ca,
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
        .map_err(err)?;
        let (client_cert, client_key) = leaf(
            &ca,
            "elect-client",
            &["elect-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .map_err(err)?;
        let certs = TestCerts {
            dir: dir.to_owned(),
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            client_combined: dir.join("client-combined.pem"),
            other_ca: dir.join("other-ca.pem"),
        };
        let files = [
            (&certs.ca, ca.pem()),
            (&certs.server_cert, server_cert),
            (&certs.server_key, server_key),
            (&certs.client_combined, format!("{client_cert}{client_key}")),
            (&certs.client_cert, client_cert),
            (&certs.client_key, client_key),
            (&certs.other_ca, other.pem()),
        ];
        for (path, text) in files {
            fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(certs)
    }
}

fn ca_other() -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    ca("some other CA")
}

/// How a connection attempt with some [`TlsFiles`](elect_core::TlsFiles) ended: `Ok` when the
/// store connected.
pub type Attempt = Result<(), elect_core::Error>;

/// The refusals every backend must give, in bounded time, on a server that requires client
/// certificates signed by `certs.ca`: another CA is `NotSetUp` naming the CA file (not
/// retryable); no client certificate is `NotSetUp` (not retryable); a CA file that does not
/// exist is `InvalidConfig` naming it. `identity` is the backend's client identity (certificate
/// and key files; MongoDB's driver wants one file for both); `connect` tries a store.
pub async fn assert_refusals<F, Fut>(certs: &TestCerts, identity: (&Path, &Path), connect: F)
where
    F: Fn(elect_core::TlsFiles) -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    use elect_core::{Error, TlsFiles};
    let refused = |tls: TlsFiles, what: &'static str| {
        let attempt = connect(tls);
        async move {
            let error = tokio::time::timeout(std::time::Duration::from_secs(15), attempt)
                .await
                .unwrap_or_else(|_| panic!("{what}: connecting hung"))
                .expect_err(what);
            eprintln!("{what}: {error} / {error:?}");
            error
        }
    };
    let other_ca = refused(
        TlsFiles::new()
            .ca_file(&certs.other_ca)
            .client_identity(identity.0, identity.1),
        "a CA that did not sign the server's certificate",
    )
    .await;
    assert!(
        matches!(&other_ca, Error::NotSetUp { message, .. } if message.contains("CA file")),
        "a typed error that says what is wrong: {other_ca}"
    );
    let anonymous = refused(
        TlsFiles::new().ca_file(&certs.ca),
        "no client certificate for a server that requires one",
    )
    .await;
    assert!(matches!(&anonymous, Error::NotSetUp { .. }), "{anonymous}");
    assert!(!other_ca.is_retryable() && !anonymous.is_retryable());
    let missing = refused(
        TlsFiles::new().ca_file(certs.dir.join("nowhere.pem")),
        "a CA file that does not exist",
    )
    .await;
    assert!(
        matches!(&missing, Error::InvalidConfig { message } if message.contains("nowhere.pem")),
        "{missing}"
    );
}
