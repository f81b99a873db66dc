//! Load balancing (round robin by weight, least requests, consistent hash) and target health (passive
//! ejection, active health checks).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

fn upstream(lb: &str, targets: &[(SocketAddr, u32)], extra: &str) -> String {
    let mut s = format!("upstreams:\n  - name: up\n    load_balancing: {lb}\n    targets:\n");
    for (addr, w) in targets {
        s.push_str(&format!("      - addr: \"{addr}\"\n        weight: {w}\n"));
    }
    s.push_str(extra);
    s.push_str("routes:\n  - name: all\n    upstream: up\n");
    s
}

/// Which upstream answered, by the echo's name; failures counted under `status NNN`.
async fn tally(
    c: &HttpClient,
    url: &str,
    n: usize,
    headers: &[(&str, &str)],
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = c.call("GET", url, headers, empty()).await.expect("request");
        let key = if r.status == 200 {
            r.echo().upstream
        } else {
            format!("status {}", r.status)
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

fn count(m: &HashMap<String, usize>, k: &str) -> usize {
    m.get(k).copied().unwrap_or(0)
}

#[tokio::test]
async fn round_robin_spreads_by_weight() {
    let (a, b, c) = (
        EchoUpstream::named("a").await,
        EchoUpstream::named("b").await,
        EchoUpstream::named("c").await,
    );
    let gw = Gateway::start(
        BIN,
        &upstream(
            "round_robin",
            &[(a.addr(), 1), (b.addr(), 1), (c.addr(), 2)],
            "",
        ),
    )
    .await;
    let counts = tally(&HttpClient::http1(), &gw.url("/rr"), 400, &[]).await;
    let (na, nb, nc) = (
        count(&counts, "a"),
        count(&counts, "b"),
        count(&counts, "c"),
    );
    assert_eq!(na + nb + nc, 400, "{counts:?}");
    for (n, want) in [(na, 100), (nb, 100), (nc, 200)] {
        assert!(
            n.abs_diff(want) <= want / 5,
            "expected about 25/25/50%: {counts:?}"
        );
    }
}

#[tokio::test]
async fn least_requests_prefers_the_idle_target() {
    let slow = EchoUpstream::slow("slow", Duration::from_millis(300)).await;
    let fast = EchoUpstream::named("fast").await;
    let gw = Gateway::start(
        BIN,
        &upstream("least_requests", &[(slow.addr(), 1), (fast.addr(), 1)], ""),
    )
    .await;
    let url = gw.url("/lr");
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { tally(&HttpClient::http1(), &url, 12, &[]).await })
        })
        .collect();
    let mut total: HashMap<String, usize> = HashMap::new();
    for w in workers {
        for (k, v) in w.await.expect("worker") {
            *total.entry(k).or_default() += v;
        }
    }
    let (ns, nf) = (count(&total, "slow"), count(&total, "fast"));
    assert_eq!(ns + nf, 48, "{total:?}");
    assert!(
        nf >= 3 * ns.max(1),
        "the busy slow target should get few requests: {total:?}"
    );
}

#[tokio::test]
async fn consistent_hash_pins_a_user_and_spreads_users() {
    let ups = [
        EchoUpstream::named("a").await,
        EchoUpstream::named("b").await,
        EchoUpstream::named("c").await,
    ];
    let targets: Vec<_> = ups.iter().map(|u| (u.addr(), 1)).collect();
    let gw = Gateway::start(
        BIN,
        &upstream("consistent_hash", &targets, "    hash_key: header:x-user\n"),
    )
    .await;
    let c = HttpClient::http1();
    let url = gw.url("/ch");
    for user in ["alice", "bob", "carol"] {
        let counts = tally(&c, &url, 15, &[("x-user", user)]).await;
        assert_eq!(
            counts.len(),
            1,
            "user {user} was spread over targets: {counts:?}"
        );
    }
    let mut per_target: HashMap<String, usize> = HashMap::new();
    let mut first_choice: HashMap<String, String> = HashMap::new();
    for i in 0..150 {
        let user = format!("user-{i}");
        let r = c
            .call("GET", &url, &[("x-user", &user)], empty())
            .await
            .expect("request");
        let t = r.echo().upstream;
        *per_target.entry(t.clone()).or_default() += 1;
        first_choice.insert(user, t);
    }
    assert_eq!(
        per_target.len(),
        3,
        "150 users should reach all 3 targets: {per_target:?}"
    );
    assert!(
        per_target.values().all(|&n| n <= 105),
        "one target took over 70%: {per_target:?}"
    );
    // and the mapping is stable
    for i in (0..150).step_by(10) {
        let user = format!("user-{i}");
        let r = c
            .call("GET", &url, &[("x-user", &user)], empty())
            .await
            .expect("request");
        assert_eq!(r.echo().upstream, first_choice[&user], "{user} moved");
    }
}

