//! Running the real `hoist` binary against a test's world, and the fixture that builds that
//! world: a registry with the demo images, a compose project started with real Compose (v2
//! by default, v1 on request) from a compose file that carries `hoist labels` output, the
//! real Traefik in front, and a hoist config and state directory of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tempfile::TempDir;

use super::gateway::Gateway;
use super::images::{self, Variant};
use super::load::{Load, LoadConfig};
use super::project::{Compose, Project};
use super::registry::TestRegistry;
use super::traefik::{self, Traefik, TraefikConfig};

pub const HOIST: &str = env!("CARGO_BIN_EXE_hoist");
/// The hoist service every fixture deploys.
pub const SERVICE: &str = "web";
/// The second service of fixtures with `prod: true`, promoted from [`SERVICE`].
pub const PROD: &str = "web-prod";
const USER: &str = "deploy-bot";
const PASSWORD: &str = "s3cret-pw";

/// The output of one `hoist` invocation.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn text(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    #[track_caller]
    pub fn assert_stderr(&self, needle: &str) -> &Run {
        self.assert_contains("stderr", &self.stderr, needle)
    }

    #[track_caller]
    pub fn assert_stdout(&self, needle: &str) -> &Run {
        self.assert_contains("stdout", &self.stdout, needle)
    }

    #[track_caller]
    fn assert_contains(&self, stream: &str, text: &str, needle: &str) -> &Run {
        assert!(
            text.contains(needle),
            "{stream} lacks {needle:?}:\n{}",
            self.text()
        );
        self
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code:\n{}", self.text());
        self
    }
}

/// Runs `hoist --config <config> <args>` with an empty Docker client config (tests never
/// read the user's credentials) plus `env`.
pub async fn hoist(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let docker_config = config.with_file_name("docker-client");
    std::fs::create_dir_all(&docker_config).expect("docker client dir");
    let mut command = tokio::process::Command::new(HOIST);
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env("DOCKER_CONFIG", &docker_config)
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    Run::from(command.output().await.expect("run hoist"))
}

