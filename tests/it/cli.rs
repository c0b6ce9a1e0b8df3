//! The command line without a running stack: config validation, secrets and the unit's
//! credentials, and the compose fragment.

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
        match args[0] {
            // Reads the secret, which cannot be read: a problem like the others.
            "deploy" => {
                run.assert_stderr(
                    "registries[0].password_file: cannot read `/nonexistent/secret`: No such file",
                );
            }
            // Checks it apart from the problems, and says so.
            "check-config" => {
                run.assert_stdout(
                    "✗ registries[0].password_file: /nonexistent/secret: not readable here: No such file",
                );
                run.assert_stderr("error: 1 secret(s) or credential(s) unreadable or empty");
            }
            // Needs no secret.
            _ => assert!(
                !run.text().contains("/nonexistent/secret"),
                "{}",
                run.text()
            ),
        }
        for expect in [
            "state.dir: `relative/path` must be an absolute path",
            "traefik.throttle: `soon` is not a duration",
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
async fn shipped_config_and_unit_pass_check_config_before_the_unit_runs() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    // The README's install steps with the shipped files as they are, but for the state
    // directory and the unit's credential sources (/etc/hoist/credentials), which are
    // test paths here. The config's secrets stay in /run/credentials/hoist.service/, which
    // does not exist: the unit is not running.
    let config = std::fs::read_to_string(repo.join("config/hoist.toml"))
        .unwrap()
        .replace(
            "/var/lib/hoist",
            &dir.path().join("state").display().to_string(),
        );
    assert!(config.contains("\"/run/credentials/hoist.service/webhook-secret\""));
    let config = write(&dir, "hoist.toml", &config);
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let unit = std::fs::read_to_string(repo.join("systemd/hoist.service"))
        .unwrap()
        .replace("/etc/hoist/credentials", &credentials.display().to_string());
    let unit = write(&dir, "hoist.service", &unit);
    let unit_arg = unit.display().to_string();

    let run = hoist(&config, &["labels", "web-stage"], &[]).await;
    run.assert_code(0);
    run.assert_stdout("traefik.http.routers.shop-web-stage.rule");

    // README step 5: the secrets, in the unit's credential sources.
    for credential in ["ghcr", "webhook-secret", "admin-token"] {
        std::fs::write(credentials.join(credential), "a-credential\n").unwrap();
    }
    let run = hoist(&config, &["check-config", "--unit", &unit_arg], &[]).await;
    run.assert_code(2);
    run.assert_stdout("config OK: 2 service(s): web-stage, web-prod");
    run.assert_stdout(&format!(
        "✗ github.token_file: /run/credentials/hoist.service/github-token is the unit's credential `github-token`, loaded from {}/github-token: not readable here: No such file or directory (os error 2)\n",
        credentials.display()
    ));
    run.assert_stderr(
        "error: 1 secret(s) or credential(s) unreadable or empty (✗ above); the config itself is valid",
    );

    std::fs::write(credentials.join("github-token"), "a-credential\n").unwrap();
    let run = hoist(&config, &["check-config", "--unit", &unit_arg], &[]).await;
    run.assert_code(0);
    run.assert_stdout(&format!("secrets, with the credentials {unit_arg} loads:"));
    for (key, id) in [
        ("server.admin_token_file", "admin-token"),
        ("github.webhook_secret_file", "webhook-secret"),
        ("github.token_file", "github-token"),
        ("registries[0].password_file", "ghcr"),
    ] {
        run.assert_stdout(&format!(
            "✓ {key}: /run/credentials/hoist.service/{id} is the unit's credential `{id}`, loaded from {}/{id}: readable\n",
            credentials.display()
        ));
    }
    assert!(!run.text().contains("a-credential"), "{}", run.text());
}

