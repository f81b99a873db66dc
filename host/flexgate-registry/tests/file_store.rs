//! FileStore behaviour: every operation, its conflicts, persistence across reopen and cleanup of
//! what a crash leaves behind.

use std::time::Duration;

use bytes::Bytes;
use flexgate_registry::{
    FileStore, Guards, NewVersion, RegistryError, RolloutSpec, Sticky, Store, sha256_hex,
};

fn new_version(name: &str, version: &str) -> NewVersion {
    NewVersion {
        name: name.into(),
        version: version.into(),
        wit_world: "flexgate:plugin/plugin@0.1.0".into(),
        uploaded_by: "alice".into(),
        description: format!("{name} {version}"),
    }
}

fn spec(stable: Option<&str>, canary: Option<&str>, percent: u8) -> RolloutSpec {
    RolloutSpec {
        stable: stable.map(Into::into),
        canary: canary.map(Into::into),
        canary_percent: percent,
        sticky: Sticky::Header("x-user".into()),
        guards: Guards {
            max_error_rate: Some(0.05),
            window: Duration::from_secs(30),
            ..Guards::default()
        },
        revision: None,
    }
}

#[tokio::test]
async fn versions_rollouts_and_audit_round_trip() -> Result<(), RegistryError> {
    let dir = tempfile::tempdir()?;
    let store = FileStore::open(dir.path()).await?;
    let mut rx = store.subscribe();

    let a = Bytes::from_static(b"\0asm\x0d\0\x01\0one");
    let put = store
        .put_version(new_version("headers", "1.0.0"), a.clone())
        .await?;
    assert!(put.created);
    assert_eq!(put.meta.sha256, sha256_hex(&a));
    assert!(rx.has_changed().unwrap_or(false));
    rx.borrow_and_update();

    // Same bytes: no-op. Different bytes: conflict.
    let again = store
        .put_version(new_version("headers", "1.0.0"), a.clone())
        .await?;
    assert!(!again.created);
    assert_eq!(again.meta, put.meta);
    let err = store
        .put_version(
            new_version("headers", "1.0.0"),
            Bytes::from_static(b"other"),
        )
        .await;
    assert!(matches!(err, Err(RegistryError::Conflict(_))), "{err:?}");
    assert!(matches!(
        store
            .put_version(new_version("Bad Name", "1.0.0"), a.clone())
            .await,
        Err(RegistryError::Invalid(_))
    ));
    assert!(matches!(
        store
            .put_version(new_version("headers", "v1"), a.clone())
            .await,
        Err(RegistryError::Invalid(_))
    ));

    let b = Bytes::from_static(b"\0asm\x0d\0\x01\0two");
    store
        .put_version(new_version("headers", "1.1.0"), b.clone())
        .await?;
    // Same bytes under another version share the blob.
    store
        .put_version(new_version("headers", "1.2.0-rc.1"), b.clone())
        .await?;
    let versions: Vec<String> = store
        .get_plugin("headers")?
        .into_iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, ["1.2.0-rc.1", "1.1.0", "1.0.0"]);
    assert_eq!(store.list_plugins()[0].latest, "1.2.0-rc.1");
    assert_eq!(store.get_blob("headers", "1.1.0").await?, b);

    // Rollouts: create, optimistic revision, canary rules.
    let r1 = store
        .put_rollout("api", "headers", spec(Some("1.0.0"), None, 0))
        .await?;
    assert_eq!(r1.revision, 1);
    let mut stale = spec(Some("1.0.0"), Some("1.1.0"), 20);
    stale.revision = Some(0);
    assert!(matches!(
        store.put_rollout("api", "headers", stale).await,
        Err(RegistryError::Conflict(_))
    ));
    let mut fresh = spec(Some("1.0.0"), Some("1.1.0"), 20);
    fresh.revision = Some(1);
    let r2 = store.put_rollout("api", "headers", fresh).await?;
    assert_eq!((r2.revision, r2.canary_percent), (2, 20));
    for bad in [
        spec(Some("1.0.0"), None, 5),
        spec(None, Some("1.1.0"), 5),
        spec(Some("1.0.0"), Some("9.9.9"), 5),
        spec(Some("1.0.0"), Some("1.1.0"), 101),
    ] {
        assert!(matches!(
            store.put_rollout("api", "headers", bad).await,
            Err(RegistryError::Invalid(_))
        ));
    }

    // A version in use cannot be deleted.
    assert!(matches!(
        store.delete_version("headers", "1.1.0").await,
        Err(RegistryError::Conflict(_))
    ));

    let rolled = store
        .rollback("api", "headers", "too many errors", "bob")
        .await?;
    assert_eq!((rolled.canary.as_deref(), rolled.canary_percent), (None, 0));
    let record = rolled.last_rollback.clone().expect("rollback recorded");
    assert_eq!(
        (record.by.as_str(), record.canary.as_deref()),
        ("bob", Some("1.1.0"))
    );
    assert!(matches!(
        store.promote("api", "headers").await,
        Err(RegistryError::Conflict(_))
    ));
    store
        .put_rollout("api", "headers", spec(Some("1.0.0"), Some("1.1.0"), 50))
        .await?;
    let promoted = store.promote("api", "headers").await?;
    assert_eq!(
        (promoted.stable.as_deref(), promoted.canary.as_deref()),
        (Some("1.1.0"), None)
    );
    assert_eq!(promoted.revision, 5);

    // 1.0.0 is free now; deleting it removes its blob. 1.2.0-rc.1 shares 1.1.0's blob.
    store.delete_version("headers", "1.0.0").await?;
    store.delete_version("headers", "1.2.0-rc.1").await?;
    assert_eq!(store.get_blob("headers", "1.1.0").await?, b);
    assert!(matches!(
        store.get_version("headers", "1.0.0"),
        Err(RegistryError::NotFound(_))
    ));
    assert!(
        !dir.path()
            .join("plugins/headers")
            .join(format!("{}.wasm", sha256_hex(&a)))
            .exists()
    );

    for i in 0..5 {
        store
            .append_audit(flexgate_registry::AuditEntry {
                at: flexgate_registry::now_rfc3339(),
                who: "alice".into(),
                role: "admin".into(),
                action: format!("action.{i}"),
                target: "t".into(),
                result: "ok".into(),
            })
            .await?;
    }
    let page = store.list_audit(1, 2).await?;
    assert_eq!(page.total, 5);
    let actions: Vec<&str> = page.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["action.3", "action.2"]);

    // Reopen: everything is there.
    let state = store.state();
    drop(store);
    let reopened = FileStore::open(dir.path()).await?;
    assert_eq!(*reopened.state(), *state);
    assert_eq!(reopened.list_audit(0, 100).await?.total, 5);
    Ok(())
}

