//! TLS and authentication on a real etcd, with certificates made at test time: a member that
//! accepts only TLS clients with a certificate its CA signed (`--client-cert-auth`) — the
//! store, its watch and the refusals every backend gives — and then the same member with
//! authentication enabled: a user whose role may read and write the store's prefix passes the
//! checks again; a wrong password, or a user whose role covers another prefix, is a typed error
//! that does not print the password.
#![cfg(feature = "tls")]

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance;
use elect_etcd::etcd_client::{self, ConnectOptions, Permission};
use elect_etcd::{
    CandidateId, Claim, ElectionName, Error, EtcdConfig, EtcdStore, LeaseStore, TlsFiles,
};
use elect_tests::etcd::EtcdCluster;
use elect_tests::tls::{assert_refusals, TestCerts};
use elect_tests::unique_name;

mod common;
use common::{prefix, settings};

/// The admin client: root over TLS (with a password once authentication is on).
async fn admin(endpoints: &[String], certs: &TestCerts, root: Option<&str>) -> etcd_client::Client {
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(
            std::fs::read(&certs.ca).unwrap(),
        ))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(&certs.client_cert).unwrap(),
            std::fs::read(&certs.client_key).unwrap(),
        ));
    let mut options = ConnectOptions::new().with_tls(tls);
    if let Some(password) = root {
        options = options.with_user("root", password);
    }
    etcd_client::Client::connect(endpoints, Some(options))
        .await
        .expect("the admin client connects over TLS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_requires_tls_and_client_certificates_then_a_password() {
    let dir = std::env::temp_dir().join(unique_name("elect-tls-etcd"));
    let certs = TestCerts::generate(&dir).unwrap();
    let for_start = certs.clone();
    let cluster = tokio::task::spawn_blocking(move || EtcdCluster::start_tls(1, &for_start))
        .await
        .unwrap()
        .expect("an etcd member that requires TLS");
    let url = cluster.url();
    assert!(url.starts_with("etcds://"), "{url}");
    let good = TlsFiles::new()
        .ca_file(&certs.ca)
        .client_identity(&certs.client_cert, &certs.client_key);
    let config = |tls: TlsFiles| {
        EtcdConfig::from_url(&url)
            .expect("the TLS member's URL")
            .tls(tls)
            .timeout(Duration::from_secs(3))
    };

    // Plaintext reaches nothing: what follows went over TLS.
    let plain = EtcdStore::connect(
        EtcdConfig::from_url(&url.replacen("etcds://", "etcd://", 1))
            .unwrap()
            .timeout(Duration::from_secs(3)),
    )
    .await
    .map(drop);
    assert!(plain.is_err(), "a plaintext client was answered: {plain:?}");

    // The store and its watch over TLS.
    let store = || async {
        let config = config(good.clone()).prefix(prefix());
        Arc::new(EtcdStore::connect(config).await.expect("connect over TLS")) as Arc<dyn LeaseStore>
    };
    conformance::checks_for_another_path(store, settings()).await;

    assert_refusals(&certs, (&certs.client_cert, &certs.client_key), |tls| {
        let config = config(tls);
        async move { EtcdStore::connect(config).await.map(drop) }
    })
    .await;

    // Authentication on: root, and an `elect` user whose role may use one prefix.
    let endpoints: Vec<String> = url
        .trim_start_matches("etcds://")
        .split(',')
        .map(|h| format!("https://{h}"))
        .collect();
    let (root_password, password) = ("r00t-s3cret", "el3ct-s3cret");
    let allowed = prefix();
    let mut admin_client = admin(&endpoints, &certs, None).await;
    admin_client.role_add("root").await.expect("role root");
    admin_client
        .user_add("root", root_password, None)
        .await
        .expect("user root");
    admin_client
        .user_grant_role("root", "root")
        .await
        .expect("root's role");
    admin_client
        .role_add("elector")
        .await
        .expect("role elector");
    admin_client
        .role_grant_permission(
            "elector",
            Permission::read_write(allowed.clone()).with_prefix(),
        )
        .await
        .expect("elector may use its prefix");
    admin_client
        .user_add("elect", password, None)
        .await
        .expect("user elect");
    admin_client
        .user_grant_role("elect", "elector")
        .await
        .expect("elect's role");
    admin_client.auth_enable().await.expect("auth enable");
    // Root still gets in with its password (the cluster is usable, not locked out).
    admin(&endpoints, &certs, Some(root_password))
        .await
        .status()
        .await
        .expect("root's status with its password");

    let with_user = |user: &str, secret: &str, prefix: &str| {
        config(good.clone())
            .user(user, secret)
            .prefix(prefix.to_owned())
    };
    // The user, on its prefix: grants, the watch, values, observers.
    let on_allowed = with_user("elect", password, &allowed);
    let store = || {
        let config = on_allowed.clone();
        async move {
            Arc::new(EtcdStore::connect(config).await.expect("connect as elect"))
                as Arc<dyn LeaseStore>
        }
    };
    conformance::checks_for_another_path(store, settings()).await;

    // A wrong password: refused at connect, typed, not retryable, the password not shown.
    let wrong = EtcdStore::connect(with_user("elect", "not-the-password", &allowed))
        .await
        .expect_err("a wrong password connects");
    let shown = format!("{wrong} {wrong:?}");
    assert!(matches!(wrong, Error::NotSetUp { .. }), "{wrong}");
    assert!(!wrong.is_retryable(), "{wrong}");
    assert!(!shown.contains("not-the-password"), "{shown}");
    eprintln!("a wrong password: {wrong}");

    // The right password on a prefix the role does not cover: the first request is refused,
    // typed, and nobody is granted anything.
    let outside = format!("{}/", unique_name("elsewhere"));
    let refused = match EtcdStore::connect(with_user("elect", password, &outside)).await {
        Err(e) => e,
        Ok(store) => {
            let claim = Claim::new(
                ElectionName::new("outside").unwrap(),
                CandidateId::new("a").unwrap(),
                settings().ttl,
            );
            let answer = store.try_acquire(&claim).await;
            store.close().await;
            answer.expect_err("a grant outside the user's prefix")
        }
    };
    assert!(matches!(refused, Error::NotSetUp { .. }), "{refused}");
    assert!(!format!("{refused:?}").contains(password));
    eprintln!("a prefix the role does not cover: {refused}");

    drop(cluster);
    let _ = std::fs::remove_dir_all(dir);
}
