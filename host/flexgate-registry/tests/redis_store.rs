//! RedisStore against a real `redis-server` started here on a free port: two stores see each
//! other's changes within 1 s, a store that loses Redis keeps its last state, and catches up once
//! Redis is back. Skipped (with a note) when `redis-server` is missing, unless
//! `FLEXGATE_REQUIRE_REDIS` is set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flexgate_registry::{NewVersion, RedisStore, RegistryError, RegistryState, RolloutSpec, Store};
use flexgate_testkit::RedisServer;

fn version(name: &str, v: &str) -> NewVersion {
    NewVersion {
        name: name.into(),
        version: v.into(),
        wit_world: "flexgate:plugin/plugin@0.1.0".into(),
        uploaded_by: "ci".into(),
        description: String::new(),
    }
}

/// Waits until `store`'s state satisfies `pred`, at most `within`; returns the time it took.
async fn wait_for(
    store: &RedisStore,
    within: Duration,
    pred: impl Fn(&RegistryState) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    let mut rx = store.subscribe();
    loop {
        if pred(&rx.borrow_and_update()) {
            return Some(start.elapsed());
        }
        let left = within.checked_sub(start.elapsed())?;
        if tokio::time::timeout(left, rx.changed()).await.is_err() {
            return pred(&rx.borrow()).then(|| start.elapsed());
        }
    }
}

fn percent(state: &RegistryState) -> Option<u8> {
    state.rollout("api", "headers").map(|r| r.canary_percent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_state_and_survive_redis_loss() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let Some(mut server) = RedisServer::start_or_skip_persistent(
        "replicas_share_state_and_survive_redis_loss",
        dir.path(),
    ) else {
        return Ok(());
    };
    let prefix = "flexgate:test";
    let a = Arc::new(RedisStore::open(&server.url(), prefix).await?);
    let b = Arc::new(RedisStore::open(&server.url(), prefix).await?);

    // Upload and canary on A; B sees it within 1 s.
    let stable = Bytes::from_static(b"stable-bytes");
    let canary = Bytes::from_static(b"canary-bytes");
    a.put_version(version("headers", "1.0.0"), stable.clone())
        .await?;
    a.put_version(version("headers", "1.1.0"), canary.clone())
        .await?;
    assert!(
        !a.put_version(version("headers", "1.0.0"), stable.clone())
            .await?
            .created
    );
    assert!(matches!(
        b.put_version(version("headers", "1.0.0"), canary.clone())
            .await,
        Err(RegistryError::Conflict(_))
    ));
    let spec = RolloutSpec {
        stable: Some("1.0.0".into()),
        canary: Some("1.1.0".into()),
        canary_percent: 20,
        sticky: Default::default(),
        guards: Default::default(),
        revision: Some(0),
    };
    a.put_rollout("api", "headers", spec.clone()).await?;
    let took = wait_for(&b, Duration::from_secs(1), |s| percent(s) == Some(20)).await;
    assert!(took.is_some(), "B did not see A's canary within 1 s");
    assert_eq!(b.get_blob("headers", "1.1.0").await?, canary);
    // The same revision cannot be applied twice (compare-and-set across replicas).
    assert!(matches!(
        b.put_rollout("api", "headers", spec).await,
        Err(RegistryError::Conflict(_))
    ));

    // Rollback on B; A follows within 1 s.
    b.rollback("api", "headers", "manual", "bob").await?;
    let took = wait_for(&a, Duration::from_secs(1), |s| {
        s.rollout("api", "headers")
            .is_some_and(|r| r.canary.is_none() && r.last_rollback.is_some())
    })
    .await;
    assert!(took.is_some(), "A did not follow B's rollback within 1 s");

    // Audit is shared.
    a.append_audit(flexgate_registry::AuditEntry {
        at: flexgate_registry::now_rfc3339(),
        who: "a".into(),
        role: "admin".into(),
        action: "x".into(),
        target: "t".into(),
        result: "ok".into(),
    })
    .await?;
    assert_eq!(b.list_audit(0, 10).await?.total, 1);

    // A replica that starts later loads the current state.
    let c = RedisStore::open(&server.url(), prefix).await?;
    assert_eq!(*c.state(), *a.state());
    drop(c);

    // Redis goes away (its data saved, as a persistent Redis would keep it).
    let _: () = redis::cmd("SAVE")
        .query_async(
            &mut redis::Client::open(server.url())?
                .get_multiplexed_async_connection()
                .await?,
        )
        .await?;
    let before = a.state();
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*a.state(), *before, "A must keep serving its last state");
    assert_eq!(a.get_blob("headers", "1.0.0").await?, stable);
    assert!(a.get_rollout("api", "headers").is_ok());
    assert!(
        a.put_version(version("headers", "2.0.0"), Bytes::from_static(b"x"))
            .await
            .is_err()
    );

    // Redis is back: B writes, A catches up.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match b
            .put_version(version("headers", "2.0.0"), Bytes::from_static(b"v2"))
            .await
        {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for B to reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let took = wait_for(&a, Duration::from_secs(5), |s| {
        s.version("headers", "2.0.0").is_some()
    })
    .await;
    assert!(took.is_some(), "A did not catch up after redis returned");
    assert_eq!(a.state().plugins["headers"].len(), 3);
    drop(server);
    Ok(())
}
