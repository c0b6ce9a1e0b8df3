//! Rollouts under continuous load through the real Traefik: the product's promise is zero
//! failed requests, and a bad image never reaching traffic. The projects are created by
//! Compose v2, and the rollout and compose-parity tests run with docker-compose v1 too.

use std::time::Duration;

use crate::support::hoist::{Fixture, Options, SERVICE};
use crate::support::images::Variant;
use crate::support::project::Compose;

const SERVE_WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_rollouts_under_load_fail_no_request() {
    rollouts_under_load_fail_no_request(Compose::V2, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollouts_of_a_compose_v1_project_under_load_fail_no_request() {
    rollouts_under_load_fail_no_request(Compose::V1, 4).await;
}

async fn rollouts_under_load_fail_no_request(compose: Compose, rollouts: usize) {
    let (f, load) = Fixture::start_serving(Options {
        compose,
        ..Options::default()
    })
    .await;
    // The first rollout starts from the container compose created.
    for i in 0..rollouts {
        let tag = if i % 2 == 0 { "v2" } else { "v1" };
        f.deploy(tag).await.assert_code(0);
        assert_eq!(
            f.running_image(),
            f.pinned(tag),
            "rollout {i} runs exactly the resolved digest"
        );
        load.wait_until_serving(tag, SERVE_WAIT)
            .await
            .expect("new version serves");
    }
    let report = load.stop().await;
    println!("hoist ({compose}): {rollouts} rollouts v1<->v2 at 100 req/s: {report}");
    assert!(
        report.sent as usize > 100 * rollouts,
        "the load ran throughout: {report}"
    );
    assert_eq!(
        report.failed, 0,
        "no request may fail during rollouts: {report}"
    );

    let history = f.history().await;
    assert_eq!(history.len(), rollouts);
    for d in &history {
        assert_eq!(d["outcome"], "succeeded", "{d:#}");
        let steps: Vec<&str> = d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect();
        assert_eq!(
            steps,
            [
                "resolve", "pull", "start", "health", "switch", "drain", "record"
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_shutdown_and_throttle_wait_fail_no_request() {
    // Without api_url hoist waits out Traefik's throttle; the slow app needs 3 s to exit.
    let (f, load) = Fixture::start_serving(Options {
        tags: vec![("v1", Variant::V1), ("slow", Variant::Slow)],
        api: false,
        ..Options::default()
    })
    .await;
    for tag in ["slow", "v1", "slow", "v1"] {
        f.deploy(tag).await.assert_code(0);
        load.wait_until_serving(tag, SERVE_WAIT)
            .await
            .expect("serves");
    }
    let report = load.stop().await;
    println!("hoist: 4 rollouts v1<->slow at 100 req/s: {report}");
    assert_eq!(report.failed, 0, "{report}");

    // Stopping the slow container waited for its 3 s shutdown instead of killing it.
    let history = f.history().await;
    let from_slow = history
        .iter()
        .find(|d| d["to_tag"] == "v1" && d["from_digest"] == f.digests["slow"].as_str())
        .expect("a rollout away from slow");
    let drain_ms = from_slow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "drain")
        .unwrap()["duration_ms"]
        .as_i64()
        .unwrap();
    assert!(
        drain_ms >= 1000 + 3000,
        "drain took {drain_ms} ms; expected drain (1 s) + the app's 3 s shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broken_image_never_reaches_traffic_and_rolls_back() {
    let (f, load) = Fixture::start_serving(Options {
        tags: vec![("v1", Variant::V1), ("broken", Variant::Broken)],
        health_timeout: "6s",
        ..Options::default()
    })
    .await;
    let before = f.project.running();

    let run = f.deploy("broken").await;
    run.assert_code(1);
    run.assert_stdout("rolled back");
    run.assert_stderr("not healthy after 6s");
    assert!(
        run.stderr.contains("500"),
        "the last probe output names the failure: {}",
        run.text()
    );

    assert_eq!(
        f.project.running(),
        before,
        "the old container is untouched"
    );
    assert_eq!(
        f.project.containers().len(),
        1,
        "the broken container was removed"
    );
    let report = load.stop().await;
    println!("hoist: broken rollout at 100 req/s: {report}");
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(
        report.versions.get("broken"),
        None,
        "the broken version never served: {report}"
    );

    let history = f.history().await;
    assert_eq!(history[0]["outcome"], "rolled_back");
    assert_eq!(history[0]["step"], "health");
    assert!(history[0]["error"].as_str().unwrap().contains("last probe"));
    // The env file still names the old image.
    let env = std::fs::read_to_string(f.project.env_file()).unwrap();
    assert!(env.contains(":v1"), "{env}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_image_healthcheck_decides_without_health_path() {
    let (f, load) = Fixture::start_serving(Options {
        health_path: false,
        health_timeout: "6s",
        ..Options::with_broken()
    })
    .await;
    f.deploy("v2").await.assert_code(0);
    load.wait_until_serving("v2", SERVE_WAIT)
        .await
        .expect("v2 serves");
    let run = f.deploy("broken").await;
    run.assert_code(1);
    run.assert_stderr("last probe");
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(f.running_image(), f.pinned("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_compose_recreate_drops_requests_for_comparison() {
    let (f, load) = Fixture::start_serving(Options::default()).await;
    // The operator's old deploy: the new image in .env, then `docker compose up -d`.
    std::fs::write(f.project.env_file(), format!("WEB_IMAGE={}:v2\n", f.repo)).unwrap();
    f.compose_up();
    load.wait_until_serving("v2", Duration::from_secs(60))
        .await
        .expect("compose brought v2 up");
    let report = load.stop().await;
    println!("docker compose up -d recreate at 100 req/s: {report}");
    assert!(
        report.failed > 0,
        "a plain compose recreate should drop requests through Traefik \
         (otherwise the zero-failure assertions prove nothing): {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn env_file_keeps_compose_on_the_deployed_digest_and_rollback_returns() {
    let f = Fixture::start(Options::default()).await;
    f.deploy("v2").await.assert_code(0);
    let env = std::fs::read_to_string(f.project.env_file()).unwrap();
    assert_eq!(env, format!("WEB_IMAGE={}\n", f.pinned("v2")));

    // An operator's `docker compose up -d` must not roll the service back to v1.
    f.compose_up();
    f.traefik
        .wait_for_servers(&f.traefik_service(SERVICE), 1, SERVE_WAIT)
        .await
        .expect("compose's container is routed");
    assert_eq!(f.running_image(), f.pinned("v2"));

    // `hoist rollback` redeploys the previous digest through the same steps.
    let run = f.hoist(&["rollback", SERVICE]).await;
    run.assert_code(0);
    assert_eq!(f.running_image(), f.pinned("v1"));
    let history = f.history().await;
    assert_eq!(history[0]["trigger"], "rollback");
    assert_eq!(history[0]["to_digest"], f.digests["v1"].as_str());
    // And the default target is the service's track (v2).
    f.hoist(&["deploy", SERVICE]).await.assert_code(0);
    assert_eq!(f.running_image(), f.pinned("v2"));
    // Deploying what already runs changes nothing.
    let run = f.hoist(&["deploy", SERVICE]).await;
    run.assert_code(0);
    run.assert_stdout("nothing to do");
    assert_eq!(f.history().await[0]["outcome"], "noop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_container_keeps_the_compose_v2_configuration() {
    new_container_keeps_the_compose_configuration(Compose::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_container_keeps_the_compose_v1_configuration() {
    new_container_keeps_the_compose_configuration(Compose::V1).await;
}

/// The new container is named and numbered the way the project's Compose names them, and
/// carries the compose file's environment, restart policy, service label and network alias.
async fn new_container_keeps_the_compose_configuration(compose: Compose) {
    let f = Fixture::start(Options {
        compose,
        ..Options::default()
    })
    .await;
    f.deploy("v2").await.assert_code(0);
    let id = f.project.running().remove(0);
    let out = crate::support::images::docker(&[
        "inspect",
        "-f",
        "{{.Name}}|{{range .Config.Env}}{{.}};{{end}}|{{.HostConfig.RestartPolicy.Name}}|{{index .Config.Labels \"com.docker.compose.service\"}}|{{range $k, $v := .NetworkSettings.Networks}}{{$k}}:{{join $v.Aliases \",\"}}{{end}}|{{index .Config.Labels \"com.docker.compose.container-number\"}}",
        &id,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let parts: Vec<&str> = text.split('|').collect();
    assert_eq!(
        (parts[0], parts[5]),
        (
            format!("/{}", compose.container_name(&f.project.name, "web", 2)).as_str(),
            "2"
        ),
        "{compose} naming, next number"
    );
    assert!(
        parts[1].contains("APP_SETTING=from-compose"),
        "compose env kept: {text}"
    );
    assert!(
        parts[1].contains("DEMO_VERSION=v2"),
        "the new image's env applies: {text}"
    );
    assert_eq!(parts[2], "unless-stopped");
    assert_eq!(parts[3], "web");
    assert!(
        parts[4].starts_with(&format!("{}:", f.project.network())) && parts[4].contains("web"),
        "network alias kept: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminal_shows_each_step_and_live_progress() {
    let f = Fixture::start(Options::default()).await;
    // `script` gives hoist a pseudo-terminal, as an operator's shell would.
    let command = format!(
        "{} --config {} deploy {SERVICE} --tag v2",
        crate::support::hoist::HOIST,
        f.config.display()
    );
    let out = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("DOCKER_CONFIG", f.config.with_file_name("docker-client"))
        .output()
        .await
        .expect("script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "{text}");
    for step in [
        "resolve", "pull", "start", "health", "switch", "drain", "record",
    ] {
        assert!(
            text.contains(&format!("✓ {step}")),
            "no finished line for {step}:\n{text}"
        );
    }
    assert!(
        text.contains("\r\u{1b}[2K"),
        "live lines are redrawn in place:\n{text}"
    );
    assert!(text.contains("healthy after"), "{text}");
    assert!(
        !text.contains(" INFO "),
        "a terminal gets the progress view, not log lines:\n{text}"
    );
    assert_eq!(f.running_image(), f.pinned("v2"));
}