#[derive(Clone)]
pub struct Options {
    /// Tags pushed before the project starts.
    pub tags: Vec<(&'static str, Variant)>,
    /// The tag `compose up` starts with.
    pub initial: &'static str,
    /// The Compose that creates the project (v2 unless a test asks for v1).
    pub compose: Compose,
    /// `health_path = "/healthz"`; without it the image's HEALTHCHECK is wrapped.
    pub health_path: bool,
    /// Point `traefik.api_url` at Traefik's API (else hoist waits out the throttle).
    pub api: bool,
    /// htpasswd (Basic) auth on the registry.
    pub auth: bool,
    /// A bearer-token gateway in front of the registry; everything (compose, hoist)
    /// talks to the registry through it.
    pub gateway: bool,
    /// A second compose service `web-prod` with hoist service `web-prod`, promoted from
    /// `web`; `prod_extra` is more TOML for it.
    pub prod: bool,
    pub prod_extra: &'static str,
    /// More top-level TOML (e.g. `[server]`, `[github]`).
    pub config_extra: String,
    pub drain: &'static str,
    /// `cord_interval`: how often Docker runs hoist's probe (1s keeps the tests quick).
    pub cord_interval: &'static str,
    /// Empty: no `stop_timeout`, so the containers' own grace applies.
    pub stop_timeout: &'static str,
    pub health_timeout: &'static str,
    /// Paste `hoist labels` output into the compose file.
    pub fragment: bool,
    /// More YAML under the service (indented 4 spaces).
    pub compose_extra: &'static str,
    /// Containers of the service (`scale:` in the compose file when more than 1).
    pub replicas: usize,
    /// More TOML in the service's table.
    pub service_extra: &'static str,
    /// What the service tracks.
    pub track: &'static str,
    /// Rewrites the `hoist labels` output before it goes into the compose file.
    pub edit_fragment: fn(String) -> String,
}

impl Options {
    /// v1, v2 and a `broken` image that never passes its health check (5 s timeout).
    pub fn with_broken() -> Options {
        Options {
            tags: vec![
                ("v1", Variant::V1),
                ("v2", Variant::V2),
                ("broken", Variant::Broken),
            ],
            health_timeout: "5s",
            ..Options::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tags: vec![("v1", Variant::V1), ("v2", Variant::V2)],
            initial: "v1",
            compose: Compose::V2,
            health_path: true,
            api: true,
            auth: false,
            gateway: false,
            prod: false,
            prod_extra: "",
            config_extra: String::new(),
            drain: "1s",
            cord_interval: "1s",
            stop_timeout: "10s",
            health_timeout: "20s",
            fragment: true,
            compose_extra: "",
            replicas: 1,
            service_extra: "",
            track: "v2",
            edit_fragment: |f| f,
        }
    }
}

pub struct Fixture {
    pub project: Project,
    pub traefik: Traefik,
    pub registry: TestRegistry,
    pub gateway: Option<Gateway>,
    pub state: TempDir,
    pub config: PathBuf,
    /// `127.0.0.1:PORT/<project>/web`, no tag.
    pub repo: String,
    /// Digest per pushed tag.
    pub digests: HashMap<String, String>,
    pub host: String,
    pub options: Options,
}

impl Fixture {
    pub async fn start(options: Options) -> Fixture {
        super::require_docker();
        let project = Project::with("h", options.compose);
        let registry = if options.auth {
            TestRegistry::start_with_auth(USER, PASSWORD).await
        } else {
            TestRegistry::start().await
        };
        let repo_path = format!("{}/web", project.name);
        let mut digests = HashMap::new();
        for (tag, variant) in &options.tags {
            let digest = images::push(&registry, &repo_path, *variant, tag).await;
            digests.insert((*tag).to_string(), digest);
        }
        let gateway = if options.gateway {
            Some(Gateway::start(&registry.addr, USER, PASSWORD, None).await)
        } else {
            None
        };
        let repo = match &gateway {
            Some(g) => format!("{}/{repo_path}", g.addr),
            None => registry.repo(&repo_path),
        };
        let state = tempfile::Builder::new()
            .prefix("hoist-state-")
            .tempdir()
            .expect("state dir");
        let host = format!("{}.test", project.name);
        let traefik = Traefik::start(TraefikConfig::new(&project.name, project.network()))
            .await
            .expect("start Traefik");
        let mut fixture = Fixture {
            config: state.path().join("hoist.toml"),
            project,
            traefik,
            registry,
            gateway,
            state,
            repo,
            digests,
            host,
            options,
        };
        fixture.write_config("");
        fixture.write_compose().await;
        let initial = format!("{}:{}", fixture.repo, fixture.options.initial);
        let mut env = format!("WEB_IMAGE={initial}\n");
        if fixture.options.prod {
            env.push_str(&format!("WEB_PROD_IMAGE={initial}\n"));
        }
        std::fs::write(fixture.project.env_file(), env).expect("write .env");
        fixture.compose_up();
        fixture
            .traefik
            .wait_for_servers(
                &fixture.traefik_service(SERVICE),
                fixture.options.replicas,
                Duration::from_secs(60),
            )
            .await
            .expect("the compose-started containers are routed");
        if fixture.options.prod {
            fixture
                .traefik
                .wait_for_servers(&fixture.traefik_service(PROD), 1, Duration::from_secs(60))
                .await
                .expect("the compose-started prod container is routed");
        }
        fixture
    }

    /// The Traefik service (and router) name `hoist labels` gives a hoist service.
    pub fn traefik_service(&self, service: &str) -> String {
        format!("{}-{service}", self.project.name)
    }

    /// The registry as hoist and compose address it (the gateway when there is one).
    pub fn registry_host(&self) -> String {
        match &self.gateway {
            Some(g) => g.addr.to_string(),
            None => self.registry.addr.clone(),
        }
    }

    fn needs_credentials(&self) -> bool {
        self.registry.auth.is_some() || self.gateway.is_some()
    }

