//! TLS on the MongoDB-wire server (secantusdb, not a real mongod, which cannot be had here)
//! with certificates made at test time: a custom CA and a client certificate the server
//! requires, the change stream over TLS, and the ways it goes wrong (another CA, no client
//! certificate, a missing file, certificate and key in two files).

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{self, Settings};
use elect_mongo::{Error, LeaseStore, MongoConfig, MongoStore, TlsFiles};
use elect_tests::local::LocalServer;
use elect_tests::tls::{assert_refusals, TestCerts};
use elect_tests::{unique_name, Kind};

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
    // The feed's own connection is TLS too.
    conformance::checks_for_another_path(store, Settings::real_server()).await;

    assert_refusals(&certs, (combined, combined), |tls| {
        let config = config(tls);
        async move { MongoStore::connect(config).await.map(drop) }
    })
    .await;
    let split = MongoStore::connect(config(
        TlsFiles::new()
            .ca_file(&certs.ca)
            .client_identity(&certs.client_cert, &certs.client_key),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&split, Error::InvalidConfig { message } if message.contains("one PEM file")),
        "{split}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
