//! A rollout is what the project's own compose would run: compose creates the new
//! containers, a later `docker compose up -d` (v2 and v1) changes nothing, the old
//! containers stop with their own signal and grace, and services at scale N roll all N.

use std::time::Duration;

use crate::support::hoist::{Fixture, Options, SERVICE};
use crate::support::images::{Variant, docker};
use crate::support::project::Compose;

const SERVE_WAIT: Duration = Duration::from_secs(30);

fn inspect(id: &str, format: &str) -> String {
    let out = docker(&["inspect", "-f", format, id]);
    assert!(out.status.success(), "docker inspect {id}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compose_v2_up_after_a_deploy_keeps_the_container() {
    compose_up_after_a_deploy_keeps_the_container(Compose::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compose_v1_up_after_a_deploy_keeps_the_container() {
    compose_up_after_a_deploy_keeps_the_container(Compose::V1).await;
}

/// After `hoist deploy`, the operator's `docker compose up -d` finds the service as it
/// should be: same container id, not restarted, nothing recreated.
async fn compose_up_after_a_deploy_keeps_the_container(compose: Compose) {
    let f = Fixture::start(Options {
        compose,
        ..Options::default()
    })
    .await;
    f.deploy("v2").await.assert_code(0);
    let before = f.project.running();
    assert_eq!(before.len(), 1);
    let started = inspect(&before[0], "{{.State.StartedAt}} {{.RestartCount}}");

    let out = f.project.compose_ok(&["up", "-d"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{compose} up -d after a hoist deploy said:\n{said}");
    assert_eq!(
        f.project.running(),
        before,
        "{compose} kept the container: {said}"
    );
    assert_eq!(
        inspect(&before[0], "{{.State.StartedAt}} {{.RestartCount}}"),
        started,
        "{compose} did not restart it"
    );
    let expected = match compose {
        Compose::V2 => "Running",
        Compose::V1 => "is up-to-date",
    };
    assert!(said.contains(expected), "{compose} said: {said}");
    assert!(!said.contains("Recreat"), "{compose} recreated: {said}");
    assert_eq!(f.running_image(), f.pinned("v2"));
}

/// `docker events` kill signals sent to a container since `since` (a Unix time).
fn kill_signals(id: &str, since: u64) -> Vec<String> {
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let out = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        &format!("container={id}"),
        "--filter",
        "event=kill",
        "--format",
        "{{.Actor.Attributes.signal}}",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_containers_stop_with_their_own_signal_and_grace_unless_overridden() {
    // The slow app needs 3 s after its stop signal; compose gives it SIGINT and 1 s.
    for (stop_timeout, expected) in [("", ["2", "9"].as_slice()), ("10s", ["2"].as_slice())] {
        let f = Fixture::start(Options {
            tags: vec![("slow", Variant::Slow), ("v2", Variant::V2)],
            initial: "slow",
            stop_timeout,
            compose_extra: "    stop_signal: SIGINT\n    stop_grace_period: 1s\n",
            ..Options::default()
        })
        .await;
        let old = f.project.running().remove(0);
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 1;
        f.deploy("v2").await.assert_code(0);
        let signals = kill_signals(&old, since);
        assert_eq!(
            signals, expected,
            "stop_timeout {stop_timeout:?}: SIGINT (2), then SIGKILL (9) only after the 1 s grace"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_roll_under_load_without_a_failed_request() {
    let (f, load) = Fixture::start_serving(Options {
        replicas: 3,
        ..Options::default()
    })
    .await;
    let old = f.project.running();
    assert_eq!(old.len(), 3);
    f.deploy("v2").await.assert_code(0);
    let new = f.project.running();
    assert_eq!(new.len(), 3, "three new containers: {new:?}");
    assert!(new.iter().all(|id| !old.contains(id)), "all old ones gone");
    for id in &new {
        assert_eq!(inspect(id, "{{.Config.Image}}"), f.pinned("v2"));
    }
    f.traefik
        .wait_for_servers(SERVICE, 3, SERVE_WAIT)
        .await
        .expect("Traefik routes to the three new containers");
    load.wait_until_serving("v2", SERVE_WAIT)
        .await
        .expect("v2 serves");
    let report = load.stop().await;
    println!("hoist: v1 -> v2 at scale 3, 100 req/s: {report}");
    assert_eq!(report.failed, 0, "{report}");
    // And compose agrees that the service is as defined.
    f.project.compose_ok(&["up", "-d"]);
    assert_eq!(f.project.running(), new, "compose up -d kept all three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_image_at_scale_3_leaves_the_3_old_serving() {
    let (f, load) = Fixture::start_serving(Options {
        replicas: 3,
        health_timeout: "6s",
        ..Options::with_broken()
    })
    .await;
    let mut old = f.project.running();
    old.sort();
    let run = f.deploy("broken").await;
    run.assert_code(1);
    run.assert_stdout("rolled back");
    let mut after = f.project.containers();
    after.sort();
    assert_eq!(
        after, old,
        "all new containers removed, the old three untouched"
    );
    let report = load.stop().await;
    println!("hoist: broken image at scale 3, 100 req/s: {report}");
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(report.versions.get("broken"), None, "{report}");
    assert_eq!(f.history().await[0]["outcome"], "rolled_back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compose_only_change_deploys_at_the_same_digest_under_load() {
    let (f, load) = Fixture::start_serving(Options::default()).await;
    f.deploy("v1").await.assert_code(0);
    let run = f.deploy("v1").await;
    run.assert_code(0);
    run.assert_stdout("nothing to do");

    // An environment change in the compose file, same image.
    let yaml = std::fs::read_to_string(f.project.compose_file()).unwrap();
    f.project
        .write_compose(&yaml.replace("APP_SETTING: from-compose", "APP_SETTING: changed"));
    let before = f.project.running();
    let run = f.deploy("v1").await;
    run.assert_code(0);
    run.assert_stderr("the compose definition changed");
    let after = f.project.running();
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a new container runs the changed definition");
    assert!(
        inspect(&after[0], "{{range .Config.Env}}{{.}};{{end}}").contains("APP_SETTING=changed"),
        "the change is deployed"
    );
    assert_eq!(f.running_image(), f.pinned("v1"));
    load.wait_until_serving("v1", SERVE_WAIT)
        .await
        .expect("v1 serves");
    let report = load.stop().await;
    println!("hoist: compose-only change at 100 req/s: {report}");
    assert_eq!(report.failed, 0, "{report}");

    // compose agrees: nothing to recreate, and hoist has nothing left to do.
    let out = f.project.compose_ok(&["up", "-d"]);
    assert_eq!(
        f.project.running(),
        after,
        "compose up -d kept it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.deploy("v1").await.assert_stdout("nothing to do");
}
