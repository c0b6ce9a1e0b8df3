//! The operator surface through a real `hoist serve`: /status (JSON and HTML), history,
//! metrics, health routes, admin routes and their tokens, the CLI going through the
//! daemon, GitHub Deployments against a fake API, notifications, and the status page in
//! headless Chromium.

use std::time::{Duration, Instant};

use crate::support::daemon::post_json as post;
use crate::support::daemon::{self, Daemon};
use crate::support::github::{Behaviour, FakeGithub};
use crate::support::hoist::{Fixture, Options, PROD, SERVICE, hoist};

const WAIT: Duration = Duration::from_secs(90);
const ADMIN: &str = "adm1n-t0ken";
const READER: &str = "r3ad-t0ken";

/// A fixture with stage and prod and a daemon; `server` and `more` are extra TOML for
/// `[server]` and after `[github]`.
async fn ops(options: Options, server: &str, more: &str) -> (Fixture, Daemon) {
    let mut f = Fixture::start(Options {
        prod: true,
        service_extra: "github_repository = \"acme/web\"\n",
        ..options
    })
    .await;
    let dir = f.state.path().to_path_buf();
    std::fs::write(dir.join("admin-token"), format!("{ADMIN}\n")).unwrap();
    std::fs::write(dir.join("status-token"), format!("{READER}\n")).unwrap();
    let server = server
        .replace("ADMIN_FILE", &dir.join("admin-token").display().to_string())
        .replace(
            "STATUS_FILE",
            &dir.join("status-token").display().to_string(),
        );
    f.options.config_extra = format!("{}{more}", daemon::config(&dir, &server));
    f.write_config("");
    let d = Daemon::start(&f.config, &[]).await;
    (f, d)
}

async fn get(d: &Daemon, path: &str, token: Option<&str>, accept: &str) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .get(format!("{}{path}", d.url))
        .header("accept", accept);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Deploys `tag` to the stage service through the admin API and waits until the journal