#[tokio::test]
async fn open_cleans_what_a_crash_left() -> Result<(), RegistryError> {
    let dir = tempfile::tempdir()?;
    {
        let store = FileStore::open(dir.path()).await?;
        store
            .put_version(new_version("cors", "0.1.0"), Bytes::from_static(b"kept"))
            .await?;
        store
            .append_audit(flexgate_registry::AuditEntry {
                at: "2026-01-01T00:00:00Z".into(),
                who: "a".into(),
                role: "admin".into(),
                action: "x".into(),
                target: "y".into(),
                result: "ok".into(),
            })
            .await?;
    }
    let plugin_dir = dir.path().join("plugins/cors");
    std::fs::write(plugin_dir.join(".tmp-1-abc"), b"half a blob")?;
    std::fs::write(dir.path().join(".tmp-2-def"), b"half a rollouts file")?;
    // A blob whose metadata never got written (killed between the two renames).
    std::fs::write(
        plugin_dir.join(format!("{}.wasm", sha256_hex(b"orphan"))),
        b"orphan",
    )?;
    // A torn audit line.
    let audit = dir.path().join("audit.jsonl");
    let mut text = std::fs::read(&audit)?;
    text.extend_from_slice(b"{\"at\":\"2026");
    std::fs::write(&audit, text)?;

    let store = FileStore::open(dir.path()).await?;
    let names: Vec<String> = std::fs::read_dir(&plugin_dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!dir.path().join(".tmp-2-def").exists());
    assert_eq!(
        store.get_blob("cors", "0.1.0").await?,
        Bytes::from_static(b"kept")
    );
    assert!(std::fs::read(&audit)?.ends_with(b"\n"));
    assert_eq!(store.list_audit(0, 10).await?.total, 1);
    Ok(())
}

#[tokio::test]
async fn read_state_reads_without_changing_anything() -> Result<(), RegistryError> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("not-yet");
    let state = FileStore::read_state(&missing).await?;
    assert!(state.plugins.is_empty() && state.rollouts.is_empty());
    assert!(!missing.exists(), "read_state must not create the folder");

    let data = dir.path().join("data");
    let store = FileStore::open(&data).await?;
    store
        .put_version(
            new_version("headers", "1.0.0"),
            Bytes::from_static(b"\0asm\x0d\0\x01\0one"),
        )
        .await?;
    store
        .put_rollout("api", "headers", spec(Some("1.0.0"), None, 0))
        .await?;
    // Leftovers of a crash: a temp file and a blob nobody refers to.
    let plugin_dir = data.join("plugins/headers");
    std::fs::write(data.join(".tmp-1-abc"), b"partial")?;
    std::fs::write(
        plugin_dir.join(format!("{}.wasm", "0".repeat(64))),
        b"orphan",
    )?;

    let state = FileStore::read_state(&data).await?;
    assert_eq!(state, *store.state());
    assert!(
        data.join(".tmp-1-abc").exists(),
        "read_state must not clean up"
    );
    assert!(plugin_dir.join(format!("{}.wasm", "0".repeat(64))).exists());
    // Only rollouts, no plugins folder yet: still readable.
    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare)?;
    std::fs::copy(data.join("rollouts.json"), bare.join("rollouts.json"))?;
    let state = FileStore::read_state(&bare).await?;
    assert_eq!(state.rollouts.len(), 1);
    assert!(!bare.join("plugins").exists());
    Ok(())
}
