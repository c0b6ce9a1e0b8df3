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

/// `docker events` followed live (the engine replays only its last 256 events, too few
/// while other tests' health probes run), one formatted line per event.
struct Events(std::process::Child);

impl Events {
    fn follow(filters: &[String], format: &str) -> Events {
        let mut command = std::process::Command::new("docker");
        command.arg("events");
        for f in filters {
            command.args(["--filter", f]);
        }
        let child = command
            .args(["--format", format])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("docker events");
        // Give the stream a moment to be subscribed before the events it must see.
        std::thread::sleep(Duration::from_millis(500));
        Events(child)
    }

    fn stop(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.0.kill();
        let out = self.0.wait_with_output().expect("docker events output");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
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
        let events = Events::follow(
            &[format!("container={old}"), "event=kill".into()],
            "{{.Actor.Attributes.signal}}",
        );
        f.deploy("v2").await.assert_code(0);
        let signals = events.stop();
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
        .wait_for_servers(&f.traefik_service(SERVICE), 3, SERVE_WAIT)
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
    let drift = "web: the compose definition changed since its containers were created";
    f.hoist(&["status"])
        .await
        .assert_code(0)
        .assert_stdout(drift);
    let before = f.project.running();
    let run = f.deploy("v1").await;
    run.assert_code(0);
    run.assert_stderr("the compose definition changed");
    let status = f.hoist(&["status"]).await;
    assert!(!status.stdout.contains(drift), "{}", status.text());
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

/// What the issue's audit compared field by field: `docker inspect` reduced to what must
/// be equal between two containers of one definition (names, ids, numbers and addresses
/// left out).
fn comparable(id: &str) -> serde_json::Value {
    let out = docker(&["inspect", id]);
    assert!(out.status.success(), "docker inspect {id}: {out:?}");
    let mut all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = all[0].take();
    let name = c["Name"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    let full_id = c["Id"].as_str().unwrap().to_string();
    let mut config = c["Config"].clone();
    config["Hostname"] = serde_json::Value::Null;
    // Compose writes lists it builds from maps (environment, volumes) in Go's random map
    // order: same config hash, other order. Lists whose order matters (Cmd, Entrypoint)
    // are compared as they are.
    let by_text = |v: &serde_json::Value| v.to_string();
    if let Some(env) = config["Env"].as_array_mut() {
        env.sort_by_key(by_text);
    }
    let mut host = c["HostConfig"].clone();
    for list in [
        "Binds",
        "Mounts",
        "SecurityOpt",
        "ExtraHosts",
        "CapAdd",
        "CapDrop",
    ] {
        if let Some(items) = host[list].as_array_mut() {
            items.sort_by_key(by_text);
        }
    }
    let labels = config["Labels"].as_object_mut().unwrap();
    labels.remove("com.docker.compose.container-number");
    // Set by a recreate: the name of the container it replaced.
    labels.remove("com.docker.compose.replace");
    let mut mounts: Vec<serde_json::Value> = c["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            serde_json::json!({
                "Type": m["Type"], "Name": m["Name"], "Source": m["Source"],
                "Destination": m["Destination"], "RW": m["RW"], "Mode": m["Mode"],
            })
        })
        .collect();
    mounts.sort_by_key(|m| m["Destination"].as_str().unwrap_or_default().to_string());
    let networks: serde_json::Map<String, serde_json::Value> = c["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(net, e)| {
            let mut aliases: Vec<String> = e["Aliases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
                .filter(|a| *a != name && !full_id.starts_with(a))
                .map(str::to_string)
                .collect();
            aliases.sort();
            (
                net.clone(),
                serde_json::json!({"Aliases": aliases, "IPAMConfig": e["IPAMConfig"], "Links": e["Links"], "DriverOpts": e["DriverOpts"]}),
            )
        })
        .collect();
    serde_json::json!({
        "Config": config,
        "HostConfig": host,
        "Mounts": mounts,
        "Networks": networks,
    })
}