/// holds `n` finished rollouts.
async fn deploy(f: &Fixture, d: &Daemon, tag: &str, n: usize) -> Vec<serde_json::Value> {
    let (code, body) = post(
        d,
        "/api/services/web/deploy",
        Some(ADMIN),
        &format!(r#"{{"tag":"{tag}"}}"#),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    f.wait_history("the rollout", WAIT, |h| finished(h, n))
        .await
}

fn finished(h: &[serde_json::Value], n: usize) -> bool {
    h.len() == n && h.iter().all(|d| d["outcome"] != "running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_history_metrics_and_admin_routes() {
    let (f, d) = ops(
        Options::default(),
        "admin_token_file = \"ADMIN_FILE\"\npublic_url = \"https://hoist.test\"\n",
        "",
    )
    .await;

    assert_eq!(get(&d, "/healthz", None, "*/*").await.0, 200);
    let (code, ready) = get(&d, "/readyz", None, "*/*").await;
    assert_eq!(code, 200, "{ready}");

    // Admin routes refuse a missing or wrong token and change nothing.
    for token in [None, Some("wrong")] {
        let (code, body) = post(&d, "/api/services/web/deploy", token, r#"{"tag":"v2"}"#).await;
        assert_eq!(code, 401, "{body}");
        let (code, _) = post(&d, "/api/services/web/rollback", token, "").await;
        assert_eq!(code, 401);
    }
    assert!(f.history().await.is_empty(), "nothing was deployed");
    assert_eq!(
        post(&d, "/api/services/nope/deploy", Some(ADMIN), "")
            .await
            .0,
        404
    );
    assert_eq!(
        post(&d, "/api/services/web/explode", Some(ADMIN), "")
            .await
            .0,
        404
    );
    assert_eq!(
        post(
            &d,
            "/api/services/web/deploy",
            Some(ADMIN),
            r#"{"tag":"v2","digest":"x"}"#
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post(&d, "/api/services/web/rollback", Some(ADMIN), "")
            .await
            .0,
        409,
        "nothing to roll back to yet"
    );

    let history = deploy(&f, &d, "v2", 1).await;
    assert_eq!(history[0]["outcome"], "succeeded");
    assert_eq!(history[0]["trigger"], "api deploy");

    let (code, status) = get(&d, "/status", None, "application/json").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let web = &status["services"][0];
    assert_eq!(web["name"], SERVICE);
    assert_eq!(web["environment"], "stage");
    assert_eq!(web["digest"], f.digests["v2"].as_str());
    assert_eq!(web["tag"], "v2");
    assert_eq!(web["deployed_by"], "api deploy");
    assert_eq!(web["health"], "healthy");
    assert_eq!(web["state"], "idle");
    assert_eq!(web["last_rollout"]["outcome"], "succeeded");
    assert_eq!(status["services"][1]["environment"], "prod");
    assert!(status["uptime_s"].is_u64() && status["version"].is_string());

    let (_, html) = get(&d, "/status", None, "text/html,application/xhtml+xml").await;
    assert!(
        html.contains("<h2>stage</h2>") && html.contains("<h2>prod</h2>"),
        "{html}"
    );
    assert!(
        html.contains("web-prod") && html.contains("http-equiv=\"refresh\""),
        "{html}"
    );

    let (_, deploys) = get(&d, "/api/deploys?service=web&limit=5", None, "*/*").await;
    let deploys: Vec<serde_json::Value> = serde_json::from_str(&deploys).unwrap();
    assert_eq!(deploys.len(), 1);
    assert_eq!(deploys[0]["steps"].as_array().unwrap().len(), 7);

    let (_, metrics) = get(&d, "/metrics", None, "*/*").await;
    for line in [
        "hoist_deploys_total{service=\"web\",environment=\"stage\",outcome=\"succeeded\"} 1",
        "hoist_step_duration_seconds_count{service=\"web\",step=\"health\"} 1",
        "hoist_rollout_in_progress{service=\"web\"} 0",
        "hoist_rollout_duration_seconds_count{service=\"web\",outcome=\"succeeded\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
    assert!(metrics.contains(&format!("hoist_deployed_info{{service=\"web\",environment=\"stage\",image=\"{}\",tag=\"v2\",digest=\"{}\"}} 1", f.repo, f.digests["v2"])), "{metrics}");

    // Promotion and rollback through the API.
    assert_eq!(
        post(&d, "/api/services/web-prod/promote", Some(ADMIN), "")
            .await
            .0,
        202
    );
    let prod = f
        .wait_history_of(PROD, "the API promotion", WAIT, |h| finished(h, 1))
        .await;
    assert_eq!(prod[0]["trigger"], "promote from web (api)");
    assert_eq!(f.running_image_of(PROD), f.pinned("v2"));
    assert_eq!(
        post(&d, "/api/services/web/rollback", Some(ADMIN), "")
            .await
            .0,
        202
    );
    let history = f
        .wait_history("the API rollback", WAIT, |h| finished(h, 2))
        .await;
    assert_eq!(history[0]["trigger"], "api rollback");
    assert_eq!(f.running_image(), f.pinned("v1"));

    // The CLI goes through the daemon and says so.
    let url = d.url.clone();
    let run = hoist(&f.config, &["--url", &url, "status"], &[]).await;
    run.assert_code(0)
        .assert_stderr("(from hoist serve at")
        .assert_stdout("web-prod");
    assert!(
        run.stdout.lines().next().unwrap().starts_with("SERVICE"),
        "{}",
        run.text()
    );
    let run = hoist(
        &f.config,
        &["--url", &url, "deploy", SERVICE, "--tag", "v2"],
        &[],
    )
    .await;
    run.assert_code(0)
        .assert_stderr("via hoist serve at")
        .assert_stdout("web deployed");
    assert_eq!(f.running_image(), f.pinned("v2"));
    let run = hoist(
        &f.config,
        &["--url", &url, "history", SERVICE, "--json"],
        &[],
    )
    .await;
    run.assert_code(0);
    let history: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(history[0]["trigger"], "api deploy");
    let run = hoist(&f.config, &["--url", "http://127.0.0.1:1", "status"], &[]).await;
    run.assert_code(1)
        .assert_stderr("no hoist serve answers at http://127.0.0.1:1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_admin_token_admin_routes_do_not_exist_and_a_status_token_closes_reads() {
    let (f, d) = ops(
        Options::default(),
        "status_token_file = \"STATUS_FILE\"\n",
        "",
    )
    .await;
    let (code, body) = post(&d, "/api/services/web/deploy", Some(ADMIN), "").await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("admin_token_file"),
        "{body}"
    );
    for path in ["/status", "/api/deploys", "/metrics"] {
        assert_eq!(get(&d, path, None, "*/*").await.0, 401, "{path}");
        assert_eq!(get(&d, path, Some("wrong"), "*/*").await.0, 401, "{path}");
        assert_eq!(get(&d, path, Some(READER), "*/*").await.0, 200, "{path}");
    }
    assert_eq!(
        get(&d, "/healthz", None, "*/*").await.0,
        200,
        "health stays public"
    );
    // The CLI reads with the configured status token, and deploys by itself when the
    // daemon's admin routes are off.
    let run = hoist(&f.config, &["--url", &d.url, "status", "--json"], &[]).await;
    run.assert_code(0);
    let run = hoist(
        &f.config,
        &["--url", &d.url, "deploy", SERVICE, "--tag", "v2"],
        &[],
    )
    .await;
    run.assert_code(0)
        .assert_stderr("rolling out from this process");
    assert_eq!(f.running_image(), f.pinned("v2"));
}

fn github_config(fake: &FakeGithub, dir: &std::path::Path) -> String {
    std::fs::write(dir.join("github-token"), "gh-t0ken\n").unwrap();
    format!(
        "token_file = \"{}\"\napi_url = \"{}\"\n",
        dir.join("github-token").display(),
        fake.url
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollouts_are_reported_as_github_deployments() {
    let fake = FakeGithub::start(Behaviour::Normal).await;
    let dir = tempfile::tempdir().unwrap();
    let (f, d) = ops(
        Options::with_broken(),
        "admin_token_file = \"ADMIN_FILE\"\npublic_url = \"https://hoist.test\"\n",
        &github_config(&fake, dir.path()),
    )
    .await;
    for (tag, n) in [("v2", 1), ("v1", 2), ("broken", 3)] {
        deploy(&f, &d, tag, n).await;
    }
    let requests = fake
        .wait_for("deployments and statuses", WAIT, |r| {
            r.iter().filter(|r| r.body["state"] == "failure").count() == 1
        })
        .await;
    let deployments: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/repos/acme/web/deployments")
        .collect();
    assert_eq!(deployments.len(), 3, "{requests:#?}");
    let first = &deployments[0].body;
    assert_eq!(first["ref"], "v2");
    assert_eq!(first["environment"], "stage");
    assert_eq!(first["auto_merge"], false);
    assert_eq!(first["required_contexts"], serde_json::json!([]));
    assert!(
        deployments[0]
            .authorization
            .as_deref()
            .unwrap_or_default()
            .contains("gh-t0ken")
    );
    let states: Vec<(String, String)> = requests
        .iter()
        .filter(|r| r.path.ends_with("/statuses"))
        .map(|r| {
            (
                r.path.clone(),
                r.body["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let of = |id: u64| -> Vec<&str> {
        states
            .iter()
            .filter(|(p, _)| p == &format!("/repos/acme/web/deployments/{id}/statuses"))
            .map(|(_, s)| s.as_str())
            .collect()
    };
    // The fake numbers deployments 1001, 1003, ... (statuses take ids too).
    let ids: Vec<u64> = requests
        .iter()
        .filter(|r| r.path.ends_with("/statuses") && r.body["state"] == "in_progress")
        .filter_map(|r| r.path.split('/').nth(5)?.parse().ok())
        .collect();
    assert_eq!(ids.len(), 3, "{states:?}");
    assert_eq!(
        of(ids[0]),
        ["in_progress", "success", "inactive"],
        "the first is replaced by the second"
    );
    assert_eq!(of(ids[1]), ["in_progress", "success"]);
    assert_eq!(of(ids[2]), ["in_progress", "failure"]);
    let success = requests
        .iter()
        .find(|r| r.body["state"] == "success")
        .unwrap();
    assert_eq!(
        success.body["environment_url"],
        format!("https://{}", f.host)
    );
    assert_eq!(success.body["log_url"], "https://hoist.test/status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_or_hanging_github_does_not_delay_rollouts() {
    for behaviour in [Behaviour::Fail, Behaviour::Hang] {
        let fake = FakeGithub::start(behaviour).await;
        let dir = tempfile::tempdir().unwrap();
        let (f, d) = ops(
            Options::default(),
            "admin_token_file = \"ADMIN_FILE\"\n",
            &github_config(&fake, dir.path()),
        )
        .await;
        let history = deploy(&f, &d, "v2", 1).await;
        assert_eq!(history[0]["outcome"], "succeeded", "{behaviour:?}");
        fake.wait_for("hoist to call GitHub", WAIT, |r| !r.is_empty())
            .await;
        // The rollout's time is its steps' time: nothing waited for GitHub in between.
        let total = history[0]["finished_at"].as_i64().unwrap()
            - history[0]["started_at"].as_i64().unwrap();
        let steps: i64 = history[0]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["duration_ms"].as_i64().unwrap())
            .sum();
        assert!(
            total - steps < 500,
            "{behaviour:?}: {total} ms in all, {steps} ms in steps"
        );
        assert!(
            d.log().contains("GitHub") || matches!(behaviour, Behaviour::Hang),
            "{}",
            d.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_are_sent_and_retried() {
    let chat = FakeGithub::start(Behaviour::FailFirst(1)).await;
    let (f, d) = ops(
        Options::with_broken(),
        "admin_token_file = \"ADMIN_FILE\"\n",
        &format!("[environments.stage]\nnotify_url = \"{}/hook\"\n", chat.url),
    )
    .await;
    deploy(&f, &d, "v2", 1).await;
    let sent = chat
        .wait_for("the success message, retried once", WAIT, |r| r.len() >= 2)
        .await;
    assert!(
        sent[1].body["text"]
            .as_str()
            .unwrap()
            .contains("web (stage) now runs"),
        "{:?}",
        sent[1].body
    );
    assert_eq!(sent[0].body, sent[1].body, "the retry repeats the message");
    deploy(&f, &d, "broken", 2).await;
    let sent = chat
        .wait_for("the rollback message", WAIT, |r| r.len() >= 3)
        .await;
    assert!(
        sent[2].body["text"]
            .as_str()
            .unwrap()
            .contains("rolled back at health"),
        "{:?}",
        sent[2].body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_finishing_after_sigterm_still_reaches_github_and_chat() {
    // The success status is posted once the rollout has ended, during shutdown. The chat
    // refuses the first attempt, so the message needs its retry a second after the rollout:
    // a process that exits when its rollouts are done (as it did while these tasks were
    // detached) never sends it. (Holding GitHub's answers instead would race hoist's 10 s
    // GitHub timeout on a slow machine.)
    let github = FakeGithub::start(Behaviour::Normal).await;
    let chat = FakeGithub::start(Behaviour::FailFirst(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let (f, mut d) = ops(
        Options::default(),
        "admin_token_file = \"ADMIN_FILE\"\nshutdown_grace = \"30s\"\n",
        &format!(
            "{}[environments.stage]\nnotify_url = \"{}/hook\"\n",
            github_config(&github, dir.path()),
            chat.url
        ),
    )
    .await;
    let (code, body) = post(
        &d,
        "/api/services/web/deploy",
        Some(ADMIN),
        r#"{"tag":"v2"}"#,
    )
    .await;
    assert_eq!(code, 202, "{body}");
    // The deployment is created once the rollout has resolved its target: it runs now.
    github
        .wait_for("the deployment to be created", WAIT, |r| !r.is_empty())
        .await;
    d.terminate();
    d.wait_for_log("All rollouts finished", WAIT).await;
    assert_eq!(d.wait(WAIT).await, 0, "{}", d.log());
    assert_eq!(f.history().await[0]["outcome"], "succeeded");

    let states: Vec<String> = github
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/statuses"))
        .map(|r| r.body["state"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(states, ["in_progress", "success"], "{}", d.log());
    let sent = chat.requests();
    assert_eq!(sent.len(), 2, "the refused attempt and its retry: {sent:?}");
    assert!(
        sent[1].body["text"]
            .as_str()
            .unwrap_or_default()
            .contains("web (stage) now runs"),
        "{:?}",
        sent[1].body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_status_page_renders_in_headless_chromium() {
    let (f, d) = ops(
        Options::default(),
        "admin_token_file = \"ADMIN_FILE\"\n",
        "",
    )
    .await;
    deploy(&f, &d, "v2", 1).await;
    assert!(
        crate::support::registry::which("chromium").is_some(),
        "chromium is not installed (apt-get install chromium); .ci/run installs it"
    );
    let out = f.state.path().join("status.png");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/status-screenshot");
    let clock = Instant::now();
    let run = tokio::process::Command::new(script)
        .args([d.url.as_str(), &out.display().to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let png = std::fs::read(&out).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot ({} bytes)",
        png.len()
    );
    let dom = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            &format!("{}/status", d.url),
        ])
        .output()
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<h2>stage</h2>") && dom.contains("<h2>prod</h2>"),
        "both environments render: {dom}"
    );
    assert!(
        dom.contains(&f.digests["v2"]["sha256:".len().."sha256:".len() + 12]),
        "the deployed digest shows"
    );
    if let Ok(keep) = std::env::var("HOIST_KEEP_SCREENSHOT") {
        std::fs::copy(&out, keep).unwrap();
    }
    println!(
        "status page screenshot: {} ({} bytes, {:?})",
        out.display(),
        png.len(),
        clock.elapsed()
    );
}
