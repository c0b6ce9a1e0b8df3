//! Configuration: the TOML file read into typed, validated values.
//!
//! The file is parsed into a generic TOML tree and walked by hand rather than deserialized
//! with serde, so that every problem (unknown key, wrong type, bad duration, duplicate
//! service, unreadable secret...) is collected and reported at once, each with its key path.
//! Secrets are read here, once, and wrapped in [`Secret`] so they never print; commands that
//! use none read the config with [`Secrets::Skip`], so that they work where the secret files
//! cannot be read (on a server before the unit runs: systemd's credentials exist only then).

mod checks;
mod sections;
mod service;
#[cfg(test)]
mod tests;
mod walker;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Table;

use crate::image::Repository;
use crate::secret::{Secret, SecretSource};

pub use checks::parse_track;
pub use walker::Problem;
use walker::{Problems, SecretReader, Section};

pub const DEFAULT_PATH: &str = "/etc/hoist/hoist.toml";

/// Whether reading the config also reads the secrets it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Read each secret; one that cannot be read is a problem with its key path.
    Load,
    /// Leave them unread: every secret field is `None`, and only
    /// [`Config::secret_sources`] says what is configured. For commands that use no secret.
    Skip,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub state: StateConfig,
    pub docker: DockerConfig,
    pub traefik: TraefikConfig,
    pub compose: ComposeConfig,
    pub server: ServerConfig,
    pub github: GithubConfig,
    /// Per-environment settings (`[environments.prod]`), by environment name.
    pub environments: BTreeMap<String, EnvironmentConfig>,
    pub registries: Vec<RegistryConfig>,
    pub services: Vec<ServiceConfig>,
    /// Every secret the config names, read or not ([`Secrets`]).
    pub secret_sources: Vec<SecretSource>,
}

#[derive(Debug, Clone, Default)]
pub struct EnvironmentConfig {
    /// Slack-compatible incoming webhook told about rollouts of this environment.
    pub notify_url: Option<String>,
}

/// `hoist serve`: the HTTP listener and the deploy queue.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    /// How long a running rollout may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Rollouts of different services that may run at once.
    pub max_parallel: usize,
    /// Connections the HTTP server holds at once; each is a file descriptor, so this stays
    /// well under the process's limit (the unit's `LimitNOFILE=`) to leave some for Docker,
    /// SQLite and compose.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive, counted from when the server waits
    /// for them (a new connection, or the end of the previous response).
    pub header_timeout: Duration,
    /// How long a connection may stay silent with no request in flight before it is closed.
    pub idle_timeout: Duration,
    /// Bearer token for the admin routes (deploy, rollback, promote); without it they are
    /// off.
    pub admin_token: Option<Secret>,
    /// Bearer token for the read routes (/status, /api/deploys, /metrics); without it they
    /// are public.
    pub status_token: Option<Secret>,
    /// Where operators reach hoist (`https://hoist.example.com`), for links to the status
    /// page (GitHub deployment log_url, notifications).
    pub public_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// Verifies `X-Hub-Signature-256`; without it the webhook endpoint is off.
    pub webhook_secret: Option<Secret>,
    /// A token allowed to create deployments; without it hoist reports no deployments.
    pub token: Option<Secret>,
    /// The REST API (`https://api.github.com`, or a GitHub Enterprise server's).
    pub api_url: String,
    /// How often (with a token) the hooks' recent deliveries are listed to catch missed
    /// ones; zero turns the sweep off.
    pub sweep_interval: Duration,
    /// Repository webhook ids by repository (`owner/name`), for the sweep; hooks that
    /// deliver are also learnt from `X-GitHub-Hook-ID`.
    pub hook_ids: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    /// SQLite database, lock files and the drain directory mounted into containers.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// `unix://...` or `tcp://...`; `None` means `DOCKER_HOST`, then the standard socket.
    pub host: Option<String>,
}

