//! Automation that never fights a failure or an operator, against a real `hoist serve`
//! polling a real registry every second: a broken image on the track fails once and is held
//! back (across a restart) until the track moves on; after a rollback neither polls nor
//! webhooks redeploy the bad digest, a new one does; pause and resume through the CLI and
//! the API; a manual deploy during a push's watch window stays.

use std::time::{Duration, Instant};

use crate::support::daemon::post_json as post;
use crate::support::daemon::{self, Daemon, package_event, push_event};
use crate::support::hoist::{Fixture, Options, SERVICE, hoist};
use crate::support::images::{self, Variant};

const REPO: &str = "acme/web";
const WAIT: Duration = Duration::from_secs(90);
const ADMIN: &str = "adm1n-t0ken";

/// A service tracking `main` (v1 at first; v2 is pushed too) with 1 s polling.
fn tracking_main() -> Options {
    Options {
        tags: vec![("main", Variant::V1), ("v2", Variant::V2)],
        initial: "main",
        track: "main",
        service_extra: "github_repository = \"acme/web\"\npoll_interval = \"1s\"\n",
        ..Options::default()
    }
}

/// A fixture with `options` and its daemon, with an admin token.
async fn polled(options: Options) -> (Fixture, Daemon) {
    let mut f = Fixture::start(options).await;
    let dir = f.state.path().to_path_buf();
    std::fs::write(dir.join("admin-token"), format!("{ADMIN}\n")).unwrap();
    f.options.config_extra = daemon::config(
        &dir,
        &format!(
            "admin_token_file = \"{}\"\n",
            dir.join("admin-token").display()
        ),
    );
    f.write_config("");
    let d = Daemon::start(&f.config, &[]).await;
    (f, d)
}

/// Pushes `variant` as `main`, the tracked tag; returns its digest.
async fn push_main(f: &Fixture, variant: Variant) -> String {
    let repo = format!("{}/web", f.project.name);
    images::push(&f.registry, &repo, variant, "main").await
}

fn finished(h: &[serde_json::Value], n: usize) -> bool {
    h.len() == n && h.iter().all(|d| d["outcome"] != "running")
}

/// The service's entry in the daemon's `/status`.
async fn status(d: &Daemon) -> serde_json::Value {
    let reply = d.get("/status").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body["services"][0].clone()
}

