//! The config's unit tests: a complete file, then the problems each kind of mistake yields.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Config, ConfigError, Secrets, Track, parse_track};
use crate::secret::Origin;

const GOOD: &str = r#"
[state]
dir = "/tmp/hoist-test"

[traefik]
network = "web"
entrypoints = ["websecure"]
cert_resolver = "letsencrypt"
throttle = "2s"

[[services]]
name = "web-stage"
environment = "stage"
compose_project = "shop"
compose_service = "web-stage"
image = "ghcr.io/acme/web"
track = "main"
host = "stage.example.com"
port = 8000
health_path = "/healthz"
health_timeout = "60s"
drain = "10s"
stop_timeout = "30s"
env_file = "/srv/shop/.env"
env_var = "WEB_STAGE_IMAGE"

[[services]]
name = "web-prod"
environment = "prod"
compose_project = "shop"
image = "ghcr.io/acme/web"
track = "semver:^1.4"
host = "example.com"
port = 8000
"#;

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text, Path::new("test.toml"), Secrets::Load) {
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn reads_a_complete_config() {
    let c = Config::parse(GOOD, Path::new("test.toml"), Secrets::Load).unwrap();
    assert_eq!(c.services.len(), 2);
    let prod = c.service("web-prod").unwrap();
    assert_eq!(prod.compose_service, "web-prod", "defaults to the name");
    assert_eq!(prod.drain, Duration::from_secs(10));
    assert!(matches!(prod.track, Track::Semver(_)));
    assert_eq!(c.traefik.throttle, Duration::from_secs(2));
    assert!(
        c.service("nope")
            .unwrap_err()
            .to_string()
            .contains("web-stage, web-prod")
    );
}

#[test]
fn reports_every_problem_at_once_with_its_key_path() {
    let text = GOOD
        .replace("port = 8000\nhealth_path", "port = 0\nhealth_path")
        .replace("drain = \"10s\"", "drain = \"ten seconds\"")
        .replace("name = \"web-prod\"", "name = \"web-stage\"")
        .replace("[traefik]", "[traefik]\ncolour = \"blue\"")
        .replace(
            "image = \"ghcr.io/acme/web\"\ntrack = \"main\"",
            "image = \"ghcr.io/acme/web:v1\"\ntrack = \"main\"",
        );
    let got = problems(&text);
    let expect = [
        "traefik.colour: unknown key",
        "services[0].image: `ghcr.io/acme/web:v1` names a tag or digest",
        "services[0].port: 0 is not a valid port",
        "services[0].drain: `ten seconds` is not a duration",
        "services[1].name: `web-stage` is used by another service",
    ];
    for e in expect {
        assert!(
            got.iter().any(|g| g.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), expect.len(), "{got:#?}");
}

#[test]
fn compose_command_and_project_overrides() {
    let c = Config::parse(GOOD, Path::new("t.toml"), Secrets::Load).unwrap();
    assert_eq!(c.compose.command, None, "detected by default");
    let stage = c.service("web-stage").unwrap();
    assert_eq!(stage.stop_timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        c.service("web-prod").unwrap().stop_timeout,
        None,
        "the containers' own grace by default"
    );
    assert!(!stage.fresh_anonymous_volumes);

    let text = GOOD.replacen(
        "env_var = \"WEB_STAGE_IMAGE\"",
        "env_var = \"WEB_STAGE_IMAGE\"\ncompose_files = [\"/srv/shop/docker-compose.yml\"]\ncompose_working_dir = \"/srv/shop\"\nfresh_anonymous_volumes = true",
        1,
    );
    let text = format!("[compose]\ncommand = [\"docker\", \"compose\"]\n{text}");
    let c = Config::parse(&text, Path::new("t.toml"), Secrets::Load).unwrap();
    assert_eq!(
        c.compose.command,
        Some(vec!["docker".to_string(), "compose".to_string()])
    );
    let stage = c.service("web-stage").unwrap();
    assert_eq!(
        stage.compose.files,
        Some(vec![PathBuf::from("/srv/shop/docker-compose.yml")])
    );
    assert_eq!(stage.compose.working_dir, Some(PathBuf::from("/srv/shop")));
    assert!(stage.fresh_anonymous_volumes);

    let bad = text
        .replace("command = [\"docker\", \"compose\"]", "command = []")
        .replace("\"/srv/shop/docker-compose.yml\"", "\"docker-compose.yml\"");
    let got = problems(&bad);
    assert!(
        got.iter()
            .any(|g| g.starts_with("compose.command: must name the program first")),
        "{got:#?}"
    );
    assert!(
        got.iter().any(|g| g.starts_with(
            "services[0].compose_files: `docker-compose.yml` must be an absolute path"
        )),
        "{got:#?}"
    );
}

#[test]
fn unreadable_secret_files_are_named_and_secrets_never_printed() {
    let text = format!(
        "{GOOD}\n[[registries]]\nhost = \"ghcr.io\"\nusername = \"bot\"\npassword_file = \"/nonexistent/ghcr\"\n"
    );
    let got = problems(&text);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("registries[0].password_file: cannot read `/nonexistent/ghcr`"));

    let dir = std::env::temp_dir().join(format!("hoist-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pw");
    std::fs::write(&file, "s3cr3t-value\n").unwrap();
    let text = text.replace("/nonexistent/ghcr", &file.display().to_string());
    let c = Config::parse(&text, Path::new("t.toml"), Secrets::Load).unwrap();
    let creds = c.registries[0].credentials.as_ref().unwrap();
    assert_eq!(creds.password.expose(), "s3cr3t-value");
    assert!(!format!("{c:?}").contains("s3cr3t"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn skipping_secrets_reads_none_but_lists_every_one_and_checks_their_keys() {
    let run = "/run/credentials/hoist.service";
    let text = GOOD.replace(
        "[traefik]",
        &format!(
            "[server]\nadmin_token_file = \"{run}/admin-token\"\nstatus_token_env = \"HOIST_TEST_NO_SUCH_VAR\"\n\
             [github]\nwebhook_secret_file = \"{run}/webhook-secret\"\ntoken_file = \"{run}/github-token\"\n\
             [[registries]]\nhost = \"ghcr.io\"\nusername = \"bot\"\npassword_file = \"{run}/ghcr\"\n[traefik]"
        ),
    );
    assert_eq!(problems(&text).len(), 5, "all unreadable when loaded");

    let c = Config::parse(&text, Path::new("t.toml"), Secrets::Skip).unwrap();
    assert!(c.server.admin_token.is_none() && c.server.status_token.is_none());
    assert!(c.github.webhook_secret.is_none() && c.github.token.is_none());
    assert!(c.registries[0].credentials.is_none());
    let listed: Vec<(&str, &Origin)> = c
        .secret_sources
        .iter()
        .map(|s| (s.key.as_str(), &s.origin))
        .collect();
    let file = |name: &str| Origin::File(PathBuf::from(format!("{run}/{name}")));
    assert_eq!(
        listed,
        [
            ("server.admin_token_file", &file("admin-token")),
            (
                "server.status_token_env",
                &Origin::Env("HOIST_TEST_NO_SUCH_VAR".into())
            ),
            ("github.webhook_secret_file", &file("webhook-secret")),
            ("github.token_file", &file("github-token")),
            ("registries[0].password_file", &file("ghcr")),
        ]
    );

    // What is wrong with the keys themselves is still wrong without reading them.
    let both = text.replace("[github]", "[github]\nwebhook_secret_env = \"X\"");
    let no_user = text.replace("username = \"bot\"\n", "");
    for (text, expect) in [
        (
            both,
            "github.webhook_secret_file: set either webhook_secret_file or webhook_secret_env, not both",
        ),
        (
            no_user,
            "registries[0].username: missing (a password was given)",
        ),
    ] {
        match Config::parse(&text, Path::new("t.toml"), Secrets::Skip) {
            Err(ConfigError::Invalid { problems, .. }) => {
                let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
                assert_eq!(got, [expect]);
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn missing_and_mistyped_keys() {
    let got = problems("[[services]]\nname = 5\nport = \"80\"\n[traefik]\nthrottle = 3\n");
    for e in [
        "traefik.throttle: expected a string, found integer",
        "services[0].name: expected a string, found integer",
        "services[0].port: expected an integer, found string",
        "services[0].environment: missing (required)",
        "services[0].image: missing (required)",
    ] {
        assert!(
            got.iter().any(|g| g.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
}

#[test]
fn syntax_errors_name_the_file() {
    let err = Config::parse("[state\n", Path::new("/etc/hoist/x.toml"), Secrets::Load).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("config file /etc/hoist/x.toml is not valid TOML")
    );
}

#[test]
fn daemon_keys_and_promotion_rules() {
    let c = Config::parse(GOOD, Path::new("t.toml"), Secrets::Load).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:9480");
    assert_eq!(c.server.max_parallel, 2);
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(60));
    assert_eq!(c.server.max_connections, 512);
    assert_eq!(c.server.header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(5));
    assert!(c.github.webhook_secret.is_none());
    assert_eq!(c.services[0].watch_window, Duration::from_secs(900));
    assert_eq!(c.services[0].poll_interval, None);

    let text = GOOD
        .replace("[traefik]", "[server]\nlisten = \"0.0.0.0:http\"\nmax_parallel = 0\n[github]\nwebhook_secret_env = \"HOIST_TEST_NO_SUCH_VAR\"\n[traefik]")
        .replace("port = 8000\nhealth_path", "port = 8000\npoll_interval = \"100ms\"\npromote_after = \"1h\"\ngithub_repository = \"acme\"\nhealth_path")
        .replace("track = \"semver:^1.4\"", "track = \"semver:^1.4\"\npromote_from = \"web-prod\"");
    let got = problems(&text);
    for e in [
        "server.listen: `0.0.0.0:http` is not an address",
        "server.max_parallel: 0 is out of range",
        "github.webhook_secret_env: environment variable `HOIST_TEST_NO_SUCH_VAR` is not set",
        "services[0].poll_interval: must be at least 1s",
        "services[0].promote_after: needs promote_from",
        "services[0].github_repository: `acme` must be owner/name",
        "services[1].promote_from: a service cannot promote from itself",
    ] {
        assert!(
            got.iter().any(|g| g.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
    let cycle = GOOD
        .replace(
            "track = \"main\"",
            "track = \"main\"\npromote_from = \"web-prod\"",
        )
        .replace(
            "track = \"semver:^1.4\"",
            "track = \"semver:^1.4\"\npromote_from = \"web-stage\"",
        );
    assert!(
        problems(&cycle)
            .iter()
            .any(|g| g.contains("promotions form a cycle"))
    );
}

#[test]
fn connection_limits() {
    let with = |keys: &str| GOOD.replace("[traefik]", &format!("[server]\n{keys}\n[traefik]"));
    let c = Config::parse(
        &with("max_connections = 64\nheader_timeout = \"3s\"\nidle_timeout = \"3s\""),
        Path::new("t.toml"),
        Secrets::Load,
    )
    .unwrap();
    assert_eq!(c.server.max_connections, 64);
    assert_eq!(c.server.header_timeout, Duration::from_secs(3));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(3));
    for (keys, expected) in [
        (
            "max_connections = 15",
            "server.max_connections: 15 is out of range (16-65536)",
        ),
        (
            "max_connections = \"many\"",
            "server.max_connections: expected an integer",
        ),
        (
            "header_timeout = \"50ms\"",
            "server.header_timeout: 50ms is out of range",
        ),
        (
            "idle_timeout = \"11m\"",
            "server.idle_timeout: 11m is out of range",
        ),
        (
            "header_timeout = \"soon\"",
            "server.header_timeout: `soon` is not a duration",
        ),
        (
            "header_timeout = \"2s\"\nidle_timeout = \"3s\"",
            "server.idle_timeout: 3s is longer than server.header_timeout (2s)",
        ),
    ] {
        let got = problems(&with(keys));
        assert!(
            got.iter().any(|g| g.starts_with(expected)),
            "{keys}: missing {expected:?} in {got:#?}"
        );
    }
}

#[test]
fn tracks() {
    assert_eq!(parse_track("main"), Ok(Track::Tag("main".into())));
    assert!(matches!(parse_track("semver:^1.4"), Ok(Track::Semver(_))));
    assert!(
        parse_track("semver:banana")
            .unwrap_err()
            .contains("not a semver requirement")
    );
    assert!(parse_track("a b").is_err());
}
