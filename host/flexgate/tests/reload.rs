//! Hot reload: SIGHUP, file watching, refusing bad files, and zero dropped requests under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");
const SUCCESS: &str = r#"flexgate_config_reloads_total{result="success"}"#;
const FAILURE: &str = r#"flexgate_config_reloads_total{result="failure"}"#;

/// One `respond` route on `/version` answering `version`.
fn version_config(version: &str) -> String {
    format!(
        "routes:\n  - name: version\n    match:\n      path: /version\n    respond:\n      body: \"{version}\"\n"
    )
}

async fn served_version(gw: &Gateway) -> String {
    match HttpClient::http1_fresh().get(&gw.url("/version")).await {
        Ok(r) if r.status == 200 => r.text(),
        Ok(r) => format!("status {}", r.status),
        Err(e) => format!("error {e}"),
    }
}

async fn wait_version(gw: &Gateway, want: &str, timeout: Duration) -> bool {
    eventually(timeout, || async { served_version(gw).await == want }).await
}

#[tokio::test]
async fn sighup_switches_routes() {
    let gw = Gateway::start(BIN, &version_config("v1")).await;
    assert_eq!(served_version(&gw).await, "v1");
    gw.rewrite_config(&format!(
        "{}  - name: added\n    match:\n      path: /added\n    respond:\n      body: new-route\n",
        version_config("v2")
    ));
    gw.signal(Signal::SIGHUP);
    assert!(
        wait_version(&gw, "v2", Duration::from_secs(5)).await,
        "still serving {}",
        served_version(&gw).await
    );
    let r = HttpClient::http1()
        .get(&gw.url("/added"))
        .await
        .expect("request");
    assert_eq!((r.status.as_u16(), r.text()), (200, "new-route".to_owned()));
    assert!(gw.metric(SUCCESS).await.unwrap_or(0.0) >= 1.0);
}

#[tokio::test]
async fn an_in_place_edit_is_picked_up_without_a_signal() {
    let gw = Gateway::start(BIN, &version_config("v1")).await;
    let started = Instant::now();
    gw.edit_config_in_place(&version_config("v2"));
    let ok = wait_version(&gw, "v2", Duration::from_secs(4)).await;
    assert!(
        ok,
        "edit not picked up after 4s; serving {}",
        served_version(&gw).await
    );
    eprintln!("edit picked up after {:?}", started.elapsed());
}

/// Editors and Kubernetes ConfigMaps replace the file (new inode) rather than rewriting it.
#[tokio::test]
async fn an_atomic_replace_is_picked_up_without_a_signal() {
    let gw = Gateway::start(BIN, &version_config("v1")).await;
    gw.rewrite_config(&version_config("v2"));
    assert!(
        wait_version(&gw, "v2", Duration::from_secs(4)).await,
        "replace not picked up after 4s"
    );
    // and the watch survives the replace
    gw.rewrite_config(&version_config("v3"));
    assert!(
        wait_version(&gw, "v3", Duration::from_secs(4)).await,
        "second replace not picked up after 4s"
    );
}

#[tokio::test]
async fn a_bad_file_is_refused_and_the_old_config_keeps_serving() {
    let gw = Gateway::start(BIN, &version_config("v1")).await;
    assert_eq!(
        gw.metric(FAILURE).await,
        Some(0.0),
        "failure series exported at 0 from the start"
    );
    gw.rewrite_config(&version_config("v2"));
    gw.signal(Signal::SIGHUP);
    assert!(wait_version(&gw, "v2", Duration::from_secs(5)).await);
    let success = gw
        .wait_metric(SUCCESS, Duration::from_secs(3), |v| v >= 1.0)
        .await;
    assert!(
        success.unwrap_or(0.0) >= 1.0,
        "success reloads: {success:?}"
    );

    // a YAML syntax error
    gw.rewrite_config_raw("version: 1\nroutes: [\n  - {name: broken\n");
    gw.signal(Signal::SIGHUP);
    let failures = gw
        .wait_metric(FAILURE, Duration::from_secs(5), |v| v >= 1.0)
        .await;
    assert!(
        failures.unwrap_or(0.0) >= 1.0,
        "failure reloads: {failures:?}"
    );
    for _ in 0..5 {
        assert_eq!(
            served_version(&gw).await,
            "v2",
            "the old config must keep serving"
        );
    }
    // a well-formed file with a semantic mistake is refused too
    let before = gw.metric(FAILURE).await.unwrap_or(0.0);
    gw.rewrite_config("routes:\n  - name: r\n    upstream: nowhere\n");
    gw.signal(Signal::SIGHUP);
    let failures = gw
        .wait_metric(FAILURE, Duration::from_secs(5), |v| v > before)
        .await;
    assert!(
        failures.unwrap_or(0.0) > before,
        "unknown upstream was not refused: {failures:?}"
    );
    assert_eq!(served_version(&gw).await, "v2");
    assert!(
        gw.try_wait().is_none(),
        "the gateway exited on a bad reload"
    );
    // and a good file afterwards is accepted again
    let success_before = gw.metric(SUCCESS).await.unwrap_or(0.0);
    gw.rewrite_config(&version_config("v3"));
    gw.signal(Signal::SIGHUP);
    assert!(wait_version(&gw, "v3", Duration::from_secs(5)).await);
    assert!(
        gw.wait_metric(SUCCESS, Duration::from_secs(3), |v| v > success_before)
            .await
            > Some(success_before)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_no_requests() {
    let echo = EchoUpstream::start().await;
    let config = |v: usize| {
        format!(
            "{}  - name: version\n    match:\n      path: /version\n    respond:\n      body: \"v{v}\"\n",
            yaml::proxy_all(&[echo.addr()], "", "    match:\n      path_prefix: /load\n")
        )
    };
    let gw = Gateway::start(BIN, &config(0)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (stop, ok, bad, url) = (
                stop.clone(),
                ok.clone(),
                bad.clone(),
                gw.url(&format!("/load/{w}")),
            );
            tokio::spawn(async move {
                let c = HttpClient::http1();
                while !stop.load(Ordering::Relaxed) {
                    match c.get(&url).await {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => bad.lock().expect("lock").push(format!(
                            "status {}: {}",
                            r.status,
                            r.text()
                        )),
                        Err(e) => bad.lock().expect("lock").push(format!("error: {e}")),
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let success0 = gw.metric(SUCCESS).await.unwrap_or(0.0);
    for v in 1..=5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        gw.rewrite_config(&config(v));
        gw.signal(Signal::SIGHUP);
        assert!(
            wait_version(&gw, &format!("v{v}"), Duration::from_secs(5)).await,
            "reload {v} not applied"
        );
    }
    let remaining = Duration::from_secs(3).saturating_sub(started.elapsed());
    tokio::time::sleep(remaining + Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let bad = bad.lock().expect("lock").clone();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!(
        "{ok} requests OK during 5 reloads in {:?}",
        started.elapsed()
    );
    assert!(
        bad.is_empty(),
        "{} of {} requests failed during reloads, first: {:?}",
        bad.len(),
        ok + bad.len() as u64,
        &bad[..bad.len().min(5)]
    );
    assert!(ok >= 100, "too little load to mean anything: {ok}");
    let success = gw.metric(SUCCESS).await.unwrap_or(0.0);
    assert!(
        success - success0 >= 5.0,
        "5 reloads, success counter went {success0} -> {success}"
    );
}