    /// A Docker client config directory with the fixture's registry credentials.
    pub fn docker_config_dir(&self) -> PathBuf {
        let dir = self.state.path().join("compose-client");
        std::fs::create_dir_all(&dir).expect("client config dir");
        let auths = if self.needs_credentials() {
            use base64::Engine as _;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
            format!(
                r#"{{"auths":{{"{}":{{"auth":"{token}"}}}}}}"#,
                self.registry_host()
            )
        } else {
            "{}".to_string()
        };
        std::fs::write(dir.join("config.json"), auths).expect("client config");
        dir
    }

    /// [`Fixture::start`], then load through Traefik until the initial version serves.
    pub async fn start_serving(options: Options) -> (Fixture, Load) {
        let f = Fixture::start(options).await;
        let load = f.load();
        load.wait_until_serving(f.options.initial, Duration::from_secs(30))
            .await
            .expect("the initial version serves through Traefik");
        (f, load)
    }

    /// Writes hoist.toml; `registries` is extra TOML (e.g. `[[registries]]` tables).
    pub fn write_config(&mut self, registries: &str) {
        let o = &self.options;
        let api = if o.api {
            format!("api_url = \"{}\"\n", self.traefik.api_url())
        } else {
            String::new()
        };
        let health = if o.health_path {
            "health_path = \"/healthz\"\n"
        } else {
            ""
        };
        let auth = if self.needs_credentials() && registries.is_empty() {
            let file = self.state.path().join("registry-password");
            std::fs::write(&file, format!("{PASSWORD}\n")).expect("password file");
            format!(
                "[[registries]]\nhost = \"{}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\n\n",
                self.registry_host(),
                file.display()
            )
        } else {
            registries.to_string()
        };
        let stop_timeout = if o.stop_timeout.is_empty() {
            String::new()
        } else {
            format!("stop_timeout = \"{}\"\n", o.stop_timeout)
        };
        let prod = if o.prod {
            format!(
                "\n[[services]]\nname = \"{PROD}\"\nenvironment = \"prod\"\ncompose_project = \"{project}\"\nimage = \"{repo}\"\ntrack = \"{track}\"\nhost = \"prod.{host}\"\nport = 8000\n{health}health_timeout = \"{health_timeout}\"\ndrain = \"{drain}\"\ncord_interval = \"{cord_interval}\"\n{stop_timeout}env_file = \"{env_file}\"\nenv_var = \"WEB_PROD_IMAGE\"\npromote_from = \"{SERVICE}\"\n{extra}\n",
                project = self.project.name,
                repo = self.repo,
                track = o.track,
                host = self.host,
                health_timeout = o.health_timeout,
                drain = o.drain,
                cord_interval = o.cord_interval,
                stop_timeout = stop_timeout,
                env_file = self.project.env_file().display(),
                extra = o.prod_extra,
            )
        } else {
            String::new()
        };
        let text = format!(
            r#"[state]
dir = "{state}"

[traefik]
network = "{network}"
entrypoints = ["websecure"]
throttle = "1s"
{api}
[compose]
command = [{compose_command}]

{auth}[[services]]
name = "{SERVICE}"
environment = "stage"
compose_project = "{project}"
compose_service = "web"
image = "{repo}"
track = "{track}"
host = "{host}"
port = 8000
{health}health_timeout = "{health_timeout}"
drain = "{drain}"
cord_interval = "{cord_interval}"
{stop_timeout}env_file = "{env_file}"
env_var = "WEB_IMAGE"
{extra}
{prod}
{config_extra}
"#,
            state = self.state.path().join("state").display(),
            network = self.project.network(),
            project = self.project.name,
            repo = self.repo,
            host = self.host,
            health_timeout = o.health_timeout,
            drain = o.drain,
            cord_interval = o.cord_interval,
            stop_timeout = stop_timeout,
            env_file = self.project.env_file().display(),
            extra = o.service_extra,
            track = o.track,
            config_extra = o.config_extra,
            compose_command = self
                .project
                .compose
                .program()
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        std::fs::write(&self.config, text).expect("write hoist.toml");
    }

    async fn write_compose(&self) {
        let mut yaml = "services:\n".to_string();
        let mut services = vec![(SERVICE, "WEB_IMAGE")];
        if self.options.prod {
            services.push((PROD, "WEB_PROD_IMAGE"));
        }
        let scale = if self.options.replicas > 1 {
            format!("    scale: {}\n", self.options.replicas)
        } else {
            String::new()
        };
        if !self.options.health_path {
            // `hoist labels` wraps the image's own HEALTHCHECK when Docker has the image,
            // as an operator's engine does after `docker compose pull`.
            let reference = format!("{}:{}", self.repo, self.options.track);
            let out = std::process::Command::new("docker")
                .env("DOCKER_CONFIG", self.docker_config_dir())
                .args(["pull", &reference])
                .output()
                .expect("docker pull");
            assert!(out.status.success(), "docker pull {reference}: {out:?}");
        }
        for (name, var) in services {
            let fragment = if self.options.fragment {
                let run = self.hoist(&["labels", name]).await;
                run.assert_code(0);
                indent(&(self.options.edit_fragment)(run.stdout.clone()), 4)
            } else {
                String::new()
            };
            yaml.push_str(&format!(
                "  {name}:\n    image: ${{{var}}}\n    restart: unless-stopped\n    environment:\n      APP_SETTING: from-compose\n    networks:\n      - web\n{scale}{fragment}{extra}",
                extra = self.options.compose_extra,
            ));
        }
        yaml.push_str(&format!(
            "networks:\n  web:\n    name: {}\n",
            self.project.network()
        ));
        self.project.write_compose(&yaml);
    }

    /// `compose up -d` with the fixture's registry credentials.
    pub fn compose_up(&self) {
        let out = self
            .project
            .compose_command(&["up", "-d"])
            .env("DOCKER_CONFIG", self.docker_config_dir())
            .output()
            .expect("compose");
        assert!(
            out.status.success(),
            "{} up failed: {}",
            self.project.compose,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub async fn hoist(&self, args: &[&str]) -> Run {
        hoist(&self.config, args, &[]).await
    }

    pub async fn hoist_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        hoist(&self.config, args, env).await
    }

    pub async fn deploy(&self, tag: &str) -> Run {
        self.hoist(&["deploy", SERVICE, "--tag", tag]).await
    }

    /// 100 requests/s through Traefik, every 10th held 300 ms by the app so that
    /// requests are in flight whenever a container leaves.
    pub fn load(&self) -> Load {
        Load::start(LoadConfig {
            via: traefik::describe(),
            target: self.traefik.addr(),
            host: self.host.clone(),
            rate: 100,
            slow_every: Some((10, 300)),
            timeout: Duration::from_secs(10),
        })
    }

    /// The journal of [`SERVICE`] as `hoist history --json` prints it, newest first.
    pub async fn history(&self) -> Vec<serde_json::Value> {
        self.history_of(SERVICE).await
    }

    pub async fn history_of(&self, service: &str) -> Vec<serde_json::Value> {
        let run = self
            .hoist(&["history", service, "--json", "--limit", "100"])
            .await;
        run.assert_code(0);
        serde_json::from_str(&run.stdout).expect("history JSON")
    }

    /// The image reference of the single running container (asserts there is one).
    pub fn running_image(&self) -> String {
        self.running_image_of(SERVICE)
    }

    /// The image reference of the one running container of a compose service.
    pub fn running_image_of(&self, service: &str) -> String {
        let running = self.project.running_of(service);
        let names = images::docker(&[
            "ps",
            "-a",
            "--format",
            "{{.ID}} {{.Names}} {{.Status}} {{.Labels}}",
        ]);
        assert_eq!(
            running.len(),
            1,
            "expected one running container of {service}, found {running:?}; all containers:\n{}",
            String::from_utf8_lossy(&names.stdout)
        );
        let out = images::docker(&["inspect", "-f", "{{.Config.Image}}", &running[0]]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until the journal of [`SERVICE`] satisfies `done` (newest entry first).
    pub async fn wait_history(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        self.wait_history_of(SERVICE, what, timeout, done).await
    }

    pub async fn wait_history_of(
        &self,
        service: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let history = self.history_of(service).await;
            if done(&history) {
                return history;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; journal: {history:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn pinned(&self, tag: &str) -> String {
        format!("{}@{}", self.repo, self.digests[tag])
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        images::forget(&self.registry_host());
    }
}

pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
