//! TLS on the MongoDB-wire server (secantusdb, not a real mongod, which cannot be had here)
//! with certificates made at test time: a custom CA and a client certificate the server
//! requires, the change stream over TLS, and the ways it goes wrong (another CA, no client
//! certificate, a missing file, certificate and key in two files).

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{self, Settings};
use elect_mongo::{Error, LeaseStore, MongoConfig, MongoStore, TlsFiles};
use elect_tests::local::LocalServer;
use elect_tests::tls::TestCerts;
use elect_tests::{unique_name, Kind};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_requires_a_client_certificate() {
    let dir = std::env::temp_dir().join(unique_name("elect-tls-mongo"));
    let certs = TestCerts::generate(&dir).unwrap();
    let args: Vec<String> = vec![
        "--tls-cert-file".into(),
        certs.server_cert.display().to_string(),
        "--tls-key-file".into(),
        certs.server_key.display().to_string(),
        "--tls-ca-file".into(),
        certs.ca.display().to_string(),
        "--tls-require-client-cert".into(),
    ];
    let server = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        LocalServer::start_with_args(Kind::Mongo, &args)
    })
    .await
    .unwrap()
    .expect("a MongoDB-wire server with TLS");
    let url = server.url();
    let combined = &certs.client_combined;
    let good = TlsFiles::new()
        .ca_file(&certs.ca)
        .client_identity(combined, combined);
    let config = |tls: TlsFiles| {
        MongoConfig::new(&url)
            .database(unique_name("tls"))
            .tls(tls)
            .timeout(Duration::from_secs(2))
    };
    let store = || async {
        Arc::new(MongoStore::connect(config(good.clone())).await.unwrap()) as Arc<dyn LeaseStore>
    };
    conformance::first_acquire_is_granted(store().await, Settings::real_server()).await;
    conformance::release_wakes_subscribers(store().await, Settings::real_server()).await;

    let refused = |tls: TlsFiles, what: &'static str| {
        let config = config(tls);
        async move {
            let error = timeout(Duration::from_secs(15), MongoStore::connect(config))
                .await
                .unwrap_or_else(|_| panic!("{what}: connecting hung"))
                .expect_err(what);
            eprintln!("{what}: {error}");
            error
        }
    };
    let other_ca = refused(
        TlsFiles::new()
            .ca_file(&certs.other_ca)
            .client_identity(combined, combined),
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
    assert!(
        matches!(&anonymous, Error::NotSetUp { message, .. } if message.contains("client_identity")),
        "{anonymous}"
    );
    assert!(!other_ca.is_retryable() && !anonymous.is_retryable());
    let missing = refused(
        TlsFiles::new().ca_file(dir.join("nowhere.pem")),
        "a CA file that does not exist",
    )
    .await;
    assert!(
        matches!(&missing, Error::InvalidConfig { message } if message.contains("nowhere.pem")),
        "{missing}"
    );
    let split = refused(
        TlsFiles::new()
            .ca_file(&certs.ca)
            .client_identity(&certs.client_cert, &certs.client_key),
        "certificate and key in two files",
    )
    .await;
    assert!(
        matches!(&split, Error::InvalidConfig { message } if message.contains("one PEM file")),
        "{split}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
