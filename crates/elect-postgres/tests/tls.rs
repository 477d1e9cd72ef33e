//! TLS on a real PostgreSQL with certificates made at test time: a server that accepts only TLS
//! connections with a client certificate its CA signed (`hostssl … clientcert=verify-ca`,
//! `hostnossl … reject`), the store and its listening connection over TLS, and the ways it
//! goes wrong (another CA, no client certificate, a missing file).
#![cfg(feature = "tls")]

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{self, Settings};
use elect_postgres::{LeaseStore, PostgresConfig, PostgresStore, TlsFiles};
use elect_tests::local::{give_to_postgres_user, LocalServer};
use elect_tests::tls::{assert_refusals, TestCerts};
use elect_tests::{unique_name, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_requires_tls_and_a_client_certificate() {
    let dir = std::env::temp_dir().join(unique_name("elect-tls-postgres"));
    let certs = TestCerts::generate(&dir).unwrap();
    let hba = dir.join("pg_hba.conf");
    std::fs::write(
        &hba,
        "hostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n\
         hostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    for (file, mode) in [
        (&dir, 0o700),
        (&certs.server_key, 0o600),
        (&certs.server_cert, 0o644),
        (&certs.ca, 0o644),
        (&hba, 0o644),
    ] {
        give_to_postgres_user(file, mode).unwrap();
    }
    let args: Vec<String> = [
        "ssl=on".to_owned(),
        format!("ssl_cert_file={}", certs.server_cert.display()),
        format!("ssl_key_file={}", certs.server_key.display()),
        format!("ssl_ca_file={}", certs.ca.display()),
        format!("hba_file={}", hba.display()),
    ]
    .into_iter()
    .flat_map(|setting| ["-c".to_owned(), setting])
    .collect();
    let server = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        LocalServer::start_with_args(Kind::Postgres, &args)
    })
    .await
    .unwrap()
    .expect("a PostgreSQL with TLS");
    let url = format!("{}?sslmode=require", server.url());
    let good = TlsFiles::new()
        .ca_file(&certs.ca)
        .client_identity(&certs.client_cert, &certs.client_key);
    let config = |tls: TlsFiles| {
        PostgresConfig::new(&url)
            .tls(tls)
            .timeout(Duration::from_secs(3))
    };
    let first = PostgresStore::connect(config(good.clone())).await.unwrap();
    first.migrate().await.unwrap();
    // Plaintext is refused by the server: what follows went over TLS.
    let plain = PostgresStore::connect(
        PostgresConfig::new(format!("{}?sslmode=disable", server.url()))
            .tls(good.clone())
            .timeout(Duration::from_secs(3)),
    )
    .await
    .map(drop);
    assert!(
        matches!(plain, Err(elect_postgres::Error::NotSetUp { .. })),
        "{plain:?}"
    );
    let store = || async {
        Arc::new(PostgresStore::connect(config(good.clone())).await.unwrap()) as Arc<dyn LeaseStore>
    };
    // The listening connection is TLS too.
    conformance::checks_for_another_path(store, Settings::real_server()).await;

    assert_refusals(&certs, (&certs.client_cert, &certs.client_key), |tls| {
        let config = config(tls);
        async move { PostgresStore::connect(config).await.map(drop) }
    })
    .await;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
