//! Crash safety of the file store: a child process uploads versions and changes rollouts in a
//! loop and is killed with SIGKILL at arbitrary points; after each kill the store reopens with
//! every operation the child reported as committed, and every blob matches its sha256.
//!
//! The child is this test binary itself, re-run with `FLEXGATE_CRASH_CHILD=DIR` (no extra binary).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use bytes::Bytes;
use flexgate_registry::{FileStore, NewVersion, RolloutSpec, Store, sha256_hex};

const CHILD_ENV: &str = "FLEXGATE_CRASH_CHILD";

fn blob(i: u64) -> Vec<u8> {
    // Sizes from a few bytes to ~300 KiB so some writes take a while.
    let len = 8 + (i.wrapping_mul(7919) % 300_000) as usize;
    let mut bytes = vec![0u8; len];
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    bytes
}

/// The child: loops forever, printing `COMMIT ...` after each operation returns.
#[tokio::test]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only meaningful when spawned by `kill_during_writes`.
    };
    let store = FileStore::open(&dir).await.expect("open");
    let start = store
        .state()
        .plugins
        .values()
        .map(|v| v.len() as u64)
        .sum::<u64>();
    let mut out = std::io::stdout();
    for i in start.. {
        let name = format!("p{}", i % 3);
        let version = format!("1.0.{i}");
        let bytes = blob(i);
        store
            .put_version(
                NewVersion {
                    name: name.clone(),
                    version: version.clone(),
                    wit_world: "flexgate:plugin/plugin@0.1.0".into(),
                    uploaded_by: "crash".into(),
                    description: String::new(),
                },
                Bytes::from(bytes.clone()),
            )
            .await
            .expect("put");
        writeln!(out, "COMMIT V {name} {version} {}", sha256_hex(&bytes)).expect("stdout");
        let r = store
            .put_rollout(
                "route",
                &name,
                RolloutSpec {
                    stable: Some(version.clone()),
                    canary: None,
                    canary_percent: 0,
                    sticky: Default::default(),
                    guards: Default::default(),
                    revision: None,
                },
            )
            .await
            .expect("rollout");
        writeln!(out, "COMMIT R {name} {} {version}", r.revision).expect("stdout");
        out.flush().expect("flush");
    }
}

#[tokio::test]
async fn kill_during_writes() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var(CHILD_ENV).is_ok() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut versions: HashMap<(String, String), String> = HashMap::new();
    let mut rollouts: HashMap<String, u64> = HashMap::new();
    for (round, kill_after) in [(0, 17usize), (1, 40), (2, 63), (3, 8)] {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut commits = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["COMMIT", "V", name, version, sha] => {
                    versions.insert((name.to_string(), version.to_string()), sha.to_string());
                }
                ["COMMIT", "R", name, revision, _] => {
                    rollouts.insert(name.to_string(), revision.parse()?);
                }
                _ => continue,
            }
            commits += 1;
            if commits == kill_after {
                child.kill()?; // SIGKILL, mid-way through the next operation
                break;
            }
        }
        child.wait()?;
        assert_eq!(commits, kill_after, "round {round}: child stopped early");

        let store = FileStore::open(dir.path()).await?;
        for ((name, version), sha) in &versions {
            let meta = store.get_version(name, version)?;
            assert_eq!(&meta.sha256, sha, "round {round}: {name}@{version}");
            let bytes = store.get_blob(name, version).await?;
            assert_eq!(&sha256_hex(&bytes), sha);
        }
        for (plugin, revision) in &rollouts {
            let r = store.get_rollout("route", plugin)?;
            assert!(
                r.revision >= *revision,
                "round {round}: {plugin} lost revision {revision}"
            );
            let stable = r.stable.ok_or("no stable")?;
            store.get_blob(plugin, &stable).await?;
        }
        // Nothing half-written is visible: every stored version reads back intact.
        for (name, vs) in &store.state().plugins {
            for meta in vs.values() {
                assert_eq!(
                    sha256_hex(&store.get_blob(name, &meta.version).await?),
                    meta.sha256
                );
            }
        }
    }
    assert!(versions.len() >= 60);
    Ok(())
}
