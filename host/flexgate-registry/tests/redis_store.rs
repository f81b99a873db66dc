//! RedisStore against a real `redis-server` started here on a free port: two stores see each
//! other's changes within 1 s, a store that loses Redis keeps its last state, and catches up once
//! Redis is back. Skipped (with a note) when `redis-server` is missing, unless
//! `FLEXGATE_REQUIRE_REDIS` is set.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flexgate_registry::{NewVersion, RedisStore, RegistryError, RegistryState, RolloutSpec, Store};

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// A server on a free port. The port is released before `redis-server` binds it, so another
    /// process can take it in between: then it is started again on another port (at most 5 times).
    fn start_fresh(dir: &Path) -> std::io::Result<RedisServer> {
        let mut attempt = 1;
        loop {
            match RedisServer::start(dir, free_port()?) {
                Err(e) if attempt < 5 => {
                    eprintln!("redis-server did not start ({e}): again on another port");
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    fn start(dir: &Path, port: u16) -> std::io::Result<RedisServer> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dbfilename", "dump.rdb", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        // PONG, not just a connection: the port could be another process's listener.
        while !ping(port) {
            if let Some(status) = server.child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "redis-server on port {port} exited with {status}"
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("redis-server did not start"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_millis(500))).ok();
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("FLEXGATE_REQUIRE_REDIS").is_none(),
            "redis-server is required (FLEXGATE_REQUIRE_REDIS is set) but not installed"
        );
        eprintln!("note: redis-server not installed; skipping the RedisStore test");
    }
    found
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

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
    if !redis_available() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let server = RedisServer::start_fresh(dir.path())?;
    let port = server.port;
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
    drop(server);
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
    let server = RedisServer::start(dir.path(), port)?;
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