#[tokio::test]
async fn commands_that_need_no_secret_work_where_the_secrets_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    // A unit of its own name, so that its credentials directory surely does not exist.
    let name = format!("hoist-it-{}.service", std::process::id());
    let run_dir = format!("/run/credentials/{name}");
    let config = write(
        &dir,
        "hoist.toml",
        &format!(
            "{}[server]\nlisten = \"127.0.0.1:1\"\nadmin_token_file = \"{run_dir}/admin-token\"\n\
             [github]\nwebhook_secret_file = \"{run_dir}/webhook-secret\"\n\
             [[registries]]\nhost = \"ghcr.io\"\nusername = \"bot\"\npassword_file = \"{run_dir}/ghcr\"\n",
            example_config(dir.path())
        ),
    );

    let run = hoist(&config, &["labels", "web"], &[]).await;
    run.assert_code(0);
    run.assert_stdout("traefik.http.routers.shop-web.rule: \"Host(`web.example.com`)\"");
    let run = hoist(&config, &["history"], &[]).await;
    run.assert_code(0);
    run.assert_stdout("no rollouts recorded yet");
    // A command that uses them still reads them first.
    let run = hoist(&config, &["deploy", "web"], &[]).await;
    run.assert_code(2);
    run.assert_stderr(&format!(
        "server.admin_token_file: cannot read `{run_dir}/admin-token`: No such file or directory"
    ));

    // Each unreadable secret named with its key, its file and the OS error; with a unit
    // that loads them, their sources are what counts.
    let sources = dir.path().join("credentials");
    std::fs::create_dir(&sources).unwrap();
    std::fs::write(sources.join("webhook-secret"), "w3bh00k\n").unwrap();
    let unit = write(
        &dir,
        &name,
        &format!(
            "[Unit]\nDescription=test\n[Service]\nExecStart=/usr/local/bin/hoist serve\n\
             LoadCredential=webhook-secret:{0}/webhook-secret\nLoadCredential=admin-token:{0}/admin-token\n",
            sources.display()
        ),
    );
    let unit_arg = unit.display().to_string();
    let run = hoist(&config, &["check-config", "--unit", &unit_arg], &[]).await;
    run.assert_code(2);
    run.assert_stdout("config OK: 1 service(s): web");
    run.assert_stdout(&format!(
        "✓ github.webhook_secret_file: {run_dir}/webhook-secret is the unit's credential `webhook-secret`, loaded from {}/webhook-secret: readable\n",
        sources.display()
    ));
    run.assert_stdout(&format!(
        "✗ server.admin_token_file: {run_dir}/admin-token is the unit's credential `admin-token`, loaded from {}/admin-token: not readable here: No such file or directory (os error 2)\n",
        sources.display()
    ));
    run.assert_stdout(&format!(
        "✗ registries[0].password_file: {run_dir}/ghcr is in the credentials directory of {name}, but {unit_arg} has no LoadCredential=ghcr:…, so the daemon would not find it\n"
    ));
    run.assert_stderr(
        "error: 2 secret(s) or credential(s) unreadable or empty (✗ above); the config itself is valid",
    );
    assert!(!run.stderr.contains("problem"), "{}", run.text());

    std::fs::write(sources.join("admin-token"), "4dm1n\n").unwrap();
    std::fs::write(sources.join("ghcr"), "gh\n").unwrap();
    std::fs::write(
        &unit,
        format!(
            "{}LoadCredential=ghcr:{}/ghcr\n",
            std::fs::read_to_string(&unit).unwrap(),
            sources.display()
        ),
    )
    .unwrap();
    let run = hoist(&config, &["check-config", "--unit", &unit_arg], &[]).await;
    run.assert_code(0);
    assert_eq!(
        run.stdout.matches(": readable\n").count(),
        3,
        "{}",
        run.text()
    );
    assert!(!run.text().contains('✗'), "{}", run.text());

    let run = hoist(
        &config,
        &["check-config", "--unit", "/nonexistent/hoist.service"],
        &[],
    )
    .await;
    run.assert_code(2);
    run.assert_stderr(
        "cannot read unit file /nonexistent/hoist.service: No such file or directory",
    );
}

#[tokio::test]
async fn labels_fragment_is_valid_compose_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(&dir, "hoist.toml", &example_config(dir.path()));
    let run = hoist(&config, &["labels", "web"], &[]).await;
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("traefik.http.routers.shop-web.rule: \"Host(`web.example.com`)\""),
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
                .strip_prefix("traefik.http.services.shop-web.loadbalancer.server.port:")
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