/// The daemon's status page, as a browser asks for it.
async fn page(d: &Daemon) -> String {
    let response = reqwest::Client::new()
        .get(format!("{}/status", d.url))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Waits until the poller has looked at the registry `n` more times (each look changes
/// `last_poll`): the journal asserted after it saw that many chances to deploy.
async fn wait_polls(d: &Daemon, n: usize) {
    let deadline = Instant::now() + WAIT;
    let mut seen = status(d).await["last_poll"].as_i64();
    let mut polls = 0;
    while polls < n {
        assert!(
            Instant::now() < deadline,
            "the poller stopped:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let last = status(d).await["last_poll"].as_i64();
        if last != seen {
            polls += 1;
            seen = last;
        }
    }
}

fn rollouts(history: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    history
        .iter()
        .filter(|d| d["outcome"] != "paused" && d["outcome"] != "resumed")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_image_on_the_track_fails_once_and_is_held_back_until_the_track_moves() {
    let (f, d) = polled(Options {
        health_timeout: "5s",
        ..tracking_main()
    })
    .await;
    let load = f.load();
    load.wait_until_serving("v1", WAIT)
        .await
        .expect("v1 serves");
    let broken = push_main(&f, Variant::Broken).await;
    let history = f
        .wait_history("the broken rollout", WAIT, |h| finished(h, 1))
        .await;
    assert_eq!(history[0]["outcome"], "rolled_back", "{:#?}", history[0]);
    assert_eq!(history[0]["step"], "health");
    assert_eq!(history[0]["to_digest"], broken.as_str());
    assert!(
        history[0]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("held back"),
        "{:#?}",
        history[0]
    );

    // Ten more polls, each seeing the broken digest on the track: nothing more is tried.
    let clock = Instant::now();
    wait_polls(&d, 10).await;
    let web = status(&d).await;
    assert_eq!(web["held_back"]["digest"], broken.as_str(), "{web:#}");
    assert_eq!(web["held_back"]["step"], "health");
    assert!(
        web["held_back"]["reason"]
            .as_str()
            .unwrap()
            .contains("not healthy"),
        "{web:#}"
    );
    assert!(web["held_back"]["since"].as_i64().unwrap() > 0);
    assert_eq!(
        web["state"], "idle",
        "serving v1, not a red failure: {web:#}"
    );
    assert_eq!(web["health"], "healthy");
    let html = page(&d).await;
    assert!(
        html.contains("<dt>held back</dt>")
            && html.contains(&broken[7..19])
            && html.contains("badge idle"),
        "{html}"
    );
    let metrics = d.get("/metrics").await.body;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(&format!(
            "hoist_held_back_since_seconds{{service=\"web\",digest=\"{broken}\",step=\"health\"}}"
        )),
        "{metrics}"
    );
    let run = hoist(&f.config, &["--url", &d.url, "status"], &[]).await;
    run.assert_code(0)
        .assert_stdout(&format!("- web: holding back {}", &broken[7..19]));
    assert!(
        !run.stdout.contains("! web"),
        "a held failure is not listed as a problem:\n{}",
        run.text()
    );

    // A webhook for the same digest deploys nothing either.
    let reply = d
        .deliver(
            "package",
            "broken-again",
            &package_event(REPO, &f.repo, "main", &broken),
        )
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    d.wait_for_log("Not deploying: digest", WAIT).await;

    // A restart keeps the hold: the state database has it.
    let mut d = d;
    d.terminate();
    assert_eq!(d.wait(WAIT).await, 0, "{}", d.log());
    let d = Daemon::start(&f.config, &[]).await;
    wait_polls(&d, 5).await;
    let history = f.history().await;
    assert_eq!(
        rollouts(&history).len(),
        1,
        "exactly one failed rollout over {:?} of 1 s polling, a webhook and a restart: {history:#?}",
        clock.elapsed()
    );
    assert_eq!(
        status(&d).await["running_digest"],
        f.digests["main"].as_str(),
        "v1 serves on"
    );

    // The track moves on to a good image: it deploys, and the hold is gone.
    let good = push_main(&f, Variant::V2).await;
    load.wait_until_serving("v2", WAIT)
        .await
        .expect("the next good image deploys");
    let history = f
        .wait_history("the good rollout", WAIT, |h| finished(h, 2))
        .await;
    assert_eq!(history[0]["outcome"], "succeeded", "{:#?}", history[0]);
    assert_eq!(history[0]["to_digest"], good.as_str());
    assert!(status(&d).await["held_back"].is_null());
    let report = load.stop().await;
    println!("broken image held back, then the next one deployed: {report}");
    assert_eq!(report.failed, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_rollback_automation_waits_for_a_new_digest_and_pause_resume_work() {
    let (f, d) = polled(tracking_main()).await;
    let url = d.url.clone();
    // A bad release (healthy, but wrong) reaches the track and is deployed by the poller.
    let bad = push_main(&f, Variant::V2).await;
    let history = f
        .wait_history("the bad release", WAIT, |h| finished(h, 1))
        .await;
    assert_eq!(
        (
            history[0]["outcome"].as_str(),
            history[0]["trigger"].as_str()
        ),
        (Some("succeeded"), Some("poll"))
    );

    // The operator rolls back, through the daemon.
    let run = hoist(&f.config, &["--url", &url, "rollback", SERVICE], &[]).await;
    run.assert_code(0).assert_stdout("web deployed");
    let history = f.history().await;
    assert_eq!(history[0]["trigger"], "api rollback");
    assert!(
        history[0]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("automation paused"),
        "{:#?}",
        history[0]
    );
    let web = status(&d).await;
    assert_eq!(web["state"], "paused", "{web:#}");
    assert_eq!(web["paused"]["by"], "api rollback");
    assert_eq!(web["paused"]["track_digest"], bad.as_str());
    let html = page(&d).await;
    assert!(
        html.contains("badge paused")
            && html.contains("by api rollback: rolled back by an operator"),
        "{html}"
    );

    // Polls, a package event and a push (its watch window) for the bad digest: nothing.
    let reply = d
        .deliver(
            "package",
            "bad-again",
            &package_event(REPO, &f.repo, "main", &bad),
        )
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    d.wait_for_log("Not deploying: automation is paused", WAIT)
        .await;
    let reply = d
        .deliver("push", "push-bad", &push_event(REPO, "main"))
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    wait_polls(&d, 8).await;
    assert_eq!(f.history().await.len(), 2, "{}", d.log());
    assert_eq!(
        f.running_image(),
        f.pinned("main"),
        "the digest rolled back to"
    );

    // Missing or wrong tokens change nothing.
    for token in [None, Some("wrong")] {
        for action in ["pause", "resume"] {
            let (code, body) = post(
                &d,
                &format!("/api/services/web/{action}"),
                token,
                r#"{"reason":"x"}"#,
            )
            .await;
            assert_eq!(code, 401, "{action} {token:?}: {body}");
        }
    }
    let web = status(&d).await;
    assert_eq!(web["paused"]["by"], "api rollback", "{web:#}");
    assert_eq!(f.history().await.len(), 2);

    // A new digest on the track ends the pause and deploys.
    let fixed = push_main(&f, Variant::Slow).await;
    let history = f
        .wait_history("the fixed release", WAIT, |h| {
            rollouts(h).len() == 3 && h[0]["outcome"] == "succeeded"
        })
        .await;
    assert_eq!(history[0]["to_digest"], fixed.as_str());
    assert_eq!(history[0]["trigger"], "poll");
    assert_eq!(history[1]["outcome"], "resumed", "{history:#?}");
    assert!(status(&d).await["paused"].is_null());

    // `hoist pause` in this process (no --url, and the config's port 0 answers nothing: the
    // CLI writes the state itself) lasts through a move of the track.
    let run = hoist(
        &f.config,
        &["pause", SERVICE, "--reason", "freeze for the demo"],
        &[],
    )
    .await;
    run.assert_code(0).assert_stdout("automation paused");
    let web = status(&d).await;
    assert_eq!(web["paused"]["reason"], "freeze for the demo", "{web:#}");
    assert!(
        web["paused"]["by"]
            .as_str()
            .unwrap()
            .starts_with("pause by ")
    );
    let metrics = d.get("/metrics").await.body;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("hoist_automation_paused_since_seconds{service=\"web\""),
        "{metrics}"
    );
    let moved = push_main(&f, Variant::V1).await;
    wait_polls(&d, 5).await;
    assert_eq!(rollouts(&f.history().await).len(), 3, "{}", d.log());

    // Resumed through the API: the track's new digest deploys.
    let (code, body) = post(&d, "/api/services/web/resume", Some(ADMIN), "").await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("resumed")),
        "{body}"
    );
    let history = f
        .wait_history("the rollout after resume", WAIT, |h| {
            rollouts(h).len() == 4 && h[0]["outcome"] == "succeeded"
        })
        .await;
    assert_eq!(history[0]["to_digest"], moved.as_str());
    let outcomes: Vec<&str> = history
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.starts_with(&["succeeded", "resumed", "paused"]),
        "the journal tells the pause and the resume: {outcomes:?}"
    );

    // And through the CLI via the daemon: pause, then resume.
    let run = hoist(&f.config, &["--url", &url, "pause", SERVICE], &[]).await;
    run.assert_code(0).assert_stderr("via hoist serve at");
    assert!(
        status(&d).await["paused"]["by"]
            .as_str()
            .unwrap()
            .starts_with("api pause by ")
    );
    let run = hoist(&f.config, &["--url", &url, "resume", SERVICE], &[]).await;
    run.assert_code(0).assert_stdout("automation resumed");
    assert!(status(&d).await["paused"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manual_deploy_during_a_push_watch_window_stays_deployed() {
    let (f, d) = polled(Options {
        gateway: true,
        // No polling: only the watch window looks at the registry.
        service_extra: "github_repository = \"acme/web\"\n",
        ..tracking_main()
    })
    .await;
    let main_checks = || {
        f.gateway
            .as_ref()
            .unwrap()
            .requests()
            .iter()
            .filter(|r| r.1.ends_with("/manifests/main"))
            .map(|r| r.0)
            .collect::<Vec<Instant>>()
    };
    // What compose started runs the digest the registry gives `main` (so that a watch
    // would not take it for out of date for another reason).
    assert_eq!(
        status(&d).await["running_digest"],
        f.digests["main"].as_str()
    );
    let reply = d.deliver("push", "push-1", &push_event(REPO, "main")).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let run = hoist(
        &f.config,
        &["--url", &d.url, "deploy", SERVICE, "--tag", "v2"],
        &[],
    )
    .await;
    run.assert_code(0).assert_stdout("web deployed");
    let deployed = Instant::now();
    assert_eq!(f.running_image(), f.pinned("v2"));
    assert!(
        status(&d).await["watching_until"].is_i64(),
        "the window is still open:\n{}",
        d.log()
    );

    // The watch looks again (after 2, 4, 8, 16 s): twice after the deploy is enough to
    // have reverted it, as it did 12 s after a manual deploy before.
    let deadline = Instant::now() + WAIT;
    while main_checks().iter().filter(|t| **t > deployed).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the watch stopped looking:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let history = f.history().await;
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["trigger"], "api deploy");
    assert_eq!(f.running_image(), f.pinned("v2"));
    assert_eq!(status(&d).await["paused"]["by"], "api deploy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_that_is_not_the_images_is_retried_with_backoff_and_holds_nothing() {
    // The compose file no longer parses: every rollout is refused at resolve, whatever the
    // digest, and the image is not to blame.
    let (f, d) = polled(tracking_main()).await;
    let yaml = std::fs::read_to_string(f.project.compose_file()).unwrap();
    f.project
        .write_compose(&format!("{yaml}\n  this is: [not yaml\n"));
    let digest = push_main(&f, Variant::V2).await;
    let history = f
        .wait_history("three refused rollouts", WAIT, |h| finished(h, 3))
        .await;
    for h in &history {
        assert_eq!(
            (
                h["outcome"].as_str(),
                h["step"].as_str(),
                h["trigger"].as_str()
            ),
            (Some("failed"), Some("resolve"), Some("poll")),
            "{h:#}"
        );
        assert!(h["note"].is_null(), "nothing held back: {h:#}");
    }
    // Newest first: the waits between the attempts were 10 s, then 20 s (each plus up to
    // a poll interval), not the poll interval.
    let started = |i: usize| history[i]["started_at"].as_i64().unwrap();
    let (first, second) = (started(1) - started(2), started(0) - started(1));
    println!("refused rollouts {first} ms and {second} ms apart with 1 s polling");
    assert!((10_000..14_000).contains(&first), "{first} ms");
    assert!((20_000..24_000).contains(&second), "{second} ms");
    let web = status(&d).await;
    assert!(web["held_back"].is_null(), "{web:#}");
    assert_eq!(web["state"], "failed", "a problem to fix: {web:#}");
    assert!(
        d.log().contains("automation tries again after a backoff"),
        "{}",
        d.log()
    );
    assert_ne!(status(&d).await["running_digest"], digest.as_str());
}