#[tokio::test]
async fn passive_health_skips_a_refusing_target_for_eject_for() {
    let good = EchoUpstream::named("good").await;
    let down = RefusedPort::new();
    let gw = Gateway::start(
        BIN,
        &upstream(
            "round_robin",
            &[(down.addr(), 1), (good.addr(), 1)],
            "    retries:\n      attempts: 0\n    passive_health:\n      connect_failures: 1\n      eject_for: 1500ms\n",
        ),
    )
    .await;
    let c = HttpClient::http1();
    let counts = tally(&c, &gw.url("/p"), 20, &[]).await;
    assert!(
        count(&counts, "good") >= 19,
        "after one failed connect the target is ejected: {counts:?}"
    );
    // The target comes back up on the same port; after eject_for it gets traffic again.
    let revived = EchoUpstream::builder()
        .name("revived")
        .addr(down.release())
        .start()
        .await;
    let counts = tally(&c, &gw.url("/p"), 10, &[]).await;
    assert_eq!(
        count(&counts, "revived"),
        0,
        "still ejected within eject_for: {counts:?}"
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let counts = tally(&c, &gw.url("/p"), 20, &[]).await;
    assert!(
        count(&counts, "revived") >= 5,
        "back in rotation after eject_for: {counts:?}"
    );
    assert_eq!(
        count(&counts, "revived") + count(&counts, "good"),
        20,
        "{counts:?}"
    );
    drop(revived);
}

#[tokio::test]
async fn passive_health_with_retries_never_fails_a_request() {
    let good = EchoUpstream::named("good").await;
    let down = RefusedPort::new();
    let gw = Gateway::start(
        BIN,
        &upstream(
            "round_robin",
            &[(down.addr(), 1), (good.addr(), 1)],
            "    passive_health:\n      eject_for: 5s\n",
        ),
    )
    .await;
    let counts = tally(&HttpClient::http1(), &gw.url("/p"), 20, &[]).await;
    assert_eq!(count(&counts, "good"), 20, "{counts:?}");
}

#[tokio::test]
async fn active_health_check_removes_and_restores_a_target() {
    let a = EchoUpstream::named("a").await;
    let b = EchoUpstream::named("b").await;
    let hc = "    health_check:\n      path: /healthz\n      interval: 100ms\n      timeout: 500ms\n      unhealthy: 2\n      healthy: 2\n";
    let gw = Gateway::start(
        BIN,
        &upstream("round_robin", &[(a.addr(), 1), (b.addr(), 1)], hc),
    )
    .await;
    let c = HttpClient::http1();
    let url = gw.url("/hc");
    let counts = tally(&c, &url, 10, &[]).await;
    assert!(
        count(&counts, "a") >= 3 && count(&counts, "b") >= 3,
        "both healthy at first: {counts:?}"
    );
    assert!(
        eventually(Duration::from_secs(3), || async { a.health_checks() >= 3 }).await,
        "no health checks reach a"
    );
    // Probes and requests share each target's kept-alive connections (10 sequential requests
    // need one; the probes, read to their end, reuse it or one more).
    assert!(
        a.connections() <= 2,
        "probes open a connection each: {}",
        a.connections()
    );

    a.set_health(503);
    let removed = eventually(Duration::from_secs(5), || async {
        count(&tally(&c, &url, 6, &[]).await, "b") == 6
    })
    .await;
    assert!(
        removed,
        "a still gets traffic 5s after its /healthz turned 503"
    );
    let checks_when_removed = a.health_checks();
    let counts = tally(&c, &url, 10, &[]).await;
    assert_eq!(
        count(&counts, "b"),
        10,
        "a stays out while unhealthy: {counts:?}"
    );

    a.set_health(200);
    let restored = eventually(Duration::from_secs(5), || async {
        count(&tally(&c, &url, 6, &[]).await, "a") >= 2
    })
    .await;
    assert!(
        restored,
        "a gets no traffic 5s after its /healthz recovered"
    );
    assert!(
        a.health_checks() >= checks_when_removed + 2,
        "recovery needs `healthy` successful checks"
    );
}
