//! TLS on a real MariaDB with certificates made at test time: a user that must present a client
//! certificate (`REQUIRE X509`), a custom CA, the feed over TLS, and the ways it goes wrong
//! (another CA, no client certificate, a missing file).
#![cfg(feature = "tls")]

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{self, Settings};
use elect_mysql::mysql_async::prelude::Queryable;
use elect_mysql::{LeaseStore, MysqlConfig, MysqlStore, TlsFiles};
use elect_tests::local::LocalServer;
use elect_tests::tls::{assert_refusals, TestCerts};
use elect_tests::{unique_name, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_that_requires_a_client_certificate() {
    let dir = std::env::temp_dir().join(unique_name("elect-tls-mysql"));
    let certs = TestCerts::generate(&dir).unwrap();
    let args: Vec<String> = vec![
        format!("--ssl-cert={}", certs.server_cert.display()),
        format!("--ssl-key={}", certs.server_key.display()),
        format!("--ssl-ca={}", certs.ca.display()),
    ];
    let server = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        LocalServer::start_with_args(Kind::Mysql, &args)
    })
    .await
    .unwrap()
    .expect("a MariaDB with TLS");
    let root = server.url();
    let mut admin = elect_mysql::mysql_async::Conn::from_url(format!("{root}mysql"))
        .await
        .unwrap();
    for statement in [
        "CREATE DATABASE app",
        "CREATE USER 'tls'@'%' REQUIRE X509",
        "GRANT ALL ON app.* TO 'tls'@'%'",
    ] {
        admin.query_drop(statement).await.unwrap();
    }
    let url = root.replace("root@", "tls@") + "app";
    let good = TlsFiles::new()
        .ca_file(&certs.ca)
        .client_identity(&certs.client_cert, &certs.client_key);
    let config = |tls: TlsFiles| {
        MysqlConfig::new(&url)
            .tls(tls)
            .timeout(Duration::from_secs(3))
    };
    let first = MysqlStore::connect(config(good.clone())).await.unwrap();
    first.migrate().await.unwrap();
    let cipher: Option<(String, String)> = {
        let mut conn = elect_mysql::mysql_async::Conn::new(
            elect_mysql::mysql_async::OptsBuilder::from_opts(
                elect_mysql::mysql_async::Opts::from_url(&url).unwrap(),
            )
            .ssl_opts(Some(
                elect_mysql::mysql_async::SslOpts::default()
                    .with_root_certs(vec![certs.ca.clone().into()])
                    .with_client_identity(Some(elect_mysql::mysql_async::ClientIdentity::new(
                        certs.client_cert.clone().into(),
                        certs.client_key.clone().into(),
                    ))),
            )),
        )
        .await
        .unwrap();
        conn.query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .await
            .unwrap()
    };
    let cipher = cipher.map(|(_, c)| c).unwrap_or_default();
    assert!(!cipher.is_empty(), "the session is encrypted");
    eprintln!("cipher: {cipher}");
    let store = || async {
        Arc::new(MysqlStore::connect(config(good.clone())).await.unwrap()) as Arc<dyn LeaseStore>
    };
    // The feed's own connection is TLS too.
    conformance::checks_for_another_path(store, Settings::real_server()).await;

    assert_refusals(&certs, (&certs.client_cert, &certs.client_key), |tls| {
        let config = config(tls);
        async move { MysqlStore::connect(config).await.map(drop) }
    })
    .await;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
