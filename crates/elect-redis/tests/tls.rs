//! TLS on a real Redis (Debian's redis-server is built with TLS), with certificates made at
//! test time: a custom CA and a client certificate the server requires, the feed over TLS, and
//! the ways it goes wrong (another CA, no client certificate, a missing file, a plaintext URL).
#![cfg(feature = "tls")]

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{self, Settings};
use elect_redis::{Error, LeaseStore, RedisConfig, RedisStore, TlsFiles};
use elect_tests::local::LocalServer;
use elect_tests::tls::{assert_refusals, TestCerts};
use elect_tests::{unique_name, Kind};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_custom_ca_and_a_client_certificate() {
    let dir = std::env::temp_dir().join(unique_name("elect-tls-redis"));
    let certs = TestCerts::generate(&dir).unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "--tls-port".to_string(),
        port.to_string(),
        "--tls-cert-file".into(),
        certs.server_cert.display().to_string(),
        "--tls-key-file".into(),
        certs.server_key.display().to_string(),
        "--tls-ca-cert-file".into(),
        certs.ca.display().to_string(),
        "--tls-auth-clients".into(),
        "yes".into(),
    ]
    .into();
    let _server = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        LocalServer::start_with_args(Kind::Redis, &args)
    })
    .await
    .unwrap()
    .expect("a Redis with a TLS port");
    let url = format!("rediss://127.0.0.1:{port}");
    let good = TlsFiles::new()
        .ca_file(&certs.ca)
        .client_identity(&certs.client_cert, &certs.client_key);
    let config = |tls: TlsFiles| {
        RedisConfig::new(&url)
            .tls(tls)
            .key_prefix(unique_name("tls"))
            .connect_timeout(Duration::from_secs(2))
    };
    let store = || async {
        Arc::new(RedisStore::connect(config(good.clone())).await.unwrap()) as Arc<dyn LeaseStore>
    };
    // The feed's own connection is TLS too.
    conformance::checks_for_another_path(store, Settings::real_server()).await;

    assert_refusals(&certs, (&certs.client_cert, &certs.client_key), |tls| {
        let config = config(tls);
        async move { RedisStore::connect(config).await.map(drop) }
    })
    .await;
    // With TLS the server refuses a client without a certificate during the handshake, which
    // rustls names: the message says what to set.
    let anonymous = RedisStore::connect(config(TlsFiles::new().ca_file(&certs.ca)))
        .await
        .unwrap_err();
    assert!(
        matches!(&anonymous, Error::NotSetUp { message, .. } if message.contains("client_identity")),
        "{anonymous}"
    );
    let plaintext = RedisStore::connect(
        RedisConfig::new(format!("redis://127.0.0.1:{port}")).tls(good.clone()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&plaintext, Error::InvalidConfig { message } if message.contains("rediss://")),
        "{plaintext}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