/// A file inside a container, read with `docker cp` (the images have no shell or cat).
fn file_in(id: &str, path: &str) -> String {
    let out = docker(&["cp", &format!("{id}:{path}"), "-"]);
    assert!(out.status.success(), "docker cp {id}:{path}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const SECRET: &str = "fidelity-secret-from-the-environment";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployed_container_is_what_compose_force_recreate_creates() {
    let f = Fixture::start(Options {
        edit_fragment: |f| f.replace("retries: 1", "retries: 2"),
        ..Options::default()
    })
    .await;
    let dir = f.project.path();
    std::fs::write(dir.join("file-secret.txt"), "fidelity-secret-from-a-file").unwrap();
    std::fs::write(dir.join("file-config.txt"), "fidelity-config-from-a-file").unwrap();
    let yaml = std::fs::read_to_string(f.project.compose_file()).unwrap();
    let service = r#"    environment:
      APP_SETTING: from-compose
      DEMO_VERSION: v1
    entrypoint: ["/demo"]
    command: ["serve"]
    working_dir: /
    stop_grace_period: 7s
    security_opt: ["no-new-privileges:true"]
    tmpfs: ["/scratch"]
    post_start:
      - command: ["/hoist/hoist", "--version"]
    secrets: [file_secret, env_secret]
    configs: [file_config, env_config, content_config]
    networks:
      web:
        aliases: [web-alias]
      back:
        aliases: [back-alias]
"#;
    let yaml = yaml.replace(
        "    environment:\n      APP_SETTING: from-compose\n    networks:\n      - web\n",
        service,
    );
    let yaml = yaml.replace("      - \"", "      - data:/data\n      - \"");
    let yaml = format!(
        "{yaml}  back: {{}}\nvolumes:\n  data: {{}}\nsecrets:\n  file_secret:\n    file: ./file-secret.txt\n  env_secret:\n    environment: FIDELITY_SECRET\nconfigs:\n  file_config:\n    file: ./file-config.txt\n  env_config:\n    environment: FIDELITY_SECRET\n  content_config:\n    content: fidelity-config-inline\n"
    );
    f.project.write_compose(&yaml);
    let up = |args: &[&str]| {
        let out = f
            .project
            .compose_command(args)
            .env("FIDELITY_SECRET", SECRET)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    up(&["up", "-d"]);
    f.traefik
        .wait_for_servers(&f.traefik_service(SERVICE), 1, SERVE_WAIT)
        .await
        .expect("the full definition serves");

    let events = Events::follow(
        &[
            format!("label=com.docker.compose.project={}", f.project.name),
            "event=exec_create".into(),
        ],
        "{{.Actor.Attributes.name}} {{.Action}}",
    );
    f.hoist_env(
        &["deploy", SERVICE, "--tag", "v2"],
        &[("FIDELITY_SECRET", SECRET)],
    )
    .await
    .assert_code(0);
    let by_hoist = f.project.running().remove(0);
    let hoisted = comparable(&by_hoist);

    // Inside: the secrets and configs compose copies in, and the hook compose runs.
    let check_inside = |id: &str| {
        assert!(file_in(id, "/run/secrets/env_secret").contains(SECRET));
        assert!(file_in(id, "/run/secrets/file_secret").contains("from-a-file"));
        assert!(file_in(id, "/env_config").contains(SECRET));
        assert!(file_in(id, "/content_config").contains("fidelity-config-inline"));
        assert!(file_in(id, "/file_config").contains("from-a-file"));
    };
    check_inside(&by_hoist);
    let name = inspect(&by_hoist, "{{.Name}}");
    let hook = format!(
        "{} exec_create: /hoist/hoist --version",
        name.trim_start_matches('/')
    );
    let execs = events.stop();
    assert!(
        execs.contains(&hook),
        "the post_start hook ran in the new container ({hook:?}): {execs:?}"
    );

    // What compose itself creates for the same image.
    up(&["up", "-d", "--force-recreate"]);
    let by_compose = f.project.running().remove(0);
    assert_ne!(by_compose, by_hoist, "compose recreated it");
    check_inside(&by_compose);
    let recreated = comparable(&by_compose);
    for part in ["Config", "HostConfig", "Mounts", "Networks"] {
        assert_eq!(
            hoisted[part], recreated[part],
            "{part} differs between hoist's container and compose's --force-recreate"
        );
    }
    println!(
        "fidelity: Config, HostConfig, Mounts and Networks equal (apart from names, ids, numbers); \
         secrets, configs and the post_start hook present"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compose_failure_at_start_reports_compose_and_removes_what_it_created() {
    let f = Fixture::start(Options::default()).await;
    let before = f.project.containers();
    // compose accepts the definition (config --hash), but the engine refuses to start it.
    let yaml = std::fs::read_to_string(f.project.compose_file()).unwrap();
    let yaml = yaml.replace(
        "    restart: unless-stopped\n",
        "    restart: unless-stopped\n    secrets: [missing]\n",
    );
    f.project.write_compose(&format!(
        "{yaml}secrets:\n  missing:\n    file: ./missing-secret.txt\n"
    ));
    let run = f.deploy("v2").await;
    run.assert_code(1);
    run.assert_stdout("rolled back");
    run.assert_stderr("compose said:");
    run.assert_stderr("missing-secret.txt");
    assert_eq!(
        f.project.containers(),
        before,
        "what compose created is gone, the old container untouched"
    );
    let entry = &f.history().await[0];
    assert_eq!(entry["step"], "start", "{entry:#}");
    assert!(
        entry["error"]
            .as_str()
            .unwrap()
            .contains("missing-secret.txt"),
        "compose's words are in the journal: {entry:#}"
    );
}
