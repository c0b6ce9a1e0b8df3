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
async fn changed_traefik_labels_are_refused_with_the_diff() {
    let f = Fixture::start(Options::default()).await;
    let before = f.project.containers();
    // The operator edits a Traefik label after compose started the service: old and new
    // containers would disagree, and Traefik would drop the router for both.
    let yaml = std::fs::read_to_string(f.project.compose_file()).unwrap();
    let edited = yaml.replace("retry.attempts: \"3\"", "retry.attempts: \"5\"");
    assert_ne!(
        yaml, edited,
        "the fixture's compose file has the retry label"
    );
    f.project.write_compose(&edited);
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr("other Traefik labels");
    let key = format!(
        "traefik.http.middlewares.{}-retry.retry.attempts",
        f.traefik_service(SERVICE)
    );
    run.assert_stderr(&format!("- {key}=3"));
    run.assert_stderr(&format!("+ {key}=5"));
    assert_eq!(f.project.containers(), before, "nothing was created");
    let history = f.history().await;
    assert_eq!(history[0]["outcome"], "failed");
    assert_eq!(history[0]["step"], "resolve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_anonymous_volume_is_refused_naming_it_and_the_fix() {
    let f = Fixture::start(Options {
        // Beside the drain mount, the last entry of the fragment's `volumes:`.
        edit_fragment: |f| format!("{f}  - /var/lib/app-data\n"),
        ..Options::default()
    })
    .await;
    let before = f.project.containers();
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr("anonymous volumes: /var/lib/app-data (volume ");
    run.assert_stderr("Name each volume in the compose file");
    run.assert_stderr("fresh_anonymous_volumes");
    assert_eq!(f.project.containers(), before, "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_anonymous_volumes_opt_in_leaves_no_orphan() {
    let f = Fixture::start(Options {
        edit_fragment: |f| format!("{f}  - /var/lib/app-data\n"),
        service_extra: "fresh_anonymous_volumes = true\n",
        ..Options::default()
    })
    .await;
    let volume_of = |id: &str| {
        let out = crate::support::images::docker(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{if eq .Destination \"/var/lib/app-data\"}}{{.Name}}{{end}}{{end}}",
            id,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let old = volume_of(&f.project.running()[0]);
    assert_eq!(old.len(), 64, "an anonymous volume: {old:?}");
    f.deploy("v2").await.assert_code(0);
    let new = volume_of(&f.project.running()[0]);
    assert_eq!(new.len(), 64, "the new container has a fresh one: {new:?}");
    assert_ne!(new, old);
    let gone = crate::support::images::docker(&["volume", "inspect", &old]);
    assert!(
        !gone.status.success(),
        "the old container's anonymous volume went with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fixed_mac_address_is_refused() {
    let f = Fixture::start(Options {
        compose_extra: "    mac_address: \"02:42:ac:11:00:99\"\n",
        ..Options::default()
    })
    .await;
    let before = f.project.containers();
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr("fixed MAC address (02:42:ac:11:00:99");
    assert_eq!(f.project.containers(), before, "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_or_moved_compose_project_is_refused_quoting_compose() {
    let f = Fixture::start(Options::default()).await;
    let before = f.project.containers();
    let file = f.project.compose_file();
    let yaml = std::fs::read_to_string(&file).unwrap();

    // A variable the compose file uses that nobody sets: compose's own warning, quoted.
    f.project.write_compose(&yaml.replace(
        "APP_SETTING: from-compose",
        "APP_SETTING: ${HOIST_TEST_UNSET_VARIABLE}",
    ));
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr("The \"HOIST_TEST_UNSET_VARIABLE\" variable is not set");

    // A file that no longer parses.
    f.project
        .write_compose(&format!("{yaml}\n  this is: [not yaml\n"));
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr("config --hash web` failed");

    // A project whose file moved.
    std::fs::rename(&file, file.with_extension("moved")).unwrap();
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr(&format!("{} does not exist (moved?)", file.display()));
    std::fs::rename(file.with_extension("moved"), &file).unwrap();
    f.project.write_compose(&yaml);

    // No compose CLI at all.
    let text = std::fs::read_to_string(&f.config).unwrap();
    let broken = text.replacen(
        "[compose]\ncommand = [",
        "[compose]\ncommand = [\"/nonexistent/compose\", ",
        1,
    );
    let missing = f.config.with_file_name("no-compose.toml");
    std::fs::write(&missing, broken).unwrap();
    let run =
        crate::support::hoist::hoist(&missing, &["deploy", SERVICE, "--tag", "v2"], &[]).await;
    run.assert_code(1);
    run.assert_stderr("no Docker Compose CLI found");

    assert_eq!(
        f.project.containers(),
        before,
        "nothing was created or stopped"
    );
    for entry in f.history().await {
        assert_eq!(entry["outcome"], "failed", "{entry:#}");
        assert_eq!(entry["step"], "resolve", "{entry:#}");
    }
    // And with the project back in order, the rollout works.
    f.deploy("v2").await.assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compose_v1_project_rolled_by_v2_is_refused() {
    use crate::support::project::Compose;
    let f = Fixture::start(Options {
        compose: Compose::V1,
        ..Options::default()
    })
    .await;
    let before = f.project.containers();
    // hoist.toml names compose v2 for a project docker-compose v1 created.
    let text = std::fs::read_to_string(&f.config).unwrap();
    let v2 = format!("{:?}", Compose::V2.program()[0]);
    let text = text.replace(
        "command = [\"docker-compose\"]",
        &format!("command = [{v2}]"),
    );
    std::fs::write(&f.config, text).unwrap();
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr("was created by compose 1.29.2 but hoist would use");
    run.assert_stderr("different config hashes");
    assert_eq!(f.project.containers(), before, "nothing was created");
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
async fn a_compose_change_that_cannot_run_twice_is_refused() {
    let f = Fixture::start(Options::default()).await;
    let before = f.project.containers();
    let yaml = std::fs::read_to_string(f.project.compose_file()).unwrap();
    let name = format!("{}-fixed", f.project.name);
    f.project.write_compose(&yaml.replace(
        "    restart: unless-stopped\n",
        &format!("    restart: unless-stopped\n    container_name: {name}\n"),
    ));
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stderr(&format!(
        "the compose file now gives the service a container_name ({name})"
    ));
    assert_eq!(f.project.containers(), before, "nothing was created");
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
    let f = Fixture::start(Options::with_broken()).await;
    f.deploy("broken").await.assert_code(1);
    let deploy_id = f.history().await[0]["id"].as_i64().unwrap();
    // What a rollback whose cleanup failed (the engine went away) leaves behind: the new
    // container compose created, still running, and its id in the journal entry.
    let out = f
        .project
        .compose_command(&[
            "up",
            "-d",
            "--no-deps",
            "--no-recreate",
            "--scale",
            "web=2",
            "web",
        ])
        .env("WEB_IMAGE", f.pinned("broken"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let before: Vec<String> = f.project.running();
    assert_eq!(before.len(), 2);
    let leftover = before
        .iter()
        .find(|id| {
            let out = crate::support::images::docker(&["inspect", "-f", "{{.Config.Image}}", id]);
            String::from_utf8_lossy(&out.stdout).trim() == f.pinned("broken")
        })
        .unwrap()
        .clone();
    let db = rusqlite::Connection::open(f.state.path().join("state/hoist.db")).unwrap();
    db.execute(
        "UPDATE deploys SET new_container = ?1 WHERE id = ?2",
        (&leftover, deploy_id),
    )
    .unwrap();
    drop(db);
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
