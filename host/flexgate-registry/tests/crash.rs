//! Crash safety of the file store: a child process uploads versions and changes rollouts (pin,
//! canary, promote, rollback) in a loop and is killed with SIGKILL at random moments, several times.
//! After each kill the store reopens with every operation the child acknowledged (printed a full
//! line for, after the call returned) and every blob matches its sha256. An operation that was in
//! flight may or may not be there, but nothing half-written is ever visible.
//!
//! The child is this test binary itself, re-run with `FLEXGATE_CRASH_CHILD=DIR` (no extra binary).
//! `FLEXGATE_CRASH_SEED` replays a run (the seed is printed on failure).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flexgate_registry::{FileStore, NewVersion, Rollout, RolloutSpec, Store, sha256_hex};

const CHILD_ENV: &str = "FLEXGATE_CRASH_CHILD";
/// Uploads needed across all rounds.
const UPLOADS: usize = 100;
const MIN_ROUNDS: usize = 5;

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

fn spec(stable: Option<String>, canary: Option<String>, percent: u8) -> RolloutSpec {
    RolloutSpec {
        stable,
        canary,
        canary_percent: percent,
        sticky: Default::default(),
        guards: Default::default(),
        revision: None,
    }
}

/// `COMMIT R plugin revision stable canary percent`
fn rollout_line(r: &Rollout) -> String {
    format!(
        "COMMIT R {} {} {} {} {}",
        r.plugin,
        r.revision,
        r.stable.as_deref().unwrap_or("-"),
        r.canary.as_deref().unwrap_or("-"),
        r.canary_percent
    )
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
                    description: format!("upload {i}"),
                },
                Bytes::from(bytes.clone()),
            )
            .await
            .expect("put");
        writeln!(out, "COMMIT V {name} {version} {}", sha256_hex(&bytes)).expect("stdout");
        out.flush().expect("flush");
        // One rollout change per upload, cycling through every kind of change.
        let current = store.state().rollout("route", &name).cloned();
        let stable = current.as_ref().and_then(|r| r.stable.clone());
        let has_canary = current.as_ref().is_some_and(|r| r.canary.is_some());
        let r = match (stable, has_canary, i % 4) {
            (None, _, _) => store
                .put_rollout("route", &name, spec(Some(version.clone()), None, 0))
                .await
                .expect("pin"),
            (Some(_), true, 0) => store.promote("route", &name).await.expect("promote"),
            (Some(_), true, 1) => store
                .rollback("route", &name, "crash test", "crash")
                .await
                .expect("rollback"),
            (Some(stable), _, _) => store
                .put_rollout(
                    "route",
                    &name,
                    spec(Some(stable), Some(version.clone()), (i % 100) as u8),
                )
                .await
                .expect("canary"),
        };
        writeln!(out, "{}", rollout_line(&r)).expect("stdout");
        out.flush().expect("flush");
    }
}

#[tokio::test]
async fn kill_during_writes() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var(CHILD_ENV).is_ok() {
        return Ok(());
    }
    let seed = std::env::var("FLEXGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed: {seed} (FLEXGATE_CRASH_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir()?;
    // Acknowledged state: versions with their sha256, rollouts with their last line.
    let mut versions: HashMap<(String, String), String> = HashMap::new();
    let mut rollouts: HashMap<String, (u64, String)> = HashMap::new();
    let mut round = 0;
    while versions.len() < UPLOADS || round < MIN_ROUNDS {
        assert!(round < 60, "seed {seed}: too many rounds");
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // Lines are read on a thread; the kill comes at a random moment after the first commit.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            while stdout.read_line(&mut line).unwrap_or(0) > 0 {
                // Only a whole line is an acknowledgment; a torn one means the kill came first.
                if line.ends_with('\n') && tx.send(line.trim_end().to_owned()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(60))?;
        let delay = Duration::from_millis(rng.u64(1..250));
        let deadline = Instant::now() + delay;
        let mut lines = vec![first];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        child.kill()?; // SIGKILL, somewhere inside an operation (or between two)
        child.wait()?;
        let _ = reader.join();
        lines.extend(rx.try_iter());

        let mut acked = 0;
        for line in &lines {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["COMMIT", "V", name, version, sha] => {
                    versions.insert((name.to_string(), version.to_string()), sha.to_string());
                }
                ["COMMIT", "R", name, revision, ..] => {
                    rollouts.insert(name.to_string(), (revision.parse()?, line.clone()));
                }
                _ => continue,
            }
            acked += 1;
        }
        eprintln!(
            "round {round}: killed after {delay:?}, {acked} acknowledged, {} versions so far",
            versions.len()
        );

        let store = FileStore::open(dir.path()).await?;
        for ((name, version), sha) in &versions {
            let meta = store
                .get_version(name, version)
                .map_err(|e| format!("seed {seed} round {round}: lost {name}@{version}: {e}"))?;
            assert_eq!(
                &meta.sha256, sha,
                "seed {seed} round {round}: {name}@{version}"
            );
            let bytes = store.get_blob(name, version).await?;
            assert_eq!(&sha256_hex(&bytes), sha);
        }
        for (plugin, (revision, line)) in &rollouts {
            let r = store.get_rollout("route", plugin)?;
            // The acknowledged change is there; at most the one in flight came after it.
            assert!(
                r.revision == *revision || r.revision == revision + 1,
                "seed {seed} round {round}: {plugin} at revision {} after acknowledging {line}",
                r.revision
            );
            if r.revision == *revision {
                assert_eq!(&rollout_line(&r), line, "seed {seed} round {round}");
            }
            for v in r.referenced_versions() {
                store.get_blob(plugin, v).await?;
            }
        }
        // Nothing half-written is visible: every stored version reads back intact.
        for (name, vs) in &store.state().plugins {
            for meta in vs.values() {
                assert_eq!(
                    sha256_hex(&store.get_blob(name, &meta.version).await?),
                    meta.sha256,
                    "seed {seed} round {round}"
                );
            }
        }
        // What is durable now is the baseline for the next round (an operation that was in flight
        // at the kill and made it is as committed as any other from here on).
        for r in store.list_rollouts() {
            rollouts.insert(r.plugin.clone(), (r.revision, rollout_line(&r)));
        }
        for (name, vs) in &store.state().plugins {
            for meta in vs.values() {
                versions.insert((name.clone(), meta.version.clone()), meta.sha256.clone());
            }
        }
        drop(store);
        round += 1;
    }
    Ok(())
}
