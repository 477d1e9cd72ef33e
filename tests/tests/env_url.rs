//! With `ELECT_<KIND>_URL` set, that server is used and nothing is started for it. (Its own
//! test binary: it sets process environment.)

use elect_tests::{Kind, Origin, OwnedServer};

#[tokio::test]
async fn an_env_url_is_used_as_is() {
    let running = OwnedServer::start(Kind::Redis).await.unwrap();
    // Only this test runs in this process, so nothing reads the environment concurrently.
    std::env::set_var("ELECT_REDIS_URL", running.url());
    let server = elect_tests::redis().await;
    assert_eq!(server.origin(), Origin::Env);
    assert_eq!(server.url(), running.url());
    std::env::set_var("ELECT_REDIS_URL", "redis://127.0.0.1:1");
    let other = elect_tests::redis().await;
    assert_eq!(
        other.url(),
        "redis://127.0.0.1:1",
        "no server is started when a URL is given"
    );
}