/// `[compose]`: which Docker Compose CLI creates the new containers.
#[derive(Debug, Clone, Default)]
pub struct ComposeConfig {
    /// The program and its leading arguments (`["docker", "compose"]`,
    /// `["/usr/local/bin/docker-compose"]`); `None`: detected (the v2 plugin, then
    /// `docker-compose`, v2 or v1).
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct TraefikConfig {
    pub network: String,
    pub entrypoints: Vec<String>,
    pub cert_resolver: Option<String>,
    /// Traefik's `providersThrottleDuration`: how long a change can take to be applied.
    pub throttle: Duration,
    /// Traefik's API, to confirm routing changes instead of waiting `throttle`.
    pub api_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub host: String,
    pub credentials: Option<Credentials>,
    /// Speak plain HTTP to this registry (loopback registries always do).
    pub insecure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub environment: String,
    pub compose_project: String,
    pub compose_service: String,
    pub image: Repository,
    pub track: Track,
    pub host: String,
    pub port: u16,
    pub health_path: Option<String>,
    pub health_timeout: Duration,
    /// How often Docker runs hoist's probe (the drain cord) in the service's containers:
    /// the engine's idle CPU against how soon a new container is healthy and a cut cord
    /// takes an old one out of the pool.
    pub cord_interval: Duration,
    pub drain: Duration,
    /// Grace before SIGKILL when stopping an old container; `None`: the container's own
    /// (compose's `stop_grace_period`, else Docker's 10 s), as `docker compose` does.
    pub stop_timeout: Option<Duration>,
    pub env_file: Option<EnvFileTarget>,
    /// Where the compose project's files are, when not as the running containers' labels say.
    pub compose: ComposeOverrides,
    /// Give the new containers fresh anonymous volumes instead of refusing the rollout (the
    /// old containers' anonymous volumes are removed with them).
    pub fresh_anonymous_volumes: bool,
    /// `owner/name` of the GitHub repository whose webhooks concern this service.
    pub github_repository: Option<String>,
    /// Poll the registry this often (with jitter); `None`: webhooks and manual only.
    pub poll_interval: Option<Duration>,
    /// After a push or workflow_run, how long to keep re-checking the registry for the
    /// image CI is still building.
    pub watch_window: Duration,
    /// Deploy only digests this other service has run healthily (`hoist promote`).
    pub promote_from: Option<String>,
    /// ... for at least this long, then automatically; `None`: only `hoist promote`.
    pub promote_after: Option<Duration>,
}

/// Per-service overrides of what compose's labels on the running containers say:
/// `compose_files`, `compose_working_dir`, `compose_env_file`.
#[derive(Debug, Clone, Default)]
pub struct ComposeOverrides {
    pub files: Option<Vec<PathBuf>>,
    pub working_dir: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
}

/// Where hoist records the deployed image for `docker compose` to pick up.
#[derive(Debug, Clone)]
pub struct EnvFileTarget {
    pub path: PathBuf,
    pub var: String,
}

/// What a service follows in its registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Track {
    /// A tag that moves (`main`, `latest`, `stable`).
    Tag(String),
    /// The newest tag whose version satisfies the requirement (`semver:^1.4`).
    Semver(semver::VersionReq),
}

impl fmt::Display for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Track::Tag(t) => f.write_str(t),
            Track::Semver(req) => write!(f, "semver:{req}"),
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, secrets)
    }

    /// Validates `text`; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut problems = Problems::default();
        let mut reader = SecretReader::new(secrets);
        let config = read_config(&table, &mut problems, &mut reader);
        match (config, problems.0.is_empty()) {
            (Some(config), true) => Ok(config),
            _ => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: problems.0,
                secret_sources: reader.sources,
            }),
        }
    }

    pub fn service(&self, name: &str) -> Result<&ServiceConfig, UnknownService> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| UnknownService {
                name: name.to_string(),
                known: self.services.iter().map(|s| s.name.clone()).collect(),
            })
    }

    /// The configured registry entry for a repository's registry host, if any.
    pub fn registry_for(&self, repo: &Repository) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.serves(repo))
    }
}

impl RegistryConfig {
    /// Whether this entry is for `repo`'s registry, named as in the image or as its API host.
    pub fn serves(&self, repo: &Repository) -> bool {
        self.host == repo.registry() || self.host == repo.api_host()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no service named `{name}` in the config (known: {})", known.join(", "))]
pub struct UnknownService {
    pub name: String,
    pub known: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("config file {} has {} problem(s):\n{}", path.display(), problems.len(),
        problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
        /// The secrets the config names, as far as it could be read: `check-config` checks
        /// them beside the problems.
        secret_sources: Vec<SecretSource>,
    },
}

/// Reads the sections in the order their problems are reported; `None` only after
/// recording a problem.
fn read_config(root: &Table, p: &mut Problems, secrets: &mut SecretReader) -> Option<Config> {
    let mut top = Section::new("", root);
    let empty = Table::new();
    let state = sections::read_state(top.opt_table(p, "state").unwrap_or(&empty), p);
    let docker = sections::read_docker(top.opt_table(p, "docker").unwrap_or(&empty), p);
    let traefik = sections::read_traefik(top.opt_table(p, "traefik").unwrap_or(&empty), p);
    let compose = sections::read_compose(top.opt_table(p, "compose").unwrap_or(&empty), p);
    let server = sections::read_server(top.opt_table(p, "server").unwrap_or(&empty), p, secrets);
    let github = sections::read_github(top.opt_table(p, "github").unwrap_or(&empty), p, secrets);
    let environments =
        sections::read_environments(top.opt_table(p, "environments").unwrap_or(&empty), p);
    let registries = sections::read_registries(&mut top, p, secrets);
    let services = service::read_services(&mut top, root, p);
    checks::check_environments_used(&environments, &services, p);
    top.finish(p);
    Some(Config {
        state,
        docker,
        traefik: traefik?,
        compose,
        server: server?,
        github,
        environments,
        registries,
        services,
        secret_sources: secrets.sources.clone(),
    })
}
