//! `hoist serve` as a real process on port 0: signed webhooks, redeliveries, bursts, forged
//! payloads, watch windows, registry polling with rate limits, promotion, and SIGTERM.

use std::time::{Duration, Instant};

use crate::support::daemon::{self, Daemon, package_event, push_event};
use crate::support::hoist::{Fixture, Options, PROD, SERVICE};
use crate::support::images::{self, Variant};

const REPO: &str = "acme/web";
const WAIT: Duration = Duration::from_secs(90);

/// A fixture whose service follows `acme/web`, and its daemon.
async fn serve(mut options: Options, server: &str) -> (Fixture, Daemon) {
    if options.service_extra.is_empty() {
        options.service_extra = "github_repository = \"acme/web\"\n";
    }
    let mut f = Fixture::start(options).await;
    f.options.config_extra = daemon::config(f.state.path(), server);
    f.write_config("");
    let d = Daemon::start(&f.config, &[]).await;
    (f, d)
}

fn finished(history: &[serde_json::Value], n: usize) -> bool {
    history.len() == n && history.iter().all(|d| d["outcome"] != "running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_package_event_deploys_and_a_redelivery_queues_nothing() {
    let (f, d) = serve(Options::default(), "").await;
    let load = f.load();
    load.wait_until_serving("v1", WAIT)
        .await
        .expect("v1 serves");

    let body = package_event(REPO, &f.repo, "v2", &f.digests["v2"]);
    let clock = Instant::now();
    let reply = d.deliver("package", "delivery-1", &body).await;
    let answered = clock.elapsed();
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    assert_eq!(reply.body["status"], "queued");
    assert_eq!(reply.body["services"][0]["service"], SERVICE);
    assert!(
        answered < Duration::from_secs(1),
        "answered in {answered:?}: the handler must not wait for the rollout"
    );

    load.wait_until_serving("v2", WAIT)
        .await
        .expect("v2 serves");
    let history = f
        .wait_history("the rollout", WAIT, |h| finished(h, 1))
        .await;
    assert_eq!(history[0]["outcome"], "succeeded");
    assert_eq!(
        history[0]["trigger"],
        format!("webhook package (delivery {})", daemon::guid("delivery-1"))
    );
    assert_eq!(f.running_image(), f.pinned("v2"));

    let again = d.deliver("package", "delivery-1", &body).await;
    assert_eq!(
        (again.status, again.body["status"].as_str()),
        (200, Some("duplicate"))
    );
    let report = load.stop().await;
    println!("webhook-triggered rollout at 100 req/s: {report}");
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(f.history().await.len(), 1, "the redelivery queued nothing");

    // Delivery ids outlive the process: a redelivery after a restart is still one.
    let mut d = d;
    d.terminate();
    assert_eq!(d.wait(WAIT).await, 0, "{}", d.log());
    let d = Daemon::start(&f.config, &[]).await;
    let after_restart = d.deliver("package", "delivery-1", &body).await;
    assert_eq!(
        (after_restart.status, after_restart.body["status"].as_str()),
        (200, Some("duplicate"))
    );
    assert_eq!(
        d.deliver("package", "delivery-2", &body).await.status,
        202,
        "a new id after the restart is new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_fifty_deliveries_causes_at_most_two_rollouts() {
    let (f, d) = serve(Options::default(), "").await;
    let body = package_event(REPO, &f.repo, "v2", &f.digests["v2"]);
    let d = std::sync::Arc::new(d);
    let replies = futures_util::future::join_all((0..50).map(|i| {
        let (d, body) = (d.clone(), body.clone());
        async move { d.deliver("package", &format!("burst-{i}"), &body).await }
    }))
    .await;
    let mut queued_behind = false;
    for r in &replies {
        assert_eq!(r.status, 202, "{:?}", r.body);
        let action = r.body["services"][0]["action"].as_str().unwrap_or_default();
        queued_behind |= action.starts_with("deploy queued");
    }
    let expected = if queued_behind { 2 } else { 1 };
    let history = f
        .wait_history("the burst's rollouts", WAIT, |h| finished(h, expected))
        .await;
    let outcomes: Vec<&str> = history
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    assert!(outcomes.contains(&"succeeded"), "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| *o == "succeeded" || *o == "noop"),
        "{outcomes:?}"
    );
    assert_eq!(f.running_image(), f.pinned("v2"));
    println!(
        "50 deliveries -> {} journal entries: {outcomes:?}",
        history.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_digest_with_a_valid_signature_deploys_nothing() {
    let (f, d) = serve(Options::default(), "").await;
    let before = f.project.containers();
    // Signed with the right secret, but the digest is not what the registry has for v2.
    let body = package_event(REPO, &f.repo, "v2", &f.digests["v1"]);
    let reply = d.deliver("package", "forged-1", &body).await;
    assert_eq!(reply.status, 202);
    d.wait_for_log("Not deploying", WAIT).await;
    assert!(d.log().contains("the registry says"), "{}", d.log());
    assert!(f.history().await.is_empty(), "nothing was deployed");
    assert_eq!(f.project.containers(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_signatures_and_malformed_deliveries_are_refused() {
    let (f, d) = serve(Options::default(), "").await;
    let body = package_event(REPO, &f.repo, "v2", &f.digests["v2"]);
    let good = hoist::github::webhook::sign(daemon::SECRET.as_bytes(), &body);
    let wrong = hoist::github::webhook::sign(b"not the secret", &body);
    let json = ("content-type", "application/json");
    let id = daemon::guid("sig-test");
    let base = [
        ("x-github-event", "package"),
        ("x-github-delivery", id.as_str()),
        json,
    ];
    let with = |sig: Option<(&'static str, String)>| {
        let mut h: Vec<(&str, String)> = base.iter().map(|(k, v)| (*k, v.to_string())).collect();
        h.extend(sig);
        h
    };
    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(Headers, Vec<u8>, &str)> = vec![
        (
            with(Some(("x-hub-signature-256", wrong))),
            body.clone(),
            "does not match",
        ),
        (with(None), body.clone(), "missing"),
        (
            with(Some(("x-hub-signature-256", good[..30].to_string()))),
            body.clone(),
            "not of the form",
        ),
        (
            with(Some(("x-hub-signature-256", good.replace('a', "g")))),
            body.clone(),
            "not of the form",
        ),
        (
            with(Some(("x-hub-signature", "sha1=0123456789".to_string()))),
            body.clone(),
            "SHA-1",
        ),
        (
            with(Some(("x-hub-signature-256", good.clone()))),
            {
                let mut b = body.clone();
                b[10] ^= 1;
                b
            },
            "does not match",
        ),
    ];
    for (headers, payload, reason) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = d.post_webhook(&h, payload).await;
        assert_eq!(r.status, 401, "{h:?}: {:?}", r.body);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{:?}",
            r.body
        );
    }
    let refusal = d
        .log()
        .lines()
        .find(|l| l.contains("bad signature"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        refusal.contains(&id) && refusal.contains("remote=127.0.0.1"),
        "refusals are logged with delivery and remote address: {refusal}"
    );
    assert!(
        !d.log().contains(daemon::SECRET),
        "the secret never appears in the log"
    );

    let signed = |b: &[u8]| hoist::github::webhook::sign(daemon::SECRET.as_bytes(), b);
    let r = d
        .post_webhook(
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", &signed(b"{}")),
            ],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400, "missing delivery id");
    let r = d
        .post_webhook(
            &[
                ("x-github-event", "push"),
                ("x-github-delivery", &daemon::guid("bad-json")),
                ("x-hub-signature-256", &signed(b"{nope")),
            ],
            b"{nope".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400, "invalid JSON: {:?}", r.body);
    let r = d
        .deliver(
            "ping",
            "ping-1",
            br#"{"zen":"Keep it logically awesome.","hook_id":1}"#,
        )
        .await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("pong")));
    let r = d
        .deliver(
            "issues",
            "issues-1",
            br#"{"action":"opened","repository":{"full_name":"acme/web"}}"#,
        )
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (202, Some("ignored"))
    );
    let r = d
        .deliver("push", "other-branch", &push_event(REPO, "feature-x"))
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (202, Some("ignored"))
    );
    assert!(
        r.body["reason"]
            .as_str()
            .unwrap()
            .contains("tracks v2, not feature-x"),
        "{:?}",
        r.body
    );
    let huge = vec![b' '; hoist::github::webhook::MAX_BODY + 1];
    let r = d
        .post_webhook(
            &[
                ("x-github-event", "push"),
                ("x-github-delivery", "huge"),
                ("x-hub-signature-256", "sha256=00"),
            ],
            huge,
        )
        .await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert!(f.history().await.is_empty(), "nothing was deployed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_opens_a_watch_that_deploys_when_ci_pushes_the_image() {
    let (f, d) = serve(
        Options {
            tags: vec![("main", Variant::V1)],
            initial: "main",
            track: "main",
            ..Options::default()
        },
        "",
    )
    .await;
    let load = f.load();
    load.wait_until_serving("v1", WAIT)
        .await
        .expect("v1 serves");
    let reply = d.deliver("push", "push-1", &push_event(REPO, "main")).await;
    assert_eq!(reply.status, 202);
    assert!(
        reply.body["services"][0]["action"]
            .as_str()
            .unwrap()
            .starts_with("watching"),
        "{:?}",
        reply.body
    );
    // CI finishes a little later.
    let digest = images::push(
        &f.registry,
        &format!("{}/web", f.project.name),
        Variant::V2,
        "main",
    )
    .await;
    load.wait_until_serving("v2", WAIT)
        .await
        .expect("the watch deployed CI's image");
    let history = f
        .wait_history("the watched rollout", WAIT, |h| finished(h, 1))
        .await;
    assert_eq!(history[0]["to_digest"], digest.as_str());
    assert_eq!(
        history[0]["trigger"],
        format!("webhook push (delivery {})", daemon::guid("push-1"))
    );
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_poller_takes_the_newest_semver_match_and_backs_off_on_429() {
    let (f, d) = serve(
        Options {
            tags: vec![
                ("v1.2.9", Variant::V1),
                ("v1.3.0", Variant::V2),
                ("v2.0.0", Variant::Slow),
                ("v1.4.0-rc.1", Variant::Broken),
            ],
            initial: "v1.2.9",
            track: "semver:^1",
            gateway: true,
            service_extra: "github_repository = \"acme/web\"\npoll_interval = \"1s\"\n",
            ..Options::default()
        },
        "",
    )
    .await;
    let history = f
        .wait_history("the polled rollout", WAIT, |h| finished(h, 1))
        .await;
    assert_eq!(history[0]["outcome"], "succeeded", "{:#?}", history[0]);
    assert_eq!(history[0]["to_tag"], "v1.3.0");
    assert_eq!(history[0]["trigger"], "poll");
    assert_eq!(f.running_image(), f.pinned("v1.3.0"));

    // Rate limited: the poller waits what Retry-After says, then polls again.
    let gateway = f.gateway.as_ref().unwrap();
    gateway.set_rate_limited(Some(4));
    let deadline = Instant::now() + WAIT;
    let (first, second) = loop {
        let limited: Vec<Instant> = gateway
            .requests()
            .iter()
            .filter(|r| r.2 == 429)
            .map(|r| r.0)
            .collect();
        if limited.len() >= 2 {
            break (limited[0], limited[1]);
        }
        assert!(Instant::now() < deadline, "the poller stopped polling");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    gateway.set_rate_limited(None);
    let gap = second - first;
    assert!(
        gap >= Duration::from_millis(3900),
        "polled again after {gap:?} despite Retry-After: 4"
    );
    assert!(d.log().contains("backing off"), "{}", d.log());

    let digest = images::push(
        &f.registry,
        &format!("{}/web", f.project.name),
        Variant::V1,
        "v1.3.1",
    )
    .await;
    let history = f
        .wait_history("the rollout after the rate limit", WAIT, |h| finished(h, 2))
        .await;
    assert_eq!(history[0]["to_digest"], digest.as_str());
    assert_eq!(history[0]["to_tag"], "v1.3.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_a_running_rollout_finish_or_leaves_it_to_recovery() {
    let (f, mut d) = serve(
        Options {
            drain: "3s",
            ..Options::default()
        },
        "shutdown_grace = \"30s\"\n",
    )
    .await;
    let body = package_event(REPO, &f.repo, "v2", &f.digests["v2"]);
    d.deliver("package", "term-1", &body).await;
    f.wait_history("the rollout to reach drain", WAIT, |h| {
        h.first().is_some_and(|d| d["step"] == "drain")
    })
    .await;
    d.terminate();
    assert_eq!(d.wait(WAIT).await, 0, "{}", d.log());
    assert!(d.log().contains("All rollouts finished"), "{}", d.log());
    assert_eq!(f.history().await[0]["outcome"], "succeeded");
    assert_eq!(f.running_image(), f.pinned("v2"));

    // A grace shorter than the drain: the daemon exits, the next start recovers.
    let mut f = f;
    f.options.drain = "20s";
    f.options.track = "v1";
    f.options.config_extra = daemon::config(f.state.path(), "shutdown_grace = \"1s\"\n");
    f.write_config("");
    let mut d = Daemon::start(&f.config, &[]).await;
    let body = package_event(REPO, &f.repo, "v1", &f.digests["v1"]);
    d.deliver("package", "term-2", &body).await;
    f.wait_history("the second rollout to reach drain", WAIT, |h| {
        h.len() == 2 && h[0]["step"] == "drain"
    })
    .await;
    d.terminate();
    assert_eq!(d.wait(WAIT).await, 0, "{}", d.log());
    assert!(d.log().contains("grace ran out"), "{}", d.log());
    assert_eq!(f.history().await[0]["outcome"], "running");

    // Recovery completes the interrupted rollout; then its trigger, kept until a rollout
    // of it has run to the end, runs once more and finds nothing to do.
    let d = Daemon::start(&f.config, &[]).await;
    let history = f
        .wait_history("recovery at start and the kept trigger", WAIT, |h| {
            h.len() == 3 && h[1]["outcome"] == "interrupted" && h[0]["outcome"] == "noop"
        })
        .await;
    assert!(
        history[1]["error"]
            .as_str()
            .unwrap()
            .contains("recovery completed the rollout"),
        "{:#?}",
        history[1]
    );
    assert_eq!(history[0]["trigger"], history[1]["trigger"]);
    assert_eq!(f.project.containers().len(), 1, "{}", d.log());
    assert_eq!(f.running_image(), f.pinned("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prod_only_runs_what_stage_ran_healthily() {
    let mut f = Fixture::start(Options {
        prod: true,
        prod_extra: "github_repository = \"acme/web\"\npromote_after = \"2s\"\n",
        ..Options::default()
    })
    .await;
    // Nothing recorded for stage yet: promotion refuses with the reason.
    let run = f.hoist(&["promote", PROD]).await;
    run.assert_code(1)
        .assert_stderr("no deployed digest recorded");

    f.deploy("v2").await.assert_code(0);
    let run = f.hoist(&["promote", PROD]).await;
    run.assert_code(0);
    assert_eq!(f.running_image_of(PROD), f.pinned("v2"));
    let history = f.history_of(PROD).await;
    assert_eq!(history[0]["trigger"], "promote from web (manual)");

    // The daemon promotes by itself once stage has run a digest for promote_after, and
    // webhooks never deploy prod directly.
    f.deploy("v1").await.assert_code(0);
    f.options.config_extra = daemon::config(f.state.path(), "");
    f.write_config("");
    let d = Daemon::start(&f.config, &[]).await;
    let reply = d
        .deliver(
            "package",
            "prod-1",
            &package_event(REPO, &f.repo, "v2", &f.digests["v2"]),
        )
        .await;
    assert!(
        reply
            .body
            .to_string()
            .contains("web-prod is promoted from web"),
        "{:?}",
        reply.body
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let history = f.history_of(PROD).await;
        if history[0]["trigger"] == "promote from web (automatic)"
            && history[0]["outcome"] != "running"
        {
            assert_eq!(history[0]["outcome"], "succeeded", "{:#?}", history[0]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prod was not promoted to v1:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(f.running_image_of(PROD), f.pinned("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn systemd_hears_ready_watchdog_status_and_stopping() {
    let mut f = Fixture::start(Options::default()).await;
    f.options.config_extra = daemon::config(f.state.path(), "");
    f.write_config("");
    let socket_path = f.state.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut d = Daemon::start(
        &f.config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    )
    .await;
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let clock = Instant::now();
    // READY first, then at least two watchdog pets at half the 1 s period.
    while messages
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 2
    {
        let n = socket.recv(&mut buf).expect("a notification within 30 s");
        messages.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(
        messages[0].contains("READY=1") && messages[0].contains("STATUS=idle; 1 service(s)"),
        "{messages:?}"
    );
    assert!(clock.elapsed() < Duration::from_secs(10), "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("WATCHDOG=1") && m.contains("STATUS=")),
        "{messages:?}"
    );
    d.terminate();
    loop {
        let n = socket.recv(&mut buf).expect("STOPPING after SIGTERM");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    assert_eq!(d.wait(WAIT).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn different_services_roll_in_parallel_up_to_max_parallel() {
    for (max_parallel, overlap) in [(2, true), (1, false)] {
        let mut f = Fixture::start(Options {
            prod: true,
            drain: "3s",
            ..Options::default()
        })
        .await;
        let dir = f.state.path().to_path_buf();
        std::fs::write(dir.join("admin-token"), "t0ken\n").unwrap();
        f.options.config_extra = daemon::config(
            &dir,
            &format!(
                "max_parallel = {max_parallel}\nadmin_token_file = \"{}\"\n",
                dir.join("admin-token").display()
            ),
        );
        f.write_config("");
        let d = Daemon::start(&f.config, &[]).await;
        let http = reqwest::Client::new();
        for service in [SERVICE, PROD] {
            let r = http
                .post(format!("{}/api/services/{service}/deploy", d.url))
                .bearer_auth("t0ken")
                .body(r#"{"tag":"v2"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
        let stage = f
            .wait_history("stage's rollout", WAIT, |h| finished(h, 1))
            .await;
        let prod = f
            .wait_history_of(PROD, "prod's rollout", WAIT, |h| finished(h, 1))
            .await;
        let span = |h: &serde_json::Value| {
            (
                h["started_at"].as_i64().unwrap(),
                h["finished_at"].as_i64().unwrap(),
            )
        };
        let ((s0, s1), (p0, p1)) = (span(&stage[0]), span(&prod[0]));
        assert_eq!(
            s0 < p1 && p0 < s1,
            overlap,
            "max_parallel = {max_parallel}: stage {s0}..{s1}, prod {p0}..{p1}"
        );
    }
}
