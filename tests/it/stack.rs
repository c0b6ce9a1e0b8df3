//! The shipped stack (systemd unit, Dockerfile, compose file, Traefik config) checked
//! with the real tools and against config/hoist.toml, so that the files an operator
//! copies agree with each other and with what hoist generates.
//!
//! YAML is read with PyYAML in the tool directory's Python (scripts/setup installs it
//! pinned): hoist has no YAML parser.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::hoist::{HOIST, hoist};
use crate::support::images::docker;
use crate::support::project::{Compose, unique};

const CREDENTIALS: &str = "/run/credentials/hoist.service/";
const SOCKET: &str = "/var/run/docker.sock";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// YAML text as JSON, via PyYAML.
fn yaml(text: &str) -> Value {
    let mut child = Command::new(crate::support::tool("HOIST_PYTHON", "python"))
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tool directory's python (scripts/setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML cannot parse the YAML:\n{}\n{text}",
        self::text(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// config/hoist.toml as JSON.
fn example_config() -> Value {
    let table: toml::Table = toml::from_str(&read("config/hoist.toml")).unwrap();
    serde_json::to_value(table).unwrap()
}

fn config_str<'a>(config: &'a Value, pointer: &str) -> &'a str {
    config
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("config/hoist.toml lacks {pointer}"))
}

fn services(config: &Value) -> &Vec<Value> {
    config["services"]
        .as_array()
        .expect("config/hoist.toml has [[services]]")
}

/// Every string in the config that names a systemd credential, as credential names.
fn credential_names(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix(CREDENTIALS) {
                names.insert(name.to_string());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| credential_names(v, names)),
        Value::Object(map) => map.values().for_each(|v| credential_names(v, names)),
        _ => {}
    }
}

/// config/hoist.toml as it is, in `dir` (where `hoist()` puts its Docker client
/// directory). Its credential files do not exist, as on a server before the unit runs:
/// `labels` reads no secret. `state.dir` stays /var/lib/hoist, which the generated drain
/// mount names.
fn runnable_example(dir: &Path) -> PathBuf {
    let path = dir.join("hoist.toml");
    std::fs::write(&path, read("config/hoist.toml")).unwrap();
    path
}

/// The values of `key=` lines in the unit (in order; repeated keys give several).
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    match unit_values(unit, key)[..] {
        [value] => value,
        ref other => panic!("systemd/hoist.service: expected one {key}=, found {other:?}"),
    }
}

/// The unit with ExecStart pointing at the built binary, in a temp dir: `systemd-analyze`
/// rejects an ExecStart that does not exist, and /usr/local/bin/hoist need not.
fn unit_with_built_binary(dir: &Path) -> PathBuf {
    let unit = read("systemd/hoist.service");
    let exec = unit_value(&unit, "ExecStart");
    assert!(
        exec.starts_with("/usr/local/bin/hoist "),
        "ExecStart runs /usr/local/bin/hoist: {exec}"
    );
    let path = dir.join("hoist.service");
    std::fs::write(
        &path,
        unit.replace(
            "ExecStart=/usr/local/bin/hoist ",
            &format!("ExecStart={HOIST} "),
        ),
    )
    .unwrap();
    path
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_built_binary(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze must be installed");
    // verify exits 0 on unknown keys and bad values too; it only says so.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify complains:\n{}",
        text(&out)
    );

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = stdout
        .lines()
        .find_map(|l| l.split("Overall exposure level for hoist.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{}", text(&out)));
    // 1.3 as shipped; what is left is the network and the docker group hoist needs.
    assert!(
        exposure <= 2.0,
        "the unit's hardening regressed (exposure {exposure}):\n{stdout}"
    );
}

