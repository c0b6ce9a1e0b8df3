//! Rollouts hoist refuses, and failures it reports clearly without touching what runs.

use std::time::{Duration, Instant};

use crate::support::hoist::{Fixture, Options, SERVICE};

fn fixed_port_yaml() -> &'static str {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Box::leak(format!("    ports:\n      - \"127.0.0.1:{port}:8000\"\n").into_boxed_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn different_traefik_labels_are_refused_with_the_diff() {
    let f = Fixture::start(Options {
        edit_fragment: |f| f.replace("retry.attempts: \"3\"", "retry.attempts: \"5\""),
        ..Options::default()
    })
    .await;
    let before = f.project.running();
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr("different Traefik labels");
    assert!(
        run.stderr
            .contains("- traefik.http.middlewares.web-retry.retry.attempts=5"),
        "{}",
        run.text()
    );
    assert!(
        run.stderr
            .contains("+ traefik.http.middlewares.web-retry.retry.attempts=3"),
        "{}",
        run.text()
    );
    assert_eq!(f.project.containers(), before, "nothing was created");
    assert_eq!(f.history().await[0]["outcome"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_without_the_drain_cord_is_refused() {
    let f = Fixture::start(Options {
        edit_fragment: |f| f.split("healthcheck:").next().unwrap().to_string(),
        ..Options::default()
    })
    .await;
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr("lacks hoist's drain healthcheck");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn container_name_and_fixed_ports_are_refused() {
    for (extra, expect) in [
        ("    container_name: hoist-fixed-NAME\n", "fixed name"),
        (fixed_port_yaml(), "fixed host ports"),
    ] {
        let extra: &'static str = Box::leak(
            extra
                .replace("NAME", &std::process::id().to_string())
                .into_boxed_str(),
        );
        let f = Fixture::start(Options {
            compose_extra: extra,
            ..Options::default()
        })
        .await;
        let before = f.project.containers();
        let run = f.deploy("v2").await;
        run.assert_code(1);
        run.assert_stderr("cannot run a second container");
        run.assert_stderr(expect);
        assert_eq!(f.project.containers(), before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_running_container_says_to_run_compose_first() {
    let f = Fixture::start(Options::default()).await;
    f.project.compose_ok(&["stop"]);
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr("run `docker compose up -d` first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_outage_and_missing_tag_touch_nothing() {
    let mut f = Fixture::start(Options::default()).await;
    let before = f.project.containers();

    let run = f.deploy("nope").await;
    run.assert_code(1);
    run.assert_stderr("nope not found in");

    f.registry.stop();
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr("cannot reach registry");
    assert_eq!(f.project.containers(), before);

    // A rollback to a digest this machine has needs no registry.
    f.registry.restart().await;
    f.deploy("v2").await.assert_code(0);
    f.registry.stop();
    let run = f.hoist(&["rollback", SERVICE]).await;
    run.assert_code(0);
    assert_eq!(f.running_image(), f.pinned("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_rollout_of_the_same_service_says_who_holds_it() {
    let f = Fixture::start(Options {
        drain: "3s",
        ..Options::default()
    })
    .await;
    let config = f.config.clone();
    let first = tokio::spawn(async move {
        crate::support::hoist::hoist(&config, &["deploy", SERVICE, "--tag", "v2"], &[]).await
    });
    // Wait until the first rollout is journaled as running, then try a second one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history = f.history().await;
        if history.first().is_some_and(|d| d["outcome"] == "running") {
            break;
        }
        assert!(Instant::now() < deadline, "the first rollout never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = f.deploy("v1").await;
    second.assert_code(1);
    assert!(
        second
            .stderr
            .contains("web is busy: hoist manual of web (cli) (pid"),
        "{}",
        second.text()
    );
    first.await.unwrap().assert_code(0);
    assert_eq!(f.running_image(), f.pinned("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_left_by_a_failed_cleanup_is_withdrawn_before_the_next_rollout() {
    use crate::support::images::{self, Variant};
    let f = Fixture::start(Options::with_broken()).await;
    f.deploy("broken").await.assert_code(1);
    let deploy_id = f.history().await[0]["id"].as_i64().unwrap().to_string();
    // What a rollback whose cleanup failed (the engine went away) leaves behind: its new
    // container, still running.
    let image = images::local_tag(images::build().await, Variant::Broken);
    let out = images::docker(&[
        "run",
        "-d",
        "--name",
        &f.project.compose.container_name(&f.project.name, "web", 9),
        "--network",
        &f.project.network(),
        "--label",
        &format!("com.docker.compose.project={}", f.project.name),
        "--label",
        "com.docker.compose.service=web",
        "--label",
        "com.docker.compose.oneoff=False",
        "--label",
        &format!("dev.hoist.deploy={deploy_id}"),
        &image,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(f.project.running().len(), 2);
    f.deploy("v2").await.assert_code(0);
    assert_eq!(
        f.project.containers().len(),
        1,
        "the leftover was withdrawn"
    );
    assert_eq!(f.running_image(), f.pinned("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_env_file_that_is_not_one_is_refused_before_anything_changes() {
    let f = Fixture::start(Options::default()).await;
    let env = f.project.env_file();
    let mut text = std::fs::read_to_string(&env).unwrap_or_default();
    text.push_str("root:x:0:0:root:/root:/bin/bash\n");
    std::fs::write(&env, &text).unwrap();
    let before = f.project.running();
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr(&env.display().to_string());
    run.assert_stderr("is not NAME=value");
    assert_eq!(
        f.project.running(),
        before,
        "nothing was started or stopped"
    );
    assert_eq!(std::fs::read_to_string(&env).unwrap(), text);
    let history = f.history().await;
    assert_eq!(history[0]["outcome"], "failed");
    assert_eq!(history[0]["step"], "resolve", "{history:?}");
}
