//! The command line without a running stack: config validation and the compose fragment.

use crate::support::hoist::{HOIST, hoist};
use crate::support::project::{Compose, Project};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn bad_config_is_reported_all_at_once_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        &dir,
        "hoist.toml",
        r#"
[state]
dir = "relative/path"
[traefik]
throttle = "soon"
[[registries]]
host = "ghcr.io"
username = "bot"
password_file = "/nonexistent/secret"
[[services]]
name = "web"
environment = "stage"
compose_project = "shop"
image = "ghcr.io/acme/web:latest"
track = "main"
host = "example.com"
port = 0
colour = "red"
[[services]]
name = "web"
environment = "prod"
compose_project = "shop"
compose_service = "web-prod"
image = "ghcr.io/acme/web"
track = "semver:not-a-version"
host = "www.example.com"
port = 8000
"#,
    );
    for args in [
        &["check-config"][..],
        &["deploy", "web"][..],
        &["history"][..],
    ] {
        let run = hoist(&config, args, &[]).await;
        run.assert_code(2);
        for expect in [
            "state.dir: `relative/path` must be an absolute path",
            "traefik.throttle: `soon` is not a duration",
            "registries[0].password_file: cannot read `/nonexistent/secret`",
            "services[0].image: `ghcr.io/acme/web:latest` names a tag or digest",
            "services[0].port: 0 is not a valid port",
            "services[0].colour: unknown key",
            "services[1].name: `web` is used by another service",
            "services[1].track: `not-a-version` is not a semver requirement",
        ] {
            assert!(
                run.stderr.contains(expect),
                "missing {expect:?} for {args:?}:\n{}",
                run.text()
            );
        }
    }
}

#[tokio::test]
async fn unreadable_config_and_unknown_service_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let run = hoist(&missing, &["check-config"], &[]).await;
    run.assert_code(2);
    run.assert_stderr("cannot read config file");

    let config = write(&dir, "hoist.toml", &example_config(dir.path()));
    hoist(&config, &["check-config"], &[]).await.assert_code(0);
    let run = hoist(&config, &["deploy", "nope"], &[]).await;
    run.assert_code(2);
    run.assert_stderr("no service named `nope`");
    let run = hoist(&config, &["deploy"], &[]).await;
    run.assert_code(2);
}

#[tokio::test]
async fn shipped_example_config_passes_check_config() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hoist.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    // The example points at /var/lib/hoist and credential files of a real server; check
    // its structure with those swapped for test paths.
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "ghcr", "token\n");
    for credential in ["webhook-secret", "admin-token", "github-token"] {
        write(&dir, credential, "a-credential\n");
    }
    let text = text
        .replace(
            "/run/credentials/hoist.service",
            &dir.path().display().to_string(),
        )
        .replace(
            "/var/lib/hoist",
            &dir.path().join("state").display().to_string(),
        );
    let config = write(&dir, "hoist.toml", &text);
    let run = hoist(&config, &["check-config"], &[]).await;
    run.assert_code(0);
    run.assert_stdout("web-stage, web-prod");
}

#[tokio::test]
async fn labels_fragment_is_valid_compose_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(&dir, "hoist.toml", &example_config(dir.path()));
    let run = hoist(&config, &["labels", "web"], &[]).await;
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("traefik.http.routers.web.rule: \"Host(`web.example.com`)\""),
        "{}",
        run.text()
    );
    assert!(
        run.stdout
            .contains("\"/hoist/hoist\", \"probe\", \"--http\", \"8000/healthz\""),
        "{}",
        run.text()
    );
    // The probe binary is in place for compose to mount.
    assert!(dir.path().join("state/drain/hoist").is_file());

    // Both Compose versions in the field take it as it is.
    for compose in [Compose::V2, Compose::V1] {
        let project = Project::with("cfg", compose);
        let fragment = crate::support::hoist::indent(&run.stdout, 4);
        project.write_compose(&format!(
            "services:\n  web:\n    image: example/web:1\n{fragment}"
        ));
        let out = project.compose_ok(&["config"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().any(|l| l
                .trim()
                .strip_prefix("traefik.http.services.web.loadbalancer.server.port:")
                .is_some_and(|v| v.trim().trim_matches(['\'', '"']) == "8000")),
            "{compose}: {text}"
        );
        assert!(text.contains("start_period: 20s"), "{compose}: {text}");
    }
}

#[test]
fn probe_answers_before_any_setup() {
    // `hoist probe` runs in containers without config or Docker; outside a container with
    // no arguments it reports healthy.
    let out = std::process::Command::new(HOIST)
        .arg("probe")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = std::process::Command::new(HOIST)
        .args(["probe", "--http", "1/healthz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("GET http://127.0.0.1:1/healthz"));
}

fn example_config(dir: &std::path::Path) -> String {
    format!(
        r#"[state]
dir = "{}/state"
[traefik]
network = "web"
[[services]]
name = "web"
environment = "stage"
compose_project = "shop"
image = "ghcr.io/acme/web"
track = "main"
host = "web.example.com"
port = 8000
health_path = "/healthz"
health_timeout = "20s"
"#,
        dir.display()
    )
}