#[test]
fn systemd_unit_agrees_with_the_example_config() {
    let unit = read("systemd/hoist.service");
    let config = example_config();

    assert_eq!(unit_value(&unit, "Type"), "notify");
    assert!(!unit_value(&unit, "WatchdogSec").is_empty());
    assert_eq!(unit_value(&unit, "Restart"), "on-failure");
    // hoist exits 2 on an invalid config: no restart loop over it.
    assert_eq!(unit_value(&unit, "RestartPreventExitStatus"), "2");
    assert_eq!(unit_value(&unit, "DynamicUser"), "yes");
    assert_eq!(unit_value(&unit, "SupplementaryGroups"), "docker");
    assert_eq!(
        unit_value(&unit, "ExecStart"),
        "/usr/local/bin/hoist serve --config /etc/hoist/hoist.toml"
    );
    assert!(
        unit_value(&unit, "RestrictAddressFamilies")
            .split_whitespace()
            .collect::<BTreeSet<_>>()
            .is_superset(&["AF_UNIX", "AF_INET", "AF_INET6"].into()),
        "the Docker socket needs AF_UNIX, registries AF_INET/6"
    );
    assert!(unit_values(&unit, "PrivateNetwork").is_empty());

    // StateDirectory=hoist is /var/lib/hoist: the path the drain mounts name.
    assert_eq!(unit_value(&unit, "StateDirectory"), "hoist");
    assert_eq!(config_str(&config, "/state/dir"), "/var/lib/hoist");

    let mut wanted = BTreeSet::new();
    credential_names(&config, &mut wanted);
    let loaded: BTreeSet<String> = unit_values(&unit, "LoadCredential")
        .iter()
        .map(|v| v.split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(
        loaded, wanted,
        "LoadCredential= must load exactly the credentials config/hoist.toml reads"
    );

    let writable = unit_values(&unit, "ReadWritePaths");
    for service in services(&config) {
        if let Some(env_file) = service["env_file"].as_str() {
            let dir = Path::new(env_file).parent().unwrap();
            assert!(
                writable.iter().any(|w| dir.starts_with(w)),
                "hoist rewrites {env_file} through a temp file in {}: ReadWritePaths={writable:?} lacks it",
                dir.display()
            );
        }
    }

    // After SIGTERM hoist gives a running rollout shutdown_grace, then exits: systemd
    // must not SIGKILL it first.
    let grace = humantime::parse_duration(config_str(&config, "/server/shutdown_grace")).unwrap();
    let stop = humantime::parse_duration(unit_value(&unit, "TimeoutStopSec")).unwrap();
    assert!(
        stop > grace,
        "TimeoutStopSec {stop:?} <= shutdown_grace {grace:?}"
    );
}

/// Removes the test's container, network and image tag, also when the test fails.
struct DockerThings {
    container: String,
    network: String,
    image: String,
}

impl Drop for DockerThings {
    fn drop(&mut self) {
        docker(&["rm", "-f", "-v", &self.container]);
        docker(&["network", "rm", &self.network]);
        docker(&["rmi", "-f", &self.image]);
    }
}

/// `Sending build context to Docker daemon  56.99MB` in bytes.
fn context_bytes(build_output: &str) -> Option<f64> {
    let size = build_output
        .lines()
        .find_map(|l| l.strip_prefix("Sending build context to Docker daemon"))?
        .trim();
    let split = size.find(|c: char| c.is_ascii_alphabetic())?;
    let number: f64 = size[..split].parse().ok()?;
    let unit = match &size[split..] {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    Some(number * unit)
}

#[tokio::test]
async fn dockerfile_builds_and_the_container_serves_healthz() {
    crate::support::require_docker();
    let name = unique("hoist-stack-");
    let things = DockerThings {
        container: name.clone(),
        network: name.clone(),
        image: format!("{name}:test"),
    };

    // Build from the checkout, so .dockerignore is what keeps the context small; a
    // binary outside it (CARGO_TARGET_DIR) is copied into a context of its own.
    // Real paths: docker sends a symlinked target/ as a dangling link.
    let binary = std::fs::canonicalize(HOIST).unwrap();
    let root = std::fs::canonicalize(repo()).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let (context, relative) = match binary.strip_prefix(&root) {
        Ok(relative) => (root.clone(), relative.to_path_buf()),
        Err(_) => {
            let relative = PathBuf::from("target/x86_64-unknown-linux-gnu/debug/hoist");
            std::fs::create_dir_all(outside.path().join(relative.parent().unwrap())).unwrap();
            std::fs::copy(&binary, outside.path().join(&relative)).unwrap();
            for file in ["Dockerfile", ".dockerignore"] {
                std::fs::copy(repo().join(file), outside.path().join(file)).unwrap();
            }
            (outside.path().to_path_buf(), relative)
        }
    };
    let out = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-t", &things.image, "--build-arg"])
        .arg(format!("HOIST_BINARY={}", relative.display()))
        .arg(&context)
        .output()
        .unwrap();
    assert!(out.status.success(), "docker build failed:\n{}", text(&out));
    let output = String::from_utf8_lossy(&out.stdout);
    if let Some(bytes) = context_bytes(&output) {
        let binaries: u64 = ["debug", "release"]
            .iter()
            .filter_map(|p| {
                std::fs::metadata(
                    context.join(format!("target/x86_64-unknown-linux-gnu/{p}/hoist")),
                )
                .ok()
            })
            .map(|m| m.len())
            .sum();
        assert!(
            bytes <= binaries as f64 + 1e6,
            "the build context ({bytes} bytes) holds more than the hoist binaries ({binaries} bytes): check .dockerignore"
        );
    }
    let inspect = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Config.User}} {{json .Config.Healthcheck.Test}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}",
        &things.image,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        r#"65532:65532 ["CMD","/hoist","probe","--http","9480/healthz"] ["/hoist"] ["serve","--config","/etc/hoist/hoist.toml"]"#
    );

    // A minimal config, mounted at the same path inside as outside, like the state
    // directory must be.
    let dir = tempfile::Builder::new()
        .prefix("hoist-stack-")
        .tempdir()
        .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let config = dir.path().join("hoist.toml");
    std::fs::write(
        &config,
        format!(
            r#"[state]
dir = "{state}"

[server]
listen = "0.0.0.0:9480"

[[services]]
name = "web"
environment = "stage"
compose_project = "{name}"
image = "127.0.0.1:5000/{name}/web"
track = "main"
host = "{name}.test"
port = 8000
"#,
            state = state.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = docker(&["network", "create", &things.network]);
    assert!(out.status.success(), "network create:\n{}", text(&out));
    let socket_gid = std::fs::metadata(SOCKET)
        .unwrap_or_else(|e| panic!("{SOCKET}: {e}"))
        .gid()
        .to_string();
    let dir_mount = format!("{0}:{0}:ro", dir.path().display());
    let state_mount = format!("{0}:{0}", state.display());
    let socket_mount = format!("{SOCKET}:{SOCKET}");
    let config_arg = config.display().to_string();
    let mut args = vec![
        "run",
        "-d",
        "--name",
        &things.container,
        "--network",
        &things.network,
        "--group-add",
        &socket_gid,
        "-v",
        &socket_mount,
        "-v",
        &dir_mount,
        "-v",
        &state_mount,
        // The image's HEALTHCHECK command, probed more often than its 10 s.
        "--health-interval",
        "1s",
    ];
    // The container writes the state as 65532; a non-root test could not remove that.
    let me = std::fs::metadata(dir.path()).unwrap();
    let user = format!("{}:{}", me.uid(), me.gid());
    if me.uid() != 0 {
        args.extend(["--user", &user]);
    }
    args.extend([things.image.as_str(), "serve", "--config", &config_arg]);
    let out = docker(&args);
    assert!(out.status.success(), "docker run:\n{}", text(&out));

    let logs = || text(&docker(&["logs", &things.container]));
    let ip = {
        let out = docker(&[
            "inspect",
            "-f",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                things.network
            ),
            &things.container,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(!ip.is_empty(), "the container has no IP:\n{}", logs());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let healthz = http.get(format!("http://{ip}:9480/healthz")).send().await;
        let healthz = match healthz {
            Ok(r) => Some((r.status().as_u16(), r.text().await.unwrap_or_default())),
            Err(_) => None,
        };
        let health = docker(&[
            "inspect",
            "-f",
            "{{.State.Health.Status}}",
            &things.container,
        ]);
        let health = String::from_utf8_lossy(&health.stdout).trim().to_string();
        if health == "healthy" {
            let (status, body) = healthz.expect("healthy, yet /healthz does not answer");
            assert_eq!(status, 200, "/healthz: {body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["status"], "ok");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container is not healthy after 30 s (health {health:?}, /healthz {healthz:?}):\n{}\n{}",
            logs(),
            text(&docker(&[
                "inspect",
                "-f",
                "{{json .State}}",
                &things.container
            ]))
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Docker through the mounted socket as a non-root user with the socket's group, and
    // the state database in the same-path mount.
    let ready = http
        .get(format!("http://{ip}:9480/readyz"))
        .send()
        .await
        .unwrap();
    let status = ready.status().as_u16();
    let body: Value = ready.json().await.unwrap();
    assert_eq!(status, 200, "/readyz: {body}\n{}", logs());
    assert_eq!(body["docker"], "ok", "{body}");
    assert_eq!(body["state"], "ok", "{body}");
    // hoist installed its probe where managed containers will mount it from.
    assert!(
        state.join("drain/hoist").is_file(),
        "no probe in {}/drain",
        state.display()
    );
}

/// `compose -f docker-compose.yml --env-file <.env.example> --profile hoist config` as
/// JSON, as the given Compose resolves the shipped stack.
fn compose_config(compose: Compose) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env");
    std::fs::write(&env, read(".env.example")).unwrap();
    let out = compose
        .command()
        .current_dir(repo())
        .args(["-f", "docker-compose.yml", "--env-file"])
        .arg(&env)
        .args(["--profile", "hoist", "config"])
        .output()
        .unwrap_or_else(|e| panic!("running {compose}: {e}"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{compose} config rejects docker-compose.yml:\n{}",
        text(&out)
    );
    yaml(&String::from_utf8_lossy(&out.stdout))
}

/// A service's volume as `source:target:mode`, from v1's short syntax or v2's long one.
fn volume(v: &Value) -> String {
    match v.as_str() {
        Some(short) => short.to_string(),
        None => format!(
            "{}:{}:{}",
            v["source"].as_str().unwrap_or_default(),
            v["target"].as_str().unwrap_or_default(),
            if v["read_only"] == true { "ro" } else { "rw" }
        ),
    }
}

fn env_example(var: &str) -> Option<String> {
    read(".env.example").lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == var).then(|| v.trim().to_string())
    })
}

#[test]
fn compose_file_validates_with_compose_v2_and_fits_the_example_config() {
    compose_file_validates_and_fits_the_example_config(Compose::V2);
}

#[test]
fn compose_file_validates_with_compose_v1_and_fits_the_example_config() {
    compose_file_validates_and_fits_the_example_config(Compose::V1);
}

fn compose_file_validates_and_fits_the_example_config(with: Compose) {
    let compose = compose_config(with);
    let config = example_config();
    let network = config_str(&config, "/traefik/network");

    let names: BTreeSet<&str> = compose["services"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        ["hoist", "traefik", "web-prod", "web-stage"].into(),
        "services"
    );
    assert_eq!(compose["networks"][network]["name"], network);

    // Compose labels the containers with the project hoist looks for.
    for service in services(&config) {
        assert_eq!(
            env_example("COMPOSE_PROJECT_NAME").as_deref(),
            service["compose_project"].as_str(),
            ".env.example sets the project name hoist.toml expects"
        );
        let name = service["compose_service"]
            .as_str()
            .or(service["name"].as_str())
            .unwrap();
        let svc = &compose["services"][name];
        let var = service["env_var"].as_str().unwrap();
        assert_eq!(
            svc["image"].as_str(),
            env_example(var).as_deref(),
            "{name} takes its image from ${{{var}}}, which hoist rewrites"
        );
        assert!(
            svc["networks"].get(network).is_some(),
            "{name} is on {network}: {svc}"
        );
        for refused in ["container_name", "ports", "network_mode"] {
            assert!(
                svc.get(refused).is_none(),
                "{name} has {refused}: hoist refuses to roll it out"
            );
        }
    }

    let traefik = &compose["services"]["traefik"];
    let image = traefik["image"].as_str().unwrap();
    let version = image.strip_prefix("traefik:v").expect("traefik:vX.Y.Z");
    let version: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(
        version >= vec![3, 6, 1],
        "{image}: Traefik before v3.6.1 cannot talk to Docker Engine 29 (API >= 1.44)"
    );

    let hoist_svc = &compose["services"]["hoist"];
    assert_eq!(hoist_svc["profiles"], serde_json::json!(["hoist"]));
    let volumes: Vec<String> = hoist_svc["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(volume)
        .collect();
    let mut same_path = vec![
        config_str(&config, "/state/dir").to_string(),
        SOCKET.to_string(),
    ];
    for service in services(&config) {
        let env_file = service["env_file"].as_str().unwrap();
        same_path.push(Path::new(env_file).parent().unwrap().display().to_string());
    }
    for path in same_path {
        assert!(
            volumes.contains(&format!("{path}:{path}:rw")),
            "the hoist service must mount {path} at the same path, writable: {volumes:?}"
        );
    }
    assert!(
        volumes.contains(&"/etc/hoist/credentials:/run/credentials/hoist.service:ro".to_string()),
        "{volumes:?}"
    );
    assert!(
        hoist_svc["group_add"]
            .as_array()
            .is_some_and(|g| !g.is_empty()),
        "the hoist service needs the docker group for the socket"
    );
}

#[tokio::test]
async fn compose_services_carry_exactly_what_hoist_labels_prints() {
    let dir = tempfile::tempdir().unwrap();
    let config = runnable_example(dir.path());
    let compose = yaml(&read("docker-compose.yml"));
    for service in services(&example_config()) {
        let name = service["name"].as_str().unwrap();
        let run = hoist(&config, &["labels", name], &[]).await;
        run.assert_code(0);
        let fragment = yaml(&run.stdout);
        let keys: BTreeSet<&str> = fragment
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["healthcheck", "labels", "volumes"].into());
        let svc = &compose["services"][name];
        for key in keys {
            assert_eq!(
                svc[key], fragment[key],
                "docker-compose.yml services.{name}.{key} differs from `hoist labels {name}`; paste it again:\n{}",
                run.stdout
            );
        }
    }
}

#[test]
fn traefik_config_is_what_hoist_relies_on() {
    let traefik = yaml(&read("traefik/traefik.yml"));
    let config = example_config();
    let docker = &traefik["providers"]["docker"];

    assert_eq!(docker["exposedByDefault"], false);
    assert_eq!(docker["network"], config_str(&config, "/traefik/network"));
    // Routing starting or unhealthy containers would break the health gate and drain.
    assert_ne!(docker["allowEmptyServices"], true);
    assert_eq!(
        traefik["providers"]["providersThrottleDuration"],
        config_str(&config, "/traefik/throttle")
    );

    let entrypoints = &traefik["entryPoints"];
    for ep in config["traefik"]["entrypoints"].as_array().unwrap() {
        let ep = ep.as_str().unwrap();
        assert!(entrypoints.get(ep).is_some(), "no entrypoint {ep}");
    }
    assert_eq!(entrypoints["web"]["address"], ":80");
    assert_eq!(
        entrypoints["web"]["http"]["redirections"]["entryPoint"]["to"],
        "websecure"
    );
    assert_eq!(entrypoints["websecure"]["address"], ":443");

    let resolver = config_str(&config, "/traefik/cert_resolver");
    assert!(
        traefik["certificatesResolvers"][resolver]["acme"].is_object(),
        "no ACME resolver {resolver}"
    );

    // api.insecure serves the API on the `traefik` entrypoint: where api_url points,
    // and on loopback only.
    assert_eq!(traefik["api"]["insecure"], true);
    let api = config_str(&config, "/traefik/api_url");
    let api = api.strip_prefix("http://").unwrap().trim_end_matches('/');
    assert_eq!(entrypoints["traefik"]["address"], api);
    assert!(api.starts_with("127.0.0.1:"), "{api}");

    // hoist's own router reaches server.listen, at public_url's host.
    let dynamic = yaml(&read("traefik/dynamic/hoist.yml"));
    let listen = config_str(&config, "/server/listen");
    assert_eq!(
        dynamic["http"]["services"]["hoist"]["loadBalancer"]["servers"][0]["url"],
        format!("http://{listen}")
    );
    let public = config_str(&config, "/server/public_url");
    let host = public
        .strip_prefix("https://")
        .unwrap()
        .trim_end_matches('/');
    assert_eq!(
        dynamic["http"]["routers"]["hoist"]["rule"],
        format!("Host(`{host}`)")
    );
    assert_eq!(
        dynamic["http"]["routers"]["hoist"]["tls"]["certResolver"],
        resolver
    );
    // Traefik must close its idle keep-alive connections to hoist before hoist does, or a
    // delivery can be written onto a connection hoist is closing.
    let transport = dynamic["http"]["services"]["hoist"]["loadBalancer"]["serversTransport"]
        .as_str()
        .expect("hoist's service names a serversTransport");
    let traefik_idle =
        dynamic["http"]["serversTransports"][transport]["forwardingTimeouts"]["idleConnTimeout"]
            .as_str()
            .expect("the serversTransport sets idleConnTimeout");
    let hoist_idle = config_str(&config, "/server/idle_timeout");
    assert!(
        humantime::parse_duration(traefik_idle).unwrap()
            < humantime::parse_duration(hoist_idle).unwrap(),
        "Traefik's idleConnTimeout {traefik_idle} must be shorter than hoist's idle_timeout {hoist_idle}"
    );
}
